//! Policy configurations (what an admin sends) and runtimes (what chooses and learns).
//!
//! | `type` | learns | chooses | propensity |
//! |---|---|---|---|
//! | `thompson` | Beta-Bernoulli per action id | argmax of posterior draws | exact max-probability by quadrature ([`crate::propensity`]) |
//! | `gaussian_thompson` | Normal-Inverse-Gamma per action id | argmax of draws of the mean | same, over Student-t marginals |
//! | `linucb` | one ridge model over the featurizer's vectors | argmax of `θᵀx + α·sqrt(xᵀA⁻¹x)` | 1 (split over exact ties) |
//! | `linucb_disjoint` | one ridge model per action id | same, per-arm | 1 (split over exact ties) |
//! | `sparse_linucb` | one diagonal-covariance ridge model, O(nnz) per decision and update, up to 2^18 dimensions ([`crate::sparse_linear`]) | argmax of `θᵀx + α·sqrt(Σ xᵢ²σᵢ²)` | 1 (split over exact ties) |
//! | `linear_thompson` | one ridge model | argmax of `θ̃ᵀx`, `θ̃ ~ N(θ, v²A⁻¹)` | quadrature over per-candidate normal marginals (ignores the correlation between candidates' scores: approximate) |
//! | `epsilon_greedy` | per-arm mean or ridge model | greedy, uniform with probability ε | `(1-ε)/ties + ε/n` |
//! | `uniform` | nothing | uniform | `1/n` |
//! | `fixed` | nothing | candidates in the order sent | 1 |
//!
//! Slots are filled without replacement; each slot's probability is conditional on the slots
//! above it (for sampling policies: the probability that the chosen candidate's draw is the
//! largest among the remaining candidates). With `explore == false` every policy serves greedily
//! (posterior mean or `θᵀx`; `uniform`, which has no estimates, serves the order sent) with
//! propensity 1 split over exact ties. With `exploration = ε > 0`
//! ([`Policy::choose_with_exploration`]) each slot is uniform over the remaining candidates with
//! probability ε and the reported propensity is the exact mixture `(1-ε)·p_policy + ε/n`.
//!
//! Forgetting: every learning policy takes an optional `half_life` (in rewards). Each reward
//! discounts older evidence by `γ = 2^(-1/half_life)` toward the prior: Beta and NIG statistics of
//! every arm decay with the policy's reward count (lazily, on access); ridge models discount `A`
//! toward `λI` and `b` toward 0 ([`crate::linear`]); disjoint per-arm models and per-arm means
//! decay with their own arm's reward count.
//!
//! Cost (release build, 2 shared cores, 100 candidates): Thompson ≈ 5 µs at a shared prior and
//! 20–50 µs with 100 distinct posteriors (propensity included; greedy ≈ 3–5 µs); Gaussian
//! Thompson 30–80 µs (per-arm Student-t CDF tables; without them, under forgetting, hundreds of
//! µs); LinUCB at dimension 32 ≈ 6 µs with id-only vectors and ≈ 35 µs with 31 nonzeros per
//! vector. `sparse_linucb` ≈ 8 µs to choose among 100 candidates of 36 nonzeros and ≈ 0.15 µs to
//! update, at 2^12 to 2^18 dimensions alike (`wide/` group). See `benches/benches/policies.rs`
//! and `docs/propensities.md`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::linear::Ridge;
use crate::propensity::{
    group, lift, max_probability, BetaMarginal, BetaTable, Lifted, StudentMarginal, StudentTable,
    MIN_PROPENSITY,
};
use crate::sparse_linear::DiagRidge;
use crate::{PolicyError, SparseVec};

mod adjust;
mod forgetting;
mod slate;

pub use slate::{ordered_slate, SlateRules};

/// A candidate as a policy sees it: its id and its feature vector in this context.
#[derive(Debug, Clone, Copy)]
pub struct Arm<'a> {
    /// The action id (per-arm state is keyed by it).
    pub id: &'a str,
    /// The featurizer's vector for this candidate in this context.
    pub x: &'a SparseVec,
}

/// One chosen slot: the index into the candidate slice and the probability the policy had of
/// choosing it at that moment (given the slots above it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// Index into the `arms` slice passed to `choose`.
    pub index: usize,
    /// Probability of this choice given the slots above, in `(0, 1]`.
    pub probability: f64,
}

/// What a policy knows about one candidate ([`Policy::explain`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ArmScore {
    /// Point estimate of the reward (posterior mean, `θᵀx`, running mean).
    pub mean: f64,
    /// Standard deviation of that estimate, where the policy keeps one.
    pub sd: Option<f64>,
    /// The deterministic score the policy ranks by (LinUCB's upper confidence bound,
    /// epsilon-greedy's estimate); None for policies that rank by a random draw.
    pub score: Option<f64>,
}

/// Merchandising factors must match the arms and be positive and finite.
fn check_boosts(arms: &[Arm<'_>], boosts: &[f64]) -> Result<(), PolicyError> {
    if boosts.len() != arms.len() {
        return Err(PolicyError::InvalidConfig {
            field: "boosts",
            message: format!("{} factors for {} arms", boosts.len(), arms.len()),
        });
    }
    if let Some(b) = boosts.iter().find(|b| !(b.is_finite() && **b > 0.0)) {
        return Err(PolicyError::InvalidConfig {
            field: "boosts",
            message: format!("every factor must be finite and above 0, got {b}"),
        });
    }
    Ok(())
}

/// How epsilon-greedy estimates each candidate's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    /// Running mean reward per action id (unseen ids estimate 0).
    #[default]
    Mean,
    /// A shared ridge regression over the featurizer's vectors (uses `lambda`).
    Ridge,
}

