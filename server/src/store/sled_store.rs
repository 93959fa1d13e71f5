//! The sled implementation of [`Store`].

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::migrate;
use super::records::{decode, encode};
use super::{
    CampaignSnapshot, DecisionRecord, EventRecord, FlushFuture, RewardRecord, SendEventRecord,
    ShopperRecord, Store, StoreError,
};

/// Schema of the trees and keys below; bump on an incompatible change. Version 2 keys
/// everything about an event by campaign ++ 0 ++ event id (version 1 keyed by event id alone,
/// so event ids were global); [`migrate`] rewrites a version 1 store at open.
pub const SCHEMA_VERSION: u32 = 2;
pub(super) const SCHEMA_KEY: &[u8] = b"schema_version";
/// Meta key: the highest decision seq logged before the store moved to schema 2 (absent when the
/// store was created at 2). See [`Store::legacy_decision_seq`].
pub(super) const LEGACY_SEQ_KEY: &[u8] = b"schema1_last_decision_seq";

/// Embedded store in one directory.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    campaigns: sled::Tree,
    policy_state: sled::Tree,
    decisions: sled::Tree,
    events: sled::Tree,
    rewards: sled::Tree,
    pending: sled::Tree,
    api_keys: sled::Tree,
    audit: sled::Tree,
    deferred: sled::Tree,
    shoppers: sled::Tree,
    shopper_tokens: sled::Tree,
    send_events: sled::Tree,
    /// Whether any decision was ever deferred in this store: until one is, reward joins skip the
    /// `deferred` lookup (the native API never defers).
    any_deferred: Arc<AtomicBool>,
    legacy_decision_seq: u64,
}

fn shopper_key(shopper: &str, campaign: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(shopper.len() + campaign.len() + 1);
    k.extend_from_slice(shopper.as_bytes());
    k.push(0);
    k.extend_from_slice(campaign.as_bytes());
    k
}

fn split_shopper_key(k: &[u8]) -> (String, String) {
    let cut = k.iter().position(|&b| b == 0).unwrap_or(k.len());
    (
        String::from_utf8_lossy(&k[..cut]).into_owned(),
        String::from_utf8_lossy(k.get(cut + 1..).unwrap_or_default()).into_owned(),
    )
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

/// Key of everything stored about one event (trees `events`, `deferred`, `send_events`, and
/// `pending` after its deadline): campaign ++ 0 ++ event id. Campaign ids are `[A-Za-z0-9._-]`
/// and event ids carry no control characters, so the first 0 splits the key and two
/// (campaign, event) pairs never share one.
fn event_key(campaign: &str, event_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + event_id.len() + 1);
    push_event_key(&mut k, campaign, event_id);
    k
}

pub(super) fn push_event_key(k: &mut Vec<u8>, campaign: &str, event_id: &str) {
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    k.extend_from_slice(event_id.as_bytes());
}

/// (campaign, event id) of an [`event_key`].
fn split_event_key(k: &[u8]) -> (String, String) {
    split_shopper_key(k)
}

fn pending_key(deadline_ms: u64, campaign: &str, event_id: &str) -> Vec<u8> {
    let mut k = deadline_ms.to_be_bytes().to_vec();
    push_event_key(&mut k, campaign, event_id);
    k
}

impl SledStore {
    /// Open (or create) the store in `dir`, checking the schema version.
    pub fn open(dir: &Path, cache_capacity: u64, flush_every_ms: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity)
            .flush_every_ms(Some(flush_every_ms))
            .open()?;
        let meta = db.open_tree("meta")?;
        let mut legacy_decision_seq = 0;
        match meta.get(SCHEMA_KEY)? {
            Some(v) => {
                let found =
                    u32::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                        what: "schema version",
                        message: "not 4 bytes".into(),
                    })?);
                if found == 1 {
                    migrate::v1_to_v2(&db)?;
                } else if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema {
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
                if let Some(v) = meta.get(LEGACY_SEQ_KEY)? {
                    legacy_decision_seq =
                        u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                            StoreError::Corrupt {
                                what: "legacy decision seq",
                                message: "not 8 bytes".into(),
                            }
                        })?);
                }
            }
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            }
        }
        let deferred = db.open_tree("deferred")?;
        Ok(Self {
            campaigns: db.open_tree("campaigns")?,
            policy_state: db.open_tree("policy_state")?,
            decisions: db.open_tree("decisions")?,
            events: db.open_tree("events")?,
            rewards: db.open_tree("rewards")?,
            pending: db.open_tree("pending")?,
            api_keys: db.open_tree("api_keys")?,
            audit: db.open_tree("audit")?,
            shoppers: db.open_tree("shoppers")?,
            shopper_tokens: db.open_tree("shopper_tokens")?,
            send_events: db.open_tree("send_events")?,
            any_deferred: Arc::new(AtomicBool::new(!deferred.is_empty())),
            deferred,
            legacy_decision_seq,
            db,
        })
    }
}

