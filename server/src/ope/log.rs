//! The exported decision log: JSON lines, one decision per line after a header line.
//!
//! ```text
//! {"tailor_log":1,"campaign":{...campaign config...},"from_ms":null,"to_ms":null,"exported_ms":1700000000000}
//! {"event_id":"pv-1","at_ms":1700000000000,"context":{"device":"mobile"},"candidates":[{"id":"sku-1","features":{"price":59.0}},...],"actions":[{"id":"sku-1","probability":0.31,"reward":1.0}],"policy":"thompson","explore":true}
//! ```
//!
//! `candidates` are the ones the logging policy chose from (after constraint plugins), in the
//! order sent; `actions` are the served slots, top first, each with the propensity it was served
//! with (given the slots above) and the reward joined to it (`null` while its window is open).
//! The header is optional for external logs: without it, evaluation uses the default featurizer
//! and only the policies named on the command line. See docs/evaluation.md.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tailor_wire::{Candidate, DecideRequest};

use crate::campaign::CampaignConfig;
use crate::store::{DecisionRecord, RewardRecord};

/// Version of the format written in the header.
pub const LOG_FORMAT_VERSION: u32 = 1;

/// First line of an exported log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogHeader {
    pub tailor_log: u32,
    pub campaign: CampaignConfig,
    #[serde(default)]
    pub from_ms: Option<u64>,
    #[serde(default)]
    pub to_ms: Option<u64>,
    #[serde(default)]
    pub exported_ms: u64,
}

/// One served slot of a logged decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogAction {
    pub id: String,
    /// Probability the logging policy had of serving it given the slots above.
    #[serde(default)]
    pub probability: Option<f64>,
    /// The joined reward; `None` while the reward window is open.
    #[serde(default)]
    pub reward: Option<f64>,
    /// Served by a merchandiser's pin (probability 1): evaluation treats the slot as forced for
    /// every policy (docs/merchandising.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
}

/// One logged decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    pub event_id: String,
    #[serde(default)]
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub context: Value,
    pub candidates: Vec<Candidate>,
    pub actions: Vec<LogAction>,
    /// The policy that served (informational).
    #[serde(default)]
    pub policy: String,
    /// Whether the request allowed exploration; targets are evaluated the same way.
    #[serde(default = "yes")]
    pub explore: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub holdout: bool,
}

fn yes() -> bool {
    true
}

/// Applied rewards of one campaign by decision (`K`) and slot, built by one pass over the
/// reward log.
///
/// Compact so that exporting or evaluating a log of millions of decisions stays within a bounded
/// memory: one entry per applied reward (the key, the slot and the value), sorted, instead of
/// the event id strings and the full reward records. Two keys:
///
/// - [`ByDecision`] (the log export and every evaluation): the decision's sequence number, as
///   the reward entries name it. 24 bytes per reward, exact, and built without reading any
///   decision.
/// - [`ByEvent`] (the reports, which read full reward records): a 128-bit hash of the event id
///   under a seed drawn per index (so ids cannot be crafted to collide). 32 bytes per reward.
#[derive(Debug)]
pub struct RewardIndex<K> {
    seed: u64,
    /// Sorted by (key, slot); one entry per (key, slot).
    entries: Vec<IndexEntry<K>>,
    /// Every reward of the campaign lies in [0, 1].
    binary: bool,
}

/// Rewards by decision sequence number and slot.
pub type ByDecision = RewardIndex<u64>;

/// Rewards by (hashed) event id and slot.
pub type ByEvent = RewardIndex<[u64; 2]>;

#[derive(Debug, Clone, Copy)]
struct IndexEntry<K> {
    key: K,
    slot: u32,
    /// Position in the reward log: sorting on it keeps the first of a (key, slot) first
    /// without a stable sort's buffer of half the index. (It fills the entry's padding; an
    /// index of more than 2^32 rewards is out of reach of memory anyway.)
    order: u32,
    value: f64,
}

