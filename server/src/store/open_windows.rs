//! The reward windows still open whose join state is only in memory.
//!
//! A decision's join state is derived from its frame: until a reward, an activation or the
//! window's close changes it, nothing about it needs writing anywhere else. So a decision only
//! enters this index (event id, sequence number, deadline); its join state is rebuilt from the
//! frame when a reward or the window sweeper asks for it. The first change writes the join state
//! to sled (with its open-window entry while the window stays open) and removes it from here: an
//! open event is either wholly here or wholly in sled, never both.
//!
//! After a crash the index is rebuilt from each campaign's segment frames from its **mark**: the
//! lowest sequence number that may still be only here. The log syncer persists the marks after a
//! sled flush, so a persisted mark never passes a join state whose sled write is not yet durable.
//!
//! Memory: about 130 bytes per open event. Past the limit, decisions take the sled path
//! (join state and open-window entry written at decide time), as before this index existed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

/// Open events held in memory across all campaigns before decisions fall back to sled.
pub const DEFAULT_LIMIT: usize = 500_000;

#[derive(Default)]
struct CampaignWindows {
    /// Event id -> decision seq.
    by_id: HashMap<Arc<str>, u64>,
    /// Decision seq -> (deadline, event id); its first key is the campaign's mark.
    by_seq: BTreeMap<u64, (u64, Arc<str>)>,
    /// (deadline, seq) of every entry, for the sweeper.
    due: BTreeSet<(u64, u64)>,
    /// The highest seq ever inserted: the mark of a campaign with nothing open is past it.
    last: u64,
}

impl CampaignWindows {
    fn remove_seq(&mut self, seq: u64) -> Option<Arc<str>> {
        let (deadline, id) = self.by_seq.remove(&seq)?;
        self.due.remove(&(deadline, seq));
        self.by_id.remove(&id);
        Some(id)
    }
}

pub(super) struct OpenWindows {
    campaigns: Mutex<HashMap<String, CampaignWindows>>,
    limit: usize,
}

impl OpenWindows {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            campaigns: Mutex::new(HashMap::new()),
            limit,
        }
    }

    /// Hold the open window of decision `seq`. False when the event id is already held (the
    /// caller writes this one to sled instead).
    pub(super) fn insert(&self, campaign: &str, seq: u64, deadline: u64, event_id: &str) -> bool {
        let mut campaigns = self.campaigns.lock();
        let c = match campaigns.get_mut(campaign) {
            Some(c) => c,
            None => campaigns.entry(campaign.to_string()).or_default(),
        };
        c.last = c.last.max(seq);
        if c.by_id.contains_key(event_id) {
            return false;
        }
        let id: Arc<str> = Arc::from(event_id);
        c.by_id.insert(id.clone(), seq);
        c.by_seq.insert(seq, (deadline, id));
        c.due.insert((deadline, seq));
        true
    }

    /// The decision seq of `event_id` when its join state is held here.
    pub(super) fn seq_of(&self, campaign: &str, event_id: &str) -> Option<u64> {
        self.campaigns
            .lock()
            .get(campaign)?
            .by_id
            .get(event_id)
            .copied()
    }

    /// Stop holding `event_id` (its join state is in sled now, or gone). Returns its seq.
    pub(super) fn remove(&self, campaign: &str, event_id: &str) -> Option<u64> {
        let mut campaigns = self.campaigns.lock();
        let c = campaigns.get_mut(campaign)?;
        let seq = *c.by_id.get(event_id)?;
        c.remove_seq(seq);
        Some(seq)
    }

    /// Stop holding `event_id` if its window ended by `now`.
    pub(super) fn remove_due(&self, campaign: &str, event_id: &str, now: u64) {
        let mut campaigns = self.campaigns.lock();
        let Some(c) = campaigns.get_mut(campaign) else {
            return;
        };
        if let Some(&seq) = c.by_id.get(event_id) {
            if c.by_seq
                .get(&seq)
                .is_some_and(|(deadline, _)| *deadline <= now)
            {
                c.remove_seq(seq);
            }
        }
    }

    /// Whether more events are held than the limit.
    pub(super) fn over_limit(&self) -> bool {
        self.len() > self.limit
    }

    pub(super) fn len(&self) -> usize {
        self.campaigns.lock().values().map(|c| c.by_id.len()).sum()
    }

    /// (deadline, campaign, event id) of held windows due by `now`, oldest first, at most
    /// `limit`.
    pub(super) fn due(&self, now: u64, limit: usize) -> Vec<(u64, String, String)> {
        let campaigns = self.campaigns.lock();
        let mut out = Vec::new();
        for (campaign, c) in campaigns.iter() {
            for &(deadline, seq) in c.due.range(..=(now, u64::MAX)).take(limit) {
                let id = &c.by_seq[&seq].1;
                out.push((deadline, campaign.clone(), id.to_string()));
            }
        }
        out.sort();
        out.truncate(limit);
        out
    }

    /// (event id, seq) of the held events of `campaign` with seq <= `up_to`.
    pub(super) fn up_to(&self, campaign: &str, up_to: u64) -> Vec<(String, u64)> {
        let campaigns = self.campaigns.lock();
        let Some(c) = campaigns.get(campaign) else {
            return Vec::new();
        };
        c.by_seq
            .range(..=up_to)
            .map(|(&seq, (_, id))| (id.to_string(), seq))
            .collect()
    }

    pub(super) fn drop_campaign(&self, campaign: &str) {
        self.campaigns.lock().remove(campaign);
    }

    /// Each campaign's mark: the lowest seq held, or one past the highest seq ever held.
    pub(super) fn marks(&self) -> Vec<(String, u64)> {
        self.campaigns
            .lock()
            .iter()
            .map(|(campaign, c)| {
                let mark = c
                    .by_seq
                    .keys()
                    .next()
                    .copied()
                    .unwrap_or(c.last.saturating_add(1));
                (campaign.clone(), mark)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_removed_and_marked() {
        let w = OpenWindows::new(10);
        assert!(w.insert("c", 5, 900, "a"));
        assert!(w.insert("c", 7, 800, "b"));
        assert!(!w.insert("c", 8, 100, "a"), "an id is held once");
        assert!(w.insert("d", 6, 850, "a"));
        assert_eq!(w.seq_of("c", "a"), Some(5));
        assert_eq!(w.seq_of("d", "a"), Some(6));
        assert_eq!(
            w.due(850, 10),
            vec![(800, "c".into(), "b".into()), (850, "d".into(), "a".into())]
        );
        assert_eq!(w.due(10_000, 1), vec![(800, "c".into(), "b".into())]);
        let mut marks = w.marks();
        marks.sort();
        assert_eq!(marks, vec![("c".into(), 5), ("d".into(), 6)]);
        assert_eq!(w.remove("c", "a"), Some(5));
        assert_eq!(w.remove("c", "a"), None);
        assert_eq!(w.up_to("c", 100), vec![("b".into(), 7)]);
        assert_eq!(w.remove("c", "b"), Some(7));
        // Nothing held: the mark is past the highest seq ever seen (8, the refused one).
        assert!(w.marks().contains(&("c".into(), 9)));
        assert_eq!(w.len(), 1);
        w.drop_campaign("d");
        assert_eq!(w.len(), 0);
        assert!(!w.over_limit());
    }
}