/// Declares [`PolicyConfig`] (internally tagged, for JSON) and a field-for-field externally
/// tagged twin used inside the runtime, because postcard cannot read internally tagged enums.
macro_rules! policy_configs {
    ($(
        $(#[$vmeta:meta])*
        $variant:ident { $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)? }
    ),* $(,)?) => {
        /// Validated-on-build policy configuration, tagged by `type` on the wire, e.g.
        /// `{"type":"thompson","prior_alpha":1,"prior_beta":1}` or
        /// `{"type":"linucb","alpha":1.0,"lambda":1.0,"half_life":5000}`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
        pub enum PolicyConfig {
            $( $(#[$vmeta])* $variant { $( $(#[$fmeta])* $field: $ty ),* } ),*
        }

        #[derive(Serialize, Deserialize)]
        enum ConfigRepr {
            $( $variant { $( $field: $ty ),* } ),*
        }

        impl From<PolicyConfig> for ConfigRepr {
            fn from(c: PolicyConfig) -> Self {
                match c { $( PolicyConfig::$variant { $($field),* } => ConfigRepr::$variant { $($field),* } ),* }
            }
        }

        impl From<ConfigRepr> for PolicyConfig {
            fn from(c: ConfigRepr) -> Self {
                match c { $( ConfigRepr::$variant { $($field),* } => PolicyConfig::$variant { $($field),* } ),* }
            }
        }
    };
}

policy_configs! {
    /// Beta-Bernoulli Thompson sampling per action id, for rewards in [0, 1] (clicks,
    /// conversions). Rewards outside [0, 1] are clamped into it.
    Thompson {
        /// Prior successes (> 0).
        #[serde(default = "one")]
        prior_alpha: f64,
        /// Prior failures (> 0).
        #[serde(default = "one")]
        prior_beta: f64,
        /// Forget old evidence with this half-life, in rewards.
        #[serde(default)]
        half_life: Option<f64>,
    },
    /// Gaussian Thompson sampling per action id (Normal-Inverse-Gamma prior), for real-valued
    /// rewards such as revenue.
    GaussianThompson {
        /// Prior mean reward.
        #[serde(default)]
        prior_mean: f64,
        /// Pseudo-observations behind the prior mean (κ₀ > 0).
        #[serde(default = "one")]
        prior_count: f64,
        /// Inverse-gamma shape of the noise variance (α₀ > 0).
        #[serde(default = "one")]
        prior_shape: f64,
        /// Inverse-gamma scale of the noise variance (β₀ > 0).
        #[serde(default = "one")]
        prior_scale: f64,
        /// Forget old evidence with this half-life, in rewards.
        #[serde(default)]
        half_life: Option<f64>,
    },
    /// LinUCB with one shared ridge model over the featurizer's vectors.
    #[serde(rename = "linucb")]
    LinUcb {
        /// Width of the confidence bonus (> 0).
        #[serde(default = "one")]
        alpha: f64,
        /// Ridge regularization (> 0).
        #[serde(default = "one")]
        lambda: f64,
        /// Forget old evidence with this half-life, in rewards.
        #[serde(default)]
        half_life: Option<f64>,
    },
    /// LinUCB with one ridge model per action id (memory: 3·dimension² floats per arm).
    #[serde(rename = "linucb_disjoint")]
    LinUcbDisjoint {
        /// Width of the confidence bonus (> 0).
        #[serde(default = "one")]
        alpha: f64,
        /// Ridge regularization (> 0).
        #[serde(default = "one")]
        lambda: f64,
        /// Forget old evidence with this half-life, in the arm's own rewards.
        #[serde(default)]
        half_life: Option<f64>,
    },
    /// Linear Thompson sampling with one shared ridge model.
    LinearThompson {
        /// Posterior scale `v`: draws are `θ̃ ~ N(θ, v²A⁻¹)` (> 0).
        #[serde(default = "one")]
        scale: f64,
        /// Ridge regularization (> 0).
        #[serde(default = "one")]
        lambda: f64,
        /// Forget old evidence with this half-life, in rewards.
        #[serde(default)]
        half_life: Option<f64>,
    },
    /// Epsilon-greedy: the best estimate, or a uniform candidate with probability `epsilon`.
    EpsilonGreedy {
        /// Share of uniform choices, in [0, 1].
        #[serde(default = "default_epsilon")]
        epsilon: f64,
        /// How values are estimated.
        #[serde(default)]
        estimator: Estimator,
        /// Ridge regularization for the `ridge` estimator (> 0).
        #[serde(default = "one")]
        lambda: f64,
        /// Forget old evidence with this half-life, in rewards.
        #[serde(default)]
        half_life: Option<f64>,
    },
    /// LinUCB with one shared diagonal-covariance model ([`crate::sparse_linear`]): every
    /// decision and update costs O(nonzeros), whatever the dimension (up to 2^18), and memory is
    /// 16 bytes per dimension. The default policy of a campaign created without one.
    #[serde(rename = "sparse_linucb")]
    SparseLinUcb {
        /// Width of the confidence bonus, in [0, 10] (0 serves greedily on `θᵀx`).
        #[serde(default = "default_sparse_alpha")]
        alpha: f64,
        /// Prior precision of every weight, in [1e-4, 1e4].
        #[serde(default = "one")]
        lambda: f64,
        /// Forget old evidence with this half-life, in rewards.
        #[serde(default)]
        half_life: Option<f64>,
    },
    /// Uniformly random order (a baseline; learns nothing).
    Uniform {},
    /// The candidates in the order they were sent (the retailer's own ranking; learns nothing).
    Fixed {},
}

fn one() -> f64 {
    1.0
}

fn default_epsilon() -> f64 {
    0.1
}

/// `sparse_linucb`'s default bonus width (docs/learning.md: chosen by the bake-off).
pub const DEFAULT_SPARSE_ALPHA: f64 = 0.1;

fn default_sparse_alpha() -> f64 {
    DEFAULT_SPARSE_ALPHA
}

/// Largest dimension of the policies that keep `dimension²` state (`linucb`,
/// `linucb_disjoint`, `linear_thompson`, `epsilon_greedy` with the ridge estimator).
pub const MAX_DENSE_DIMENSION: usize = 4096;

fn in_range(field: &'static str, v: f64, lo: f64, hi: f64) -> Result<f64, PolicyError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(PolicyError::InvalidConfig {
            field,
            message: format!("must be a number between {lo} and {hi}, got {v}"),
        })
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig::Thompson {
            prior_alpha: 1.0,
            prior_beta: 1.0,
            half_life: None,
        }
    }
}

fn positive(field: &'static str, v: f64) -> Result<f64, PolicyError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(PolicyError::InvalidConfig {
            field,
            message: format!("must be a finite number > 0, got {v}"),
        })
    }
}

/// Per-reward discount factor for an optional half-life.
fn decay_of(half_life: Option<f64>) -> Result<f64, PolicyError> {
    match half_life {
        None => Ok(1.0),
        Some(h) if h.is_finite() && h >= 1.0 => Ok(0.5f64.powf(1.0 / h)),
        Some(h) => Err(PolicyError::InvalidConfig {
            field: "half_life",
            message: format!("must be a finite number of rewards >= 1, got {h}"),
        }),
    }
}

