//! Layered configuration: compiled-in defaults, an optional TOML file, then `TAILOR__SECTION__KEY`
//! environment variables, then command-line flags. Validated once at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Everything the server reads at start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub engine: EngineSettings,
    pub plugins: PluginSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port (the chosen address is logged).
    pub bind: String,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Largest accepted request body in bytes.
    pub body_limit_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Directory of the embedded sled store.
    pub data_dir: PathBuf,
    /// Background flush interval for non-reward writes (decisions), in milliseconds.
    pub flush_every_ms: u64,
    /// sled page cache size in bytes, counted as sled counts it (the on-disk size of the cached
    /// pages; their in-memory form takes about twice that, see docs/security/memory.md).
    pub cache_capacity_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// How often expired reward windows are closed (default rewards applied), in milliseconds.
    pub sweep_interval_ms: u64,
    /// How often learned state is snapshotted, in milliseconds.
    pub snapshot_interval_ms: u64,
    /// Keep the full request (context and candidates) in the decision log.
    pub log_candidates: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginSettings {
    /// Directory scanned for plugin libraries; none means no plugins.
    pub dir: Option<PathBuf>,
}

/// API keys (see docs/control-room.md).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The bootstrap editor key (`--admin-key`, `TAILOR_ADMIN_KEY`). None: the first start
    /// generates one into `<data_dir>/admin.key`. Never printed or logged.
    #[serde(skip_serializing)]
    pub admin_key: Option<String>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("admin_key", &self.admin_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `tracing` filter directive, e.g. `info` or `tailor_server=debug`; `RUST_LOG` wins.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            workers: 0,
            body_limit_bytes: 1 << 20,
        }
    }
}

/// Default sled page cache: enough for the hot tail of the logs and the open reward windows;
/// a whole-log scan (export, evaluation, reports) cycles through it instead of growing.
pub const DEFAULT_CACHE_CAPACITY_BYTES: u64 = 64 << 20;

/// Smallest accepted page cache.
pub const MIN_CACHE_CAPACITY_BYTES: u64 = 1 << 20;

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./tailor-data"),
            flush_every_ms: 200,
            cache_capacity_bytes: DEFAULT_CACHE_CAPACITY_BYTES,
        }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            sweep_interval_ms: 250,
            snapshot_interval_ms: 5_000,
            log_candidates: true,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// A setting that cannot be used, named by its dotted path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl Settings {
    /// Defaults, then `file` if given, then `TAILOR__*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid {
                    field: "--config",
                    message: format!("{} does not exist", file.display()),
                });
            }
            fig = fig.merge(Toml::file(file));
        }
        fig = fig.merge(Env::prefixed("TAILOR__").split("__"));
        let settings: Settings = fig.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Check ranges and shapes that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| ConfigError::Invalid {
            field,
            message: message.to_string(),
        };
        self.bind_addr()?;
        if self.server.body_limit_bytes < 1024 {
            return Err(invalid("server.body_limit_bytes", "must be at least 1024"));
        }
        if self.storage.cache_capacity_bytes < MIN_CACHE_CAPACITY_BYTES {
            return Err(invalid(
                "storage.cache_capacity_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        if self.storage.flush_every_ms == 0 {
            return Err(invalid("storage.flush_every_ms", "must be positive"));
        }
        if self.engine.sweep_interval_ms == 0 {
            return Err(invalid("engine.sweep_interval_ms", "must be positive"));
        }
        if self.engine.snapshot_interval_ms == 0 {
            return Err(invalid("engine.snapshot_interval_ms", "must be positive"));
        }
        if let Some(k) = &self.auth.admin_key {
            if k.len() < 16 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(
                    "auth.admin_key",
                    "must be at least 16 visible ASCII characters",
                ));
            }
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "must be \"text\" or \"json\""));
        }
        Ok(())
    }

    /// The parsed `server.bind` address.
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.bind.parse().map_err(|e| ConfigError::Invalid {
            field: "server.bind",
            message: format!("{:?} is not ADDR:PORT ({e})", self.server.bind),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn file_then_env_override() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "t.toml",
                "[server]\nbind = \"127.0.0.1:9000\"\n[engine]\nsweep_interval_ms = 10\n",
            )?;
            jail.set_env("TAILOR__SERVER__BIND", "127.0.0.1:9100");
            let s = Settings::load(Some(Path::new("t.toml"))).unwrap();
            assert_eq!(s.server.bind, "127.0.0.1:9100");
            assert_eq!(s.engine.sweep_interval_ms, 10);
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut s = Settings::default();
        s.server.bind = "nonsense".into();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("server.bind"), "{e}");
        let mut s = Settings::default();
        s.log.format = "xml".into();
        assert!(s.validate().unwrap_err().to_string().contains("log.format"));
        // sled panics on a page cache under 256 bytes; anything under 1 MiB is refused by name.
        let mut s = Settings::default();
        s.storage.cache_capacity_bytes = 100;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("storage.cache_capacity_bytes"), "{e}");
        s.storage.cache_capacity_bytes = MIN_CACHE_CAPACITY_BYTES;
        s.validate().unwrap();
    }
}
