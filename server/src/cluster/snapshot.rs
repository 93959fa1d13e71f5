//! Cluster snapshots in the JetStream object store, and the stream's bounded retention
//! (docs/scale-out.md, "Snapshots and retention").
//!
//! - **Who takes one.** Stream time is cut into intervals of `snapshot_interval_s`. When a
//!   replica's stream time enters interval `k`, it tries to create the key `s<k>` in the claims
//!   bucket; key creation is atomic, so exactly one replica wins each interval and only it builds
//!   and uploads a snapshot (a winner that dies before uploading costs one interval).
//! - **What it holds.** A [`ClusterImage`]: the stream sequence it includes and the stream time
//!   at that point, and for every campaign its config revision and [`CampaignImage`] (config,
//!   learned state in the single-node snapshot encoding, every join state — open windows with
//!   their decisions' vectors, closed ones as markers). The applier builds it between two events
//!   (it is the only writer of replicated state), so it is exactly "the state after applying
//!   the stream up to `seq`".
//! - **Where.** One object, [`OBJECT`], in the object-store bucket `snapshot_bucket`; each
//!   upload replaces the previous one only once it is complete.
//! - **Starting from one.** A replica (its local store is a cache, cleared at start) downloads
//!   the newest snapshot, restores it, and consumes the stream from `seq + 1`. Without a snapshot
//!   it replays the stream from its first message, which must then be the stream's first ever.
//! - **Retention.** The stream's `max_age` is `retention_s`, which must cover the snapshot
//!   interval plus the longest reward wait of any campaign (checked at campaign create/update),
//!   so the tail after the newest snapshot is always retained, and every decision whose window
//!   is still open is in the snapshot *and* still in the stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind};
use async_nats::jetstream::object_store::{self, ObjectMetadata, ObjectStore};
use async_nats::jetstream::stream;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use super::{js_err, Cluster, ClusterError, ClusterSettings};
use crate::campaign::CampaignConfig;
use crate::engine::{CampaignImage, Engine};
use crate::error::EngineError;

/// The object holding the newest snapshot.
pub const OBJECT: &str = "newest";
/// Version byte before an encoded image.
/// 2: campaign images carry send-time shopper states and send events.
/// 3: and the settled slots returns correct.
const IMAGE_VERSION: u8 = 3;

/// The replicated state after applying the stream up to `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterImage {
    /// The last stream sequence included.
    pub seq: u64,
    /// The stream time at that point (ms).
    pub stream_time: u64,
    /// The replica that took it, and when (its clock; informational).
    pub node: String,
    pub taken_at_ms: u64,
    /// (config revision, campaign).
    pub campaigns: Vec<(Option<u64>, CampaignImage)>,
}

impl ClusterImage {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![IMAGE_VERSION];
        out.extend(postcard::to_stdvec(self).expect("postcard encoding of a snapshot"));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&IMAGE_VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
            Some((v, _)) => Err(format!("unknown snapshot version {v}")),
            None => Err("empty snapshot".into()),
        }
    }
}

/// Where the applier sends a built image (or why it could not build one).
type ImageReply = oneshot::Sender<Result<Vec<u8>, String>>;

/// A pending request for an image, served by the applier between two events.
#[derive(Default)]
pub(crate) struct Requests {
    requested: AtomicBool,
    reply: Mutex<Option<ImageReply>>,
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests").finish_non_exhaustive()
    }
}

/// Called by the applier after each applied event: build the image if one was asked for.
pub(crate) fn serve_request(engine: &Engine, cluster: &Cluster) {
    if !cluster.snapshots.requested.load(Ordering::Acquire) {
        return;
    }
    cluster.snapshots.requested.store(false, Ordering::Release);
    let Some(reply) = cluster.snapshots.reply.lock().take() else {
        return;
    };
    let started = Instant::now();
    let image = take_image(engine, cluster)
        .map(|i| i.encode())
        .map_err(|e| e.to_string());
    metrics::histogram!("tailor_cluster_snapshot_build_seconds")
        .record(started.elapsed().as_secs_f64());
    let _ = reply.send(image);
}

/// The image of everything applied here so far; the caller is the applier.
fn take_image(engine: &Engine, cluster: &Cluster) -> Result<ClusterImage, EngineError> {
    let mut campaigns = Vec::new();
    let mut ids: Vec<String> = engine
        .campaigns()
        .iter()
        .map(|rt| rt.config.id.clone())
        .collect();
    ids.sort();
    for id in ids {
        campaigns.push((cluster.revision(&id), engine.campaign_image(&id)?));
    }
    Ok(ClusterImage {
        seq: cluster.applied(),
        stream_time: cluster.stream_time(),
        node: cluster.node().to_string(),
        taken_at_ms: crate::engine::now_ms(),
        campaigns,
    })
}

