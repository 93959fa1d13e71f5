//! Stored record types and their versioned binary encoding.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tailor_policies::SparseVec;

use super::StoreError;

/// Version byte written before every binary record.
pub(crate) const RECORD_VERSION: u8 = 1;

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // Encoding plain structs into a Vec cannot fail.
    out.extend(postcard::to_stdvec(value).expect("postcard encoding of a record"));
    out
}

pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt {
                what,
                message: e.to_string(),
            })
        }
        Some((v, _)) => Err(StoreError::Corrupt {
            what,
            message: format!("unknown record version {v}"),
        }),
        None => Err(StoreError::Corrupt {
            what,
            message: "empty record".into(),
        }),
    }
}

/// One served slot as logged: what the learners need to join a reward to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedAction {
    pub id: String,
    pub probability: f64,
    /// The featurized vector of this action in the decision's context.
    pub x: SparseVec,
}

/// A decision as written to the decision log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub seq: u64,
    pub event_id: String,
    pub campaign: String,
    pub at_ms: u64,
    /// End of the reward window.
    pub deadline_ms: u64,
    pub policy: String,
    pub seed: u64,
    pub holdout: bool,
    pub explore: bool,
    pub actions: Vec<LoggedAction>,
    /// Number of candidates offered after constraints.
    pub candidates: u32,
    /// The raw request body (context and candidates), when the campaign logs it.
    pub request: Vec<u8>,
    /// Candidates removed by plugins: (plugin, candidate id, reason code).
    pub removed: Vec<(String, String, u32)>,
}

/// Join state of one slot of an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlotState {
    /// Sum of rewards received so far.
    pub value: f64,
    /// Idempotency keys of the rewards received (hashes).
    pub reward_ids: Vec<u64>,
    /// The slot's reward has been handed to the learners.
    pub applied: bool,
}

/// Join state of a decision, keyed by event id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub event_id: String,
    pub campaign: String,
    pub decision_seq: u64,
    pub at_ms: u64,
    pub deadline_ms: u64,
    pub policy: String,
    pub holdout: bool,
    pub actions: Vec<LoggedAction>,
    pub slots: Vec<SlotState>,
    /// The reward window has been closed (all slots applied).
    pub closed: bool,
    /// Order-independent hash of the request's candidate ids, so a replayed event id with other
    /// candidates is told apart; 0 when unknown (send-time decisions, events from before schema
    /// 2, events rebuilt from the decision log).
    pub candidate_set: u64,
}

/// [`EventRecord`] as schema 1 stored it (read only by the migration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct EventRecordV1 {
    pub event_id: String,
    pub campaign: String,
    pub decision_seq: u64,
    pub at_ms: u64,
    pub deadline_ms: u64,
    pub policy: String,
    pub holdout: bool,
    pub actions: Vec<LoggedAction>,
    pub slots: Vec<SlotState>,
    pub closed: bool,
}

impl From<EventRecordV1> for EventRecord {
    fn from(v: EventRecordV1) -> Self {
        Self {
            event_id: v.event_id,
            campaign: v.campaign,
            decision_seq: v.decision_seq,
            at_ms: v.at_ms,
            deadline_ms: v.deadline_ms,
            policy: v.policy,
            holdout: v.holdout,
            actions: v.actions,
            slots: v.slots,
            closed: v.closed,
            candidate_set: 0,
        }
    }
}

/// Why a reward reached the learners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RewardKind {
    /// The first reward under `earliest` aggregation.
    Explicit,
    /// The window closed with no reward.
    Default,
    /// The window closed and the received rewards were summed.
    Sum,
}

/// One applied reward in the reward log: everything needed to replay learning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardRecord {
    pub seq: u64,
    pub event_id: String,
    pub campaign: String,
    pub at_ms: u64,
    pub kind: RewardKind,
    pub slot: u32,
    pub action: LoggedAction,
    pub value: f64,
    pub holdout: bool,
    pub policy: String,
}

/// Per-action counters kept with a campaign.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub exposures: u64,
    pub rewards: u64,
    pub reward_sum: f64,
}

/// Learned state of a campaign at a point of the logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignSnapshot {
    /// Every reward with seq <= this (for this campaign) is included.
    pub reward_seq: u64,
    /// Every decision with seq <= this (for this campaign) is counted.
    pub decision_seq: u64,
    /// (policy name, postcard-encoded runtime policy).
    pub policies: Vec<(String, Vec<u8>)>,
    pub counters: Vec<(String, Counters)>,
    pub decisions: u64,
    pub rewards: u64,
}

/// A send-time shopper's state in one campaign (tree `shoppers`, key shopper id ++ 0 ++
/// campaign): learned counts, the frequency-cap clock, and the random token that the campaign's
/// send events carry instead of the shopper id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShopperRecord {
    /// Random, unlinkable to the shopper once the record is deleted.
    pub token: u64,
    /// `send_at` of the latest decision (frequency cap), ms since the epoch.
    pub last_send_ms: u64,
    /// Latest decision or reward, for retention.
    pub last_seen_ms: u64,
    /// Highest reward sequence number learned (replay skips rewards at or below it).
    pub last_reward_seq: u64,
    pub counts: tailor_policies::send_time::ShopperCounts,
}

/// What a send-time decision needs to learn from its rewards (tree `send_events`, key event id).
/// Holds the shopper's token, never their id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendEventRecord {
    pub token: u64,
    pub segment: Option<String>,
    pub slot: u16,
    pub send_at_ms: u64,
    pub timezone: String,
}
