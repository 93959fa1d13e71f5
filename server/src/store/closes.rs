//! Closed reward windows outside sled (schema 8).
//!
//! When a decision's reward window closes, its join state is pruned to a compact marker
//! ([`ClosedMarker`]: the decision's seq and what each slot settled at). Kept in sled, those
//! markers were about half of what sled held per decision: ~42 logical bytes, ~160 on disk
//! once sled's page fragments and not yet cleaned segments are counted. They are written once
//! and, until retention takes them, only read (late rewards answered `410`, replayed decides,
//! returns). So the log journal's drain (and its replay at open) sends them here instead of
//! to sled: per campaign, append-only files of records
//!
//! | bytes | field |
//! |---|---|
//! | 2 | marker length (u16 LE) |
//! | 4 | CRC-32 of the hash and the marker (u32 LE) |
//! | 8 | the event id's SipHash-1-3, keyed by the store's 128-bit key (u64 LE) |
//! | length | the marker's encoding |
//!
//! in `<data>/closes/c-<campaign>/<number, 20 digits>.cls`. A file takes no more records past
//! [`FILE_BYTES`]. A campaign's files are read once, at its first lookup (a server reads them
//! all at open; `tailor export` never does), into a hash table from the event id's hash to the
//! record's place (about 20–40 bytes per record, the same as the open windows' own index per
//! open event). The event id itself is not stored: it is in the decision's frame, which every
//! lookup reads to confirm a match, so a hash collision, or a record whose decision retention
//! or a log deletion took, finds nothing.
//!
//! Durability: records are appended only by the journal's drain and its replay at open, and
//! fsynced before sled's LSN records the journal records they came from (the drain records it
//! after its sled flush, the replay once at its end); the journal holds them until then. A
//! crash re-appends at most the records of the drains sled had not recorded (a duplicate
//! answers alike). Buffered records are written at the place the index has for them, so a
//! write that failed part way is written again over the same bytes. Everything past the last
//! fsync is in the journal, so a record cut short by a crash, and whatever follows it, is cut
//! off at the next load. Log deletion makes the full join states that replace a campaign's
//! markers durable before it deletes their close files. Retention deletes a file once every
//! decision it names is gone; deleting a campaign deletes its directory.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::Hasher;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::records::ClosedMarker;
use super::StoreError;
use crate::prehashed::PreHashed;

/// A file takes no more records past this size (record places are u32).
const FILE_BYTES: u64 = 8 << 20;
const HEADER: usize = 14;

/// The `log` key family of join states (`E` ++ campaign ++ 0 ++ event id).
const EVENT: u8 = b'E';

fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        what,
        message: e.to_string(),
    }
}

/// File number (high 32 bits) and byte position (low 32 bits) of a record.
type Place = u64;

fn place(number: u32, pos: u32) -> Place {
    (u64::from(number) << 32) | u64::from(pos)
}

struct CloseFile {
    number: u32,
    path: PathBuf,
    file: Arc<File>,
    /// Its bytes, the last file's buffered ones included.
    len: u64,
    /// The highest decision seq a record of the file names.
    max_seq: u64,
}

struct CampaignCloses {
    dir: PathBuf,
    /// The files have been read and the index built.
    loaded: bool,
    /// Oldest first; the last one takes the appends.
    files: Vec<CloseFile>,
    /// Event-id hash -> the newest record with it.
    index: HashMap<u64, Place, PreHashed>,
    /// Older records whose hash the index holds a newer one of (another event id, or a
    /// decision decided again after retention took it).
    more: Vec<(u64, Place)>,
    /// Records of the last file not yet written to it: written and fsynced by the next sync,
    /// so a drain costs one write per campaign, not one per record under the lock lookups
    /// take.
    buf: Vec<u8>,
    /// Files written to since the last sync.
    unsynced: Vec<Arc<File>>,
    dir_unsynced: bool,
}

fn file_name(number: u32) -> String {
    format!("{number:020}.cls")
}

/// The files of `dir`, oldest first.
fn numbers(dir: &Path) -> Result<Vec<u32>, StoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("close files"))? {
        let name = entry.map_err(io_err("close files"))?.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".cls"))
            .and_then(|n| n.parse::<u32>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn record_crc(hash: u64, marker: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&hash.to_le_bytes());
    h.update(marker);
    h.finalize()
}

