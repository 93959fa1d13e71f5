//! The engine's one error type. HTTP status codes are assigned in `api::error`, nowhere else.

use tailor_policies::PolicyError;

use crate::store::StoreError;

/// Everything a request to the engine can fail with. Variants name the field or id at fault.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request body is not JSON of the expected shape.
    #[error("{field}: {message}")]
    Malformed { field: String, message: String },
    /// A field parsed but its value is not acceptable.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("campaign {id:?} does not exist")]
    CampaignNotFound { id: String },
    #[error("campaign {id:?} already exists")]
    CampaignExists { id: String },
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
    /// A plugin refused to let the decision proceed (campaign configured to refuse on failure).
    #[error("{message}")]
    Unavailable { message: String },
    /// No credentials, or credentials that match no live key.
    #[error("{message}")]
    Unauthorized { message: String },
    /// A valid key whose role or campaign scope does not allow the request.
    #[error("{message}")]
    Forbidden { message: String },
    #[error("key {id:?} does not exist")]
    KeyNotFound { id: String },
    #[error("nothing is stored about shopper {id:?}")]
    ShopperNotFound { id: String },
    /// A send-time decision inside the shopper's frequency cap.
    #[error("the shopper already has a send within the campaign's frequency cap; the next send may go out at {next_allowed} (pass it as `earliest`)")]
    FrequencyCapped { next_allowed: String },
    /// The request body did not arrive in full within `transport.body_timeout_ms`.
    #[error("the request body did not arrive in full within {timeout_ms} ms")]
    BodyTimeout { timeout_ms: u64 },
    /// More requests are being processed than `transport.max_in_flight`; retry later.
    #[error(
        "the server is overloaded ({in_flight} requests in flight); retry after {retry_after_s} s"
    )]
    Overloaded {
        in_flight: usize,
        retry_after_s: u64,
    },
    /// The key's or the campaign's request rate is spent (`rate_limits.*`).
    #[error("rate limit of {scope} exceeded; retry after {} ms", retry_after.as_millis())]
    RateLimited {
        /// `key "ID"` or `campaign "ID"`.
        scope: String,
        retry_after: std::time::Duration,
    },
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

    /// Seconds a client should wait before retrying (the `Retry-After` header), for the errors
    /// that are about load rather than the request.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::Overloaded { retry_after_s, .. } => Some(*retry_after_s),
            // Round up: a client retrying after a rounded-down wait would be refused again.
            Self::RateLimited { retry_after, .. } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
            }
            _ => None,
        }
    }

    /// The offending field, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Malformed { field, .. } | Self::Invalid { field, .. } => Some(field),
            Self::PayloadTooLarge { .. } | Self::BodyTimeout { .. } => Some("body"),
            Self::EventIdConflict { .. } => Some("event_id"),
            Self::AmbiguousEvent { .. } => Some("campaign"),
            Self::FrequencyCapped { .. } => Some("earliest"),
            _ => None,
        }
    }
}