impl SledStore {
    #[cfg(test)]
    pub(super) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Item decisions keep their raw request, which may carry `"shopper_id"`: rewrite every
    /// record naming `shopper` without it. A linear scan (deletions are rare); records whose
    /// bytes do not mention `shopper_id` at all are not decoded.
    fn scrub_logged_requests(&self, shopper: &str) -> Result<usize, StoreError> {
        const KEY: &[u8] = b"shopper_id";
        let mut scrubbed = 0;
        for kv in self.decisions.iter() {
            let (k, v) = kv?;
            if !v.windows(KEY.len()).any(|w| w == KEY) {
                continue;
            }
            let mut d: DecisionRecord = decode("decision", &v)?;
            let Ok(serde_json::Value::Object(mut request)) =
                serde_json::from_slice::<serde_json::Value>(&d.request)
            else {
                continue;
            };
            if request.get("shopper_id").and_then(|s| s.as_str()) != Some(shopper) {
                continue;
            }
            request.remove("shopper_id");
            d.request = serde_json::to_vec(&request).expect("JSON object to bytes");
            self.decisions.insert(k, encode(&d))?;
            scrubbed += 1;
        }
        Ok(scrubbed)
    }
}

impl Store for SledStore {
    fn next_seq(&self) -> Result<u64, StoreError> {
        // sled never hands out the same id twice, crashes included; start at 1 so 0 means "none".
        Ok(self.db.generate_id()? + 1)
    }

    fn put_campaign(&self, id: &str, json: &[u8]) -> Result<(), StoreError> {
        self.campaigns.insert(id.as_bytes(), json)?;
        Ok(())
    }

    fn delete_campaign(&self, id: &str) -> Result<(), StoreError> {
        self.campaigns.remove(id.as_bytes())?;
        Ok(())
    }

