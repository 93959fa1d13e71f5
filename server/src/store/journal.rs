//! The `log` tree behind a write-ahead journal: what makes a reward durable without a sled
//! flush.
//!
//! Every write to the `log` tree (rewards, join states, open windows, settled slots, returns,
//! retention and log deletion) goes through [`LogTree::apply`]: the batch is numbered (its
//! LSN), appended to an in-memory journal buffer and applied to sled as one atomic batch that
//! also records the LSN under [`LSN_KEY`], all under one lock, so the journal's order is sled's
//! order. [`LogTree::sync`] (the group commit) writes the buffer to the current journal file
//! and fsyncs it: one small `fdatasync` per group instead of a sled flush, which contended with
//! every batch and bounded durable rewards at about 5,000/s.
//!
//! Sled itself is flushed in the background; [`LogTree::checkpoint`] starts a new journal file,
//! flushes sled, and deletes the older files, whose every record sled now holds. At open,
//! [`LogTree::open`] applies, in order, every journal record above the LSN sled recovered (sled
//! recovers a prefix of its batches), flushes, and starts afresh. A record cut short by a crash
//! was never acknowledged: it ends the replay.
//!
//! A drain (and the replay at open) sends a closed window's compact marker to the campaign's
//! close files instead of sled, where the key is dropped (`closes.rs`); the close files are
//! fsynced before sled is flushed and the LSN recorded.
//!
//! File format (`<data>/journal/<generation>.jnl`): records of length (u32 LE), CRC-32 of the
//! rest (u32 LE), LSN (u64 LE), then operations: tag (0 insert, 1 remove), key length (u32 LE),
//! key, and for an insert value length (u32 LE) and value.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::closes::Closes;
use super::StoreError;

/// Key of the `log` tree holding the LSN of the last batch applied (big-endian). Outside every
/// key family (`L`, `E`, `P`, `S`), so no range scan meets it.
pub(super) const LSN_KEY: &[u8] = b"\xffjournal-lsn";

/// Start a new journal file (and flush sled) once the current one holds this much...
const CHECKPOINT_BYTES: u64 = 4 << 20;
/// ...or has held anything for this long: bounds the replay at open.
const CHECKPOINT_AGE: Duration = Duration::from_secs(2);

/// Writes of one atomic change to the `log` tree.
#[derive(Default)]
pub(super) struct LogBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl LogBatch {
    pub(super) fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    pub(super) fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((key.as_ref().to_vec(), None));
    }

    fn encode(&self, lsn: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&lsn.to_le_bytes());
        for (k, v) in &self.ops {
            out.push(u8::from(v.is_none()));
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            if let Some(v) = v {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
        let body = &out[start + 8..];
        let len = body.len() as u32;
        let crc = crc32fast::hash(body);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// The batch's writes as one sled batch, without the LSN: the replay records it once the
    /// close files hold the markers it routed there.
    fn to_sled(&self, closes: &Closes) -> Result<sled::Batch, StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in &self.ops {
            route(&mut b, closes, k, v.as_deref())?;
        }
        Ok(b)
    }
}

/// Add one write to a sled batch; a closed window's marker goes to the close files instead,
/// and sled drops the key ([`Closes::take`]).
fn route(
    b: &mut sled::Batch,
    closes: &Closes,
    k: &[u8],
    v: Option<&[u8]>,
) -> Result<(), StoreError> {
    match v {
        Some(v) if !closes.take(k, v)? => b.insert(k, v),
        _ => b.remove(k),
    }
    Ok(())
}

/// Decode the records of one journal file: `(lsn, batch)` in order, up to the first record
/// that is cut short or fails its CRC.
fn decode_records(bytes: &[u8]) -> (Vec<(u64, LogBatch)>, bool) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 8) else {
            return (out, true);
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let Some(body) = bytes.get(at + 8..at + 8 + len) else {
            return (out, true);
        };
        if crc32fast::hash(body) != crc {
            return (out, true);
        }
        match decode_body(body) {
            Some(rec) => out.push(rec),
            None => return (out, true),
        }
        at += 8 + len;
    }
    (out, false)
}

