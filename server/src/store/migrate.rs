//! Schema migrations, run by [`SledStore::open`](super::SledStore::open) before anything reads
//! the trees.
//!
//! Schema 1 → 2: entries about an event were keyed by the event id alone, so an id was global
//! across campaigns. Schema 2 keys them by campaign ++ 0 ++ event id (trees `events`,
//! `deferred`, `send_events`; `pending` keeps its deadline prefix), and an event record carries
//! the hash of its candidate set (`candidate_set`, 0 for the converted ones: unknown).
//!
//! Crash safety: each tree is rewritten in chunks, each chunk one atomic sled batch that inserts
//! the new entries and removes the old ones. An old key never holds a 0 byte after its prefix
//! (event ids carry no control characters) and a new one always does, so a re-run after a crash
//! converts exactly what is left. `events` is converted last: while the other trees are
//! converted, every event still has its old record, which names its campaign. The schema
//! version is bumped only once everything is converted and flushed.

use std::collections::{HashMap, HashSet};

use super::records::{decode, encode, DecisionRecordV2, EventRecordV1, EventRecordV2};
use super::segments::Segments;
use super::sled_store::{
    is_decision, join_key, log_key, pending_key, push_event_key, segments_dir, split_log_key,
    LEGACY_SEQ_KEY, LOG, PENDING, SCHEMA_KEY,
};
use super::{
    DecisionRecord, EventRecord, LogEntry, LoggedAction, RewardEntry, RewardRecord, ServedAction,
    StoreError,
};

/// Entries per atomic batch.
const CHUNK: usize = 4096;

/// The trees keyed by event id besides `events`, with the length of their key prefix.
const EVENT_TREES: [(&str, usize); 3] = [("pending", 8), ("deferred", 0), ("send_events", 0)];

/// What one migration did, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Migrated {
    /// Entries rewritten under their new key, every tree.
    pub converted: u64,
    /// Entries whose campaign could not be found (orphans of a crash before their decision was
    /// logged): dropped, as recovery would never have used them.
    pub dropped: u64,
}

fn is_old(key: &[u8], prefix_len: usize) -> bool {
    key.len() > prefix_len && !key[prefix_len..].contains(&0)
}

pub(super) fn v1_to_v2(db: &sled::Db) -> Result<Migrated, StoreError> {
    let events = db.open_tree("events")?;
    let decisions = db.open_tree("decisions")?;

    // Ids in the other trees whose event record is missing: a crash between the decision log
    // write and the event write (recovery rebuilds those events from the log), or before the
    // decision (harmless orphans). Their campaign is in the decision log, if anywhere.
    let mut orphans: HashSet<Vec<u8>> = HashSet::new();
    for (name, prefix_len) in EVENT_TREES {
        for kv in db.open_tree(name)?.iter() {
            let (k, _) = kv?;
            if is_old(&k, prefix_len) && !events.contains_key(&k[prefix_len..])? {
                orphans.insert(k[prefix_len..].to_vec());
            }
        }
    }
    let mut orphan_campaign: HashMap<Vec<u8>, String> = HashMap::new();
    if !orphans.is_empty() {
        // Newest first: orphans are from the last moments before a crash.
        for kv in decisions.iter().rev() {
            let (_, v) = kv?;
            let d: DecisionRecordV2 = decode("decision", &v)?;
            if orphans.remove(d.event_id.as_bytes()) {
                orphan_campaign.insert(d.event_id.into_bytes(), d.campaign);
                if orphans.is_empty() {
                    break;
                }
            }
        }
    }

    let mut done = Migrated::default();
    for (name, prefix_len) in EVENT_TREES {
        let tree = db.open_tree(name)?;
        rekey(&tree, prefix_len, &mut done, |id, value| {
            let campaign = match events.get(id)? {
                Some(e) => Some(decode::<EventRecordV1>("event", &e)?.campaign),
                None => orphan_campaign.get(id).cloned(),
            };
            Ok(campaign.map(|c| (c, value.to_vec())))
        })?;
    }
    rekey(&events, 0, &mut done, |_, value| {
        let event: EventRecordV2 = decode::<EventRecordV1>("event", value)?.into();
        Ok(Some((event.campaign.clone(), encode(&event))))
    })?;
    db.flush()?;

    let last_decision = match decisions.last()? {
        Some((k, _)) => {
            u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                what: "decision key",
                message: "not 8 bytes".into(),
            })?)
        }
        None => 0,
    };
    let mut meta = sled::Batch::default();
    meta.insert(LEGACY_SEQ_KEY, &last_decision.to_be_bytes());
    meta.insert(SCHEMA_KEY, &2u32.to_be_bytes());
    db.open_tree("meta")?.apply_batch(meta)?;
    db.flush()?;
    tracing::info!(
        converted = done.converted,
        dropped = done.dropped,
        "store migrated from schema 1 to 2: event ids are per campaign"
    );
    Ok(done)
}

