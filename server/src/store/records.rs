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

/// A decision as written to its campaign's log (`L` ++ campaign ++ 0 ++ seq in tree `log`).
/// `seq` and `campaign` are the entry's key, not stored in the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    #[serde(skip)]
    pub seq: u64,
    pub event_id: String,
    #[serde(skip)]
    pub campaign: String,
    pub at_ms: u64,
    /// End of the reward window.
    pub deadline_ms: u64,
    pub policy: String,
    pub seed: u64,
    pub holdout: bool,
    pub explore: bool,
    /// The served slots, top first, each with its feature vector after extractor plugins ran
    /// (the only place a decision's vectors are stored).
    pub actions: Vec<LoggedAction>,
    /// Number of candidates offered after constraints.
    pub candidates: u32,
    /// The raw request body (context and candidates), only when the campaign logs requests
    /// (`log_requests`) and the body is at most [`MAX_LOGGED_REQUEST`] bytes.
    pub request: Vec<u8>,
    /// Candidates removed by plugins: (plugin, candidate id, reason code).
    pub removed: Vec<(String, String, u32)>,
    /// Order-independent hash of the request's candidate ids (0: unknown).
    pub candidate_set: u64,
    /// Slots served by a merchandiser's pin (probability 1, not the policy's choice; issue 22).
    /// Keep it the last field: entries written before it existed decode with none.
    #[serde(default)]
    pub pinned: PinnedSlots,
    /// The value of the campaign's `audience_field` in the request's context, when it names
    /// one (reports by audience). After `pinned`, and decoded as leniently: entries written
    /// before it existed end before it.
    #[serde(default)]
    pub audience: Audience,
}

/// A decision's audience value (see [`DecisionRecord::audience`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Audience(pub Option<String>);

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Audience(
            Option::<String>::deserialize(d).unwrap_or_default(),
        ))
    }
}

/// The 0-based slots of a decision that a pin filled. Off-policy evaluation leaves them out of
/// its importance weights (docs/merchandising.md).
///
/// Decoding is lenient because this is the last field of [`DecisionRecord`]: postcard has no
/// field names, so a record written before the field existed simply ends here, and reads as no
/// pinned slot.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PinnedSlots(pub Vec<u32>);

impl PinnedSlots {
    /// Whether slot `slot` was pinned.
    pub fn contains(&self, slot: usize) -> bool {
        self.0.iter().any(|&s| s as usize == slot)
    }
}

impl<'de> Deserialize<'de> for PinnedSlots {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(PinnedSlots(Vec::<u32>::deserialize(d).unwrap_or_default()))
    }
}

/// Largest request body kept in a decision's log entry; a larger one is logged without it.
pub const MAX_LOGGED_REQUEST: usize = 256 * 1024;

/// A served action in a decision's join state: its id and propensity (the vector stays in the
/// log entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServedAction {
    pub id: String,
    pub probability: f64,
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

/// Join state of a decision (`E` ++ campaign ++ 0 ++ event id in tree `log`), derived from its
/// log entry: written in the decision's batch, pruned to a marker (no actions, no slots) when the
/// window closes at its deadline. `event_id` and `campaign` are the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    #[serde(skip)]
    pub event_id: String,
    #[serde(skip)]
    pub campaign: String,
    pub decision_seq: u64,
    pub at_ms: u64,
    pub deadline_ms: u64,
    pub policy: String,
    pub holdout: bool,
    /// Empty once pruned.
    pub actions: Vec<ServedAction>,
    /// Empty once pruned.
    pub slots: Vec<SlotState>,
    /// The reward window has been closed (all slots applied).
    pub closed: bool,
    /// Order-independent hash of the request's candidate ids, so a replayed event id with other
    /// candidates is told apart; 0 when unknown (send-time decisions, events from before schema
    /// 2).
    pub candidate_set: u64,
    /// Not learned from until activated (Personalizer's `deferActivation`).
    pub deferred: bool,
    /// The served actions' vectors, kept here only when the log was deleted while the window
    /// was open (`DELETE .../logs`): rewards still to come need them. Empty otherwise.
    pub vectors: Vec<SparseVec>,
}

impl EventRecord {
    /// The join state a decision starts with (not deferred): everything in it comes from the
    /// decision's log entry.
    pub fn of_decision(d: &DecisionRecord) -> Self {
        Self {
            event_id: d.event_id.clone(),
            campaign: d.campaign.clone(),
            decision_seq: d.seq,
            at_ms: d.at_ms,
            deadline_ms: d.deadline_ms,
            policy: d.policy.clone(),
            holdout: d.holdout,
            slots: vec![SlotState::default(); d.actions.len()],
            actions: d
                .actions
                .iter()
                .map(|a| ServedAction {
                    id: a.id.clone(),
                    probability: a.probability,
                })
                .collect(),
            closed: false,
            candidate_set: d.candidate_set,
            deferred: false,
            vectors: Vec::new(),
        }
    }

    /// Pruned at its deadline: only the marker that answers late rewards and replays is left.
    pub fn is_pruned(&self) -> bool {
        self.closed && self.slots.is_empty()
    }

