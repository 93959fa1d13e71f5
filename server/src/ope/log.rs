//! The exported decision log: JSON lines, one decision per line after a header line.
//!
//! ```text
//! {"tailor_log":1,"campaign":{...campaign config...},"from_ms":null,"to_ms":null,"exported_ms":1700000000000}
//! {"event_id":"pv-1","at_ms":1700000000000,"context":{"device":"mobile"},"candidates":[{"id":"sku-1","features":{"price":59.0}},...],"actions":[{"id":"sku-1","probability":0.31,"reward":1.0}],"policy":"thompson","explore":true}
//! ```
//!
//! `candidates` are the ones the logging policy chose from (after constraint plugins), in the
//! order sent; `actions` are the served slots, top first, each with the propensity it was served
//! with (given the slots above) and the reward joined to it (`null` while its window is open).
//! The header is optional for external logs: without it, evaluation uses the default featurizer
//! and only the policies named on the command line. See docs/evaluation.md.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tailor_wire::{Candidate, DecideRequest};

use crate::campaign::CampaignConfig;
use crate::store::{DecisionRecord, RewardRecord};

/// Version of the format written in the header.
pub const LOG_FORMAT_VERSION: u32 = 1;

/// First line of an exported log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogHeader {
    pub tailor_log: u32,
    pub campaign: CampaignConfig,
    #[serde(default)]
    pub from_ms: Option<u64>,
    #[serde(default)]
    pub to_ms: Option<u64>,
    #[serde(default)]
    pub exported_ms: u64,
}

/// One served slot of a logged decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogAction {
    pub id: String,
    /// Probability the logging policy had of serving it given the slots above.
    #[serde(default)]
    pub probability: Option<f64>,
    /// The joined reward; `None` while the reward window is open.
    #[serde(default)]
    pub reward: Option<f64>,
}

/// One logged decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    pub event_id: String,
    #[serde(default)]
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub context: Value,
    pub candidates: Vec<Candidate>,
    pub actions: Vec<LogAction>,
    /// The policy that served (informational).
    #[serde(default)]
    pub policy: String,
    /// Whether the request allowed exploration; targets are evaluated the same way.
    #[serde(default = "yes")]
    pub explore: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub holdout: bool,
}

fn yes() -> bool {
    true
}

/// Rewards of a campaign by event id and slot.
pub type RewardIndex = HashMap<String, Vec<Option<f64>>>;

/// Index the applied rewards of `campaign` among `rewards`.
pub fn index_rewards<'a>(
    campaign: &str,
    rewards: impl Iterator<Item = &'a RewardRecord>,
) -> RewardIndex {
    let mut out: RewardIndex = HashMap::new();
    for r in rewards.filter(|r| r.campaign == campaign) {
        let slots = out.entry(r.event_id.clone()).or_default();
        let i = r.slot as usize;
        if slots.len() <= i {
            slots.resize(i + 1, None);
        }
        // Each slot is applied once; keep the first if a log ever held two.
        slots[i].get_or_insert(r.value);
    }
    out
}

/// The log line of a decision, or `None` when its request body was not kept or is not a decide
/// request (then the candidates are unknown).
pub fn line_of(d: &DecisionRecord, rewards: &RewardIndex) -> Option<LogLine> {
    if d.request.is_empty() {
        return None;
    }
    let req: DecideRequest = serde_json::from_slice(&d.request).ok()?;
    let removed: HashSet<&str> = d.removed.iter().map(|(_, id, _)| id.as_str()).collect();
    let slot_rewards = rewards.get(&d.event_id);
    Some(LogLine {
        event_id: d.event_id.clone(),
        at_ms: d.at_ms,
        context: req.context,
        candidates: req
            .candidates
            .into_iter()
            .filter(|c| !removed.contains(c.id.as_str()))
            .collect(),
        actions: d
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| LogAction {
                id: a.id.clone(),
                probability: Some(a.probability),
                reward: slot_rewards.and_then(|s| s.get(i).copied().flatten()),
            })
            .collect(),
        policy: d.policy.clone(),
        explore: d.explore,
        holdout: d.holdout,
    })
}