/// The trees schema 3 folded into `log`.
const V2_TREES: [&str; 5] = ["decisions", "rewards", "events", "pending", "deferred"];

/// Schema 2 → 3: the global `decisions` and `rewards` logs become each campaign's log (`L`
/// entries, same sequence numbers, rewards naming their decision instead of repeating its
/// action), `events` becomes the join state (`E`, vectors dropped: they stay in the decision;
/// the `deferred` mark folded in), `pending` becomes `P`. A decision whose join state a crash
/// left missing gets it rebuilt (schema 2 rebuilt it at every start instead).
///
/// Crash safety: everything is copied into `log` first (copying again overwrites with the same
/// bytes), the version is bumped after a flush, and only then are the old trees dropped; a
/// store at schema 3 that still has one drops it at open.
pub(super) fn v2_to_v3(db: &sled::Db) -> Result<Migrated, StoreError> {
    let done = copy_v2_into_log(db)?;
    db.flush()?;
    db.open_tree("meta")?
        .insert(SCHEMA_KEY, &3u32.to_be_bytes())?;
    db.flush()?;
    drop_v2_trees(db)?;
    tracing::info!(
        converted = done.converted,
        dropped = done.dropped,
        "store migrated from schema 2 to 3: one log per campaign"
    );
    Ok(done)
}

/// The copying part of [`v2_to_v3`]; the old trees are left as they are.
fn copy_v2_into_log(db: &sled::Db) -> Result<Migrated, StoreError> {
    let log = db.open_tree("log")?;
    let events = db.open_tree("events")?;
    let deferred = db.open_tree("deferred")?;
    let mut done = Migrated::default();
    let mut batch = Chunked::new(&log);

    for kv in db.open_tree("decisions")?.iter() {
        let (_, v) = kv?;
        let d: DecisionRecordV2 = decode("decision", &v)?;
        let key = event_key_v2(&d.campaign, &d.event_id);
        let old_event = events.get(&key)?;
        let candidate_set = match &old_event {
            Some(e) => decode::<EventRecordV2>("event", e)?.candidate_set,
            None => 0,
        };
        if old_event.is_none() {
            let event = EventRecordV2 {
                event_id: d.event_id.clone(),
                campaign: d.campaign.clone(),
                decision_seq: d.seq,
                at_ms: d.at_ms,
                deadline_ms: d.deadline_ms,
                policy: d.policy.clone(),
                holdout: d.holdout,
                slots: vec![Default::default(); d.actions.len()],
                actions: d.actions.clone(),
                closed: false,
                candidate_set: 0,
            };
            batch.insert(
                join_key(&d.campaign, &d.event_id),
                encode(&join_state(event, deferred.contains_key(&key)?)),
            )?;
            batch.insert(pending_key(d.deadline_ms, &d.campaign, &d.event_id), vec![])?;
            done.converted += 1;
        }
        let record = DecisionRecord {
            seq: d.seq,
            event_id: d.event_id,
            campaign: d.campaign,
            at_ms: d.at_ms,
            deadline_ms: d.deadline_ms,
            policy: d.policy,
            seed: d.seed,
            holdout: d.holdout,
            explore: d.explore,
            actions: d.actions,
            candidates: d.candidates,
            request: d.request,
            removed: d.removed,
            candidate_set,
            pinned: Default::default(),
            audience: Default::default(),
        };
        batch.insert(
            log_key(&record.campaign, record.seq),
            encode(&LogEntry::Decision(record.clone())),
        )?;
        done.converted += 1;
    }
    for kv in db.open_tree("rewards")?.iter() {
        let (_, v) = kv?;
        let r: RewardRecord = decode("reward", &v)?;
        let Some(e) = events.get(event_key_v2(&r.campaign, &r.event_id))? else {
            // Schema 2 rebuilt a missing join state from its decision before any reward could
            // join it, so a reward without one has no decision either: nothing can learn it.
            done.dropped += 1;
            continue;
        };
        let e: EventRecordV2 = decode("event", &e)?;
        let entry = LogEntry::Reward(RewardEntry {
            event_id: r.event_id,
            decision_seq: e.decision_seq,
            at_ms: r.at_ms,
            kind: r.kind,
            slot: r.slot,
            value: r.value,
        });
        batch.insert(log_key(&r.campaign, r.seq), encode(&entry))?;
        done.converted += 1;
    }
    for kv in events.iter() {
        let (k, v) = kv?;
        let e: EventRecordV2 = decode("event", &v)?;
        batch.insert(
            join_key(&e.campaign, &e.event_id),
            encode(&join_state(e, deferred.contains_key(&k)?)),
        )?;
        done.converted += 1;
    }
    for kv in db.open_tree("pending")?.iter() {
        let (k, _) = kv?;
        let mut key = vec![PENDING];
        key.extend_from_slice(&k);
        batch.insert(key, vec![])?;
        done.converted += 1;
    }
    batch.finish()?;
    Ok(done)
}

