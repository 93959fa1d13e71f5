//! Decision logs as append-only segment files, one directory per campaign (schema 4).
//!
//! `<data>/logs/c-<campaign>/<first seq, 20 digits>.seg` holds a run of frames in increasing
//! sequence order:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | payload length (u32 LE) |
//! | 4 | CRC-32 of the sequence number and payload (u32 LE) |
//! | 8 | sequence number (u64 LE) |
//! | length | payload: the versioned `LogEntry::Decision` encoding |
//!
//! An append copies its frame into the campaign's memory buffer: no syscall on the decide path.
//! The buffer is written out once it passes [`WRITE_OUT`] bytes and at every [`Segments::sync`]
//! (the store's flush: the group commit, and a periodic thread), which then fsyncs what was
//! written. Opening checks every frame; a frame whose length or CRC does not check is a torn
//! tail, and the segment is cut there. A segment rewritten (log deletion, shopper scrubbing) is
//! written beside it, synced and renamed over it, so a crash leaves either version whole.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::StoreError;

const HEADER: usize = 16;
/// Buffered bytes that trigger a write to the segment file.
const WRITE_OUT: usize = 128 * 1024;
/// A segment takes no more appends past this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// One sparse-index point per this many bytes of a segment.
const INDEX_EVERY: u64 = 4096;
/// Largest payload accepted when reading (a decision with its logged request is far smaller).
const MAX_PAYLOAD: u32 = 16 * 1024 * 1024;

/// Every campaign's decision log.
pub(super) struct Segments {
    root: PathBuf,
    logs: RwLock<HashMap<String, Arc<Mutex<CampaignLog>>>>,
    root_unsynced: AtomicBool,
}

struct Segment {
    first_seq: u64,
    /// Highest sequence number in the segment; 0 while it is empty.
    last_seq: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes on the file (the rest of an active segment is in its log's buffer).
    written: u64,
    /// (seq, position) of a frame at least every [`INDEX_EVERY`] bytes, the first frame included.
    index: Vec<(u64, u64)>,
}

struct CampaignLog {
    dir: PathBuf,
    /// Oldest first; the last one takes the appends.
    segments: Vec<Segment>,
    /// Frames of the last segment past its `written` bytes.
    buf: Vec<u8>,
    /// Sequence number of the first frame in `buf`.
    buf_first_seq: Option<u64>,
    /// Files written since the last sync.
    unsynced: Vec<Arc<File>>,
    dir_unsynced: bool,
}

fn io_err(what: &'static str) -> impl Fn(io::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        what,
        message: e.to_string(),
    }
}

fn frame_crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn push_frame(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame_crc(seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// (payload length, crc, seq) of a frame header.
fn parse_header(h: &[u8; HEADER]) -> (u32, u32, u64) {
    let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
    (len, crc, seq)
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// Reads `[pos, end)` of a file without moving a shared cursor.
struct At {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for At {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Read one frame from `r`: `Ok(None)` at a clean end, `Err` on a torn or corrupt frame.
fn read_frame(r: &mut impl Read) -> io::Result<Option<(u64, Vec<u8>)>> {
    let mut h = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        let n = r.read(&mut h[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "torn frame header",
                ))
            };
        }
        got += n;
    }
    let (len, crc, seq) = parse_header(&h);
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    if frame_crc(seq, &payload) != crc {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame CRC mismatch",
        ));
    }
    Ok(Some((seq, payload)))
}

