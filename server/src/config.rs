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
    pub transport: TransportSettings,
    pub rate_limits: RateLimitSettings,
    pub cluster: crate::cluster::ClusterSettings,
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
    /// Log retention in days (docs/security/memory.md): a campaign's decisions, rewards and the
    /// keys kept about their events are deleted once older than this and older than the
    /// campaign's return window, after its learned state is snapshotted. 0 keeps logs forever.
    pub log_retention_days: f64,
    /// How often the retention task looks for expired log entries, in milliseconds.
    pub log_retention_interval_ms: u64,
    /// Compress sled's pages with zstd (docs/event-log.md#compressed-pages): about half the
    /// data directory per decision, for ~10 µs of CPU per page sled writes (a third less
    /// mixed throughput on two cores). Applies to a data directory when it is created; one
    /// created otherwise keeps its setting.
    pub compress_pages: bool,
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

/// Connection and request limits (docs/security/transport.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportSettings {
    /// Time a new connection has to send a complete request head, and the head of every later
    /// request on it, in milliseconds; past it the connection is closed (408 where possible).
    pub request_head_timeout_ms: u64,
    /// Time a request has, from its head, to deliver its whole body, in milliseconds; past it
    /// the request is answered 408 `body_timeout` and the connection closed.
    pub body_timeout_ms: u64,
    /// Idle time an open keep-alive connection is kept between requests, in milliseconds;
    /// 0 disables keep-alive (one request per connection).
    pub keep_alive_ms: u64,
    /// Time allowed for a connection to close after its last response, in milliseconds.
    pub disconnect_timeout_ms: u64,
    /// Open connections per worker; past it a worker stops accepting until one closes.
    /// 0: derived from the process's file-descriptor limit (at most 25,000 per worker).
    pub max_connections: usize,
    /// Pending-connection queue of the listening socket (the kernel caps it at `somaxconn`).
    pub backlog: u32,
    /// Requests being processed at once (bodies complete, handler running) past which new ones
    /// are answered 503 `overloaded` with `Retry-After`; `/healthz` and `/readyz` never count.
    pub max_in_flight: usize,
    /// The `Retry-After` of an `overloaded` 503, in seconds.
    pub overload_retry_after_s: u64,
}

/// Requests per second with a burst, per API key and per campaign (docs/security/transport.md).
/// A rate of 0 turns that limit off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Sustained requests per second of one API key; 0: unlimited.
    pub key_per_second: f64,
    /// Requests one API key may send at once after being idle.
    pub key_burst: u32,
    /// Sustained requests per second to one campaign, all keys together; 0: unlimited.
    pub campaign_per_second: f64,
    /// Requests one campaign may receive at once after being idle.
    pub campaign_burst: u32,
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

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            request_head_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            keep_alive_ms: 5_000,
            disconnect_timeout_ms: 1_000,
            max_connections: 0,
            backlog: 2_048,
            max_in_flight: 1_024,
            overload_retry_after_s: 1,
        }
    }
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            key_per_second: 2_000.0,
            key_burst: 4_000,
            campaign_per_second: 0.0,
            campaign_burst: 4_000,
        }
    }
}

/// Default sled page cache: enough for the hot tail of the logs and the open reward windows;
/// a whole-log scan (export, evaluation, reports) cycles through it instead of growing.
pub const DEFAULT_CACHE_CAPACITY_BYTES: u64 = 64 << 20;

/// Smallest accepted page cache.
pub const MIN_CACHE_CAPACITY_BYTES: u64 = 1 << 20;

/// Default log retention: 90 days (Personalizer's default data retention).
pub const DEFAULT_LOG_RETENTION_DAYS: f64 = 90.0;
/// Longest log retention accepted (other than 0, forever): 100 years.
pub const MAX_LOG_RETENTION_DAYS: f64 = 36_500.0;

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./tailor-data"),
            flush_every_ms: 200,
            cache_capacity_bytes: DEFAULT_CACHE_CAPACITY_BYTES,
            log_retention_days: DEFAULT_LOG_RETENTION_DAYS,
            log_retention_interval_ms: 3_600_000,
            compress_pages: false,
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
        let days = self.storage.log_retention_days;
        if !(days.is_finite() && (0.0..=MAX_LOG_RETENTION_DAYS).contains(&days)) {
            return Err(invalid(
                "storage.log_retention_days",
                "must be 0 (keep logs forever) or a positive number of days, at most 36500",
            ));
        }
        if self.storage.log_retention_interval_ms == 0 {
            return Err(invalid(
                "storage.log_retention_interval_ms",
                "must be positive",
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
        self.transport.validate()?;
        self.rate_limits.validate()?;
        self.cluster.validate()?;
        Ok(())
    }

    /// The number of HTTP workers the server runs (`server.workers`, 0 meaning one per core).
    pub fn worker_count(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The parsed `server.bind` address.
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.bind.parse().map_err(|e| ConfigError::Invalid {
            field: "server.bind",
            message: format!("{:?} is not ADDR:PORT ({e})", self.server.bind),
        })
    }
}

fn in_range(field: &'static str, value: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&value) {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        field,
        message: format!("{value} is outside {lo}..={hi}"),
    })
}

