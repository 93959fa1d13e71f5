//! The engine's one error type: what a request to the engine can fail with, with no transport
//! concerns (body, credentials, load; those are `api::error::TransportError`). HTTP status codes
//! are assigned in `api::status`, nowhere else (docs/errors.md).

use tailor_policies::PolicyError;

use crate::store::StoreError;

/// Everything a request to the engine can fail with. Variants name the field or id at fault.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A field parsed but its value is not acceptable.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("campaign {id:?} does not exist")]
    CampaignNotFound { id: String },
    #[error("campaign {id:?} already exists")]
    CampaignExists { id: String },
    /// Cluster mode: the campaign's config changed since the revision this write was based on
    /// (another replica saved first); read it again and retry.
    #[error("campaign {id:?} was changed by another writer since revision {revision}; read it again and retry")]
    ConfigConflict { id: String, revision: u64 },
    /// `If-Match` named a version of the campaign's config that is no longer current (someone
    /// saved since it was read); read it again and retry.
    #[error("campaign {id:?} was changed since the version named in If-Match (its ETag is now {current}); read it again and retry")]
    PreconditionFailed { id: String, current: String },
    #[error("event {id:?} is unknown")]
    EventNotFound { id: String },
    /// A replayed event id whose candidate set differs from the recorded decision's.
    #[error("event_id {id:?} already names a decision of this campaign over other candidates; a retry must send the same candidates, a new decision needs a new event_id")]
    EventIdConflict { id: String },
    /// An event id held by several campaigns, rewarded without naming one. `campaigns` lists
    /// only campaigns the caller's key can see.
    #[error("event {id:?} exists in several campaigns ({}); name the campaign: POST /v1/campaigns/{{campaign}}/events/{{event_id}}/reward, or `campaign` in the body", campaigns.join(", "))]
    AmbiguousEvent { id: String, campaigns: Vec<String> },
    #[error("the reward window of event {id:?} has closed")]
    RewardWindowClosed { id: String },
    /// An adjustment (return) to a slot with no applied reward yet (none received, a `sum`
    /// window still open, or a deferred decision never activated).
    #[error("event {id:?} has no applied reward to adjust{detail}")]
    NoReward { id: String, detail: String },
    /// An adjustment after the campaign's `return_window_seconds` (counted from the decision).
    #[error("the return window of event {id:?} has closed")]
    ReturnWindowClosed { id: String },
    /// A plugin refused to let the decision proceed (campaign configured to refuse on failure).
    #[error("{message}")]
    Unavailable { message: String },
    #[error("key {id:?} does not exist")]
    KeyNotFound { id: String },
    #[error("nothing is stored about shopper {id:?}")]
    ShopperNotFound { id: String },
    /// A send-time decision inside the shopper's frequency cap.
    #[error("the shopper already has a send within the campaign's frequency cap; the next send may go out at {next_allowed} (pass it as `earliest`)")]
    FrequencyCapped { next_allowed: String },
    #[error("evaluation {id:?} does not exist")]
    EvaluationNotFound { id: String },
    /// The request cannot be carried out in the resource's current state (e.g. applying an
    /// optimization whose campaign changed since it started).
    #[error("{field}: {message}")]
    Conflict { field: String, message: String },
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl EngineError {
    pub fn invalid(field: &str, message: &str) -> Self {
        Self::Invalid {
            field: field.to_string(),
            message: message.to_string(),
        }
    }

    pub fn invalid_owned(field: &str, message: String) -> Self {
        Self::Invalid {
            field: field.to_string(),
            message,
        }
    }

    /// A policy or featurizer config error, under `prefix` (e.g. `policy.alpha`).
    pub fn policy(prefix: &str, e: PolicyError) -> Self {
        match e {
            PolicyError::InvalidConfig { field, message } => Self::Invalid {
                field: format!("{prefix}.{field}"),
                message,
            },
            other => Self::Invalid {
                field: prefix.to_string(),
                message: other.to_string(),
            },
        }
    }

    /// The offending field, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            Self::Conflict { field, .. } => Some(field),
            Self::PreconditionFailed { .. } => Some("If-Match"),
            Self::EventIdConflict { .. } => Some("event_id"),
            Self::AmbiguousEvent { .. } => Some("campaign"),
            Self::FrequencyCapped { .. } => Some("earliest"),
            _ => None,
        }
    }
}