impl Segment {
    /// Open a segment file, check every frame and cut a torn tail. Returns the segment and
    /// whether it was cut.
    fn open(path: PathBuf, first_seq: u64) -> Result<(Self, bool), StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("log segment"))?;
        let size = file.metadata().map_err(io_err("log segment"))?.len();
        let file = Arc::new(file);
        let mut seg = Self {
            first_seq,
            last_seq: 0,
            path,
            file: file.clone(),
            written: 0,
            index: Vec::new(),
        };
        let mut r = BufReader::with_capacity(
            256 * 1024,
            At {
                file,
                pos: 0,
                end: size,
            },
        );
        let mut pos = 0u64;
        let mut cut = false;
        loop {
            match read_frame(&mut r) {
                Ok(Some((seq, payload))) => {
                    seg.note(seq, pos);
                    pos += (HEADER + payload.len()) as u64;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(segment = %seg.path.display(), at = pos, error = %e,
                        "decision log segment ends in a torn or corrupt frame; cutting it there");
                    seg.file.set_len(pos).map_err(io_err("log segment"))?;
                    cut = true;
                    break;
                }
            }
        }
        seg.written = pos;
        Ok((seg, cut))
    }

    /// Record a frame of `seq` at `pos` in the sparse index.
    fn note(&mut self, seq: u64, pos: u64) {
        if self
            .index
            .last()
            .is_none_or(|&(_, p)| pos - p >= INDEX_EVERY)
        {
            self.index.push((seq, pos));
        }
        self.last_seq = seq;
    }

    /// Position of the last index point at or before `seq` (0 when none).
    fn start_for(&self, seq: u64) -> u64 {
        let i = self.index.partition_point(|&(s, _)| s <= seq);
        if i == 0 {
            0
        } else {
            self.index[i - 1].1
        }
    }
}