impl TransportSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        in_range(
            "transport.request_head_timeout_ms",
            self.request_head_timeout_ms,
            100,
            600_000,
        )?;
        in_range(
            "transport.body_timeout_ms",
            self.body_timeout_ms,
            100,
            3_600_000,
        )?;
        in_range("transport.keep_alive_ms", self.keep_alive_ms, 0, 3_600_000)?;
        in_range(
            "transport.disconnect_timeout_ms",
            self.disconnect_timeout_ms,
            0,
            60_000,
        )?;
        in_range(
            "transport.max_connections",
            self.max_connections as u64,
            0,
            1_000_000,
        )?;
        in_range("transport.backlog", u64::from(self.backlog), 1, 65_535)?;
        in_range(
            "transport.max_in_flight",
            self.max_in_flight as u64,
            1,
            1_000_000,
        )?;
        in_range(
            "transport.overload_retry_after_s",
            self.overload_retry_after_s,
            1,
            3_600,
        )
    }
}

impl RateLimitSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        for (field, rate) in [
            ("rate_limits.key_per_second", self.key_per_second),
            ("rate_limits.campaign_per_second", self.campaign_per_second),
        ] {
            // Below one request an hour the limiter's arithmetic is still exact, but such a
            // setting is a typo for "off" (0) far more often than an intent.
            if !(rate == 0.0 || (1.0 / 3_600.0..=1_000_000.0).contains(&rate)) {
                return Err(ConfigError::Invalid {
                    field,
                    message: format!(
                        "{rate} is neither 0 (off) nor within 0.000278..=1000000 (one an hour to a million a second)"
                    ),
                });
            }
        }
        in_range(
            "rate_limits.key_burst",
            u64::from(self.key_burst),
            1,
            10_000_000,
        )?;
        in_range(
            "rate_limits.campaign_burst",
            u64::from(self.campaign_burst),
            1,
            10_000_000,
        )
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
        for bad in [-1.0, f64::NAN, f64::INFINITY, MAX_LOG_RETENTION_DAYS + 1.0] {
            let mut s = Settings::default();
            s.storage.log_retention_days = bad;
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains("storage.log_retention_days"), "{bad}: {e}");
        }
        for good in [0.0, 0.00001, 30.0, MAX_LOG_RETENTION_DAYS] {
            let mut s = Settings::default();
            s.storage.log_retention_days = good;
            s.validate().unwrap();
        }
        let mut s = Settings::default();
        s.storage.log_retention_interval_ms = 0;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("storage.log_retention_interval_ms"), "{e}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn transport_and_rate_limits_from_env() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TAILOR__TRANSPORT__BODY_TIMEOUT_MS", "2000");
            jail.set_env("TAILOR__TRANSPORT__MAX_IN_FLIGHT", "3");
            jail.set_env("TAILOR__RATE_LIMITS__KEY_PER_SECOND", "0.5");
            jail.set_env("TAILOR__RATE_LIMITS__CAMPAIGN_BURST", "7");
            let s = Settings::load(None).unwrap();
            assert_eq!(s.transport.body_timeout_ms, 2_000);
            assert_eq!(s.transport.max_in_flight, 3);
            assert_eq!(s.rate_limits.key_per_second, 0.5);
            assert_eq!(s.rate_limits.campaign_burst, 7);
            Ok(())
        });
    }

    #[test]
    fn transport_ranges_name_the_field() {
        let field_of = |edit: &dyn Fn(&mut Settings)| {
            let mut s = Settings::default();
            edit(&mut s);
            s.validate().unwrap_err().to_string()
        };
        let e = field_of(&|s| s.transport.body_timeout_ms = 10);
        assert!(
            e.contains("transport.body_timeout_ms") && e.contains("100..="),
            "{e}"
        );
        let e = field_of(&|s| s.transport.request_head_timeout_ms = 0);
        assert!(e.contains("transport.request_head_timeout_ms"), "{e}");
        let e = field_of(&|s| s.transport.max_in_flight = 0);
        assert!(e.contains("transport.max_in_flight"), "{e}");
        let e = field_of(&|s| s.transport.backlog = 0);
        assert!(e.contains("transport.backlog"), "{e}");
        let e = field_of(&|s| s.rate_limits.key_per_second = -1.0);
        assert!(e.contains("rate_limits.key_per_second"), "{e}");
        let e = field_of(&|s| s.rate_limits.campaign_per_second = f64::NAN);
        assert!(e.contains("rate_limits.campaign_per_second"), "{e}");
        let e = field_of(&|s| s.rate_limits.key_burst = 0);
        assert!(e.contains("rate_limits.key_burst"), "{e}");
        // Off is a valid rate.
        let mut s = Settings::default();
        s.rate_limits.key_per_second = 0.0;
        s.validate().unwrap();
    }
}
