//! Off-policy evaluation over a campaign's decision log: which policies to evaluate, how log
//! lines become the estimators' input, and the stored [`Evaluation`] document.
//!
//! The same [`Evaluator`] runs inside the server (`POST /admin/v1/campaigns/{id}/evaluations`,
//! over the store) and in the CLI (`tailor evaluate FILE.jsonl`, over an exported [`log`]), so an
//! exported log reproduces the campaign's own estimate exactly. The estimators themselves live in
//! `tailor_policies::ope`.
//!
//! Evaluated policies:
//!
//! * every configured policy (`serving`, `shadow`);
//! * `uniform` and `baseline` (the candidates in the order sent);
//! * candidates from the request (`candidate`): another policy config and/or an exploration rate;
//! * the logging policy itself: the on-policy mean reward (`logging`).
//!
//! In `replay` mode (the default) learning policies start from their config at the start of the
//! range and learn from every logged reward after being evaluated on its event, in log order —
//! what they would have known then. In `current` mode the configured policies are evaluated with
//! the state they have now (optimistic: that state learned from the same rewards).

pub mod autopilot;
pub mod export;
pub mod log;
pub mod optimize;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tailor_policies::ope::{
    Estimates, Guards, LoggedEvent, LoggedSlot, OffPolicyRun, OnPolicy, Refusal, RewardModelConfig,
    Target, TargetTrace,
};
use tailor_policies::{Arm, Featurizer, Policy, PolicyConfig, SparseVec};

use crate::campaign::CampaignConfig;
use crate::engine::{featurize, now_ms, CampaignRuntime, Engine};
use crate::error::EngineError;
use crate::store::{Store, StoreError};
use log::{line_of, ByDecision, LogHeader, LogLine, LOG_FORMAT_VERSION};

/// How learning policies are evaluated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Start from the config at the start of the range and learn along the log.
    #[default]
    Replay,
    /// Use the configured policies' current learned state, frozen.
    Current,
}

/// A policy to evaluate that is not configured on the campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateSpec {
    /// Name in the results (default: the policy type, with the exploration rate if any).
    #[serde(default)]
    pub name: Option<String>,
    /// The policy (default: the campaign's serving policy).
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    /// Share of uniformly random choices mixed in, 0..=1.
    #[serde(default)]
    pub exploration: f64,
}

/// Body of `POST /admin/v1/campaigns/{id}/evaluations` (every field optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationRequest {
    /// Decisions at or after this instant (ms since the epoch).
    pub from_ms: Option<u64>,
    /// Decisions before this instant.
    pub to_ms: Option<u64>,
    pub mode: Mode,
    pub reward_model: RewardModelConfig,
    pub candidates: Vec<CandidateSpec>,
    pub guards: Option<Guards>,
    /// Search a grid of learning settings instead (docs/optimization.md): runs in the
    /// background; the stored document says `status: running` until it is done.
    pub optimize: bool,
    /// The settings searched when `optimize` is set (every field optional).
    pub grid: Option<optimize::GridSpec>,
}

/// Why a policy is in an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Serving,
    Shadow,
    Baseline,
    Candidate,
}

/// The estimated value of one policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyValue {
    pub name: String,
    pub role: Role,
    pub config: PolicyConfig,
    pub exploration: f64,
    /// Whether it learned along the log (`replay`) or kept its state.
    pub learned_during_replay: bool,
    /// The slate's value (for single-slot campaigns: the slot's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimates>,
    /// Why there is no estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    /// Per slot, for multi-slot logs: `{"estimate": ...}` or `{"refused": ...}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<SlotValue>,
}

/// The estimate of one slot, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimates>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
}

/// Whether an evaluation is done. Plain evaluations are stored done; optimizations run in the
/// background.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    #[default]
    Succeeded,
    Failed,
}

/// A stored evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// `ev-<n>`; empty for evaluations of a file.
    pub id: String,
    #[serde(default)]
    pub status: Status,
    /// Why a `failed` evaluation failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub campaign: String,
    pub created_ms: u64,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub mode: Mode,
    pub reward_model: RewardModelConfig,
    /// Decisions in the range.
    pub decisions: u64,
    /// Decisions whose candidates are unknown (request body not logged or not a decide body).
    pub unreadable: u64,
    /// Decisions still waiting for a reward (window open): left out.
    pub pending: u64,
    /// Decisions evaluated.
    pub used: u64,
    /// Decisions skipped for a missing, invalid or mismatched propensity.
    pub missing_propensity: u64,
    /// The logging policy's own value (mean logged reward).
    pub logging: Option<OnPolicy>,
    pub policies: Vec<PolicyValue>,
    /// The grid searched, each candidate's estimate and the winner (optimizations only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization: Option<optimize::Optimization>,
}