impl PolicyConfig {
    /// Short name used in responses and logs (the `type` tag).
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyConfig::Thompson { .. } => "thompson",
            PolicyConfig::GaussianThompson { .. } => "gaussian_thompson",
            PolicyConfig::LinUcb { .. } => "linucb",
            PolicyConfig::LinUcbDisjoint { .. } => "linucb_disjoint",
            PolicyConfig::LinearThompson { .. } => "linear_thompson",
            PolicyConfig::SparseLinUcb { .. } => "sparse_linucb",
            PolicyConfig::EpsilonGreedy { .. } => "epsilon_greedy",
            PolicyConfig::Uniform {} => "uniform",
            PolicyConfig::Fixed {} => "fixed",
        }
    }

    /// Whether choosing or learning reads the featurizer's vectors. Policies that don't (per-id
    /// Thompson sampling, baselines) let the server skip featurizing every candidate.
    pub fn uses_features(&self) -> bool {
        match self {
            PolicyConfig::LinUcb { .. }
            | PolicyConfig::LinUcbDisjoint { .. }
            | PolicyConfig::LinearThompson { .. }
            | PolicyConfig::SparseLinUcb { .. } => true,
            PolicyConfig::EpsilonGreedy { estimator, .. } => *estimator == Estimator::Ridge,
            PolicyConfig::Thompson { .. }
            | PolicyConfig::GaussianThompson { .. }
            | PolicyConfig::Uniform {}
            | PolicyConfig::Fixed {} => false,
        }
    }

    /// Checks every field without building (no allocation of model state).
    pub fn validate(&self) -> Result<(), PolicyError> {
        match *self {
            PolicyConfig::Thompson {
                prior_alpha,
                prior_beta,
                half_life,
            } => {
                positive("prior_alpha", prior_alpha)?;
                positive("prior_beta", prior_beta)?;
                decay_of(half_life)?;
            }
            PolicyConfig::GaussianThompson {
                prior_mean,
                prior_count,
                prior_shape,
                prior_scale,
                half_life,
            } => {
                if !prior_mean.is_finite() {
                    return Err(PolicyError::InvalidConfig {
                        field: "prior_mean",
                        message: format!("must be finite, got {prior_mean}"),
                    });
                }
                positive("prior_count", prior_count)?;
                positive("prior_shape", prior_shape)?;
                positive("prior_scale", prior_scale)?;
                decay_of(half_life)?;
            }
            PolicyConfig::LinUcb {
                alpha,
                lambda,
                half_life,
            }
            | PolicyConfig::LinUcbDisjoint {
                alpha,
                lambda,
                half_life,
            } => {
                positive("alpha", alpha)?;
                positive("lambda", lambda)?;
                decay_of(half_life)?;
            }
            PolicyConfig::LinearThompson {
                scale,
                lambda,
                half_life,
            } => {
                positive("scale", scale)?;
                positive("lambda", lambda)?;
                decay_of(half_life)?;
            }
            PolicyConfig::EpsilonGreedy {
                epsilon,
                lambda,
                half_life,
                ..
            } => {
                if !(0.0..=1.0).contains(&epsilon) {
                    return Err(PolicyError::InvalidConfig {
                        field: "epsilon",
                        message: format!("must be between 0 and 1, got {epsilon}"),
                    });
                }
                positive("lambda", lambda)?;
                decay_of(half_life)?;
            }
            PolicyConfig::SparseLinUcb {
                alpha,
                lambda,
                half_life,
            } => {
                in_range("alpha", alpha, 0.0, 10.0)?;
                in_range("lambda", lambda, 1e-4, 1e4)?;
                decay_of(half_life)?;
            }
            PolicyConfig::Uniform {} | PolicyConfig::Fixed {} => {}
        }
        Ok(())
    }

    /// Whether the policy keeps `dimension²` state (and so takes at most
    /// [`MAX_DENSE_DIMENSION`]).
    pub fn dense(&self) -> bool {
        match self {
            PolicyConfig::LinUcb { .. }
            | PolicyConfig::LinUcbDisjoint { .. }
            | PolicyConfig::LinearThompson { .. } => true,
            PolicyConfig::EpsilonGreedy { estimator, .. } => *estimator == Estimator::Ridge,
            _ => false,
        }
    }

    /// Validate and build the runtime for vectors of `dimension`.
    pub fn build(&self, dimension: usize) -> Result<Policy, PolicyError> {
        self.validate()?;
        if dimension == 0 || dimension > crate::features::MAX_DIMENSION {
            return Err(PolicyError::InvalidConfig {
                field: "dimension",
                message: format!(
                    "must be between 1 and {}, got {dimension}",
                    crate::features::MAX_DIMENSION
                ),
            });
        }
        if self.dense() && dimension > MAX_DENSE_DIMENSION {
            return Err(PolicyError::InvalidConfig {
                field: "dimension",
                message: format!(
                    "{} keeps dimension² state: the featurizer's dimension must be at most {MAX_DENSE_DIMENSION}, got {dimension} (sparse_linucb takes up to {})",
                    self.kind(),
                    crate::features::MAX_DIMENSION
                ),
            });
        }
        let (state, decay) = match *self {
            PolicyConfig::Thompson {
                prior_alpha,
                prior_beta,
                half_life,
            } => (
                State::Beta(BetaArms {
                    prior: (prior_alpha, prior_beta),
                    arms: IdMap::default(),
                    prior_table: OnceLock::new(),
                    stale: Vec::new(),
                }),
                decay_of(half_life)?,
            ),
            PolicyConfig::GaussianThompson {
                prior_mean,
                prior_count,
                prior_shape,
                prior_scale,
                half_life,
            } => (
                State::Gaussian(NigArms {
                    prior: Nig {
                        mean: prior_mean,
                        count: prior_count,
                        shape: prior_shape,
                        scale: prior_scale,
                    },
                    arms: IdMap::default(),
                    prior_table: OnceLock::new(),
                    stale: Vec::new(),
                }),
                decay_of(half_life)?,
            ),
            PolicyConfig::LinUcb {
                alpha,
                lambda,
                half_life,
            } => (
                State::LinUcb {
                    alpha,
                    model: Ridge::new(dimension, lambda, false),
                },
                decay_of(half_life)?,
            ),
            PolicyConfig::LinUcbDisjoint {
                alpha,
                lambda,
                half_life,
            } => (
                State::LinUcbDisjoint {
                    alpha,
                    lambda,
                    arms: IdMap::default(),
                },
                decay_of(half_life)?,
            ),
            PolicyConfig::LinearThompson {
                scale,
                lambda,
                half_life,
            } => (
                State::LinTs {
                    scale,
                    model: Ridge::new(dimension, lambda, true),
                },
                decay_of(half_life)?,
            ),
            PolicyConfig::EpsilonGreedy {
                epsilon,
                estimator,
                lambda,
                half_life,
            } => (
                State::EpsilonGreedy {
                    epsilon,
                    estimates: match estimator {
                        Estimator::Mean => Estimates::Mean(IdMap::default()),
                        Estimator::Ridge => Estimates::Ridge(Ridge::new(dimension, lambda, false)),
                    },
                },
                decay_of(half_life)?,
            ),
            PolicyConfig::SparseLinUcb {
                alpha,
                lambda,
                half_life,
            } => (
                State::SparseLinUcb {
                    alpha,
                    model: DiagRidge::new(dimension, lambda),
                },
                decay_of(half_life)?,
            ),
            PolicyConfig::Uniform {} => (State::Uniform, 1.0),
            PolicyConfig::Fixed {} => (State::Fixed, 1.0),
        };
        Ok(Policy {
            config: self.clone(),
            dimension,
            rewards: 0,
            decay,
            state,
            time: None,
        })
    }
}

/// Keys per-arm state by action id with a fast fixed-seed hash (ids come from the retailer's own
/// catalog, so hash flooding is not a concern worth SipHash's cost on the decide path).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IdHash;

pub(crate) struct IdHasher(u64);

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0x7461_696c_6f72)
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type IdMap<V> = HashMap<String, V, IdHash>;

/// Queue arm `id` for [`Policy::warm`] unless it is queued already (`queued` is the arm's
/// flag), so the queue holds each arm at most once.
fn queue_stale(stale: &mut Vec<String>, queued: &mut bool, id: &str) {
    if !*queued {
        *queued = true;
        stale.push(id.to_owned());
    }
}

/// Beta-Bernoulli evidence of one arm above the prior.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BetaArm {
    successes: f64,
    failures: f64,
    /// Reward clock at the last update (for forgetting).
    clock: u64,
    /// The posterior CDF table, rebuilt after each update and after loading (not persisted).
    #[serde(skip)]
    table: OnceLock<Option<BetaTable>>,
    /// In its policy's queue for [`Policy::warm`].
    #[serde(skip)]
    queued: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BetaArms {
    prior: (f64, f64),
    arms: IdMap<BetaArm>,
    #[serde(skip)]
    prior_table: OnceLock<Option<BetaTable>>,
    /// Arms whose table an update dropped, to rebuild in [`Policy::warm`].
    #[serde(skip)]
    stale: Vec<String>,
}

/// Normal-Inverse-Gamma parameters (prior, or posterior when built from statistics).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
struct Nig {
    mean: f64,
    count: f64,
    shape: f64,
    scale: f64,
}

/// Weighted reward statistics of one arm. Encoded exactly as the tuple `(weight, mean, sum of
/// squared deviations, clock)` it replaced, so older snapshots decode unchanged.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Welford {
    weight: f64,
    mean: f64,
    m2: f64,
    /// Reward clock at the last update (for forgetting).
    clock: u64,
    /// The CDF table of the posterior's Student-t marginal, rebuilt after each update and after
    /// loading (not persisted).
    #[serde(skip)]
    table: OnceLock<Option<StudentTable>>,
    /// In its policy's queue for [`Policy::warm`].
    #[serde(skip)]
    queued: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NigArms {
    prior: Nig,
    arms: IdMap<Welford>,
    #[serde(skip)]
    prior_table: OnceLock<Option<StudentTable>>,
    /// Arms whose table an update dropped, to rebuild in [`Policy::warm`].
    #[serde(skip)]
    stale: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Estimates {
    /// `(weight, mean)` per arm; the weight decays with the arm's own rewards.
    Mean(IdMap<(f64, f64)>),
    Ridge(Ridge),
}

/// Runtime state; externally tagged and free of `deserialize_any` so it round-trips through
/// postcard.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum State {
    Beta(BetaArms),
    Gaussian(NigArms),
    LinUcb {
        alpha: f64,
        model: Ridge,
    },
    LinUcbDisjoint {
        alpha: f64,
        lambda: f64,
        arms: IdMap<Ridge>,
    },
    LinTs {
        scale: f64,
        model: Ridge,
    },
    EpsilonGreedy {
        epsilon: f64,
        estimates: Estimates,
    },
    Uniform,
    Fixed,
    // Appended last: postcard tags variants by position, so earlier snapshots still decode.
    SparseLinUcb {
        alpha: f64,
        model: DiagRidge,
    },
}

mod config_serde {
    use super::{ConfigRepr, PolicyConfig};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(c: &PolicyConfig, s: S) -> Result<S::Ok, S::Error> {
        ConfigRepr::from(c.clone()).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PolicyConfig, D::Error> {
        ConfigRepr::deserialize(d).map(PolicyConfig::from)
    }
}

/// A runtime policy. Choosing takes `&self`; learning takes `&mut self`.
///
/// Serializable with any serde format, including postcard (the server's persistence format).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    #[serde(with = "config_serde")]
    config: PolicyConfig,
    dimension: usize,
    /// Rewards learned so far: the clock that forgetting runs on.
    rewards: u64,
    /// Per-reward discount `γ` (1 = no forgetting).
    decay: f64,
    state: State,
    /// Forgetting in wall-clock time, set by the caller after building or loading
    /// ([`Policy::set_time_half_life`]); not part of the encoded state, whose layout older
    /// snapshots share. Its clock is kept by the caller ([`Policy::time_clock`]).
    #[serde(skip)]
    time: Option<TimeDecay>,
}

