//! The audit log: every admin change, who made it (key id), when, and the state before and after.
//! Append-only (tree `audit`); the store offers no way to change or remove an entry.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::EngineError;
use crate::store::{Store, StoreError};

/// One admin change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: u64,
    /// The key that made the change (`bootstrap` for the bootstrap key).
    pub key_id: String,
    /// What was done, e.g. `campaign.update`, `campaign.holdout`, `key.create`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// The thing changed, when it is not the campaign itself (a key id, a route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub before: Value,
    pub after: Value,
    /// Cluster mode: the replica that wrote the entry (`seq` is then its position in the
    /// cluster's audit stream, the same on every replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// A change about to be appended.
#[derive(Debug, Clone)]
pub struct Change {
    pub action: String,
    pub campaign: Option<String>,
    pub target: Option<String>,
    pub before: Value,
    pub after: Value,
}

/// Appends and reads audit entries.
pub struct AuditLog {
    store: Arc<dyn Store>,
    /// Cluster mode: entries go to the cluster's audit stream (`cluster/audit.rs`).
    pub(crate) shared: std::sync::OnceLock<crate::cluster::audit::SharedAudit>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

/// Most entries one listing returns.
pub const MAX_LIMIT: usize = 1_000;

impl AuditLog {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            shared: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Append durably: returns once the entry is flushed (cluster mode: once the cluster's
    /// audit stream acknowledged it and this replica mirrored it).
    pub async fn append(&self, key_id: &str, change: Change) -> Result<AuditEntry, EngineError> {
        if let Some(shared) = self.shared.get() {
            return shared.append(self, key_id, change).await;
        }
        let entry = AuditEntry {
            seq: self.store.next_seq()?,
            at_ms: crate::engine::now_ms(),
            key_id: key_id.to_string(),
            action: change.action,
            campaign: change.campaign,
            target: change.target,
            before: change.before,
            after: change.after,
            replica: None,
        };
        let json = serde_json::to_vec(&entry).expect("JSON encoding of an audit entry");
        self.store.append_audit(entry.seq, &json)?;
        self.store.flush().await?;
        Ok(entry)
    }

    /// Newest first, at most `limit`, optionally only one campaign's.
    pub fn list(
        &self,
        campaign: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, EngineError> {
        let mut out = Vec::new();
        for json in self.store.audit_rev() {
            let json = json?;
            let e: AuditEntry = serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt {
                what: "audit entry",
                message: e.to_string(),
            })?;
            if campaign.is_some_and(|c| e.campaign.as_deref() != Some(c)) {
                continue;
            }
            out.push(e);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}
