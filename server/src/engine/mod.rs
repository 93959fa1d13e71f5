//! The engine: every decision and reward passes through here, whichever API received it.
//!
//! Per campaign there is a [`CampaignRuntime`]: its validated config, featurizer, the learners
//! (serving and shadow policies, behind a read-write lock: choosing reads, learning writes), the
//! books (counters and log watermarks, behind a mutex held only for in-memory updates, never
//! across a store call), and the join lock that makes the campaign's rewards apply one at a time
//! in log order. Learned state is snapshotted (only campaigns that changed) together with the
//! log positions it covers; on start each campaign's log past those positions is replayed, so a
//! restart (or `kill -9`) loses nothing that was acknowledged.
//!
//! Lock order: `admin` → a runtime's `joins` → its `books` → its `learner`.

mod decide;
mod durability;
pub mod featurize;
pub mod holdout;
mod model;
pub mod parse;
mod records;
mod report_book;
pub mod reports;
mod reward;
pub mod send_time;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use tailor_policies::{Arm, Featurizer, Policy};

pub(crate) use decide::check_items_request;
pub use decide::DecideInput;
pub use durability::GroupCommit;
pub(crate) use reward::check_reward_request;
pub use reward::{slot_event_id, SLOT_SEPARATOR};

use crate::campaign::CampaignConfig;
use crate::config::EngineSettings;
use crate::error::EngineError;
use crate::plugins::{PluginChain, PluginHost, ReloadReport};
use crate::store::{CampaignSnapshot, Counters, LogRecord, RewardRecord, Store, StoreError};

/// How often send-time shopper states past their retention are looked for.
const SHOPPER_PURGE_INTERVAL_MS: u64 = 3_600_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Serving and shadow policies of one campaign.
#[derive(Debug, Clone)]
pub(crate) struct Learner {
    /// (name, runtime); the serving policy is first.
    pub policies: Vec<(String, Policy)>,
}

impl Learner {
    fn serving(&self) -> (&str, &Policy) {
        let (n, p) = &self.policies[0];
        (n, p)
    }

