//! Cluster mode: many replicas learning as one, on NATS JetStream (docs/scale-out.md).
//!
//! The stream is the log. A replica that answers a decide publishes the decision to one
//! JetStream stream (a subject per campaign, `Nats-Msg-Id` per campaign and event id) and
//! answers once JetStream acknowledged it; a reward is published as received and answered once
//! acknowledged *and* applied here. Every replica consumes the whole stream in order
//! ([`apply`]) and applies each event through the engine's own entry points — decisions through
//! `Engine::log_decision`, rewards through `Engine::join_one` at the event's stream time,
//! windows closed by `Engine::sweep` on stream time, campaign changes through
//! `Engine::{create,update,delete}_campaign` — so every replica reaches the same state in the
//! same order. Campaign configs are also kept in a JetStream key-value bucket, written with
//! compare-and-set on the revision (a conflict is a 409).
//!
//! Principal types: [`ClusterSettings`] (the `[cluster]` section), [`Cluster`] (the connection,
//! the applied position and the outcomes of this replica's own events), [`event::Event`] (what
//! travels). The engine's entry points for handlers are in `entry.rs`; the digest of learned
//! state in `digest.rs`.

mod activate;
mod adjust;
pub mod apply;
pub mod audit;
pub mod digest;
mod entry;
pub mod event;
pub mod keys;
mod model;
mod send_time;
mod shoppers;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use async_nats::{HeaderMap, ServerAddr};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tailor_wire::RewardStatus;
use tokio::sync::watch;

use crate::config::ConfigError;
use crate::engine::Engine;
use crate::error::EngineError;
use event::Event;

/// The `[cluster]` section. Cluster mode is on when `servers` is not empty (`tailor serve
/// --cluster nats://HOST:PORT` sets it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// NATS server URLs (`nats://host:port`); empty: single-node mode.
    pub servers: Vec<String>,
    /// The JetStream stream holding the log.
    pub stream: String,
    /// Subjects of the stream: `{subject_prefix}.>`.
    pub subject_prefix: String,
    /// Replicas of the stream and the bucket (3 in a three-node NATS cluster).
    pub stream_replicas: usize,
    /// The key-value bucket of campaign configs.
    pub config_bucket: String,
    /// This replica's name in the stream (a message header); empty: a random one per start.
    pub node_id: String,
    /// How often this replica publishes its clock (closes reward windows without traffic).
    pub tick_ms: u64,
    /// How long a publish waits for JetStream's acknowledgement, and a write for its apply.
    pub ack_timeout_ms: u64,
    /// JetStream's de-duplication window: a retry within it is recognized by message id.
    pub duplicate_window_s: u64,
    /// The object-store bucket of snapshots (`cluster/snapshot.rs`).
    pub snapshot_bucket: String,
    /// One snapshot per this many seconds of stream time, taken by one replica.
    pub snapshot_interval_s: u64,
    /// The stream's `max_age`: at least the longest reward wait plus the snapshot interval.
    pub retention_s: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            stream: "TAILOR".into(),
            subject_prefix: "tailor".into(),
            stream_replicas: 1,
            config_bucket: "tailor_campaigns".into(),
            node_id: String::new(),
            tick_ms: 1_000,
            ack_timeout_ms: 5_000,
            duplicate_window_s: 600,
            snapshot_bucket: "tailor_snapshots".into(),
            snapshot_interval_s: 300,
            retention_s: 7 * 86_400,
        }
    }
}