/// The buckets snapshots use.
pub(crate) struct Buckets {
    objects: ObjectStore,
    claims: kv::Store,
}

fn claims_bucket(settings: &ClusterSettings) -> String {
    format!("{}_claims", settings.snapshot_bucket)
}

/// Make sure the stream's `max_age` is `retention_s` (a stream created by an older version, or
/// with another setting, is updated) and that the snapshot buckets exist.
pub(crate) async fn prepare(cluster: &Cluster) -> Result<Buckets, ClusterError> {
    let settings = cluster.settings();
    let js = cluster.js();
    let max_age = Duration::from_secs(settings.retention_s);
    let info = super::set_up("stream info", || async {
        let mut s = js
            .get_stream(&settings.stream)
            .await
            .map_err(|e| e.to_string())?;
        s.info().await.cloned().map_err(|e| e.to_string())
    })
    .await?;
    if info.config.max_age != max_age {
        let mut config = info.config.clone();
        config.max_age = max_age;
        super::set_up("stream retention", || js.update_stream(config.clone())).await?;
        tracing::info!(stream = %settings.stream, retention_s = settings.retention_s, "stream retention set");
    }
    let objects = super::set_up("snapshot bucket", || async {
        match js.get_object_store(&settings.snapshot_bucket).await {
            Ok(o) => Ok(o),
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: settings.snapshot_bucket.clone(),
                    storage: stream::StorageType::File,
                    num_replicas: settings.stream_replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string()),
        }
    })
    .await?;
    let claims = super::kv_bucket(
        js,
        settings,
        "snapshot claims bucket",
        kv::Config {
            bucket: claims_bucket(settings),
            history: 1,
            max_age,
            ..Default::default()
        },
    )
    .await?;
    Ok(Buckets { objects, claims })
}

/// The stream's (first, last) sequence now.
async fn stream_bounds(cluster: &Cluster) -> Result<(u64, u64), ClusterError> {
    let mut s = cluster
        .js()
        .get_stream(&cluster.settings().stream)
        .await
        .map_err(|e| js_err("stream info")(&e))?;
    let info = s.info().await.map_err(|e| js_err("stream info")(&e))?;
    Ok((info.state.first_sequence, info.state.last_sequence))
}

/// Download the newest snapshot, if any.
async fn newest(buckets: &Buckets) -> Result<Option<ClusterImage>, ClusterError> {
    let mut object = match buckets.objects.get(OBJECT).await {
        Ok(o) => o,
        Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(js_err("snapshot download")(&e)),
    };
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| js_err("snapshot download")(&e))?;
    match ClusterImage::decode(&bytes) {
        Ok(image) => Ok(Some(image)),
        Err(e) => {
            // Say, written by an older version: not used; the next one this version takes is.
            tracing::warn!(error = %e, "the newest snapshot cannot be read by this version; not used");
            Ok(None)
        }
    }
}

/// Start this replica from the newest snapshot when there is one the stream's tail continues;
/// else from the stream's first message, which must then be its first ever. Called before the
/// applier starts, on an engine with no campaigns (the local store was cleared).
pub(crate) async fn start(
    engine: &Engine,
    cluster: &Cluster,
    buckets: &Buckets,
) -> Result<(), ClusterError> {
    let (first, last) = stream_bounds(cluster).await?;
    metrics::gauge!("tailor_cluster_start_stream_first_seq").set(first as f64);
    let image = newest(buckets).await?;
    let usable = image.filter(|i| {
        // A snapshot past the stream's end belongs to a stream since deleted and recreated.
        let fits = i.seq <= last && i.seq + 1 >= first;
        if !fits {
            tracing::warn!(
                snapshot_seq = i.seq,
                first,
                last,
                "the newest snapshot does not fit the stream; not used"
            );
        }
        fits
    });
    let Some(image) = usable else {
        if first > 1 {
            return Err(ClusterError::JetStream {
                what: "start",
                message: format!(
                    "the stream starts at sequence {first} (retention dropped the events before it) and no snapshot covers them"
                ),
            });
        }
        metrics::gauge!("tailor_cluster_start_snapshot_seq").set(0.0);
        return Ok(());
    };
    let started = Instant::now();
    let (seq, campaigns) = (image.seq, image.campaigns.len());
    for (revision, campaign) in image.campaigns {
        let id = serde_json::from_slice::<CampaignConfig>(&campaign.config)
            .map(|c| c.id)
            .map_err(|e| js_err("snapshot decode")(&e))?;
        engine
            .restore_image(campaign)
            .map_err(|e| js_err("snapshot restore")(&e))?;
        cluster.set_revision(&id, revision);
    }
    cluster.advance_time(image.stream_time);
    cluster.set_applied(seq);
    metrics::gauge!("tailor_cluster_start_snapshot_seq").set(seq as f64);
    tracing::info!(seq, campaigns, from = %image.node, elapsed = ?started.elapsed(), "started from the newest snapshot");
    Ok(())
}