struct Spec {
    name: String,
    role: Role,
    config: PolicyConfig,
    exploration: f64,
    learns: bool,
}

/// Streams log lines through the estimators.
pub struct Evaluator {
    campaign: String,
    featurizer: Featurizer,
    request: EvaluationRequest,
    specs: Vec<Spec>,
    run: OffPolicyRun,
    decisions: u64,
    unreadable: u64,
    pending: u64,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("campaign", &self.campaign)
            .finish_non_exhaustive()
    }
}

fn candidate_name(c: &CandidateSpec, config: &PolicyConfig) -> String {
    c.name.clone().unwrap_or_else(|| {
        if c.exploration > 0.0 {
            format!("{}+explore{}", config.kind(), c.exploration)
        } else {
            config.kind().to_string()
        }
    })
}

impl Evaluator {
    /// Targets for `campaign`: its configured policies (with their live state in `current` mode,
    /// from `live`), the baselines and the request's candidates.
    pub fn new(
        campaign: &CampaignConfig,
        request: EvaluationRequest,
        live: Option<&[(String, Policy)]>,
    ) -> Result<Self, EngineError> {
        let featurizer = campaign
            .featurizer
            .build()
            .map_err(|e| EngineError::policy("featurizer", e))?;
        let replay = request.mode == Mode::Replay;
        let mut specs = Vec::new();
        for (i, pc) in campaign.all_policies().enumerate() {
            specs.push(Spec {
                name: pc.kind().to_string(),
                role: if i == 0 { Role::Serving } else { Role::Shadow },
                config: pc.clone(),
                exploration: 0.0,
                learns: replay,
            });
        }
        for (name, config) in [
            ("uniform", PolicyConfig::Uniform {}),
            ("baseline", PolicyConfig::Fixed {}),
        ] {
            specs.push(Spec {
                name: name.into(),
                role: Role::Baseline,
                config,
                exploration: 0.0,
                learns: false,
            });
        }
        for (i, c) in request.candidates.iter().enumerate() {
            if !(0.0..=1.0).contains(&c.exploration) {
                return Err(EngineError::invalid_owned(
                    &format!("candidates[{i}].exploration"),
                    format!("must be between 0 and 1, got {}", c.exploration),
                ));
            }
            let config = c.policy.clone().unwrap_or_else(|| campaign.policy.clone());
            config
                .validate()
                .map_err(|e| EngineError::policy(&format!("candidates[{i}].policy"), e))?;
            let name = candidate_name(c, &config);
            if specs.iter().any(|s| s.name == name) {
                return Err(EngineError::invalid_owned(
                    &format!("candidates[{i}].name"),
                    format!("{name:?} is already evaluated; give the candidate a distinct name"),
                ));
            }
            // In `current` mode a candidate that only changes the exploration of a configured
            // policy starts from that policy's live state.
            let has_live =
                !replay && live.is_some_and(|l| l.iter().any(|(_, p)| p.config() == &config));
            specs.push(Spec {
                name,
                role: Role::Candidate,
                config,
                exploration: c.exploration,
                learns: !has_live,
            });
        }
        Self::from_specs(campaign, featurizer, request, specs, live, usize::MAX)
    }