/// One record at the start of `bytes`: (hash, marker bytes, record length), or `None` when it
/// is cut short or does not check.
fn parse_record(bytes: &[u8]) -> Option<(u64, &[u8], usize)> {
    let head = bytes.get(..HEADER)?;
    let len = usize::from(u16::from_le_bytes([head[0], head[1]]));
    let crc = u32::from_le_bytes(head[2..6].try_into().ok()?);
    let hash = u64::from_le_bytes(head[6..14].try_into().ok()?);
    let marker = bytes.get(HEADER..HEADER + len)?;
    (record_crc(hash, marker) == crc).then_some((hash, marker, HEADER + len))
}

impl CampaignCloses {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            loaded: false,
            files: Vec::new(),
            index: HashMap::default(),
            more: Vec::new(),
            buf: Vec::new(),
            unsynced: Vec::new(),
            dir_unsynced: false,
        }
    }

    /// Write the buffered records to the last file (fsynced by the caller, after the lock), at
    /// the place the index has for them: a write that failed part way is written again over
    /// the same bytes, never appended after them.
    fn write_out(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let last = self.files.last().expect("buffered records have a file");
        let on_disk = last.len - self.buf.len() as u64;
        last.file
            .write_all_at(&self.buf, on_disk)
            .map_err(io_err("close file write"))?;
        if !self.unsynced.iter().any(|f| Arc::ptr_eq(f, &last.file)) {
            self.unsynced.push(last.file.clone());
        }
        self.buf.clear();
        Ok(())
    }

    /// Read every file: index its records, cut a record a crash left short.
    fn load(&mut self) -> Result<(), StoreError> {
        if self.loaded {
            return Ok(());
        }
        self.files.clear();
        self.index.clear();
        self.more.clear();
        if self.dir.exists() {
            for number in numbers(&self.dir)? {
                let path = self.dir.join(file_name(number));
                let bytes = fs::read(&path).map_err(io_err("close file read"))?;
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io_err("close file open"))?;
                self.files.push(CloseFile {
                    number,
                    path,
                    file: Arc::new(file),
                    // Until the cut below: what a duplicate's check reads is on the file.
                    len: bytes.len() as u64,
                    max_seq: 0,
                });
                let mut pos = 0;
                let mut max_seq = 0;
                while pos < bytes.len() {
                    let Some((hash, marker, len)) = parse_record(&bytes[pos..]) else {
                        break;
                    };
                    let seq = ClosedMarker::decode_bytes(marker)?.decision_seq;
                    max_seq = max_seq.max(seq);
                    self.insert(hash, place(number, pos as u32), seq)?;
                    pos += len;
                }
                let f = self.files.last_mut().expect("pushed above");
                if pos < bytes.len() {
                    tracing::warn!(
                        file = %f.path.display(),
                        cut = bytes.len() - pos,
                        "a close file ends in a record cut short; cut off"
                    );
                    f.file
                        .set_len(pos as u64)
                        .and_then(|()| f.file.sync_all())
                        .map_err(io_err("close file cut"))?;
                }
                f.len = pos as u64;
                f.max_seq = max_seq;
            }
        }
        self.loaded = true;
        Ok(())
    }

    /// Index the record at `at` (of decision `seq`) as the newest with `hash`.
    fn insert(&mut self, hash: u64, at: Place, seq: u64) -> Result<(), StoreError> {
        if let Some(old) = self.index.insert(hash, at) {
            // A duplicate (a drain re-applied after a crash) replaces its twin; another
            // decision with the same hash stays findable.
            if self.read(old)?.decision_seq != seq {
                self.more.push((hash, old));
            }
        }
        Ok(())
    }

    fn read(&self, at: Place) -> Result<ClosedMarker, StoreError> {
        let (number, pos) = ((at >> 32) as u32, u64::from(at as u32));
        let i = self
            .files
            .binary_search_by_key(&number, |f| f.number)
            .map_err(|_| StoreError::Corrupt {
                what: "close file",
                message: format!("file {number} is gone"),
            })?;
        let f = &self.files[i];
        let on_disk = match i + 1 == self.files.len() {
            true => f.len - self.buf.len() as u64,
            false => f.len,
        };
        let record = if pos >= on_disk {
            self.buf
                .get((pos - on_disk) as usize..)
                .unwrap_or_default()
                .to_vec()
        } else {
            let mut head = [0u8; HEADER];
            f.file
                .read_exact_at(&mut head, pos)
                .map_err(io_err("close file read"))?;
            let len = usize::from(u16::from_le_bytes([head[0], head[1]]));
            let mut record = vec![0u8; HEADER + len];
            record[..HEADER].copy_from_slice(&head);
            f.file
                .read_exact_at(&mut record[HEADER..], pos + HEADER as u64)
                .map_err(io_err("close file read"))?;
            record
        };
        let (_, marker, _) = parse_record(&record).ok_or(StoreError::Corrupt {
            what: "close file",
            message: format!("record at {pos} of file {number} does not check"),
        })?;
        ClosedMarker::decode_bytes(marker)
    }

    fn append(&mut self, hash: u64, marker: &[u8]) -> Result<(), StoreError> {
        self.load()?;
        let seq = ClosedMarker::decode_bytes(marker)?.decision_seq;
        let mut record = Vec::with_capacity(HEADER + marker.len());
        record.extend_from_slice(&(marker.len() as u16).to_le_bytes());
        record.extend_from_slice(&record_crc(hash, marker).to_le_bytes());
        record.extend_from_slice(&hash.to_le_bytes());
        record.extend_from_slice(marker);
        if self.files.last().is_none_or(|f| f.len >= FILE_BYTES) {
            self.write_out()?;
            let number = self.files.last().map_or(1, |f| f.number + 1);
            fs::create_dir_all(&self.dir).map_err(io_err("close files"))?;
            let path = self.dir.join(file_name(number));
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err("close file create"))?;
            self.files.push(CloseFile {
                number,
                path,
                file: Arc::new(file),
                len: 0,
                max_seq: 0,
            });
            self.dir_unsynced = true;
        }
        let last = self.files.last_mut().expect("a file to append to");
        let at = place(last.number, last.len as u32);
        last.len += record.len() as u64;
        last.max_seq = last.max_seq.max(seq);
        self.buf.extend_from_slice(&record);
        self.insert(hash, at, seq)
    }

    /// The markers with `hash`, newest first.
    fn candidates(&mut self, hash: u64) -> Result<Vec<ClosedMarker>, StoreError> {
        self.load()?;
        let Some(&newest) = self.index.get(&hash) else {
            return Ok(Vec::new());
        };
        let mut places = vec![newest];
        places.extend(
            self.more
                .iter()
                .filter(|(h, _)| *h == hash)
                .map(|(_, at)| *at),
        );
        places.sort_unstable_by(|a, b| b.cmp(a));
        places.into_iter().map(|at| self.read(at)).collect()
    }
}

