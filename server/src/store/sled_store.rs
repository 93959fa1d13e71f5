//! The sled implementation of the store traits.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::closes::Closes;
use super::journal::{LogBatch, LogTree};
use super::migrate;
use super::open_windows::OpenWindows;
use super::records::{decode, encode, ClosedMarker, RECORD_VERSION};
use super::segments::Segments;
use super::{
    AdjustmentEntry, AdjustmentRecord, CampaignSnapshot, ConfigStore, DecisionRecord, EventRecord,
    FlushFuture, LogEntry, LogRecord, LogStore, LoggedAction, RewardEntry, RewardRecord,
    SendEventRecord, SettledSlot, ShopperRecord, ShopperStore, StoreError,
};

/// Schema of the trees and keys below; bump on an incompatible change. Version 2 keyed
/// everything about an event by campaign ++ 0 ++ event id (version 1 by event id alone);
/// version 3 moved the global `decisions` and `rewards` logs, `events`, `pending` and
/// `deferred` into the campaign-partitioned tree `log` (see the module docs of `store`).
/// Version 4 moved the decisions out of sled into each campaign's segment files
/// (`segments.rs`); rewards, join states and open windows stay in `log`. Version 5 keeps the
/// join states of untouched open windows in memory only (`open_windows.rs`), rebuilt from the
/// segments past each campaign's mark (`open/` ++ campaign in `meta`). Version 6 writes the
/// `log` tree through a journal (`journal.rs`, `<dir>/journal`) replayed at open. Version 7
/// prunes a closed window's join state to a compact marker ([`ClosedMarker`]: seq and settled
/// values), keeps a settled-slot entry only for a slot a return adjusted, and writes rewards
/// without the event id their decision's frame holds. Version 8 moves those markers out of
/// sled into per-campaign close files (`closes.rs`, `<dir>/closes`) as the journal drains.
/// [`migrate`] converts older stores at open.
pub const SCHEMA_VERSION: u32 = 8;
pub(super) const SCHEMA_KEY: &[u8] = b"schema_version";
/// Meta key: the highest decision seq logged before the store moved to schema 2 (absent when the
/// store was created at 2 or later). See [`LogStore::legacy_decision_seq`].
pub(super) const LEGACY_SEQ_KEY: &[u8] = b"schema1_last_decision_seq";

/// Meta key of a campaign's open-window mark: `open/` ++ campaign -> big-endian seq.
fn mark_key(campaign: &str) -> Vec<u8> {
    let mut k = b"open/".to_vec();
    k.extend_from_slice(campaign.as_bytes());
    k
}

/// Meta key of the key of the close files' event-id hash (16 bytes, drawn at creation).
const CLOSES_KEY: &[u8] = b"closes_hash_key";

/// The key of the close files' event-id hash: drawn once, kept for the store's life.
fn closes_key(meta: &sled::Tree) -> Result<(u64, u64), StoreError> {
    let bytes: [u8; 16] = match meta.get(CLOSES_KEY)? {
        Some(v) => v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            what: "close files key",
            message: "not 16 bytes".into(),
        })?,
        None => {
            let drawn: [u8; 16] = rand::random();
            meta.insert(CLOSES_KEY, &drawn)?;
            meta.flush()?;
            drawn
        }
    };
    let (a, b) = bytes.split_at(8);
    let half = |h: &[u8]| u64::from_le_bytes(h.try_into().expect("8 bytes"));
    Ok((half(a), half(b)))
}

/// Key families of the `log` tree.
pub(super) const LOG: u8 = b'L';
pub(super) const EVENT: u8 = b'E';
pub(super) const PENDING: u8 = b'P';
/// Settled slots: what adjustments (returns) correct ([`SettledSlot`]).
pub(super) const SETTLED: u8 = b'S';

/// postcard's tag of [`LogEntry::Reward`], the byte after the version byte: lets readers skip
/// entries of the other kind without decoding them.
const REWARD_TAG: u8 = 1;
/// postcard's tag of [`LogEntry::Adjustment`].
const ADJUSTMENT_TAG: u8 = 2;

/// Embedded store in one directory.
#[derive(Clone)]
pub struct SledStore {
    /// Declared first so it is dropped first: the syncer stops before the trees close.
    syncer: Arc<SyncerGuard>,
    db: sled::Db,
    campaigns: sled::Tree,
    policy_state: sled::Tree,
    /// Rewards, join states, open windows, settled slots: written only through its journal.
    log: Arc<LogTree>,
    /// Closed windows' markers, which the journal's drain moves out of `log`.
    closes: Arc<Closes>,
    api_keys: sled::Tree,
    audit: sled::Tree,
    shoppers: sled::Tree,
    shopper_tokens: sled::Tree,
    send_events: sled::Tree,
    /// The campaigns' decision logs (`<dir>/logs`).
    segments: Arc<Segments>,
    /// Join states of open windows nothing has changed yet (not in sled), and their marks.
    marks: Arc<Marks>,
    /// A send-time decision wrote a shopper state or send event (sled trees outside the log
    /// journal) that the next log commit must flush: its rewards' learning reads them back.
    send_time_unflushed: Arc<AtomicBool>,
    legacy_decision_seq: u64,
}

/// The open windows held in memory, and what persisting their marks needs.
struct Marks {
    open: OpenWindows,
    meta: sled::Tree,
    /// The marks last persisted.
    written: parking_lot::Mutex<std::collections::HashMap<String, u64>>,
}

impl Marks {
    /// Persist each campaign's mark once every log write so far is durable (the journal
    /// synced), so a persisted mark never passes a join state whose write could still be lost.
    fn persist(&self, log: &LogTree) -> Result<(), StoreError> {
        let marks = self.open.marks();
        let changed: Vec<_> = {
            let written = self.written.lock();
            marks
                .into_iter()
                .filter(|(c, m)| written.get(c) != Some(m))
                .collect()
        };
        if changed.is_empty() {
            return Ok(());
        }
        log.sync()?;
        let mut batch = sled::Batch::default();
        for (c, m) in &changed {
            batch.insert(mark_key(c), &m.to_be_bytes());
        }
        self.meta.apply_batch(batch)?;
        self.written.lock().extend(changed);
        Ok(())
    }
}

/// Directory of the decision segment files inside a store directory.
pub(super) fn segments_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("logs")
}

/// Write out and fsync the decision logs every `every`, until the store is dropped: the bound
/// on how long an answered decision stays only in memory. Then persist the open-window marks
/// and checkpoint the log journal.
/// Dropping the returned guard (with the last clone of the store) stops the thread and waits
/// for it, so the sled directory's lock is released when the store is gone.
fn start_log_syncer(
    segments: Weak<Segments>,
    marks: Weak<Marks>,
    log: Weak<LogTree>,
    every: Duration,
) -> SyncerGuard {
    let stop = Arc::new((parking_lot::Mutex::new(false), parking_lot::Condvar::new()));
    let signal = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("tailor-log-sync".into())
        .spawn(move || loop {
            {
                let (stopped, wake) = &*signal;
                let mut stopped = stopped.lock();
                if !*stopped {
                    wake.wait_for(&mut stopped, every);
                }
                if *stopped {
                    return;
                }
            }
            let (Some(segments), Some(marks)) = (segments.upgrade(), marks.upgrade()) else {
                return;
            };
            if let Err(e) = segments.sync() {
                tracing::error!(error = %e, "decision log sync failed");
                continue;
            }
            drop(segments);
            let Some(log) = log.upgrade() else {
                return;
            };
            if let Err(e) = marks.persist(&log) {
                tracing::error!(error = %e, "open-window marks not persisted");
            }
            if let Err(e) = log.checkpoint() {
                tracing::error!(error = %e, "log writes not drained into sled");
            }
        });
    let thread = match spawned {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "could not start the decision log syncer; decisions are made durable by reward flushes only");
            None
        }
    };
    SyncerGuard { stop, thread }
}

/// Stops the log syncer thread when dropped, and waits for it.
struct SyncerGuard {
    stop: Arc<(parking_lot::Mutex<bool>, parking_lot::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SyncerGuard {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock() = true;
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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

/// campaign ++ 0 ++ event id: the key of a send event, and the tail of the `E` and `P` keys.
/// Campaign ids are `[A-Za-z0-9._-]` and event ids carry no control characters, so the first 0
/// splits the key and two (campaign, event) pairs never share one.
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

/// `E` ++ campaign ++ 0 ++ event id.
pub(super) fn join_key(campaign: &str, event_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + event_id.len() + 2);
    k.push(EVENT);
    push_event_key(&mut k, campaign, event_id);
    k
}

/// `P` ++ deadline ++ campaign ++ 0 ++ event id.
pub(super) fn pending_key(deadline_ms: u64, campaign: &str, event_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + event_id.len() + 10);
    k.push(PENDING);
    k.extend_from_slice(&deadline_ms.to_be_bytes());
    push_event_key(&mut k, campaign, event_id);
    k
}

/// `L` ++ campaign ++ 0: the prefix of a campaign's log.
pub(super) fn log_prefix(campaign: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + 10);
    k.push(LOG);
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    k
}

/// `L` ++ campaign ++ 0 ++ seq.
pub(super) fn log_key(campaign: &str, seq: u64) -> Vec<u8> {
    let mut k = log_prefix(campaign);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The key range of `campaign`'s log: its prefix, and the prefix with its 0 raised to 1 (just
/// past every key of the campaign).
fn log_bounds(campaign: &str) -> (Vec<u8>, Vec<u8>) {
    let start = log_prefix(campaign);
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last = 1;
    }
    (start, end)
}

/// (campaign, seq) of a [`log_key`].
pub(super) fn split_log_key(k: &[u8]) -> Result<(&str, u64), StoreError> {
    let corrupt = || StoreError::Corrupt {
        what: "log key",
        message: format!("{} bytes", k.len()),
    };
    let rest = k.get(1..).ok_or_else(corrupt)?;
    let cut = rest.len().checked_sub(9).ok_or_else(corrupt)?;
    let campaign = std::str::from_utf8(&rest[..cut]).map_err(|_| corrupt())?;
    let seq = u64::from_be_bytes(rest[cut + 1..].try_into().map_err(|_| corrupt())?);
    Ok((campaign, seq))
}

/// A decision entry (postcard tag 0) in the `log` tree: only a schema 3 → 4 migration leaves one.
pub(super) fn is_decision(value: &[u8]) -> bool {
    value.first() == Some(&RECORD_VERSION) && value.get(1) == Some(&0)
}

pub(super) fn is_reward(value: &[u8]) -> bool {
    value.first() == Some(&RECORD_VERSION) && value.get(1) == Some(&REWARD_TAG)
}

fn is_adjustment(value: &[u8]) -> bool {
    value.first() == Some(&RECORD_VERSION) && value.get(1) == Some(&ADJUSTMENT_TAG)
}

/// `S` ++ campaign ++ 0 ++ event id ++ 0: the prefix of an event's settled slots.
fn settled_prefix(campaign: &str, event_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + event_id.len() + 7);
    k.push(SETTLED);
    push_event_key(&mut k, campaign, event_id);
    k.push(0);
    k
}

