//! Report aggregates kept in memory per campaign and updated as decisions are counted and
//! rewards applied, so the dashboard's reports (per action, hidden gems, lift over the holdout,
//! reward over time per policy) read counters instead of folding over the logs.
//!
//! What is kept (see docs/reports.md):
//! * per action: exposures, exposures with a positive reward, sum and sum of squares of the
//!   slot rewards;
//! * per hour of decision time: count, sum and sum of squares of the decision outcomes
//!   (personalized and holdout apart), and per serving policy: count and reward sum;
//! * per decision whose reward window still waits for a slot's reward: its hour, arm, policy and
//!   the outcome so far (one small entry, dropped when its last slot is rewarded);
//! * whether every applied reward lies in [0, 1].
//!
//! They are written into the campaign's snapshot under [`SNAPSHOT_ENTRY`] and cover exactly the
//! log positions the snapshot covers ("written up to" its `decision_seq` and `reward_seq`):
//! recovery replays later decisions and rewards through the same counting path. A snapshot
//! without the entry (a store written before these aggregates existed) gets them built once
//! from the logs at open.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use tailor_policies::RewardRange;

use super::reports::{self, ActionReport, GemsReport, LiftReport, PolicySeries};
use super::{Books, Engine};
use crate::error::EngineError;
use crate::ope::log::ByEvent;
use crate::store::{AdjustmentEntry, DecisionRecord, RewardRecord, Store};

/// Name of the snapshot entry (in `CampaignSnapshot.policies`) holding the aggregates.
pub(super) const SNAPSHOT_ENTRY: &str = "reports.aggregates";
/// Name of the snapshot entry holding the aggregates cut by audience.
pub(super) const AUDIENCES_ENTRY: &str = "reports.audiences";
/// First byte of the entry: the encoding's version. Version 1 held every waiting decision.
const VERSION: u8 = 2;
const VERSION_1: u8 = 1;
/// A waiting decision counted this many hours before the newest one is written into the
/// snapshot; younger ones are counted again from the log at start (see [`OpenMap`]).
const REBUILD_HOURS: u32 = 2;
/// Width of the kept time buckets. A report's `bucket_seconds` that is a multiple of it is
/// served from the aggregates; any other width folds over the log as before.
pub const BUCKET_MS: u64 = 3_600_000;
/// A decision still waiting for a reward this many hours past its deadline is no longer
/// tracked (a deferred decision never activated gets none); its outcome stays as counted.
const FORGET_AFTER_HOURS: u32 = 7 * 24;

/// What the counting path knows of a decision besides its served action ids.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecisionFacts<'a> {
    /// The decision's sequence number in its campaign's log.
    pub seq: u64,
    pub event_id: &'a str,
    pub at_ms: u64,
    pub deadline_ms: u64,
    pub holdout: bool,
    pub policy: &'a str,
    /// The decision's audience value, when its campaign names an audience field.
    pub audience: Option<&'a str>,
}

impl<'a> DecisionFacts<'a> {
    pub(crate) fn of(d: &'a DecisionRecord) -> Self {
        Self {
            seq: d.seq,
            event_id: &d.event_id,
            at_ms: d.at_ms,
            deadline_ms: d.deadline_ms,
            holdout: d.holdout,
            policy: &d.policy,
            audience: d.audience.0.as_deref(),
        }
    }
}

/// Count, sum and sum of squares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Moments {
    pub n: u64,
    pub sum: f64,
    pub sum_sq: f64,
}

impl Moments {
    fn merge(&mut self, o: &Moments) {
        self.n += o.n;
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
    }
}

/// Decision outcomes of one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct HourAgg {
    pub personalized: Moments,
    pub holdout: Moments,
}

impl HourAgg {
    fn arm(&mut self, holdout: bool) -> &mut Moments {
        if holdout {
            &mut self.holdout
        } else {
            &mut self.personalized
        }
    }
}

/// Per-action sums over exposures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ActionTally {
    pub exposures: u64,
    /// Exposures whose slot reward is positive.
    pub rewarded: u64,
    pub sum: f64,
    pub sum_sq: f64,
}

/// A 128-bit hash of an event id (keyed by the book's seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Key(u64, u64);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// Per hour of decision time: (decisions, reward sum).
type PolicyHours = BTreeMap<u32, (u64, f64)>;

/// The key is already a keyed hash: used as it is.
type KeyMap<V> = HashMap<Key, V, crate::prehashed::PreHashed>;

/// A decision some of whose slots have no reward yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Open {
    /// The decision's sequence number (0: restored from a version-1 snapshot, unknown).
    seq: u64,
    /// Created by [`ReportBook::reopen`] at start: the rewards it already had are applied to
    /// it again, without counting them twice.
    #[serde(skip)]
    rebuilding: bool,
    hour: u32,
    deadline_hour: u32,
    policy: u16,
    holdout: bool,
    /// Slots still without a reward.
    left: u32,
    /// Sum of the slot rewards so far.
    outcome: f64,
    /// Multi-slot decisions: each slot's reward so far (`None`: none yet).
    slots: Option<Box<[Option<f64>]>>,
}

impl Open {
    fn new(facts: &DecisionFacts<'_>, policy: u16, slots: u32, rebuilding: bool) -> Self {
        Self {
            seq: facts.seq,
            rebuilding,
            hour: hour_of(facts.at_ms),
            deadline_hour: hour_of(facts.deadline_ms),
            policy,
            holdout: facts.holdout,
            left: slots,
            outcome: 0.0,
            slots: (slots > 1).then(|| vec![None; slots as usize].into_boxed_slice()),
        }
    }
}