fn decode_body(body: &[u8]) -> Option<(u64, LogBatch)> {
    let mut r = Reader(body);
    let lsn = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let mut batch = LogBatch::default();
    while !r.0.is_empty() {
        let tag = r.take(1)?[0];
        let klen = r.u32()? as usize;
        let key = r.take(klen)?.to_vec();
        match tag {
            0 => {
                let vlen = r.u32()? as usize;
                let value = r.take(vlen)?.to_vec();
                batch.ops.push((key, Some(value)));
            }
            1 => batch.ops.push((key, None)),
            _ => return None,
        }
    }
    Some((lsn, batch))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

/// Writes not yet in sled: newest value of each key (`None`: removed).
type Table = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
/// One pending write: key, and its value or `None` for a removal.
type Entry = (Vec<u8>, Option<Vec<u8>>);

/// What `apply` changes, under one lock.
struct Tables {
    /// The last LSN handed out.
    lsn: u64,
    /// Journal records not yet written to the file.
    buf: Vec<u8>,
    /// Writes since the last drain began.
    active: Table,
    /// Writes a drain is applying to sled: still read from here until it is done.
    frozen: Option<Arc<Table>>,
}

/// The journal file being appended to.
struct Out {
    file: File,
    generation: u64,
    /// Bytes written to `file`.
    len: u64,
    /// When `file` first received a record.
    since: Option<Instant>,
}

/// The `log` tree: sled plus the writes not yet drained into it. Writes only through
/// [`LogTree::apply`]; reads see the newest value.
pub(super) struct LogTree {
    tree: sled::Tree,
    /// Where the drain sends closed windows' markers.
    closes: Arc<Closes>,
    dir: PathBuf,
    tables: Mutex<Tables>,
    /// Lock order: `draining` → `out` → `tables`.
    out: Mutex<Out>,
    /// One drain at a time.
    draining: Mutex<()>,
}

fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        what,
        message: e.to_string(),
    }
}

fn file_name(generation: u64) -> String {
    format!("{generation:020}.jnl")
}

/// The journal files in `dir`, oldest first.
fn generations(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err("journal directory"))? {
        let entry = entry.map_err(io_err("journal directory"))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".jnl")) else {
            continue;
        };
        if let Ok(g) = stem.parse::<u64>() {
            out.push(g);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("journal directory sync"))
}

fn lsn_of(tree: &sled::Tree) -> Result<u64, StoreError> {
    Ok(match tree.get(LSN_KEY)? {
        Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            what: "journal lsn",
            message: "not 8 bytes".into(),
        })?),
        None => 0,
    })
}

/// Sled writes per batch when a drain applies the frozen table (keeps sled's global write
/// lock short; atomicity comes from the journal, not from these batches).
const DRAIN_CHUNK: usize = 256;
/// A writer drains inline once this many keys wait (bounds the table's memory).
const MAX_ACTIVE: usize = 1 << 16;