/// Meta key set while schema 4's removal of the decisions from `log` is unfinished.
const V4_CLEANUP_KEY: &[u8] = b"schema4_cleanup";

/// Schema 3 → 4: every campaign's decisions (the `L` entries that are not rewards) move from the
/// `log` tree to the campaign's segment files, with the same sequence numbers and bytes.
///
/// Crash safety: the segments are emptied first (a re-run starts over), filled and synced; the
/// version is bumped together with a cleanup mark, after a flush; then the decision entries are
/// removed from `log` and the mark cleared. A store at schema 4 that still has the mark finishes
/// the removal at open ([`finish_v4`]); readers skip decision entries left in `log` meanwhile.
pub(super) fn v3_to_v4(db: &sled::Db, segments: &Segments) -> Result<u64, StoreError> {
    for campaign in segments.campaigns() {
        segments.delete_campaign(&campaign)?;
    }
    let log = db.open_tree("log")?;
    let mut moved = 0u64;
    for kv in log.scan_prefix([LOG]) {
        let (k, v) = kv?;
        if !is_decision(&v) {
            continue;
        }
        let (campaign, seq) = split_log_key(&k)?;
        segments.append(campaign, seq, &v)?;
        segments.maybe_write_out(campaign)?;
        moved += 1;
    }
    segments.sync()?;
    let mut bump = sled::Batch::default();
    bump.insert(SCHEMA_KEY, &4u32.to_be_bytes());
    bump.insert(V4_CLEANUP_KEY, &[]);
    db.open_tree("meta")?.apply_batch(bump)?;
    db.flush()?;
    finish_v4(db)?;
    tracing::info!(
        decisions = moved,
        "store migrated from schema 3 to 4: decisions in each campaign's segment files"
    );
    Ok(moved)
}

/// Remove the decision entries a schema 3 → 4 migration left in `log`, if it was cut short.
pub(super) fn finish_v4(db: &sled::Db) -> Result<(), StoreError> {
    let meta = db.open_tree("meta")?;
    if meta.get(V4_CLEANUP_KEY)?.is_none() {
        return Ok(());
    }
    let log = db.open_tree("log")?;
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for kv in log.scan_prefix([LOG]) {
        let (k, v) = kv?;
        if is_decision(&v) {
            batch.remove(k);
            n += 1;
            if n == CHUNK {
                log.apply_batch(std::mem::take(&mut batch))?;
                n = 0;
            }
        }
    }
    log.apply_batch(batch)?;
    meta.remove(V4_CLEANUP_KEY)?;
    db.flush()?;
    Ok(())
}

/// Test fixture: move a schema 5 (or 4) store's decisions back into `log` (the schema 3
/// layout), writing the join states schema 5 held in memory only.
fn downgrade_to_schema3(dir: &std::path::Path, db: &sled::Db) -> Result<(), StoreError> {
    let root = segments_dir(dir);
    let segments = Segments::open(&root)?;
    let log = db.open_tree("log")?;
    for campaign in segments.campaigns() {
        for frame in segments.scan(&campaign, 0) {
            let (seq, v) = frame?;
            // Schema 5 held untouched open windows in memory only: schema 4 had them in sled.
            if let LogEntry::Decision(mut d) = decode("decision", &v)? {
                if log.get(join_key(&campaign, &d.event_id))?.is_none() {
                    d.seq = seq;
                    d.campaign = campaign.clone();
                    let e = EventRecord::of_decision(&d);
                    log.insert(join_key(&campaign, &d.event_id), encode(&e))?;
                    log.insert(pending_key(d.deadline_ms, &campaign, &d.event_id), &[])?;
                }
            }
            log.insert(log_key(&campaign, seq), v)?;
        }
    }
    drop(segments);
    match std::fs::remove_dir_all(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(StoreError::Corrupt {
                what: "log directory",
                message: e.to_string(),
            })
        }
    }
    db.open_tree("meta")?
        .insert(SCHEMA_KEY, &3u32.to_be_bytes())?;
    db.flush()?;
    Ok(())
}