/// Take and upload a snapshot once per snapshot interval of stream time, when this replica wins
/// the interval's claim. Runs until the process ends.
pub(crate) async fn run(cluster: Arc<Cluster>, buckets: Buckets) {
    let interval_ms = cluster.settings().snapshot_interval_s * 1_000;
    let poll = Duration::from_millis((interval_ms / 4).clamp(100, 10_000));
    let mut done = 0u64;
    loop {
        tokio::time::sleep(poll).await;
        if let Ok((first, _)) = stream_bounds(&cluster).await {
            metrics::gauge!("tailor_cluster_stream_first_seq").set(first as f64);
        }
        let index = cluster.stream_time() / interval_ms;
        if index <= done || !cluster.connected() {
            continue;
        }
        done = index;
        match buckets
            .claims
            .create(
                format!("s{index}"),
                cluster.node().as_bytes().to_vec().into(),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => continue,
            Err(e) => {
                tracing::warn!(error = %e, "claiming a snapshot interval failed");
                continue;
            }
        }
        match take_and_upload(&cluster, &buckets).await {
            Ok((seq, bytes)) => {
                metrics::counter!("tailor_cluster_snapshots_total").increment(1);
                metrics::gauge!("tailor_cluster_snapshot_seq").set(seq as f64);
                metrics::gauge!("tailor_cluster_snapshot_bytes").set(bytes as f64);
                tracing::info!(seq, bytes, "cluster snapshot uploaded");
            }
            Err(e) => tracing::warn!(error = %e, "cluster snapshot failed"),
        }
    }
}

async fn take_and_upload(cluster: &Cluster, buckets: &Buckets) -> Result<(u64, usize), String> {
    let (tx, rx) = oneshot::channel();
    *cluster.snapshots.reply.lock() = Some(tx);
    cluster.snapshots.requested.store(true, Ordering::Release);
    // Ticks keep the applier busy, so it gets to the request within a tick or so.
    let wait = Duration::from_millis(cluster.settings().tick_ms * 10 + 30_000);
    let bytes = match tokio::time::timeout(wait, rx).await {
        Ok(Ok(image)) => image?,
        _ => {
            cluster.snapshots.requested.store(false, Ordering::Release);
            return Err("the applier did not build the image in time".into());
        }
    };
    let seq = ClusterImage::decode(&bytes)
        .map(|i| i.seq)
        .unwrap_or_default();
    let meta = ObjectMetadata {
        name: OBJECT.to_string(),
        description: Some(format!("tailor cluster snapshot at stream sequence {seq}")),
        metadata: HashMap::from([
            ("seq".to_string(), seq.to_string()),
            ("node".to_string(), cluster.node().to_string()),
        ]),
        ..Default::default()
    };
    buckets
        .objects
        .put(meta, &mut bytes.as_slice())
        .await
        .map_err(|e| e.to_string())?;
    Ok((seq, bytes.len()))
}

/// In cluster mode a campaign's reward wait must fit the stream's retention with a snapshot
/// interval to spare (docs/scale-out.md): else a decision could leave the stream while its
/// window is open and before a snapshot holds it.
pub(crate) fn check_reward_wait(
    settings: &ClusterSettings,
    config: &CampaignConfig,
) -> Result<(), EngineError> {
    let limit = settings
        .retention_s
        .saturating_sub(settings.snapshot_interval_s);
    if config.reward_wait_seconds > limit as f64 {
        return Err(EngineError::invalid_owned(
            "reward_wait_seconds",
            format!(
                "must be at most {limit} in this cluster (cluster.retention_s {} minus cluster.snapshot_interval_s {})",
                settings.retention_s, settings.snapshot_interval_s
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_round_trip_and_versions_are_checked() {
        let image = ClusterImage {
            seq: 42,
            stream_time: 7,
            node: "a".into(),
            taken_at_ms: 9,
            campaigns: Vec::new(),
        };
        assert_eq!(ClusterImage::decode(&image.encode()).unwrap(), image);
        assert!(ClusterImage::decode(&[]).is_err());
        assert!(ClusterImage::decode(&[9, 0]).is_err());
    }
}