/// The layout of a version-1 snapshot entry (every waiting decision in it), converted when
/// read.
#[derive(Deserialize)]
struct ReportBookV1 {
    seed: u64,
    binary: bool,
    actions: HashMap<String, ActionTally>,
    hours: BTreeMap<u32, HourAgg>,
    policies: Vec<(String, PolicyHours)>,
    open: KeyMap<OpenV1>,
    parked: KeyMap<Vec<Parked>>,
    newest_hour: u32,
    last_forget_hour: u32,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OpenV1 {
    hour: u32,
    deadline_hour: u32,
    policy: u16,
    holdout: bool,
    left: u32,
    outcome: f64,
    slots: Option<Box<[Option<f64>]>>,
}

impl From<ReportBookV1> for ReportBook {
    fn from(v: ReportBookV1) -> Self {
        let open = v.open.into_iter().map(|(k, o)| {
            let open = Open {
                seq: 0,
                rebuilding: false,
                hour: o.hour,
                deadline_hour: o.deadline_hour,
                policy: o.policy,
                holdout: o.holdout,
                left: o.left,
                outcome: o.outcome,
                slots: o.slots,
            };
            (k, open)
        });
        Self {
            built: true,
            seed: v.seed,
            binary: v.binary,
            actions: v.actions,
            hours: v.hours,
            policies: v.policies,
            open: OpenMap {
                map: open.collect(),
                ..OpenMap::default()
            },
            parked: v.parked,
            newest_hour: v.newest_hour,
            last_forget_hour: v.last_forget_hour,
        }
    }
}

#[derive(Deserialize)]
struct AudienceBooksV1 {
    values: Vec<String>,
    books: Vec<ReportBookV1>,
}

/// The decisions waiting for a reward. A snapshot writes only the ones counted
/// [`REBUILD_HOURS`] or more before the newest decision, or past their deadline (decisions
/// never activated, windows not closed yet), and the sequence number of the oldest other one:
/// recovery counts those again from the log (their decisions and rewards, without adding them
/// to the sums twice). Before, every snapshot held one entry per open reward window, so a
/// campaign with hour-long windows wrote tens of megabytes every few seconds.
#[derive(Debug, Clone, Default)]
struct OpenMap {
    map: KeyMap<Open>,
    /// Restored: decisions from this sequence number on are counted again at start (0: none).
    rebuild_from: u64,
    /// Set while encoding for a cluster image: every waiting decision is written (the replica
    /// that restores it has none of their decisions in its log).
    write_all: Cell<bool>,
}

impl Serialize for OpenMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let newest = self.map.values().map(|o| o.hour).max().unwrap_or(0);
        let mut rebuild_from = u64::MAX;
        let mut kept: Vec<(&Key, &Open)> = Vec::new();
        let all = self.write_all.get();
        for (k, o) in &self.map {
            if all || o.seq == 0 || o.deadline_hour < newest || o.hour + REBUILD_HOURS <= newest {
                kept.push((k, o));
            } else {
                rebuild_from = rebuild_from.min(o.seq);
            }
        }
        let rebuild_from = if rebuild_from == u64::MAX {
            0
        } else {
            rebuild_from
        };
        (rebuild_from, kept).serialize(s)
    }
}

impl<'de> Deserialize<'de> for OpenMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (rebuild_from, kept) = <(u64, Vec<(Key, Open)>)>::deserialize(d)?;
        Ok(Self {
            map: kept.into_iter().collect(),
            rebuild_from,
            write_all: Cell::new(false),
        })
    }
}

/// What settling one slot changes: the slot's reward and the decision's outcome, before and
/// after, and where the decision is counted.
struct Settled {
    before: f64,
    after: f64,
    old_outcome: f64,
    new_outcome: f64,
    hour: u32,
    holdout: bool,
    policy: u16,
}

/// A reward met before its decision (recovery replays rewards before decisions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Parked {
    slot: u32,
    action: String,
    value: f64,
    at_hour: u32,
}

/// The aggregates of one campaign. Lives in [`Books`], under the campaign's books lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReportBook {
    /// False when restored from a snapshot without the entry: [`build_if_needed`] fills it.
    #[serde(skip)]
    built: bool,
    seed: u64,
    binary: bool,
    actions: HashMap<String, ActionTally>,
    hours: BTreeMap<u32, HourAgg>,
    /// (policy name, hour → (decisions, reward sum)).
    policies: Vec<(String, PolicyHours)>,
    open: OpenMap,
    parked: KeyMap<Vec<Parked>>,
    newest_hour: u32,
    last_forget_hour: u32,
}

impl Default for ReportBook {
    /// An empty book that covers an empty log.
    fn default() -> Self {
        Self {
            built: true,
            seed: rand::random(),
            binary: true,
            actions: HashMap::new(),
            hours: BTreeMap::new(),
            policies: Vec::new(),
            open: OpenMap::default(),
            parked: KeyMap::default(),
            newest_hour: 0,
            last_forget_hour: 0,
        }
    }
}

/// The aggregates cut by the campaign's audience field: one [`ReportBook`] per audience value,
/// in order of first appearance (at most [`super::MAX_AUDIENCES`], then
/// [`super::OTHER_AUDIENCE`]). A reward or adjustment is counted in the book whose decision
/// waits for it; an adjustment to a decision already settled is counted in the campaign's
/// book only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AudienceBooks {
    values: Vec<String>,
    books: Vec<ReportBook>,
}

impl AudienceBooks {
    /// The books a snapshot entry holds; empty when there is none or it is unreadable.
    pub(crate) fn from_snapshot(entry: Option<&[u8]>) -> Self {
        let decoded = match entry.and_then(|b| b.split_first()) {
            Some((&VERSION, rest)) => postcard::from_bytes(rest),
            Some((&VERSION_1, rest)) => {
                postcard::from_bytes::<AudienceBooksV1>(rest).map(|v| Self {
                    values: v.values,
                    books: v.books.into_iter().map(ReportBook::from).collect(),
                })
            }
            _ => return Self::default(),
        };
        decoded.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "audience aggregates unreadable; starting them empty");
            Self::default()
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend(postcard::to_stdvec(self).expect("postcard encoding of audience aggregates"));
        out
    }

    /// [`ReportBook::encode_all`] for every audience.
    pub(crate) fn encode_all(&self) -> Vec<u8> {
        self.books.iter().for_each(|b| b.open.write_all.set(true));
        let out = self.encode();
        self.books.iter().for_each(|b| b.open.write_all.set(false));
        out
    }

    /// [`ReportBook::forget_seqs`] for every audience.
    pub(crate) fn forget_seqs(&mut self) {
        self.books.iter_mut().for_each(ReportBook::forget_seqs);
    }

    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    fn index(&mut self, value: &str) -> usize {
        if let Some(i) = self.values.iter().position(|v| v == value) {
            return i;
        }
        let name = if self.values.len() < super::MAX_AUDIENCES {
            value
        } else {
            super::OTHER_AUDIENCE
        };
        if let Some(i) = self.values.iter().position(|v| v == name) {
            return i;
        }
        self.values.push(name.to_string());
        self.books.push(ReportBook::default());
        self.books.len() - 1
    }

    /// The book of the decision's audience, if its campaign names an audience field.
    pub(crate) fn of_audience(&mut self, facts: &DecisionFacts<'_>) -> Option<&mut ReportBook> {
        let i = self.index(facts.audience?);
        Some(&mut self.books[i])
    }

    /// The book waiting for a reward of `event_id`.
    pub(crate) fn waiting_for(&mut self, event_id: &str) -> Option<&mut ReportBook> {
        self.books.iter_mut().find(|b| b.holds(event_id))
    }

    pub(crate) fn on_decision<'a>(
        &mut self,
        facts: &DecisionFacts<'_>,
        actions: impl Iterator<Item = &'a str>,
    ) {
        if let Some(b) = self.of_audience(facts) {
            b.on_decision(facts, actions);
        }
    }

    pub(crate) fn on_reward(&mut self, r: &RewardRecord) {
        if let Some(b) = self.waiting_for(&r.event_id) {
            b.on_reward(r);
        }
    }

    pub(crate) fn on_adjust(&mut self, e: &AdjustmentEntry) {
        if let Some(b) = self.waiting_for(&e.event_id) {
            b.on_adjust(e);
        }
    }

    /// The first decision recovery counts again in any audience's book (0: none).
    pub(crate) fn rebuild_from(&self) -> u64 {
        self.books
            .iter()
            .map(ReportBook::rebuild_from)
            .filter(|&s| s > 0)
            .min()
            .unwrap_or(0)
    }
}

