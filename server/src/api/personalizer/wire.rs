//! Personalizer's request and response bodies (camelCase on the wire). Unknown fields are
//! accepted and ignored, as the original service did.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An action offered to rank: an id and a list of feature objects.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RankableAction {
    pub id: String,
    #[serde(default)]
    pub features: Option<Vec<Value>>,
}

/// `POST rank`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RankRequest {
    #[serde(default)]
    pub context_features: Option<Vec<Value>>,
    pub actions: Vec<RankableAction>,
    #[serde(default)]
    pub excluded_actions: Option<Vec<String>>,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub defer_activation: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct RankedAction {
    pub id: String,
    pub probability: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RankResponse {
    pub event_id: String,
    pub ranking: Vec<RankedAction>,
    pub reward_action_id: String,
}

/// One slot of a multi-slot rank.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotRequest {
    pub id: String,
    pub baseline_action: String,
    #[serde(default)]
    pub excluded_actions: Option<Vec<String>>,
    #[serde(default)]
    pub features: Option<Vec<Value>>,
}

/// `POST multislot/rank`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultiSlotRankRequest {
    #[serde(default)]
    pub context_features: Option<Vec<Value>>,
    pub actions: Vec<RankableAction>,
    pub slots: Vec<SlotRequest>,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub defer_activation: Option<bool>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotResponse {
    pub id: String,
    pub reward_action_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MultiSlotRankResponse {
    pub event_id: String,
    pub slots: Vec<SlotResponse>,
}

/// `POST events/{eventId}/reward`.
#[derive(Debug, Deserialize)]
pub struct RewardRequest {
    pub value: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotReward {
    pub slot_id: String,
    pub value: f64,
}

/// `POST multislot/events/{eventId}/reward`.
#[derive(Debug, Deserialize)]
pub struct MultiSlotRewardRequest {
    pub reward: Vec<SlotReward>,
}

/// `PUT configurations/policy` and its answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicySettings {
    pub name: String,
    pub arguments: String,
}
