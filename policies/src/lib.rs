//! Tailor's learning code: the [`Featurizer`] that turns namespaced features into sparse vectors,
//! the bandit [`Policy`] runtimes built from validated [`PolicyConfig`]s, and the [`Choice`]s
//! (with propensities) they make.
//!
//! * [`features`]: namespaced signed feature hashing ([`FeaturizerConfig`], [`SparseFeatures`],
//!   [`SparseVec`]).
//! * [`policy`]: configurations, runtimes, slates and exploration mixing.
//! * [`propensity`]: how sampling policies report honest propensities, and how accurate they are.
//! * [`linear`]: the ridge model behind LinUCB, linear Thompson sampling and epsilon-greedy.
//! * [`sparse_linear`]: the diagonal-covariance model behind `sparse_linucb`, for hashed spaces
//!   up to 2^18 dimensions at a cost that grows with the nonzeros, not the dimension.
//! * [`send_time`]: hierarchical Thompson sampling over send slots (send-time campaigns).
//! * [`ope`]: off-policy evaluation (IPS, SNIPS, doubly robust) of policies on logged decisions.
//! * [`reward_range`]: the interval a campaign's rewards (and estimates of them) live in.
//!
//! Architecture invariant: nothing here touches the network, the disk or the clock, and every
//! random draw comes from an RNG passed in by the caller, so decisions are reproducible from a seed.

mod error;
pub mod features;
pub mod linear;
pub mod ope;
pub mod policy;
pub mod propensity;
pub mod reward_range;
pub mod send_time;
pub mod sparse_linear;

pub use error::PolicyError;
pub use features::{
    ContextKeys, Featurizer, FeaturizerConfig, SparseFeatures, SparseVec, VectorScratch,
};
pub use policy::{Arm, ArmScore, Choice, Estimator, Policy, PolicyConfig};
pub use reward_range::RewardRange;