/// Drop the trees schema 3 replaced, if a migration cut short left any.
pub(super) fn drop_v2_trees(db: &sled::Db) -> Result<(), StoreError> {
    let names = db.tree_names();
    for name in V2_TREES {
        if names.iter().any(|n| n.as_ref() == name.as_bytes()) {
            db.drop_tree(name)?;
        }
    }
    Ok(())
}

fn event_key_v2(campaign: &str, event_id: &str) -> Vec<u8> {
    let mut k = Vec::new();
    push_event_key(&mut k, campaign, event_id);
    k
}

/// The schema 3 join state of a schema 2 event record.
fn join_state(e: EventRecordV2, deferred: bool) -> EventRecord {
    EventRecord {
        event_id: e.event_id,
        campaign: e.campaign,
        decision_seq: e.decision_seq,
        at_ms: e.at_ms,
        deadline_ms: e.deadline_ms,
        policy: e.policy,
        holdout: e.holdout,
        actions: e
            .actions
            .into_iter()
            .map(|a| ServedAction {
                id: a.id,
                probability: a.probability,
            })
            .collect(),
        slots: e.slots,
        closed: e.closed,
        candidate_set: e.candidate_set,
        deferred,
        vectors: Vec::new(),
    }
}

/// Inserts into one tree in atomic batches of [`CHUNK`] entries.
struct Chunked<'a> {
    tree: &'a sled::Tree,
    batch: sled::Batch,
    n: usize,
}

impl<'a> Chunked<'a> {
    fn new(tree: &'a sled::Tree) -> Self {
        Self {
            tree,
            batch: sled::Batch::default(),
            n: 0,
        }
    }

    fn insert(&mut self, k: Vec<u8>, v: Vec<u8>) -> Result<(), StoreError> {
        self.batch.insert(k, v);
        self.n += 1;
        if self.n == CHUNK {
            self.tree.apply_batch(std::mem::take(&mut self.batch))?;
            self.n = 0;
        }
        Ok(())
    }

    fn finish(self) -> Result<(), StoreError> {
        self.tree.apply_batch(self.batch)?;
        Ok(())
    }
}

/// Test fixture: rewrite a schema 3 store (open in `db`) into the schema 2 layout.
fn downgrade_to_schema2(db: &sled::Db) -> Result<(), StoreError> {
    let log = db.open_tree("log")?;
    let t = |name: &str| db.open_tree(name);
    let (decisions, rewards, events, pending, deferred) = (
        t("decisions")?,
        t("rewards")?,
        t("events")?,
        t("pending")?,
        t("deferred")?,
    );
    let decision_of = |campaign: &str, seq: u64| -> Result<DecisionRecord, StoreError> {
        let v = log
            .get(log_key(campaign, seq))?
            .ok_or(StoreError::Corrupt {
                what: "decision",
                message: "missing".into(),
            })?;
        match decode::<LogEntry>("log entry", &v)? {
            LogEntry::Decision(d) => Ok(d),
            LogEntry::Reward(_) | LogEntry::Adjustment(_) => Err(StoreError::Corrupt {
                what: "decision",
                message: "not a decision".into(),
            }),
        }
    };
    for kv in log.iter() {
        let (k, v) = kv?;
        let rest = &k[1..];
        match k[0] {
            LOG => {
                let cut = rest.len() - 9;
                let campaign = String::from_utf8_lossy(&rest[..cut]).into_owned();
                let seq = u64::from_be_bytes(rest[cut + 1..].try_into().expect("8 bytes"));
                match decode::<LogEntry>("log entry", &v)? {
                    LogEntry::Decision(d) => {
                        let old = DecisionRecordV2 {
                            seq,
                            event_id: d.event_id,
                            campaign,
                            at_ms: d.at_ms,
                            deadline_ms: d.deadline_ms,
                            policy: d.policy,
                            seed: d.seed,
                            holdout: d.holdout,
                            explore: d.explore,
                            actions: d.actions,
                            candidates: d.candidates,
                            request: d.request,
                            removed: d.removed,
                        };
                        decisions.insert(seq.to_be_bytes(), encode(&old))?;
                    }
                    LogEntry::Reward(r) => {
                        let d = decision_of(&campaign, r.decision_seq)?;
                        let old = RewardRecord {
                            seq,
                            event_id: r.event_id,
                            campaign,
                            at_ms: r.at_ms,
                            kind: r.kind,
                            slot: r.slot,
                            action: d.actions[r.slot as usize].clone(),
                            value: r.value,
                            holdout: d.holdout,
                            policy: d.policy,
                        };
                        rewards.insert(seq.to_be_bytes(), encode(&old))?;
                    }
                    // Schema 2 had no adjustments (returns): the downgrade drops them.
                    LogEntry::Adjustment(_) => {}
                }
            }
            b'E' => {
                let cut = rest.iter().position(|&b| b == 0).unwrap_or(0);
                let campaign = String::from_utf8_lossy(&rest[..cut]).into_owned();
                let event_id = String::from_utf8_lossy(&rest[cut + 1..]).into_owned();
                let e: EventRecord = decode("event", &v)?;
                let d = decision_of(&campaign, e.decision_seq)?;
                let actions: Vec<LoggedAction> = d.actions;
                if e.deferred {
                    deferred.insert(rest, &[])?;
                }
                let old = EventRecordV2 {
                    event_id,
                    campaign,
                    decision_seq: e.decision_seq,
                    at_ms: e.at_ms,
                    deadline_ms: e.deadline_ms,
                    policy: e.policy,
                    holdout: e.holdout,
                    slots: if e.slots.is_empty() {
                        vec![Default::default(); actions.len()]
                    } else {
                        e.slots
                    },
                    actions,
                    closed: e.closed,
                    candidate_set: e.candidate_set,
                };
                events.insert(rest, encode(&old))?;
            }
            // Settled slots (returns) did not exist in schema 2.
            b'S' => {}
            _ => {
                pending.insert(rest, &[])?;
            }
        }
    }
    db.drop_tree("log")?;
    db.open_tree("meta")?
        .insert(SCHEMA_KEY, &2u32.to_be_bytes())?;
    db.flush()?;
    Ok(())
}