    /// An evaluator of `specs` over vectors of `featurizer` (one feature space of an
    /// optimization); the reward model keeps a dense ridge only up to `max_dense_model`
    /// dimensions.
    fn from_specs(
        campaign: &CampaignConfig,
        featurizer: Featurizer,
        request: EvaluationRequest,
        specs: Vec<Spec>,
        live: Option<&[(String, Policy)]>,
        max_dense_model: usize,
    ) -> Result<Self, EngineError> {
        let dim = featurizer.dimension();
        let replay = request.mode == Mode::Replay;
        let mut targets = Vec::with_capacity(specs.len());
        for s in &specs {
            let live_state = (!s.learns && !replay)
                .then(|| live.and_then(|l| l.iter().find(|(_, p)| p.config() == &s.config)))
                .flatten()
                .map(|(_, p)| p.clone());
            let policy = match live_state {
                Some(p) => p,
                None => s
                    .config
                    .build(dim)
                    .map_err(|e| EngineError::policy("policy", e))?,
            };
            targets.push(if s.learns {
                Target::replayed(&s.name, policy, s.exploration)
            } else {
                Target::frozen(&s.name, policy, s.exploration)
            });
        }
        let model = request
            .reward_model
            .build_bounded(dim, max_dense_model)
            .map_err(|e| EngineError::policy("reward_model", e))?;
        // Estimates stay in the campaign's reward range or are marked unreliable.
        let run = OffPolicyRun::new(request.guards.unwrap_or_default(), model, targets)
            .reward_range(campaign.reward_range);
        Ok(Self {
            campaign: campaign.id.clone(),
            featurizer,
            request,
            specs,
            run,
            decisions: 0,
            unreadable: 0,
            pending: 0,
        })
    }

    /// Names of the evaluated policies, in result order.
    pub fn policy_names(&self) -> Vec<&str> {
        self.specs.iter().map(|s| s.name.as_str()).collect()
    }

    /// Count a decision whose candidates are unknown.
    pub fn push_unreadable(&mut self) {
        self.decisions += 1;
        self.unreadable += 1;
    }

    /// Evaluate one logged decision. Returns each policy's view of its top slot, or `None` when
    /// it was left out (pending, unreadable features, missing propensity).
    pub fn push(&mut self, line: &LogLine) -> Option<Vec<TargetTrace>> {
        self.decisions += 1;
        if line.actions.iter().any(|a| a.reward.is_none()) || line.actions.is_empty() {
            self.pending += 1;
            return None;
        }
        let Ok(context) = featurize::features("context", &line.context) else {
            self.unreadable += 1;
            return None;
        };
        let mut vectors: Vec<SparseVec> = Vec::with_capacity(line.candidates.len());
        for c in &line.candidates {
            let Ok(f) = featurize::features("features", &c.features) else {
                self.unreadable += 1;
                return None;
            };
            vectors.push(self.featurizer.vector(&context, &c.id, &f));
        }
        let arms: Vec<Arm<'_>> = line
            .candidates
            .iter()
            .zip(&vectors)
            .map(|(c, x)| Arm { id: &c.id, x })
            .collect();
        let slots: Vec<LoggedSlot> = line
            .actions
            .iter()
            .map(|a| {
                let index = line.candidates.iter().position(|c| c.id == a.id);
                LoggedSlot {
                    // A served action that is not among the candidates cannot be weighted: the
                    // estimators count it as a missing propensity.
                    index: index.unwrap_or(usize::MAX),
                    propensity: index.and(a.probability),
                    reward: a.reward.unwrap_or(0.0),
                    pinned: a.pinned,
                }
            })
            .collect();
        self.run.push(&LoggedEvent {
            arms: &arms,
            slots: &slots,
            explore: line.explore,
        })
    }

    /// The evaluation document (without id and creation time).
    pub fn finish(&self) -> Evaluation {
        let report = self.run.finish();
        let policies = self
            .specs
            .iter()
            .zip(report.targets)
            .map(|(s, t)| {
                let (estimate, refused) = split(t.total);
                PolicyValue {
                    name: s.name.clone(),
                    role: s.role,
                    config: s.config.clone(),
                    exploration: s.exploration,
                    learned_during_replay: s.learns,
                    estimate,
                    refused,
                    slots: t
                        .slots
                        .into_iter()
                        .map(|o| {
                            let (estimate, refused) = split(o);
                            SlotValue { estimate, refused }
                        })
                        .collect(),
                }
            })
            .collect();
        Evaluation {
            id: String::new(),
            status: Status::Succeeded,
            error: None,
            campaign: self.campaign.clone(),
            created_ms: 0,
            from_ms: self.request.from_ms,
            to_ms: self.request.to_ms,
            mode: self.request.mode,
            reward_model: self.request.reward_model,
            decisions: self.decisions,
            unreadable: self.unreadable,
            pending: self.pending,
            used: report.used,
            missing_propensity: report.missing_propensity,
            logging: report.logging,
            policies,
            optimization: None,
        }
    }
}

fn split(o: Result<Estimates, Refusal>) -> (Option<Estimates>, Option<Refusal>) {
    match o {
        Ok(e) => (Some(e), None),
        Err(r) => (None, Some(r)),
    }
}