/// Settled slots by slot number.
type SlotStates = Vec<(u32, SettledSlot)>;

/// The slots of an open join state whose reward was applied, as returns see them.
fn applied_slots(e: &EventRecord) -> impl Iterator<Item = (u32, SettledSlot)> + '_ {
    (0u32..)
        .zip(e.slots.iter().zip(&e.actions))
        .filter(|(_, (s, _))| s.applied)
        .map(|(slot, (s, a))| {
            let settled = SettledSlot {
                action: a.id.clone(),
                value: s.value,
                adjustments: Vec::new(),
            };
            (slot, settled)
        })
}

/// The slot of a settled-slot key under `prefix`.
fn settled_slot_of(prefix: &[u8], k: &[u8]) -> Result<u32, StoreError> {
    k.get(prefix.len()..)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt {
            what: "settled key",
            message: format!("{} bytes", k.len()),
        })
}

/// `S` ++ campaign ++ 0 ++ event id ++ 0 ++ slot.
fn settled_key(campaign: &str, event_id: &str, slot: u32) -> Vec<u8> {
    let mut k = settled_prefix(campaign, event_id);
    k.extend_from_slice(&slot.to_be_bytes());
    k
}

fn decode_event(campaign: &str, event_id: &str, v: &[u8]) -> Result<EventRecord, StoreError> {
    let mut e: EventRecord = decode("event", v)?;
    e.campaign = campaign.to_string();
    e.event_id = event_id.to_string();
    Ok(e)
}

/// The pruned join state a [`ClosedMarker`] stands for, completed from its decision's frame.
/// Without the frame (deleting a log rewrites its markers in full first, so only a damaged
/// store gets here) the time fields are 0 and the candidate set unknown.
fn marker_event(
    campaign: &str,
    event_id: &str,
    decision_seq: u64,
    d: Option<&DecisionRecord>,
) -> EventRecord {
    EventRecord {
        event_id: event_id.to_string(),
        campaign: campaign.to_string(),
        decision_seq,
        at_ms: d.map_or(0, |d| d.at_ms),
        deadline_ms: d.map_or(0, |d| d.deadline_ms),
        policy: d.map(|d| d.policy.clone()).unwrap_or_default(),
        holdout: d.is_some_and(|d| d.holdout),
        actions: Vec::new(),
        slots: Vec::new(),
        closed: true,
        candidate_set: d.map_or(0, |d| d.candidate_set),
        deferred: false,
        vectors: Vec::new(),
    }
}

/// The settled slots a compact marker implies, with the served ids from its decision's frame.
fn marker_slots(marker: ClosedMarker, d: DecisionRecord) -> SlotStates {
    (0u32..)
        .zip(d.actions)
        .zip(marker.settled)
        .filter_map(|((slot, a), value)| {
            let s = SettledSlot {
                action: a.id,
                value: value?,
                adjustments: Vec::new(),
            };
            Some((slot, s))
        })
        .collect()
}

/// What the retention and deferral scans need of a stored join state — its decision's seq,
/// `closed`, `deferred` — without reading a marker's frame.
fn peek_join_state(
    campaign: &str,
    event_id: &str,
    v: &[u8],
) -> Result<(u64, bool, bool), StoreError> {
    match ClosedMarker::decode(v) {
        Some(m) => Ok((m?.decision_seq, true, false)),
        None => {
            let e = decode_event(campaign, event_id, v)?;
            Ok((e.decision_seq, e.closed, e.deferred))
        }
    }
}

fn encode_decision(d: &DecisionRecord) -> Vec<u8> {
    // `LogEntry::Decision(d)` without cloning `d`: the variant tag, then the record.
    let mut out = vec![RECORD_VERSION, 0];
    out.extend(postcard::to_stdvec(d).expect("postcard encoding of a record"));
    out
}

/// How long an open waits for the directory's lock to be released.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Open `config`'s database, waiting up to [`LOCK_WAIT`] while its file lock is held: the
/// background threads of a database just dropped in this process (sled's flusher and I/O
/// pool) can hold it a moment longer. Another process holding it is still refused, after the
/// wait.
pub(super) fn open_waiting_for_lock(config: &sled::Config) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

/// sled's log segment size for a new store (an existing one keeps its own: sled refuses a
/// change across restarts). Measured on the 1,000,000-decision soak of docs/benchmarks.md,
/// sled's file took 307 MB with 64 KiB segments, 235 MB with sled's default 512 KiB, 55–59 MB
/// with 2 MiB, 67–71 MB with 4 MiB, 84 MB with 8 MiB and 117 MB with 16 MiB
/// (docs/event-log.md).
const SEGMENT_SIZE: usize = 2 << 20;

/// zstd level of a compressed store's pages (what costs is not the level but sled creating a
/// compressor for every page it writes, ~10 µs).
const COMPRESSION_LEVEL: i32 = 1;

