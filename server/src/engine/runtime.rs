//! A campaign as the engine runs it: its learners (serving and shadow policies), its books
//! (counters, log watermarks, report aggregates) and the snapshot of both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tailor_policies::{Arm, Featurizer, Policy};

use super::{report_book, send_time};
use crate::campaign::CampaignConfig;
use crate::error::EngineError;
use crate::plugins::PluginChain;
use crate::store::{AdjustmentEntry, CampaignSnapshot, Counters, RewardRecord};

/// Serving and shadow policies of one campaign.
#[derive(Debug, Clone)]
pub(crate) struct Learner {
    /// (name, runtime); the serving policy is first.
    pub policies: Vec<(String, Policy)>,
    /// Promotion boundaries already applied (`engine/promotions.rs`).
    pub marks: std::collections::BTreeSet<String>,
}

impl Learner {
    pub(super) fn serving(&self) -> (&str, &Policy) {
        let (n, p) = &self.policies[0];
        (n, p)
    }

    pub(super) fn learn(&mut self, r: &RewardRecord) {
        for (_, p) in &mut self.policies {
            // At the reward's logged time: wall-clock forgetting replays alike.
            p.update_at(
                Arm {
                    id: &r.action.id,
                    x: &r.action.x,
                },
                r.value,
                r.action.probability,
                r.at_ms,
            );
        }
    }

    /// Rebuild the posterior tables the rewards learned since the last call dropped
    /// ([`Policy::warm`]): once per changed arm, off the decide path.
    pub(super) fn warm(&mut self) {
        for (_, p) in &mut self.policies {
            p.warm();
        }
    }
}

/// Counters and log watermarks of one campaign.
#[derive(Debug, Clone, Default)]
pub(crate) struct Books {
    pub counters: HashMap<String, Counters>,
    pub decisions: u64,
    pub rewards: u64,
    pub decision_seq: u64,
    pub reward_seq: u64,
    pub reports: report_book::ReportBook,
    /// The same aggregates cut by the campaign's audience field.
    pub audiences: report_book::AudienceBooks,
}

impl Books {
    pub(super) fn count_reward(&mut self, r: &RewardRecord) {
        let c = self.counters.entry(r.action.id.clone()).or_default();
        c.rewards += 1;
        c.reward_sum += r.value;
        self.reports.on_reward(r);
        self.audiences.on_reward(r);
        self.rewards += 1;
        self.reward_seq = self.reward_seq.max(r.seq);
    }

    /// The first decision recovery counts again into the report aggregates (0: none): their
    /// snapshot leaves out the recent decisions still waiting for rewards.
    pub(super) fn rebuild_from(&self) -> u64 {
        [self.reports.rebuild_from(), self.audiences.rebuild_from()]
            .into_iter()
            .filter(|&s| s > 0)
            .min()
            .unwrap_or(0)
    }

    /// Restored from a cluster image: its waiting decisions are not in this replica's log.
    pub(super) fn forget_waiting_seqs(&mut self) {
        self.reports.forget_seqs();
        self.audiences.forget_seqs();
    }

    /// Recovery, for a decision the snapshot covers: wait again for its rewards.
    pub(super) fn reopen_decision<'a>(
        &mut self,
        facts: &report_book::DecisionFacts<'_>,
        actions: impl Iterator<Item = &'a str> + Clone,
    ) {
        self.reports.reopen(facts, actions.clone());
        if let Some(b) = self.audiences.of_audience(facts) {
            b.reopen(facts, actions);
        }
    }

    /// Recovery, for a reward the snapshot covers (the sums hold it already).
    pub(super) fn reapply_reward(&mut self, r: &RewardRecord) {
        self.reports.reapply(r);
        if let Some(b) = self.audiences.waiting_for(&r.event_id) {
            b.reapply(r);
        }
    }

    /// Recovery, for an adjustment the snapshot covers.
    pub(super) fn reapply_adjustment(&mut self, a: &AdjustmentEntry) {
        self.reports.readjust(a);
        if let Some(b) = self.audiences.waiting_for(&a.event_id) {
            b.readjust(a);
        }
    }

    pub(super) fn count_decision<'a>(
        &mut self,
        seq: u64,
        facts: &report_book::DecisionFacts<'_>,
        actions: impl Iterator<Item = &'a str> + Clone,
    ) {
        self.reports.on_decision(facts, actions.clone());
        self.audiences.on_decision(facts, actions.clone());
        for id in actions {
            match self.counters.get_mut(id) {
                Some(c) => c.exposures += 1,
                None => {
                    self.counters.insert(
                        id.to_string(),
                        Counters {
                            exposures: 1,
                            ..Default::default()
                        },
                    );
                }
            }
        }
        self.decisions += 1;
        self.decision_seq = self.decision_seq.max(seq);
    }
}