fn hour_of(ms: u64) -> u32 {
    u32::try_from(ms / BUCKET_MS).unwrap_or(u32::MAX)
}

impl ReportBook {
    /// The book a snapshot entry holds; an unbuilt one when there is none or it is unreadable.
    pub(crate) fn from_snapshot(entry: Option<&[u8]>) -> Self {
        let decoded = entry.and_then(|bytes| {
            let decoded = match bytes.split_first() {
                Some((&VERSION, rest)) => postcard::from_bytes::<ReportBook>(rest),
                Some((&VERSION_1, rest)) => {
                    postcard::from_bytes::<ReportBookV1>(rest).map(ReportBook::from)
                }
                _ => return None,
            };
            decoded
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "report aggregates unreadable; rebuilding them from the logs");
                })
                .ok()
        });
        match decoded {
            Some(b) => Self { built: true, ..b },
            None => Self {
                built: false,
                ..Self::default()
            },
        }
    }

    /// The snapshot entry of a cluster image: every waiting decision written out.
    pub(crate) fn encode_all(&self) -> Vec<u8> {
        self.open.write_all.set(true);
        let out = self.encode();
        self.open.write_all.set(false);
        out
    }

    /// Restored from a cluster image: the waiting decisions' sequence numbers are the taking
    /// replica's, so they are never counted again from this replica's log.
    pub(crate) fn forget_seqs(&mut self) {
        for o in self.open.map.values_mut() {
            o.seq = 0;
        }
    }

    /// The snapshot entry: a version byte, then postcard.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend(postcard::to_stdvec(self).expect("postcard encoding of report aggregates"));
        out
    }

    /// Forget everything (the campaign's logs were deleted).
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    fn key(&self, event_id: &str) -> Key {
        let h = xxhash_rust::xxh3::xxh3_128_with_seed(event_id.as_bytes(), self.seed);
        Key((h >> 64) as u64, h as u64)
    }

    fn policy_index(&mut self, policy: &str) -> u16 {
        if let Some(i) = self.policies.iter().position(|(p, _)| p == policy) {
            return i as u16;
        }
        // Policy names are the few policy kinds plus `baseline`; u16 is plenty.
        self.policies.push((policy.to_string(), BTreeMap::new()));
        (self.policies.len() - 1).min(usize::from(u16::MAX)) as u16
    }

    fn tally(&mut self, id: &str) -> &mut ActionTally {
        if !self.actions.contains_key(id) {
            self.actions.insert(id.to_string(), ActionTally::default());
        }
        self.actions.get_mut(id).expect("just inserted")
    }

    /// Count a decision serving `actions` (ids, by slot).
    pub(crate) fn on_decision<'a>(
        &mut self,
        facts: &DecisionFacts<'_>,
        actions: impl Iterator<Item = &'a str>,
    ) {
        let hour = hour_of(facts.at_ms);
        self.forget_stale(hour);
        let mut slots = 0u32;
        for id in actions {
            self.tally(id).exposures += 1;
            slots += 1;
        }
        self.hours.entry(hour).or_default().arm(facts.holdout).n += 1;
        let policy = self.policy_index(facts.policy);
        self.policies[usize::from(policy)]
            .1
            .entry(hour)
            .or_default()
            .0 += 1;
        if slots == 0 {
            return;
        }
        let key = self.key(facts.event_id);
        self.open
            .map
            .insert(key, Open::new(facts, policy, slots, false));
        if let Some(parked) = self.parked.remove(&key) {
            for p in parked {
                self.apply(key, p.slot, &p.action, p.value);
            }
        }
    }

    /// Whether the decision `event_id` is counted here and still waits for a reward.
    fn holds(&self, event_id: &str) -> bool {
        self.open.map.contains_key(&self.key(event_id))
    }

    /// Decisions counted: (personalized, holdout).
    fn decisions(&self) -> (u64, u64) {
        self.hours
            .values()
            .fold((0, 0), |(p, h), a| (p + a.personalized.n, h + a.holdout.n))
    }

    /// Count an applied reward (its value already within the campaign's range).
    pub(crate) fn on_reward(&mut self, r: &RewardRecord) {
        self.binary &= (0.0..=1.0).contains(&r.value);
        let key = self.key(&r.event_id);
        if self.open.map.contains_key(&key) {
            self.apply(key, r.slot, &r.action.id, r.value);
        } else {
            self.parked.entry(key).or_default().push(Parked {
                slot: r.slot,
                action: r.action.id.clone(),
                value: r.value,
                at_hour: hour_of(r.at_ms),
            });
        }
    }

    /// Add `value` to `slot` of the open decision `key`.
    fn apply(&mut self, key: Key, slot: u32, action: &str, value: f64) {
        let Some(Settled {
            before,
            after,
            old_outcome,
            new_outcome,
            hour,
            holdout,
            policy,
        }) = self.settle(key, slot, value)
        else {
            return;
        };
        let t = self.tally(action);
        t.sum += value;
        t.sum_sq += after * after - before * before;
        t.rewarded = t.rewarded + u64::from(after > 0.0) - u64::from(before > 0.0);
        self.count_outcome(hour, holdout, policy, value, (old_outcome, new_outcome));
    }

    /// A decision's outcome moved by `delta` (from `outcome.0` to `outcome.1`): the sums of
    /// its hour and arm, and its policy's reward sum.
    fn count_outcome(
        &mut self,
        hour: u32,
        holdout: bool,
        policy: u16,
        delta: f64,
        (before, after): (f64, f64),
    ) {
        let m = self.hours.entry(hour).or_default().arm(holdout);
        m.sum += delta;
        m.sum_sq += after * after - before * before;
        self.policies[usize::from(policy)]
            .1
            .entry(hour)
            .or_default()
            .1 += delta;
    }

    /// Add `value` to `slot` of the open decision `key` (dropped once every slot has a reward):
    /// what the sums must change by, or `None` when no such decision or slot waits.
    fn settle(&mut self, key: Key, slot: u32, value: f64) -> Option<Settled> {
        let open = self.open.map.get_mut(&key)?;
        let s = slot as usize;
        let prev = match &open.slots {
            None if s == 0 => (open.left == 0).then_some(open.outcome),
            Some(v) if s < v.len() => v[s],
            // A slot the decision does not have: the fold ignores it too.
            _ => return None,
        };
        let before = prev.unwrap_or(0.0);
        let after = 0.0 + before + value;
        let settled = Settled {
            before,
            after,
            old_outcome: open.outcome,
            new_outcome: open.outcome + value,
            hour: open.hour,
            holdout: open.holdout,
            policy: open.policy,
        };
        open.outcome = settled.new_outcome;
        if prev.is_none() {
            open.left -= 1;
        }
        if let Some(v) = &mut open.slots {
            v[s] = Some(after);
        }
        if open.left == 0 {
            self.open.map.remove(&key);
        }
        Some(settled)
    }

    // -----------------------------------------------------------------------------------------
    // Recovery: the waiting decisions a snapshot left out, counted again from the log

    /// The first decision recovery counts again (0: none).
    pub(crate) fn rebuild_from(&self) -> u64 {
        self.open.rebuild_from
    }

    /// Wait again for the rewards of a decision the snapshot covers but did not write out.
    pub(crate) fn reopen<'a>(
        &mut self,
        facts: &DecisionFacts<'_>,
        actions: impl Iterator<Item = &'a str>,
    ) {
        if self.open.rebuild_from == 0 || facts.seq < self.open.rebuild_from {
            return;
        }
        let slots = actions.count() as u32;
        let key = self.key(facts.event_id);
        if slots == 0 || self.open.map.contains_key(&key) {
            return;
        }
        let policy = self.policy_index(facts.policy);
        self.open
            .map
            .insert(key, Open::new(facts, policy, slots, true));
    }

    /// A reward the snapshot covers, to a decision [`ReportBook::reopen`] waits for again:
    /// its slot is settled, the sums (which hold it) are left alone.
    pub(crate) fn reapply(&mut self, r: &RewardRecord) {
        let key = self.key(&r.event_id);
        if self.open.map.get(&key).is_some_and(|o| o.rebuilding) {
            self.settle(key, r.slot, r.value);
        }
    }

    /// An adjustment the snapshot covers, to a decision [`ReportBook::reopen`] waits for again.
    pub(crate) fn readjust(&mut self, e: &AdjustmentEntry) {
        let key = self.key(&e.event_id);
        if let Some(open) = self.open.map.get_mut(&key).filter(|o| o.rebuilding) {
            open.outcome += e.value - e.previous;
            if let Some(slot) = open.slots.as_mut().and_then(|v| v.get_mut(e.slot as usize)) {
                *slot = Some(e.value);
            }
        }
    }

    /// Count an adjustment (a return): `slot` of the decision `e.event_id` now holds `e.value`
    /// instead of `e.previous`. A decision still waiting for another slot's reward is corrected
    /// in place; a settled one through the outcome the entry recorded.
    pub(crate) fn on_adjust(&mut self, e: &AdjustmentEntry) {
        let delta = e.value - e.previous;
        self.binary &= (0.0..=1.0).contains(&e.value);
        let key = self.key(&e.event_id);
        let (before, hour, holdout, policy) = match self.open.map.get_mut(&key) {
            Some(open) => {
                let before = open.outcome;
                open.outcome += delta;
                if let Some(slot) = open.slots.as_mut().and_then(|v| v.get_mut(e.slot as usize)) {
                    *slot = Some(e.value);
                }
                (before, open.hour, open.holdout, open.policy)
            }
            None => (
                e.outcome_before,
                hour_of(e.decision_at_ms),
                e.holdout,
                self.policy_index(&e.policy),
            ),
        };
        let t = self.tally(&e.action);
        t.sum += delta;
        t.sum_sq += e.value * e.value - e.previous * e.previous;
        t.rewarded =
            (t.rewarded + u64::from(e.value > 0.0)).saturating_sub(u64::from(e.previous > 0.0));
        self.count_outcome(hour, holdout, policy, delta, (before, before + delta));
    }

    /// Once a day of decision time, drop decisions and parked rewards long past their windows.
    fn forget_stale(&mut self, hour: u32) {
        if hour <= self.newest_hour {
            return;
        }
        self.newest_hour = hour;
        if hour < self.last_forget_hour.saturating_add(24) {
            return;
        }
        self.last_forget_hour = hour;
        let cutoff = hour.saturating_sub(FORGET_AFTER_HOURS);
        self.open.map.retain(|_, o| o.deadline_hour >= cutoff);
        self.parked.retain(|_, v| {
            v.retain(|p| p.at_hour >= cutoff);
            !v.is_empty()
        });
    }

    /// Decisions still waiting for a reward, and rewards waiting for their decision.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> (usize, usize) {
        (self.open.map.len(), self.parked.len())
    }

    // -----------------------------------------------------------------------------------------
    // Reading

    /// A copy of the per-action sums (taken under the books lock; sorted after it).
    fn actions_copy(&self) -> Vec<(String, ActionTally)> {
        self.actions
            .iter()
            .map(|(id, t)| (id.clone(), *t))
            .collect()
    }

    #[cfg(test)]
    fn actions_tally(&self) -> BTreeMap<String, reports::Tally> {
        tallies(self.actions_copy())
    }

    fn lift(&self, bucket_seconds: u64) -> LiftReport {
        let bucket_ms = bucket_seconds.max(1) * 1000;
        let mut total = HourAgg::default();
        let mut series: BTreeMap<u64, HourAgg> = BTreeMap::new();
        for (&h, agg) in &self.hours {
            let start = u64::from(h) * BUCKET_MS / bucket_ms * bucket_ms;
            let b = series.entry(start).or_default();
            b.personalized.merge(&agg.personalized);
            b.holdout.merge(&agg.holdout);
            total.personalized.merge(&agg.personalized);
            total.holdout.merge(&agg.holdout);
        }
        reports::lift_from_moments(
            bucket_seconds,
            &(total.personalized, total.holdout),
            series
                .into_iter()
                .map(|(s, a)| (s, (a.personalized, a.holdout))),
        )
    }

    fn policies(&self, bucket_seconds: u64) -> Vec<PolicySeries> {
        let bucket_ms = bucket_seconds.max(1) * 1000;
        let mut m: BTreeMap<String, BTreeMap<u64, (u64, f64)>> = BTreeMap::new();
        for (name, hours) in &self.policies {
            let per = m.entry(name.clone()).or_default();
            for (&h, &(n, s)) in hours {
                let e = per
                    .entry(u64::from(h) * BUCKET_MS / bucket_ms * bucket_ms)
                    .or_default();
                e.0 += n;
                e.1 += s;
            }
        }
        m.retain(|_, b| !b.is_empty());
        reports::policy_series(m)
    }
}

