//! The HTTP request and response types of Tailor, shared by the server and the SDK (which
//! re-exports them as `tailor_sdk::wire`). Field names here are the HTTP contract. Serde only;
//! the `openapi` feature adds `utoipa::ToSchema` for the server's OpenAPI document.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One candidate action offered to a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// The product or slot id, unique within the request.
    pub id: String,
    /// Features the policy learns from (a JSON object; nested objects are namespaces).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub features: Value,
    /// Attributes plugins read (inventory, markdown count, category, ...).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub attributes: Value,
}

impl Candidate {
    /// A candidate with only an id.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            features: Value::Null,
            attributes: Value::Null,
        }
    }
}

/// `POST /v1/campaigns/{campaign}/decide`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    /// Context features (a JSON object).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub context: Value,
    pub candidates: Vec<Candidate>,
    /// Client-chosen event id; a repeat returns the recorded decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Number of slots to fill (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// The shopper, for holdouts, plugins and per-shopper state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shopper_id: Option<String>,
    /// `false` serves greedily (still logged with the right propensity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explore: Option<bool>,
    /// `true` also answers every eligible candidate's probability of being served first
    /// ([`DecideResponse::distribution`]); costs one propensity per candidate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub distribution: bool,
}

/// One served action and the probability the policy had of choosing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChosenAction {
    pub id: String,
    pub probability: f64,
}

/// Answer to a decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecideResponse {
    pub event_id: String,
    pub actions: Vec<ChosenAction>,
    /// Name of the policy that served.
    pub policy: String,
    /// The shopper is in the campaign's holdout and got the control order.
    #[serde(default)]
    pub holdout: bool,
    /// True when an existing decision was returned for a repeated `event_id`.
    #[serde(default)]
    pub replayed: bool,
    /// With `distribution: true` in the request: each eligible candidate (in the order sent)
    /// with its probability of being served first. Absent for a replayed decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Vec<ChosenAction>>,
}

/// `POST /v1/events/{event_id}/reward` and `POST /v1/campaigns/{campaign}/events/{event_id}/reward`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RewardRequest {
    pub value: f64,
    /// For multi-slot decisions: the action the reward is for (default: the first slot's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    /// Idempotency key for `sum` aggregation; a repeat with the same key is a duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_id: Option<String>,
    /// The campaign of the decision (event ids are per campaign). Default: the key's campaign
    /// for a scoped key, else the one campaign holding the event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
}

/// What happened to a reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RewardStatus {
    /// Recorded durably (and learned from, or held until the window closes for `sum`).
    Accepted,
    /// The same reward was already recorded; nothing changed.
    Duplicate,
    /// A different reward arrived after the first under `earliest` aggregation; not applied.
    Ignored,
}

/// Answer to a reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RewardResponse {
    pub event_id: String,
    pub status: RewardStatus,
}

/// `POST /v1/events/{event_id}/adjust` and `POST /v1/campaigns/{campaign}/events/{event_id}/adjust`:
/// correct a reward already applied (a return turns a purchase's 1 into 0). Exactly one of
/// `value` (the slot's new reward) and `delta` (added to its current reward) is sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    /// The slot's reward from now on (inside the campaign's `reward_range`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Added to the slot's current reward (the result inside `reward_range`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// For multi-slot decisions: the action whose reward is corrected (default: the first
    /// slot's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    /// Idempotency key (1-256 characters): a repeat with the same key is a duplicate. Without
    /// one, a repeat of the same `value` (or the same `delta`) is taken as a duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjustment_id: Option<String>,
    /// The campaign of the decision, as for rewards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
}

/// What happened to an adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AdjustStatus {
    /// Logged durably, learned from and counted in the reports.
    Accepted,
    /// The same adjustment was already applied; nothing changed.
    Duplicate,
}

/// Answer to an adjustment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdjustResponse {
    pub event_id: String,
    pub status: AdjustStatus,
    /// The action whose reward was corrected.
    pub action_id: String,
    /// The slot's reward before this adjustment and after it (for a duplicate: the current
    /// reward, twice).
    pub previous: f64,
    pub value: f64,
}

/// Error body of every 4xx/5xx: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Machine-readable code, human message, and the offending field when there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Per-action statistics of a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionStats {
    pub id: String,
    pub exposures: u64,
    pub rewards: u64,
    pub reward_sum: f64,
    pub mean: f64,
}

/// `GET /admin/v1/campaigns/{id}/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CampaignStats {
    pub campaign: String,
    pub decisions: u64,
    pub rewards: u64,
    pub actions: Vec<ActionStats>,
}

/// One reward of a batch: `POST /v1/rewards`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchReward {
    pub event_id: String,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_id: Option<String>,
    /// The campaign of the decision (event ids are per campaign). Default: the key's campaign
    /// for a scoped key, else the one campaign holding the event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
}

impl BatchReward {
    /// A reward of `value` for the first slot of `event_id`, campaign left to the server.
    pub fn new(event_id: impl Into<String>, value: f64) -> Self {
        Self {
            event_id: event_id.into(),
            value,
            action_id: None,
            reward_id: None,
            campaign: None,
        }
    }

    /// Name the decision's campaign.
    pub fn in_campaign(mut self, campaign: impl Into<String>) -> Self {
        self.campaign = Some(campaign.into());
        self
    }
}

/// `POST /v1/rewards`: up to 1,000 rewards, acknowledged together once durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RewardBatchRequest {
    pub rewards: Vec<BatchReward>,
}

/// The outcome of one item of a batch: a status, or the error it would have got alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchRewardResult {
    pub event_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RewardStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// The HTTP status the item would have had on its own.
    pub http_status: u16,
}

/// Answer to a reward batch, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RewardBatchResponse {
    pub results: Vec<BatchRewardResult>,
}

/// `POST /v1/campaigns/{campaign}/decide` on a `send_time` campaign.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendTimeRequest {
    /// The shopper whose send is being scheduled (required).
    pub shopper_id: String,
    /// The shopper's IANA time zone, e.g. `Europe/Paris` (required).
    pub timezone: String,
    /// Context (a JSON object); its segment attribute (default `segment`) picks the prior, and
    /// plugins such as `quiet-hours` read it.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub context: Value,
    /// Do not send before this RFC 3339 instant (default: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest: Option<String>,
    /// Client-chosen event id; a repeat returns the recorded decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// `false` serves the slot with the best posterior mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explore: Option<bool>,
}

/// The chosen slot of a send-time decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendSlot {
    /// Slot id (`h09`, `tue-h18`, or a custom window's id).
    pub id: String,
    /// Position in the campaign's grid.
    pub index: u32,
    /// Local hour and minute of the send.
    pub local_hour: u8,
    pub local_minute: u8,
    /// Local weekday of the send (`mon` … `sun`).
    pub weekday: String,
    /// The send in the shopper's zone, RFC 3339 with offset.
    pub local_time: String,
}

/// Answer to a send-time decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendTimeResponse {
    pub event_id: String,
    pub slot: SendSlot,
    /// The slot's next occurrence at or after `earliest` plus the campaign's lead time, UTC.
    pub send_at: String,
    /// Probability the policy had of choosing this slot.
    pub probability: f64,
    pub policy: String,
    #[serde(default)]
    pub replayed: bool,
}
