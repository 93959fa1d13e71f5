//! The log export written in bounded chunks: the header line first, then one JSON line per
//! decision as it is read from the store. `GET /admin/v1/campaigns/{id}/log` hands the chunks to
//! a bounded channel that the response body drains, so a slow reader holds the store scan back
//! (backpressure) instead of the export piling up in memory.

use super::log::{LogHeader, LogLine};
use crate::store::StoreError;

/// A chunk is handed on once it holds at least this many bytes.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// What an export wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// Decision lines written.
    pub lines: u64,
    /// Decisions left out because their candidates are unknown.
    pub unreadable: u64,
}

/// Why an export stopped before the end of the log.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The sink refused a chunk: the reader went away.
    #[error("the reader of the export went away")]
    Closed,
}

/// Encode `header` and `lines` as JSON lines and hand them to `sink` in chunks of about
/// `chunk_bytes` (at most one line more). The header goes alone in the first chunk, so the first
/// bytes leave before any decision is read. `sink` returns false when the reader is gone; the
/// export then stops.
pub fn write_chunks(
    header: &LogHeader,
    lines: impl Iterator<Item = Result<Option<LogLine>, StoreError>>,
    chunk_bytes: usize,
    mut sink: impl FnMut(Vec<u8>) -> bool,
) -> Result<Exported, ExportError> {
    let mut out = Vec::with_capacity(chunk_bytes + 1024);
    serde_json::to_writer(&mut out, header).expect("JSON encoding of a log header");
    out.push(b'\n');
    if !sink(std::mem::take(&mut out)) {
        return Err(ExportError::Closed);
    }
    let mut done = Exported::default();
    for line in lines {
        let Some(line) = line? else {
            done.unreadable += 1;
            continue;
        };
        if out.capacity() == 0 {
            out.reserve(chunk_bytes + 1024);
        }
        serde_json::to_writer(&mut out, &line).expect("JSON encoding of a log line");
        out.push(b'\n');
        done.lines += 1;
        if out.len() >= chunk_bytes && !sink(std::mem::take(&mut out)) {
            return Err(ExportError::Closed);
        }
    }
    if !out.is_empty() && !sink(out) {
        return Err(ExportError::Closed);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::campaign::CampaignConfig;
    use crate::ope::log::LogAction;

    fn header() -> LogHeader {
        let campaign: CampaignConfig =
            serde_json::from_value(json!({"id": "c", "policy": {"type": "thompson"}})).unwrap();
        crate::ope::header(&campaign, None, None)
    }

    fn line(i: u64) -> LogLine {
        serde_json::from_value(json!({
            "event_id": format!("e-{i}"),
            "at_ms": 1_700_000_000_000u64 + i,
            "context": {"device": "mobile"},
            "candidates": [{"id": "a", "features": {"price": 1.5}}, {"id": "b"}],
            "actions": [LogAction { id: "a".into(), probability: Some(0.5), reward: i.is_multiple_of(3).then_some(1.0), pinned: false }],
            "policy": "thompson",
        }))
        .unwrap()
    }

    /// Every fourth decision has no readable request.
    fn lines(
        n: u64,
        read: Arc<AtomicU64>,
    ) -> impl Iterator<Item = Result<Option<LogLine>, StoreError>> {
        (0..n).map(move |i| {
            read.fetch_add(1, Ordering::SeqCst);
            Ok((i % 4 != 3).then(|| line(i)))
        })
    }

    #[test]
    fn the_export_is_complete_and_every_line_parses() {
        let mut out = Vec::new();
        let mut chunks = 0;
        let done = write_chunks(&header(), lines(5_000, Arc::default()), 4096, |c| {
            assert!(c.len() < 4096 + 1024, "a chunk is bounded: {}", c.len());
            chunks += 1;
            out.extend(c);
            true
        })
        .unwrap();
        assert_eq!(
            done,
            Exported {
                lines: 3_750,
                unreadable: 1_250
            }
        );
        let text = String::from_utf8(out).unwrap();
        let mut it = text.lines();
        let h: LogHeader = serde_json::from_str(it.next().unwrap()).unwrap();
        assert_eq!(h.campaign.id, "c");
        let parsed: Vec<LogLine> = it.map(|l| serde_json::from_str(l).unwrap()).collect();
        let expected: Vec<LogLine> = (0..5_000).filter(|i| i % 4 != 3).map(line).collect();
        assert_eq!(parsed, expected);
        assert!(chunks > 10, "{chunks} chunks");
    }

    /// With a channel of one chunk that nobody drains past the second, the writer cannot read
    /// further than the chunks it can hold: the header leaves first, on its own, and the rest
    /// waits for the reader (no timing involved: the bound holds at any instant).
    #[test]
    fn the_header_leaves_first_and_a_stalled_reader_holds_the_scan_back() {
        let read = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
        let writer = {
            let read = read.clone();
            std::thread::spawn(move || {
                write_chunks(&header(), lines(20_000, read), 4096, |c| {
                    tx.blocking_send(c).is_ok()
                })
            })
        };
        // The header is the first chunk on its own (the writer may already be reading the log
        // into the next chunk while it is received, so how much it has read is not asserted here).
        let first = rx.blocking_recv().unwrap();
        let h: LogHeader = serde_json::from_slice(first.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(h.tailor_log, crate::ope::log::LOG_FORMAT_VERSION);
        let second = rx.blocking_recv().unwrap();
        // Now at most: this chunk, one in the channel, one being filled — a few dozen lines
        // each, far from the 20 000 of the log.
        let per_chunk = second.iter().filter(|&&b| b == b'\n').count() as u64;
        let bound = 4 * (per_chunk + 1) * 4 / 3 + 4;
        assert!(
            read.load(Ordering::SeqCst) <= bound,
            "{} > {bound}",
            read.load(Ordering::SeqCst)
        );
        let mut total = per_chunk;
        while let Some(c) = rx.blocking_recv() {
            total += c.iter().filter(|&&b| b == b'\n').count() as u64;
        }
        assert_eq!(total, 15_000);
        assert_eq!(writer.join().unwrap().unwrap().lines, 15_000);
    }

    #[test]
    fn a_reader_that_goes_away_stops_the_export() {
        let read = Arc::new(AtomicU64::new(0));
        let mut sent = 0;
        let r = write_chunks(&header(), lines(20_000, read.clone()), 4096, |_| {
            sent += 1;
            sent < 3
        });
        assert!(matches!(r, Err(ExportError::Closed)));
        assert!(read.load(Ordering::SeqCst) < 20_000);
    }
}