/// Build the aggregates of a campaign restored from a snapshot without them: one fold over its
/// logs up to the snapshot's positions (later records are replayed through the counting path).
pub(crate) fn build_if_needed(
    books: &mut Books,
    store: &dyn Store,
    campaign: &str,
    range: RewardRange,
) -> Result<(), EngineError> {
    if books.reports.built {
        return Ok(());
    }
    let (decision_seq, reward_seq) = (books.decision_seq, books.reward_seq);
    let book = build(store, campaign, range, decision_seq, reward_seq)?;
    tracing::info!(
        campaign,
        decisions = books.decisions,
        "built report aggregates from the logs"
    );
    books.reports = book;
    Ok(())
}

/// The aggregates of the campaign's logs up to the given positions (the old fold).
pub(crate) fn build(
    store: &dyn Store,
    campaign: &str,
    range: RewardRange,
    decision_seq: u64,
    reward_seq: u64,
) -> Result<ReportBook, EngineError> {
    let rewards = ByEvent::build_summed(
        campaign,
        store
            .rewards(campaign)
            .take_while(|r| r.as_ref().map_or(true, |r| r.seq <= reward_seq))
            .map(|r| {
                r.map(|mut r| {
                    r.value = range.clamp(r.value);
                    r
                })
            }),
    )?;
    let (adjusted, adjusted_binary) = super::adjust::adjusted_values(store, campaign, reward_seq)?;
    let mut book = ReportBook {
        binary: rewards.binary() && adjusted_binary,
        ..ReportBook::default()
    };
    for d in store.decisions(campaign, 0) {
        let d = d?;
        if d.seq > decision_seq {
            break;
        }
        book.on_decision(
            &DecisionFacts::of(&d),
            d.actions.iter().map(|a| a.id.as_str()),
        );
        let key = book.key(&d.event_id);
        for (i, a) in d.actions.iter().enumerate() {
            let Ok(slot) = u32::try_from(i) else { break };
            let v = adjusted
                .get(&d.event_id, slot)
                .or_else(|| rewards.get(&d.event_id, slot));
            if let Some(v) = v {
                book.apply(key, slot, &a.id, v);
            }
        }
    }
    Ok(book)
}

