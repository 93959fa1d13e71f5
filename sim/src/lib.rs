//! Tailor's simulators: synthetic worlds whose true reward probabilities are known, the oracles
//! that know them, and the scoring of policies played against them (docs/simulation.md).
//!
//! * [`retail`]: shoppers and a catalog; which product to show (`tailor simulate`).
//! * [`send_time`]: shoppers with engagement hours; when to send a daily message
//!   (`tailor simulate --scenario send-time`).
//! * [`variety`]: a variety-seeking shopper and a five-slot carousel; slates with and without a
//!   per-category limit (`tailor simulate --scenario variety`).
//!
//! Pure: no HTTP, no store, no terminal. The `tailor` binary (`cli/`) plays the retail world over
//! HTTP against a real server, draws progress bars and writes files; the benches decide for the
//! send-time scenario's learned shoppers. Two pieces come from the server library so that a
//! simulation runs the server's own code: the decide featurizer
//! (`tailor_server::engine::featurize`) and the send-time draw
//! (`tailor_server::engine::send_time::choose`).

pub mod retail;
pub mod send_time;
pub mod variety;

use tailor_policies::PolicyError;
use tailor_server::error::EngineError;

/// Why a simulation cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A setting of the run is out of range; `option` is its `tailor simulate` flag.
    #[error("{option} {message}")]
    Invalid {
        option: &'static str,
        message: String,
    },
    /// `--policies` names a policy the retail scenario does not know.
    #[error(
        "unknown policy {0:?}; known: thompson, thompson_forgetting, gaussian_thompson, linucb, \
         linucb_forgetting, linucb_disjoint, linear_thompson, epsilon_greedy, uniform, fixed"
    )]
    UnknownPolicy(String),
    /// A policy's configuration was refused, or it failed to choose.
    #[error("policy {name}: {source}")]
    Policy { name: String, source: PolicyError },
    /// The server's featurizer refused a simulated features object.
    #[error("featurizing {what}: {source}")]
    Featurize { what: String, source: EngineError },
}

impl SimError {
    fn invalid(option: &'static str, message: String) -> Self {
        SimError::Invalid { option, message }
    }
}
