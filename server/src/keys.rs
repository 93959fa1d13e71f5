//! API keys: roles, campaign scope, hashed storage, constant-time checks.
//!
//! A key is `tlr_<id>_<secret>`; only the SHA-256 of the whole key is stored (tree `api_keys`),
//! so the secret is shown once, at creation. The bootstrap editor key (from `--admin-key`,
//! `TAILOR_ADMIN_KEY`, `[auth] admin_key`, or generated into `<data_dir>/admin.key`) is never
//! stored; it authenticates as the key id `bootstrap`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::EngineError;
use crate::store::{Store, StoreError};

/// What a key may do. Ordered: each role can do what the ones before it can.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Decide and reward only; never the admin API.
    Decide,
    /// Read the admin API (GET).
    Viewer,
    /// Read and change the admin API.
    Editor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Decide => "decide",
            Role::Viewer => "viewer",
            Role::Editor => "editor",
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub role: Role,
    /// When set, the key only reaches this campaign.
    pub campaign: Option<String>,
}

/// A stored key. `hash` is the hex SHA-256 of the whole key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub hash: String,
    pub created_ms: u64,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<u64>,
}

/// A key as listed (no hash, no secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub created_ms: u64,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<u64>,
}

impl From<&KeyRecord> for KeyInfo {
    fn from(r: &KeyRecord) -> Self {
        Self {
            id: r.id.clone(),
            role: r.role,
            campaign: r.campaign.clone(),
            label: r.label.clone(),
            created_ms: r.created_ms,
            created_by: r.created_by.clone(),
            revoked_ms: r.revoked_ms,
        }
    }
}

/// The id of the bootstrap editor key.
pub const BOOTSTRAP_ID: &str = "bootstrap";
const PREFIX: &str = "tlr_";

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equality whose time does not depend on where the inputs differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex(&buf)
}