impl LogTree {
    /// Open the journal in `dir` over `tree`: apply what sled lost, flush, start a new file.
    pub(super) fn open(
        db: &sled::Db,
        tree: sled::Tree,
        dir: &Path,
        closes: Arc<Closes>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err("journal directory"))?;
        let recovered = lsn_of(&tree)?;
        let mut lsn = recovered;
        let mut replayed = 0u64;
        let found = generations(dir)?;
        for (i, &g) in found.iter().enumerate() {
            let bytes = std::fs::read(dir.join(file_name(g))).map_err(io_err("journal read"))?;
            let (records, torn) = decode_records(&bytes);
            for (rec_lsn, batch) in records {
                if rec_lsn <= lsn {
                    continue;
                }
                if rec_lsn != lsn + 1 {
                    // Only after a drain whose writes sled made durable but whose LSN it had
                    // not yet: the missing records are in sled.
                    tracing::warn!(
                        expected = lsn + 1,
                        found = rec_lsn,
                        "journal resumes past sled's recorded LSN"
                    );
                }
                tree.apply_batch(batch.to_sled(&closes)?)?;
                lsn = rec_lsn;
                replayed += 1;
            }
            if torn && i + 1 < found.len() {
                tracing::warn!(
                    file = %file_name(g),
                    "a journal file other than the last ends in a cut-short record"
                );
            }
        }
        if replayed > 0 {
            tracing::info!(
                replayed,
                from = recovered,
                to = lsn,
                "log writes recovered from the journal"
            );
        }
        // The markers the replay routed are durable before sled's LSN says the records are
        // applied (sled flushes in the background meanwhile; a crash before this point replays
        // the same records again, which ends in the same state).
        closes.sync()?;
        if lsn > recovered {
            tree.insert(LSN_KEY, &lsn.to_be_bytes())?;
        }
        db.flush()?;
        for &g in &found {
            std::fs::remove_file(dir.join(file_name(g))).map_err(io_err("journal remove"))?;
        }
        let generation = found.last().map_or(1, |g| g + 1);
        let file = Self::create(dir, generation)?;
        Ok(Self {
            tree,
            closes,
            dir: dir.to_path_buf(),
            tables: Mutex::new(Tables {
                lsn,
                buf: Vec::with_capacity(64 << 10),
                active: Table::new(),
                frozen: None,
            }),
            out: Mutex::new(Out {
                file,
                generation,
                len: 0,
                since: None,
            }),
            draining: Mutex::new(()),
        })
    }

    fn create(dir: &Path, generation: u64) -> Result<File, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(file_name(generation)))
            .map_err(io_err("journal create"))?;
        sync_dir(dir)?;
        Ok(file)
    }

    /// Apply `batch`: numbered, journaled (in memory) and visible to every read at once, as a
    /// whole. Durable after the next [`sync`](Self::sync); in sled after the next drain.
    pub(super) fn apply(&self, batch: LogBatch) -> Result<(), StoreError> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        let full = {
            let mut t = self.tables.lock();
            t.lsn += 1;
            let lsn = t.lsn;
            batch.encode(lsn, &mut t.buf);
            for (k, v) in batch.ops {
                t.active.insert(k, v);
            }
            t.active.len() >= MAX_ACTIVE
        };
        if full {
            self.drain()?;
        }
        Ok(())
    }

    /// Insert one key (through the journal).
    pub(super) fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), StoreError> {
        let mut b = LogBatch::default();
        b.insert(key, value);
        self.apply(b)
    }

    /// Remove one key (through the journal).
    pub(super) fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), StoreError> {
        let mut b = LogBatch::default();
        b.remove(key);
        self.apply(b)
    }

    /// Write out and fsync every batch applied so far.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        let mut out = self.out.lock();
        let buf = std::mem::take(&mut self.tables.lock().buf);
        Self::write_out(&mut out, buf)
    }

    /// Under the `out` lock: append `buf` (taken from the tables) to the current file and fsync
    /// it. Every holder of `out` that takes the buffer syncs it before letting go, so a `sync`
    /// that finds the buffer empty knows everything before it is durable.
    fn write_out(out: &mut Out, buf: Vec<u8>) -> Result<(), StoreError> {
        if buf.is_empty() {
            return Ok(());
        }
        out.file.write_all(&buf).map_err(io_err("journal write"))?;
        out.file.sync_data().map_err(io_err("journal sync"))?;
        out.len += buf.len() as u64;
        out.since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Move every write so far into sled and flush it: the journal is synced first (so sled
    /// never holds a write the journal could lose), then the writes go to sled in chunks,
    /// sled is flushed, and only then is the LSN recorded, so sled's LSN never claims a write
    /// it does not durably hold. Reads keep seeing the frozen writes until they are in sled.
    pub(super) fn drain(&self) -> Result<(), StoreError> {
        let _one = self.draining.lock();
        let (frozen, lsn) = {
            let mut out = self.out.lock();
            let (buf, frozen, lsn) = {
                let mut t = self.tables.lock();
                if t.active.is_empty() {
                    (std::mem::take(&mut t.buf), None, t.lsn)
                } else {
                    let frozen = Arc::new(std::mem::take(&mut t.active));
                    t.frozen = Some(frozen.clone());
                    (std::mem::take(&mut t.buf), Some(frozen), t.lsn)
                }
            };
            Self::write_out(&mut out, buf)?;
            (frozen, lsn)
        };
        let Some(frozen) = frozen else {
            return Ok(());
        };
        let applied = self.apply_to_sled(&frozen, lsn);
        let mut t = self.tables.lock();
        t.frozen = None;
        if applied.is_err() {
            // Keep them readable (and retried by the next drain); newer writes win.
            let frozen = Arc::try_unwrap(frozen).unwrap_or_else(|f| (*f).clone());
            for (k, v) in frozen {
                t.active.entry(k).or_insert(v);
            }
        }
        applied
    }

    fn apply_to_sled(&self, table: &Table, lsn: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for (k, v) in table {
            route(&mut batch, &self.closes, k, v.as_deref())?;
            n += 1;
            if n == DRAIN_CHUNK {
                self.tree.apply_batch(std::mem::take(&mut batch))?;
                n = 0;
            }
        }
        self.tree.apply_batch(batch)?;
        // The markers before sled: a recorded LSN never passes one the close files could lose.
        self.closes.sync()?;
        self.tree.flush()?;
        self.tree.insert(LSN_KEY, &lsn.to_be_bytes())?;
        Ok(())
    }

    /// Drain, and when the current journal file is large or old enough start a new one and
    /// delete the older files (sled holds every record of them once the drain after the switch
    /// is flushed). Called by the log syncer thread every `flush_every_ms`.
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        let old = {
            let mut out = self.out.lock();
            let due = out.len >= CHECKPOINT_BYTES
                || out.since.is_some_and(|t| t.elapsed() >= CHECKPOINT_AGE);
            if due {
                let buf = std::mem::take(&mut self.tables.lock().buf);
                Self::write_out(&mut out, buf)?;
                let generation = out.generation + 1;
                out.file = Self::create(&self.dir, generation)?;
                out.len = 0;
                out.since = None;
                Some(std::mem::replace(&mut out.generation, generation))
            } else {
                None
            }
        };
        self.drain()?;
        if let Some(old) = old {
            // The drain applied and flushed every record of the older files; make the LSN that
            // says so durable before they go.
            self.tree.flush()?;
            for g in generations(&self.dir)? {
                if g <= old {
                    std::fs::remove_file(self.dir.join(file_name(g)))
                        .map_err(io_err("journal remove"))?;
                }
            }
        }
        Ok(())
    }

    /// The not-yet-drained value of `key`: `Some(None)` when it was removed, `None` when only
    /// sled knows.
    fn pending(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let t = self.tables.lock();
        t.active
            .get(key)
            .or_else(|| t.frozen.as_ref().and_then(|f| f.get(key)))
            .cloned()
    }

    pub(super) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<sled::IVec>, StoreError> {
        match self.pending(key.as_ref()) {
            Some(v) => Ok(v.map(sled::IVec::from)),
            None => Ok(self.tree.get(key)?),
        }
    }

    pub(super) fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        match self.pending(key.as_ref()) {
            Some(v) => Ok(v.is_some()),
            None => Ok(self.tree.contains_key(key)?),
        }
    }

    /// The pending writes with keys in `range`, newest value per key, in key order.
    fn pending_in(&self, range: (Bound<&[u8]>, Bound<&[u8]>)) -> Vec<Entry> {
        let t = self.tables.lock();
        let mut merged: Table = match &t.frozen {
            Some(f) => f
                .range::<[u8], _>(range)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            None => Table::new(),
        };
        for (k, v) in t.active.range::<[u8], _>(range) {
            merged.insert(k.clone(), v.clone());
        }
        merged.into_iter().collect()
    }

    /// Entries with keys in `range`, in key order (pending writes over sled's).
    pub(super) fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Merged {
        let bounds = (
            range.start_bound().map(|k| k.as_ref()),
            range.end_bound().map(|k| k.as_ref()),
        );
        let pending = self.pending_in(bounds);
        Merged::new(self.tree.range(range), pending)
    }

    /// Entries whose keys start with `prefix`, in key order.
    pub(super) fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Merged {
        let prefix = prefix.as_ref();
        let pending = self
            .pending_in((Bound::Included(prefix), Bound::Unbounded))
            .into_iter()
            .take_while(|(k, _)| k.starts_with(prefix))
            .collect();
        Merged::new(self.tree.scan_prefix(prefix), pending)
    }

    /// The last key in `range` that holds a value.
    pub(super) fn last_key<K: AsRef<[u8]>, R: RangeBounds<K>>(
        &self,
        range: R,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let bounds = (
            range.start_bound().map(|k| k.as_ref()),
            range.end_bound().map(|k| k.as_ref()),
        );
        let pending = self.pending_in(bounds);
        let removed: std::collections::HashSet<&[u8]> = pending
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.as_slice())
            .collect();
        let pending_last = pending
            .iter()
            .rev()
            .find(|(_, v)| v.is_some())
            .map(|(k, _)| k.clone());
        let mut sled_last = None;
        for kv in self.tree.range(range).rev() {
            let (k, _) = kv?;
            if !removed.contains(k.as_ref()) {
                sled_last = Some(k.to_vec());
                break;
            }
        }
        Ok(pending_last.max(sled_last))
    }
}