/// sled's settings for the store in `dir`: its pages compressed when the store was created
/// so (`compress_new` for a store not created yet). sled refuses to change that across
/// restarts, so it is read back from the `conf` file sled writes beside its data.
pub fn sled_config(dir: &Path, compress_new: bool) -> sled::Config {
    // sled's persisted parameters: text lines, then a checksum.
    let conf = std::fs::read(dir.join("conf")).ok();
    let persisted = |name: &str| {
        let prefix = format!("{name}: ");
        conf.as_ref()?
            .split(|b| *b == b'\n')
            .find_map(|line| line.strip_prefix(prefix.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let compressed = match &conf {
        Some(_) => persisted("use_compression").as_deref() == Some("true"),
        None => compress_new,
    };
    let segment_size = persisted("segment_size")
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEGMENT_SIZE);
    sled::Config::new()
        .path(dir)
        .use_compression(compressed)
        .compression_factor(COMPRESSION_LEVEL)
        .segment_size(segment_size)
}

/// How [`SledStore::open_with`] opens a data directory.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// sled's page cache, in bytes as sled counts them.
    pub cache_capacity: u64,
    /// How often the log syncer flushes sled and the segment files.
    pub flush_every_ms: u64,
    /// A new data directory gets zstd-compressed sled pages (an existing one keeps how it was
    /// created).
    pub compress_pages: bool,
    /// Hold the reward windows that were open at the last stop in memory again (a server
    /// does). The offline readers (`tailor export`) do not: they read the logs, not the join
    /// state, and would spend memory on every open window.
    pub hold_open_windows: bool,
}

impl OpenOptions {
    /// What a server opens its store with.
    pub fn serving(cache_capacity: u64, flush_every_ms: u64) -> Self {
        Self {
            cache_capacity,
            flush_every_ms,
            compress_pages: false,
            hold_open_windows: true,
        }
    }
}

impl SledStore {
    /// Open (or create) the store in `dir`, converting an older schema first.
    pub fn open(dir: &Path, cache_capacity: u64, flush_every_ms: u64) -> Result<Self, StoreError> {
        Self::open_with(dir, OpenOptions::serving(cache_capacity, flush_every_ms))
    }

    /// [`SledStore::open`] with every option.
    pub fn open_with(dir: &Path, options: OpenOptions) -> Result<Self, StoreError> {
        let OpenOptions {
            cache_capacity,
            flush_every_ms,
            compress_pages,
            hold_open_windows,
        } = options;
        let config = sled_config(dir, compress_pages);
        if config.use_compression != compress_pages {
            tracing::warn!(
                compressed = config.use_compression,
                "storage.compress_pages applies to new data directories; this one keeps how it was created"
            );
        }
        let config = config
            .cache_capacity(cache_capacity)
            .flush_every_ms(Some(flush_every_ms));
        let db = open_waiting_for_lock(&config)?;
        let meta = db.open_tree("meta")?;
        let segments = Arc::new(Segments::open(&segments_dir(dir))?);
        let mut legacy_decision_seq = 0;
        match meta.get(SCHEMA_KEY)? {
            Some(v) => {
                let mut found =
                    u32::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                        what: "schema version",
                        message: "not 4 bytes".into(),
                    })?);
                if found == 1 {
                    migrate::v1_to_v2(&db)?;
                    found = 2;
                }
                if found == 2 {
                    migrate::v2_to_v3(&db)?;
                    found = 3;
                } else if found == 3 {
                    migrate::drop_v2_trees(&db)?;
                }
                if found == 3 {
                    migrate::v3_to_v4(&db, &segments)?;
                    found = 4;
                } else if (4..=SCHEMA_VERSION).contains(&found) {
                    migrate::finish_v4(&db)?;
                }
                if (4..SCHEMA_VERSION).contains(&found) {
                    // 4 -> 5 changes no data: the first open-window rebuild (no marks yet)
                    // reads every frame and finds every join state in sled. 5 -> 6 neither:
                    // the journal starts empty (the version keeps a schema 5 binary from
                    // opening a store whose journal it would ignore). 6 -> 7 neither: full
                    // markers and settled slots still read; the version keeps a schema 6
                    // binary from meeting compact markers it cannot decode. 7 -> 8 neither:
                    // the markers already in sled still read there (retention takes them);
                    // the version keeps a schema 7 binary from missing the closed windows
                    // in the close files (it would hold them open and close them again).
                    meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
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
        let closes = Arc::new(Closes::open(&dir.join("closes"), closes_key(&meta)?)?);
        let marks = Arc::new(Marks {
            open: OpenWindows::new(super::open_windows::DEFAULT_LIMIT),
            meta,
            written: Default::default(),
        });
        let mut store = Self {
            syncer: Arc::new(SyncerGuard {
                stop: Default::default(),
                thread: None,
            }),
            campaigns: db.open_tree("campaigns")?,
            policy_state: db.open_tree("policy_state")?,
            log: Arc::new(LogTree::open(
                &db,
                db.open_tree("log")?,
                &dir.join("journal"),
                closes.clone(),
            )?),
            closes,
            api_keys: db.open_tree("api_keys")?,
            audit: db.open_tree("audit")?,
            shoppers: db.open_tree("shoppers")?,
            shopper_tokens: db.open_tree("shopper_tokens")?,
            send_events: db.open_tree("send_events")?,
            segments,
            marks,
            send_time_unflushed: Arc::new(AtomicBool::new(false)),
            legacy_decision_seq,
            db,
        };
        if hold_open_windows {
            store.closes.load_all()?;
            store.rebuild_open_windows()?;
        }
        store.syncer = Arc::new(start_log_syncer(
            Arc::downgrade(&store.segments),
            Arc::downgrade(&store.marks),
            Arc::downgrade(&store.log),
            Duration::from_millis(flush_every_ms.max(1)),
        ));
        Ok(store)
    }

    /// Remove `campaign`'s sled log entries (rewards, returns, legacy decisions) up to `up_to`,
    /// in batches. Returns how many rewards and returns went.
    fn delete_entries_up_to(&self, campaign: &str, up_to: u64) -> Result<u64, StoreError> {
        let mut rewards = 0;
        let mut batch = LogBatch::default();
        let mut n = 0;
        for kv in self
            .log
            .range(log_key(campaign, 0)..=log_key(campaign, up_to))
        {
            let (k, v) = kv?;
            if is_reward(&v) || is_adjustment(&v) {
                rewards += 1;
            }
            batch.remove(k);
            n += 1;
            if n == 4096 {
                self.log.apply(std::mem::take(&mut batch))?;
                n = 0;
            }
        }
        self.log.apply(batch)?;
        Ok(rewards)
    }

    /// Hold again the open windows that were only in memory: every decision frame from its
    /// campaign's mark on whose join state is not in sled.
    fn rebuild_open_windows(&self) -> Result<(), StoreError> {
        let mut held = 0usize;
        for campaign in self.segments.campaigns() {
            let mark = match self.marks.meta.get(mark_key(&campaign))? {
                Some(v) => {
                    u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                        what: "open-window mark",
                        message: "not 8 bytes".into(),
                    })?)
                }
                None => 0,
            };
            for frame in self.segments.scan(&campaign, mark.saturating_sub(1)) {
                let (seq, v) = frame?;
                let d = decode_decision(&campaign, seq, &v)?;
                if self.log.contains_key(join_key(&campaign, &d.event_id))?
                    || self.closed_at(&campaign, &d.event_id, seq)?.is_some()
                {
                    continue;
                }
                self.hold_or_write(&EventRecord::of_decision(&d))?;
                held += 1;
            }
        }
        if held > 0 {
            tracing::info!(held, "open reward windows rebuilt from the decision logs");
        }
        Ok(())
    }

    /// Hold a fresh join state in memory, or write it to sled when memory is full or its id
    /// is already held.
    fn hold_or_write(&self, event: &EventRecord) -> Result<(), StoreError> {
        let open = &self.marks.open;
        if open.over_limit()
            || !open.insert(
                &event.campaign,
                event.decision_seq,
                event.deadline_ms,
                &event.event_id,
            )
        {
            self.write_open(event)?;
        }
        Ok(())
    }

    /// Write an open event's join state and its open-window entry to sled in one batch.
    fn write_open(&self, event: &EventRecord) -> Result<(), StoreError> {
        let mut batch = LogBatch::default();
        batch.insert(join_key(&event.campaign, &event.event_id), encode(event));
        batch.insert(
            pending_key(event.deadline_ms, &event.campaign, &event.event_id),
            [],
        );
        self.log.apply(batch)?;
        Ok(())
    }

    /// On a blocking thread, fsync the segment files, then the log journal, then flush sled if
    /// a send-time decision wrote to it since the last commit; `full`: drain the journal's
    /// pending writes into sled and flush every tree. Decisions first: a join state made
    /// durable must never name a decision that is not.
    fn sync_logs(
        &self,
        full: bool,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        let segments = self.segments.clone();
        let log = self.log.clone();
        let db = self.db.clone();
        let send_time = self.send_time_unflushed.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                segments.sync()?;
                if full {
                    log.drain()?;
                } else {
                    log.sync()?;
                }
                // Cleared before the flush: a write after it sets it again for the next one.
                if send_time.swap(false, Ordering::AcqRel) || full {
                    db.flush()?;
                }
                Ok(())
            })
            .await
            .map_err(|e| StoreError::Corrupt {
                what: "log sync",
                message: e.to_string(),
            })?
        }
    }

    /// What each slot of a closing window settled at — a return's `S` entry, else the reward
    /// applied while the window was open (its join state in sled, unless `held`), else this
    /// batch's — and the compact marker that keeps it when the decision's frame is in the
    /// segments (the `S` entries no return adjusted then go, in `batch`). Without the frame,
    /// no marker: the settled slots no `S` entry holds yet are returned, to be written as `S`
    /// entries beside the full pruned record (which keeps no values).
    fn close_window(
        &self,
        event: &EventRecord,
        held: bool,
        rewards: &[RewardRecord],
        batch: &mut LogBatch,
    ) -> Result<(Option<ClosedMarker>, SlotStates), StoreError> {
        let (campaign, event_id) = (&event.campaign, &event.event_id);
        let mut settled: Vec<(u32, SettledSlot)> = Vec::new();
        let prefix = settled_prefix(campaign, event_id);
        let mut returned = Vec::new();
        for kv in self.log.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let slot = settled_slot_of(&prefix, &k)?;
            let s: SettledSlot = decode("settled slot", &v)?;
            returned.push((k, s.adjustments.is_empty()));
            settled.push((slot, s));
        }
        let prior = match held {
            true => None,
            false => match self.log.get(join_key(campaign, event_id))? {
                Some(v) if ClosedMarker::decode(&v).is_none() => {
                    Some(decode_event(campaign, event_id, &v)?)
                }
                _ => None,
            },
        };
        let applied = prior.iter().flat_map(applied_slots);
        let batched = rewards.iter().map(|r| {
            let s = SettledSlot {
                action: r.action.id.clone(),
                value: r.value,
                adjustments: Vec::new(),
            };
            (r.slot, s)
        });
        for (slot, s) in applied.chain(batched) {
            if !settled.iter().any(|(known, _)| *known == slot) {
                settled.push((slot, s));
            }
        }
        let frame = match event.vectors.is_empty() {
            true => self.decision(campaign, event.decision_seq)?,
            false => None,
        };
        let Some(d) = frame else {
            // Only what no `S` entry holds yet.
            let new = settled.split_off(returned.len());
            return Ok((None, new));
        };
        let mut values = vec![None; d.actions.len()];
        for (slot, s) in &settled {
            if let Some(v) = values.get_mut(*slot as usize) {
                *v = Some(s.value);
            }
        }
        for (k, unadjusted) in returned {
            if unadjusted {
                batch.remove(k);
            }
        }
        let marker = ClosedMarker {
            decision_seq: event.decision_seq,
            settled: values,
        };
        Ok((Some(marker), Vec::new()))
    }

    /// A join state as sled holds it: a full record, or a closed marker completed from its
    /// decision's frame.
    fn join_state(
        &self,
        campaign: &str,
        event_id: &str,
        v: &[u8],
    ) -> Result<EventRecord, StoreError> {
        match ClosedMarker::decode(v) {
            None => decode_event(campaign, event_id, v),
            Some(m) => {
                let seq = m?.decision_seq;
                let d = self.decision(campaign, seq)?;
                Ok(marker_event(campaign, event_id, seq, d.as_ref()))
            }
        }
    }

    /// The newest marker of the close files for `event_id` whose decision's frame names it,
    /// with that decision: a closed window whose join state the journal moved out of sled.
    fn closed(
        &self,
        campaign: &str,
        event_id: &str,
    ) -> Result<Option<(ClosedMarker, DecisionRecord)>, StoreError> {
        for m in self.closes.candidates(campaign, event_id)? {
            if let Some(d) = self.decision(campaign, m.decision_seq)? {
                if d.event_id == event_id {
                    return Ok(Some((m, d)));
                }
            }
        }
        Ok(None)
    }

    /// The join states of `campaign`'s closed windows in the close files that nothing newer
    /// replaced (sled or the open windows hold no join state for their event ids), each once.
    fn closed_join_states(&self, campaign: &str) -> Result<Vec<EventRecord>, StoreError> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for m in self.closes.all(campaign)?.into_iter().rev() {
            if !seen.insert(m.decision_seq) {
                continue;
            }
            let Some(d) = self.decision(campaign, m.decision_seq)? else {
                continue;
            };
            if self.marks.open.seq_of(campaign, &d.event_id).is_some()
                || self.log.contains_key(join_key(campaign, &d.event_id))?
            {
                continue;
            }
            out.push(marker_event(
                campaign,
                &d.event_id,
                m.decision_seq,
                Some(&d),
            ));
        }
        Ok(out)
    }

    /// The close files' marker of decision `seq` (whose event id is `event_id`).
    fn closed_at(
        &self,
        campaign: &str,
        event_id: &str,
        seq: u64,
    ) -> Result<Option<ClosedMarker>, StoreError> {
        Ok(self
            .closes
            .candidates(campaign, event_id)?
            .into_iter()
            .find(|m| m.decision_seq == seq))
    }

    /// The join state of a held event, rebuilt from its decision's frame.
    fn held_event(&self, campaign: &str, seq: u64) -> Result<Option<EventRecord>, StoreError> {
        Ok(self
            .segments
            .get(campaign, seq)?
            .map(|v| decode_decision(campaign, seq, &v))
            .transpose()?
            .map(|d| EventRecord::of_decision(&d)))
    }
}

impl SledStore {
    #[cfg(test)]
    pub(super) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Item decisions logged with their raw request may carry `"shopper_id"`: rewrite every
    /// record naming `shopper` without it. A linear scan of the logs (deletions are rare);
    /// entries whose bytes do not mention `shopper_id` at all are not decoded, and segments
    /// with nothing to change are not rewritten.
    fn scrub_logged_requests(&self, shopper: &str) -> Result<usize, StoreError> {
        const KEY: &[u8] = b"shopper_id";
        self.segments.rewrite_all(|_, _, v| {
            if !v.windows(KEY.len()).any(|w| w == KEY) {
                return Ok(None);
            }
            let LogEntry::Decision(mut d) = decode("decision", v)? else {
                return Ok(None);
            };
            let Ok(serde_json::Value::Object(mut request)) =
                serde_json::from_slice::<serde_json::Value>(&d.request)
            else {
                return Ok(None);
            };
            if request.get("shopper_id").and_then(|s| s.as_str()) != Some(shopper) {
                return Ok(None);
            }
            request.remove("shopper_id");
            d.request = serde_json::to_vec(&request).expect("JSON object to bytes");
            Ok(Some(encode_decision(&d)))
        })
    }

    /// Decode a log entry of `campaign` under `seq` (a segment frame or a `log` tree value),
    /// joining a reward to its decision.
    fn log_record(&self, campaign: &str, seq: u64, v: &[u8]) -> Result<LogRecord, StoreError> {
        match decode::<LogEntry>("log entry", v)? {
            LogEntry::Decision(mut d) => {
                d.seq = seq;
                d.campaign = campaign.to_string();
                Ok(LogRecord::Decision(d))
            }
            LogEntry::Reward(r) => Ok(LogRecord::Reward(self.join_reward(campaign, seq, r)?)),
            LogEntry::Adjustment(a) => Ok(LogRecord::Adjustment(
                self.join_adjustment(campaign, seq, a)?,
            )),
        }
    }

    /// An adjustment entry joined to its decision's action and vector; when neither the
    /// decision nor the join state holds the vector any more, the action comes with an empty
    /// one (learners that read vectors then have nothing to correct).
    fn join_adjustment(
        &self,
        campaign: &str,
        seq: u64,
        entry: AdjustmentEntry,
    ) -> Result<AdjustmentRecord, StoreError> {
        let slot = entry.slot as usize;
        let action = match self.decision(campaign, entry.decision_seq)? {
            Some(d) => d.actions.into_iter().nth(slot),
            None => self
                .event(campaign, &entry.event_id)?
                .and_then(|e| e.kept_action(slot)),
        }
        .filter(|a| a.id == entry.action)
        .unwrap_or_else(|| LoggedAction {
            id: entry.action.clone(),
            probability: 1.0,
            x: Default::default(),
        });
        Ok(AdjustmentRecord {
            seq,
            campaign: campaign.to_string(),
            entry,
            action,
        })
    }