    fn campaigns(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.campaigns
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    fn log_decision(
        &self,
        decision: &DecisionRecord,
        event: &EventRecord,
    ) -> Result<(), StoreError> {
        // Order matters for crash recovery: the decision log is the source of truth and recovery
        // rebuilds missing event and pending entries from its tail.
        self.decisions
            .insert(decision.seq.to_be_bytes(), encode(decision))?;
        self.pending.insert(
            pending_key(event.deadline_ms, &event.campaign, &event.event_id),
            &[],
        )?;
        self.events
            .insert(event_key(&event.campaign, &event.event_id), encode(event))?;
        Ok(())
    }

    fn event(&self, campaign: &str, event_id: &str) -> Result<Option<EventRecord>, StoreError> {
        self.events
            .get(event_key(campaign, event_id))?
            .map(|v| decode("event", &v))
            .transpose()
    }

    fn decision(&self, seq: u64) -> Result<Option<DecisionRecord>, StoreError> {
        self.decisions
            .get(seq.to_be_bytes())?
            .map(|v| decode("decision", &v))
            .transpose()
    }

    fn commit_rewards(
        &self,
        event: &EventRecord,
        rewards: &[RewardRecord],
        close: bool,
    ) -> Result<(), StoreError> {
        let event_bytes = encode(event);
        let reward_rows: Vec<([u8; 8], Vec<u8>)> = rewards
            .iter()
            .map(|r| (r.seq.to_be_bytes(), encode(r)))
            .collect();
        let pkey = pending_key(event.deadline_ms, &event.campaign, &event.event_id);
        let ekey = event_key(&event.campaign, &event.event_id);
        (&self.events, &self.rewards, &self.pending)
            .transaction(|(events, rewards, pending)| {
                events.insert(ekey.as_slice(), event_bytes.as_slice())?;
                for (k, v) in &reward_rows {
                    rewards.insert(k, v.as_slice())?;
                }
                if close {
                    pending.remove(pkey.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => StoreError::Sled(e),
            })
    }

    fn due_events(&self, now_ms: u64, limit: usize) -> Result<Vec<(String, String)>, StoreError> {
        let end = (now_ms.saturating_add(1)).to_be_bytes();
        self.pending
            .range(..end.as_slice())
            .take(limit)
            .map(|kv| {
                let (k, _) = kv?;
                Ok(split_event_key(k.get(8..).unwrap_or_default()))
            })
            .collect()
    }

    fn drop_orphan_pending(
        &self,
        campaign: &str,
        event_id: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let wanted = event_key(campaign, event_id);
        let end = (now_ms.saturating_add(1)).to_be_bytes();
        for kv in self.pending.range(..end.as_slice()) {
            let (k, _) = kv?;
            if k.get(8..) == Some(wanted.as_slice()) {
                self.pending.remove(k)?;
            }
        }
        Ok(())
    }

    fn put_snapshot(&self, campaign: &str, snapshot: &CampaignSnapshot) -> Result<(), StoreError> {
        self.policy_state
            .insert(campaign.as_bytes(), encode(snapshot))?;
        Ok(())
    }

    fn snapshot(&self, campaign: &str) -> Result<Option<CampaignSnapshot>, StoreError> {
        self.policy_state
            .get(campaign.as_bytes())?
            .map(|v| decode("snapshot", &v))
            .transpose()
    }

    fn delete_snapshot(&self, campaign: &str) -> Result<(), StoreError> {
        self.policy_state.remove(campaign.as_bytes())?;
        Ok(())
    }

    fn put_evaluation(&self, campaign: &str, id: &str, json: &[u8]) -> Result<(), StoreError> {
        // Opened by name on use (sled caches open trees): evaluations are rare admin writes.
        let mut key = campaign.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(id.as_bytes());
        self.db.open_tree("evaluations")?.insert(key, json)?;
        Ok(())
    }

    fn delete_evaluation(&self, campaign: &str, id: &str) -> Result<bool, StoreError> {
        let mut key = campaign.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(id.as_bytes());
        Ok(self.db.open_tree("evaluations")?.remove(key)?.is_some())
    }

    fn delete_log(
        &self,
        campaign: &str,
        decision_seq: u64,
        reward_seq: u64,
    ) -> Result<(u64, u64), StoreError> {
        let mut decisions = 0;
        for kv in self.decisions.range(..=decision_seq.to_be_bytes()) {
            let (k, v) = kv?;
            let d: DecisionRecord = decode("decision", &v)?;
            if d.campaign == campaign {
                self.decisions.remove(k)?;
                decisions += 1;
            }
        }
        let mut rewards = 0;
        for kv in self.rewards.range(..=reward_seq.to_be_bytes()) {
            let (k, v) = kv?;
            let r: RewardRecord = decode("reward", &v)?;
            if r.campaign == campaign {
                self.rewards.remove(k)?;
                rewards += 1;
            }
        }
        Ok((decisions, rewards))
    }

    fn defer(&self, campaign: &str, event_id: &str) -> Result<(), StoreError> {
        // Set before the mark is written, so a reader that can see the mark sees the flag.
        self.any_deferred.store(true, Ordering::SeqCst);
        self.deferred.insert(event_key(campaign, event_id), &[])?;
        Ok(())
    }

    fn is_deferred(&self, campaign: &str, event_id: &str) -> Result<bool, StoreError> {
        if !self.any_deferred.load(Ordering::SeqCst) {
            return Ok(false);
        }
        Ok(self.deferred.contains_key(event_key(campaign, event_id))?)
    }

    fn activate(&self, campaign: &str, event_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .deferred
            .remove(event_key(campaign, event_id))?
            .is_some())
    }

    fn deferred_with_prefix(
        &self,
        campaign: &str,
        prefix: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.deferred
            .scan_prefix(event_key(campaign, prefix))
            .map(|kv| Ok(split_event_key(&kv?.0).1))
            .collect()
    }

    fn legacy_decision_seq(&self) -> u64 {
        self.legacy_decision_seq
    }

    fn evaluations(&self, campaign: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut prefix = campaign.as_bytes().to_vec();
        prefix.push(0);
        self.db
            .open_tree("evaluations")?
            .scan_prefix(prefix)
            .map(|kv| Ok(kv?.1.to_vec()))
            .collect()
    }

    fn rewards_after(
        &self,
        after: u64,
    ) -> Box<dyn Iterator<Item = Result<RewardRecord, StoreError>> + '_> {
        let start = after.saturating_add(1).to_be_bytes();
        Box::new(self.rewards.range(start..).map(|kv| {
            let (_, v) = kv?;
            decode("reward", &v)
        }))
    }

    fn decisions_after(
        &self,
        after: u64,
    ) -> Box<dyn Iterator<Item = Result<DecisionRecord, StoreError>> + '_> {
        let start = after.saturating_add(1).to_be_bytes();
        Box::new(self.decisions.range(start..).map(|kv| {
            let (_, v) = kv?;
            decode("decision", &v)
        }))
    }

