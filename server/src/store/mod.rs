//! Storage behind traits split by concern, with sled as the embedded default.
//!
//! The log (schema 4) has two homes:
//! - each campaign's **decisions** are frames of append-only segment files,
//!   `<dir>/logs/c-<campaign>/<first seq>.seg` (`segments.rs`): buffered in memory on the decide
//!   path, written out in large writes and fsynced by every flush (the group commit and a
//!   periodic thread). Everything that reads one campaign's decisions reads only its files.
//! - sled's `log` tree holds three key families:
//!   - `L` ++ campaign ++ 0 ++ seq (big-endian): the campaign's rewards ([`LogEntry::Reward`],
//!     postcard behind a version byte), naming their decision by sequence number;
//!   - `E` ++ campaign ++ 0 ++ event id: the join state of a decision ([`EventRecord`]), derived
//!     from the log, pruned to a compact marker when its window closes (schema 7: the
//!     decision's seq and each slot's settled value; the rest is read back from the frame),
//!     which the journal's drain moves to the campaign's close files (schema 8,
//!     `closes.rs`, `<dir>/closes/c-<campaign>/`);
//!   - `P` ++ deadline (big-endian) ++ campaign ++ 0 ++ event id: reward windows still open.
//!
//!   - `S` ++ campaign ++ 0 ++ event id ++ 0 ++ slot (big-endian u32): the applied reward of a
//!     slot as adjustments (returns) see it ([`SettledSlot`]), once a return adjusted it (the
//!     other slots are answered by the open join state or the compact marker).
//!
//! A decision is appended to its segment under its campaign's books lock (so a campaign's frames
//! are in sequence order) and its open window is held in memory (`open_windows.rs`): its `E` and
//! `P` entries are written only when something changes its join state (a reward, an activation)
//! or memory is full, and after a crash the held windows are rebuilt from the frames past each
//! campaign's mark. Deferred decisions go to sled at once. A reward is one
//! batch of its `L` entry, the new `E` and (when the window closes) the `P` removal; an
//! adjustment is one batch of its `L` entry and its slot's new `S`. A flush syncs
//! the segments before sled, so a durable join state never names a decision that is not.
//! Readers merge a campaign's decisions and rewards by sequence number. Sequence numbers come
//! from one generator, so they increase within each campaign and never repeat.
//!
//! Other trees: `campaigns` (id -> JSON config), `policy_state` (campaign -> versioned snapshot),
//! `meta` (schema version and the like), `api_keys` (key id -> JSON key record, secret hashed),
//! `audit` (big-endian seq -> JSON audit entry, append-only), `shoppers` (shopper id ++ 0 ++
//! campaign -> send-time shopper state), `shopper_tokens` (token -> shopper id ++ 0 ++ campaign),
//! `send_events` (campaign ++ 0 ++ event id -> the token, segment and slot of a send-time
//! decision), `evaluations` (campaign ++ 0 ++ id -> JSON).
//!
//! Event ids are unique per campaign, not globally. `migrate.rs` converts older stores at open.

mod closes;
mod journal;
mod migrate;
mod open_windows;
mod records;
mod segments;
mod sled_store;

/// The versioned record encoding, for the `record` fuzz target (crate::fuzzing).
pub(crate) use records::{decode as decode_record, encode as encode_record};

use std::future::Future;
use std::pin::Pin;

#[doc(hidden)]
pub use migrate::downgrade_to_schema1;
pub use records::{
    AdjustmentEntry, AdjustmentRecord, Audience, CampaignSnapshot, Counters, DecisionRecord,
    EventRecord, LogEntry, LoggedAction, PinnedSlots, RewardEntry, RewardKind, RewardRecord,
    SendEventRecord, ServedAction, SettledSlot, ShopperRecord, SlotState, MAX_LOGGED_REQUEST,
};
pub(crate) use sled_store::expire_margin_ms;
pub use sled_store::{sled_config, OpenOptions, SledStore};

/// A join state with its decision's served actions, when they were read to build it.
pub type EventWithActions = (EventRecord, Option<Vec<LoggedAction>>);