/// Wall-clock forgetting: evidence stamped at `then` weighs `2^(-(now - then)/half_life)`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TimeDecay {
    half_life_ms: f64,
    /// Time of the latest update (ms since the epoch; 0 before any).
    last_ms: u64,
}

/// The weight left, `now_ms` later, on evidence stamped at `then_ms` under a half-life of
/// `half_life_ms`: `2^(-(now - then)/half_life)`, 1 when `now <= then` (a clock that went back
/// never adds weight).
pub fn time_weight(half_life_ms: f64, then_ms: u64, now_ms: u64) -> f64 {
    let dt = now_ms.saturating_sub(then_ms) as f64;
    if dt == 0.0 {
        1.0
    } else {
        (-dt / half_life_ms * std::f64::consts::LN_2).exp()
    }
}

const _: () = {
    const fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
    assert_send_sync_clone::<Policy>();
    assert_send_sync_clone::<PolicyConfig>();
};

/// How one `choose` call scores candidates, shared by all its slots.
pub(crate) enum Scorer<'a> {
    /// Independent draws with known marginals (Thompson-style).
    Beta {
        draws: Vec<f64>,
        params: Vec<(f64, f64)>,
        tables: Vec<Option<&'a BetaTable>>,
    },
    Student {
        draws: Vec<f64>,
        params: Vec<(f64, f64, f64)>,
        /// Per-candidate CDF tables (empty for `linear_thompson`, whose marginals are normal).
        tables: Vec<Option<&'a StudentTable>>,
    },
    /// Deterministic scores; argmax with random tie-break, uniform with probability `epsilon`.
    Scores {
        scores: Vec<f64>,
        epsilon: f64,
    },
    Uniform,
    Fixed,
}

/// A draw over `remaining` with probability proportional to `weights` (all positive).
fn weighted_pick<R: Rng + ?Sized>(remaining: &[usize], weights: &[f64], rng: &mut R) -> usize {
    let total: f64 = remaining.iter().map(|&i| weights[i]).sum();
    let mut u = rng.gen::<f64>() * total;
    for &i in remaining {
        if u < weights[i] {
            return i;
        }
        u -= weights[i];
    }
    *remaining.last().expect("remaining is not empty")
}

/// `weights[i]` over the sum of `weights` on `remaining`.
fn weight_share(i: usize, remaining: &[usize], weights: &[f64]) -> f64 {
    weights[i] / remaining.iter().map(|&j| weights[j]).sum::<f64>()
}

/// The first of `remaining` with the largest weight (the fixed order, boosted items first).
fn first_heaviest(remaining: &[usize], weights: &[f64]) -> usize {
    let mut best = remaining[0];
    for &i in &remaining[1..] {
        if weights[i] > weights[best] {
            best = i;
        }
    }
    best
}