impl ClusterSettings {
    /// Whether cluster mode is on.
    pub fn enabled(&self) -> bool {
        !self.servers.is_empty()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
        for s in &self.servers {
            if s.parse::<ServerAddr>().is_err() {
                return invalid(
                    "cluster.servers",
                    format!("{s:?} is not a NATS URL (nats://host:port)"),
                );
            }
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !name_ok(&self.stream) {
            return invalid("cluster.stream", "1-64 of A-Z a-z 0-9 _ -".to_string());
        }
        if !name_ok(&self.subject_prefix) {
            return invalid(
                "cluster.subject_prefix",
                "1-64 of A-Z a-z 0-9 _ -".to_string(),
            );
        }
        if !name_ok(&self.config_bucket) {
            return invalid(
                "cluster.config_bucket",
                "1-64 of A-Z a-z 0-9 _ -".to_string(),
            );
        }
        if !(self.node_id.is_empty() || name_ok(&self.node_id)) {
            return invalid(
                "cluster.node_id",
                "empty or 1-64 of A-Z a-z 0-9 _ -".to_string(),
            );
        }
        if !(1..=5).contains(&self.stream_replicas) {
            return invalid(
                "cluster.stream_replicas",
                format!("{} is outside 1..=5", self.stream_replicas),
            );
        }
        if !(10..=60_000).contains(&self.tick_ms) {
            return invalid(
                "cluster.tick_ms",
                format!("{} is outside 10..=60000", self.tick_ms),
            );
        }
        if !(100..=600_000).contains(&self.ack_timeout_ms) {
            return invalid(
                "cluster.ack_timeout_ms",
                format!("{} is outside 100..=600000", self.ack_timeout_ms),
            );
        }
        if !(1..=86_400).contains(&self.duplicate_window_s) {
            return invalid(
                "cluster.duplicate_window_s",
                format!("{} is outside 1..=86400", self.duplicate_window_s),
            );
        }
        if !name_ok(&self.snapshot_bucket) {
            return invalid(
                "cluster.snapshot_bucket",
                "1-64 of A-Z a-z 0-9 _ -".to_string(),
            );
        }
        if !(1..=86_400).contains(&self.snapshot_interval_s) {
            return invalid(
                "cluster.snapshot_interval_s",
                format!("{} is outside 1..=86400", self.snapshot_interval_s),
            );
        }
        // At least two snapshot intervals and the de-duplication window (JetStream requires
        // the window to fit the retention); at most a year.
        let floor = (2 * self.snapshot_interval_s).max(self.duplicate_window_s);
        if !(floor..=365 * 86_400).contains(&self.retention_s) {
            return invalid(
                "cluster.retention_s",
                format!(
                    "{} is outside {floor}..=31536000 (at least twice cluster.snapshot_interval_s and cluster.duplicate_window_s)",
                    self.retention_s
                ),
            );
        }
        Ok(())
    }
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("connecting to NATS at {servers}: {message}")]
    Connect { servers: String, message: String },
    #[error("JetStream {what}: {message}")]
    JetStream { what: &'static str, message: String },
}

/// How long a JetStream set-up step (opening or creating a stream or bucket) is retried at
/// start: a NATS cluster that just formed or lost a node answers with errors or timeouts until
/// its leaders are elected.
const SET_UP_PATIENCE: Duration = Duration::from_secs(20);

/// Run a JetStream set-up step until it succeeds, every 250 ms for up to [`SET_UP_PATIENCE`];
/// then its last error, naming `what`.
pub(crate) async fn set_up<T, E, F, Fut>(what: &'static str, mut step: F) -> Result<T, ClusterError>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let started = std::time::Instant::now();
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() < SET_UP_PATIENCE => {
                tracing::warn!(what, error = %e, "JetStream not ready; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(js_err(what)(&e)),
        }
    }
}

/// Open the key-value bucket `config.bucket`, or create it with `config` (file storage and the
/// stream's replicas filled in), retried as a [`set_up`] step named `what`.
pub(crate) async fn kv_bucket(
    js: &jetstream::Context,
    settings: &ClusterSettings,
    what: &'static str,
    config: kv::Config,
) -> Result<kv::Store, ClusterError> {
    let config = kv::Config {
        storage: stream::StorageType::File,
        num_replicas: settings.stream_replicas,
        ..config
    };
    set_up(what, || async {
        match js.get_key_value(&config.bucket).await {
            Ok(kv) => Ok(kv),
            Err(_) => js
                .create_key_value(config.clone())
                .await
                .map_err(|e| e.to_string()),
        }
    })
    .await
}

fn js_err(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> ClusterError {
    move |e| ClusterError::JetStream {
        what,
        message: e.to_string(),
    }
}

/// What applying one of this replica's own events produced, for the request waiting on it.
#[derive(Debug)]
pub(crate) enum Outcome {
    Reward(Result<RewardStatus, EngineError>),
    Adjust(Result<tailor_wire::AdjustResponse, EngineError>),
    /// A model import: the policies replaced.
    Imported(Result<Vec<String>, EngineError>),
    /// A log deletion: (decisions, rewards) deleted here.
    Deleted(Result<(u64, u64), EngineError>),
    Config(Result<(), EngineError>),
    /// How many things an event removed here (a shopper deletion's campaign states).
    Count(Result<usize, EngineError>),
    /// Applied with nothing to report (a decision, a tick).
    Done,
}

/// Outcomes kept for requests that gave up waiting are dropped past this many.
const MAX_OUTCOMES: usize = 100_000;

/// A replica's membership in the cluster. Shared behind an `Arc`.
pub struct Cluster {
    settings: ClusterSettings,
    node: String,
    client: async_nats::Client,
    js: jetstream::Context,
    configs: kv::Store,
    /// The last stream sequence applied here.
    applied: watch::Sender<u64>,
    /// The stream time: the largest event time applied (ms).
    stream_time: AtomicU64,
    /// Outcomes of this replica's own events, by stream sequence, until their request takes them.
    outcomes: Mutex<HashMap<u64, Outcome>>,
    /// The config revision each campaign was last applied at.
    revisions: Mutex<HashMap<String, u64>>,
    /// A snapshot asked of the applier (`snapshot.rs`).
    snapshots: snapshot::Requests,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("stream", &self.settings.stream)
            .finish_non_exhaustive()
    }
}

/// The header naming the replica that published an event.
const NODE_HEADER: &str = "Tailor-Node";

impl Cluster {
    /// Connect, make sure the stream and the bucket exist, attach to `engine`, apply the stream
    /// up to its current end, and start the applier and the clock. Returns once this replica
    /// has caught up (it then serves what every replica serves).
    pub async fn join(
        engine: &Arc<Engine>,
        settings: &ClusterSettings,
    ) -> Result<Arc<Self>, ClusterError> {
        let servers: Vec<ServerAddr> = settings
            .servers
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let node = if settings.node_id.is_empty() {
            format!("n{:016x}", rand::random::<u64>())
        } else {
            settings.node_id.clone()
        };
        let client = async_nats::ConnectOptions::new()
            .name(format!("tailor-{node}"))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(servers)
            .await
            .map_err(|e| ClusterError::Connect {
                servers: settings.servers.join(","),
                message: e.to_string(),
            })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_millis(settings.ack_timeout_ms));
        let stream_config = stream::Config {
            name: settings.stream.clone(),
            subjects: vec![format!("{}.>", settings.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: settings.stream_replicas,
            duplicate_window: Duration::from_secs(settings.duplicate_window_s),
            allow_direct: true,
            ..Default::default()
        };
        // Retried: right after a (re)start the server may still be recovering its streams.
        set_up("stream", || js.get_or_create_stream(stream_config.clone())).await?;
        let configs = kv_bucket(
            &js,
            settings,
            "config bucket",
            kv::Config {
                bucket: settings.config_bucket.clone(),
                history: 1,
                ..Default::default()
            },
        )
        .await?;
        let (applied, _) = watch::channel(0u64);
        let cluster = Arc::new(Self {
            settings: settings.clone(),
            node,
            client,
            js,
            configs,
            applied,
            stream_time: AtomicU64::new(0),
            outcomes: Mutex::new(HashMap::new()),
            revisions: Mutex::new(HashMap::new()),
            snapshots: Default::default(),
        });
        engine.attach_cluster(cluster.clone());
        let buckets = snapshot::prepare(&cluster).await?;
        snapshot::start(engine, &cluster, &buckets).await?;
        let end = cluster.stream_end().await?;
        tokio::spawn(apply::run(engine.clone(), cluster.clone()));
        tokio::spawn(ticker(cluster.clone()));
        tokio::spawn(snapshot::run(cluster.clone(), buckets));
        tracing::info!(node = %cluster.node, stream = %settings.stream, end, "catching up with the stream");
        let mut rx = cluster.applied.subscribe();
        while *rx.borrow_and_update() < end {
            if rx.changed().await.is_err() {
                break;
            }
        }
        tracing::info!(node = %cluster.node, applied = cluster.applied(), "cluster member ready");
        Ok(cluster)
    }

    /// This replica's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The last stream sequence applied here.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// The stream time (largest event time applied), ms since the epoch.
    pub fn stream_time(&self) -> u64 {
        self.stream_time.load(Ordering::Acquire)
    }

    /// The largest message the NATS server takes (its `max_payload`).
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// A 503 naming `what` to retry when the NATS connection is down: changes that must go
    /// through the stream are refused rather than applied only here.
    pub(crate) fn require_connected(&self, what: &str) -> Result<(), EngineError> {
        if self.connected() {
            return Ok(());
        }
        Err(EngineError::Unavailable {
            message: format!("cluster mode: NATS is unreachable; retry {what} later"),
        })
    }

    /// Whether the NATS connection is up.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The stream's last sequence now.
    async fn stream_end(&self) -> Result<u64, ClusterError> {
        let mut stream = self
            .js
            .get_stream(&self.settings.stream)
            .await
            .map_err(|e| js_err("stream info")(&e))?;
        let info = stream.info().await.map_err(|e| js_err("stream info")(&e))?;
        Ok(info.state.last_sequence)
    }

    /// A read barrier: wait until this replica applied everything the stream held when called
    /// (so a decision another replica answered before now is known here). 503 when NATS is
    /// unreachable or the replica does not catch up within the ack timeout.
    pub async fn catch_up(&self) -> Result<(), EngineError> {
        let end = self
            .stream_end()
            .await
            .map_err(|e| EngineError::Unavailable {
                message: format!("cluster mode: {e}"),
            })?;
        self.wait_applied(end).await
    }

    /// Publish `event` and wait for JetStream's acknowledgement: (sequence, duplicate). A
    /// failure is a 503 (the client retries; the message id makes the retry safe).
    pub(crate) async fn publish(
        &self,
        subject: String,
        event: &Event,
    ) -> Result<(u64, bool), EngineError> {
        self.publish_with(subject, event, event.msg_id()).await
    }

    /// [`Self::publish`] without a message id: never taken for a duplicate.
    pub(crate) async fn publish_unkeyed(
        &self,
        subject: String,
        event: &Event,
    ) -> Result<(u64, bool), EngineError> {
        self.publish_with(subject, event, None).await
    }

    async fn publish_with(
        &self,
        subject: String,
        event: &Event,
        msg_id: Option<String>,
    ) -> Result<(u64, bool), EngineError> {
        let mut headers = HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        headers.insert(NODE_HEADER, self.node.as_str());
        let unavailable = |e: &dyn std::fmt::Display| EngineError::Unavailable {
            message: format!("the cluster log did not take the event: {e}"),
        };
        let ack = self
            .js
            .publish_with_headers(subject, headers, event.encode().into())
            .await
            .map_err(|e| unavailable(&e))?
            .await
            .map_err(|e| unavailable(&e))?;
        metrics::counter!("tailor_cluster_published_total").increment(1);
        Ok((ack.sequence, ack.duplicate))
    }

    /// Publish `event` (without a message id), wait until this replica applied it, and take
    /// what applying it decided here: the path of every change answered once applied.
    pub(crate) async fn publish_and_apply(
        &self,
        subject: String,
        event: &Event,
    ) -> Result<Option<Outcome>, EngineError> {
        let (seq, _) = self.publish_unkeyed(subject, event).await?;
        self.wait_applied(seq).await?;
        Ok(self.take_outcome(seq))
    }

    /// The subject of `campaign`'s events.
    pub(crate) fn subject(&self, campaign: &str) -> String {
        event::campaign_subject(&self.settings.subject_prefix, campaign)
    }

    /// Wait until this replica applied stream sequence `seq` (bounded by the ack timeout).
    pub(crate) async fn wait_applied(&self, seq: u64) -> Result<(), EngineError> {
        let mut rx = self.applied.subscribe();
        let wait = async {
            while *rx.borrow_and_update() < seq {
                if rx.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        match tokio::time::timeout(Duration::from_millis(self.settings.ack_timeout_ms), wait).await
        {
            Ok(true) => Ok(()),
            _ => Err(EngineError::Unavailable {
                message: format!(
                    "the event is in the cluster log (sequence {seq}) but this replica has not applied it yet (at {})",
                    self.applied()
                ),
            }),
        }
    }

    /// Take the outcome of this replica's own event at `seq` (after [`Self::wait_applied`]).
    pub(crate) fn take_outcome(&self, seq: u64) -> Option<Outcome> {
        self.outcomes.lock().remove(&seq)
    }

    pub(crate) fn put_outcome(&self, seq: u64, outcome: Outcome) {
        let mut outcomes = self.outcomes.lock();
        if outcomes.len() >= MAX_OUTCOMES {
            // Requests that timed out never take theirs.
            let keep_from = seq.saturating_sub(MAX_OUTCOMES as u64 / 2);
            outcomes.retain(|&s, _| s >= keep_from);
        }
        outcomes.insert(seq, outcome);
    }

    pub(crate) fn set_applied(&self, seq: u64) {
        self.applied.send_replace(seq);
        metrics::gauge!("tailor_cluster_applied_seq").set(seq as f64);
    }

    /// Advance the stream time to `at_ms` (never backwards); returns the stream time.
    pub(crate) fn advance_time(&self, at_ms: u64) -> u64 {
        self.stream_time
            .fetch_max(at_ms, Ordering::AcqRel)
            .max(at_ms)
    }

    /// The config revision `campaign` was last applied at here.
    pub(crate) fn revision(&self, campaign: &str) -> Option<u64> {
        self.revisions.lock().get(campaign).copied()
    }

    pub(crate) fn set_revision(&self, campaign: &str, revision: Option<u64>) {
        let mut revisions = self.revisions.lock();
        match revision {
            Some(r) => {
                revisions.insert(campaign.to_string(), r);
            }
            None => {
                revisions.remove(campaign);
            }
        }
    }

    pub(crate) fn configs(&self) -> &kv::Store {
        &self.configs
    }

    pub(crate) fn js(&self) -> &jetstream::Context {
        &self.js
    }

    pub(crate) fn settings(&self) -> &ClusterSettings {
        &self.settings
    }
}

/// Cluster mode starts from the stream: the campaigns, logs, snapshots and send-time shopper
/// states a previous run left in the local store are dropped first (keys and audit stay). The
/// local store is a cache.
pub fn clear_local_state(store: &dyn crate::store::Store) -> Result<(), crate::store::StoreError> {
    for (id, _) in store.campaigns()? {
        store.delete_snapshot(&id)?;
        store.delete_campaign_log(&id)?;
        store.delete_campaign(&id)?;
    }
    // Send-time shopper states are rebuilt from the stream too (send-time decisions and
    // shopper deletions are events).
    let mut shoppers = Vec::new();
    for item in store.all_shopper_states() {
        let (shopper, campaign, _) = item?;
        shoppers.push((shopper, campaign));
    }
    for (shopper, campaign) in &shoppers {
        store.remove_shopper_state(shopper, campaign)?;
    }
    Ok(())
}

/// Publish this replica's clock every `tick_ms`: reward windows close on stream time.
async fn ticker(cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(Duration::from_millis(cluster.settings.tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let subject = format!("{}.tick", cluster.settings.subject_prefix);
    loop {
        tick.tick().await;
        let event = Event::Tick {
            at_ms: crate::engine::now_ms(),
        };
        if let Err(e) = cluster.publish(subject.clone(), &event).await {
            tracing::warn!(error = %e, "publishing the clock tick failed");
        }
    }
}