/// Storage failures. The engine maps these to 500s; they never carry user input.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage: record {what} could not be decoded: {message}")]
    Corrupt { what: &'static str, message: String },
    #[error("storage: schema version {found} is not supported (this build reads {expected})")]
    Schema { found: u32, expected: u32 },
}

/// A future that resolves once everything written before it was requested is durable.
pub type FlushFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// A campaign's log and the join state derived from it.
pub trait LogStore: Send + Sync + 'static {
    /// A fresh, never reused, increasing sequence number.
    fn next_seq(&self) -> Result<u64, StoreError>;

    /// Append a decision to its campaign's log (buffered; durable after the next flush). A
    /// campaign's decisions must be appended in increasing `seq` order.
    fn append_decision(&self, decision: &DecisionRecord) -> Result<(), StoreError>;
    /// Write the join state and open window of a decision already appended, in one batch.
    fn index_decision(&self, event: &EventRecord) -> Result<(), StoreError>;
    /// [`Self::append_decision`] then [`Self::index_decision`].
    fn log_decision(
        &self,
        decision: &DecisionRecord,
        event: &EventRecord,
    ) -> Result<(), StoreError> {
        self.append_decision(decision)?;
        self.index_decision(event)
    }
    /// The join state of `event_id` in `campaign`.
    fn event(&self, campaign: &str, event_id: &str) -> Result<Option<EventRecord>, StoreError>;
    /// Whether `campaign` holds a join state for `event_id` (without building it).
    fn has_event(&self, campaign: &str, event_id: &str) -> Result<bool, StoreError> {
        Ok(self.event(campaign, event_id)?.is_some())
    }
    /// The join state of `event_id` with its decision's served actions when building it read
    /// them anyway (an open window held in memory), so a join need not read the decision again.
    fn event_with_actions(
        &self,
        campaign: &str,
        event_id: &str,
    ) -> Result<Option<EventWithActions>, StoreError> {
        Ok(self.event(campaign, event_id)?.map(|e| (e, None)))
    }
    /// The decision logged under `seq` in `campaign`.
    fn decision(&self, campaign: &str, seq: u64) -> Result<Option<DecisionRecord>, StoreError>;
    /// Replace the join state of an event (its window stays as it is).
    fn put_event(&self, event: &EventRecord) -> Result<(), StoreError>;

    /// In one atomic batch: store the new join state of an event, append `rewards` to its
    /// campaign's log and, when `close` is set, drop its open-window entry.
    fn commit_rewards(
        &self,
        event: &EventRecord,
        rewards: &[RewardRecord],
        close: bool,
    ) -> Result<(), StoreError>;

    /// The applied rewards of `event_id`'s slots (slot, state), in slot order: what an
    /// adjustment corrects. Slots without an applied reward are absent.
    fn settled(
        &self,
        campaign: &str,
        event_id: &str,
    ) -> Result<Vec<(u32, SettledSlot)>, StoreError>;

    /// Store a slot's settled state as it is (a cluster snapshot restoring another replica's).
    fn put_settled(
        &self,
        campaign: &str,
        event_id: &str,
        slot: u32,
        state: &SettledSlot,
    ) -> Result<(), StoreError>;

    /// In one atomic batch: append the adjustment to its campaign's log and store its slot's
    /// new settled state (`S` key of `adjustment.entry.event_id`, slot `adjustment.entry.slot`).
    fn commit_adjustment(
        &self,
        adjustment: &AdjustmentRecord,
        slot: &SettledSlot,
    ) -> Result<(), StoreError>;

    /// The adjustments of `campaign`'s log, in order (reports' folds).
    fn adjustments(
        &self,
        campaign: &str,
    ) -> Box<dyn Iterator<Item = Result<AdjustmentRecord, StoreError>> + '_>;

    /// (campaign, event id) of the events whose reward window ended at or before `now_ms`,
    /// oldest first.
    fn due_events(&self, now_ms: u64, limit: usize) -> Result<Vec<(String, String)>, StoreError>;

    /// Drop the open-window entries due by `now_ms` of an event whose join state is gone
    /// (its campaign was deleted), so the window sweeper does not meet them again.
    fn drop_orphan_pending(
        &self,
        campaign: &str,
        event_id: &str,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// The last sequence number in `campaign`'s log (0 when it is empty).
    fn last_seq(&self, campaign: &str) -> Result<u64, StoreError>;
    /// The entries of `campaign`'s log with sequence numbers above `after`, in order; rewards
    /// are joined back to their decisions.
    fn log_after(
        &self,
        campaign: &str,
        after: u64,
    ) -> Box<dyn Iterator<Item = Result<LogRecord, StoreError>> + '_>;
    /// The decisions of `campaign`'s log above `after`, in order (rewards are skipped without
    /// being decoded).
    fn decisions(
        &self,
        campaign: &str,
        after: u64,
    ) -> Box<dyn Iterator<Item = Result<DecisionRecord, StoreError>> + '_>;
    /// The rewards of `campaign`'s log, in order, joined to their decisions.
    fn rewards(
        &self,
        campaign: &str,
    ) -> Box<dyn Iterator<Item = Result<RewardRecord, StoreError>> + '_>;

    /// Remove `campaign`'s log entries with seq <= `up_to` (learned state covering them must be
    /// snapshotted first); a decision whose window is still open leaves its vectors in its join
    /// state. Returns (decisions, rewards) removed.
    fn delete_log(&self, campaign: &str, up_to: u64) -> Result<(u64, u64), StoreError>;
    /// Remove everything logged about `campaign` (its log and join states; open-window entries
    /// are dropped by the sweeper when it meets them).
    fn delete_campaign_log(&self, campaign: &str) -> Result<(), StoreError>;

    /// Event ids of `campaign` starting with `prefix` whose decision is deferred.
    fn deferred_with_prefix(&self, campaign: &str, prefix: &str)
        -> Result<Vec<String>, StoreError>;
    /// Every join state of `campaign` (open and pruned markers), in event id order: what a
    /// cluster snapshot carries (crate::cluster::snapshot).
    fn join_states(
        &self,
        campaign: &str,
    ) -> Box<dyn Iterator<Item = Result<EventRecord, StoreError>> + '_>;
    /// The highest decision seq logged before the store moved to schema 2, 0 when it was
    /// created at 2 or later: events up to it may carry ids built the schema 1 way
    /// (Personalizer multi-slot `{eventId}/{slotId}`).
    fn legacy_decision_seq(&self) -> u64;

    /// Make every write so far durable.
    fn flush(&self) -> FlushFuture;

    /// Make every write to the campaigns' logs so far durable (decisions, rewards, join
    /// states, returns): what a reward's acknowledgement waits for. Cheaper than
    /// [`flush`](Self::flush): the segment files and the log journal are fsynced; sled is
    /// flushed only when a send-time decision wrote a shopper state or send event since the
    /// last commit (a reward's learning reads them back after a crash).
    fn commit_log(&self) -> FlushFuture;

    /// Log retention (docs/security/memory.md): remove at most `limit` of `campaign`'s oldest
    /// decisions, those logged at or before `before_ms` with seq <= `max_seq` (learned state
    /// covering them must be snapshotted first) and older by `settle_ms` (the return window)
    /// and a margin than the entry at `max_seq`, stopping at the first whose window is still
    /// open; with them go their rewards and adjustments (also those logged later, up to
    /// `max_seq`), the entries before them, and the keys kept about their events: join-state
    /// marker, settled slots (`S`) and send-time event. Idempotent: a crash part way is
    /// finished by the next call.
    fn expire_log(
        &self,
        campaign: &str,
        before_ms: u64,
        max_seq: u64,
        settle_ms: u64,
        limit: usize,
    ) -> Result<Expired, StoreError>;

    /// The rewards of `campaign`'s log as (decision seq, slot, value), in order, without
    /// reading their decisions (what a reward index needs; adjustments are not included).
    fn reward_values(
        &self,
        campaign: &str,
    ) -> Box<dyn Iterator<Item = Result<(u64, u32, f64), StoreError>> + '_>;
}