/// The applied rewards of `campaign`, indexed for [`log_lines`]: one pass over the reward log,
/// keeping 24 bytes per reward (see [`ByDecision`]).
pub fn reward_index(store: &dyn Store, campaign: &str) -> Result<ByDecision, StoreError> {
    // The reward entries carry their decision's seq, slot and value: no decision is read.
    ByDecision::build_from_values(store.reward_values(campaign))
}

/// The decision log of `campaign` in `[from_ms, to_ms)`, joined with the rewards of `index`, in
/// log order, read from the store one decision at a time (nothing is collected): `Some(line)`,
/// or `None` for a decision whose candidates are unknown (request body not kept or not a decide
/// request).
pub fn log_lines<'a>(
    store: &'a dyn Store,
    campaign: &'a str,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    index: &'a ByDecision,
) -> impl Iterator<Item = Result<Option<LogLine>, StoreError>> + 'a {
    store.decisions(campaign, 0).filter_map(move |d| {
        let d = match d {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        if d.campaign != campaign
            || from_ms.is_some_and(|f| d.at_ms < f)
            || to_ms.is_some_and(|t| d.at_ms >= t)
        {
            return None;
        }
        Some(Ok(line_of(&d, index)))
    })
}

/// The header of an export of `campaign`.
pub fn header(campaign: &CampaignConfig, from_ms: Option<u64>, to_ms: Option<u64>) -> LogHeader {
    LogHeader {
        tailor_log: LOG_FORMAT_VERSION,
        campaign: campaign.clone(),
        from_ms,
        to_ms,
        exported_ms: now_ms(),
    }
}

/// Evaluate a campaign's own log (blocking: run it off the async workers).
pub fn evaluate_campaign(
    engine: &Engine,
    rt: &CampaignRuntime,
    request: EvaluationRequest,
) -> Result<Evaluation, EngineError> {
    let live = rt.learner.read().policies.clone();
    let mut ev = Evaluator::new(&rt.config, request, Some(&live))?;
    let store = engine.store().as_ref();
    let index = reward_index(store, &rt.config.id)?;
    let (from_ms, to_ms) = (ev.request.from_ms, ev.request.to_ms);
    for line in log_lines(store, &rt.config.id, from_ms, to_ms, &index) {
        match line? {
            Some(l) => {
                ev.push(&l);
            }
            None => ev.push_unreadable(),
        }
    }
    Ok(ev.finish())
}

/// Evaluate and store; the stored document is returned. An optimization is stored `running` and
/// continues on a background thread.
pub fn run_and_store(
    engine: &std::sync::Arc<Engine>,
    campaign: &str,
    request: EvaluationRequest,
) -> Result<Evaluation, EngineError> {
    if request.optimize {
        let id = format!("ev-{}", engine.store().next_seq()?);
        return optimize::start(
            engine,
            campaign,
            &id,
            request,
            serde_json::Map::new(),
            Vec::new(),
        );
    }
    if request.grid.is_some() {
        return Err(EngineError::invalid(
            "grid",
            "is only read with \"optimize\": true",
        ));
    }
    let rt = engine.campaign(campaign)?;
    let mut ev = evaluate_campaign(engine, &rt, request)?;
    ev.id = format!("ev-{}", engine.store().next_seq()?);
    ev.created_ms = now_ms();
    let json = serde_json::to_vec(&ev).expect("JSON encoding of an evaluation");
    engine.store().put_evaluation(campaign, &ev.id, &json)?;
    Ok(ev)
}

/// Stored evaluations of a campaign, newest first.
pub fn list(engine: &Engine, campaign: &str) -> Result<Vec<Evaluation>, EngineError> {
    engine.campaign(campaign)?;
    let mut out = Vec::new();
    for json in engine.store().evaluations(campaign)? {
        if autopilot::is_state_doc(&json) {
            continue;
        }
        let mut ev: Evaluation =
            serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt {
                what: "evaluation",
                message: e.to_string(),
            })?;
        optimize::settle(&mut ev);
        out.push(ev);
    }
    out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
    Ok(out)
}