    /// A reward entry joined to its decision's action and vector: from the decision's log
    /// entry, or from the join state when the log was deleted while its window was open.
    fn join_reward(
        &self,
        campaign: &str,
        seq: u64,
        mut r: RewardEntry,
    ) -> Result<RewardRecord, StoreError> {
        let slot = r.slot as usize;
        let (action, holdout, policy) = match self.decision(campaign, r.decision_seq)? {
            Some(d) => {
                if r.event_id.is_empty() {
                    // Written without it while the frame was there (schema 7).
                    r.event_id = d.event_id;
                }
                let action = d.actions.into_iter().nth(slot);
                (action, d.holdout, d.policy)
            }
            None => match self.event(campaign, &r.event_id)? {
                Some(e) => (e.kept_action(slot), e.holdout, e.policy),
                None => (None, false, String::new()),
            },
        };
        let action = action.ok_or_else(|| StoreError::Corrupt {
            what: "reward",
            message: format!(
                "reward {seq} of campaign {campaign:?} names decision {} slot {slot}, which is not in the log",
                r.decision_seq
            ),
        })?;
        Ok(RewardRecord {
            seq,
            event_id: r.event_id,
            campaign: campaign.to_string(),
            at_ms: r.at_ms,
            kind: r.kind,
            slot: r.slot,
            action,
            value: r.value,
            holdout,
            policy,
        })
    }

    /// The reward and adjustment entries of `campaign`'s log above `after` (the `log` tree;
    /// decisions a migration cut short left there are skipped: they are in the segments too).
    fn reward_range(
        &self,
        campaign: &str,
        after: u64,
    ) -> impl Iterator<Item = Result<(u64, sled::IVec), StoreError>> + '_ {
        let (_, end) = log_bounds(campaign);
        self.log
            .range(log_key(campaign, after.saturating_add(1))..end)
            .filter_map(|kv| match kv {
                Ok((k, v)) if is_reward(&v) || is_adjustment(&v) => {
                    Some(split_log_key(&k).map(|(_, seq)| (seq, v)))
                }
                Ok(_) => None,
                Err(e) => Some(Err(e.into())),
            })
    }

    /// The decisions of `campaign` above `after`, decoded.
    fn decision_scan(
        &self,
        campaign: &str,
        after: u64,
    ) -> impl Iterator<Item = Result<DecisionRecord, StoreError>> + '_ {
        let campaign = campaign.to_string();
        self.segments.scan(&campaign, after).map(move |frame| {
            let (seq, v) = frame?;
            decode_decision(&campaign, seq, &v)
        })
    }

    /// Bytes of the decision segment files (and their buffers), for size reports.
    pub fn decision_log_bytes(&self) -> u64 {
        self.segments.bytes()
    }
}

/// A decision frame of `campaign`'s segments.
fn decode_decision(campaign: &str, seq: u64, v: &[u8]) -> Result<DecisionRecord, StoreError> {
    match decode::<LogEntry>("decision", v)? {
        LogEntry::Decision(mut d) => {
            d.seq = seq;
            d.campaign = campaign.to_string();
            Ok(d)
        }
        _ => Err(StoreError::Corrupt {
            what: "decision",
            message: format!("frame {seq} of campaign {campaign:?} is not a decision"),
        }),
    }
}

impl LogStore for SledStore {
    fn next_seq(&self) -> Result<u64, StoreError> {
        // sled never hands out the same id twice, crashes included; start at 1 so 0 means "none".
        Ok(self.db.generate_id()? + 1)
    }

    fn append_decision(&self, decision: &DecisionRecord) -> Result<(), StoreError> {
        self.segments
            .append(&decision.campaign, decision.seq, &encode_decision(decision))?;
        // Held from the append on (under the caller's books lock, in seq order), so a mark
        // never passes a decision whose join state is on its way to sled.
        self.marks.open.insert(
            &decision.campaign,
            decision.seq,
            decision.deadline_ms,
            &decision.event_id,
        );
        Ok(())
    }

    fn index_decision(&self, event: &EventRecord) -> Result<(), StoreError> {
        let open = &self.marks.open;
        let held = open.seq_of(&event.campaign, &event.event_id) == Some(event.decision_seq);
        if !held || event.deferred || open.over_limit() {
            // Sled first, then out of memory: never in neither.
            self.write_open(event)?;
            if held {
                open.remove(&event.campaign, &event.event_id);
            }
        }
        self.segments.maybe_write_out(&event.campaign)
    }

    fn event(&self, campaign: &str, event_id: &str) -> Result<Option<EventRecord>, StoreError> {
        if let Some(seq) = self.marks.open.seq_of(campaign, event_id) {
            if let Some(e) = self.held_event(campaign, seq)? {
                return Ok(Some(e));
            }
        }
        if let Some(v) = self.log.get(join_key(campaign, event_id))? {
            return self.join_state(campaign, event_id, &v).map(Some);
        }
        Ok(self
            .closed(campaign, event_id)?
            .map(|(m, d)| marker_event(campaign, event_id, m.decision_seq, Some(&d))))
    }

    fn has_event(&self, campaign: &str, event_id: &str) -> Result<bool, StoreError> {
        // A held window's frame is durable or still buffered: a crash that lost it also
        // lost the window (held windows are rebuilt from the frames).
        Ok(self.marks.open.seq_of(campaign, event_id).is_some()
            || self.log.contains_key(join_key(campaign, event_id))?
            || self.closed(campaign, event_id)?.is_some())
    }

    fn event_with_actions(
        &self,
        campaign: &str,
        event_id: &str,
    ) -> Result<Option<super::EventWithActions>, StoreError> {
        if let Some(seq) = self.marks.open.seq_of(campaign, event_id) {
            if let Some(v) = self.segments.get(campaign, seq)? {
                let d = decode_decision(campaign, seq, &v)?;
                return Ok(Some((EventRecord::of_decision(&d), Some(d.actions))));
            }
        }
        Ok(self.event(campaign, event_id)?.map(|e| (e, None)))
    }

    fn decision(&self, campaign: &str, seq: u64) -> Result<Option<DecisionRecord>, StoreError> {
        self.segments
            .get(campaign, seq)?
            .map(|v| decode_decision(campaign, seq, &v))
            .transpose()
    }

    fn put_event(&self, event: &EventRecord) -> Result<(), StoreError> {
        if self
            .marks
            .open
            .seq_of(&event.campaign, &event.event_id)
            .is_some()
        {
            self.write_open(event)?;
            self.marks.open.remove(&event.campaign, &event.event_id);
            return Ok(());
        }
        self.log
            .insert(join_key(&event.campaign, &event.event_id), encode(event))?;
        Ok(())
    }

    fn commit_rewards(
        &self,
        event: &EventRecord,
        rewards: &[RewardRecord],
        close: bool,
    ) -> Result<(), StoreError> {
        self.segments
            .write_through(&event.campaign, event.decision_seq)?;
        let held = self
            .marks
            .open
            .seq_of(&event.campaign, &event.event_id)
            .is_some();
        let mut batch = LogBatch::default();
        let (marker, settled) = if close && event.is_pruned() {
            self.close_window(event, held, rewards, &mut batch)?
        } else {
            (None, Vec::new())
        };
        for (slot, s) in &settled {
            batch.insert(
                settled_key(&event.campaign, &event.event_id, *slot),
                encode(s),
            );
        }
        // A reward names its decision by seq; the event id is read back from the frame, and
        // kept only when the frame is gone (the log deleted while the window was open).
        let frame_kept = marker.is_some() || (!close && event.vectors.is_empty());
        batch.insert(
            join_key(&event.campaign, &event.event_id),
            match &marker {
                Some(m) => m.encode(),
                None => encode(event),
            },
        );
        if held && !close {
            // Leaving memory with its window still open.
            batch.insert(
                pending_key(event.deadline_ms, &event.campaign, &event.event_id),
                [],
            );
        }
        for r in rewards {
            let entry = LogEntry::Reward(RewardEntry {
                event_id: if frame_kept {
                    String::new()
                } else {
                    r.event_id.clone()
                },
                decision_seq: event.decision_seq,
                at_ms: r.at_ms,
                kind: r.kind,
                slot: r.slot,
                value: r.value,
            });
            batch.insert(log_key(&r.campaign, r.seq), encode(&entry));
        }
        if close && !held {
            batch.remove(pending_key(
                event.deadline_ms,
                &event.campaign,
                &event.event_id,
            ));
        }
        self.log.apply(batch)?;
        if held {
            self.marks.open.remove(&event.campaign, &event.event_id);
        }
        Ok(())
    }