    /// The served action of `slot` with its vector, when this join state holds the vectors.
    pub fn kept_action(&self, slot: usize) -> Option<LoggedAction> {
        let a = self.actions.get(slot)?;
        Some(LoggedAction {
            id: a.id.clone(),
            probability: a.probability,
            x: self.vectors.get(slot)?.clone(),
        })
    }
}

/// Version byte of a [`ClosedMarker`]: a join state pruned when its window closed, in its
/// compact form (store schema 7).
pub(crate) const MARKER_VERSION: u8 = 2;

/// A closed window's join state as written when its decision's frame is in the segments: the
/// decision's sequence number and what each slot settled at. Everything else the marker
/// answers with (time, deadline, policy, holdout, candidate set, the served ids) is read back
/// from the frame, and a slot keeps a settled-slot entry of its own only once a return
/// adjusts it. About 20 bytes instead of the full pruned record's ~45 and a ~50-byte entry
/// per slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ClosedMarker {
    pub decision_seq: u64,
    /// Each slot's reward as applied when the window closed (`None`: nothing was, e.g. a
    /// deferred decision never activated). A slot's settled-slot entry takes precedence.
    pub settled: Vec<Option<f64>>,
}

impl ClosedMarker {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![MARKER_VERSION];
        out.extend(postcard::to_stdvec(self).expect("postcard encoding of a marker"));
        out
    }

    /// `bytes` as a marker, which they must be.
    pub(crate) fn decode_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        Self::decode(bytes).unwrap_or_else(|| {
            Err(StoreError::Corrupt {
                what: "closed marker",
                message: "not a marker".into(),
            })
        })
    }

    /// The marker, when `bytes` is one (else a full [`EventRecord`] or something corrupt).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Result<Self, StoreError>> {
        match bytes.split_first() {
            Some((&MARKER_VERSION, rest)) => {
                Some(postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt {
                    what: "closed marker",
                    message: e.to_string(),
                }))
            }
            _ => None,
        }
    }
}

/// [`DecisionRecord`] as schema 2 stored it (tree `decisions`; read by the migration only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DecisionRecordV2 {
    pub seq: u64,
    pub event_id: String,
    pub campaign: String,
    pub at_ms: u64,
    pub deadline_ms: u64,
    pub policy: String,
    pub seed: u64,
    pub holdout: bool,
    pub explore: bool,
    pub actions: Vec<LoggedAction>,
    pub candidates: u32,
    pub request: Vec<u8>,
    pub removed: Vec<(String, String, u32)>,
}

/// The join state as schema 2 stored it (tree `events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct EventRecordV2 {
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

impl From<EventRecordV1> for EventRecordV2 {
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

/// One applied reward: everything needed to replay learning. In the log it is stored as a
/// [`RewardEntry`] and joined back to its decision (for the action's vector) when read.
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

/// A reward as its campaign's log stores it: the decision it joins is named by its sequence
/// number, so the action and its vector are not stored twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardEntry {
    pub event_id: String,
    pub decision_seq: u64,
    pub at_ms: u64,
    pub kind: RewardKind,
    pub slot: u32,
    pub value: f64,
}

/// One entry of a campaign's log. New kinds of entries are added as new variants at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LogEntry {
    Decision(DecisionRecord),
    Reward(RewardEntry),
    /// A correction of a slot's applied reward (a return): tag 2.
    Adjustment(AdjustmentEntry),
}

/// A correction of an applied reward as its campaign's log stores it (`L` ++ campaign ++ 0 ++
/// seq, like a reward). Self-contained for the reports (the decision's time, arm, policy and
/// outcome before it); the action's vector is joined back from the decision by `decision_seq`
/// when read, as a reward's is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdjustmentEntry {
    pub event_id: String,
    pub decision_seq: u64,
    /// When the adjustment was applied.
    pub at_ms: u64,
    pub slot: u32,
    /// The slot's served action id.
    pub action: String,
    /// The slot's reward before this adjustment, and after it.
    pub previous: f64,
    pub value: f64,
    /// The decision's outcome (sum of its slots' applied rewards) before this adjustment.
    pub outcome_before: f64,
    /// The decision's time, holdout flag and serving policy.
    pub decision_at_ms: u64,
    pub holdout: bool,
    pub policy: String,
    /// The idempotency key (hash of `adjustment_id`, or of the sent value).
    pub key: u64,
}

/// An adjustment as read back: its log entry with the served action (and its vector, when the
/// decision is still in the log; an empty vector otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct AdjustmentRecord {
    pub seq: u64,
    pub campaign: String,
    pub entry: AdjustmentEntry,
    pub action: LoggedAction,
}

/// The applied reward of one slot as adjustments see it (`S` ++ campaign ++ 0 ++ event id ++ 0
/// ++ slot in tree `log`): written in the batch of the reward it records, then rewritten in the
/// batch of each adjustment. Outlives the join state's pruning (returns come after the reward
/// window), like the join state's marker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettledSlot {
    /// The served action id.
    pub action: String,
    /// The slot's reward as learned now (after any adjustments).
    pub value: f64,
    /// Idempotency keys of the adjustments applied.
    pub adjustments: Vec<u64>,
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
