//! Policy optimization: search a bounded grid of learning settings (policy type, α / scale /
//! ε, the uniform exploration share, feature space size, interactions) by off-policy evaluation
//! over one campaign's log, and pick the setting whose interval clears the serving one's.
//!
//! * [`plan`] resolves a [`GridSpec`] against the campaign into [`Setting`]s, refusing a grid over
//!   [`GridSpec::max_candidates`] or the memory budget before anything runs;
//! * [`run`] replays every setting's learner over the log, one pass, one [`Evaluator`] per
//!   distinct feature space (the line is featurized once per space), under a deadline;
//! * [`select_winner`] is the rule: reliable doubly-robust estimate, lower bound above the
//!   serving setting's upper bound, highest value among those;
//! * [`start`] stores the evaluation `running` and finishes it on a background thread;
//!   [`chosen`] and [`apply_setting`] are what `.../apply` and Personalizer's
//!   `applyFromEvaluation` do.
//!
//! docs/optimization.md is the user's side of this.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tailor_policies::ope::{Estimates, Interval};
use tailor_policies::{Estimator, FeaturizerConfig, PolicyConfig};

use super::{
    log_lines, reward_index, Evaluation, EvaluationRequest, Evaluator, Mode, PolicyValue, Role,
    Spec, Status,
};
use crate::campaign::{CampaignConfig, CampaignKind};
use crate::engine::{now_ms, Engine};
use crate::error::EngineError;

/// Most candidates one optimization may search (`grid.max_candidates` at most this).
pub const MAX_CANDIDATES: usize = 256;
/// `grid.max_candidates` when not given.
pub const DEFAULT_MAX_CANDIDATES: usize = 64;
/// Most values in one list of the grid.
pub const MAX_LIST: usize = 16;
/// The dense policies (`linucb`, `linear_thompson`) are searched only at dimensions up to this:
/// their state and their cost per decision grow with dimension².
pub const MAX_DENSE_SEARCH_DIMENSION: usize = 1024;
/// The reward model of a feature space above this many dimensions keeps only its diagonal.
const MAX_DENSE_REWARD_MODEL: usize = 256;
/// Learned state the candidates of one optimization may hold together.
pub const MEMORY_BUDGET_BYTES: u64 = 512 << 20;
/// `grid.max_seconds` when not given, and its largest value.
pub const DEFAULT_MAX_SECONDS: u64 = 600;
pub const MAX_SECONDS: u64 = 3600;
/// Optimizations running at once in one server; more are refused (503) until one finishes.
pub const MAX_RUNNING: usize = 2;

/// The policy types an optimization may search.
const SEARCHABLE: [&str; 6] = [
    "sparse_linucb",
    "linucb",
    "linear_thompson",
    "epsilon_greedy",
    "thompson",
    "gaussian_thompson",
];

/// `grid` in an optimization request; every field optional (defaults in docs/optimization.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GridSpec {
    /// Policy types to search.
    pub policies: Option<Vec<String>>,
    /// Confidence bonus widths of `sparse_linucb` and `linucb`.
    pub alpha: Option<Vec<f64>>,
    /// Posterior scales of `linear_thompson`.
    pub scale: Option<Vec<f64>>,
    /// Exploration rates of `epsilon_greedy`.
    pub epsilon: Option<Vec<f64>>,
    /// Shares of uniformly random choices mixed in (the campaign's `exploration`).
    pub exploration: Option<Vec<f64>>,
    /// Hashed feature space sizes (contextual policies).
    pub dimension: Option<Vec<usize>>,
    /// Context x action interactions on or off (contextual policies).
    pub interactions: Option<Vec<bool>>,
    /// Refuse the grid when it expands to more candidates than this (default 64, at most 256).
    pub max_candidates: Option<usize>,
    /// Stop reading the log after this long (default 600, at most 3600 seconds); the result
    /// then covers the decisions read and says `truncated`.
    pub max_seconds: Option<u64>,
}

/// The grid as searched (defaults filled in), stored with the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub policies: Vec<String>,
    pub alpha: Vec<f64>,
    pub scale: Vec<f64>,
    pub epsilon: Vec<f64>,
    pub exploration: Vec<f64>,
    pub dimension: Vec<usize>,
    pub interactions: Vec<bool>,
    pub max_candidates: usize,
    pub max_seconds: u64,
}

/// One point of the grid: what applying it sets on the campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub name: String,
    pub policy: PolicyConfig,
    pub featurizer: FeaturizerConfig,
    /// The campaign's `exploration`: uniform choices mixed into the policy's.
    pub exploration: f64,
}

/// A setting's result: its doubly-robust value and 95% interval (the full estimates are in the
/// evaluation's `policies`, under the same name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateResult {
    #[serde(flatten)]
    pub setting: Setting,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Interval>,
    /// False when there is no estimate, or the estimate is flagged unreliable.
    pub reliable: bool,
    /// Reliable, and its interval lies wholly above the serving setting's.
    pub beats_serving: bool,
}

/// What an optimization searched and found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Optimization {
    pub grid: Grid,
    /// The estimator candidates are compared by.
    pub estimator: String,
    /// The campaign's config when the optimization started; applying refuses (409) once it
    /// changed.
    pub config_fingerprint: String,
    /// The campaign's own setting (policy, featurizer and exploration), replayed the same way.
    pub serving: CandidateResult,
    pub candidates: Vec<CandidateResult>,
    /// The best candidate whose interval clears the serving one's, if any.
    pub winner: Option<String>,
    /// Estimated learned state of all candidates together.
    pub memory_bytes: u64,
    pub elapsed_ms: u64,
    /// The deadline stopped the pass before the end of the range.
    pub truncated: bool,
}