impl<K: Copy + Ord> RewardIndex<K> {
    /// Index (key, slot, value) triples in reward-log order. An (event, slot) holding several
    /// rewards keeps the first (each slot is applied once; the log export and evaluation keep
    /// the first if a log ever held two), or their sum, added in log order, when `sum`.
    fn collect<E>(
        seed: u64,
        values: impl Iterator<Item = Result<(K, u32, f64), E>>,
        sum: bool,
    ) -> Result<Self, E> {
        let mut index = Self {
            seed,
            entries: Vec::new(),
            binary: true,
        };
        for (order, v) in values.enumerate() {
            let (key, slot, value) = v?;
            index.binary &= (0.0..=1.0).contains(&value);
            index.entries.push(IndexEntry {
                key,
                slot,
                order: order as u32,
                value: if sum { 0.0 + value } else { value },
            });
        }
        // Equal (key, slot) in log order, so `dedup_by` sees the first one first.
        index
            .entries
            .sort_unstable_by_key(|e| (e.key, e.slot, e.order));
        index.entries.dedup_by(|later, first| {
            let same = later.key == first.key && later.slot == first.slot;
            if same && sum {
                first.value += later.value;
            }
            same
        });
        index.entries.shrink_to_fit();
        Ok(index)
    }

    fn find(&self, key: K, slot: u32) -> Option<f64> {
        self.entries
            .binary_search_by(|e| (e.key, e.slot).cmp(&(key, slot)))
            .ok()
            .map(|i| self.entries[i].value)
    }

    /// Every indexed reward value lies in [0, 1].
    pub fn binary(&self) -> bool {
        self.binary
    }

    /// Number of (decision, slot) rewards indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl ByDecision {
    /// Index one campaign's (decision seq, slot, value) triples
    /// ([`crate::store::LogStore::reward_values`]: no decision is read).
    pub fn build_from_values<E>(
        values: impl Iterator<Item = Result<(u64, u32, f64), E>>,
    ) -> Result<Self, E> {
        Self::collect(0, values, false)
    }

    /// The reward applied to `slot` of the decision with sequence number `seq`, if any.
    pub fn get(&self, seq: u64, slot: u32) -> Option<f64> {
        self.find(seq, slot)
    }
}

impl ByEvent {
    fn key(seed: u64, event_id: &str) -> [u64; 2] {
        let h = xxhash_rust::xxh3::xxh3_128_with_seed(event_id.as_bytes(), seed);
        [(h >> 64) as u64, h as u64]
    }

    /// Index the applied rewards of `campaign` among `rewards` (in reward-log order), keeping the
    /// first of an (event, slot).
    pub fn build<E>(
        campaign: &str,
        rewards: impl Iterator<Item = Result<RewardRecord, E>>,
    ) -> Result<Self, E> {
        Self::by_event(campaign, rewards, false)
    }

    /// As [`ByEvent::build`], but an (event, slot) holding several rewards gets their sum,
    /// added in log order (the marketer reports' outcome).
    pub fn build_summed<E>(
        campaign: &str,
        rewards: impl Iterator<Item = Result<RewardRecord, E>>,
    ) -> Result<Self, E> {
        Self::by_event(campaign, rewards, true)
    }

    fn by_event<E>(
        campaign: &str,
        rewards: impl Iterator<Item = Result<RewardRecord, E>>,
        sum: bool,
    ) -> Result<Self, E> {
        let seed = rand::random();
        let values = rewards.filter_map(|r| match r {
            Ok(r) if r.campaign != campaign => None,
            Ok(r) => Some(Ok((Self::key(seed, &r.event_id), r.slot, r.value))),
            Err(e) => Some(Err(e)),
        });
        Self::collect(seed, values, sum)
    }

    /// The reward applied to `slot` of `event_id`, if any.
    pub fn get(&self, event_id: &str, slot: u32) -> Option<f64> {
        self.find(Self::key(self.seed, event_id), slot)
    }
}