/// Every campaign's close files.
pub(super) struct Closes {
    root: PathBuf,
    key: (u64, u64),
    campaigns: RwLock<HashMap<String, Arc<Mutex<CampaignCloses>>>>,
}

impl Closes {
    /// The close files under `root` (nothing is read until a lookup); `key` keys the event-id
    /// hash (so no one can choose event ids that collide) and must stay the same for the
    /// store's life.
    pub(super) fn open(root: &Path, key: (u64, u64)) -> Result<Self, StoreError> {
        fs::create_dir_all(root).map_err(io_err("close files"))?;
        let mut campaigns = HashMap::new();
        for entry in fs::read_dir(root).map_err(io_err("close files"))? {
            let path = entry.map_err(io_err("close files"))?.path();
            if let Some(campaign) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("c-"))
            {
                let c = CampaignCloses::new(path.clone());
                campaigns.insert(campaign.to_string(), Arc::new(Mutex::new(c)));
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            key,
            campaigns: RwLock::new(campaigns),
        })
    }

    fn hash(&self, event_id: &str) -> u64 {
        let mut h = siphasher::sip::SipHasher13::new_with_keys(self.key.0, self.key.1);
        h.write(event_id.as_bytes());
        h.finish()
    }

    fn campaign(&self, campaign: &str) -> Arc<Mutex<CampaignCloses>> {
        if let Some(c) = self.existing(campaign) {
            return c;
        }
        self.campaigns
            .write()
            .entry(campaign.to_string())
            .or_insert_with(|| {
                let dir = self.root.join(format!("c-{campaign}"));
                Arc::new(Mutex::new(CampaignCloses::new(dir)))
            })
            .clone()
    }

    fn existing(&self, campaign: &str) -> Option<Arc<Mutex<CampaignCloses>>> {
        self.campaigns.read().get(campaign).cloned()
    }

    /// Read every campaign's files now (a server does at open, before it serves).
    pub(super) fn load_all(&self) -> Result<(), StoreError> {
        let all: Vec<_> = self.campaigns.read().values().cloned().collect();
        for c in all {
            c.lock().load()?;
        }
        Ok(())
    }

    /// When the `log` write `key` = `value` is a closed window's marker: append it here and
    /// return true (sled then drops `key`). Called by the journal's drain and replay only.
    pub(super) fn take(&self, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        let Some((&EVENT, rest)) = key.split_first() else {
            return Ok(false);
        };
        if value.len() > usize::from(u16::MAX) || ClosedMarker::decode(value).is_none() {
            return Ok(false);
        }
        let Some(zero) = rest.iter().position(|b| *b == 0) else {
            return Ok(false);
        };
        let (Ok(campaign), Ok(event_id)) = (
            std::str::from_utf8(&rest[..zero]),
            std::str::from_utf8(&rest[zero + 1..]),
        ) else {
            return Ok(false);
        };
        let hash = self.hash(event_id);
        self.campaign(campaign).lock().append(hash, value)?;
        Ok(true)
    }

    /// fsync every file appended to since the last sync (and new directories).
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        let all: Vec<_> = self.campaigns.read().values().cloned().collect();
        let mut root = false;
        for c in all {
            let (files, dir) = {
                let mut c = c.lock();
                c.write_out()?;
                let dir = c.dir_unsynced.then(|| c.dir.clone());
                (std::mem::take(&mut c.unsynced), dir)
            };
            let synced = files
                .iter()
                .try_for_each(|f| f.sync_data().map_err(io_err("close file sync")))
                .and_then(|()| dir.as_deref().map_or(Ok(()), sync_dir));
            if let Err(e) = synced {
                // Still to sync: the next drain (the retry of this one) does.
                let mut c = c.lock();
                c.unsynced.extend(files);
                return Err(e);
            }
            if dir.is_some() {
                c.lock().dir_unsynced = false;
                root = true;
            }
        }
        if root {
            sync_dir(&self.root)?;
        }
        Ok(())
    }

    /// The markers recorded for `event_id` in `campaign`, newest first. Each must be confirmed
    /// against its decision's frame: another event id may share the hash.
    pub(super) fn candidates(
        &self,
        campaign: &str,
        event_id: &str,
    ) -> Result<Vec<ClosedMarker>, StoreError> {
        match self.existing(campaign) {
            Some(c) => c.lock().candidates(self.hash(event_id)),
            None => Ok(Vec::new()),
        }
    }

    /// Every marker of `campaign`, oldest first (duplicates included).
    pub(super) fn all(&self, campaign: &str) -> Result<Vec<ClosedMarker>, StoreError> {
        let Some(c) = self.existing(campaign) else {
            return Ok(Vec::new());
        };
        let mut c = c.lock();
        c.load()?;
        c.write_out()?;
        let mut out = Vec::new();
        for f in &c.files {
            let mut bytes = vec![0u8; f.len as usize];
            f.file
                .read_exact_at(&mut bytes, 0)
                .map_err(io_err("close file read"))?;
            let mut pos = 0;
            while let Some((_, marker, len)) = parse_record(&bytes[pos..]) {
                out.push(ClosedMarker::decode_bytes(marker)?);
                pos += len;
            }
        }
        Ok(out)
    }

    /// Delete `campaign`'s files whose every record names a decision at or below `up_to`
    /// (retention and log deletion took them).
    pub(super) fn delete_up_to(&self, campaign: &str, up_to: u64) -> Result<usize, StoreError> {
        let Some(c) = self.existing(campaign) else {
            return Ok(0);
        };
        let mut c = c.lock();
        c.load()?;
        c.write_out()?;
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut c.files)
            .into_iter()
            .partition(|f| f.max_seq <= up_to);
        c.files = kept;
        if gone.is_empty() {
            return Ok(0);
        }
        let numbers: Vec<u32> = gone.iter().map(|f| f.number).collect();
        let live = |at: &Place| !numbers.contains(&((*at >> 32) as u32));
        c.index.retain(|_, at| live(at));
        c.more.retain(|(_, at)| live(at));
        c.unsynced
            .retain(|f| !gone.iter().any(|g| Arc::ptr_eq(f, &g.file)));
        for f in &gone {
            fs::remove_file(&f.path).map_err(io_err("close file remove"))?;
        }
        sync_dir(&c.dir)?;
        Ok(gone.len())
    }

    /// Delete every close file of `campaign`.
    pub(super) fn delete_campaign(&self, campaign: &str) -> Result<(), StoreError> {
        let removed = self.campaigns.write().remove(campaign);
        let dir = match removed {
            Some(c) => c.lock().dir.clone(),
            None => self.root.join(format!("c-{campaign}")),
        };
        match fs::remove_dir_all(&dir) {
            Ok(()) => sync_dir(&self.root),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("close files remove")(e)),
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("close directory sync"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn marker(seq: u64, value: f64) -> Vec<u8> {
        ClosedMarker {
            decision_seq: seq,
            settled: vec![Some(value), None],
        }
        .encode()
    }

    fn key(campaign: &str, id: &str) -> Vec<u8> {
        let mut k = vec![EVENT];
        k.extend_from_slice(campaign.as_bytes());
        k.push(0);
        k.extend_from_slice(id.as_bytes());
        k
    }

    #[test]
    fn markers_are_found_again_after_a_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("closes");
        {
            let c = Closes::open(&root, (7, 9)).unwrap();
            assert!(
                !c.take(b"L\0x", &marker(1, 1.0)).unwrap(),
                "not a join state"
            );
            assert!(
                !c.take(&key("c", "e0"), b"\x01full").unwrap(),
                "not a marker"
            );
            for seq in 1..=100u64 {
                assert!(c
                    .take(&key("c", &format!("e{seq}")), &marker(seq, 0.5))
                    .unwrap());
            }
            // A duplicate (a replayed drain) and the same id decided again.
            assert!(c.take(&key("c", "e5"), &marker(5, 0.5)).unwrap());
            assert!(c.take(&key("c", "e5"), &marker(500, 1.0)).unwrap());
            c.sync().unwrap();
            let found = c.candidates("c", "e5").unwrap();
            assert_eq!(
                found.iter().map(|m| m.decision_seq).collect::<Vec<_>>(),
                [500, 5]
            );
        }
        // A torn record at the end.
        let file = root.join("c-c").join(file_name(1));
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(&[9, 0, 1, 2]).unwrap();
        drop(f);
        let c = Closes::open(&root, (7, 9)).unwrap();
        assert_eq!(c.candidates("c", "e42").unwrap()[0].decision_seq, 42);
        assert_eq!(
            c.candidates("c", "e42").unwrap()[0].settled,
            [Some(0.5), None]
        );
        assert_eq!(c.candidates("c", "e5").unwrap().len(), 2);
        assert!(c.candidates("c", "nope").unwrap().is_empty());
        assert!(c.candidates("other", "e42").unwrap().is_empty());
        assert_eq!(c.all("c").unwrap().len(), 102);
        assert!(c.take(&key("c", "e101"), &marker(101, 0.0)).unwrap());
        assert_eq!(c.candidates("c", "e101").unwrap()[0].decision_seq, 101);
        // Another key finds nothing: the hash is keyed.
        assert!(Closes::open(&root, (8, 9))
            .unwrap()
            .candidates("c", "e42")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn files_go_once_every_decision_they_name_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("closes");
        let c = Closes::open(&root, (1, 2)).unwrap();
        // Enough records for three files.
        let mut n = 0;
        while numbers(&root.join("c-c")).map_or(0, |f| f.len()) < 3 {
            n += 1;
            c.take(&key("c", &format!("e{n}")), &marker(n, 0.5))
                .unwrap();
        }
        c.sync().unwrap();
        let first_max = c.existing("c").unwrap().lock().files[0].max_seq;
        assert_eq!(c.delete_up_to("c", first_max - 1).unwrap(), 0);
        assert_eq!(c.delete_up_to("c", first_max + 5).unwrap(), 1);
        assert!(c.candidates("c", "e3").unwrap().is_empty());
        assert_eq!(
            c.candidates("c", &format!("e{n}")).unwrap()[0].decision_seq,
            n
        );
        assert_eq!(numbers(&root.join("c-c")).unwrap().len(), 2);
        c.delete_campaign("c").unwrap();
        assert!(!root.join("c-c").exists());
        assert!(c.candidates("c", &format!("e{n}")).unwrap().is_empty());
    }
}