fn tallies(copy: Vec<(String, ActionTally)>) -> BTreeMap<String, reports::Tally> {
    copy.into_iter()
        .map(|(id, t)| {
            (
                id,
                reports::Tally {
                    exposures: t.exposures,
                    rewarded: t.rewarded,
                    sum: t.sum,
                    sum_sq: t.sum_sq,
                },
            )
        })
        .collect()
}

/// Whether a time-series width is served from the hourly aggregates.
fn hourly(bucket_seconds: u64) -> bool {
    bucket_seconds > 0 && (bucket_seconds * 1000).is_multiple_of(BUCKET_MS)
}

impl Engine {
    /// Read a campaign's aggregates under its books lock; `None` when they are not built.
    fn with_report_book<T>(
        &self,
        campaign: &str,
        f: impl FnOnce(&ReportBook) -> T,
    ) -> Result<Option<T>, EngineError> {
        let rt = self.campaign(campaign)?;
        let books = rt.books.lock();
        Ok(books.reports.built.then(|| f(&books.reports)))
    }

    /// Per-action results, from the aggregates.
    pub fn actions_report(&self, campaign: &str) -> Result<Vec<ActionReport>, EngineError> {
        match self.with_report_book(campaign, |b| (b.actions_copy(), b.binary))? {
            Some((t, binary)) => Ok(reports::actions_of(tallies(t), binary)),
            None => self.fold_report(campaign, None, reports::ActionsFold::default()),
        }
    }

    /// Hidden gems, from the aggregates.
    pub fn gems_report(
        &self,
        campaign: &str,
        max_share: Option<f64>,
    ) -> Result<GemsReport, EngineError> {
        match self.with_report_book(campaign, |b| (b.actions_copy(), b.binary))? {
            Some((t, binary)) => Ok(reports::gems_from(
                reports::actions_of(tallies(t), binary),
                max_share,
            )),
            None => self.fold_report(
                campaign,
                None,
                reports::GemsFold {
                    max_share,
                    ..Default::default()
                },
            ),
        }
    }

    /// Lift over the holdout: from the aggregates when `bucket_seconds` is a whole number of
    /// hours, else folded over the log.
    pub fn lift_report(
        &self,
        campaign: &str,
        bucket_seconds: u64,
    ) -> Result<LiftReport, EngineError> {
        if hourly(bucket_seconds) {
            if let Some(l) = self.with_report_book(campaign, |b| b.lift(bucket_seconds))? {
                return Ok(l);
            }
        }
        self.fold_report(campaign, None, reports::LiftFold::new(bucket_seconds))
    }