/// One time bucket of a policy's estimated reward (see [`value_series`]).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ValuePoint {
    pub start_ms: u64,
    /// Decisions of the bucket that entered the estimate (rewarded or closed, with propensities).
    pub decisions: u64,
    /// Self-normalized IPS estimate of the top slot's mean reward: Σ w·r / Σ w with
    /// w = π(served action) / logged propensity. `None` when Σ w = 0 (the policy never gives the
    /// served actions any probability in this bucket).
    pub value: Option<f64>,
    /// (Σ w)² / Σ w²: how many decisions the estimate is effectively worth; small means noisy.
    pub effective_sample_size: f64,
    /// Share of decisions where the policy's most likely top action is the one served.
    pub agreement: f64,
}

/// The reward-over-time estimate of one configured policy.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ValueSeries {
    /// The policy type (as in the campaign config).
    pub policy: String,
    /// Its role in the campaign's current config.
    #[schema(value_type = String)]
    pub role: Role,
    pub series: Vec<ValuePoint>,
}

/// `GET /admin/v1/campaigns/{id}/reports/policy-values`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ValueSeriesReport {
    pub bucket_seconds: u64,
    /// How the values were computed, for display.
    pub method: String,
    pub policies: Vec<ValueSeries>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    n: u64,
    sum_w: f64,
    sum_w2: f64,
    sum_wr: f64,
    agree: u64,
}

/// Reward over time of every configured policy — the serving one and the shadows — estimated
/// from the campaign's whole decision log by replay (each policy starts from its config and learns
/// from the logged rewards in log order, as the evaluation API's `replay` mode does) and
/// self-normalized inverse propensity scoring of the top slot, per time bucket. Shadow policies
/// never served, so this is the only way to put them on a time axis; the serving policy's
/// estimate can be checked against its logged reward rate (`reports/policies`). Blocking.
pub fn value_series(
    engine: &Engine,
    rt: &CampaignRuntime,
    bucket_seconds: u64,
) -> Result<ValueSeriesReport, EngineError> {
    let live = rt.learner.read().policies.clone();
    let mut ev = Evaluator::new(&rt.config, EvaluationRequest::default(), Some(&live))?;
    let configured: Vec<(String, Role)> = ev
        .specs
        .iter()
        .filter(|s| matches!(s.role, Role::Serving | Role::Shadow))
        .map(|s| (s.name.clone(), s.role))
        .collect();
    let store = engine.store().as_ref();
    let index = reward_index(store, &rt.config.id)?;
    let bucket_ms = bucket_seconds.max(1) * 1000;
    // Folded one decision at a time: memory is the reward index and one entry per bucket.
    let mut acc: Vec<BTreeMap<u64, Bucket>> = vec![BTreeMap::new(); configured.len()];
    for line in log_lines(store, &rt.config.id, None, None, &index) {
        let Some(line) = line? else {
            continue;
        };
        let Some(traces) = ev.push(&line) else {
            continue;
        };
        // `push` evaluated the line, so the top slot has a valid propensity and a reward.
        let top = &line.actions[0];
        let mu = top.probability.unwrap_or(1.0).min(1.0);
        // A convex combination of in-range rewards: the bucket's value stays in the range.
        let r = rt.config.reward_range.clamp(top.reward.unwrap_or(0.0));
        let served = line.candidates.iter().position(|c| c.id == top.id);
        let start = line.at_ms / bucket_ms * bucket_ms;
        for (t, a) in traces.iter().zip(acc.iter_mut()) {
            let b = a.entry(start).or_default();
            let w = t.probability / mu;
            b.n += 1;
            b.sum_w += w;
            b.sum_w2 += w * w;
            b.sum_wr += w * r;
            b.agree += u64::from(served == Some(t.mode));
        }
    }
    let policies = configured
        .into_iter()
        .zip(acc)
        .map(|((policy, role), buckets)| ValueSeries {
            policy,
            role,
            series: buckets
                .into_iter()
                .map(|(start_ms, b)| ValuePoint {
                    start_ms,
                    decisions: b.n,
                    value: (b.sum_w > 0.0).then(|| b.sum_wr / b.sum_w),
                    effective_sample_size: if b.sum_w2 > 0.0 {
                        b.sum_w * b.sum_w / b.sum_w2
                    } else {
                        0.0
                    },
                    agreement: b.agree as f64 / b.n.max(1) as f64,
                })
                .collect(),
        })
        .collect();
    Ok(ValueSeriesReport {
        bucket_seconds,
        method: "replay + self-normalized IPS of the top slot, per bucket".into(),
        policies,
    })
}