impl CampaignLog {
    fn open(dir: PathBuf) -> Result<Self, StoreError> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("log directory"))? {
            let path = entry.map_err(io_err("log directory"))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                // A rewrite that did not reach its rename: the original is still there.
                fs::remove_file(&path).map_err(io_err("log segment"))?;
            } else if let Some(first) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                found.push((first, path));
            }
        }
        found.sort();
        let mut segments: Vec<Segment> = Vec::with_capacity(found.len());
        for (first, path) in found {
            let (seg, _) = Segment::open(path, first)?;
            // A rewrite renamed its result into place but crashed before removing the segment it
            // replaced: that older segment covers the same frames and more, all meant to go.
            if let Some(prev) = segments.last() {
                if prev.last_seq >= seg.first_seq && seg.last_seq > 0 {
                    let prev = segments.pop().expect("checked");
                    fs::remove_file(&prev.path).map_err(io_err("log segment"))?;
                }
            }
            segments.push(seg);
        }
        Ok(Self {
            dir,
            segments,
            buf: Vec::new(),
            buf_first_seq: None,
            unsynced: Vec::new(),
            dir_unsynced: false,
        })
    }

    fn last_seq(&self) -> u64 {
        self.segments
            .iter()
            .rev()
            .map(|s| s.last_seq)
            .find(|&s| s > 0)
            .unwrap_or(0)
    }

    fn mark_unsynced(&mut self, file: &Arc<File>) {
        if !self.unsynced.iter().any(|f| Arc::ptr_eq(f, file)) {
            self.unsynced.push(file.clone());
        }
    }

    /// Write the buffer to the last segment's file.
    fn write_out(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let seg = self
            .segments
            .last_mut()
            .expect("a buffer implies a segment");
        seg.file
            .write_all_at(&self.buf, seg.written)
            .map_err(io_err("log segment write"))?;
        seg.written += self.buf.len() as u64;
        self.buf.clear();
        self.buf_first_seq = None;
        let file = seg.file.clone();
        self.mark_unsynced(&file);
        Ok(())
    }

    /// Start a new segment whose first frame will be `first_seq`.
    fn roll(&mut self, first_seq: u64) -> Result<(), StoreError> {
        self.write_out()?;
        let path = self.dir.join(segment_name(first_seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("log segment create"))?;
        self.segments.push(Segment {
            first_seq,
            last_seq: 0,
            path,
            file: Arc::new(file),
            written: 0,
            index: Vec::new(),
        });
        self.dir_unsynced = true;
        Ok(())
    }

    fn append(&mut self, seq: u64, payload: &[u8]) -> Result<(), StoreError> {
        let full = self
            .segments
            .last()
            .is_none_or(|s| s.written + self.buf.len() as u64 >= SEGMENT_BYTES);
        if full {
            self.roll(seq)?;
        }
        let seg = self.segments.last_mut().expect("rolled");
        seg.note(seq, seg.written + self.buf.len() as u64);
        self.buf_first_seq.get_or_insert(seq);
        push_frame(&mut self.buf, seq, payload);
        Ok(())
    }

    /// Bytes `[pos, pos + len)` of segment `i`, from its file and the buffer.
    fn read_at(&self, i: usize, pos: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let seg = &self.segments[i];
        let mut out = vec![0u8; len];
        let on_file = seg.written.saturating_sub(pos).min(len as u64) as usize;
        if on_file > 0 {
            seg.file
                .read_exact_at(&mut out[..on_file], pos)
                .map_err(io_err("log segment read"))?;
        }
        if on_file < len {
            let from = (pos + on_file as u64 - seg.written) as usize;
            let tail = self
                .buf
                .get(from..from + (len - on_file))
                .filter(|_| i + 1 == self.segments.len())
                .ok_or_else(|| StoreError::Corrupt {
                    what: "log segment read",
                    message: format!("{} has no bytes at {pos}", seg.path.display()),
                })?;
            out[on_file..].copy_from_slice(tail);
        }
        Ok(out)
    }

    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let i = self.segments.partition_point(|s| s.first_seq <= seq);
        if i == 0 {
            return Ok(None);
        }
        let i = i - 1;
        let seg = &self.segments[i];
        if seq > seg.last_seq {
            return Ok(None);
        }
        let end = seg.written
            + if i + 1 == self.segments.len() {
                self.buf.len() as u64
            } else {
                0
            };
        let mut pos = seg.start_for(seq);
        // The frame is within one index interval (plus the frame itself) of its index point:
        // read that span at once and walk its headers in memory, not a read per header.
        while pos + HEADER as u64 <= end {
            let window = self.read_at(i, pos, (end - pos).min(2 * INDEX_EVERY) as usize)?;
            let mut off = 0;
            while off + HEADER <= window.len() {
                let h: [u8; HEADER] = window[off..off + HEADER].try_into().expect("header");
                let (len, _, at) = parse_header(&h);
                let start = off + HEADER;
                if at == seq {
                    return match window.get(start..start + len as usize) {
                        Some(payload) => Ok(Some(payload.to_vec())),
                        None => self.read_at(i, pos + start as u64, len as usize).map(Some),
                    };
                }
                if at > seq {
                    return Ok(None);
                }
                off = start + len as usize;
            }
            pos += off as u64;
        }
        Ok(None)
    }

    /// The parts to read for the frames above `after`, as of now.
    fn parts_after(&self, after: u64) -> VecDeque<Part> {
        let mut parts = VecDeque::new();
        let n = self.segments.len();
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.last_seq <= after {
                continue;
            }
            let start = seg.start_for(after.saturating_add(1));
            if start < seg.written {
                parts.push_back(Part::File(At {
                    file: seg.file.clone(),
                    pos: start,
                    end: seg.written,
                }));
            }
            if i + 1 == n && !self.buf.is_empty() {
                let from = start.saturating_sub(seg.written) as usize;
                parts.push_back(Part::Mem(io::Cursor::new(self.buf[from..].to_vec())));
            }
        }
        parts
    }

    /// Rewrite segment `i` keeping (and possibly changing) its frames through `keep`; the new
    /// file replaces it under the name of its first kept frame. Removes the segment when
    /// nothing is kept.
    fn rewrite(
        &mut self,
        i: usize,
        mut keep: impl FnMut(u64, Vec<u8>) -> Result<Option<Vec<u8>>, StoreError>,
    ) -> Result<(), StoreError> {
        if i + 1 == self.segments.len() {
            self.write_out()?;
        }
        let seg = &self.segments[i];
        let mut r = BufReader::with_capacity(
            256 * 1024,
            At {
                file: seg.file.clone(),
                pos: 0,
                end: seg.written,
            },
        );
        let mut out = Vec::new();
        let mut first = None;
        let mut fresh = Segment {
            first_seq: 0,
            last_seq: 0,
            path: PathBuf::new(),
            file: seg.file.clone(),
            written: 0,
            index: Vec::new(),
        };
        while let Some((seq, payload)) = read_frame(&mut r).map_err(io_err("log segment"))? {
            if let Some(payload) = keep(seq, payload)? {
                first.get_or_insert(seq);
                fresh.note(seq, out.len() as u64);
                push_frame(&mut out, seq, &payload);
            }
        }
        let old_path = seg.path.clone();
        let Some(first) = first else {
            // Nothing kept. The last segment stays (empty) so appends keep their file.
            if i + 1 == self.segments.len() {
                let seg = &mut self.segments[i];
                seg.file.set_len(0).map_err(io_err("log segment"))?;
                seg.written = 0;
                seg.last_seq = 0;
                seg.index.clear();
                let file = seg.file.clone();
                self.mark_unsynced(&file);
            } else {
                fs::remove_file(&old_path).map_err(io_err("log segment"))?;
                self.segments.remove(i);
                self.dir_unsynced = true;
            }
            return Ok(());
        };
        let path = self.dir.join(segment_name(first));
        let tmp = self.dir.join(format!("{}.tmp", segment_name(first)));
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("log segment rewrite"))?;
        f.write_all(&out).map_err(io_err("log segment rewrite"))?;
        f.sync_data().map_err(io_err("log segment rewrite"))?;
        fs::rename(&tmp, &path).map_err(io_err("log segment rewrite"))?;
        if old_path != path {
            fs::remove_file(&old_path).map_err(io_err("log segment"))?;
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("log directory"))?;
        fresh.first_seq = first;
        fresh.path = path;
        fresh.file = Arc::new(f);
        fresh.written = out.len() as u64;
        self.segments[i] = fresh;
        Ok(())
    }
}