    /// The campaign's reports cut by its `audience_field`: per audience value, the per-action
    /// results, lift over the holdout with its interval, and reward over time per policy, with
    /// the small-sample caveat. `bucket_seconds` must be a whole number of hours.
    pub fn audiences_report(
        &self,
        campaign: &str,
        bucket_seconds: u64,
    ) -> Result<reports::AudiencesReport, EngineError> {
        if !hourly(bucket_seconds) {
            return Err(EngineError::invalid(
                "bucket_seconds",
                "audience reports come in whole hours (a multiple of 3600)",
            ));
        }
        let rt = self.campaign(campaign)?;
        let field = rt.config.audience_field.clone();
        let books = rt.books.lock();
        let audiences = books
            .audiences
            .values
            .iter()
            .zip(&books.audiences.books)
            .map(|(name, b)| {
                let (personalized, holdout) = b.decisions();
                reports::AudienceReport {
                    audience: name.clone(),
                    decisions: personalized + holdout,
                    holdout_decisions: holdout,
                    small_sample: personalized < reports::SMALL_SAMPLE
                        || holdout < reports::SMALL_SAMPLE,
                    actions: reports::actions_of(tallies(b.actions_copy()), b.binary),
                    lift: b.lift(bucket_seconds),
                    policies: b.policies(bucket_seconds),
                }
            })
            .collect();
        Ok(reports::AudiencesReport {
            field,
            small_sample_below: reports::SMALL_SAMPLE,
            audiences,
        })
    }

