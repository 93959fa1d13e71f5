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
//!
//! Rooms: this file is the registry (open, campaign create/update/delete, `with_live`, sequence
//! numbers); `runtime.rs` a campaign's learners, books and snapshot; `recovery.rs` the replay at
//! start; `background.rs` the window sweeper, snapshots and retention; `decide.rs` (items) and
//! `send_time.rs` (send times) the two decide paths and `log_decision`; `reward.rs` joins, `apply`
//! and window closing; `model.rs` model files and log deletion; `records.rs` what handlers read
//! through the engine.

mod adjust;
mod background;
mod decide;
mod durability;
pub mod etag;
pub mod featurize;
pub mod holdout;
mod image;
mod merch;
mod model;
pub mod parse;
pub mod preview;
pub(crate) mod promotions;
mod records;
mod recovery;
mod report_book;
pub mod reports;
mod retention;
mod reward;
mod runtime;
pub mod send_time;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

pub(crate) use decide::check_items_request;
pub(crate) use decide::{response_of_decision, Ranked};
pub use decide::{DecideInput, MAX_AUDIENCES, NO_AUDIENCE, OTHER_AUDIENCE};
pub use durability::GroupCommit;
pub use image::CampaignImage;
pub use retention::RetentionSettings;
pub(crate) use reward::{check_reward_request, reward_key};
pub use reward::{slot_event_id, SLOT_SEPARATOR};
pub use runtime::CampaignRuntime;
pub(crate) use runtime::{snapshot_of, Books, BooksPart, Learner};

use crate::campaign::CampaignConfig;
use crate::config::EngineSettings;
use crate::error::EngineError;
use crate::plugins::{PluginChain, PluginHost, ReloadReport};
use crate::store::{Store, StoreError};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
    /// Cluster mode (docs/scale-out.md): set once, before the server takes requests.
    cluster: OnceLock<Arc<crate::cluster::Cluster>>,
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
            cluster: OnceLock::new(),
        });
        engine.replay()?;
        Ok(engine)
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

    /// The cluster this replica belongs to, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
    }

    /// Enter cluster mode: from now on decisions, rewards and campaign changes go through the
    /// stream. Only once, before requests are served.
    pub(crate) fn attach_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        if self.cluster.set(cluster).is_err() {
            tracing::warn!("cluster attached twice; keeping the first");
        }
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
        config: CampaignConfig,
    ) -> Result<Arc<CampaignRuntime>, EngineError> {
        self.update_campaign_if(config, |_| Ok(()))
    }

    /// [`Engine::update_campaign`] when `expect` accepts the runtime it replaces, checked under
    /// the admin lock (compare-and-set: a change that landed since the caller read the config
    /// is refused by `expect` (an `If-Match` that no longer matches, an optimization over an
    /// older config), never overwritten).
    pub fn update_campaign_if(
        &self,
        mut config: CampaignConfig,
        expect: impl FnOnce(&CampaignRuntime) -> Result<(), EngineError>,
    ) -> Result<Arc<CampaignRuntime>, EngineError> {
        let _admin = self.admin.lock();
        let old = self.campaign(&config.id)?;
        expect(&old)?;
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
        self.delete_campaign_if(id, None)
    }

    /// [`Engine::delete_campaign`], only while the campaign's `ETag` passes `if_match`.
    pub fn delete_campaign_if(
        &self,
        id: &str,
        if_match: Option<&etag::IfMatch>,
    ) -> Result<(), EngineError> {
        let _admin = self.admin.lock();
        if let Some(m) = if_match {
            let rt = self.campaign(id)?;
            m.check(id, &self.campaign_etag(&rt))?;
        }
        let old = self
            .campaigns
            .write()
            .remove(id)
            .ok_or_else(|| EngineError::CampaignNotFound { id: id.to_string() })?;
        // Under its books lock: a decide that saw the runtime live has appended by now, and
        // every later one sees it retired (nothing is appended to a deleted log).
        drop({
            let books = old.books.lock();
            old.retired.store(true, Ordering::Release);
            books
        });
        self.store.delete_campaign(id)?;
        self.store.delete_snapshot(id)?;
        self.store.delete_campaign_log(id)?;
        Ok(())
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
    use crate::store::{
        CampaignSnapshot, Counters, DecisionRecord, LoggedAction, RewardKind, RewardRecord,
        SledStore,
    };
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
            pinned: Default::default(),
            audience: Default::default(),
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