/// Rewrite every old-format key of `tree` (a `prefix_len`-byte prefix, then an event id) as
/// prefix ++ campaign ++ 0 ++ event id, with the value `convert` gives; `None` drops the entry.
///
/// One pass: sled's iterator moves on from the last key it returned, so batches applied under it
/// are fine; a new key inserted ahead of it is visited once and skipped (not old).
fn rekey(
    tree: &sled::Tree,
    prefix_len: usize,
    done: &mut Migrated,
    mut convert: impl FnMut(&[u8], &[u8]) -> Result<Option<(String, Vec<u8>)>, StoreError>,
) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for kv in tree.iter() {
        let (k, v) = kv?;
        if !is_old(&k, prefix_len) {
            continue;
        }
        let id = std::str::from_utf8(&k[prefix_len..]).map_err(|_| StoreError::Corrupt {
            what: "event id",
            message: "not UTF-8".into(),
        })?;
        match convert(id.as_bytes(), &v)? {
            Some((campaign, value)) => {
                let mut key = k[..prefix_len].to_vec();
                push_event_key(&mut key, &campaign, id);
                batch.insert(key, value);
                done.converted += 1;
            }
            None => done.dropped += 1,
        }
        batch.remove(k.as_ref());
        n += 1;
        if n == CHUNK {
            tree.apply_batch(std::mem::take(&mut batch))?;
            n = 0;
        }
    }
    if n > 0 {
        tree.apply_batch(batch)?;
    }
    Ok(())
}