    fn put_key(&self, id: &str, json: &[u8]) -> Result<(), StoreError> {
        self.api_keys.insert(id.as_bytes(), json)?;
        Ok(())
    }

    fn keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.api_keys.iter().map(|kv| Ok(kv?.1.to_vec())).collect()
    }

    fn append_audit(&self, seq: u64, json: &[u8]) -> Result<(), StoreError> {
        self.audit.insert(seq.to_be_bytes(), json)?;
        Ok(())
    }

    fn audit_rev(&self) -> Box<dyn Iterator<Item = Result<Vec<u8>, StoreError>> + '_> {
        Box::new(self.audit.iter().rev().map(|kv| Ok(kv?.1.to_vec())))
    }

    fn shopper(&self, shopper: &str, campaign: &str) -> Result<Option<ShopperRecord>, StoreError> {
        self.shoppers
            .get(shopper_key(shopper, campaign))?
            .map(|v| decode("shopper", &v))
            .transpose()
    }

    fn put_shopper(
        &self,
        shopper: &str,
        campaign: &str,
        record: &ShopperRecord,
    ) -> Result<(), StoreError> {
        let key = shopper_key(shopper, campaign);
        // Token first: a state whose token entry is missing could not learn from rewards.
        self.shopper_tokens
            .insert(record.token.to_be_bytes(), key.as_slice())?;
        if let Some(old) = self.shoppers.insert(key, encode(record))? {
            let old: ShopperRecord = decode("shopper", &old)?;
            if old.token != record.token {
                self.shopper_tokens.remove(old.token.to_be_bytes())?;
            }
        }
        Ok(())
    }

    fn shopper_of_token(&self, token: u64) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .shopper_tokens
            .get(token.to_be_bytes())?
            .map(|k| split_shopper_key(&k)))
    }

    fn shopper_states(&self, shopper: &str) -> Result<Vec<(String, ShopperRecord)>, StoreError> {
        let mut prefix = shopper.as_bytes().to_vec();
        prefix.push(0);
        self.shoppers
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((split_shopper_key(&k).1, decode("shopper", &v)?))
            })
            .collect()
    }

    fn all_shopper_states(
        &self,
    ) -> Box<dyn Iterator<Item = Result<(String, String, ShopperRecord), StoreError>> + '_> {
        Box::new(self.shoppers.iter().map(|kv| {
            let (k, v) = kv?;
            let (shopper, campaign) = split_shopper_key(&k);
            Ok((shopper, campaign, decode("shopper", &v)?))
        }))
    }

    fn remove_shopper_state(&self, shopper: &str, campaign: &str) -> Result<(), StoreError> {
        if let Some(old) = self.shoppers.remove(shopper_key(shopper, campaign))? {
            let old: ShopperRecord = decode("shopper", &old)?;
            self.shopper_tokens.remove(old.token.to_be_bytes())?;
        }
        Ok(())
    }

    fn delete_shopper(&self, shopper: &str) -> Result<usize, StoreError> {
        let states = self.shopper_states(shopper)?;
        let tokens: std::collections::HashSet<u64> = states.iter().map(|(_, r)| r.token).collect();
        // Send events carry only the token; drop the ones of this shopper's tokens so nothing
        // pointing at them is left (a linear scan: deletions are rare).
        if !tokens.is_empty() {
            for kv in self.send_events.iter() {
                let (k, v) = kv?;
                let ev: SendEventRecord = decode("send event", &v)?;
                if tokens.contains(&ev.token) {
                    self.send_events.remove(k)?;
                }
            }
        }
        for (campaign, _) in &states {
            self.remove_shopper_state(shopper, campaign)?;
        }
        let scrubbed = self.scrub_logged_requests(shopper)?;
        if scrubbed > 0 {
            tracing::info!(scrubbed, "shopper id removed from logged decision requests");
        }
        Ok(states.len())
    }

    fn put_send_event(
        &self,
        campaign: &str,
        event_id: &str,
        record: &SendEventRecord,
    ) -> Result<(), StoreError> {
        self.send_events
            .insert(event_key(campaign, event_id), encode(record))?;
        Ok(())
    }

    fn send_event(
        &self,
        campaign: &str,
        event_id: &str,
    ) -> Result<Option<SendEventRecord>, StoreError> {
        self.send_events
            .get(event_key(campaign, event_id))?
            .map(|v| decode("send event", &v))
            .transpose()
    }

    fn flush(&self) -> FlushFuture {
        let db = self.db.clone();
        Box::pin(async move {
            db.flush_async().await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LoggedAction, RewardKind, SlotState};

    fn event(id: &str, deadline: u64) -> EventRecord {
        EventRecord {
            event_id: id.into(),
            campaign: "c".into(),
            decision_seq: 1,
            at_ms: 0,
            deadline_ms: deadline,
            policy: "thompson".into(),
            holdout: false,
            actions: vec![LoggedAction {
                id: "a".into(),
                probability: 0.5,
                x: Default::default(),
            }],
            slots: vec![SlotState::default()],
            closed: false,
            candidate_set: 0,
        }
    }

    fn pair(campaign: &str, id: &str) -> (String, String) {
        (campaign.to_string(), id.to_string())
    }

    fn decision(seq: u64, id: &str) -> DecisionRecord {
        DecisionRecord {
            seq,
            event_id: id.into(),
            campaign: "c".into(),
            at_ms: 0,
            deadline_ms: 0,
            policy: "thompson".into(),
            seed: 7,
            holdout: false,
            explore: true,
            actions: vec![],
            candidates: 1,
            request: vec![],
            removed: vec![],
        }
    }

    /// A deadline whose event record is gone is dropped, and only it (the sweeper's way out of
    /// meeting an orphan forever).
    #[test]
    fn orphan_deadlines_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        s.log_decision(&decision(1, "e1"), &event("e1", 1_000))
            .unwrap();
        s.log_decision(&decision(2, "e2"), &event("e2", 1_500))
            .unwrap();
        s.drop_orphan_pending("c", "e2", 5_000).unwrap();
        assert_eq!(s.due_events(5_000, 10).unwrap(), vec![pair("c", "e1")]);
        // Not yet due: kept.
        s.drop_orphan_pending("c", "e1", 500).unwrap();
        assert_eq!(s.due_events(5_000, 10).unwrap(), vec![pair("c", "e1")]);
    }

    #[test]
    fn decision_reward_roundtrip_and_pending_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        let e1 = event("e1", 2_000);
        let e2 = event("e2", 1_000);
        s.log_decision(&decision(1, "e1"), &e1).unwrap();
        s.log_decision(&decision(2, "e2"), &e2).unwrap();
        assert_eq!(s.due_events(1_500, 10).unwrap(), vec![pair("c", "e2")]);
        assert_eq!(
            s.due_events(5_000, 10).unwrap(),
            vec![pair("c", "e2"), pair("c", "e1")]
        );
        let r = RewardRecord {
            seq: 10,
            event_id: "e2".into(),
            campaign: "c".into(),
            at_ms: 1,
            kind: RewardKind::Explicit,
            slot: 0,
            action: e2.actions[0].clone(),
            value: 1.0,
            holdout: false,
            policy: "thompson".into(),
        };
        s.commit_rewards(&e2, std::slice::from_ref(&r), true)
            .unwrap();
        assert_eq!(s.due_events(5_000, 10).unwrap(), vec![pair("c", "e1")]);
        let all: Vec<_> = s.rewards_after(0).collect::<Result<_, _>>().unwrap();
        assert_eq!(all, vec![r]);
        assert_eq!(s.rewards_after(10).count(), 0);
        assert_eq!(s.decisions_after(1).count(), 1);
        assert_eq!(s.event("c", "e1").unwrap().unwrap(), e1);
        assert!(s.event("c", "nope").unwrap().is_none());
        assert!(
            s.event("d", "e1").unwrap().is_none(),
            "event ids are per campaign"
        );
    }

    #[test]
    fn shopper_delete_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        let rec = |token| ShopperRecord {
            token,
            last_send_ms: 1,
            last_seen_ms: 1,
            last_reward_seq: 0,
            counts: Default::default(),
        };
        s.put_shopper("ann", "c1", &rec(11)).unwrap();
        s.put_shopper("ann", "c2", &rec(12)).unwrap();
        s.put_shopper("annabel", "c1", &rec(13)).unwrap();
        let ev = |token| SendEventRecord {
            token,
            segment: None,
            slot: 3,
            send_at_ms: 5,
            timezone: "UTC".into(),
        };
        s.put_send_event("c1", "e1", &ev(11)).unwrap();
        s.put_send_event("c1", "e2", &ev(13)).unwrap();
        // Replacing the token drops the old token entry.
        s.put_shopper("ann", "c2", &rec(14)).unwrap();
        assert!(s.shopper_of_token(12).unwrap().is_none());
        assert_eq!(
            s.shopper_of_token(14).unwrap(),
            Some(("ann".into(), "c2".into()))
        );
        assert_eq!(s.delete_shopper("ann").unwrap(), 2);
        assert_eq!(s.delete_shopper("ann").unwrap(), 0);
        // Nothing keyed by, or pointing at, ann is left in any tree.
        for tree in s.db.tree_names() {
            for kv in s.db.open_tree(&tree).unwrap().iter() {
                let (k, v) = kv.unwrap();
                let hay = [k.as_ref(), v.as_ref()].concat();
                assert!(
                    !hay.windows(4).any(|w| w == b"ann\0"),
                    "tree {:?} still mentions ann",
                    String::from_utf8_lossy(&tree)
                );
            }
        }
        for t in [11u64, 14] {
            assert!(s.shopper_of_token(t).unwrap().is_none());
        }
        assert!(s.send_event("c1", "e1").unwrap().is_none());
        assert!(s.send_event("c1", "e2").unwrap().is_some());
        assert_eq!(s.shopper_states("annabel").unwrap().len(), 1);
    }

    #[test]
    fn deferral_marks_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
            assert!(!s.is_deferred("c", "a/1").unwrap());
            s.defer("c", "a/1").unwrap();
            s.defer("c", "a/2").unwrap();
            s.defer("c", "b").unwrap();
            s.defer("d", "a/3").unwrap();
            assert!(s.is_deferred("c", "a/1").unwrap());
            assert!(
                !s.is_deferred("d", "a/1").unwrap(),
                "marks are per campaign"
            );
            let mut slots = s.deferred_with_prefix("c", "a/").unwrap();
            slots.sort();
            assert_eq!(slots, vec!["a/1".to_string(), "a/2".to_string()]);
            s.db.flush().unwrap();
        }
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        assert!(
            s.is_deferred("c", "a/2").unwrap(),
            "the flag is rebuilt from the tree"
        );
        assert!(s.activate("c", "a/2").unwrap());
        assert!(!s.activate("c", "a/2").unwrap());
        assert!(!s.is_deferred("c", "a/2").unwrap());
        assert!(s.is_deferred("c", "b").unwrap());
        assert!(s.is_deferred("d", "a/3").unwrap());
    }

    #[test]
    fn schema_version_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
            s.db.open_tree("meta")
                .unwrap()
                .insert(SCHEMA_KEY, &99u32.to_be_bytes())
                .unwrap();
            s.db.flush().unwrap();
        }
        let err = SledStore::open(dir.path(), 1 << 20, 100).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }
}