/// A campaign as the engine runs it.
pub struct CampaignRuntime {
    pub config: CampaignConfig,
    pub(crate) featurizer: Featurizer,
    /// Per-campaign salt mixed into decision seeds.
    pub(crate) salt: u64,
    pub(crate) learner: RwLock<Learner>,
    pub(crate) books: Mutex<Books>,
    /// Held while a reward joins (or a window closes): rewards of one campaign apply in log
    /// order, and a snapshot taken under it sees every reward it numbered learned.
    pub(crate) joins: Mutex<()>,
    /// max(decision_seq, reward_seq) of the last snapshot written: unchanged campaigns are not
    /// snapshotted again.
    pub(super) snapshot_mark: AtomicU64,
    /// The attached plugin chain; replaced when a plugin reload makes a new version current.
    pub(crate) chain: RwLock<Arc<PluginChain>>,
    /// Send-time campaigns: slots, settings and population counts.
    pub(crate) send_time: Option<send_time::SendTimeRuntime>,
    /// Set when a newer runtime replaced this one; writers then retry on the new one.
    pub(super) retired: AtomicBool,
}

impl std::fmt::Debug for CampaignRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CampaignRuntime")
            .field("id", &self.config.id)
            .finish_non_exhaustive()
    }
}

impl CampaignRuntime {
    /// Build from a validated config, carrying over learned state of same-named policies.
    pub(super) fn build(
        config: CampaignConfig,
        previous: Option<(&Learner, Books)>,
        previous_dimension: Option<usize>,
        chain: PluginChain,
    ) -> Result<Self, EngineError> {
        config.validate()?;
        let featurizer = config
            .featurizer
            .build()
            .map_err(|e| EngineError::policy("featurizer", e))?;
        let same_dim = previous_dimension == Some(featurizer.dimension());
        let mut policies = Vec::new();
        for pc in config.all_policies() {
            let name = pc.kind().to_string();
            let carried = previous.as_ref().and_then(|(l, _)| {
                l.policies
                    .iter()
                    .find(|(n, p)| same_dim && *n == name && p.config() == pc)
                    .map(|(_, p)| p.clone())
            });
            let p = match carried {
                Some(p) => p,
                None => pc
                    .build(featurizer.dimension())
                    .map_err(|e| EngineError::policy("policy", e))?,
            };
            policies.push((name, p));
        }
        let marks = previous
            .as_ref()
            .map(|(l, _)| l.marks.clone())
            .unwrap_or_default();
        let mut learner = Learner { policies, marks };
        super::promotions::prepare(&config, &mut learner);
        let books = previous.map(|(_, b)| b).unwrap_or_default();
        let send_time = send_time::SendTimeRuntime::new(&config)?;
        Ok(Self {
            send_time,
            salt: xxhash_rust::xxh3::xxh3_64(config.id.as_bytes()),
            featurizer,
            learner: RwLock::new(learner),
            books: Mutex::new(books),
            joins: Mutex::new(()),
            snapshot_mark: AtomicU64::new(0),
            chain: RwLock::new(Arc::new(chain)),
            retired: AtomicBool::new(false),
            config,
        })
    }

    /// Rewards wait while it is taken (the join lock), decides do not: what the snapshot takes
    /// from the books is copied (the report aggregates encoded, not cloned: they hold an entry
    /// per decision whose window is open) and the books released before the learned state is
    /// encoded under the learner's read lock, which choosing shares. Learned state only
    /// changes under the join lock, so both describe the same point of the log.
    pub(super) fn snapshot(&self) -> CampaignSnapshot {
        self.snapshot_with(BooksPart::of)
    }

    /// [`CampaignRuntime::snapshot`] for a cluster image: the report aggregates hold every
    /// decision still waiting for a reward (the replica restoring it has none of them in its log).
    pub(super) fn image_snapshot(&self) -> CampaignSnapshot {
        self.snapshot_with(BooksPart::whole)
    }

    fn snapshot_with(&self, part: fn(&Books) -> BooksPart) -> CampaignSnapshot {
        let _joins = self.joins.lock();
        let books = part(&self.books.lock());
        let learner = self.learner.read();
        snapshot_of(books, &learner, self.send_time.as_ref())
    }

