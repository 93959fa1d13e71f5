//! Cluster mode: one audit trail for every replica (docs/scale-out.md).
//!
//! An admin change on any replica is appended to the JetStream stream `{stream}_AUDIT` (subject
//! `{subject_prefix}_audit`, file storage, no limits: the audit trail is append-only and kept),
//! and answered once JetStream acknowledged it. Every replica mirrors that stream, in order, into
//! its local audit tree, so `GET /admin/v1/audit` on any replica lists the entries of all of
//! them. A mirrored entry's `seq` is its stream sequence (the same everywhere) and its `replica`
//! names the writer. It is stored under `MIRROR_BIT | seq`, above every key a single-node
//! entry has, so the entries of an earlier single-node life of the data directory stay, listed
//! after (older than) the cluster's; the newest mirrored entry tells a restarted replica where
//! to resume.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{js_err, Cluster, ClusterError};
use crate::audit::{AuditEntry, AuditLog, Change};
use crate::error::EngineError;

/// Mirrored entries are stored under this bit or'ed with their stream sequence.
pub const MIRROR_BIT: u64 = 1 << 63;

/// The cluster side of an [`AuditLog`].
pub struct SharedAudit {
    js: jetstream::Context,
    stream: String,
    subject: String,
    node: String,
    /// The last audit stream sequence mirrored here.
    applied: watch::Sender<u64>,
    timeout: Duration,
}

impl std::fmt::Debug for SharedAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedAudit")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// The audit stream of a cluster.
pub fn stream_name(cluster: &Cluster) -> String {
    format!("{}_AUDIT", cluster.settings().stream)
}

/// Create (or open) the audit stream, attach it to `audit`, and mirror it: returns once the
/// entries that were in it at start are mirrored here.
pub async fn start(cluster: &Arc<Cluster>, audit: &Arc<AuditLog>) -> Result<(), ClusterError> {
    let name = stream_name(cluster);
    let subject = format!("{}_audit", cluster.settings().subject_prefix);
    let mut stream = super::set_up("audit stream", || {
        cluster.js().get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: cluster.settings().stream_replicas,
            allow_direct: true,
            ..Default::default()
        })
    })
    .await?;
    let end = stream
        .info()
        .await
        .map_err(|e| js_err("audit stream")(&e))?
        .state
        .last_sequence;
    // Resume after the newest entry mirrored by an earlier run.
    let resume = match audit.store().audit_rev().next() {
        Some(Ok(json)) => match serde_json::from_slice::<AuditEntry>(&json) {
            Ok(e) if e.replica.is_some() => e.seq,
            _ => 0,
        },
        _ => 0,
    };
    let (applied, _) = watch::channel(resume);
    let shared = SharedAudit {
        js: cluster.js().clone(),
        stream: name,
        subject,
        node: cluster.node().to_string(),
        applied,
        timeout: Duration::from_millis(cluster.settings().ack_timeout_ms),
    };
    if audit.shared.set(shared).is_err() {
        tracing::warn!("audit log attached to a cluster twice; keeping the first");
    }
    tokio::spawn(mirror(audit.clone()));
    let shared = audit.shared.get().expect("set above");
    let mut rx = shared.applied.subscribe();
    while *rx.borrow_and_update() < end {
        if rx.changed().await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Mirror the audit stream into the local audit tree, forever.
async fn mirror(audit: Arc<AuditLog>) {
    loop {
        if let Err(e) = consume(&audit).await {
            tracing::debug!(error = %e, "audit mirror consumer restarting");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn consume(audit: &AuditLog) -> Result<(), String> {
    let shared = audit.shared.get().ok_or("no cluster")?;
    let stream = shared
        .js
        .get_stream(&shared.stream)
        .await
        .map_err(|e| e.to_string())?;
    let start_sequence = *shared.applied.borrow() + 1;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: shared.subject.clone(),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    // Audit entries are rare: a consumer idle this long is made again (cheap), so one broken
    // by a NATS restart does not stay broken.
    let idle = Duration::from_secs(5);
    loop {
        let message = match tokio::time::timeout(idle, messages.next()).await {
            Ok(Some(message)) => message.map_err(|e| e.to_string())?,
            Ok(None) => return Err("the audit consumer ended".into()),
            Err(_) => return Err(format!("no audit entry for {idle:?}")),
        };
        let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
        let applied = *shared.applied.borrow();
        if seq <= applied {
            continue;
        }
        match serde_json::from_slice::<AuditEntry>(&message.payload) {
            Ok(mut entry) => {
                entry.seq = seq;
                let json = serde_json::to_vec(&entry).expect("JSON encoding of an audit entry");
                if let Err(e) = audit.store().append_audit(MIRROR_BIT | seq, &json) {
                    // Not marked mirrored: the consumer starts again from here.
                    return Err(format!("storing audit entry {seq}: {e}"));
                }
            }
            Err(e) => tracing::error!(seq, error = %e, "undecodable audit entry; skipped"),
        }
        shared.applied.send_replace(seq);
    }
}

impl SharedAudit {
    /// Append to the cluster's audit stream; answered once JetStream acknowledged it (a 503
    /// otherwise) and, within the ack timeout, mirrored here (so this replica lists it at once).
    pub(crate) async fn append(
        &self,
        _log: &AuditLog,
        key_id: &str,
        change: Change,
    ) -> Result<AuditEntry, EngineError> {
        let mut entry = AuditEntry {
            seq: 0,
            at_ms: crate::engine::now_ms(),
            key_id: key_id.to_string(),
            action: change.action,
            campaign: change.campaign,
            target: change.target,
            before: change.before,
            after: change.after,
            replica: Some(self.node.clone()),
        };
        let json = serde_json::to_vec(&entry).expect("JSON encoding of an audit entry");
        let unavailable = |e: &dyn std::fmt::Display| EngineError::Unavailable {
            message: format!("the cluster's audit stream did not take the entry: {e}"),
        };
        let ack = self
            .js
            .publish(self.subject.clone(), json.into())
            .await
            .map_err(|e| unavailable(&e))?
            .await
            .map_err(|e| unavailable(&e))?;
        entry.seq = ack.sequence;
        let mut rx = self.applied.subscribe();
        let mirrored = async {
            while *rx.borrow_and_update() < ack.sequence {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        };
        if tokio::time::timeout(self.timeout, mirrored).await.is_err() {
            tracing::warn!(
                seq = ack.sequence,
                "audit entry acknowledged by the cluster but not mirrored here yet"
            );
        }
        Ok(entry)
    }
}