impl Drop for LogTree {
    fn drop(&mut self) {
        if let Err(e) = self.drain() {
            tracing::error!(error = %e, "log writes not drained at close; the journal keeps them");
        }
    }
}

/// Sled's entries merged with the pending writes (which win; a pending removal hides the key).
pub(super) struct Merged {
    sled: std::iter::Peekable<sled::Iter>,
    pending: std::iter::Peekable<std::vec::IntoIter<Entry>>,
}

impl Merged {
    fn new(sled: sled::Iter, pending: Vec<Entry>) -> Self {
        Self {
            sled: sled.peekable(),
            pending: pending.into_iter().peekable(),
        }
    }
}

impl Iterator for Merged {
    type Item = sled::Result<(sled::IVec, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let sled_key = match self.sled.peek() {
                Some(Ok((k, _))) => Some(k.clone()),
                Some(Err(_)) => return self.sled.next(),
                None => None,
            };
            let take_pending = match (&sled_key, self.pending.peek()) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(s), Some((p, _))) => p.as_slice() <= s.as_ref(),
            };
            if !take_pending {
                return self.sled.next();
            }
            let (k, v) = self.pending.next()?;
            if sled_key.as_deref() == Some(k.as_slice()) {
                self.sled.next();
            }
            if let Some(v) = v {
                return Some(Ok((sled::IVec::from(k), sled::IVec::from(v))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (sled::Db, LogTree) {
        let db = sled::Config::new()
            .path(dir.join("db"))
            .flush_every_ms(None)
            .open()
            .unwrap();
        let tree = db.open_tree("log").unwrap();
        let closes = Arc::new(Closes::open(&dir.join("closes"), (1, 2)).unwrap());
        let log = LogTree::open(&db, tree, &dir.join("journal"), closes).unwrap();
        (db, log)
    }

    #[test]
    fn records_round_trip_and_stop_at_a_torn_tail() {
        let mut buf = Vec::new();
        let mut a = LogBatch::default();
        a.insert(b"k1", b"v1");
        a.remove(b"k2");
        a.encode(7, &mut buf);
        let mut b = LogBatch::default();
        b.insert(b"k3", b"");
        b.encode(8, &mut buf);
        let (recs, torn) = decode_records(&buf);
        assert!(!torn);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].0, 7);
        assert_eq!(
            recs[0].1.ops,
            vec![
                (b"k1".to_vec(), Some(b"v1".to_vec())),
                (b"k2".to_vec(), None)
            ]
        );
        assert_eq!(recs[1].1.ops, vec![(b"k3".to_vec(), Some(Vec::new()))]);
        // Cut anywhere inside the second record: the first survives alone.
        for cut in (buf.len() - 20)..buf.len() {
            let (recs, torn) = decode_records(&buf[..cut]);
            assert!(torn, "cut at {cut}");
            assert_eq!(recs.len(), 1);
        }
        // A flipped bit fails the CRC.
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(decode_records(&bad).0.len(), 1);
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    #[test]
    fn synced_writes_sled_never_flushed_are_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        let (_db, log) = open(dir.path());
        for i in 0u32..100 {
            let mut b = LogBatch::default();
            b.insert(format!("L{i:04}"), i.to_be_bytes());
            if i > 0 {
                b.remove(format!("P{:04}", i - 1));
            }
            b.insert(format!("P{i:04}"), b"");
            log.apply(b).unwrap();
        }
        log.sync().unwrap();
        // What a kill -9 leaves on disk now: sled never flushed (no background flusher here),
        // the journal synced.
        copy_dir(dir.path(), crashed.path());
        let (_db2, recovered) = open(crashed.path());
        for i in 0u32..100 {
            assert_eq!(
                recovered.get(format!("L{i:04}")).unwrap().unwrap().as_ref(),
                i.to_be_bytes()
            );
        }
        assert!(recovered.contains_key(b"P0099").unwrap());
        assert!(!recovered.contains_key(b"P0098").unwrap());
        assert_eq!(lsn_of(&recovered.tree).unwrap(), 100);
    }

    #[test]
    fn replay_applies_only_what_sled_lacks_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("journal");
        std::fs::create_dir_all(&jdir).unwrap();
        // A journal of three batches over the same key; sled already holds the first.
        let mut buf = Vec::new();
        for (lsn, v) in [(1u64, "one"), (2, "two"), (3, "three")] {
            let mut b = LogBatch::default();
            b.insert(b"E1", v);
            if lsn == 3 {
                b.remove(b"P1");
            } else {
                b.insert(b"P1", b"");
            }
            b.encode(lsn, &mut buf);
        }
        // And a torn fourth record.
        let mut b = LogBatch::default();
        b.insert(b"E1", b"four");
        let mut torn = Vec::new();
        b.encode(4, &mut torn);
        buf.extend_from_slice(&torn[..torn.len() - 3]);
        std::fs::write(jdir.join(file_name(5)), &buf).unwrap();
        {
            let db = sled::Config::new()
                .path(dir.path().join("db"))
                .open()
                .unwrap();
            let tree = db.open_tree("log").unwrap();
            let mut first = LogBatch::default();
            first.insert(b"E1", b"one");
            first.insert(b"P1", b"");
            let closes = Closes::open(&dir.path().join("closes"), (1, 2)).unwrap();
            tree.apply_batch(first.to_sled(&closes).unwrap()).unwrap();
            tree.insert(LSN_KEY, &1u64.to_be_bytes()).unwrap();
            // Something newer than the journal's first record, which replay must not undo
            // (cannot happen in use: every write goes through the journal; here it shows the
            // LSN gate).
            tree.insert(b"X", b"kept").unwrap();
            db.flush().unwrap();
        }
        let (_db, log) = open(dir.path());
        assert_eq!(log.get(b"E1").unwrap().unwrap().as_ref(), b"three");
        assert!(log.get(b"P1").unwrap().is_none());
        assert_eq!(log.get(b"X").unwrap().unwrap().as_ref(), b"kept");
        assert_eq!(lsn_of(&log.tree).unwrap(), 3);
        // The old file is gone; a new, empty one started after it.
        assert_eq!(generations(&jdir).unwrap(), vec![6]);
        // New writes continue the numbering; readable at once, in sled after a drain.
        let mut b = LogBatch::default();
        b.insert(b"E2", b"x");
        log.apply(b).unwrap();
        assert_eq!(log.get(b"E2").unwrap().unwrap().as_ref(), b"x");
        assert!(log.tree.get(b"E2").unwrap().is_none());
        log.drain().unwrap();
        assert_eq!(log.tree.get(b"E2").unwrap().unwrap().as_ref(), b"x");
        assert_eq!(lsn_of(&log.tree).unwrap(), 4);
    }

    #[test]
    fn checkpoint_deletes_files_sled_covers() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, log) = open(dir.path());
        let jdir = dir.path().join("journal");
        let mut b = LogBatch::default();
        b.insert(b"a", b"1");
        log.apply(b).unwrap();
        log.sync().unwrap();
        // Not due yet: drained into sled, same file.
        log.checkpoint().unwrap();
        assert_eq!(generations(&jdir).unwrap().len(), 1);
        assert_eq!(log.tree.get(b"a").unwrap().unwrap().as_ref(), b"1");
        assert_eq!(lsn_of(&log.tree).unwrap(), 1);
        log.out.lock().since = Some(Instant::now() - CHECKPOINT_AGE);
        log.checkpoint().unwrap();
        let files = generations(&jdir).unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(
            std::fs::metadata(jdir.join(file_name(files[0])))
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn reads_merge_pending_writes_over_sled() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, log) = open(dir.path());
        let put = |k: &str, v: &str| log.insert(k, v).unwrap();
        for k in ["L1", "L2", "L3", "L5", "S1"] {
            put(k, "old");
        }
        log.drain().unwrap();
        // Pending: an overwrite, a removal, a new key between, one past the end, one before.
        put("L2", "new");
        log.remove("L3").unwrap();
        put("L4", "new");
        put("L6", "new");
        put("L0", "new");
        let all = |it: Merged| -> Vec<(String, String)> {
            it.map(|kv| {
                let (k, v) = kv.unwrap();
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect()
        };
        let want = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            all(log.scan_prefix("L")),
            want(&[
                ("L0", "new"),
                ("L1", "old"),
                ("L2", "new"),
                ("L4", "new"),
                ("L5", "old"),
                ("L6", "new")
            ])
        );
        assert_eq!(
            all(log.range("L2".."L5")),
            want(&[("L2", "new"), ("L4", "new")])
        );
        assert_eq!(
            log.last_key("L0".."L6").unwrap().as_deref(),
            Some(b"L5".as_slice())
        );
        log.remove("L5").unwrap();
        assert_eq!(
            log.last_key("L0".."L6").unwrap().as_deref(),
            Some(b"L4".as_slice())
        );
        assert!(!log.contains_key("L3").unwrap());
        assert!(log.contains_key("L4").unwrap());
        assert_eq!(log.get("L2").unwrap().unwrap().as_ref(), b"new");
        // The same answers once everything is in sled.
        log.drain().unwrap();
        assert!(log.tables.lock().active.is_empty());
        assert_eq!(
            all(log.scan_prefix("L")),
            want(&[
                ("L0", "new"),
                ("L1", "old"),
                ("L2", "new"),
                ("L4", "new"),
                ("L6", "new")
            ])
        );
        assert!(log.tree.get("L3").unwrap().is_none());
    }
}