impl Drop for CampaignLog {
    fn drop(&mut self) {
        // Hand buffered frames to the OS, so a process that exits (or a store that is dropped
        // and reopened) keeps them.
        if let Err(e) = self.write_out() {
            tracing::error!(error = %e, "could not write the decision log buffer");
        }
    }
}

enum Part {
    File(At),
    Mem(io::Cursor<Vec<u8>>),
}

/// The frames of one campaign's log above a sequence number, in order, read without holding
/// the log's lock (what is appended after the scan started may be left out).
pub(super) struct Scan {
    parts: VecDeque<Part>,
    current: Option<BufReader<Box<dyn Read + Send>>>,
    after: u64,
    failed: bool,
}

impl Iterator for Scan {
    type Item = Result<(u64, Vec<u8>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if self.current.is_none() {
                let reader: Box<dyn Read + Send> = match self.parts.pop_front()? {
                    Part::File(at) => Box::new(at),
                    Part::Mem(c) => Box::new(c),
                };
                self.current = Some(BufReader::with_capacity(64 * 1024, reader));
            }
            let r = self.current.as_mut().expect("set above");
            match read_frame(r) {
                Ok(Some((seq, payload))) if seq > self.after => return Some(Ok((seq, payload))),
                Ok(Some(_)) => {}
                Ok(None) => self.current = None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(io_err("log segment read")(e)));
                }
            }
        }
    }
}

