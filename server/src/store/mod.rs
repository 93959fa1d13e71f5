//! Storage behind a trait, with sled as the embedded default.
//!
//! Trees: `campaigns` (id -> JSON config), `policy_state` (campaign -> versioned snapshot),
//! `decisions` (big-endian seq -> decision record), `events` (campaign ++ 0 ++ event id -> join
//! state), `rewards` (big-endian seq -> applied reward), `pending` (big-endian deadline ++
//! campaign ++ 0 ++ event id), `meta` (schema version and the like), `api_keys` (key id -> JSON
//! key record, secret hashed), `audit` (big-endian seq -> JSON audit entry, append-only),
//! `deferred` (campaign ++ 0 ++ event id -> empty: decisions waiting for activation), `shoppers`
//! (shopper id ++ 0 ++ campaign -> send-time shopper state), `shopper_tokens` (token -> shopper
//! id ++ 0 ++ campaign), `send_events` (campaign ++ 0 ++ event id -> the token, segment and slot
//! of a send-time decision). Binary records are postcard behind a version byte.
//!
//! Event ids are unique per campaign, not globally: every entry about an event is keyed by its
//! campaign first (schema 2; `migrate.rs` rewrites a schema 1 store at open).

mod migrate;
mod records;
mod sled_store;

/// The versioned record encoding, for the `record` fuzz target (crate::fuzzing).
pub(crate) use records::{decode as decode_record, encode as encode_record};

use std::future::Future;
use std::pin::Pin;

#[doc(hidden)]
pub use migrate::downgrade_to_schema1;
pub use records::{
    CampaignSnapshot, Counters, DecisionRecord, EventRecord, LoggedAction, RewardKind,
    RewardRecord, SendEventRecord, ShopperRecord, SlotState,
};
pub use sled_store::SledStore;

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

/// What the engine needs from a store. Every method is atomic on its own.
pub trait Store: Send + Sync + 'static {
    /// A fresh, never reused, increasing sequence number.
    fn next_seq(&self) -> Result<u64, StoreError>;

    fn put_campaign(&self, id: &str, json: &[u8]) -> Result<(), StoreError>;
    fn delete_campaign(&self, id: &str) -> Result<(), StoreError>;
    fn campaigns(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Log a decision: the decision record, its join state and its pending-deadline entry.
    fn log_decision(
        &self,
        decision: &DecisionRecord,
        event: &EventRecord,
    ) -> Result<(), StoreError>;
    /// The join state of `event_id` in `campaign`.
    fn event(&self, campaign: &str, event_id: &str) -> Result<Option<EventRecord>, StoreError>;
    fn decision(&self, seq: u64) -> Result<Option<DecisionRecord>, StoreError>;

    /// Atomically store the new join state of an event, append `rewards` to the reward log and,
    /// when `close` is set, drop its pending-deadline entry.
    fn commit_rewards(
        &self,
        event: &EventRecord,
        rewards: &[RewardRecord],
        close: bool,
    ) -> Result<(), StoreError>;

    /// (campaign, event id) of the events whose reward window ended at or before `now_ms`,
    /// oldest first.
    fn due_events(&self, now_ms: u64, limit: usize) -> Result<Vec<(String, String)>, StoreError>;

    /// Drop the pending-deadline entries due by `now_ms` of an event whose join state is gone
    /// (an orphan a crash can leave), so the window sweeper does not meet them again.
    fn drop_orphan_pending(
        &self,
        campaign: &str,
        event_id: &str,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    fn put_snapshot(&self, campaign: &str, snapshot: &CampaignSnapshot) -> Result<(), StoreError>;
    fn snapshot(&self, campaign: &str) -> Result<Option<CampaignSnapshot>, StoreError>;
    fn delete_snapshot(&self, campaign: &str) -> Result<(), StoreError>;

    /// Store an off-policy evaluation (JSON) of `campaign` under `id` (tree `evaluations`, key
    /// campaign ++ 0 ++ id).
    fn put_evaluation(&self, campaign: &str, id: &str, json: &[u8]) -> Result<(), StoreError>;
    /// Every stored evaluation of `campaign`, in key order.
    fn evaluations(&self, campaign: &str) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Remove a stored evaluation; false when there was none.
    fn delete_evaluation(&self, campaign: &str, id: &str) -> Result<bool, StoreError>;

    /// Remove the campaign's decisions with seq <= `decision_seq` and rewards with seq <=
    /// `reward_seq` from the logs (learned state covering them must be snapshotted first).
    /// Returns (decisions, rewards) removed.
    fn delete_log(
        &self,
        campaign: &str,
        decision_seq: u64,
        reward_seq: u64,
    ) -> Result<(u64, u64), StoreError>;

    /// Mark a decision as deferred (tree `deferred`): its rewards are ignored and its window
    /// closes without learning until [`Store::activate`] removes the mark. Written before the
    /// decision itself, so a crash never leaves an unmarked deferred decision.
    fn defer(&self, campaign: &str, event_id: &str) -> Result<(), StoreError>;
    fn is_deferred(&self, campaign: &str, event_id: &str) -> Result<bool, StoreError>;
    /// Remove the deferral mark; false when the event was not deferred.
    fn activate(&self, campaign: &str, event_id: &str) -> Result<bool, StoreError>;
    /// Deferred event ids of `campaign` starting with `prefix`.
    fn deferred_with_prefix(&self, campaign: &str, prefix: &str)
        -> Result<Vec<String>, StoreError>;
    /// The highest decision seq logged before the store moved to schema 2, 0 when it was
    /// created at 2: events up to it may carry ids built the schema 1 way (Personalizer
    /// multi-slot `{eventId}/{slotId}`).
    fn legacy_decision_seq(&self) -> u64;

    /// Rewards with sequence numbers strictly above `after`, in order.
    fn rewards_after(
        &self,
        after: u64,
    ) -> Box<dyn Iterator<Item = Result<RewardRecord, StoreError>> + '_>;
    /// Decisions with sequence numbers strictly above `after`, in order.
    fn decisions_after(
        &self,
        after: u64,
    ) -> Box<dyn Iterator<Item = Result<DecisionRecord, StoreError>> + '_>;

    /// Insert or replace an API key record (JSON; the secret is stored hashed by the caller).
    fn put_key(&self, id: &str, json: &[u8]) -> Result<(), StoreError>;
    fn keys(&self) -> Result<Vec<Vec<u8>>, StoreError>;

    /// Append an audit entry under `seq`. There is no method to change or remove one.
    fn append_audit(&self, seq: u64, json: &[u8]) -> Result<(), StoreError>;
    /// Audit entries, newest first.
    fn audit_rev(&self) -> Box<dyn Iterator<Item = Result<Vec<u8>, StoreError>> + '_>;

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

    /// Make every write so far durable.
    fn flush(&self) -> FlushFuture;
}