/// The log line of a decision, or `None` when its request body was not kept or is not a decide
/// request (then the candidates are unknown).
pub fn line_of(d: &DecisionRecord, rewards: &ByDecision) -> Option<LogLine> {
    if d.request.is_empty() {
        return None;
    }
    let req: DecideRequest = serde_json::from_slice(&d.request).ok()?;
    let removed: HashSet<&str> = d.removed.iter().map(|(_, id, _)| id.as_str()).collect();
    Some(LogLine {
        event_id: d.event_id.clone(),
        at_ms: d.at_ms,
        context: req.context,
        candidates: req
            .candidates
            .into_iter()
            .filter(|c| !removed.contains(c.id.as_str()))
            .collect(),
        actions: d
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| LogAction {
                id: a.id.clone(),
                probability: Some(a.probability),
                reward: u32::try_from(i)
                    .ok()
                    .and_then(|slot| rewards.get(d.seq, slot)),
                pinned: d.pinned.contains(i),
            })
            .collect(),
        policy: d.policy.clone(),
        explore: d.explore,
        holdout: d.holdout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LoggedAction, RewardKind};

    fn reward(campaign: &str, event: &str, slot: u32, value: f64) -> RewardRecord {
        RewardRecord {
            seq: 0,
            event_id: event.into(),
            campaign: campaign.into(),
            at_ms: 0,
            kind: RewardKind::Explicit,
            slot,
            action: LoggedAction {
                id: "a".into(),
                probability: 0.5,
                x: Default::default(),
            },
            value,
            holdout: false,
            policy: "thompson".into(),
        }
    }

    fn log() -> Vec<Result<RewardRecord, std::convert::Infallible>> {
        let mut out = Vec::new();
        for i in 0..2_000 {
            out.push(Ok(reward(
                "c",
                &format!("e-{i}"),
                (i % 3) as u32,
                i as f64 / 1000.0,
            )));
            out.push(Ok(reward("other", &format!("e-{i}"), (i % 3) as u32, 5.0)));
        }
        // A slot that (against the engine's rule) got two rewards.
        out.push(Ok(reward("c", "e-7", 1, 0.25)));
        out
    }

    #[test]
    fn the_index_finds_each_slot_of_its_campaign_only() {
        let index = ByEvent::build("c", log().into_iter()).unwrap();
        assert_eq!(index.len(), 2_000);
        assert!(!index.binary(), "values up to 1.999");
        for i in 0..2_000u32 {
            let e = format!("e-{i}");
            assert_eq!(index.get(&e, i % 3), Some(f64::from(i) / 1000.0), "{e}");
            assert_eq!(index.get(&e, i % 3 + 1), None);
        }
        assert_eq!(index.get("e-2000", 2), None);
        // e-7 slot 1 was rewarded first with 0.007: the first stays.
        assert_eq!(index.get("e-7", 1), Some(0.007));
        let summed = ByEvent::build_summed("c", log().into_iter()).unwrap();
        assert_eq!(summed.get("e-7", 1), Some(0.007 + 0.25));
        assert_eq!(summed.get("e-8", 2), Some(0.008));
        let other = ByEvent::build("other", log().into_iter()).unwrap();
        assert_eq!(other.get("e-3", 0), Some(5.0));
    }

    #[test]
    fn the_index_by_decision_keeps_the_first_reward_of_a_slot() {
        // Log order: decision 7's slot 1 is rewarded twice, decision 3's after decision 9's.
        let values = [
            (7, 1, 0.25),
            (9, 0, 1.0),
            (7, 1, 0.75),
            (3, 0, 0.5),
            (7, 0, 2.0),
        ];
        let index = ByDecision::build_from_values(
            values.into_iter().map(Ok::<_, std::convert::Infallible>),
        )
        .unwrap();
        assert_eq!(index.len(), 4);
        assert!(!index.binary(), "2.0 is out of [0, 1]");
        assert_eq!(index.get(7, 1), Some(0.25), "the first stays");
        assert_eq!(index.get(7, 0), Some(2.0));
        assert_eq!(index.get(3, 0), Some(0.5));
        assert_eq!(index.get(9, 0), Some(1.0));
        assert_eq!(index.get(9, 1), None);
        assert_eq!(index.get(8, 0), None);
    }
}