/// Test fixture: rewrite a schema 3 store in `dir` into the schema 1 layout, as a store written
/// by a build before event ids were per campaign (Personalizer multi-slot slots back to
/// `{eventId}/{slotId}`). Fails when two campaigns share an event id, which schema 1 could not
/// hold. Not used by the server; the end-to-end migration test starts from it.
#[doc(hidden)]
pub fn downgrade_to_schema1(dir: &std::path::Path) -> Result<(), StoreError> {
    let db = crate::store::sled_store::open_waiting_for_lock(
        &crate::store::sled_store::sled_config(dir, false),
    )?;
    downgrade_to_schema3(dir, &db)?;
    downgrade_to_schema2(&db)?;
    let old_id = |id: &str| id.replace(crate::engine::SLOT_SEPARATOR, "/");
    let split = |k: &[u8], prefix_len: usize| -> (Vec<u8>, String) {
        let rest = &k[prefix_len..];
        let cut = rest.iter().position(|&b| b == 0).unwrap_or(0);
        (
            k[..prefix_len].to_vec(),
            String::from_utf8_lossy(&rest[cut + 1..]).into_owned(),
        )
    };
    for (name, prefix_len) in EVENT_TREES.into_iter().chain([("events", 0)]) {
        let tree = db.open_tree(name)?;
        let mut seen = HashSet::new();
        for kv in tree.iter() {
            let (k, v) = kv?;
            let (mut key, id) = split(&k, prefix_len);
            key.extend_from_slice(old_id(&id).as_bytes());
            if !seen.insert(key.clone()) {
                return Err(StoreError::Corrupt {
                    what: "event id",
                    message: format!("{id:?} is in two campaigns; schema 1 cannot hold it"),
                });
            }
            let value = if name == "events" {
                let e: EventRecordV2 = decode("event", &v)?;
                encode(&EventRecordV1 {
                    event_id: old_id(&e.event_id),
                    campaign: e.campaign,
                    decision_seq: e.decision_seq,
                    at_ms: e.at_ms,
                    deadline_ms: e.deadline_ms,
                    policy: e.policy,
                    holdout: e.holdout,
                    actions: e.actions,
                    slots: e.slots,
                    closed: e.closed,
                })
            } else {
                v.to_vec()
            };
            tree.remove(&k)?;
            tree.insert(key, value)?;
        }
    }
    for (name, what) in [("decisions", "decision"), ("rewards", "reward")] {
        let tree = db.open_tree(name)?;
        for kv in tree.iter() {
            let (k, v) = kv?;
            let value = if name == "decisions" {
                let mut d: DecisionRecordV2 = decode(what, &v)?;
                d.event_id = old_id(&d.event_id);
                encode(&d)
            } else {
                let mut r: super::RewardRecord = decode(what, &v)?;
                r.event_id = old_id(&r.event_id);
                encode(&r)
            };
            tree.insert(k, value)?;
        }
    }
    let meta = db.open_tree("meta")?;
    meta.insert(SCHEMA_KEY, &1u32.to_be_bytes())?;
    meta.remove(LEGACY_SEQ_KEY)?;
    db.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LogRecord, LogStore, SendEventRecord, ShopperStore, SledStore, SlotState};

    fn v1_event(id: &str, campaign: &str, seq: u64, deadline: u64) -> EventRecordV1 {
        EventRecordV1 {
            event_id: id.into(),
            campaign: campaign.into(),
            decision_seq: seq,
            at_ms: 1,
            deadline_ms: deadline,
            policy: "thompson".into(),
            holdout: false,
            actions: vec![LoggedAction {
                id: "a".into(),
                probability: 0.5,
                x: tailor_policies::SparseVec::from_pairs(vec![(3, 1.0)]),
            }],
            slots: vec![SlotState::default()],
            closed: false,
        }
    }

    fn decision(seq: u64, id: &str, campaign: &str) -> DecisionRecordV2 {
        DecisionRecordV2 {
            seq,
            event_id: id.into(),
            campaign: campaign.into(),
            at_ms: 1,
            deadline_ms: 1_000 * seq,
            policy: "thompson".into(),
            seed: 7,
            holdout: false,
            explore: true,
            actions: v1_event(id, campaign, seq, 0).actions,
            candidates: 1,
            request: vec![],
            removed: vec![],
        }
    }

    /// A schema 1 store written byte by byte, the way the schema 1 code laid it out: events,
    /// pending, deferred and send events keyed by the bare event id. `e3`'s event record is
    /// missing (a crash after its decision was logged); `ghost` was deferred and never decided;
    /// `e2` got a reward.
    fn write_schema1(dir: &std::path::Path) {
        let db = crate::store::sled_store::open_waiting_for_lock(
            &crate::store::sled_store::sled_config(dir, false),
        )
        .unwrap();
        let t = |name: &str| db.open_tree(name).unwrap();
        t("meta").insert(SCHEMA_KEY, &1u32.to_be_bytes()).unwrap();
        for (seq, id, c) in [(1u64, "a+b/c%d==", "c1"), (2, "e2", "c2"), (3, "e3", "c2")] {
            t("decisions")
                .insert(seq.to_be_bytes(), encode(&decision(seq, id, c)))
                .unwrap();
            let mut pending = (1_000 * seq).to_be_bytes().to_vec();
            pending.extend_from_slice(id.as_bytes());
            t("pending").insert(pending, &[]).unwrap();
            if id != "e3" {
                t("events")
                    .insert(id.as_bytes(), encode(&v1_event(id, c, seq, 1_000 * seq)))
                    .unwrap();
            }
        }
        let reward = RewardRecord {
            seq: 4,
            event_id: "e2".into(),
            campaign: "c2".into(),
            at_ms: 5,
            kind: crate::store::RewardKind::Explicit,
            slot: 0,
            action: decision(2, "e2", "c2").actions[0].clone(),
            value: 0.75,
            holdout: false,
            policy: "thompson".into(),
        };
        t("rewards")
            .insert(4u64.to_be_bytes(), encode(&reward))
            .unwrap();
        t("deferred").insert("e2", &[]).unwrap();
        t("deferred").insert("e3", &[]).unwrap();
        t("deferred").insert("ghost", &[]).unwrap();
        let send = SendEventRecord {
            token: 5,
            segment: None,
            slot: 1,
            send_at_ms: 2,
            timezone: "UTC".into(),
        };
        t("send_events").insert("e2", encode(&send)).unwrap();
        db.flush().unwrap();
    }

    /// Every tree but `meta`, as (tree, key, value) rows.
    fn dump(dir: &std::path::Path) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let db = crate::store::sled_store::open_waiting_for_lock(
            &crate::store::sled_store::sled_config(dir, false),
        )
        .unwrap();
        let mut rows = Vec::new();
        for name in db.tree_names() {
            if name.as_ref() == b"meta" {
                continue;
            }
            for kv in db.open_tree(&name).unwrap().iter() {
                let (k, v) = kv.unwrap();
                rows.push((name.to_vec(), k.to_vec(), v.to_vec()));
            }
        }
        rows
    }

    fn deferred(s: &SledStore, campaign: &str, id: &str) -> bool {
        s.event(campaign, id).unwrap().is_some_and(|e| e.deferred)
    }

    fn check_migrated(s: &SledStore) {
        let e = s
            .event("c1", "a+b/c%d==")
            .unwrap()
            .expect("event moved under c1");
        assert_eq!(
            (e.campaign.as_str(), e.decision_seq, e.candidate_set),
            ("c1", 1, 0)
        );
        assert!(s.event("c2", "a+b/c%d==").unwrap().is_none());
        assert!(s.event("c2", "e2").unwrap().is_some());
        // The orphan's join state was rebuilt from its decision.
        assert_eq!(s.event("c2", "e3").unwrap().unwrap().decision_seq, 3);
        assert_eq!(
            s.due_events(10_000, 10).unwrap(),
            vec![
                ("c1".to_string(), "a+b/c%d==".to_string()),
                ("c2".into(), "e2".into()),
                ("c2".into(), "e3".into()),
            ]
        );
        assert!(deferred(s, "c2", "e2"));
        assert!(deferred(s, "c2", "e3"));
        assert!(!deferred(s, "c1", "ghost"));
        assert_eq!(s.send_event("c2", "e2").unwrap().unwrap().token, 5);
        assert_eq!(s.legacy_decision_seq(), 3);
        // Each campaign's log holds its own entries, same sequence numbers; the reward is
        // joined back to its decision's action and vector.
        let c2: Vec<LogRecord> = s.log_after("c2", 0).collect::<Result<_, _>>().unwrap();
        assert_eq!(c2.len(), 3);
        match &c2[2] {
            LogRecord::Reward(r) => {
                assert_eq!((r.seq, r.value, r.event_id.as_str()), (4, 0.75, "e2"));
                assert_eq!(r.action, decision(2, "e2", "c2").actions[0]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.decisions("c1", 0).count(), 1);
        assert_eq!(s.last_seq("c2").unwrap(), 4);
        let db = s.db();
        let meta = db.open_tree("meta").unwrap();
        assert_eq!(
            meta.get(SCHEMA_KEY).unwrap().unwrap().as_ref(),
            &crate::store::sled_store::SCHEMA_VERSION.to_be_bytes()
        );
        assert!(meta.get(V4_CLEANUP_KEY).unwrap().is_none());
        // Decisions live in the segment files now; `log` keeps only rewards among `L` entries.
        let log = db.open_tree("log").unwrap();
        assert!(!log.scan_prefix([LOG]).any(|kv| is_decision(&kv.unwrap().1)));
        assert!(s.decisions("c2", 0).count() > 0);
        let names = db.tree_names();
        for old in V2_TREES {
            assert!(
                !names.iter().any(|n| n.as_ref() == old.as_bytes()),
                "tree {old} left"
            );
        }
    }

    #[test]
    fn a_schema1_store_is_rewritten_at_open() {
        let dir = tempfile::tempdir().unwrap();
        write_schema1(dir.path());
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        check_migrated(&s);
        drop(s);
        // Opening again does nothing more.
        let before = dump(dir.path());
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        check_migrated(&s);
        drop(s);
        assert_eq!(dump(dir.path()), before);
    }

    #[test]
    fn a_migration_cut_short_by_a_crash_finishes_on_the_next_open() {
        // Crash after `pending` and half of `events` were converted, schema still 1.
        let dir = tempfile::tempdir().unwrap();
        write_schema1(dir.path());
        {
            let db = crate::store::sled_store::open_waiting_for_lock(
                &crate::store::sled_store::sled_config(dir.path(), false),
            )
            .unwrap();
            let events = db.open_tree("events").unwrap();
            let mut done = Migrated::default();
            rekey(&db.open_tree("pending").unwrap(), 8, &mut done, |id, v| {
                let e: EventRecordV1 = match events.get(id)? {
                    Some(e) => decode("event", &e)?,
                    None => return Ok(Some(("c2".into(), v.to_vec()))),
                };
                Ok(Some((e.campaign, v.to_vec())))
            })
            .unwrap();
            let first = events.iter().next().unwrap().unwrap();
            let e: EventRecordV2 = decode::<EventRecordV1>("event", &first.1).unwrap().into();
            let mut key = Vec::new();
            push_event_key(&mut key, &e.campaign, &e.event_id);
            events.insert(key, encode(&e)).unwrap();
            events.remove(first.0).unwrap();
            db.flush().unwrap();
        }
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        check_migrated(&s);
        drop(s);

        // Crash after schema 2 was reached and the log copied, before the version bump to 3:
        // the re-run ends where a clean run ends.
        let clean = tempfile::tempdir().unwrap();
        write_schema1(clean.path());
        drop(SledStore::open(clean.path(), 1 << 20, 100).unwrap());
        let converted = dump(clean.path());
        let cut = tempfile::tempdir().unwrap();
        write_schema1(cut.path());
        {
            let db = crate::store::sled_store::open_waiting_for_lock(
                &crate::store::sled_store::sled_config(cut.path(), false),
            )
            .unwrap();
            v1_to_v2(&db).unwrap();
            copy_v2_into_log(&db).unwrap();
            db.flush().unwrap();
        }
        let s = SledStore::open(cut.path(), 1 << 20, 100).unwrap();
        check_migrated(&s);
        drop(s);
        assert_eq!(dump(cut.path()), converted);
    }

    #[test]
    fn the_fixture_writes_what_the_migration_reads() {
        let dir = tempfile::tempdir().unwrap();
        let logged = |seq: u64, id: &str, candidate_set: u64| {
            let d = decision(seq, id, "c1");
            let record = DecisionRecord {
                seq,
                event_id: d.event_id,
                campaign: d.campaign,
                at_ms: d.at_ms,
                deadline_ms: d.deadline_ms,
                policy: d.policy,
                seed: d.seed,
                holdout: d.holdout,
                explore: d.explore,
                actions: d.actions,
                candidates: d.candidates,
                request: d.request,
                removed: d.removed,
                candidate_set,
                pinned: Default::default(),
                audience: Default::default(),
            };
            let event = EventRecord {
                event_id: record.event_id.clone(),
                campaign: record.campaign.clone(),
                decision_seq: seq,
                at_ms: record.at_ms,
                deadline_ms: record.deadline_ms,
                policy: record.policy.clone(),
                holdout: false,
                actions: vec![ServedAction {
                    id: "a".into(),
                    probability: 0.5,
                }],
                slots: vec![SlotState::default()],
                closed: false,
                candidate_set,
                deferred: id != "x",
                vectors: Vec::new(),
            };
            (record, event)
        };
        {
            let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
            let (d, e) = logged(1, "x", 9);
            s.log_decision(&d, &e).unwrap();
            let slot = crate::engine::slot_event_id("p", "main");
            let (d, e) = logged(2, &slot, 0);
            s.log_decision(&d, &e).unwrap();
        }
        downgrade_to_schema1(dir.path()).unwrap();
        {
            let db = crate::store::sled_store::open_waiting_for_lock(
                &crate::store::sled_store::sled_config(dir.path(), false),
            )
            .unwrap();
            assert!(db
                .open_tree("events")
                .unwrap()
                .contains_key("p/main")
                .unwrap());
            assert!(db
                .open_tree("deferred")
                .unwrap()
                .contains_key("p/main")
                .unwrap());
        }
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        let x = s.event("c1", "x").unwrap().unwrap();
        assert_eq!((x.deadline_ms, x.candidate_set), (1_000, 0));
        assert!(s.event("c1", "p/main").unwrap().is_some());
        assert!(deferred(&s, "c1", "p/main"));
        assert!(!deferred(&s, "c1", "x"));
        assert_eq!(s.legacy_decision_seq(), 2);
    }
}