impl Segments {
    /// Open every campaign log under `root` (created when missing).
    pub(super) fn open(root: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(root).map_err(io_err("log directory"))?;
        let mut logs = HashMap::new();
        for entry in fs::read_dir(root).map_err(io_err("log directory"))? {
            let path = entry.map_err(io_err("log directory"))?.path();
            let Some(campaign) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("c-"))
            else {
                continue;
            };
            if path.is_dir() {
                let log = CampaignLog::open(path.clone())?;
                logs.insert(campaign.to_string(), Arc::new(Mutex::new(log)));
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            logs: RwLock::new(logs),
            root_unsynced: AtomicBool::new(false),
        })
    }

    fn log(&self, campaign: &str) -> Option<Arc<Mutex<CampaignLog>>> {
        self.logs.read().get(campaign).cloned()
    }

    fn log_or_create(&self, campaign: &str) -> Result<Arc<Mutex<CampaignLog>>, StoreError> {
        if let Some(log) = self.log(campaign) {
            return Ok(log);
        }
        let mut logs = self.logs.write();
        if let Some(log) = logs.get(campaign) {
            return Ok(log.clone());
        }
        let dir = self.root.join(format!("c-{campaign}"));
        fs::create_dir_all(&dir).map_err(io_err("log directory"))?;
        self.root_unsynced.store(true, Ordering::Release);
        let log = Arc::new(Mutex::new(CampaignLog {
            dir,
            segments: Vec::new(),
            buf: Vec::new(),
            buf_first_seq: None,
            unsynced: Vec::new(),
            dir_unsynced: true,
        }));
        logs.insert(campaign.to_string(), log.clone());
        Ok(log)
    }

    /// Append a frame to `campaign`'s log (in memory until the next write-out). Sequence
    /// numbers must increase within a campaign.
    pub(super) fn append(
        &self,
        campaign: &str,
        seq: u64,
        payload: &[u8],
    ) -> Result<(), StoreError> {
        let log = self.log_or_create(campaign)?;
        let mut log = log.lock();
        if seq <= log.last_seq() {
            return Err(StoreError::Corrupt {
                what: "log append",
                message: format!(
                    "seq {seq} of campaign {campaign:?} is not above {}",
                    log.last_seq()
                ),
            });
        }
        log.append(seq, payload)
    }

    /// Write `campaign`'s buffer out when it has grown past [`WRITE_OUT`] (called off the
    /// campaign's hot locks).
    pub(super) fn maybe_write_out(&self, campaign: &str) -> Result<(), StoreError> {
        if let Some(log) = self.log(campaign) {
            let mut log = log.lock();
            if log.buf.len() >= WRITE_OUT {
                log.write_out()?;
            }
        }
        Ok(())
    }

    /// Write `campaign`'s buffer out if it still holds the frame `seq`: what a reward joining
    /// that decision writes to sled must never reach the disk ahead of the decision (a process
    /// killed keeps what was written, not what was buffered).
    pub(super) fn write_through(&self, campaign: &str, seq: u64) -> Result<(), StoreError> {
        if let Some(log) = self.log(campaign) {
            let mut log = log.lock();
            if log.buf_first_seq.is_some_and(|first| first <= seq) {
                log.write_out()?;
            }
        }
        Ok(())
    }

    /// Write every buffer out and fsync every file written since the last sync.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        let logs: Vec<_> = self.logs.read().values().cloned().collect();
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for log in logs {
            let mut log = log.lock();
            log.write_out()?;
            files.append(&mut log.unsynced);
            if std::mem::take(&mut log.dir_unsynced) {
                dirs.push(log.dir.clone());
            }
        }
        for f in files {
            f.sync_data().map_err(io_err("log segment sync"))?;
        }
        if self.root_unsynced.swap(false, Ordering::AcqRel) {
            dirs.push(self.root.clone());
        }
        for d in dirs {
            File::open(&d)
                .and_then(|d| d.sync_all())
                .map_err(io_err("log directory sync"))?;
        }
        Ok(())
    }

    /// The payload of the frame `seq` of `campaign`.
    pub(super) fn get(&self, campaign: &str, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match self.log(campaign) {
            Some(log) => log.lock().get(seq),
            None => Ok(None),
        }
    }

    pub(super) fn last_seq(&self, campaign: &str) -> u64 {
        self.log(campaign).map_or(0, |l| l.lock().last_seq())
    }

    /// The frames of `campaign` above `after`, in order.
    pub(super) fn scan(&self, campaign: &str, after: u64) -> Scan {
        let parts = self
            .log(campaign)
            .map(|l| l.lock().parts_after(after))
            .unwrap_or_default();
        Scan {
            parts,
            current: None,
            after,
            failed: false,
        }
    }

    /// Campaigns with a log.
    pub(super) fn campaigns(&self) -> Vec<String> {
        self.logs.read().keys().cloned().collect()
    }

    /// Remove `campaign`'s frames with seq <= `up_to`, handing each to `removed` first.
    pub(super) fn delete_up_to(
        &self,
        campaign: &str,
        up_to: u64,
        mut removed: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let Some(log) = self.log(campaign) else {
            return Ok(());
        };
        let mut log = log.lock();
        let mut i = 0;
        while i < log.segments.len() && log.segments[i].first_seq <= up_to {
            let before = log.segments.len();
            log.rewrite(i, |seq, payload| {
                if seq <= up_to {
                    removed(seq, &payload)?;
                    Ok(None)
                } else {
                    Ok(Some(payload))
                }
            })?;
            if log.segments.len() == before {
                i += 1;
            }
        }
        Ok(())
    }

    /// For retention, which deletes whole segments only: the largest `last_seq` of a segment
    /// (not the head) whose frames are all at or below `stop`, 0 when there is none. When the
    /// head segment holds frames at or below `stop`, it is sealed first (O(1): the buffer is
    /// written out and later appends go to a new file), so a campaign's segments each span at
    /// most one retention interval and none outlives its frames by more.
    pub(super) fn whole_segments_up_to(
        &self,
        campaign: &str,
        stop: u64,
    ) -> Result<u64, StoreError> {
        let Some(log) = self.log(campaign) else {
            return Ok(0);
        };
        let mut log = log.lock();
        if let Some(head) = log.segments.last() {
            if head.last_seq > 0 && head.first_seq <= stop {
                let next = log.last_seq() + 1;
                log.roll(next)?;
            }
        }
        let n = log.segments.len();
        Ok(log.segments[..n.saturating_sub(1)]
            .iter()
            .take_while(|seg| seg.last_seq <= stop)
            .map(|seg| seg.last_seq)
            .max()
            .unwrap_or(0))
    }

    /// Remove `campaign`'s segments (never the head) whose frames are all at or below `up_to`.
    /// The lock is held only to detach them from the log: their files are deleted after, so
    /// appends and reads never wait on it (a reader that started before keeps its open file).
    pub(super) fn delete_whole_segments(
        &self,
        campaign: &str,
        up_to: u64,
    ) -> Result<(), StoreError> {
        let Some(log) = self.log(campaign) else {
            return Ok(());
        };
        let (gone, dir) = {
            let mut log = log.lock();
            let n = log.segments.len();
            let k = log.segments[..n.saturating_sub(1)]
                .iter()
                .take_while(|seg| seg.last_seq <= up_to)
                .count();
            if k == 0 {
                return Ok(());
            }
            log.dir_unsynced = true;
            (log.segments.drain(..k).collect::<Vec<_>>(), log.dir.clone())
        };
        for seg in gone {
            fs::remove_file(&seg.path).map_err(io_err("log segment"))?;
        }
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("log directory"))?;
        Ok(())
    }

    /// Rewrite frames of every campaign: `change` returns a new payload for a frame to change.
    /// Segments with no change are left untouched. Returns how many frames changed.
    pub(super) fn rewrite_all(
        &self,
        mut change: impl FnMut(&str, u64, &[u8]) -> Result<Option<Vec<u8>>, StoreError>,
    ) -> Result<usize, StoreError> {
        let mut changed = 0;
        for campaign in self.campaigns() {
            let Some(log) = self.log(&campaign) else {
                continue;
            };
            let mut log = log.lock();
            log.write_out()?;
            for i in 0..log.segments.len() {
                // First pass: does any frame change? Most segments are left alone.
                let mut any = false;
                let mut scan = Scan {
                    parts: log.parts_for(i),
                    current: None,
                    after: 0,
                    failed: false,
                };
                for frame in &mut scan {
                    let (seq, payload) = frame?;
                    if change(&campaign, seq, &payload)?.is_some() {
                        any = true;
                        break;
                    }
                }
                if !any {
                    continue;
                }
                log.rewrite(i, |seq, payload| {
                    Ok(Some(match change(&campaign, seq, &payload)? {
                        Some(p) => {
                            changed += 1;
                            p
                        }
                        None => payload,
                    }))
                })?;
            }
        }
        Ok(changed)
    }

    /// Remove `campaign`'s log.
    pub(super) fn delete_campaign(&self, campaign: &str) -> Result<(), StoreError> {
        let Some(log) = self.logs.write().remove(campaign) else {
            return Ok(());
        };
        let mut log = log.lock();
        log.buf.clear();
        log.buf_first_seq = None;
        log.segments.clear();
        match fs::remove_dir_all(&log.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("log directory")(e)),
        }
        self.root_unsynced.store(true, Ordering::Release);
        Ok(())
    }

    /// Bytes on disk and in buffers, all campaigns.
    pub(super) fn bytes(&self) -> u64 {
        self.logs
            .read()
            .values()
            .map(|l| {
                let l = l.lock();
                l.segments.iter().map(|s| s.written).sum::<u64>() + l.buf.len() as u64
            })
            .sum()
    }
}