    /// The log position the in-memory state has reached.
    pub(super) fn mark(&self) -> u64 {
        let books = self.books.lock();
        books.decision_seq.max(books.reward_seq)
    }
}

/// What a snapshot takes from a campaign's [`Books`], taken under the books lock.
pub(crate) struct BooksPart {
    reward_seq: u64,
    decision_seq: u64,
    reports: Vec<u8>,
    audiences: Vec<u8>,
    counters: Vec<(String, Counters)>,
    decisions: u64,
    rewards: u64,
}

impl BooksPart {
    pub(crate) fn of(books: &Books) -> Self {
        Self::with(books, books.reports.encode(), books.audiences.encode())
    }

    /// With every decision still waiting for a reward written out (a cluster image).
    fn whole(books: &Books) -> Self {
        Self::with(
            books,
            books.reports.encode_all(),
            books.audiences.encode_all(),
        )
    }

    fn with(books: &Books, reports: Vec<u8>, audiences: Vec<u8>) -> Self {
        Self {
            reward_seq: books.reward_seq,
            decision_seq: books.decision_seq,
            reports,
            audiences,
            counters: books
                .counters
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            decisions: books.decisions,
            rewards: books.rewards,
        }
    }
}

/// A snapshot of learned state; the caller holds the join lock and the learner's (read).
pub(crate) fn snapshot_of(
    books: BooksPart,
    learner: &Learner,
    send_time: Option<&send_time::SendTimeRuntime>,
) -> CampaignSnapshot {
    CampaignSnapshot {
        reward_seq: books.reward_seq,
        decision_seq: books.decision_seq,
        policies: learner
            .policies
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    postcard::to_stdvec(p).expect("postcard encoding of a policy"),
                )
            })
            .chain(send_time.map(|s| (send_time::SNAPSHOT_ENTRY.to_string(), s.encode())))
            .chain([
                (report_book::SNAPSHOT_ENTRY.to_string(), books.reports),
                (report_book::AUDIENCES_ENTRY.to_string(), books.audiences),
            ])
            .chain(super::promotions::snapshot_entries(learner))
            .collect(),
        counters: books.counters,
        decisions: books.decisions,
        rewards: books.rewards,
    }
}

impl CampaignRuntime {
    pub(super) fn restore(&self, snap: CampaignSnapshot) {
        let mut books = self.books.lock();
        let mut learner = self.learner.write();
        for (name, bytes) in &snap.policies {
            if name == send_time::SNAPSHOT_ENTRY {
                if let Some(s) = &self.send_time {
                    s.restore(bytes);
                }
                continue;
            }
            if let Some((_, slot)) = learner.policies.iter_mut().find(|(n, _)| n == name) {
                match postcard::from_bytes::<Policy>(bytes) {
                    Ok(p)
                        if p.config() == slot.config()
                            && p.dimension() == slot.dimension()
                            && p.check_state().is_ok() =>
                    {
                        *slot = p
                    }
                    Ok(_) => {
                        tracing::info!(campaign = %self.config.id, policy = %name, "policy config changed since snapshot; starting it fresh")
                    }
                    Err(e) => {
                        tracing::warn!(campaign = %self.config.id, policy = %name, error = %e, "policy state unreadable; starting it fresh")
                    }
                }
            }
        }
        super::promotions::restore(&self.config, &mut learner, &snap.policies);
        books.reports = report_book::ReportBook::from_snapshot(
            (snap.policies.iter())
                .find(|(n, _)| n == report_book::SNAPSHOT_ENTRY)
                .map(|(_, b)| b.as_slice()),
        );
        books.audiences = report_book::AudienceBooks::from_snapshot(
            (snap.policies.iter())
                .find(|(n, _)| n == report_book::AUDIENCES_ENTRY)
                .map(|(_, b)| b.as_slice()),
        );
        books.counters = snap.counters.into_iter().collect();
        // Counters of a store written before reward ranges existed may hold a non-finite sum
        // (issue 17: three rewards of 1e308); reports must never show one.
        for c in books.counters.values_mut() {
            if !c.reward_sum.is_finite() {
                let bound = self.config.reward_range.times(c.rewards as usize);
                c.reward_sum = bound.clamp(c.reward_sum);
            }
        }
        books.decisions = snap.decisions;
        books.rewards = snap.rewards;
        books.decision_seq = snap.decision_seq;
        books.reward_seq = snap.reward_seq;
    }
}