impl Scorer<'_> {
    /// The pick under merchandising factors `boosts` (one per arm, each > 0): draws and scores
    /// are lifted ([`lift`]), uniform draws weighted, the fixed order boosted first.
    fn pick_boosted<R: Rng + ?Sized>(
        &self,
        remaining: &[usize],
        boosts: &[f64],
        rng: &mut R,
    ) -> usize {
        match self {
            Scorer::Beta { draws, .. } | Scorer::Student { draws, .. } => {
                let lifted: Vec<f64> = remaining
                    .iter()
                    .map(|&i| lift(draws[i], boosts[i]))
                    .collect();
                let mut best = 0;
                for j in 1..remaining.len() {
                    if lifted[j] > lifted[best] {
                        best = j;
                    }
                }
                remaining[best]
            }
            Scorer::Scores { scores, epsilon } => {
                if *epsilon > 0.0 && rng.gen::<f64>() < *epsilon {
                    return weighted_pick(remaining, boosts, rng);
                }
                let lifted = |i: usize| lift(scores[i], boosts[i]);
                let best = remaining
                    .iter()
                    .map(|&i| lifted(i))
                    .fold(f64::NEG_INFINITY, f64::max);
                let ties = remaining.iter().filter(|&&i| lifted(i) == best).count();
                if ties == 0 {
                    return remaining[0];
                }
                let nth = if ties > 1 { rng.gen_range(0..ties) } else { 0 };
                *remaining
                    .iter()
                    .filter(|&&i| lifted(i) == best)
                    .nth(nth)
                    .expect("nth < ties")
            }
            Scorer::Uniform => weighted_pick(remaining, boosts, rng),
            Scorer::Fixed => first_heaviest(remaining, boosts),
        }
    }

    /// Probability that `pick_boosted` over `remaining` returns `i`.
    fn probability_boosted(&self, i: usize, remaining: &[usize], boosts: &[f64]) -> f64 {
        let n = remaining.len();
        if n == 1 {
            return 1.0;
        }
        match self {
            Scorer::Beta { params, tables, .. } => {
                type Key = ((u64, u64), u64);
                let key = |j: usize| -> Key {
                    (
                        (params[j].0.to_bits(), params[j].1.to_bits()),
                        boosts[j].to_bits(),
                    )
                };
                let items: Vec<(Key, Option<&BetaTable>)> = remaining
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| (key(j), tables[j]))
                    .collect();
                if items.iter().all(|&(k, _)| k == key(i)) {
                    return 1.0 / n as f64;
                }
                let others = group(items, |((a, b), m), table| {
                    let (a, b) = (f64::from_bits(a), f64::from_bits(b));
                    Lifted {
                        inner: match table {
                            Some(t) => BetaMarginal::tabulated(a, b, t),
                            None => BetaMarginal::new(a, b),
                        },
                        m: f64::from_bits(m),
                    }
                });
                let mine = params[i];
                let chosen = Lifted {
                    inner: BetaMarginal::chosen(mine.0, mine.1, tables[i]),
                    m: boosts[i],
                };
                max_probability(&chosen, &others)
            }
            Scorer::Student { params, tables, .. } => {
                type Key = (StudentKey, u64);
                let key = |j: usize| -> Key {
                    let p = params[j];
                    (
                        (p.0.to_bits(), p.1.to_bits(), p.2.to_bits()),
                        boosts[j].to_bits(),
                    )
                };
                let items: Vec<(Key, Option<&StudentTable>)> = remaining
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| (key(j), tables.get(j).copied().flatten()))
                    .collect();
                if items.iter().all(|&(k, _)| k == key(i)) {
                    return 1.0 / n as f64;
                }
                let others = group(items, |((l, s, v), m), table| {
                    let (l, s, v) = (f64::from_bits(l), f64::from_bits(s), f64::from_bits(v));
                    Lifted {
                        inner: match table {
                            Some(t) => StudentMarginal::tabulated(l, s, v, t),
                            None => StudentMarginal::new(l, s, v),
                        },
                        m: f64::from_bits(m),
                    }
                });
                let mine = params[i];
                let chosen = Lifted {
                    inner: StudentMarginal::chosen(
                        mine.0,
                        mine.1,
                        mine.2,
                        tables.get(i).copied().flatten(),
                    ),
                    m: boosts[i],
                };
                max_probability(&chosen, &others)
            }
            Scorer::Scores { scores, epsilon } => {
                let lifted = |j: usize| lift(scores[j], boosts[j]);
                let best = remaining
                    .iter()
                    .map(|&j| lifted(j))
                    .fold(f64::NEG_INFINITY, f64::max);
                let ties = remaining.iter().filter(|&&j| lifted(j) == best).count();
                let greedy = if lifted(i) == best {
                    1.0 / ties as f64
                } else {
                    0.0
                };
                (1.0 - epsilon) * greedy + epsilon * weight_share(i, remaining, boosts)
            }
            Scorer::Uniform => weight_share(i, remaining, boosts),
            Scorer::Fixed => {
                if first_heaviest(remaining, boosts) == i {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    pub(crate) fn pick<R: Rng + ?Sized>(&self, remaining: &[usize], rng: &mut R) -> usize {
        match self {
            Scorer::Beta { draws, .. } | Scorer::Student { draws, .. } => {
                argmax_first(remaining, draws)
            }
            Scorer::Scores { scores, epsilon } => {
                if *epsilon > 0.0 && rng.gen::<f64>() < *epsilon {
                    return remaining[rng.gen_range(0..remaining.len())];
                }
                let best = remaining
                    .iter()
                    .map(|&i| scores[i])
                    .fold(f64::NEG_INFINITY, f64::max);
                let ties = remaining.iter().filter(|&&i| scores[i] == best).count();
                if ties == 0 {
                    // Every score NaN: only a damaged state (a NaN parameter) gets here (issue
                    // 17, the `record` fuzz target); serve the first rather than panic.
                    return remaining[0];
                }
                let nth = if ties > 1 { rng.gen_range(0..ties) } else { 0 };
                *remaining
                    .iter()
                    .filter(|&&i| scores[i] == best)
                    .nth(nth)
                    .expect("nth < ties")
            }
            Scorer::Uniform => remaining[rng.gen_range(0..remaining.len())],
            Scorer::Fixed => remaining[0],
        }
    }

    /// Probability that `pick` over `remaining` returns `i`.
    pub(crate) fn probability(&self, i: usize, remaining: &[usize]) -> f64 {
        let n = remaining.len();
        if n == 1 {
            return 1.0;
        }
        match self {
            Scorer::Beta { params, tables, .. } => {
                let mine = params[i];
                let bits = |p: (f64, f64)| (p.0.to_bits(), p.1.to_bits());
                let items: Vec<((u64, u64), Option<&BetaTable>)> = remaining
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| (bits(params[j]), tables[j]))
                    .collect();
                if items.iter().all(|&(k, _)| k == bits(mine)) {
                    // Exchangeable: every candidate is equally likely to win.
                    return 1.0 / n as f64;
                }
                let others = group(items, |(a, b), table| {
                    let (a, b) = (f64::from_bits(a), f64::from_bits(b));
                    match table {
                        Some(t) => BetaMarginal::tabulated(a, b, t),
                        None => BetaMarginal::new(a, b),
                    }
                });
                max_probability(&BetaMarginal::chosen(mine.0, mine.1, tables[i]), &others)
            }
            Scorer::Student { params, tables, .. } => {
                let mine = params[i];
                let bits = |p: (f64, f64, f64)| (p.0.to_bits(), p.1.to_bits(), p.2.to_bits());
                let keys: Vec<(StudentKey, Option<&StudentTable>)> = remaining
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| (bits(params[j]), tables.get(j).copied().flatten()))
                    .collect();
                if keys.iter().all(|&(k, _)| k == bits(mine)) {
                    return 1.0 / n as f64;
                }
                let others = group(keys, |(l, s, v), table| {
                    let (l, s, v) = (f64::from_bits(l), f64::from_bits(s), f64::from_bits(v));
                    match table {
                        Some(t) => StudentMarginal::tabulated(l, s, v, t),
                        None => StudentMarginal::new(l, s, v),
                    }
                });
                let table = tables.get(i).copied().flatten();
                max_probability(
                    &StudentMarginal::chosen(mine.0, mine.1, mine.2, table),
                    &others,
                )
            }
            Scorer::Scores { scores, epsilon } => {
                let best = remaining
                    .iter()
                    .map(|&j| scores[j])
                    .fold(f64::NEG_INFINITY, f64::max);
                let ties = remaining.iter().filter(|&&j| scores[j] == best).count();
                let greedy = if scores[i] == best {
                    1.0 / ties as f64
                } else {
                    0.0
                };
                (1.0 - epsilon) * greedy + epsilon / n as f64
            }
            Scorer::Uniform => 1.0 / n as f64,
            Scorer::Fixed => {
                if remaining[0] == i {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

/// A Student-t marginal's `(location, scale, dof)` as bits, for grouping identical ones.
type StudentKey = (u64, u64, u64);

/// First index of the maximum (draws from continuous distributions tie with probability 0).
fn argmax_first(remaining: &[usize], values: &[f64]) -> usize {
    let mut best = remaining[0];
    for &i in &remaining[1..] {
        if values[i] > values[best] {
            best = i;
        }
    }
    best
}

impl Nig {
    /// The posterior after weighted statistics `(w, mean, m2)`.
    fn posterior(&self, w: f64, mean: f64, m2: f64) -> Nig {
        if w <= 0.0 {
            return *self;
        }
        let count = self.count + w;
        let d = mean - self.mean;
        Nig {
            mean: (self.count * self.mean + w * mean) / count,
            count,
            shape: self.shape + 0.5 * w,
            scale: self.scale + 0.5 * m2 + self.count * w * d * d / (2.0 * count),
        }
    }

    /// The Student-t marginal of the mean: `(location, scale, degrees of freedom)`.
    fn marginal(&self) -> (f64, f64, f64) {
        (
            self.mean,
            (self.scale / (self.shape * self.count)).sqrt(),
            2.0 * self.shape,
        )
    }
}

impl Policy {
    /// The configuration this policy was built from.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Checks that a decoded state fits its dimension: a snapshot entry or an imported model
    /// file could hold matrices of other sizes, which would index out of bounds when used.
    pub fn check_state(&self) -> Result<(), PolicyError> {
        let d = self.dimension;
        let counts = |v: f64| v.is_finite() && v >= 0.0;
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let fits = match &self.state {
            // Non-positive or non-finite Beta parameters would send the gamma sampler into
            // unbounded recursion (issue 17, the `record` fuzz target's second crash).
            State::Beta(b) => {
                positive(b.prior.0)
                    && positive(b.prior.1)
                    && b.arms
                        .values()
                        .all(|a| counts(a.successes) && counts(a.failures))
            }
            State::Gaussian(g) => {
                let p = g.prior;
                [p.mean, p.count, p.shape, p.scale]
                    .iter()
                    .all(|v| v.is_finite())
                    && g.arms
                        .values()
                        .all(|w| w.weight.is_finite() && w.mean.is_finite() && w.m2.is_finite())
            }
            State::LinUcb { model, .. } => model.fits(d, false),
            State::SparseLinUcb { model, alpha } => {
                model.fits(d) && alpha.is_finite() && *alpha >= 0.0
            }
            State::LinTs { model, .. } => model.fits(d, true),
            State::LinUcbDisjoint { arms, .. } => arms.values().all(|m| m.fits(d, false)),
            State::EpsilonGreedy {
                estimates: Estimates::Ridge(m),
                ..
            } => m.fits(d, false),
            // NaN scores left `pick` with no best candidate (the third crash).
            State::EpsilonGreedy {
                estimates: Estimates::Mean(m),
                ..
            } => m
                .values()
                .all(|(w, mean)| w.is_finite() && mean.is_finite()),
            _ => true,
        };
        if fits {
            Ok(())
        } else {
            Err(PolicyError::InvalidConfig {
                field: "state",
                message: format!("matrix sizes do not fit dimension {d}"),
            })
        }
    }

    /// The vector dimension this policy was built for.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Number of rewards learned from.
    pub fn rewards_seen(&self) -> u64 {
        self.rewards
    }

    /// The weight left at `now` on evidence stamped at `then`: `γ^(now - then)` on the reward
    /// clock, or the wall-clock half-life's weight ([`time_weight`]).
    fn age_weight(&self, then: u64, now: u64) -> f64 {
        match self.time {
            Some(t) => time_weight(t.half_life_ms, then, now),
            None if self.decay == 1.0 => 1.0,
            None => self.decay.powf(now.saturating_sub(then) as f64),
        }
    }

    /// The forgetting clock's reading: the reward count, or under a wall-clock half-life the
    /// time `at_ms` (never before the latest update; without one, the latest update's time).
    fn clock(&self, at_ms: Option<u64>) -> u64 {
        match self.time {
            Some(t) => at_ms.unwrap_or(t.last_ms).max(t.last_ms),
            None => self.rewards,
        }
    }

    /// Whether posteriors only change on update (so per-arm CDF tables can be cached).
    fn static_posteriors(&self) -> bool {
        self.decay == 1.0 && self.time.is_none()
    }

    fn beta_params(&self, b: &BetaArms, id: &str, now: u64) -> (f64, f64) {
        self.beta_arm(b, id, now).0
    }

    /// An arm's posterior and, without forgetting (where posteriors only change on update), its
    /// CDF table.
    fn beta_arm<'s>(
        &self,
        b: &'s BetaArms,
        id: &str,
        now: u64,
    ) -> ((f64, f64), Option<&'s BetaTable>) {
        let tables = self.static_posteriors();
        match b.arms.get(id) {
            None => {
                let t = tables.then(|| {
                    b.prior_table
                        .get_or_init(|| BetaTable::new(b.prior.0, b.prior.1))
                        .as_ref()
                });
                (b.prior, t.flatten())
            }
            Some(arm) => {
                let w = self.age_weight(arm.clock, now);
                let p = (b.prior.0 + w * arm.successes, b.prior.1 + w * arm.failures);
                let t = tables.then(|| arm.table.get_or_init(|| BetaTable::new(p.0, p.1)).as_ref());
                (p, t.flatten())
            }
        }
    }

    fn nig_posterior(&self, g: &NigArms, id: &str, now: u64) -> Nig {
        match g.arms.get(id) {
            None => g.prior,
            Some(e) => {
                let k = self.age_weight(e.clock, now);
                g.prior.posterior(e.weight * k, e.mean, e.m2 * k)
            }
        }
    }

    /// An arm's posterior and, without forgetting, the CDF table of its Student-t marginal.
    fn nig_arm<'s>(&self, g: &'s NigArms, id: &str, now: u64) -> (Nig, Option<&'s StudentTable>) {
        let tables = self.static_posteriors();
        let p = self.nig_posterior(g, id, now);
        let cell = match g.arms.get(id) {
            None => &g.prior_table,
            Some(e) => &e.table,
        };
        let t = tables.then(|| {
            cell.get_or_init(|| StudentTable::new(p.marginal().2))
                .as_ref()
        });
        (p, t.flatten())
    }

    /// Posterior `(alpha, beta)` of a Beta-Bernoulli arm (None for other policies).
    pub fn beta_posterior(&self, id: &str) -> Option<(f64, f64)> {
        match &self.state {
            State::Beta(b) => Some(self.beta_params(b, id, self.clock(None))),
            _ => None,
        }
    }

    /// Posterior `(mean, count κ, shape α, scale β)` of a Gaussian Thompson arm (None for other
    /// policies).
    pub fn normal_inverse_gamma_posterior(&self, id: &str) -> Option<(f64, f64, f64, f64)> {
        match &self.state {
            State::Gaussian(g) => {
                let p = self.nig_posterior(g, id, self.clock(None));
                Some((p.mean, p.count, p.shape, p.scale))
            }
            _ => None,
        }
    }

    /// The policy's point estimate of a candidate's reward (posterior mean, `θᵀx`, running
    /// mean); None for policies that do not learn. Useful for reports and greedy serving.
    pub fn estimate(&self, arm: Arm<'_>) -> Option<f64> {
        match &self.state {
            State::Beta(b) => {
                let (a, bb) = self.beta_params(b, arm.id, self.clock(None));
                Some(a / (a + bb))
            }
            State::Gaussian(g) => Some(self.nig_posterior(g, arm.id, self.clock(None)).mean),
            State::LinUcb { model, .. } | State::LinTs { model, .. } => Some(model.mean(arm.x)),
            State::SparseLinUcb { model, .. } => Some(model.mean(arm.x)),
            State::LinUcbDisjoint { arms, .. } => {
                Some(arms.get(arm.id).map_or(0.0, |m| m.mean(arm.x)))
            }
            State::EpsilonGreedy { estimates, .. } => Some(match estimates {
                Estimates::Mean(m) => m.get(arm.id).map_or(0.0, |e| e.1),
                Estimates::Ridge(r) => r.mean(arm.x),
            }),
            State::Uniform | State::Fixed => None,
        }
    }

    /// How one `choose` call scores `arms`, with posteriors aged to the forgetting clock's
    /// reading `now` ([`Policy::clock`]).
    pub(crate) fn scorer<R: Rng + ?Sized>(
        &self,
        arms: &[Arm<'_>],
        explore: bool,
        now: u64,
        rng: &mut R,
    ) -> Scorer<'_> {
        let mut scratch = Vec::new();
        let greedy = |scores: Vec<f64>| Scorer::Scores {
            scores,
            epsilon: 0.0,
        };
        match &self.state {
            State::Beta(b) => {
                if !explore {
                    return greedy(
                        arms.iter()
                            .map(|a| {
                                let (al, be) = self.beta_params(b, a.id, now);
                                al / (al + be)
                            })
                            .collect(),
                    );
                }
                let (params, tables): (Vec<(f64, f64)>, Vec<Option<&BetaTable>>) =
                    arms.iter().map(|a| self.beta_arm(b, a.id, now)).unzip();
                let draws = params
                    .iter()
                    .map(|&(a, b)| sample_beta(a, b, rng))
                    .collect();
                Scorer::Beta {
                    draws,
                    params,
                    tables,
                }
            }
            State::Gaussian(g) => {
                if !explore {
                    return greedy(
                        arms.iter()
                            .map(|a| self.nig_posterior(g, a.id, now).mean)
                            .collect(),
                    );
                }
                let (post, tables): (Vec<Nig>, Vec<Option<&StudentTable>>) =
                    arms.iter().map(|a| self.nig_arm(g, a.id, now)).unzip();
                let draws = post
                    .iter()
                    .map(|p| {
                        // σ² ~ InvGamma(α, β), μ ~ N(m, σ²/κ).
                        let precision = sample_gamma(p.shape, rng) / p.scale;
                        let z: f64 = rng.sample(StandardNormal);
                        p.mean + z / (p.count * precision).sqrt()
                    })
                    .collect();
                Scorer::Student {
                    draws,
                    params: post.iter().map(Nig::marginal).collect(),
                    tables,
                }
            }
            State::LinUcb { alpha, model } => greedy(
                arms.iter()
                    .map(|a| {
                        let m = model.mean(a.x);
                        if explore {
                            m + alpha * model.variance(a.x, &mut scratch).sqrt()
                        } else {
                            m
                        }
                    })
                    .collect(),
            ),
            State::SparseLinUcb { alpha, model } => greedy(
                arms.iter()
                    .map(|a| {
                        if explore {
                            let (m, q) = model.mean_variance(a.x);
                            m + alpha * q.sqrt()
                        } else {
                            model.mean(a.x)
                        }
                    })
                    .collect(),
            ),
            State::LinUcbDisjoint {
                alpha,
                lambda,
                arms: models,
            } => greedy(
                arms.iter()
                    .map(|a| match models.get(a.id) {
                        Some(m) => {
                            m.mean(a.x)
                                + if explore {
                                    alpha * m.variance(a.x, &mut scratch).sqrt()
                                } else {
                                    0.0
                                }
                        }
                        // An unseen arm: θ = 0 and A⁻¹ = I/λ.
                        None if explore => {
                            alpha * (a.x.val.iter().map(|v| v * v).sum::<f64>() / lambda).sqrt()
                        }
                        None => 0.0,
                    })
                    .collect(),
            ),
            State::LinTs { scale, model } => {
                if !explore {
                    return greedy(arms.iter().map(|a| model.mean(a.x)).collect());
                }
                let theta = model.sample_theta(*scale, rng);
                Scorer::Student {
                    tables: Vec::new(),
                    draws: arms.iter().map(|a| a.x.dot(&theta)).collect(),
                    params: arms
                        .iter()
                        .map(|a| {
                            (
                                model.mean(a.x),
                                scale * model.variance(a.x, &mut scratch).sqrt(),
                                f64::INFINITY,
                            )
                        })
                        .collect(),
                }
            }
            State::EpsilonGreedy { epsilon, estimates } => {
                let scores = arms
                    .iter()
                    .map(|a| match estimates {
                        Estimates::Mean(m) => m.get(a.id).map_or(0.0, |e| e.1),
                        Estimates::Ridge(r) => r.mean(a.x),
                    })
                    .collect();
                Scorer::Scores {
                    scores,
                    epsilon: if explore { *epsilon } else { 0.0 },
                }
            }
            State::Uniform if explore => Scorer::Uniform,
            // Greedy for a policy without estimates: the retailer's order.
            State::Uniform | State::Fixed => Scorer::Fixed,
        }
    }

    /// Fill `k` slots without replacement from `arms`. When `explore` is false the policy serves
    /// greedily and reports the matching propensity. Same as
    /// [`choose_with_exploration`](Self::choose_with_exploration) with `exploration = 0`.
    pub fn choose<R: Rng + ?Sized>(
        &self,
        arms: &[Arm<'_>],
        k: usize,
        explore: bool,
        rng: &mut R,
    ) -> Result<Vec<Choice>, PolicyError> {
        self.choose_with_exploration(arms, k, explore, 0.0, rng)
    }

    /// Fill `min(k, arms.len())` slots without replacement. With `explore`, each slot is uniform
    /// over the remaining candidates with probability `exploration` (0..=1), otherwise the
    /// policy's choice; the reported probability is the exact mixture
    /// `(1-exploration)·p_policy + exploration/remaining`. Without `explore`, `exploration` is
    /// ignored and the policy serves greedily.
    pub fn choose_with_exploration<R: Rng + ?Sized>(
        &self,
        arms: &[Arm<'_>],
        k: usize,
        explore: bool,
        exploration: f64,
        rng: &mut R,
    ) -> Result<Vec<Choice>, PolicyError> {
        self.choose_inner(arms, k, explore, exploration, None, rng)
    }

    /// [`choose_with_exploration`](Self::choose_with_exploration) under merchandising factors:
    /// `boosts[i] > 0` promotes (`> 1`) or demotes (`< 1`) arm `i`. Thompson draws and
    /// deterministic scores are lifted ([`lift`](crate::propensity::lift)), uniform choices
    /// (the policy's own and the exploration share) are weighted by the factors, and the fixed
    /// order serves the most boosted first. The reported probabilities are those of this
    /// boosted choice, computed the same way as without boosts (quadrature over the lifted
    /// posteriors for Thompson sampling).
    pub fn choose_boosted<R: Rng + ?Sized>(
        &self,
        arms: &[Arm<'_>],
        k: usize,
        explore: bool,
        exploration: f64,
        boosts: &[f64],
        rng: &mut R,
    ) -> Result<Vec<Choice>, PolicyError> {
        check_boosts(arms, boosts)?;
        self.choose_inner(arms, k, explore, exploration, Some(boosts), rng)
    }

    fn choose_inner<R: Rng + ?Sized>(
        &self,
        arms: &[Arm<'_>],
        k: usize,
        explore: bool,
        exploration: f64,
        boosts: Option<&[f64]>,
        rng: &mut R,
    ) -> Result<Vec<Choice>, PolicyError> {
        if arms.is_empty() {
            return Err(PolicyError::NoCandidates);
        }
        if !(0.0..=1.0).contains(&exploration) {
            return Err(PolicyError::InvalidConfig {
                field: "exploration",
                message: format!("must be between 0 and 1, got {exploration}"),
            });
        }
        let eps = if explore { exploration } else { 0.0 };
        let scorer = self.scorer(arms, explore, self.clock(None), rng);
        let k = k.min(arms.len());
        let mut remaining: Vec<usize> = (0..arms.len()).collect();
        let mut out = Vec::with_capacity(k);
        for _ in 0..k {
            let n = remaining.len() as f64;
            let p = match boosts {
                None => {
                    // Draw the mixing coin only when mixing, so ε = 0 keeps the policy's
                    // random stream.
                    let chosen = if eps > 0.0 && rng.gen::<f64>() < eps {
                        remaining[rng.gen_range(0..remaining.len())]
                    } else {
                        scorer.pick(&remaining, rng)
                    };
                    let p = (1.0 - eps) * scorer.probability(chosen, &remaining) + eps / n;
                    (chosen, p)
                }
                Some(b) => {
                    let chosen = if eps > 0.0 && rng.gen::<f64>() < eps {
                        weighted_pick(&remaining, b, rng)
                    } else {
                        scorer.pick_boosted(&remaining, b, rng)
                    };
                    let p = (1.0 - eps) * scorer.probability_boosted(chosen, &remaining, b)
                        + eps * weight_share(chosen, &remaining, b);
                    (chosen, p)
                }
            };
            let (chosen, p) = p;
            out.push(Choice {
                index: chosen,
                probability: p.clamp(MIN_PROPENSITY, 1.0),
            });
            remaining.retain(|&i| i != chosen);
        }
        Ok(out)
    }

    /// [`first_slot_distribution`](Self::first_slot_distribution) of
    /// [`choose_boosted`](Self::choose_boosted).
    pub fn first_slot_distribution_boosted(
        &self,
        arms: &[Arm<'_>],
        explore: bool,
        exploration: f64,
        boosts: &[f64],
    ) -> Result<Vec<f64>, PolicyError> {
        if arms.is_empty() {
            return Err(PolicyError::NoCandidates);
        }
        check_boosts(arms, boosts)?;
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        let scorer = self.scorer(arms, explore, self.clock(None), &mut rng);
        let eps = if explore { exploration } else { 0.0 };
        let remaining: Vec<usize> = (0..arms.len()).collect();
        Ok((0..arms.len())
            .map(|i| {
                (1.0 - eps) * scorer.probability_boosted(i, &remaining, boosts)
                    + eps * weight_share(i, &remaining, boosts)
            })
            .collect())
    }

    /// What the policy knows about one candidate, for explanations: its point estimate, the
    /// spread of that estimate where the policy keeps one, and the deterministic score it ranks
    /// by (LinUCB's upper bound, epsilon-greedy's estimate); Thompson-style policies rank by a
    /// draw and have no such score. None for `uniform` and `fixed`, which learn nothing.
    pub fn explain(&self, arm: Arm<'_>, explore: bool) -> Option<ArmScore> {
        let mut scratch = Vec::new();
        let (mean, sd, score) = match &self.state {
            State::Beta(b) => {
                let (a, bb) = self.beta_params(b, arm.id, self.clock(None));
                let s = a + bb;
                (a / s, Some((a * bb / (s * s * (s + 1.0))).sqrt()), None)
            }
            State::Gaussian(g) => {
                let (loc, scale, dof) = self.nig_posterior(g, arm.id, self.clock(None)).marginal();
                let sd = if dof > 2.0 {
                    scale * (dof / (dof - 2.0)).sqrt()
                } else {
                    f64::INFINITY
                };
                (loc, Some(sd), None)
            }
            State::LinUcb { alpha, model } => {
                let (m, sd) = (
                    model.mean(arm.x),
                    model.variance(arm.x, &mut scratch).sqrt(),
                );
                (m, Some(sd), Some(if explore { m + alpha * sd } else { m }))
            }
            State::SparseLinUcb { alpha, model } => {
                let (m, q) = model.mean_variance(arm.x);
                let sd = q.sqrt();
                (m, Some(sd), Some(if explore { m + alpha * sd } else { m }))
            }
            State::LinUcbDisjoint {
                alpha,
                lambda,
                arms,
            } => {
                let (m, sd) = match arms.get(arm.id) {
                    Some(r) => (r.mean(arm.x), r.variance(arm.x, &mut scratch).sqrt()),
                    None => (
                        0.0,
                        (arm.x.val.iter().map(|v| v * v).sum::<f64>() / lambda).sqrt(),
                    ),
                };
                (m, Some(sd), Some(if explore { m + alpha * sd } else { m }))
            }
            State::LinTs { scale, model } => (
                model.mean(arm.x),
                Some(scale * model.variance(arm.x, &mut scratch).sqrt()),
                None,
            ),
            State::EpsilonGreedy { .. } => {
                let m = self.estimate(arm)?;
                (m, None, Some(m))
            }
            State::Uniform | State::Fixed => return None,
        };
        Some(ArmScore { mean, sd, score })
    }

    /// The probability that the first slot of `choose_with_exploration(arms, _, explore,
    /// exploration, _)` is each candidate, without drawing (for Thompson-style policies the
    /// marginal over draws). Costs one propensity per candidate; meant for evaluation and tests.
    pub fn first_slot_distribution(
        &self,
        arms: &[Arm<'_>],
        explore: bool,
        exploration: f64,
    ) -> Result<Vec<f64>, PolicyError> {
        self.first_slot_distribution_at(arms, explore, exploration, None)
    }

    /// [`first_slot_distribution`](Self::first_slot_distribution) with posteriors aged to
    /// `at_ms` under a wall-clock half-life.
    pub(crate) fn first_slot_distribution_at(
        &self,
        arms: &[Arm<'_>],
        explore: bool,
        exploration: f64,
        at_ms: Option<u64>,
    ) -> Result<Vec<f64>, PolicyError> {
        if arms.is_empty() {
            return Err(PolicyError::NoCandidates);
        }
        // The scorer's draws are not used by `probability`; a fixed seed keeps this pure.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        let scorer = self.scorer(arms, explore, self.clock(at_ms), &mut rng);
        let eps = if explore { exploration } else { 0.0 };
        let remaining: Vec<usize> = (0..arms.len()).collect();
        let n = arms.len() as f64;
        Ok((0..arms.len())
            .map(|i| (1.0 - eps) * scorer.probability(i, &remaining) + eps / n)
            .collect())
    }

    /// Learn from one joined reward for `arm`, served with `propensity`.
    ///
    /// Every configured policy learns from every reward whichever policy served it, so the
    /// propensity is not used for weighting (it would make shadow policies learn differently
    /// from the serving one). Non-finite rewards are ignored; Beta-Bernoulli clamps rewards into
    /// [0, 1].
    pub fn update(&mut self, arm: Arm<'_>, reward: f64, propensity: f64) {
        self.learn(arm, reward, propensity, None);
    }

    /// [`update`](Self::update) for a reward that happened at `at_ms` (ms since the epoch):
    /// under a wall-clock half-life ([`set_time_half_life`](Self::set_time_half_life)) older
    /// evidence is first discounted by the time elapsed since it was learned; otherwise the time
    /// is ignored. Replaying the same rewards with the same times gives the same state.
    pub fn update_at(&mut self, arm: Arm<'_>, reward: f64, propensity: f64, at_ms: u64) {
        self.learn(arm, reward, propensity, Some(at_ms));
    }

    /// Rebuild the CDF tables that updates dropped (Thompson and Gaussian Thompson without
    /// forgetting), so the next decide finds them built. An update only queues its arm: a
    /// caller applying many rewards warms once after them, and each changed arm is tabulated
    /// once, not once per reward. Without a warm the next decide builds what it needs.
    pub fn warm(&mut self) {
        match &mut self.state {
            State::Beta(b) => {
                for id in b.stale.drain(..) {
                    if let Some(e) = b.arms.get_mut(&id) {
                        e.queued = false;
                        let (a, bb) = (b.prior.0 + e.successes, b.prior.1 + e.failures);
                        e.table.get_or_init(|| BetaTable::new(a, bb));
                    }
                }
            }
            State::Gaussian(g) => {
                for id in g.stale.drain(..) {
                    if let Some(e) = g.arms.get_mut(&id) {
                        e.queued = false;
                        // The table depends only on the degrees of freedom 2·(α₀ + w/2).
                        let dof = 2.0 * g.prior.shape + e.weight;
                        e.table.get_or_init(|| StudentTable::new(dof));
                    }
                }
            }
            _ => {}
        }
    }

    fn learn(&mut self, arm: Arm<'_>, reward: f64, propensity: f64, at_ms: Option<u64>) {
        let _ = propensity;
        if !reward.is_finite() {
            return;
        }
        let time = self.time;
        let now = self.clock(at_ms);
        // Per-arm evidence: the weight left on it now, and the stamp it gets. On the reward
        // clock every reward ages all evidence by one step (this one included: `· γ`, stamped
        // `now + 1`); in wall-clock time only the time elapsed counts.
        let gamma = self.decay;
        let age = |then: u64| match time {
            Some(t) => time_weight(t.half_life_ms, then, now),
            None if gamma == 1.0 => 1.0,
            None => gamma.powf(now.saturating_sub(then) as f64) * gamma,
        };
        let stamp = if time.is_some() { now } else { now + 1 };
        // Shared models: discounted once per update, by one step or by the time since the last.
        let shared = match time {
            Some(t) if t.last_ms > 0 => time_weight(t.half_life_ms, t.last_ms, now),
            Some(_) => 1.0,
            None => gamma,
        };
        match &mut self.state {
            State::Beta(b) => {
                let r = reward.clamp(0.0, 1.0);
                let e = b.arms.entry(arm.id.to_owned()).or_insert_with(|| BetaArm {
                    successes: 0.0,
                    failures: 0.0,
                    clock: now,
                    table: OnceLock::new(),
                    queued: false,
                });
                let w = age(e.clock);
                e.successes = e.successes * w + r;
                e.failures = e.failures * w + (1.0 - r);
                e.clock = stamp;
                e.table = OnceLock::new();
                if gamma == 1.0 && time.is_none() {
                    queue_stale(&mut b.stale, &mut e.queued, arm.id);
                }
            }
            State::Gaussian(g) => {
                let e = g.arms.entry(arm.id.to_owned()).or_insert_with(|| Welford {
                    weight: 0.0,
                    mean: 0.0,
                    m2: 0.0,
                    clock: now,
                    table: OnceLock::new(),
                    queued: false,
                });
                let k = age(e.clock);
                let (w, mean, m2) = (e.weight * k, e.mean, e.m2 * k);
                // Weighted Welford: stable for large revenues where Σr² - (Σr)²/n would cancel.
                let w1 = w + 1.0;
                let d = reward - mean;
                let mean1 = mean + d / w1;
                e.weight = w1;
                e.mean = mean1;
                e.m2 = m2 + d * (reward - mean1);
                e.clock = stamp;
                e.table = OnceLock::new();
                if gamma == 1.0 && time.is_none() {
                    queue_stale(&mut g.stale, &mut e.queued, arm.id);
                }
            }
            State::LinUcb { model, .. } | State::LinTs { model, .. } => {
                model.update(arm.x, reward, shared)
            }
            State::SparseLinUcb { model, .. } => model.update(arm.x, reward, shared),
            State::LinUcbDisjoint { lambda, arms, .. } => {
                let dim = self.dimension;
                let lambda = *lambda;
                let m = arms
                    .entry(arm.id.to_owned())
                    .or_insert_with(|| Ridge::new(dim, lambda, false));
                m.update(arm.x, reward, gamma);
            }
            State::EpsilonGreedy { estimates, .. } => match estimates {
                Estimates::Mean(m) => {
                    let e = m.entry(arm.id.to_owned()).or_insert((0.0, 0.0));
                    let w = e.0 * gamma + 1.0;
                    e.1 += (reward - e.1) / w;
                    e.0 = w;
                }
                Estimates::Ridge(r) => r.update(arm.x, reward, shared),
            },
            State::Uniform | State::Fixed => return,
        }
        self.rewards += 1;
        if let Some(t) = &mut self.time {
            t.last_ms = now;
        }
    }
}

/// A Beta(a, b) draw as `X/(X+Y)` of two gamma draws: cheaper than constructing a
/// `rand_distr::Beta` per arm per decision.
pub(crate) fn sample_beta<R: Rng + ?Sized>(a: f64, b: f64, rng: &mut R) -> f64 {
    let x = sample_gamma(a, rng);
    let y = sample_gamma(b, rng);
    let s = x + y;
    if s > 0.0 && s.is_finite() {
        x / s
    } else {
        // Both draws underflowed (shapes far below 1): the mean is the sensible stand-in.
        a / (a + b)
    }
}

/// A Gamma(shape, 1) draw (Marsaglia & Tsang 2000; `shape < 1` boosted by `U^(1/shape)`).
fn sample_gamma<R: Rng + ?Sized>(shape: f64, rng: &mut R) -> f64 {
    if !(shape > 0.0 && shape.is_finite()) {
        // Not a gamma shape (only a damaged state gets here; `Policy::check_state` refuses
        // those): never recurse or loop on it.
        return 0.0;
    }
    if shape < 1.0 {
        let u: f64 = 1.0 - rng.gen::<f64>();
        return sample_gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x: f64 = rng.sample(StandardNormal);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u: f64 = rng.gen();
        let x2 = x * x;
        if u < 1.0 - 0.0331 * x2 * x2 || u.ln() < 0.5 * x2 + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}