/// What one [`LogStore::expire_log`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// The last sequence number removed (0: nothing).
    pub up_to: u64,
    /// Decision frames removed.
    pub decisions: u64,
    /// Reward and adjustment entries removed.
    pub rewards: u64,
    /// Join-state markers, settled slots and send-time events removed.
    pub keys: u64,
}

/// Campaign configs, learned-state snapshots, stored evaluations, API keys and the audit trail.
pub trait ConfigStore: Send + Sync + 'static {
    fn put_campaign(&self, id: &str, json: &[u8]) -> Result<(), StoreError>;
    fn delete_campaign(&self, id: &str) -> Result<(), StoreError>;
    fn campaigns(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    fn put_snapshot(&self, campaign: &str, snapshot: &CampaignSnapshot) -> Result<(), StoreError>;
    fn snapshot(&self, campaign: &str) -> Result<Option<CampaignSnapshot>, StoreError>;
    fn delete_snapshot(&self, campaign: &str) -> Result<(), StoreError>;

    /// Store an off-policy evaluation (JSON) of `campaign` under `id`.
    fn put_evaluation(&self, campaign: &str, id: &str, json: &[u8]) -> Result<(), StoreError>;
    /// Every stored evaluation of `campaign`, in key order.
    fn evaluations(&self, campaign: &str) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Remove a stored evaluation; false when there was none.
    fn delete_evaluation(&self, campaign: &str, id: &str) -> Result<bool, StoreError>;

    /// Insert or replace an API key record (JSON; the secret is stored hashed by the caller).
    fn put_key(&self, id: &str, json: &[u8]) -> Result<(), StoreError>;
    fn keys(&self) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Append an audit entry under `seq`. There is no method to change or remove one.
    fn append_audit(&self, seq: u64, json: &[u8]) -> Result<(), StoreError>;
    /// Audit entries, newest first.
    fn audit_rev(&self) -> Box<dyn Iterator<Item = Result<Vec<u8>, StoreError>> + '_>;
}