impl CampaignLog {
    /// The parts of segment `i` (whole).
    fn parts_for(&self, i: usize) -> VecDeque<Part> {
        let seg = &self.segments[i];
        let mut parts = VecDeque::new();
        parts.push_back(Part::File(At {
            file: seg.file.clone(),
            pos: 0,
            end: seg.written,
        }));
        if i + 1 == self.segments.len() && !self.buf.is_empty() {
            parts.push_back(Part::Mem(io::Cursor::new(self.buf.clone())));
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(seq: u64) -> Vec<u8> {
        format!("decision {seq}").into_bytes()
    }

    fn all(s: &Segments, campaign: &str, after: u64) -> Vec<u64> {
        s.scan(campaign, after).map(|f| f.unwrap().0).collect()
    }

    #[test]
    fn appends_read_back_from_buffer_file_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segments::open(dir.path()).unwrap();
        for seq in (1..=3000).step_by(3) {
            s.append("a", seq, &payload(seq)).unwrap();
            s.append("b", seq + 1, &payload(seq + 1)).unwrap();
        }
        // Part in memory, part written out.
        s.maybe_write_out("a").unwrap();
        assert_eq!(s.get("a", 1498).unwrap(), Some(payload(1498)));
        assert_eq!(s.get("a", 1499).unwrap(), None);
        assert_eq!(s.get("b", 2).unwrap(), Some(payload(2)));
        assert_eq!(all(&s, "a", 2990), vec![2992, 2995, 2998]);
        assert_eq!(s.last_seq("b"), 2999);
        assert_eq!(s.scan("a", 0).count(), 1000);
        s.sync().unwrap();
        drop(s);
        let s = Segments::open(dir.path()).unwrap();
        assert_eq!(s.scan("a", 0).count(), 1000);
        assert_eq!(s.get("b", 2999).unwrap(), Some(payload(2999)));
        assert_eq!(s.last_seq("a"), 2998);
        assert!(s.append("a", 2998, b"x").is_err(), "seqs only go up");
    }

    /// `get` reads an index interval at once: frames before, inside and past that window,
    /// small and larger than it, in the buffer, on file and across the two.
    #[test]
    fn get_finds_every_frame_whatever_its_size_and_place() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segments::open(dir.path()).unwrap();
        let body = |seq: u64| -> Vec<u8> {
            let len = match seq % 7 {
                0 => 9_000,
                3 => 3_000,
                _ => 40 + (seq as usize * 13) % 300,
            };
            (0..len).map(|i| (seq as usize + i) as u8).collect()
        };
        let check = |s: &Segments| {
            for seq in (2..=600).step_by(2) {
                assert_eq!(s.get("a", seq).unwrap(), Some(body(seq)), "seq {seq}");
                assert_eq!(s.get("a", seq + 1).unwrap(), None, "seq {}", seq + 1);
            }
        };
        for seq in (2..=300).step_by(2) {
            s.append("a", seq, &body(seq)).unwrap();
        }
        s.maybe_write_out("a").unwrap();
        for seq in (302..=600).step_by(2) {
            s.append("a", seq, &body(seq)).unwrap();
        }
        check(&s);
        s.sync().unwrap();
        check(&s);
        drop(s);
        check(&Segments::open(dir.path()).unwrap());
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segments::open(dir.path()).unwrap();
        for seq in 1..=10 {
            s.append("a", seq, &payload(seq)).unwrap();
        }
        s.sync().unwrap();
        drop(s);
        let seg = dir.path().join("c-a").join(segment_name(1));
        let len = fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        let s = Segments::open(dir.path()).unwrap();
        assert_eq!(all(&s, "a", 0), (1..=9).collect::<Vec<_>>());
        s.append("a", 11, &payload(11)).unwrap();
        assert_eq!(s.get("a", 11).unwrap(), Some(payload(11)));
        // A flipped byte in the middle is caught by the CRC: everything from there is cut.
        s.sync().unwrap();
        drop(s);
        let bytes = fs::read(&seg).unwrap();
        let mut bad = bytes.clone();
        bad[HEADER + 2] ^= 0xff;
        fs::write(&seg, &bad).unwrap();
        let s = Segments::open(dir.path()).unwrap();
        assert_eq!(all(&s, "a", 0), Vec::<u64>::new());
    }