    fn learn(&mut self, r: &RewardRecord) {
        for (_, p) in &mut self.policies {
            p.update(
                Arm {
                    id: &r.action.id,
                    x: &r.action.x,
                },
                r.value,
                r.action.probability,
            );
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
}

impl Books {
    fn count_reward(&mut self, r: &RewardRecord) {
        let c = self.counters.entry(r.action.id.clone()).or_default();
        c.rewards += 1;
        c.reward_sum += r.value;
        self.reports.on_reward(r);
        self.rewards += 1;
        self.reward_seq = self.reward_seq.max(r.seq);
    }

    fn count_decision<'a>(
        &mut self,
        seq: u64,
        facts: &report_book::DecisionFacts<'_>,
        actions: impl Iterator<Item = &'a str> + Clone,
    ) {
        self.reports.on_decision(facts, actions.clone());
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
    snapshot_mark: AtomicU64,
    /// The attached plugin chain; replaced when a plugin reload makes a new version current.
    pub(crate) chain: RwLock<Arc<PluginChain>>,
    /// Send-time campaigns: slots, settings and population counts.
    pub(crate) send_time: Option<send_time::SendTimeRuntime>,
    /// Set when a newer runtime replaced this one; writers then retry on the new one.
    retired: AtomicBool,
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
    fn build(
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
        let books = previous.map(|(_, b)| b).unwrap_or_default();
        let send_time = send_time::SendTimeRuntime::new(&config)?;
        Ok(Self {
            send_time,
            salt: xxhash_rust::xxh3::xxh3_64(config.id.as_bytes()),
            featurizer,
            learner: RwLock::new(Learner { policies }),
            books: Mutex::new(books),
            joins: Mutex::new(()),
            snapshot_mark: AtomicU64::new(0),
            chain: RwLock::new(Arc::new(chain)),
            retired: AtomicBool::new(false),
            config,
        })
    }

    /// Rewards wait while it is taken (the join lock), decides do not: the books are copied and
    /// released before the learned state is encoded under the learner's read lock, which
    /// choosing shares. Learned state only changes under the join lock, so the copy and the
    /// encoding describe the same point of the log.
    fn snapshot(&self) -> CampaignSnapshot {
        let _joins = self.joins.lock();
        let books = self.books.lock().clone();
        let learner = self.learner.read();
        snapshot_of(&books, &learner, self.send_time.as_ref())
    }

    /// The log position the in-memory state has reached.
    fn mark(&self) -> u64 {
        let books = self.books.lock();
        books.decision_seq.max(books.reward_seq)
    }
}

/// A snapshot of learned state; the caller holds the join lock and the learner's (read).
fn snapshot_of(
    books: &Books,
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
            .chain([(
                report_book::SNAPSHOT_ENTRY.to_string(),
                books.reports.encode(),
            )])
            .collect(),
        counters: books
            .counters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        decisions: books.decisions,
        rewards: books.rewards,
    }
}

impl CampaignRuntime {
    fn restore(&self, snap: CampaignSnapshot) {
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
        books.reports = report_book::ReportBook::from_snapshot(
            (snap.policies.iter())
                .find(|(n, _)| n == report_book::SNAPSHOT_ENTRY)
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

/// The decision engine. Cheap to share behind an `Arc`.
pub struct Engine {
    store: Arc<dyn Store>,
    /// The last log sequence number handed out (decisions and rewards, every campaign): above
    /// everything in any log or snapshot when the engine opened, so numbers never repeat.
    seq: AtomicU64,
    commit: GroupCommit,
    campaigns: RwLock<HashMap<String, Arc<CampaignRuntime>>>,
    /// Serializes campaign create/update/delete.
    admin: Mutex<()>,
    settings: EngineSettings,
    plugins: Arc<PluginHost>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
    assert_send_sync::<CampaignRuntime>();
};

impl Engine {
    /// Load campaigns and learned state, replay the logs past the snapshots, and start the
    /// group-commit flusher. Must be called inside a tokio runtime.
    pub fn open(store: Arc<dyn Store>, settings: EngineSettings) -> Result<Arc<Self>, EngineError> {
        Self::open_with_plugins(store, settings, Arc::new(PluginHost::empty()))
    }

    /// [`Engine::open`] with a plugin host whose plugins campaigns can attach.
    pub fn open_with_plugins(
        store: Arc<dyn Store>,
        settings: EngineSettings,
        plugins: Arc<PluginHost>,
    ) -> Result<Arc<Self>, EngineError> {
        let mut campaigns = HashMap::new();
        for (id, json) in store.campaigns()? {
            let mut config: CampaignConfig =
                serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt {
                    what: "campaign",
                    message: format!("{id}: {e}"),
                })?;
            if !json_has_key(&json, "reward_range") {
                legacy_reward_range(&mut config);
            }
            // A stored campaign always loads; a plugin that cannot attach makes its decisions
            // fall back (see PluginChain::attach_lenient) rather than keeping the server down.
            let chain = PluginChain::attach_lenient(&plugins, &config.plugins);
            let rt = CampaignRuntime::build(config, None, None, chain)?;
            if let Some(snap) = store.snapshot(&id)? {
                rt.restore(snap);
                report_book::build_if_needed(
                    &mut rt.books.lock(),
                    &*store,
                    &id,
                    rt.config.reward_range,
                )?;
            }
            campaigns.insert(id, Arc::new(rt));
        }
        // Past every number any log or snapshot holds, and past the store's own generator.
        let mut last_seq = store.next_seq()?;
        for rt in campaigns.values() {
            let books = rt.books.lock();
            last_seq = last_seq
                .max(books.decision_seq)
                .max(books.reward_seq)
                .max(store.last_seq(&rt.config.id)?);
        }
        let engine = Arc::new(Self {
            seq: AtomicU64::new(last_seq),
            commit: GroupCommit::start(store.clone()),
            store,
            campaigns: RwLock::new(campaigns),
            admin: Mutex::new(()),
            settings,
            plugins,
        });
        engine.replay()?;
        Ok(engine)
    }

    /// Bring each campaign's in-memory state up to the end of its log.
    fn replay(&self) -> Result<(), EngineError> {
        let campaigns = self.campaigns.read().clone();
        let (mut replayed_rewards, mut replayed_decisions) = (0u64, 0u64);
        for rt in campaigns.values() {
            let (decision_seq, reward_seq) = {
                let books = rt.books.lock();
                (books.decision_seq, books.reward_seq)
            };
            for record in self
                .store
                .log_after(&rt.config.id, decision_seq.min(reward_seq))
            {
                match record? {
                    LogRecord::Decision(d) if d.seq > decision_seq => {
                        let facts = report_book::DecisionFacts::of(&d);
                        rt.books.lock().count_decision(
                            d.seq,
                            &facts,
                            d.actions.iter().map(|a| a.id.as_str()),
                        );
                        replayed_decisions += 1;
                    }
                    LogRecord::Reward(mut r) if r.seq > reward_seq => {
                        // A log written before reward ranges existed may hold any finite value.
                        r.value = rt.config.reward_range.clamp(r.value);
                        self.learn(rt, &r)?;
                        replayed_rewards += 1;
                    }
                    _ => {}
                }
            }
            rt.snapshot_mark.store(rt.mark(), Ordering::Release);
        }
        tracing::info!(
            campaigns = campaigns.len(),
            replayed_rewards,
            replayed_decisions,
            "state recovered"
        );
        Ok(())
    }

    /// Hand an applied reward to the campaign's learners (when it learns) and count it.
    fn learn(&self, rt: &CampaignRuntime, r: &RewardRecord) -> Result<(), EngineError> {
        if rt.config.learns() {
            rt.learner.write().learn(r);
            self.learn_send_time(rt, r)?;
        }
        rt.books.lock().count_reward(r);
        Ok(())
    }

    /// Run `f` on the live runtime of `rt`'s campaign with its join lock held: when an update
    /// replaced the runtime meanwhile, retry on the new one (the one place this retry lives).
    pub(crate) fn with_live<T>(
        &self,
        mut rt: Arc<CampaignRuntime>,
        mut f: impl FnMut(&Arc<CampaignRuntime>) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        loop {
            let joins = rt.joins.lock();
            if rt.retired.load(Ordering::Acquire) {
                drop(joins);
                rt = self.campaign(&rt.config.id)?;
                continue;
            }
            return f(&rt);
        }
    }

    /// A fresh log sequence number: larger than every one handed out before (an atomic
    /// increment; no store call).
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn campaign(&self, id: &str) -> Result<Arc<CampaignRuntime>, EngineError> {
        self.campaigns
            .read()
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::CampaignNotFound { id: id.to_string() })
    }

    /// The plugin host.
    pub fn plugins(&self) -> &Arc<PluginHost> {
        &self.plugins
    }

    /// Loads new or changed plugin libraries and moves every campaign to the current versions.
    pub fn reload_plugins(&self) -> ReloadReport {
        let _admin = self.admin.lock();
        let report = self.plugins.reload();
        for rt in self.campaigns() {
            if !rt.chain.read().is_current(&self.plugins) {
                let chain = PluginChain::attach_lenient(&self.plugins, &rt.config.plugins);
                *rt.chain.write() = Arc::new(chain);
            }
        }
        report
    }

    pub fn campaigns(&self) -> Vec<Arc<CampaignRuntime>> {
        let mut v: Vec<_> = self.campaigns.read().values().cloned().collect();
        v.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        v
    }

    pub fn create_campaign(
        &self,
        mut config: CampaignConfig,
    ) -> Result<Arc<CampaignRuntime>, EngineError> {
        let _admin = self.admin.lock();
        if config.holdout_salt.is_empty() {
            config.holdout_salt = holdout::new_salt();
        }
        if self.campaigns.read().contains_key(&config.id) {
            return Err(EngineError::CampaignExists { id: config.id });
        }
        config.validate()?;
        let chain = crate::plugins::attach_campaign_chain(&self.plugins, &config.plugins)?;
        let rt = Arc::new(CampaignRuntime::build(config, None, None, chain)?);
        // A campaign re-created under a deleted one's id must not inherit its state or log.
        self.store.delete_snapshot(&rt.config.id)?;
        self.store.delete_campaign_log(&rt.config.id)?;
        self.store
            .put_campaign(&rt.config.id, &to_json(&rt.config))?;
        self.store.put_snapshot(&rt.config.id, &rt.snapshot())?;
        self.campaigns
            .write()
            .insert(rt.config.id.clone(), rt.clone());
        Ok(rt)
    }

    /// Replace a campaign's config. Learned state of policies that stay configured is kept, so
    /// switching the serving policy to a shadow one is warm.
    pub fn update_campaign(
        &self,
        mut config: CampaignConfig,
    ) -> Result<Arc<CampaignRuntime>, EngineError> {
        let _admin = self.admin.lock();
        let old = self.campaign(&config.id)?;
        // Keep holdout assignments stable unless the admin sets a new salt on purpose.
        if config.holdout_salt.is_empty() {
            config.holdout_salt = old.config.holdout_salt.clone();
        }
        if config.personalizer.is_none() {
            config.personalizer = old.config.personalizer.clone();
        }
        config.validate()?;
        let chain = crate::plugins::attach_campaign_chain(&self.plugins, &config.plugins)?;
        // Hold the old joins and books so no reward or decision lands on the old runtime after
        // we copy its state.
        let joins = old.joins.lock();
        let books = old.books.lock();
        let learner = old.learner.read();
        let rt = Arc::new(CampaignRuntime::build(
            config,
            Some((&learner, books.clone())),
            Some(old.featurizer.dimension()),
            chain,
        )?);
        if let (Some(new), Some(prev)) = (&rt.send_time, &old.send_time) {
            new.carry_from(prev);
        }
        self.store
            .put_campaign(&rt.config.id, &to_json(&rt.config))?;
        self.store.put_snapshot(&rt.config.id, &rt.snapshot())?;
        self.campaigns
            .write()
            .insert(rt.config.id.clone(), rt.clone());
        old.retired.store(true, Ordering::Release);
        drop(learner);
        drop(books);
        drop(joins);
        Ok(rt)
    }

    pub fn delete_campaign(&self, id: &str) -> Result<(), EngineError> {
        let _admin = self.admin.lock();
        let old = self
            .campaigns
            .write()
            .remove(id)
            .ok_or_else(|| EngineError::CampaignNotFound { id: id.to_string() })?;
        old.retired.store(true, Ordering::Release);
        self.store.delete_campaign(id)?;
        self.store.delete_snapshot(id)?;
        self.store.delete_campaign_log(id)?;
        Ok(())
    }

    /// Write a snapshot of the learned state of every campaign that changed since its last
    /// one.
    pub fn snapshot_all(&self) -> Result<(), EngineError> {
        for rt in self.campaigns() {
            if rt.retired.load(Ordering::Acquire)
                || rt.mark() == rt.snapshot_mark.load(Ordering::Acquire)
            {
                continue;
            }
            let snapshot = rt.snapshot();
            self.store.put_snapshot(&rt.config.id, &snapshot)?;
            rt.snapshot_mark.store(
                snapshot.decision_seq.max(snapshot.reward_seq),
                Ordering::Release,
            );
        }
        Ok(())
    }

    /// Background duties: closing reward windows and snapshotting. Runs until the process ends.
    pub fn spawn_background(self: &Arc<Self>) {
        send_time::spawn_prior_refresh(self.clone());
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_millis(me.settings.sweep_interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.sweep(now_ms()) {
                    tracing::error!(error = %e, "closing reward windows failed");
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_millis(me.settings.snapshot_interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_purge = 0u64;
            loop {
                tick.tick().await;
                if let Err(e) = me.snapshot_all() {
                    tracing::error!(error = %e, "snapshot failed");
                }
                // Retention is in days: scanning shopper states hourly (and once at start) is
                // plenty, off the async workers.
                if now_ms().saturating_sub(last_purge) >= SHOPPER_PURGE_INTERVAL_MS {
                    last_purge = now_ms();
                    let e = me.clone();
                    match tokio::task::spawn_blocking(move || e.purge_shoppers(now_ms())).await {
                        Ok(Ok(0)) => {}
                        Ok(Ok(n)) => tracing::info!(
                            states = n,
                            "dropped send-time shopper states past retention"
                        ),
                        Ok(Err(e)) => tracing::error!(error = %e, "shopper retention sweep failed"),
                        Err(e) => tracing::error!(error = %e, "shopper retention sweep panicked"),
                    }
                }
            }
        });
    }

    /// Flush everything (used at shutdown and by tests).
    pub async fn flush(&self) -> Result<(), EngineError> {
        self.snapshot_all()?;
        self.store.flush().await?;
        Ok(())
    }
}

/// A campaign stored before reward ranges existed gets the safe default `[0, 1]`: a reward above
/// it is refused, visibly, rather than learned from. Its `default_reward` was only checked for
/// being finite, so the range is widened to include it (within the largest magnitude a bound
/// may have) — a stored campaign must always load. The log names the campaign and its range.
fn legacy_reward_range(config: &mut CampaignConfig) {
    let m = tailor_policies::reward_range::MAX_REWARD_MAGNITUDE;
    let d = config.default_reward.clamp(-m, m);
    config.default_reward = d;
    config.reward_range = tailor_policies::RewardRange {
        lo: d.min(0.0),
        hi: d.max(1.0),
    };
    tracing::warn!(
        campaign = %config.id,
        low = config.reward_range.lo,
        high = config.reward_range.hi,
        "campaign has no reward_range (stored by an older version); rewards outside this range are refused: set reward_range if its rewards are larger (docs/security/rewards.md)"
    );
}

/// Whether a stored JSON object has a top-level `key`.
fn json_has_key(json: &[u8], key: &str) -> bool {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(json)
        .is_ok_and(|m| m.contains_key(key))
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON encoding of a config")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DecisionRecord, LoggedAction, RewardKind, SledStore};
    use tailor_policies::SparseVec;

    /// Issue 17: a store written before reward ranges existed — a campaign without
    /// `reward_range` whose `default_reward` is negative, counters holding an infinite sum (three
    /// rewards of 1e308), and a logged reward of 1e6 past the snapshot — loads, with a range that
    /// contains its default reward, finite counters, and the logged reward replayed clamped.
    #[tokio::test]
    async fn a_store_from_before_reward_ranges_loads_safely() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20, 100).unwrap());
        let legacy = serde_json::json!({
            "id": "old", "policy": {"type": "linucb"}, "default_reward": -0.5,
            "reward_wait_seconds": 600
        });
        store
            .put_campaign("old", &serde_json::to_vec(&legacy).unwrap())
            .unwrap();
        store
            .put_snapshot(
                "old",
                &CampaignSnapshot {
                    reward_seq: 0,
                    decision_seq: 0,
                    policies: Vec::new(),
                    counters: vec![(
                        "sku-1".into(),
                        Counters {
                            exposures: 3,
                            rewards: 3,
                            reward_sum: f64::INFINITY,
                        },
                    )],
                    decisions: 3,
                    rewards: 3,
                },
            )
            .unwrap();
        let action = LoggedAction {
            id: "sku-2".into(),
            probability: 1.0,
            x: SparseVec::from_pairs(vec![(1, 1.0)]),
        };
        let decision = DecisionRecord {
            seq: store.next_seq().unwrap(),
            event_id: "e1".into(),
            campaign: "old".into(),
            at_ms: 1,
            deadline_ms: 2,
            policy: "linucb".into(),
            seed: 1,
            holdout: false,
            explore: true,
            actions: vec![action.clone()],
            candidates: 1,
            request: Vec::new(),
            removed: Vec::new(),
            candidate_set: 0,
        };
        let mut event = decide::event_for(&decision);
        store.log_decision(&decision, &event).unwrap();
        event.closed = true;
        let record = RewardRecord {
            seq: store.next_seq().unwrap(),
            event_id: "e1".into(),
            campaign: "old".into(),
            at_ms: 1,
            kind: RewardKind::Explicit,
            slot: 0,
            action,
            value: 1e6,
            holdout: false,
            policy: "linucb".into(),
        };
        store.commit_rewards(&event, &[record], true).unwrap();

        let engine = Engine::open(store, EngineSettings::default()).unwrap();
        let rt = engine.campaign("old").unwrap();
        assert_eq!(
            rt.config.reward_range,
            tailor_policies::RewardRange { lo: -0.5, hi: 1.0 }
        );
        let books = rt.books.lock();
        assert_eq!(books.counters["sku-1"].reward_sum, 3.0);
        assert_eq!(books.counters["sku-2"].reward_sum, 1.0, "replayed clamped");
        assert_eq!(books.rewards, 4);
        assert_eq!(
            books.counters["sku-2"].exposures, 1,
            "the decision replayed too"
        );
    }
}