/// A resolved optimization, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub grid: Grid,
    pub serving: Setting,
    pub settings: Vec<Setting>,
    pub fingerprint: String,
    pub memory_bytes: u64,
}

/// A stable digest of a campaign config (FNV-1a over its JSON).
pub fn fingerprint(config: &CampaignConfig) -> String {
    let bytes = serde_json::to_vec(config).expect("campaign config as JSON");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn list<T: Clone>(
    field: &str,
    given: &Option<Vec<T>>,
    default: Vec<T>,
) -> Result<Vec<T>, EngineError> {
    let v = given.clone().unwrap_or(default);
    if v.is_empty() {
        return Err(EngineError::invalid(field, "must list at least one value"));
    }
    if v.len() > MAX_LIST {
        return Err(EngineError::invalid_owned(
            field,
            format!("lists {} values; at most {MAX_LIST}", v.len()),
        ));
    }
    Ok(v)
}

/// `v` without repeated values, in first-seen order (a repeated value would be a repeated name).
fn unique<T: PartialEq>(v: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

fn numbers(
    field: &str,
    given: &Option<Vec<f64>>,
    default: Vec<f64>,
    ok: impl Fn(f64) -> bool,
    what: &str,
) -> Result<Vec<f64>, EngineError> {
    let v = list(field, given, default)?;
    for (i, x) in v.iter().enumerate() {
        if !(x.is_finite() && ok(*x)) {
            return Err(EngineError::invalid_owned(
                &format!("{field}[{i}]"),
                format!("must be {what}, got {x}"),
            ));
        }
    }
    Ok(unique(v))
}

/// `lambda` and `half_life` of the serving policy, kept by every candidate that has them.
fn serving_ridge(policy: &PolicyConfig) -> (Option<f64>, Option<f64>) {
    match *policy {
        PolicyConfig::LinUcb {
            lambda, half_life, ..
        }
        | PolicyConfig::LinUcbDisjoint {
            lambda, half_life, ..
        }
        | PolicyConfig::LinearThompson {
            lambda, half_life, ..
        }
        | PolicyConfig::SparseLinUcb {
            lambda, half_life, ..
        }
        | PolicyConfig::EpsilonGreedy {
            lambda, half_life, ..
        } => (Some(lambda), half_life),
        PolicyConfig::Thompson { half_life, .. }
        | PolicyConfig::GaussianThompson { half_life, .. } => (None, half_life),
        PolicyConfig::Uniform {} | PolicyConfig::Fixed {} => (None, None),
    }
}

fn is_dense(policy: &PolicyConfig) -> bool {
    matches!(
        policy,
        PolicyConfig::LinUcb { .. }
            | PolicyConfig::LinUcbDisjoint { .. }
            | PolicyConfig::LinearThompson { .. }
            | PolicyConfig::EpsilonGreedy {
                estimator: Estimator::Ridge,
                ..
            }
    )
}

/// Learned state of `policy` over `dimension` (an upper estimate; per-action state is small
/// and not counted).
fn state_bytes(policy: &PolicyConfig, dimension: usize) -> u64 {
    let d = dimension as u64;
    if is_dense(policy) {
        // A, A⁻¹ and a factor: three d×d matrices of f64.
        3 * 8 * d * d
    } else if matches!(policy, PolicyConfig::SparseLinUcb { .. }) {
        16 * d
    } else {
        0
    }
}

fn reward_model_bytes(dimension: usize) -> u64 {
    let d = dimension as u64;
    if dimension > MAX_DENSE_REWARD_MODEL {
        16 * d
    } else {
        2 * 8 * d * d
    }
}

/// A setting's name: the policy type with its searched parameter, then the feature space (for
/// contextual policies) and the exploration share.
fn setting_name(policy: &PolicyConfig, featurizer: &FeaturizerConfig, exploration: f64) -> String {
    let param = match policy {
        PolicyConfig::SparseLinUcb { alpha, .. }
        | PolicyConfig::LinUcb { alpha, .. }
        | PolicyConfig::LinUcbDisjoint { alpha, .. } => format!(" alpha={alpha}"),
        PolicyConfig::LinearThompson { scale, .. } => format!(" scale={scale}"),
        PolicyConfig::EpsilonGreedy { epsilon, .. } => format!(" epsilon={epsilon}"),
        _ => String::new(),
    };
    let space = if policy.uses_features() {
        format!(
            " dimension={} interactions={}",
            featurizer.dimension, featurizer.interactions
        )
    } else {
        String::new()
    };
    format!("{}{param}{space} exploration={exploration}", policy.kind())
}

/// Resolve `spec` for `campaign`: the grid with its defaults, every setting it expands to (the
/// serving setting left out: it is evaluated as `serving`), and the refusals of a grid too large
/// or too heavy, each naming its field.
pub fn plan(campaign: &CampaignConfig, spec: &GridSpec) -> Result<Plan, EngineError> {
    if campaign.kind != CampaignKind::Items {
        return Err(EngineError::invalid(
            "optimize",
            "only items campaigns are optimized (send-time campaigns serve with their own model)",
        ));
    }
    let unit_rewards = campaign.reward_range.lo >= 0.0 && campaign.reward_range.hi <= 1.0;
    let default_policies: Vec<String> = [
        "sparse_linucb",
        "linucb",
        "linear_thompson",
        "epsilon_greedy",
        if unit_rewards {
            "thompson"
        } else {
            "gaussian_thompson"
        },
    ]
    .map(String::from)
    .to_vec();
    let policies = list("grid.policies", &spec.policies, default_policies)?;
    for (i, p) in policies.iter().enumerate() {
        if !SEARCHABLE.contains(&p.as_str()) {
            return Err(EngineError::invalid_owned(
                &format!("grid.policies[{i}]"),
                format!(
                    "{p:?} is not searched; one of {} (linucb_disjoint keeps a dense model per action: its memory has no bound)",
                    SEARCHABLE.join(", ")
                ),
            ));
        }
    }
    let policies = unique(policies);
    let alpha = numbers(
        "grid.alpha",
        &spec.alpha,
        vec![0.05, 0.1, 0.2, 0.5, 1.0],
        |a| (0.0..=10.0).contains(&a),
        "a number between 0 and 10",
    )?;
    let scale = numbers(
        "grid.scale",
        &spec.scale,
        vec![0.1, 0.3, 1.0],
        |s| s > 0.0 && s <= 10.0,
        "a number above 0 and at most 10",
    )?;
    let epsilon = numbers(
        "grid.epsilon",
        &spec.epsilon,
        vec![0.05, 0.1, 0.2],
        |e| (0.0..=1.0).contains(&e),
        "a share between 0 and 1",
    )?;
    let exploration = numbers(
        "grid.exploration",
        &spec.exploration,
        vec![campaign.exploration],
        |e| (0.0..=1.0).contains(&e),
        "a share between 0 and 1",
    )?;
    let mut default_dims = vec![64, 4096, 65536, campaign.featurizer.dimension];
    default_dims.sort_unstable();
    default_dims.dedup();
    let dimension = list("grid.dimension", &spec.dimension, default_dims)?;
    for (i, &d) in dimension.iter().enumerate() {
        if !(1..=tailor_policies::features::MAX_DIMENSION).contains(&d) {
            return Err(EngineError::invalid_owned(
                &format!("grid.dimension[{i}]"),
                format!(
                    "must be between 1 and {}, got {d}",
                    tailor_policies::features::MAX_DIMENSION
                ),
            ));
        }
    }
    let dimension = unique(dimension);
    let interactions = unique(list(
        "grid.interactions",
        &spec.interactions,
        vec![campaign.featurizer.interactions],
    )?);
    let max_candidates = spec.max_candidates.unwrap_or(DEFAULT_MAX_CANDIDATES);
    if !(1..=MAX_CANDIDATES).contains(&max_candidates) {
        return Err(EngineError::invalid_owned(
            "grid.max_candidates",
            format!("must be between 1 and {MAX_CANDIDATES}, got {max_candidates}"),
        ));
    }
    let max_seconds = spec.max_seconds.unwrap_or(DEFAULT_MAX_SECONDS);
    if !(1..=MAX_SECONDS).contains(&max_seconds) {
        return Err(EngineError::invalid_owned(
            "grid.max_seconds",
            format!("must be between 1 and {MAX_SECONDS}, got {max_seconds}"),
        ));
    }
    let grid = Grid {
        policies,
        alpha,
        scale,
        epsilon,
        exploration,
        dimension,
        interactions,
        max_candidates,
        max_seconds,
    };
    let serving = Setting {
        name: "serving".into(),
        policy: campaign.policy.clone(),
        featurizer: campaign.featurizer.clone(),
        exploration: campaign.exploration,
    };
    let settings = expand(&grid, campaign);
    let settings: Vec<Setting> = settings
        .into_iter()
        .filter(|s| {
            !(s.policy == serving.policy
                && s.exploration == serving.exploration
                && (s.featurizer == serving.featurizer || !s.policy.uses_features()))
        })
        .collect();
    if settings.is_empty() {
        return Err(EngineError::invalid(
            "grid",
            "expands to no setting other than the serving one",
        ));
    }
    if settings.len() > max_candidates {
        return Err(EngineError::invalid_owned(
            "grid",
            format!(
                "expands to {} candidates, above grid.max_candidates ({max_candidates}, at most {MAX_CANDIDATES}); list fewer values",
                settings.len()
            ),
        ));
    }
    let memory_bytes = memory(&serving, &settings);
    if memory_bytes > MEMORY_BUDGET_BYTES {
        return Err(EngineError::invalid_owned(
            "grid.dimension",
            format!(
                "the candidates would hold about {} MiB of learned state, above the {} MiB budget; search smaller feature spaces or fewer settings",
                memory_bytes >> 20,
                MEMORY_BUDGET_BYTES >> 20
            ),
        ));
    }
    Ok(Plan {
        grid,
        serving,
        settings,
        fingerprint: fingerprint(campaign),
        memory_bytes,
    })
}

/// Every setting of `grid`, in a stable order: feature space, then policy type, then its
/// parameter, then exploration. Policies that do not read features are listed once, over the
/// campaign's feature space; the dense ones only at dimensions up to
/// [`MAX_DENSE_SEARCH_DIMENSION`].
fn expand(grid: &Grid, campaign: &CampaignConfig) -> Vec<Setting> {
    let (lambda, half_life) = serving_ridge(&campaign.policy);
    let lambda = lambda.unwrap_or(1.0);
    let mut out = Vec::new();
    let mut push = |policy: PolicyConfig, featurizer: &FeaturizerConfig| {
        if policy.validate().is_err() {
            return;
        }
        for &e in &grid.exploration {
            out.push(Setting {
                name: setting_name(&policy, featurizer, e),
                policy: policy.clone(),
                featurizer: featurizer.clone(),
                exploration: e,
            });
        }
    };
    for &interactions in &grid.interactions {
        for &dimension in &grid.dimension {
            let featurizer = FeaturizerConfig {
                dimension,
                interactions,
                context_features: campaign.featurizer.context_features,
            };
            let dense_ok = dimension <= MAX_DENSE_SEARCH_DIMENSION;
            for p in &grid.policies {
                match p.as_str() {
                    "sparse_linucb" => {
                        for &alpha in &grid.alpha {
                            push(
                                PolicyConfig::SparseLinUcb {
                                    alpha,
                                    lambda,
                                    half_life,
                                },
                                &featurizer,
                            );
                        }
                    }
                    "linucb" if dense_ok => {
                        // LinUCB needs a positive bonus; α = 0 is `sparse_linucb`'s greedy.
                        for &alpha in grid.alpha.iter().filter(|a| **a > 0.0) {
                            push(
                                PolicyConfig::LinUcb {
                                    alpha,
                                    lambda,
                                    half_life,
                                },
                                &featurizer,
                            );
                        }
                    }
                    "linear_thompson" if dense_ok => {
                        for &scale in &grid.scale {
                            push(
                                PolicyConfig::LinearThompson {
                                    scale,
                                    lambda,
                                    half_life,
                                },
                                &featurizer,
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    for p in &grid.policies {
        match p.as_str() {
            "epsilon_greedy" => {
                for &epsilon in &grid.epsilon {
                    push(
                        PolicyConfig::EpsilonGreedy {
                            epsilon,
                            estimator: Estimator::Mean,
                            lambda,
                            half_life,
                        },
                        &campaign.featurizer,
                    );
                }
            }
            "thompson" => push(
                PolicyConfig::Thompson {
                    prior_alpha: 1.0,
                    prior_beta: 1.0,
                    half_life,
                },
                &campaign.featurizer,
            ),
            "gaussian_thompson" => push(
                PolicyConfig::GaussianThompson {
                    prior_mean: 0.0,
                    prior_count: 1.0,
                    prior_shape: 1.0,
                    prior_scale: 1.0,
                    half_life,
                },
                &campaign.featurizer,
            ),
            _ => {}
        }
    }
    out
}

fn memory(serving: &Setting, settings: &[Setting]) -> u64 {
    let mut spaces: Vec<usize> = vec![serving.featurizer.dimension];
    let mut total = state_bytes(&serving.policy, serving.featurizer.dimension);
    for s in settings {
        total += state_bytes(&s.policy, s.featurizer.dimension);
        if !spaces.contains(&s.featurizer.dimension) {
            spaces.push(s.featurizer.dimension);
        }
    }
    total + spaces.into_iter().map(reward_model_bytes).sum::<u64>()
}

/// Which candidates beat the serving setting, and the winner. A candidate beats it when its
/// estimate is reliable and its interval's low end lies above the serving interval's high end;
/// the winner is the beating candidate of highest value (the first in grid order on a tie).
/// Without a serving estimate nothing can be compared and there is no winner.
pub fn select_winner(
    serving: Option<&Interval>,
    candidates: &[(Option<&Interval>, bool)],
) -> (Vec<bool>, Option<usize>) {
    let beats: Vec<bool> = candidates
        .iter()
        .map(|(v, reliable)| match (serving, v) {
            (Some(s), Some(c)) => *reliable && c.low > s.high,
            _ => false,
        })
        .collect();
    let mut winner: Option<usize> = None;
    for (i, b) in beats.iter().enumerate() {
        if !b {
            continue;
        }
        let v = candidates[i].0.map_or(f64::NEG_INFINITY, |c| c.value);
        let best = winner
            .and_then(|w| candidates[w].0)
            .map_or(f64::NEG_INFINITY, |c| c.value);
        if winner.is_none() || v > best {
            winner = Some(i);
        }
    }
    (beats, winner)
}

fn result_of(setting: &Setting, estimate: Option<&Estimates>) -> CandidateResult {
    CandidateResult {
        setting: setting.clone(),
        value: estimate.map(|e| e.dr),
        reliable: estimate.is_some_and(|e| e.reliable),
        beats_serving: false,
    }
}

/// One pass over the campaign's log in `[from_ms, to_ms)` evaluating the serving setting, the
/// baselines and every setting of `plan`, stopping at `deadline`. Blocking.
pub fn run(
    engine: &Engine,
    campaign: &CampaignConfig,
    request: &EvaluationRequest,
    plan: &Plan,
    deadline: Instant,
) -> Result<Evaluation, EngineError> {
    let started = Instant::now();
    // One evaluator per feature space; the campaign's own first, with the serving setting and
    // the baselines.
    let mut spaces: Vec<(FeaturizerConfig, Vec<Spec>)> = vec![(
        plan.serving.featurizer.clone(),
        vec![
            Spec {
                name: plan.serving.name.clone(),
                role: Role::Serving,
                config: plan.serving.policy.clone(),
                exploration: plan.serving.exploration,
                learns: true,
            },
            Spec {
                name: "uniform".into(),
                role: Role::Baseline,
                config: PolicyConfig::Uniform {},
                exploration: 0.0,
                learns: false,
            },
            Spec {
                name: "baseline".into(),
                role: Role::Baseline,
                config: PolicyConfig::Fixed {},
                exploration: 0.0,
                learns: false,
            },
        ],
    )];
    for s in &plan.settings {
        let spec = Spec {
            name: s.name.clone(),
            role: Role::Candidate,
            config: s.policy.clone(),
            exploration: s.exploration,
            learns: true,
        };
        match spaces.iter_mut().find(|(f, _)| *f == s.featurizer) {
            Some((_, specs)) => specs.push(spec),
            None => spaces.push((s.featurizer.clone(), vec![spec])),
        }
    }
    let sub = EvaluationRequest {
        candidates: Vec::new(),
        optimize: false,
        grid: None,
        ..request.clone()
    };
    let mut evaluators = Vec::with_capacity(spaces.len());
    for (featurizer, specs) in spaces {
        let built = featurizer
            .build()
            .map_err(|e| EngineError::policy("grid.dimension", e))?;
        evaluators.push(Evaluator::from_specs(
            campaign,
            built,
            sub.clone(),
            specs,
            None,
            MAX_DENSE_REWARD_MODEL,
        )?);
    }
    let store = engine.store().as_ref();
    let index = reward_index(store, &campaign.id)?;
    let mut truncated = false;
    for (n, line) in
        log_lines(store, &campaign.id, request.from_ms, request.to_ms, &index).enumerate()
    {
        if n % 64 == 0 && Instant::now() >= deadline {
            truncated = true;
            break;
        }
        match line? {
            Some(l) => {
                for ev in &mut evaluators {
                    ev.push(&l);
                }
            }
            None => {
                for ev in &mut evaluators {
                    ev.push_unreadable();
                }
            }
        }
    }
    let mut docs = evaluators.iter().map(Evaluator::finish);
    let mut doc = docs.next().expect("the campaign's own feature space");
    for other in docs {
        doc.policies.extend(other.policies);
    }
    let find =
        |name: &str| -> Option<&PolicyValue> { doc.policies.iter().find(|p| p.name == name) };
    let serving = result_of(
        &plan.serving,
        find(&plan.serving.name).and_then(|p| p.estimate.as_ref()),
    );
    let mut candidates: Vec<CandidateResult> = plan
        .settings
        .iter()
        .map(|s| result_of(s, find(&s.name).and_then(|p| p.estimate.as_ref())))
        .collect();
    let compared: Vec<(Option<&Interval>, bool)> = candidates
        .iter()
        .map(|c| (c.value.as_ref(), c.reliable))
        .collect();
    let (beats, winner) = select_winner(serving.value.as_ref(), &compared);
    for (c, b) in candidates.iter_mut().zip(beats) {
        c.beats_serving = b;
    }
    let winner = winner.map(|i| candidates[i].setting.name.clone());
    doc.optimization = Some(Optimization {
        grid: plan.grid.clone(),
        estimator: "dr".into(),
        config_fingerprint: plan.fingerprint.clone(),
        serving,
        candidates,
        winner,
        memory_bytes: plan.memory_bytes,
        elapsed_ms: started.elapsed().as_millis() as u64,
        truncated,
    });
    Ok(doc)
}

/// `campaign/id` of each optimization running in this process.
static RUNNING: Mutex<Vec<String>> = parking_lot::const_mutex(Vec::new());

fn running_key(campaign: &str, id: &str) -> String {
    format!("{campaign}/{id}")
}

/// Takes the optimization off [`RUNNING`] however its thread ends.
pub(crate) struct Registration(String);

/// A place among the [`MAX_RUNNING`] optimizations of this process for evaluation `id` of
/// `campaign` (manual ones and the autopilot's share it), or 503 when they are all taken.
pub(crate) fn register(campaign: &str, id: &str) -> Result<Registration, EngineError> {
    let key = running_key(campaign, id);
    let mut running = RUNNING.lock();
    if running.len() >= MAX_RUNNING {
        return Err(EngineError::Unavailable {
            message: format!(
                "{MAX_RUNNING} optimizations are running; start this one when one has finished"
            ),
        });
    }
    // A new run under an id that finished before: only its own result counts.
    FINISHED.lock().retain(|k| *k != key);
    running.push(key.clone());
    Ok(Registration(key))
}

impl Drop for Registration {
    fn drop(&mut self) {
        RUNNING.lock().retain(|k| *k != self.0);
    }
}

/// `campaign/id` of the optimizations whose thread stored its result in this process (the
/// most recent [`FINISHED_KEPT`]): a reader that met the `running` document just before the
/// result replaced it must not call it interrupted.
static FINISHED: Mutex<std::collections::VecDeque<String>> =
    parking_lot::const_mutex(std::collections::VecDeque::new());
const FINISHED_KEPT: usize = 1024;

fn mark_finished(key: String) {
    let mut finished = FINISHED.lock();
    if finished.len() >= FINISHED_KEPT {
        finished.pop_front();
    }
    finished.push_back(key);
}

/// A stored `running` evaluation no thread is working on any more (the server stopped while it
/// ran) is reported `failed`. One whose thread finished after the document was read stays
/// `running` in this answer (its result is stored; the next read has it).
pub fn settle(ev: &mut Evaluation) {
    let key = running_key(&ev.campaign, &ev.id);
    if ev.status == Status::Running
        && !RUNNING.lock().contains(&key)
        && !FINISHED.lock().contains(&key)
    {
        ev.status = Status::Failed;
        ev.error = Some(
            "interrupted: the server stopped before the optimization finished; run it again".into(),
        );
    }
}

pub(crate) fn store_doc(
    engine: &Engine,
    ev: &Evaluation,
    extra: &serde_json::Map<String, Value>,
) -> Result<(), EngineError> {
    let mut doc = serde_json::to_value(ev).expect("evaluation as JSON");
    if let Value::Object(m) = &mut doc {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    let bytes = serde_json::to_vec(&doc).expect("evaluation as JSON");
    engine.put_evaluation(&ev.campaign, &ev.id, &bytes)
}

/// Whether the evaluation `id` of `campaign` is still stored (not deleted while it ran).
fn still_stored(engine: &Engine, campaign: &str, id: &str) -> bool {
    engine.campaign(campaign).is_ok()
        && engine.evaluations(campaign).is_ok_and(|docs| {
            docs.iter().any(|d| {
                serde_json::from_slice::<Value>(d).is_ok_and(|v| v["id"].as_str() == Some(id))
            })
        })
}

/// Validate, store the evaluation `id` as `running` (with `extra` fields beside Tailor's
/// document, e.g. the Personalizer request) and finish it on a background thread. `listed`
/// settings are searched beside the grid (Personalizer's `policies`). Returns the running
/// document.
pub fn start(
    engine: &Arc<Engine>,
    campaign: &str,
    id: &str,
    request: EvaluationRequest,
    extra: serde_json::Map<String, Value>,
    listed: Vec<Setting>,
) -> Result<Evaluation, EngineError> {
    let rt = engine.campaign(campaign)?;
    if request.mode != Mode::Replay {
        return Err(EngineError::invalid(
            "mode",
            "an optimization replays every setting's learning: only \"replay\"",
        ));
    }
    if !request.candidates.is_empty() {
        return Err(EngineError::invalid(
            "candidates",
            "are not read by an optimization; describe the search in \"grid\"",
        ));
    }
    let config = rt.config.clone();
    drop(rt);
    let mut plan = plan(&config, &request.grid.clone().unwrap_or_default())?;
    if listed.len() > MAX_LIST {
        return Err(EngineError::invalid_owned(
            "policies",
            format!("lists {} policies; at most {MAX_LIST}", listed.len()),
        ));
    }
    for (i, s) in listed.into_iter().enumerate() {
        if s.name == plan.serving.name || plan.settings.iter().any(|o| o.name == s.name) {
            return Err(EngineError::invalid_owned(
                &format!("policies[{i}].name"),
                format!(
                    "{:?} is already a candidate; give the policy another name",
                    s.name
                ),
            ));
        }
        s.featurizer
            .build()
            .map_err(|e| EngineError::policy(&format!("policies[{i}].featurizer"), e))?;
        plan.settings.push(s);
    }
    plan.memory_bytes = memory(&plan.serving, &plan.settings);
    if plan.memory_bytes > MEMORY_BUDGET_BYTES {
        return Err(EngineError::invalid(
            "policies",
            "the listed policies' feature spaces are too large to search beside the grid",
        ));
    }
    let registration = register(campaign, id)?;
    let created_ms = now_ms();
    let pending = Evaluation {
        id: id.to_string(),
        status: Status::Running,
        error: None,
        campaign: campaign.to_string(),
        created_ms,
        from_ms: request.from_ms,
        to_ms: request.to_ms,
        mode: request.mode,
        reward_model: request.reward_model,
        decisions: 0,
        unreadable: 0,
        pending: 0,
        used: 0,
        missing_propensity: 0,
        logging: None,
        policies: Vec::new(),
        optimization: Some(Optimization {
            grid: plan.grid.clone(),
            estimator: "dr".into(),
            config_fingerprint: plan.fingerprint.clone(),
            serving: result_of(&plan.serving, None),
            candidates: plan.settings.iter().map(|s| result_of(s, None)).collect(),
            winner: None,
            memory_bytes: plan.memory_bytes,
            elapsed_ms: 0,
            truncated: false,
        }),
    };
    store_doc(engine, &pending, &extra)?;
    let engine = engine.clone();
    let running = pending.clone();
    std::thread::Builder::new()
        .name("tailor-optimize".into())
        .spawn(move || {
            let _registration = registration;
            let deadline = Instant::now() + Duration::from_secs(plan.grid.max_seconds);
            let done = match run(&engine, &config, &request, &plan, deadline) {
                Ok(mut ev) => {
                    ev.id = running.id.clone();
                    ev.created_ms = created_ms;
                    tracing::info!(campaign = %ev.campaign, evaluation = %ev.id,
                        candidates = plan.settings.len(), used = ev.used,
                        winner = ?ev.optimization.as_ref().and_then(|o| o.winner.clone()),
                        "optimization finished");
                    ev
                }
                Err(e) => {
                    tracing::warn!(campaign = %running.campaign, evaluation = %running.id, error = %e, "optimization failed");
                    Evaluation {
                        status: Status::Failed,
                        error: Some(e.to_string()),
                        ..running.clone()
                    }
                }
            };
            if still_stored(&engine, &done.campaign, &done.id) {
                match store_doc(&engine, &done, &extra) {
                    Ok(()) => mark_finished(running_key(&done.campaign, &done.id)),
                    Err(e) => {
                        tracing::error!(campaign = %done.campaign, evaluation = %done.id, error = %e, "optimization result not stored")
                    }
                }
            }
        })
        .map_err(|e| EngineError::Unavailable {
            message: format!("could not start the optimization thread: {e}"),
        })?;
    Ok(pending)
}

/// The setting to apply from `ev`: the candidate named `candidate`, else the winner. A 409 when
/// `ev` is not a finished optimization or has no winner, a 400 for an unknown candidate name.
pub fn chosen<'a>(ev: &'a Evaluation, candidate: Option<&str>) -> Result<&'a Setting, EngineError> {
    let Some(opt) = &ev.optimization else {
        return Err(EngineError::Conflict {
            field: "evaluation".into(),
            message: format!(
                "{:?} is not an optimization (create one with \"optimize\": true)",
                ev.id
            ),
        });
    };
    match ev.status {
        Status::Succeeded => {}
        Status::Running => {
            return Err(EngineError::Conflict {
                field: "evaluation".into(),
                message: format!("{:?} is still running", ev.id),
            })
        }
        Status::Failed => {
            return Err(EngineError::Conflict {
                field: "evaluation".into(),
                message: format!(
                    "{:?} failed: {}",
                    ev.id,
                    ev.error.as_deref().unwrap_or("unknown error")
                ),
            })
        }
    }
    let name = match candidate {
        Some(n) => n,
        None => opt.winner.as_deref().ok_or_else(|| EngineError::Conflict {
            field: "winner".into(),
            message: "no candidate's interval clears the serving setting's: nothing to apply (name a candidate to apply it anyway)".into(),
        })?,
    };
    opt.candidates
        .iter()
        .map(|c| &c.setting)
        .find(|s| s.name == name)
        .ok_or_else(|| {
            EngineError::invalid_owned(
                "candidate",
                format!("{:?} has no candidate {name:?}", ev.id),
            )
        })
}

/// Set `setting` on `config`, refusing (409) when `config` changed since `ev` started.
pub fn apply_setting(
    config: &mut CampaignConfig,
    ev: &Evaluation,
    setting: &Setting,
) -> Result<(), EngineError> {
    let started = ev
        .optimization
        .as_ref()
        .map(|o| o.config_fingerprint.as_str())
        .unwrap_or_default();
    if fingerprint(config) != started {
        return Err(EngineError::Conflict {
            field: "campaign".into(),
            message: format!(
                "campaign {:?} changed since evaluation {:?} started; run a new optimization",
                config.id, ev.id
            ),
        });
    }
    config.policy = setting.policy.clone();
    config.featurizer = setting.featurizer.clone();
    config.exploration = setting.exploration;
    Ok(())
}

/// The learning settings of a campaign: the part of its config an optimization changes (the
/// audit entry of an apply holds this before and after).
pub fn settings_of(config: &CampaignConfig) -> Value {
    serde_json::json!({
        "policy": config.policy,
        "featurizer": config.featurizer,
        "exploration": config.exploration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign(json: Value) -> CampaignConfig {
        let c: CampaignConfig = serde_json::from_value(json).unwrap();
        c.validate().unwrap();
        c
    }

    fn iv(value: f64, half: f64) -> Interval {
        Interval {
            value,
            std_error: half / 1.96,
            low: value - half,
            high: value + half,
        }
    }

    #[test]
    fn default_grid_is_bounded_and_leaves_out_the_serving_setting() {
        let c = campaign(
            serde_json::json!({"id": "c", "policy": {"type": "sparse_linucb", "alpha": 0.2}}),
        );
        let p = plan(&c, &GridSpec::default()).unwrap();
        assert!(
            p.settings.len() <= DEFAULT_MAX_CANDIDATES,
            "{}",
            p.settings.len()
        );
        assert!(!p
            .settings
            .iter()
            .any(|s| s.policy == c.policy && s.featurizer == c.featurizer));
        // Names are unique: results are found by name.
        let mut names: Vec<&str> = p.settings.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), p.settings.len());
        // Dense policies only at small dimensions; non-contextual ones once.
        for s in &p.settings {
            if is_dense(&s.policy) {
                assert!(
                    s.featurizer.dimension <= MAX_DENSE_SEARCH_DIMENSION,
                    "{}",
                    s.name
                );
            }
        }
        assert_eq!(
            p.settings
                .iter()
                .filter(|s| s.policy.kind() == "thompson")
                .count(),
            1
        );
        assert_eq!(
            p.settings
                .iter()
                .filter(|s| s.policy.kind() == "epsilon_greedy")
                .count(),
            3
        );
        assert!(p.memory_bytes <= MEMORY_BUDGET_BYTES);
        assert_eq!(p.fingerprint, fingerprint(&c));
    }

    #[test]
    fn grid_expands_to_the_product_of_its_lists() {
        let c = campaign(serde_json::json!({"id": "c", "policy": {"type": "thompson"}}));
        let spec = GridSpec {
            policies: Some(vec!["linucb".into(), "sparse_linucb".into()]),
            alpha: Some(vec![0.0, 0.1, 1.0]),
            exploration: Some(vec![0.0, 0.1]),
            dimension: Some(vec![64, 256]),
            interactions: Some(vec![true, false]),
            ..Default::default()
        };
        let p = plan(&c, &spec).unwrap();
        // sparse: 3 alphas; linucb: 2 (α = 0 is not a LinUCB); × 2 dims × 2 interactions × 2
        // explorations.
        assert_eq!(p.settings.len(), (3 + 2) * 2 * 2 * 2);
        // Repeated values are searched once.
        let repeated = GridSpec {
            alpha: Some(vec![0.1, 1.0, 0.1, 0.0]),
            dimension: Some(vec![64, 256, 64]),
            ..spec
        };
        assert_eq!(
            plan(&c, &repeated).unwrap().settings.len(),
            (3 + 2) * 2 * 2 * 2
        );
    }

    #[test]
    fn a_grid_too_large_or_out_of_range_names_its_field() {
        let c = campaign(serde_json::json!({"id": "c"}));
        let field = |spec: GridSpec| plan(&c, &spec).unwrap_err().field().map(str::to_string);
        let big = GridSpec {
            alpha: Some((1..=16).map(|i| i as f64 * 0.1).collect()),
            dimension: Some(vec![64, 128, 256, 512, 4096]),
            interactions: Some(vec![true, false]),
            ..Default::default()
        };
        assert_eq!(field(big).as_deref(), Some("grid"));
        let too_long = GridSpec {
            alpha: Some(vec![0.1; 17]),
            ..Default::default()
        };
        assert_eq!(field(too_long).as_deref(), Some("grid.alpha"));
        let bad = GridSpec {
            alpha: Some(vec![0.1, -1.0]),
            ..Default::default()
        };
        assert_eq!(field(bad).as_deref(), Some("grid.alpha[1]"));
        let unknown = GridSpec {
            policies: Some(vec!["linucb_disjoint".into()]),
            ..Default::default()
        };
        assert_eq!(field(unknown).as_deref(), Some("grid.policies[0]"));
        let cap = GridSpec {
            max_candidates: Some(MAX_CANDIDATES + 1),
            ..Default::default()
        };
        assert_eq!(field(cap).as_deref(), Some("grid.max_candidates"));
        let secs = GridSpec {
            max_seconds: Some(0),
            ..Default::default()
        };
        assert_eq!(field(secs).as_deref(), Some("grid.max_seconds"));
        let dim = GridSpec {
            dimension: Some(vec![1 << 20]),
            ..Default::default()
        };
        assert_eq!(field(dim).as_deref(), Some("grid.dimension[0]"));
    }

    #[test]
    fn the_winner_clears_the_serving_interval_and_is_reliable() {
        let serving = iv(0.30, 0.05);
        let candidates = [
            (Some(iv(0.40, 0.08)), true),  // overlaps (low 0.32 < high 0.35)
            (Some(iv(0.50, 0.10)), true),  // clears: low 0.40
            (Some(iv(0.60, 0.05)), false), // clears but unreliable
            (Some(iv(0.45, 0.02)), true),  // clears, lower value than #1
            (None, false),
        ];
        let refs: Vec<(Option<&Interval>, bool)> =
            candidates.iter().map(|(v, r)| (v.as_ref(), *r)).collect();
        let (beats, winner) = select_winner(Some(&serving), &refs);
        assert_eq!(beats, vec![false, true, false, true, false]);
        assert_eq!(winner, Some(1));
        // No serving estimate: nothing to compare with.
        let (beats, winner) = select_winner(None, &refs);
        assert!(beats.iter().all(|b| !b));
        assert_eq!(winner, None);
        // Nobody clears: no winner.
        let (_, winner) = select_winner(Some(&iv(0.9, 0.05)), &refs);
        assert_eq!(winner, None);
    }

    #[test]
    fn apply_refuses_a_changed_campaign_and_sets_the_chosen_setting() {
        let c = campaign(
            serde_json::json!({"id": "c", "policy": {"type": "linucb", "alpha": 5.0}, "exploration": 0.2}),
        );
        let p = plan(&c, &GridSpec::default()).unwrap();
        let setting = p.settings[0].clone();
        let mut ev = Evaluation {
            id: "ev-1".into(),
            status: Status::Succeeded,
            error: None,
            campaign: "c".into(),
            created_ms: 0,
            from_ms: None,
            to_ms: None,
            mode: Mode::Replay,
            reward_model: Default::default(),
            decisions: 0,
            unreadable: 0,
            pending: 0,
            used: 0,
            missing_propensity: 0,
            logging: None,
            policies: Vec::new(),
            optimization: Some(Optimization {
                grid: p.grid.clone(),
                estimator: "dr".into(),
                config_fingerprint: p.fingerprint.clone(),
                serving: result_of(&p.serving, None),
                candidates: p.settings.iter().map(|s| result_of(s, None)).collect(),
                winner: None,
                memory_bytes: 0,
                elapsed_ms: 0,
                truncated: false,
            }),
        };
        // No winner: 409 naming `winner`; a named candidate is applied anyway.
        assert_eq!(chosen(&ev, None).unwrap_err().field(), Some("winner"));
        assert_eq!(
            chosen(&ev, Some("nope")).unwrap_err().field(),
            Some("candidate")
        );
        ev.optimization.as_mut().unwrap().winner = Some(setting.name.clone());
        let s = chosen(&ev, None).unwrap().clone();
        let mut changed = c.clone();
        changed.holdout = 0.1;
        assert_eq!(
            apply_setting(&mut changed, &ev, &s).unwrap_err().field(),
            Some("campaign")
        );
        let mut config = c.clone();
        apply_setting(&mut config, &ev, &s).unwrap();
        assert_eq!(config.policy, setting.policy);
        assert_eq!(config.featurizer, setting.featurizer);
        assert_eq!(config.exploration, setting.exploration);
        ev.status = Status::Running;
        assert_eq!(chosen(&ev, None).unwrap_err().field(), Some("evaluation"));
    }
}