/// Send-time shopper state and the send events that point at it by token.
pub trait ShopperStore: Send + Sync + 'static {
    /// A send-time shopper's state in `campaign`.
    fn shopper(&self, shopper: &str, campaign: &str) -> Result<Option<ShopperRecord>, StoreError>;
    /// Insert or replace a shopper's state (and its token's entry).
    fn put_shopper(
        &self,
        shopper: &str,
        campaign: &str,
        record: &ShopperRecord,
    ) -> Result<(), StoreError>;
    /// The (shopper, campaign) a token belongs to, while the shopper's state exists.
    fn shopper_of_token(&self, token: u64) -> Result<Option<(String, String)>, StoreError>;
    /// Every campaign's state of one shopper, in campaign order.
    fn shopper_states(&self, shopper: &str) -> Result<Vec<(String, ShopperRecord)>, StoreError>;
    /// Every (shopper, campaign, state), in key order (reports, retention).
    fn all_shopper_states(
        &self,
    ) -> Box<dyn Iterator<Item = Result<(String, String, ShopperRecord), StoreError>> + '_>;
    /// Drop one shopper's state in one campaign and its token entry.
    fn remove_shopper_state(&self, shopper: &str, campaign: &str) -> Result<(), StoreError>;
    /// Remove everything keyed by or pointing at the shopper: states in every campaign, their
    /// tokens, the send events carrying those tokens, and the `shopper_id` of every logged item
    /// request that names them (the rest of the logged request stays for off-policy evaluation).
    /// Returns the number of campaign states removed (0 when there was nothing: deleting is
    /// idempotent).
    fn delete_shopper(&self, shopper: &str) -> Result<usize, StoreError>;
    fn put_send_event(
        &self,
        campaign: &str,
        event_id: &str,
        record: &SendEventRecord,
    ) -> Result<(), StoreError>;
    fn send_event(
        &self,
        campaign: &str,
        event_id: &str,
    ) -> Result<Option<SendEventRecord>, StoreError>;
    /// Every (event id, send event) of `campaign`, in key order (cluster snapshots).
    fn send_events(&self, campaign: &str) -> Result<Vec<(String, SendEventRecord)>, StoreError>;
}

/// Everything the engine needs from a store. Every method is atomic on its own.
pub trait Store: LogStore + ConfigStore + ShopperStore {}

impl<T: LogStore + ConfigStore + ShopperStore> Store for T {}

/// One entry of a campaign's log as read back.
#[derive(Debug, Clone, PartialEq)]
pub enum LogRecord {
    Decision(DecisionRecord),
    Reward(RewardRecord),
    Adjustment(AdjustmentRecord),
}