    /// Reward over time per policy: from the aggregates when `bucket_seconds` is a whole
    /// number of hours, else folded over the log.
    pub fn policies_report(
        &self,
        campaign: &str,
        bucket_seconds: u64,
    ) -> Result<Vec<PolicySeries>, EngineError> {
        if hourly(bucket_seconds) {
            if let Some(p) = self.with_report_book(campaign, |b| b.policies(bucket_seconds))? {
                return Ok(p);
            }
        }
        self.fold_report(campaign, None, reports::PoliciesFold::new(bucket_seconds))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::{Rng, SeedableRng};
    use rand_pcg::Pcg64Mcg;
    use serde_json::{json, Value};
    use tailor_wire::{DecideRequest, RewardRequest};

    use super::*;
    use crate::campaign::CampaignConfig;
    use crate::engine::reports::{Dataset, Row};
    use crate::engine::DecideInput;
    use crate::store::{LoggedAction, RewardKind, SledStore};

    /// Numbers equal within 1e-9 (relative to their size when above 1), same shape otherwise.
    fn assert_close(a: &Value, b: &Value, path: &str) {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                    "{path}: {x} vs {y}"
                );
            }
            (Value::Array(x), Value::Array(y)) => {
                assert_eq!(x.len(), y.len(), "{path}: lengths");
                for (i, (x, y)) in x.iter().zip(y).enumerate() {
                    assert_close(x, y, &format!("{path}[{i}]"));
                }
            }
            (Value::Object(x), Value::Object(y)) => {
                assert_eq!(
                    x.keys().collect::<Vec<_>>(),
                    y.keys().collect::<Vec<_>>(),
                    "{path}: keys"
                );
                for (k, v) in x {
                    assert_close(v, &y[k], &format!("{path}.{k}"));
                }
            }
            _ => assert_eq!(a, b, "{path}"),
        }
    }

    fn j<T: serde::Serialize>(v: T) -> Value {
        serde_json::to_value(v).unwrap()
    }

    /// Every incrementally served report of `campaign` equals the fold over its logs.
    fn assert_reports_match_the_fold(engine: &Engine, campaign: &str) -> Value {
        let rt = engine.campaign(campaign).unwrap();
        assert!(
            rt.books.lock().reports.built,
            "{campaign}: aggregates built"
        );
        let range = rt.config.reward_range;
        let fold = |f| reports::fold(engine.store().as_ref(), campaign, range, None, f);
        let actions = engine.actions_report(campaign).unwrap();
        assert!(!actions.is_empty());
        assert_close(
            &j(&actions),
            &j(fold_actions(engine, campaign)),
            &format!("{campaign}/actions"),
        );
        assert_close(
            &j(engine.gems_report(campaign, Some(0.5)).unwrap()),
            &j(reports::fold(
                engine.store().as_ref(),
                campaign,
                range,
                None,
                reports::GemsFold {
                    max_share: Some(0.5),
                    ..Default::default()
                },
            )
            .unwrap()),
            &format!("{campaign}/gems"),
        );
        for b in [3_600, 86_400] {
            assert_close(
                &j(engine.lift_report(campaign, b).unwrap()),
                &j(fold(reports::LiftFold::new(b)).unwrap()),
                &format!("{campaign}/lift/{b}"),
            );
            assert_close(
                &j(engine.policies_report(campaign, b).unwrap()),
                &j(reports::fold(
                    engine.store().as_ref(),
                    campaign,
                    range,
                    None,
                    reports::PoliciesFold::new(b),
                )
                .unwrap()),
                &format!("{campaign}/policies/{b}"),
            );
        }
        j(engine.lift_report(campaign, 86_400).unwrap())
    }

    fn fold_actions(engine: &Engine, campaign: &str) -> Vec<ActionReport> {
        let range = engine.campaign(campaign).unwrap().config.reward_range;
        reports::fold(
            engine.store().as_ref(),
            campaign,
            range,
            None,
            reports::ActionsFold::default(),
        )
        .unwrap()
    }

    /// Decisions (one or two slots, a holdout) and rewards (several per slot for `sum`).
    async fn stream(engine: &Engine, campaign: &str, round: usize, rng: &mut Pcg64Mcg) {
        let sum = campaign == "summed";
        let ids = ["a", "b", "c", "d", "e"];
        for i in 0..120 {
            let k = rng.gen_range(1..=2usize);
            let request = DecideRequest {
                candidates: ids
                    .iter()
                    .map(|id| serde_json::from_value(json!({ "id": id })).unwrap())
                    .collect(),
                event_id: Some(format!("{campaign}-{round}-{i}")),
                k: Some(k),
                shopper_id: Some(format!("s{}", rng.gen_range(0..1_000))),
                ..Default::default()
            };
            let d = engine
                .decide_items(campaign, DecideInput::from_request(&request).unwrap())
                .unwrap();
            for a in &d.actions {
                let times = if sum { rng.gen_range(0..3) } else { 1 };
                for t in 0..times {
                    if rng.gen_bool(0.4) {
                        continue;
                    }
                    let value = if sum {
                        rng.gen_range(0.0..1.5)
                    } else {
                        f64::from(u8::from(rng.gen_bool(0.3)))
                    };
                    engine
                        .reward(
                            campaign,
                            &d.event_id,
                            RewardRequest {
                                value,
                                action_id: Some(a.id.clone()),
                                reward_id: Some(format!("r{t}")),
                                campaign: None,
                            },
                        )
                        .await
                        .unwrap();
                }
            }
        }
    }

    /// A cluster image writes every decision still waiting for a reward (the replica restoring
    /// it has none of them in its log), and the restoring replica keeps waiting for them across
    /// its own restarts.
    #[tokio::test]
    async fn a_cluster_image_carries_every_waiting_decision() {
        let open = |dir: &std::path::Path| {
            let store: Arc<dyn Store> = Arc::new(SledStore::open(dir, 1 << 20, 100).unwrap());
            (
                Engine::open(store.clone(), Default::default()).unwrap(),
                store,
            )
        };
        let waiting = |engine: &Engine| {
            let rt = engine.campaign("c").unwrap();
            let books = rt.books.lock();
            (books.reports.pending(), books.reports.rebuild_from())
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (taker, _) = open(a.path());
        let config = json!({"id": "c", "policy": {"type": "thompson"}});
        taker
            .create_campaign(serde_json::from_value(config).unwrap())
            .unwrap();
        stream(&taker, "c", 0, &mut Pcg64Mcg::seed_from_u64(3)).await;
        let (pending, _) = waiting(&taker);
        assert!(pending.0 > 0, "{pending:?}");

        let image = taker.campaign_image("c").unwrap();
        let (replica, store) = open(b.path());
        replica.restore_image(image).unwrap();
        assert_eq!(waiting(&replica), (pending, 0));
        drop(replica);
        let replica = Engine::open(store, Default::default()).unwrap();
        assert_eq!(waiting(&replica), (pending, 0), "after a restart");
    }

    /// A version-1 entry (every waiting decision written out) still reads: its waiting
    /// decisions are kept as they were, settle as before, and stay written out in version 2
    /// (their sequence numbers are unknown, so the log cannot count them again).
    #[test]
    fn version_1_aggregates_keep_their_waiting_decisions() {
        let seed = 7;
        let key = ReportBook {
            seed,
            ..ReportBook::default()
        }
        .key("e1");
        let v1 = || {
            let open: KeyMap<OpenV1> = [(
                key,
                OpenV1 {
                    hour: 5,
                    deadline_hour: 6,
                    policy: 0,
                    holdout: false,
                    left: 1,
                    outcome: 1.0,
                    slots: Some(vec![Some(1.0), None].into_boxed_slice()),
                },
            )]
            .into_iter()
            .collect();
            let policies: Vec<(String, PolicyHours)> = vec![("thompson".into(), BTreeMap::new())];
            (
                seed,
                true,
                HashMap::<String, ActionTally>::new(),
                BTreeMap::from([(5u32, HourAgg::default())]),
                policies,
                open,
                KeyMap::<Vec<Parked>>::default(),
                5u32,
                0u32,
            )
        };
        let mut entry = vec![VERSION_1];
        entry.extend(postcard::to_stdvec(&v1()).unwrap());

        let mut book = ReportBook::from_snapshot(Some(&entry));
        assert!(book.built);
        assert_eq!((book.pending(), book.rebuild_from()), ((1, 0), 0));
        // Written out again in version 2 (and read back), still waiting.
        let again = ReportBook::from_snapshot(Some(&book.encode()));
        assert_eq!((again.pending(), again.rebuild_from()), ((1, 0), 0));
        // Slot 1's reward settles it: the hour's outcome is 1.0 + 0.5.
        book.on_reward(&RewardRecord {
            seq: 9,
            event_id: "e1".into(),
            campaign: "c".into(),
            at_ms: 5 * BUCKET_MS,
            kind: RewardKind::Explicit,
            slot: 1,
            action: LoggedAction {
                id: "a".into(),
                probability: 0.5,
                x: Default::default(),
            },
            value: 0.5,
            holdout: false,
            policy: "thompson".into(),
        });
        assert_eq!(book.pending(), (0, 0));
        assert_eq!(book.hours[&5].personalized.sum, 0.5);
        assert_eq!(book.hours[&5].personalized.sum_sq, 1.5 * 1.5 - 1.0);

        let mut audiences = vec![VERSION_1];
        audiences.extend(postcard::to_stdvec(&(vec!["vip".to_string()], vec![v1()])).unwrap());
        let books = AudienceBooks::from_snapshot(Some(&audiences));
        assert_eq!(books.values, ["vip"]);
        assert_eq!(books.books[0].pending(), (1, 0));
    }

    /// A seeded stream through the engine (holdout, default rewards, summed windows, a restart
    /// replaying past the snapshot, a restart from a snapshot without the aggregates, a restart
    /// with reward windows open on both sides of the snapshot): the
    /// incremental reports equal the fold over the logs throughout.
    #[tokio::test]
    async fn incremental_reports_equal_the_fold_over_the_logs() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20, 100).unwrap());
        let mut engine = Engine::open(store.clone(), Default::default()).unwrap();
        let configs = [
            json!({"id": "earliest", "policy": {"type": "thompson"}, "holdout": 0.3,
                   "default_reward": 0.0}),
            json!({"id": "summed", "policy": {"type": "thompson"}, "holdout": 0.2,
                   "reward_aggregation": "sum", "default_reward": 0.25,
                   "reward_range": [0.0, 3.0]}),
        ];
        for c in configs {
            let c: CampaignConfig = serde_json::from_value(c).unwrap();
            engine.create_campaign(c).unwrap();
        }
        let mut rng = Pcg64Mcg::seed_from_u64(18);
        let campaigns = ["earliest", "summed"];
        for round in 0..5 {
            for c in campaigns {
                stream(&engine, c, round, &mut rng).await;
            }
            for c in campaigns {
                assert_reports_match_the_fold(&engine, c);
            }
            match round {
                // Close every window: default rewards and summed totals are applied.
                0 | 3 => {
                    assert!(engine.sweep(u64::MAX).unwrap() > 0);
                }
                // Snapshot, then more traffic, then a restart that replays past the snapshot
                // (its rewards come back before their decisions).
                1 => {
                    engine.snapshot_all().unwrap();
                    for c in campaigns {
                        stream(&engine, c, 10 + round, &mut rng).await;
                    }
                    engine.sweep(u64::MAX).unwrap();
                    engine = Engine::open(store.clone(), Default::default()).unwrap();
                }
                // A store written before the aggregates: the snapshots lose their entry, and
                // the next open builds it from the logs, then counts on.
                2 => {
                    engine.snapshot_all().unwrap();
                    for c in campaigns {
                        let mut snap = store.snapshot(c).unwrap().unwrap();
                        snap.policies.retain(|(n, _)| n != SNAPSHOT_ENTRY);
                        store.put_snapshot(c, &snap).unwrap();
                        stream(&engine, c, 20 + round, &mut rng).await;
                    }
                    engine = Engine::open(store.clone(), Default::default()).unwrap();
                }
                // A restart with windows open on both sides of the snapshot: the snapshot
                // leaves the waiting decisions out, the restart waits for them again from the
                // log, and the final close settles them once.
                4 => {
                    engine.snapshot_all().unwrap();
                    for c in campaigns {
                        let rt = engine.campaign(c).unwrap();
                        let waiting = rt.books.lock().reports.pending().0;
                        assert!(waiting > 0, "{c}: windows open at the snapshot");
                        let snap = store.snapshot(c).unwrap().unwrap();
                        let (_, entry) = snap
                            .policies
                            .iter()
                            .find(|(n, _)| n == SNAPSHOT_ENTRY)
                            .unwrap();
                        let restored = ReportBook::from_snapshot(Some(entry));
                        assert_eq!(restored.pending().0, 0, "{c}: none written out");
                        assert!(restored.rebuild_from() > 0, "{c}");
                        stream(&engine, c, 30 + round, &mut rng).await;
                    }
                    let before: Vec<_> = campaigns
                        .iter()
                        .map(|c| engine.campaign(c).unwrap().books.lock().reports.pending())
                        .collect();
                    engine = Engine::open(store.clone(), Default::default()).unwrap();
                    let after: Vec<_> = campaigns
                        .iter()
                        .map(|c| engine.campaign(c).unwrap().books.lock().reports.pending())
                        .collect();
                    assert_eq!(after, before, "the same decisions wait after the restart");
                }
                _ => {}
            }
            for c in campaigns {
                assert_reports_match_the_fold(&engine, c);
            }
        }
        // Nothing is left waiting once every window closed.
        engine.sweep(u64::MAX).unwrap();
        for c in campaigns {
            let lift = assert_reports_match_the_fold(&engine, c);
            assert!(
                lift["holdout"]["decisions"].as_u64().unwrap() > 50,
                "{lift}"
            );
            let rt = engine.campaign(c).unwrap();
            assert_eq!(rt.books.lock().reports.pending(), (0, 0), "{c}");
        }
        // Deleting the logs empties the reports, as the fold over the (now empty) logs.
        engine.delete_logs("earliest").unwrap();
        assert!(engine.actions_report("earliest").unwrap().is_empty());
        assert!(fold_actions(&engine, "earliest").is_empty());
    }

    /// Synthetic decisions over three weeks of hours (holdout, one to three slots, rewards
    /// arriving in any order, some before their decision): hourly aggregates rolled up to any
    /// whole number of hours equal the fold over the same rows.
    #[test]
    fn hourly_buckets_roll_up_to_the_folds_buckets() {
        let mut rng = Pcg64Mcg::seed_from_u64(7);
        let mut book = ReportBook::default();
        let mut rows = Vec::new();
        let mut pending: Vec<(RewardRecord, usize)> = Vec::new();
        let t0 = 1_700_000_000_000u64;
        for i in 0..3_000usize {
            let at_ms = t0 + i as u64 * 600_000 + rng.gen_range(0..600_000);
            let holdout = rng.gen_bool(0.25);
            let policy = if holdout { "baseline" } else { "linucb" };
            let k = rng.gen_range(1..=3usize);
            let actions: Vec<String> = (0..k)
                .map(|_| format!("sku-{}", rng.gen_range(0..40)))
                .collect();
            let event_id = format!("e{i}");
            let mut values = vec![0.0; k];
            for (slot, a) in actions.iter().enumerate() {
                if rng.gen_bool(0.3) {
                    continue;
                }
                let value = rng.gen_range(0.0..2.0);
                values[slot] = value;
                let r = RewardRecord {
                    seq: 0,
                    event_id: event_id.clone(),
                    campaign: "c".into(),
                    at_ms: at_ms + 1_000,
                    kind: RewardKind::Explicit,
                    slot: slot as u32,
                    action: LoggedAction {
                        id: a.clone(),
                        probability: 0.5,
                        x: Default::default(),
                    },
                    value,
                    holdout,
                    policy: policy.into(),
                };
                pending.push((r, i + rng.gen_range(0..4)));
            }
            // Rewards due by now, and 1 in 20 of this decision's rewards before it.
            let (due, keep): (Vec<_>, Vec<_>) = pending
                .drain(..)
                .partition(|(r, when)| *when < i || (r.event_id == event_id && i % 20 == 0));
            pending = keep;
            for (r, _) in due.iter().filter(|(r, _)| r.event_id == event_id) {
                book.on_reward(r);
            }
            book.on_decision(
                &DecisionFacts {
                    seq: i as u64 + 1,
                    event_id: &event_id,
                    at_ms,
                    deadline_ms: at_ms + 3_600_000,
                    holdout,
                    policy,
                    audience: None,
                },
                actions.iter().map(String::as_str),
            );
            for (r, _) in due.iter().filter(|(r, _)| r.event_id != event_id) {
                book.on_reward(r);
            }
            rows.push(Row {
                at_ms,
                holdout,
                policy: policy.into(),
                categories: vec![None; k],
                history: Vec::new(),
                actions,
                values,
            });
        }
        for (r, _) in pending {
            book.on_reward(&r);
        }
        let data = Dataset {
            rows,
            binary: false,
        };
        for b in [3_600, 7_200, 21_600, 86_400, 604_800] {
            assert_close(&j(book.lift(b)), &j(reports::lift(&data, b)), "lift");
            assert_close(
                &j(book.policies(b)),
                &j(reports::policies(&data, b)),
                "policies",
            );
        }
        assert_close(
            &j(reports::actions_of(book.actions_tally(), book.binary)),
            &j(reports::actions(&data)),
            "actions",
        );
        // Every reward met its decision; slots never rewarded keep theirs waiting.
        assert_eq!(book.pending().1, 0);
        assert!(book.pending().0 > 0);
        // The snapshot entry round-trips.
        let back = ReportBook::from_snapshot(Some(&book.encode()));
        assert!(back.built);
        assert_close(&j(back.lift(3_600)), &j(book.lift(3_600)), "decoded");
        assert!(!ReportBook::from_snapshot(None).built);
        assert!(!ReportBook::from_snapshot(Some(&[9, 1, 2])).built);
    }
}