    #[test]
    fn delete_up_to_rewrites_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segments::open(dir.path()).unwrap();
        for seq in 1..=100 {
            s.append("a", seq, &payload(seq)).unwrap();
        }
        let mut gone = Vec::new();
        s.delete_up_to("a", 40, |seq, _| {
            gone.push(seq);
            Ok(())
        })
        .unwrap();
        assert_eq!(gone, (1..=40).collect::<Vec<_>>());
        assert_eq!(all(&s, "a", 0), (41..=100).collect::<Vec<_>>());
        s.append("a", 101, &payload(101)).unwrap();
        assert_eq!(s.get("a", 101).unwrap(), Some(payload(101)));
        assert_eq!(s.get("a", 7).unwrap(), None);
        drop(s);
        let s = Segments::open(dir.path()).unwrap();
        assert_eq!(all(&s, "a", 0), (41..=101).collect::<Vec<_>>());
        let changed = s
            .rewrite_all(|_, seq, _| Ok((seq == 50).then(|| b"scrubbed".to_vec())))
            .unwrap();
        assert_eq!(changed, 1);
        assert_eq!(s.get("a", 50).unwrap(), Some(b"scrubbed".to_vec()));
        assert_eq!(s.get("a", 51).unwrap(), Some(payload(51)));
        s.delete_campaign("a").unwrap();
        assert_eq!(s.scan("a", 0).count(), 0);
        assert!(!dir.path().join("c-a").exists());
    }

    #[test]
    fn large_logs_roll_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segments::open(dir.path()).unwrap();
        let big = vec![7u8; 300];
        for seq in 1..=20_000 {
            s.append("a", seq, &big).unwrap();
            s.maybe_write_out("a").unwrap();
        }
        for seq in [1, 777, 13_001, 20_000] {
            assert_eq!(s.get("a", seq).unwrap().map(|p| p.len()), Some(300));
        }
        assert_eq!(s.scan("a", 19_990).count(), 10);
        assert_eq!(s.bytes(), 20_000 * (300 + HEADER as u64));
    }
}