    fn settled(
        &self,
        campaign: &str,
        event_id: &str,
    ) -> Result<Vec<(u32, SettledSlot)>, StoreError> {
        let prefix = settled_prefix(campaign, event_id);
        let mut out = self
            .log
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((settled_slot_of(&prefix, &k)?, decode("settled slot", &v)?))
            })
            .collect::<Result<Vec<(u32, SettledSlot)>, StoreError>>()?;
        // The slots no return adjusted: from the open join state, or from the compact marker
        // with the served ids from the frame.
        let implied: Vec<(u32, SettledSlot)> = match self.log.get(join_key(campaign, event_id))? {
            None => match self.closed(campaign, event_id)? {
                Some((marker, d)) => marker_slots(marker, d),
                None => Vec::new(),
            },
            Some(v) => match ClosedMarker::decode(&v).transpose()? {
                None => applied_slots(&decode_event(campaign, event_id, &v)?).collect(),
                Some(marker) => match self.decision(campaign, marker.decision_seq)? {
                    None => Vec::new(),
                    Some(d) => marker_slots(marker, d),
                },
            },
        };
        for (slot, s) in implied {
            if !out.iter().any(|(known, _)| *known == slot) {
                out.push((slot, s));
            }
        }
        out.sort_by_key(|(slot, _)| *slot);
        Ok(out)
    }

    fn put_settled(
        &self,
        campaign: &str,
        event_id: &str,
        slot: u32,
        state: &SettledSlot,
    ) -> Result<(), StoreError> {
        self.log
            .insert(settled_key(campaign, event_id, slot), encode(state))?;
        Ok(())
    }

    fn commit_adjustment(
        &self,
        adjustment: &AdjustmentRecord,
        slot: &SettledSlot,
    ) -> Result<(), StoreError> {
        let e = &adjustment.entry;
        let mut batch = LogBatch::default();
        batch.insert(
            log_key(&adjustment.campaign, adjustment.seq),
            encode(&LogEntry::Adjustment(e.clone())),
        );
        batch.insert(
            settled_key(&adjustment.campaign, &e.event_id, e.slot),
            encode(slot),
        );
        self.log.apply(batch)?;
        Ok(())
    }

    fn adjustments(
        &self,
        campaign: &str,
    ) -> Box<dyn Iterator<Item = Result<AdjustmentRecord, StoreError>> + '_> {
        let campaign = campaign.to_string();
        Box::new(
            self.reward_range(&campaign.clone(), 0)
                .filter_map(move |kv| match kv {
                    Ok((seq, v)) if is_adjustment(&v) => Some(self.log_record(&campaign, seq, &v)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .filter_map(|r| match r {
                    Ok(LogRecord::Adjustment(a)) => Some(Ok(a)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }),
        )
    }

    fn due_events(&self, now_ms: u64, limit: usize) -> Result<Vec<(String, String)>, StoreError> {
        let mut end = vec![PENDING];
        end.extend_from_slice(&now_ms.saturating_add(1).to_be_bytes());
        let mut due = self
            .log
            .range([PENDING].as_slice()..end.as_slice())
            .take(limit)
            .map(|kv| {
                let (k, _) = kv?;
                let deadline = k
                    .get(1..9)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(0, u64::from_be_bytes);
                let (campaign, id) = split_event_key(k.get(9..).unwrap_or_default());
                Ok((deadline, campaign, id))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        due.extend(self.marks.open.due(now_ms, limit));
        due.sort();
        due.truncate(limit);
        Ok(due.into_iter().map(|(_, c, id)| (c, id)).collect())
    }

    fn drop_orphan_pending(
        &self,
        campaign: &str,
        event_id: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.marks.open.remove_due(campaign, event_id, now_ms);
        let wanted = event_key(campaign, event_id);
        let mut end = vec![PENDING];
        end.extend_from_slice(&now_ms.saturating_add(1).to_be_bytes());
        for kv in self.log.range([PENDING].as_slice()..end.as_slice()) {
            let (k, _) = kv?;
            if k.get(9..) == Some(wanted.as_slice()) {
                self.log.remove(k)?;
            }
        }
        Ok(())
    }

    fn last_seq(&self, campaign: &str) -> Result<u64, StoreError> {
        let (start, end) = log_bounds(campaign);
        let rewards = match self.log.last_key(start..end)? {
            Some(k) => split_log_key(&k)?.1,
            None => 0,
        };
        Ok(rewards.max(self.segments.last_seq(campaign)))
    }

    fn log_after(
        &self,
        campaign: &str,
        after: u64,
    ) -> Box<dyn Iterator<Item = Result<LogRecord, StoreError>> + '_> {
        let campaign = campaign.to_string();
        let decisions = self.decision_scan(&campaign, after).map(|d| {
            let d = d?;
            Ok((d.seq, LogRecord::Decision(d)))
        });
        let rewards = self.reward_range(&campaign, after).map(move |kv| {
            let (seq, v) = kv?;
            Ok((seq, self.log_record(&campaign, seq, &v)?))
        });
        Box::new(MergeBySeq {
            a: decisions.peekable(),
            b: rewards.peekable(),
        })
    }

    fn decisions(
        &self,
        campaign: &str,
        after: u64,
    ) -> Box<dyn Iterator<Item = Result<DecisionRecord, StoreError>> + '_> {
        Box::new(self.decision_scan(campaign, after))
    }

    fn rewards(
        &self,
        campaign: &str,
    ) -> Box<dyn Iterator<Item = Result<RewardRecord, StoreError>> + '_> {
        let campaign = campaign.to_string();
        Box::new(
            self.reward_range(&campaign.clone(), 0)
                .map(move |kv| {
                    let (seq, v) = kv?;
                    self.log_record(&campaign, seq, &v)
                })
                .filter_map(|r| match r {
                    Ok(LogRecord::Reward(r)) => Some(Ok(r)),
                    Ok(LogRecord::Decision(_) | LogRecord::Adjustment(_)) => None,
                    Err(e) => Some(Err(e)),
                }),
        )
    }

    fn delete_log(&self, campaign: &str, up_to: u64) -> Result<(u64, u64), StoreError> {
        // Held join states need their frames: write them to sled first (the vectors follow
        // below, as for every open window).
        for (id, seq) in self.marks.open.up_to(campaign, up_to) {
            if let Some(e) = self.held_event(campaign, seq)? {
                self.write_open(&e)?;
            }
            self.marks.open.remove(campaign, &id);
        }
        // Rewards that stay (logged after `up_to`) naming a decision that goes: their event
        // ids, written without them while the frame was there, from the frames before they go.
        let mut batch = LogBatch::default();
        for kv in self.reward_range(campaign, up_to) {
            let (seq, v) = kv?;
            if !is_reward(&v) {
                continue;
            }
            if let LogEntry::Reward(mut r) = decode("log entry", &v)? {
                if r.event_id.is_empty() && r.decision_seq <= up_to {
                    if let Some(d) = self.decision(campaign, r.decision_seq)? {
                        r.event_id = d.event_id;
                        batch.insert(log_key(campaign, seq), encode(&LogEntry::Reward(r)));
                    }
                }
            }
        }
        self.log.apply(batch)?;
        let mut decisions = 0;
        let rewards = self.delete_entries_up_to(campaign, up_to)?;
        // Join states first: a decision whose window is still open hands its vectors to its
        // join state before its frame goes (its rewards and its default reward still need them);
        // a compact marker is written out in full, with the settled slots it implied, since
        // both are read back from the frame. (Under the segment lock: sled only in here.)
        self.segments.delete_up_to(campaign, up_to, |seq, v| {
            let LogEntry::Decision(mut d) = decode("decision", v)? else {
                return Ok(());
            };
            decisions += 1;
            let key = join_key(campaign, &d.event_id);
            let stored = match self.log.get(&key)? {
                Some(v) => v.to_vec(),
                None => match self.closed_at(campaign, &d.event_id, seq)? {
                    Some(m) => m.encode(),
                    None => return Ok(()),
                },
            };
            match ClosedMarker::decode(&stored).transpose()? {
                Some(m) if m.decision_seq == seq => {
                    d.seq = seq;
                    let mut batch = LogBatch::default();
                    let full = marker_event(campaign, &d.event_id, seq, Some(&d));
                    batch.insert(key, encode(&full));
                    for ((slot, a), value) in (0u32..).zip(&d.actions).zip(m.settled) {
                        let sk = settled_key(campaign, &d.event_id, slot);
                        if let (Some(value), false) = (value, self.log.contains_key(&sk)?) {
                            batch.insert(
                                sk,
                                encode(&SettledSlot {
                                    action: a.id.clone(),
                                    value,
                                    adjustments: Vec::new(),
                                }),
                            );
                        }
                    }
                    self.log.apply(batch)?;
                }
                Some(_) => {}
                None => {
                    let mut e = decode_event(campaign, &d.event_id, &stored)?;
                    if !e.is_pruned() && e.vectors.is_empty() {
                        e.vectors = d.actions.into_iter().map(|a| a.x).collect();
                        self.log.insert(key, encode(&e))?;
                    }
                }
            }
            Ok(())
        })?;
        // The full records written above are durable before the close files they replace go
        // (else a crash could bring back closed decisions with neither).
        self.log.sync()?;
        self.closes.delete_up_to(campaign, up_to)?;
        Ok((decisions, rewards))
    }

    fn delete_campaign_log(&self, campaign: &str) -> Result<(), StoreError> {
        self.marks.open.drop_campaign(campaign);
        self.marks.written.lock().remove(campaign);
        self.marks.meta.remove(mark_key(campaign))?;
        for family in [LOG, EVENT, SETTLED] {
            let mut prefix = vec![family];
            prefix.extend_from_slice(campaign.as_bytes());
            prefix.push(0);
            let mut batch = LogBatch::default();
            let mut n = 0;
            for kv in self.log.scan_prefix(&prefix) {
                batch.remove(kv?.0);
                n += 1;
                if n == 4096 {
                    self.log.apply(std::mem::take(&mut batch))?;
                    n = 0;
                }
            }
            self.log.apply(batch)?;
        }
        // Markers still in the journal go to the close files before they are deleted.
        self.log.drain()?;
        self.closes.delete_campaign(campaign)?;
        self.segments.delete_campaign(campaign)
    }

    fn deferred_with_prefix(
        &self,
        campaign: &str,
        prefix: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for kv in self.log.scan_prefix(join_key(campaign, prefix)) {
            let (k, v) = kv?;
            let (_, id) = split_event_key(&k[1..]);
            if peek_join_state(campaign, &id, &v)?.2 {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn join_states(
        &self,
        campaign: &str,
    ) -> Box<dyn Iterator<Item = Result<EventRecord, StoreError>> + '_> {
        let held = self.marks.open.up_to(campaign, u64::MAX);
        let held_campaign = campaign.to_string();
        let closed_campaign = campaign.to_string();
        let campaign = campaign.to_string();
        Box::new(
            self.log
                .scan_prefix(join_key(&campaign, ""))
                .map(move |kv| {
                    let (k, v) = kv?;
                    let (_, id) = split_event_key(&k[1..]);
                    self.join_state(&campaign, &id, &v)
                })
                // Untouched open windows held in memory: their join states from their frames.
                .chain(
                    held.into_iter().filter_map(move |(_, seq)| {
                        self.held_event(&held_campaign, seq).transpose()
                    }),
                )
                // Closed windows in the close files.
                .chain(
                    std::iter::once_with(move || self.closed_join_states(&closed_campaign))
                        .flat_map(|r| match r {
                            Ok(events) => events.into_iter().map(Ok).collect::<Vec<_>>(),
                            Err(e) => vec![Err(e)],
                        }),
                ),
        )
    }

    fn legacy_decision_seq(&self) -> u64 {
        self.legacy_decision_seq
    }

    fn flush(&self) -> FlushFuture {
        Box::pin(self.sync_logs(true))
    }

    fn commit_log(&self) -> FlushFuture {
        Box::pin(self.sync_logs(false))
    }

    fn expire_log(
        &self,
        campaign: &str,
        before_ms: u64,
        max_seq: u64,
        settle_ms: u64,
        limit: usize,
    ) -> Result<super::Expired, StoreError> {
        let mut out = super::Expired::default();
        // When the last entry the snapshot covers was logged: a decision's rewards and returns
        // are logged within `settle_ms` of it (plus the sweeper's lag), so a decision older than
        // that by a margin has all of them at or below `max_seq`, where they can go with it.
        let covered_at = match self.decision(campaign, max_seq)? {
            Some(d) => d.at_ms,
            None => match self.log.get(log_key(campaign, max_seq))? {
                Some(v) => match decode::<LogEntry>("log entry", &v)? {
                    LogEntry::Reward(r) => r.at_ms,
                    LogEntry::Adjustment(a) => a.at_ms,
                    LogEntry::Decision(d) => d.at_ms,
                },
                None => return Ok(out),
            },
        };
        // Everything logged is covered: no later entry can name these decisions (the caller
        // takes only decisions whose return window has passed).
        let before_ms = if self.last_seq(campaign)? <= max_seq {
            before_ms
        } else {
            before_ms.min(
                covered_at
                    .saturating_sub(settle_ms)
                    .saturating_sub(expire_margin_ms(settle_ms)),
            )
        };
        // Pass 1, oldest first: how far the decisions may go. Decisions are appended in seq
        // order with the wall clock, so the first decision logged after `before_ms` ends the
        // run (a clock step back only delays retention); so does the first whose window is
        // still open (the sweeper is behind).
        let mut stop = 0;
        for d in self.decision_scan(campaign, 0) {
            let d = d?;
            if d.at_ms > before_ms || d.seq > max_seq {
                break;
            }
            if self.marks.open.seq_of(campaign, &d.event_id) == Some(d.seq) {
                // Its window is open, held in memory.
                break;
            }
            if let Some(v) = self.log.get(join_key(campaign, &d.event_id))? {
                let (seq, closed, _) = peek_join_state(campaign, &d.event_id, &v)?;
                if seq == d.seq && !closed {
                    break;
                }
            }
            stop = d.seq;
        }
        if stop == 0 {
            return Ok(out);
        }
        // Whole segments only: deleting part of one would rewrite it under the campaign's log
        // lock, stalling its decides (issue 17). What a partly expired segment holds goes with
        // it on a later pass.
        out.up_to = self.segments.whole_segments_up_to(campaign, stop)?;
        // Pass 2: the keys sled keeps about the events that go, in batches of `limit`.
        let mut batch = LogBatch::default();
        let mut batched = 0;
        for d in self.decision_scan(campaign, 0) {
            let d = d?;
            if d.seq > out.up_to {
                break;
            }
            out.decisions += 1;
            let jk = join_key(campaign, &d.event_id);
            if let Some(v) = self.log.get(&jk)? {
                // An event id decided again after an earlier expiry: its keys are the newer
                // decision's.
                if peek_join_state(campaign, &d.event_id, &v)?.0 != d.seq {
                    continue;
                }
                batch.remove(jk);
                out.keys += 1;
            }
            // (A marker in the close files goes with its file, below.)
            for kv in self.log.scan_prefix(settled_prefix(campaign, &d.event_id)) {
                batch.remove(kv?.0);
                out.keys += 1;
            }
            let sk = event_key(campaign, &d.event_id);
            if self.send_events.contains_key(&sk)? {
                self.send_events.remove(&sk)?;
                out.keys += 1;
            }
            batched += 1;
            if batched >= limit.max(1) {
                self.log.apply(std::mem::take(&mut batch))?;
                batched = 0;
            }
        }
        if out.up_to == 0 {
            return Ok(out);
        }
        // Pass 3: rewards and returns of those decisions logged after the last of them (up to
        // what the snapshot covers), so no reward is left naming a decision that is gone.
        let mut late = 0;
        for kv in self
            .log
            .range(log_key(campaign, out.up_to + 1)..=log_key(campaign, max_seq))
        {
            let (k, v) = kv?;
            let decision_seq = if is_reward(&v) || is_adjustment(&v) {
                match decode::<LogEntry>("log entry", &v)? {
                    LogEntry::Reward(r) => r.decision_seq,
                    LogEntry::Adjustment(a) => a.decision_seq,
                    LogEntry::Decision(_) => continue,
                }
            } else {
                continue;
            };
            if decision_seq <= out.up_to {
                batch.remove(k);
                late += 1;
            }
        }
        self.log.apply(batch)?;
        // Pass 4: the entries up to the last decision, then its whole segments.
        let rewards = self.delete_entries_up_to(campaign, out.up_to)?;
        self.segments.delete_whole_segments(campaign, out.up_to)?;
        self.closes.delete_up_to(campaign, out.up_to)?;
        out.rewards = rewards + late;
        Ok(out)
    }

    fn reward_values(
        &self,
        campaign: &str,
    ) -> Box<dyn Iterator<Item = Result<(u64, u32, f64), StoreError>> + '_> {
        Box::new(
            self.reward_range(campaign, 0)
                .filter_map(move |kv| match kv {
                    Ok((_, v)) if is_reward(&v) => {
                        Some(decode::<LogEntry>("log entry", &v).map(|e| match e {
                            LogEntry::Reward(r) => Some((r.decision_seq, r.slot, r.value)),
                            _ => None,
                        }))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .filter_map(Result::transpose),
        )
    }
}

/// Margin past a decision's return window before retention takes it (`expire_log`): the
/// window sweeper's lag in logging a default reward; the window itself when shorter.
pub(crate) fn expire_margin_ms(return_window_ms: u64) -> u64 {
    return_window_ms.min(10 * 60_000)
}

/// Two iterators of (seq, item), each in seq order, merged into one in seq order.
struct MergeBySeq<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A, B> Iterator for MergeBySeq<A, B>
where
    A: Iterator<Item = Result<(u64, LogRecord), StoreError>>,
    B: Iterator<Item = Result<(u64, LogRecord), StoreError>>,
{
    type Item = Result<LogRecord, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let take_a = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            // An error goes out first, wherever it is.
            (Some(Err(_)), _) => true,
            (_, Some(Err(_))) => false,
            (Some(Ok((sa, _))), Some(Ok((sb, _)))) => sa < sb,
        };
        let next = if take_a { self.a.next() } else { self.b.next() };
        next.map(|r| r.map(|(_, record)| record))
    }
}

impl ConfigStore for SledStore {
    fn put_campaign(&self, id: &str, json: &[u8]) -> Result<(), StoreError> {
        self.campaigns.insert(id.as_bytes(), json)?;
        Ok(())
    }

    fn delete_campaign(&self, id: &str) -> Result<(), StoreError> {
        self.campaigns.remove(id.as_bytes())?;
        // Its evaluations and autopilot state go with it: a campaign created again under the
        // same id starts without them.
        let evaluations = self.db.open_tree("evaluations")?;
        let mut batch = sled::Batch::default();
        for kv in evaluations.scan_prefix(event_key(id, "")) {
            batch.remove(kv?.0);
        }
        evaluations.apply_batch(batch)?;
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
        self.db
            .open_tree("evaluations")?
            .insert(event_key(campaign, id), json)?;
        Ok(())
    }

    fn delete_evaluation(&self, campaign: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .db
            .open_tree("evaluations")?
            .remove(event_key(campaign, id))?
            .is_some())
    }

    fn evaluations(&self, campaign: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        self.db
            .open_tree("evaluations")?
            .scan_prefix(event_key(campaign, ""))
            .map(|kv| Ok(kv?.1.to_vec()))
            .collect()
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
}

impl ShopperStore for SledStore {
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
        // After the writes: a commit that takes the flag flushes them; set before, a commit
        // could take it and flush before they land, leaving them to no commit.
        self.send_time_unflushed.store(true, Ordering::Release);
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
        // After the write (see `put_shopper`).
        self.send_time_unflushed.store(true, Ordering::Release);
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

    fn send_events(&self, campaign: &str) -> Result<Vec<(String, SendEventRecord)>, StoreError> {
        self.send_events
            .scan_prefix(event_key(campaign, ""))
            .map(|kv| {
                let (k, v) = kv?;
                Ok((split_event_key(&k).1, decode("send event", &v)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LoggedAction, RewardKind, ServedAction, SlotState};

    fn action() -> LoggedAction {
        LoggedAction {
            id: "a".into(),
            probability: 0.5,
            x: tailor_policies::SparseVec::from_pairs(vec![(2, 1.0), (9, -0.5)]),
        }
    }

    fn decision_in(campaign: &str, seq: u64, id: &str, deadline: u64) -> DecisionRecord {
        DecisionRecord {
            seq,
            event_id: id.into(),
            campaign: campaign.into(),
            at_ms: 0,
            deadline_ms: deadline,
            policy: "thompson".into(),
            seed: 7,
            holdout: false,
            explore: true,
            actions: vec![action()],
            candidates: 1,
            request: vec![],
            removed: vec![],
            candidate_set: 0,
            pinned: Default::default(),
            audience: Default::default(),
        }
    }

    fn event_of(d: &DecisionRecord) -> EventRecord {
        EventRecord {
            event_id: d.event_id.clone(),
            campaign: d.campaign.clone(),
            decision_seq: d.seq,
            at_ms: d.at_ms,
            deadline_ms: d.deadline_ms,
            policy: d.policy.clone(),
            holdout: false,
            actions: vec![ServedAction {
                id: "a".into(),
                probability: 0.5,
            }],
            slots: vec![SlotState::default()],
            closed: false,
            candidate_set: 0,
            deferred: false,
            vectors: Vec::new(),
        }
    }

    /// Log a decision of campaign `c`; returns its join state.
    fn log(s: &SledStore, campaign: &str, seq: u64, id: &str, deadline: u64) -> EventRecord {
        let d = decision_in(campaign, seq, id, deadline);
        let e = event_of(&d);
        s.log_decision(&d, &e).unwrap();
        e
    }

    fn reward(e: &EventRecord, seq: u64, value: f64) -> RewardRecord {
        RewardRecord {
            seq,
            event_id: e.event_id.clone(),
            campaign: e.campaign.clone(),
            at_ms: 1,
            kind: RewardKind::Explicit,
            slot: 0,
            action: action(),
            value,
            holdout: false,
            policy: "thompson".into(),
        }
    }

    fn pair(campaign: &str, id: &str) -> (String, String) {
        (campaign.to_string(), id.to_string())
    }

    /// A deadline whose event record is gone is dropped, and only it (the sweeper's way out of
    /// meeting an orphan forever).
    #[test]
    fn orphan_deadlines_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        log(&s, "c", 1, "e1", 1_000);
        log(&s, "c", 2, "e2", 1_500);
        s.drop_orphan_pending("c", "e2", 5_000).unwrap();
        assert_eq!(s.due_events(5_000, 10).unwrap(), vec![pair("c", "e1")]);
        // Not yet due: kept.
        s.drop_orphan_pending("c", "e1", 500).unwrap();
        assert_eq!(s.due_events(5_000, 10).unwrap(), vec![pair("c", "e1")]);
    }

    /// Schema 7: a window that closes leaves a compact marker (about a tenth of the full
    /// pruned record) and no settled-slot entry for its default-rewarded slots; what the
    /// marker and the settled slots answer is unchanged, also after the log is deleted (the
    /// marker is then written in full, since the frame it reads is gone) and after a reopen.
    #[test]
    fn closed_windows_leave_compact_markers_that_answer_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        let mut d = decision_in("c", 10, "e1", 1_000);
        d.at_ms = 400;
        d.candidate_set = 77;
        d.holdout = true;
        let mut b = action();
        b.id = "b".into();
        d.actions.push(b.clone());
        let e = EventRecord::of_decision(&d);
        s.log_decision(&d, &e).unwrap();
        let full = EventRecord {
            actions: Vec::new(),
            slots: Vec::new(),
            closed: true,
            ..e.clone()
        };
        // Slot 0 summed to 1, slot 1 got nothing: the default 0.25.
        let mut summed = reward(&e, 11, 1.0);
        summed.kind = RewardKind::Sum;
        let mut default = reward(&e, 12, 0.25);
        default.kind = RewardKind::Default;
        default.slot = 1;
        default.action = b;
        s.commit_rewards(&full, &[summed, default.clone()], true)
            .unwrap();

        let stored = s.log.get(join_key("c", "e1")).unwrap().unwrap();
        assert_eq!(stored[0], super::super::records::MARKER_VERSION);
        assert!(stored.len() <= 24, "{} bytes", stored.len());
        assert_eq!(
            s.log.scan_prefix(settled_prefix("c", "e1")).count(),
            0,
            "the marker holds what the slots settled at"
        );
        // The rewards name their decision by seq alone; readers get the id from the frame.
        for kv in s.reward_range("c", 0) {
            match decode::<LogEntry>("log entry", &kv.unwrap().1).unwrap() {
                LogEntry::Reward(r) => assert_eq!((r.event_id.as_str(), r.decision_seq), ("", 10)),
                other => panic!("{other:?}"),
            }
        }
        let ids = |s: &SledStore| {
            let joined: Vec<_> = s.rewards("c").map(|r| r.unwrap().event_id).collect();
            let values: Vec<_> = s.reward_values("c").map(|r| r.unwrap()).collect();
            (joined, values)
        };
        assert_eq!(
            ids(&s),
            (
                vec!["e1".to_string(), "e1".to_string()],
                vec![(10, 0, 1.0), (10, 1, 0.25)]
            )
        );
        let expected_settled = vec![
            (
                0,
                SettledSlot {
                    action: "a".into(),
                    value: 1.0,
                    adjustments: vec![],
                },
            ),
            (
                1,
                SettledSlot {
                    action: "b".into(),
                    value: 0.25,
                    adjustments: vec![],
                },
            ),
        ];
        let check = |s: &SledStore| {
            let got = s.event("c", "e1").unwrap().unwrap();
            assert_eq!(got, full);
            assert!(got.is_pruned());
            assert_eq!(s.settled("c", "e1").unwrap(), expected_settled);
        };
        check(&s);
        assert!(s.has_event("c", "e1").unwrap());
        assert!(s.deferred_with_prefix("c", "e").unwrap().is_empty());
        assert_eq!(
            s.join_states("c").map(Result::unwrap).collect::<Vec<_>>(),
            vec![full.clone()]
        );

        // A reward applied while a window is open: its join state answers for the slot (no
        // `S` entry), and the marker at the close.
        let mut d2 = decision_in("c", 20, "e2", 1_000);
        d2.actions.push(d.actions[1].clone());
        let mut open2 = EventRecord::of_decision(&d2);
        s.log_decision(&d2, &open2).unwrap();
        (open2.slots[0].value, open2.slots[0].applied) = (1.0, true);
        s.commit_rewards(&open2, &[reward(&open2, 21, 1.0)], false)
            .unwrap();
        assert_eq!(s.log.scan_prefix(settled_prefix("c", "e2")).count(), 0);
        assert_eq!(s.settled("c", "e2").unwrap(), expected_settled[..1]);
        let mut default2 = default.clone();
        (default2.seq, default2.event_id) = (22, "e2".into());
        let pruned2 = EventRecord {
            actions: Vec::new(),
            slots: Vec::new(),
            closed: true,
            ..open2.clone()
        };
        s.commit_rewards(&pruned2, &[default2], true).unwrap();
        assert_eq!(s.log.scan_prefix(settled_prefix("c", "e2")).count(), 0);
        assert_eq!(s.settled("c", "e2").unwrap(), expected_settled);

        // Deleting the log writes the marker and its implied slots out in full.
        s.delete_log("c", 12).unwrap();
        assert_eq!(ids(&s).1, vec![(20, 0, 1.0), (20, 1, 0.25)]);
        assert!(s.decision("c", 10).unwrap().is_none());
        let stored = s.log.get(join_key("c", "e1")).unwrap().unwrap();
        assert_eq!(stored[0], RECORD_VERSION);
        check(&s);

        // A window open when its log is deleted keeps its vectors in its join state, and so
        // does its marker at the close: its rewards still join to an action.
        let mut d3 = decision_in("c", 30, "e3", 1_000);
        d3.actions.push(d.actions[1].clone());
        s.log_decision(&d3, &EventRecord::of_decision(&d3)).unwrap();
        s.delete_log("c", 30).unwrap();
        let open3 = s.event("c", "e3").unwrap().unwrap();
        assert_eq!(open3.vectors.len(), 2);
        s.commit_rewards(&open3, &[reward(&open3, 31, 1.0)], false)
            .unwrap();
        let mut default3 = default.clone();
        (default3.seq, default3.event_id) = (32, "e3".into());
        let pruned3 = EventRecord {
            slots: Vec::new(),
            closed: true,
            ..open3.clone()
        };
        s.commit_rewards(&pruned3, &[default3], true).unwrap();
        let joined: Vec<_> = s.rewards("c").map(|r| r.unwrap()).collect();
        assert_eq!(
            joined
                .iter()
                .map(|r| (r.event_id.as_str(), r.action.id.as_str()))
                .collect::<Vec<_>>(),
            [("e3", "a"), ("e3", "b")]
        );
        drop(s);
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        check(&s);
    }

    /// Schema 8: the journal's drain moves a closed window's marker out of sled into the
    /// campaign's close files; every read answers as before, after a reopen, after a crash
    /// that left the markers only in the journal (replayed into the close files, and the
    /// closed windows not held open again), and after the log is deleted.
    #[test]
    fn closed_markers_leave_sled_for_the_close_files() {
        fn copy_dir(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                let target = to.join(entry.file_name());
                if entry.file_type().unwrap().is_dir() {
                    copy_dir(&entry.path(), &target);
                } else {
                    std::fs::copy(entry.path(), target).unwrap();
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, 60_000).unwrap();
        let e1 = log(&s, "c", 1, "e1", 1_000);
        let e2 = log(&s, "c", 2, "e2", 1_000);
        let e3 = log(&s, "c", 3, "e3", 9_000);
        let close = |e: &EventRecord, seq: u64, value: f64, kind: RewardKind| {
            let mut r = reward(e, seq, value);
            r.kind = kind;
            let pruned = EventRecord {
                actions: Vec::new(),
                slots: Vec::new(),
                closed: true,
                ..e.clone()
            };
            s.commit_rewards(&pruned, &[r], true).unwrap();
        };
        close(&e1, 4, 1.0, RewardKind::Explicit);
        close(&e2, 5, 0.25, RewardKind::Default);
        let answers = |s: &SledStore| {
            let ids = ["e1", "e2", "e3", "nope"];
            let events: Vec<_> = ids.iter().map(|id| s.event("c", id).unwrap()).collect();
            let has: Vec<_> = ids.iter().map(|id| s.has_event("c", id).unwrap()).collect();
            let settled: Vec<_> = ids.iter().map(|id| s.settled("c", id).unwrap()).collect();
            let mut states: Vec<_> = s.join_states("c").map(Result::unwrap).collect();
            states.sort_by_key(|e| e.decision_seq);
            (events, has, settled, states)
        };
        let before = answers(&s);
        assert_eq!(before.1, [true, true, true, false]);
        assert_eq!(before.2[0][0].1.value, 1.0);
        assert_eq!(before.2[1][0].1.value, 0.25);
        assert_eq!(before.3.len(), 3);
        // The crash: the journal synced, nothing drained.
        s.log.sync().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), crashed.path());

        s.log.drain().unwrap();
        let sled_log = s.db().open_tree("log").unwrap();
        for id in ["e1", "e2"] {
            assert!(
                !sled_log.contains_key(join_key("c", id)).unwrap(),
                "{id}'s marker left sled"
            );
            assert_eq!(s.closes.candidates("c", id).unwrap().len(), 1);
        }
        assert_eq!(answers(&s), before);
        drop((s, sled_log));
        let s = SledStore::open(dir.path(), 1 << 20, 60_000).unwrap();
        assert_eq!(answers(&s), before);
        // A return adjusts a closed slot: its `S` entry wins over the marker.
        let adjusted = SettledSlot {
            action: "a".into(),
            value: 0.0,
            adjustments: vec![],
        };
        s.put_settled("c", "e1", 0, &adjusted).unwrap();
        assert_eq!(s.settled("c", "e1").unwrap(), [(0, adjusted)]);
        // Deleting the log writes e1's marker out in full, since its frame goes.
        s.delete_log("c", 1).unwrap();
        let full = s.log.get(join_key("c", "e1")).unwrap().unwrap();
        assert_eq!(full[0], RECORD_VERSION);
        assert!(s.event("c", "e1").unwrap().unwrap().is_pruned());
        assert_eq!(s.event("c", "e2").unwrap(), before.0[1]);
        drop(s);

        // The crashed copy replays the journal: the markers go to its close files, and the
        // closed windows are not held open again (the sweeper would close them twice).
        let s = SledStore::open(crashed.path(), 1 << 20, 60_000).unwrap();
        assert_eq!(s.marks.open.seq_of("c", "e1"), None);
        assert_eq!(s.marks.open.seq_of("c", "e2"), None);
        assert_eq!(s.marks.open.seq_of("c", "e3"), Some(3));
        assert_eq!(s.due_events(u64::MAX, 10).unwrap(), vec![pair("c", "e3")]);
        assert_eq!(answers(&s), before);
        let sled_log = s.db().open_tree("log").unwrap();
        assert!(!sled_log.contains_key(join_key("c", "e2")).unwrap());
        let _ = e3;
    }

    /// A store created with `compress_pages` compresses its pages and opens so whatever the
    /// setting; one created without stays so (sled refuses a change across restarts). The
    /// same for sled's segment size: new stores get [`SEGMENT_SIZE`], older ones keep theirs.
    #[test]
    fn new_stores_compress_and_older_ones_keep_their_setting() {
        let compressed = || OpenOptions {
            compress_pages: true,
            ..OpenOptions::serving(1 << 20, 100)
        };
        let conf = |dir: &Path| {
            String::from_utf8_lossy(&std::fs::read(dir.join("conf")).unwrap()).into_owned()
        };
        let new = tempfile::tempdir().unwrap();
        drop(SledStore::open_with(new.path(), compressed()).unwrap());
        assert!(conf(new.path()).contains("use_compression: true"));
        assert!(conf(new.path()).contains(&format!("segment_size: {SEGMENT_SIZE}")));
        let s = SledStore::open(new.path(), 1 << 20, 100).unwrap();
        log(&s, "c", 1, "e1", 1_000);
        drop(s);

        let old = tempfile::tempdir().unwrap();
        drop(sled::Config::new().path(old.path()).open().unwrap());
        let s = SledStore::open_with(old.path(), compressed()).unwrap();
        log(&s, "c", 1, "e1", 1_000);
        drop(s);
        assert!(conf(old.path()).contains("use_compression: false"));
        // sled's default segment size, kept (sled refuses to open it with another).
        assert!(conf(old.path()).contains("segment_size: 524288"));
        let s = SledStore::open_with(old.path(), compressed()).unwrap();
        assert_eq!(s.event("c", "e1").unwrap().unwrap().decision_seq, 1);
    }

    #[test]
    fn a_deleted_campaign_takes_its_evaluations_along() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        s.put_campaign("c", b"{}").unwrap();
        s.put_evaluation("c", "ev1", b"1").unwrap();
        s.put_evaluation("c", "_autopilot", b"2").unwrap();
        s.put_evaluation("c2", "ev1", b"3").unwrap();
        s.delete_campaign("c").unwrap();
        assert!(s.evaluations("c").unwrap().is_empty());
        assert_eq!(s.evaluations("c2").unwrap(), vec![b"3".to_vec()]);
    }

    /// Untouched open windows are held in memory only, and rebuilt after a restart from the
    /// frames past the persisted mark; a reward or a close moves a join state to sled.
    #[test]
    fn held_windows_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
            let e1 = log(&s, "c", 1, "e1", 1_000);
            log(&s, "c", 2, "e2", 2_000);
            let e3 = log(&s, "c", 3, "e3", 3_000);
            assert_eq!(s.marks.open.len(), 3);
            assert!(
                !s.log.contains_key(join_key("c", "e2")).unwrap(),
                "nothing in sled at decide time"
            );
            // A reward moves e1 to sled with its window still open; e3's window closes.
            let mut rewarded = e1.clone();
            rewarded.slots[0].value = 1.0;
            s.commit_rewards(&rewarded, &[reward(&e1, 4, 1.0)], false)
                .unwrap();
            let mut pruned = e3.clone();
            pruned.actions.clear();
            pruned.slots.clear();
            pruned.closed = true;
            s.commit_rewards(&pruned, &[], true).unwrap();
            assert_eq!(s.marks.open.len(), 1);
            s.segments.sync().unwrap();
            s.marks.persist(&s.log).unwrap();
            // Past the mark: only in the frames (and memory) when the process dies.
            log(&s, "c", 5, "e5", 5_000);
            s.segments.sync().unwrap();
            s.db.flush().unwrap();
        }
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        assert_eq!(s.marks.open.len(), 2, "e2 and e5 held again");
        assert_eq!(
            s.due_events(10_000, 10).unwrap(),
            vec![pair("c", "e1"), pair("c", "e2"), pair("c", "e5")]
        );
        assert_eq!(s.event("c", "e1").unwrap().unwrap().slots[0].value, 1.0);
        assert_eq!(s.event("c", "e5").unwrap().unwrap().decision_seq, 5);
        assert!(s.event("c", "e3").unwrap().unwrap().is_pruned());
        assert_eq!(s.due_events(2_000, 10).unwrap().len(), 2);
    }

    #[test]
    fn decision_reward_roundtrip_and_pending_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        let e1 = log(&s, "c", 1, "e1", 2_000);
        let e2 = log(&s, "c", 2, "e2", 1_000);
        assert_eq!(s.due_events(1_500, 10).unwrap(), vec![pair("c", "e2")]);
        assert_eq!(
            s.due_events(5_000, 10).unwrap(),
            vec![pair("c", "e2"), pair("c", "e1")]
        );
        let r = reward(&e2, 10, 1.0);
        s.commit_rewards(&e2, std::slice::from_ref(&r), true)
            .unwrap();
        assert_eq!(s.due_events(5_000, 10).unwrap(), vec![pair("c", "e1")]);
        // The reward comes back joined to its decision's action, vector included.
        let all: Vec<_> = s.rewards("c").collect::<Result<_, _>>().unwrap();
        assert_eq!(all, vec![r.clone()]);
        let after: Vec<_> = s.log_after("c", 1).collect::<Result<_, _>>().unwrap();
        assert_eq!(after.len(), 2);
        assert_eq!(after[1], LogRecord::Reward(r));
        assert_eq!(s.decisions("c", 1).count(), 1);
        assert_eq!(s.decision("c", 1).unwrap().unwrap().actions, vec![action()]);
        assert!(
            s.decision("c", 10).unwrap().is_none(),
            "a reward, not a decision"
        );
        assert_eq!(s.event("c", "e1").unwrap().unwrap(), e1);
        assert!(s.event("c", "nope").unwrap().is_none());
        assert!(
            s.event("d", "e1").unwrap().is_none(),
            "event ids are per campaign"
        );
        assert_eq!(s.last_seq("c").unwrap(), 10);
    }

    /// Each campaign reads only its own log, even when another campaign's id extends its own
    /// (`c` and `c2`); deleting a log keeps the decisions whose windows are open.
    #[test]
    fn logs_are_partitioned_by_campaign() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        let open = log(&s, "c", 1, "open", 9_000);
        let mut closed = log(&s, "c", 2, "closed", 1_000);
        log(&s, "c2", 3, "x", 1_000);
        log(&s, "b", 4, "y", 1_000);
        s.commit_rewards(&open, &[reward(&open, 5, 1.0)], false)
            .unwrap();
        closed.actions.clear();
        closed.slots.clear();
        closed.closed = true;
        s.commit_rewards(&closed, &[], true).unwrap();
        assert_eq!(s.decisions("c", 0).count(), 2);
        assert_eq!(s.decisions("c2", 0).count(), 1);
        assert_eq!(s.last_seq("c").unwrap(), 5);
        assert_eq!(s.last_seq("c2").unwrap(), 3);
        assert_eq!(s.last_seq("a").unwrap(), 0);
        assert_eq!(s.delete_log("c", 5).unwrap(), (2, 1));
        assert_eq!(s.decisions("c", 0).count(), 0);
        // The open window's vectors moved to its join state: a later reward still joins.
        let open = s.event("c", "open").unwrap().unwrap();
        assert_eq!(open.vectors, vec![action().x]);
        let late = reward(&open, 6, 0.5);
        s.commit_rewards(&open, std::slice::from_ref(&late), false)
            .unwrap();
        let joined: Vec<_> = s.rewards("c").collect::<Result<_, _>>().unwrap();
        assert_eq!(joined, vec![late]);
        assert_eq!(s.decisions("c2", 0).count(), 1, "other campaigns untouched");
        s.delete_campaign_log("c").unwrap();
        assert_eq!(s.last_seq("c").unwrap(), 0);
        assert!(s.event("c", "open").unwrap().is_none());
        assert!(s.event("c2", "x").unwrap().is_some());
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
    fn deferred_events_are_found_by_prefix_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
            for (seq, (c, id, deferred)) in [
                ("c", "a/1", true),
                ("c", "a/2", true),
                ("c", "a/3", false),
                ("c", "b", true),
                ("d", "a/4", true),
            ]
            .into_iter()
            .enumerate()
            {
                let d = decision_in(c, seq as u64 + 1, id, 10);
                let e = EventRecord {
                    deferred,
                    vectors: Vec::new(),
                    ..event_of(&d)
                };
                s.log_decision(&d, &e).unwrap();
            }
            s.db.flush().unwrap();
        }
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        assert_eq!(
            s.deferred_with_prefix("c", "a/").unwrap(),
            vec!["a/1".to_string(), "a/2".to_string()]
        );
        let mut e = s.event("c", "a/2").unwrap().unwrap();
        assert!(e.deferred);
        e.deferred = false;
        s.put_event(&e).unwrap();
        assert_eq!(s.deferred_with_prefix("c", "a/").unwrap(), vec!["a/1"]);
        assert_eq!(s.deferred_with_prefix("d", "").unwrap(), vec!["a/4"]);
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

    /// Retention: closed decisions up to the first open window go with their rewards (also one
    /// logged after them), join-state markers and settled slots; what stays still reads.
    #[test]
    fn expire_log_takes_closed_decisions_with_their_keys_and_late_rewards() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        let close = |e: &EventRecord| {
            let mut e = e.clone();
            e.actions.clear();
            e.slots.clear();
            e.closed = true;
            e
        };
        let e1 = log(&s, "c", 1, "e1", 1_000);
        let e2 = log(&s, "c", 2, "e2", 1_000);
        let e3 = log(&s, "c", 3, "e3", 9_000);
        log(&s, "other", 4, "e1", 1_000);
        // e1's reward is logged after e2's decision: it must go with e1.
        s.commit_rewards(&close(&e1), &[reward(&e1, 5, 1.0)], true)
            .unwrap();
        s.commit_rewards(&close(&e2), &[], true).unwrap();
        s.commit_rewards(&e3, &[reward(&e3, 6, 0.5)], false)
            .unwrap();
        assert_eq!(s.settled("c", "e1").unwrap().len(), 1);
        // Nothing past what the snapshot covers, nor newer than `before_ms`.
        let none = s.expire_log("c", 0, 0, 0, 10).unwrap();
        assert_eq!(none, crate::store::Expired::default());

        // Whole segments only: e1 and e2 share theirs with e3, whose window is open, so
        // nothing goes yet (the segment is sealed: later decisions start a new one).
        let gone = s.expire_log("c", 0, 6, 0, 10).unwrap();
        assert_eq!(gone, crate::store::Expired::default());
        assert!(s.event("c", "e1").unwrap().is_some());
        let e7 = log(&s, "c", 7, "e7", 9_500);
        assert_eq!(e7.decision_seq, 7);
        s.commit_rewards(&close(&e3), &[], true).unwrap();
        // The markers leave sled for the close files.
        s.log.drain().unwrap();
        assert_eq!(s.closes.candidates("c", "e2").unwrap().len(), 1);

        let gone = s.expire_log("c", 0, 7, 0, 10).unwrap();
        assert_eq!(
            (gone.up_to, gone.decisions, gone.rewards),
            (3, 3, 2),
            "{gone:?}"
        );
        // Their settled slots are in the compact markers (schema 7), which are in the close
        // file retention deletes whole (schema 8): no key of sled's left to remove.
        assert_eq!(gone.keys, 0, "{gone:?}");
        assert!(s.closes.candidates("c", "e2").unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("closes").join("c-c"))
                .unwrap()
                .count(),
            0
        );
        for e in ["e1", "e2", "e3"] {
            assert!(s.event("c", e).unwrap().is_none(), "{e}");
        }
        assert!(s.settled("c", "e1").unwrap().is_empty());
        // The open window stays whole, in the new segment.
        assert_eq!(s.event("c", "e7").unwrap().unwrap().decision_seq, 7);
        let left: Vec<_> = s.decisions("c", 0).map(|d| d.unwrap().seq).collect();
        assert_eq!(left, vec![7]);
        let rewards: Vec<_> = s.rewards("c").collect::<Result<_, _>>().unwrap();
        assert!(rewards.is_empty(), "{rewards:?}");
        // Other campaigns are untouched; a second call finds nothing (the open window stops it).
        assert!(s.event("other", "e1").unwrap().is_some());
        assert_eq!(s.expire_log("c", 0, 7, 0, 10).unwrap().up_to, 0);
        // The segments left open again as they are.
        drop(s);
        let s = SledStore::open(dir.path(), 1 << 20, 100).unwrap();
        let left: Vec<_> = s.decisions("c", 0).map(|d| d.unwrap().seq).collect();
        assert_eq!(left, vec![7]);
    }
}
