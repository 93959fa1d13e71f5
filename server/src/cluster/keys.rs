//! Cluster mode: API keys shared by every replica (docs/scale-out.md).
//!
//! Key records — the SHA-256 of the key, never the secret — live in the key-value bucket
//! `{stream}_keys` (one entry per key id). A replica writes a new or revoked key there first and
//! then serves it; every replica watches the bucket and takes each record into its own key ring
//! (and its local store, a cache) within milliseconds. A revocation is never undone by an older
//! record. At start a replica uploads the keys its data directory held that the bucket lacks
//! (keys made in single-node mode), then loads the bucket.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation};
use futures_util::StreamExt;

use super::{js_err, Cluster, ClusterError};
use crate::error::EngineError;
use crate::keys::{KeyInfo, KeyRecord, KeyRing, Role};

/// The bucket of a cluster's keys.
pub fn bucket_name(cluster: &Cluster) -> String {
    format!("{}_keys", cluster.settings().stream)
}

fn entry_key(id: &str) -> String {
    // Key ids are hex; anything else is hex-encoded like config keys.
    super::event::config_key(id).replacen("c_", "k_", 1)
}

fn unavailable(e: &dyn std::fmt::Display) -> EngineError {
    EngineError::Unavailable {
        message: format!("the cluster's key bucket did not take the key: {e}"),
    }
}

/// Open (or create) the key bucket, share the local keys, load the bucket into `keys`, and
/// start watching it.
pub async fn start(cluster: &Arc<Cluster>, keys: &Arc<KeyRing>) -> Result<(), ClusterError> {
    let name = bucket_name(cluster);
    let bucket = super::kv_bucket(
        cluster.js(),
        cluster.settings(),
        "key bucket",
        kv::Config {
            bucket: name,
            history: 1,
            ..Default::default()
        },
    )
    .await?;
    for record in keys.records() {
        let json = serde_json::to_vec(&record).expect("JSON encoding of a key record");
        match bucket.create(entry_key(&record.id), json.into()).await {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), CreateErrorKind::AlreadyExists) => {}
            Err(e) => return Err(js_err("key bucket")(&e)),
        }
    }
    let mut names = bucket.keys().await.map_err(|e| js_err("key bucket")(&e))?;
    while let Some(name) = names.next().await {
        let name = name.map_err(|e| js_err("key bucket")(&e))?;
        if let Ok(Some(value)) = bucket.get(&name).await {
            take(keys, &value);
        }
    }
    let _ = keys.shared.set(bucket.clone());
    tokio::spawn(watch(bucket, keys.clone()));
    Ok(())
}

fn take(keys: &KeyRing, value: &[u8]) {
    match serde_json::from_slice::<KeyRecord>(value) {
        Ok(record) => {
            let id = record.id.clone();
            match keys.merge(record) {
                Ok(true) => tracing::info!(key = %id, "API key taken from the cluster"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "storing a shared API key failed"),
            }
        }
        Err(e) => tracing::error!(error = %e, "undecodable key record in the key bucket; skipped"),
    }
}

/// Apply every change of the bucket, forever (a broken watch is opened again).
async fn watch(bucket: kv::Store, keys: Arc<KeyRing>) {
    loop {
        match bucket.watch_with_history(">").await {
            Ok(mut entries) => {
                while let Some(entry) = entries.next().await {
                    match entry {
                        Ok(entry) if matches!(entry.operation, Operation::Put) => {
                            take(&keys, &entry.value)
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "watching the key bucket failed");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching the key bucket failed"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl KeyRing {
    /// [`KeyRing::create`]; in cluster mode the record goes to the shared bucket first, so every
    /// replica honours the key (503 when the bucket does not take it).
    pub async fn create_replicated(
        &self,
        role: Role,
        campaign: Option<String>,
        label: Option<String>,
        created_by: &str,
    ) -> Result<(KeyInfo, String), EngineError> {
        let Some(bucket) = self.shared.get() else {
            return self.create(role, campaign, label, created_by);
        };
        let (record, key) = self.prepare(role, campaign, label, created_by)?;
        let json = serde_json::to_vec(&record).expect("JSON encoding of a key record");
        bucket
            .create(entry_key(&record.id), json.into())
            .await
            .map_err(|e| unavailable(&e))?;
        let info = KeyInfo::from(&record);
        self.merge(record)?;
        Ok((info, key))
    }

    /// [`KeyRing::revoke`]; in cluster mode through the shared bucket: every replica refuses
    /// the key once its watch delivers the change (milliseconds).
    pub async fn revoke_replicated(&self, id: &str) -> Result<(KeyInfo, KeyInfo), EngineError> {
        let Some(bucket) = self.shared.get() else {
            return self.revoke(id);
        };
        let record = self
            .record(id)
            .ok_or_else(|| EngineError::KeyNotFound { id: id.to_string() })?;
        let before = KeyInfo::from(&record);
        let mut updated = record;
        updated.revoked_ms.get_or_insert_with(crate::engine::now_ms);
        let json = serde_json::to_vec(&updated).expect("JSON encoding of a key record");
        bucket
            .put(entry_key(id), json.into())
            .await
            .map_err(|e| unavailable(&e))?;
        let after = KeyInfo::from(&updated);
        self.merge(updated)?;
        Ok((before, after))
    }
}