/// Every key the server accepts.
pub struct KeyRing {
    store: Arc<dyn Store>,
    keys: RwLock<HashMap<String, KeyRecord>>,
    bootstrap: [u8; 32],
    /// Cluster mode: the key-value bucket every replica's keys live in (`cluster/keys.rs`).
    pub(crate) shared: std::sync::OnceLock<async_nats::jetstream::kv::Store>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Load stored keys; `bootstrap` is the editor key from the configuration.
    pub fn open(store: Arc<dyn Store>, bootstrap: &str) -> Result<Self, StoreError> {
        let mut keys = HashMap::new();
        for json in store.keys()? {
            let r: KeyRecord = serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt {
                what: "api key",
                message: e.to_string(),
            })?;
            keys.insert(r.id.clone(), r);
        }
        Ok(Self {
            store,
            keys: RwLock::new(keys),
            bootstrap: sha256(bootstrap.as_bytes()),
            shared: std::sync::OnceLock::new(),
        })
    }

    /// Who `token` is, if anyone.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let hash = sha256(token.as_bytes());
        if let Some(id) = token
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id)
        {
            if let Some(r) = self.keys.read().get(id) {
                let stored = hex_decode(&r.hash);
                if r.revoked_ms.is_none() && ct_eq(&stored, &hash) {
                    return Some(Principal {
                        key_id: r.id.clone(),
                        role: r.role,
                        campaign: r.campaign.clone(),
                    });
                }
                return None;
            }
        }
        ct_eq(&self.bootstrap, &hash).then(|| Principal {
            key_id: BOOTSTRAP_ID.to_string(),
            role: Role::Editor,
            campaign: None,
        })
    }

    /// Create a key; returns its record and the secret (shown once).
    pub fn create(
        &self,
        role: Role,
        campaign: Option<String>,
        label: Option<String>,
        created_by: &str,
    ) -> Result<(KeyInfo, String), EngineError> {
        let (record, key) = self.prepare(role, campaign, label, created_by)?;
        let info = KeyInfo::from(&record);
        self.insert(record)?;
        Ok((info, key))
    }

    /// A new key's record (checked) and its secret, not stored yet.
    pub(crate) fn prepare(
        &self,
        role: Role,
        campaign: Option<String>,
        label: Option<String>,
        created_by: &str,
    ) -> Result<(KeyRecord, String), EngineError> {
        if let Some(c) = &campaign {
            crate::campaign::validate_id("campaign", c)?;
        }
        if let Some(l) = &label {
            if l.len() > 200 {
                return Err(EngineError::invalid("label", "at most 200 characters"));
            }
        }
        let id = random_hex(6);
        let key = format!("{PREFIX}{id}_{}", random_hex(24));
        let record = KeyRecord {
            id: id.clone(),
            role,
            campaign,
            label,
            hash: hex(&sha256(key.as_bytes())),
            created_ms: crate::engine::now_ms(),
            created_by: created_by.to_string(),
            revoked_ms: None,
        };
        Ok((record, key))
    }

    /// Store and serve a key record.
    pub(crate) fn insert(&self, record: KeyRecord) -> Result<(), StoreError> {
        self.store.put_key(&record.id, &to_json(&record))?;
        self.keys.write().insert(record.id.clone(), record);
        Ok(())
    }

    /// Take a record another replica wrote (cluster mode). A revocation is never undone: a
    /// record revoked here stays revoked. Returns whether anything changed.
    pub(crate) fn merge(&self, mut record: KeyRecord) -> Result<bool, StoreError> {
        let mut keys = self.keys.write();
        if let Some(have) = keys.get(&record.id) {
            if record.revoked_ms.is_none() {
                record.revoked_ms = have.revoked_ms;
            }
            if *have == record {
                return Ok(false);
            }
        }
        self.store.put_key(&record.id, &to_json(&record))?;
        keys.insert(record.id.clone(), record);
        Ok(true)
    }

    /// A stored key's record.
    pub(crate) fn record(&self, id: &str) -> Option<KeyRecord> {
        self.keys.read().get(id).cloned()
    }

    /// Every stored key's record.
    pub(crate) fn records(&self) -> Vec<KeyRecord> {
        self.keys.read().values().cloned().collect()
    }

    /// Revoke a key; it stops working at once. Revoking twice keeps the first time.
    pub fn revoke(&self, id: &str) -> Result<(KeyInfo, KeyInfo), EngineError> {
        let mut keys = self.keys.write();
        let r = keys
            .get_mut(id)
            .ok_or_else(|| EngineError::KeyNotFound { id: id.to_string() })?;
        let before = KeyInfo::from(&*r);
        let mut updated = r.clone();
        updated.revoked_ms.get_or_insert_with(crate::engine::now_ms);
        self.store.put_key(id, &to_json(&updated))?;
        *r = updated;
        Ok((before, KeyInfo::from(&*r)))
    }

    /// Every key, oldest first, without secrets.
    pub fn list(&self) -> Vec<KeyInfo> {
        let mut v: Vec<KeyInfo> = self.keys.read().values().map(KeyInfo::from).collect();
        v.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.id.cmp(&b.id)));
        v
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON encoding of a key record")
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// The bootstrap key: configured, or read from / generated into `<data_dir>/admin.key`.
/// Returns the key and, when it came from the file, its path (to log).
pub fn bootstrap_key(
    configured: Option<&str>,
    data_dir: &Path,
) -> std::io::Result<(String, Option<PathBuf>)> {
    if let Some(k) = configured {
        return Ok((k.to_string(), None));
    }
    let path = data_dir.join("admin.key");
    match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => return Ok((k.trim().to_string(), Some(path))),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key = format!("{PREFIX}admin_{}", random_hex(24));
    write_private(&path, &key)?;
    Ok((key, Some(path)))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[test]
    fn create_authenticate_revoke_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20, 100).unwrap());
        let ring = KeyRing::open(store.clone(), "the-bootstrap-key-0123").unwrap();
        assert_eq!(
            ring.authenticate("the-bootstrap-key-0123").unwrap().role,
            Role::Editor
        );
        assert!(ring.authenticate("the-bootstrap-key-0124").is_none());
        let (info, key) = ring
            .create(Role::Decide, Some("home".into()), None, BOOTSTRAP_ID)
            .unwrap();
        let p = ring.authenticate(&key).unwrap();
        assert_eq!(p.key_id, info.id);
        assert_eq!(p.campaign.as_deref(), Some("home"));
        // A wrong secret under a real id is refused.
        let forged = format!("tlr_{}_{}", info.id, "0".repeat(48));
        assert!(ring.authenticate(&forged).is_none());
        let ring2 = KeyRing::open(store.clone(), "the-bootstrap-key-0123").unwrap();
        assert!(ring2.authenticate(&key).is_some());
        ring2.revoke(&info.id).unwrap();
        assert!(ring2.authenticate(&key).is_none());
        let ring3 = KeyRing::open(store, "x-bootstrap-key-0123").unwrap();
        assert!(ring3.authenticate(&key).is_none());
        assert!(ring3.list()[0].revoked_ms.is_some());
    }

    #[test]
    fn generated_bootstrap_key_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, path) = bootstrap_key(None, dir.path()).unwrap();
        let path = path.unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (k2, _) = bootstrap_key(None, dir.path()).unwrap();
        assert_eq!(k1, k2);
        assert_eq!(
            bootstrap_key(Some("configured-key-0123"), dir.path())
                .unwrap()
                .0,
            "configured-key-0123"
        );
    }
}
