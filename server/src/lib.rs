//! The Tailor server: an actix-web [`api`] over the decision [`engine`], persisting to an
//! embedded [`store`] (sled). [`start`] wires them together; `tailor serve` (the `tailor-cli`
//! package) calls it. The library holds only what serves: the simulators are `tailor-sim`, the
//! command-line tools are in `tailor-cli` (docs/crates.md).

pub mod api;
pub mod audit;
pub mod campaign;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod limits;
pub mod merchandising;
pub mod ope;
pub mod plugins;
mod prehashed;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::api::AppState;
use crate::config::{ConfigError, Settings};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::store::{OpenOptions, SledStore, Store, StoreError};

/// How often queued histogram samples are drained into their buckets.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide Prometheus recorder (metrics are global by design of the `metrics` crate).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .expect("non-empty buckets")
                .install_recorder()
                .expect("the Prometheus recorder is installed once");
            // Histogram samples queue in the recorder until they are drained into their buckets,
            // which only rendering `/metrics` or upkeep does: without upkeep, a server nobody
            // scrapes grows by every observation (docs/security/memory.md).
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(METRICS_UPKEEP);
                    upkeep.run_upkeep();
                })
                .expect("spawning the metrics upkeep thread");
            handle
        })
        .clone()
}

/// A started server: its address, engine, and the actix handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    pub server: actix_web::dev::Server,
    /// The API keys and the audit trail (shared through the cluster in cluster mode).
    pub keys: Arc<keys::KeyRing>,
    pub audit: Arc<audit::AuditLog>,
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("creating the data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the bootstrap admin key: {0}")]
    AdminKey(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// [`start`], then in cluster mode join the cluster: returns once this replica has applied
/// the stream up to its end at joining (docs/scale-out.md).
pub async fn start_async(settings: &Settings) -> Result<Running, StartError> {
    let running = start(settings)?;
    if settings.cluster.enabled() {
        let cluster = cluster::Cluster::join(&running.engine, &settings.cluster).await?;
        cluster::keys::start(&cluster, &running.keys).await?;
        cluster::audit::start(&cluster, &running.audit).await?;
    }
    Ok(running)
}

/// Open the store, recover state, bind, and return the (not yet awaited) server.
pub fn start(settings: &Settings) -> Result<Running, StartError> {
    let data_dir = &settings.storage.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open_with(
        &settings.storage.data_dir,
        OpenOptions {
            compress_pages: settings.storage.compress_pages,
            ..OpenOptions::serving(
                settings.storage.cache_capacity_bytes,
                settings.storage.flush_every_ms,
            )
        },
    )?);
    if settings.cluster.enabled() {
        cluster::clear_local_state(&*store)?;
    }
    let plugins = Arc::new(match &settings.plugins.dir {
        Some(dir) => plugins::PluginHost::open(dir),
        None => plugins::PluginHost::empty(),
    });
    let (admin_key, key_file) = keys::bootstrap_key(
        settings.auth.admin_key.as_deref(),
        &settings.storage.data_dir,
    )
    .map_err(StartError::AdminKey)?;
    if let Some(path) = key_file {
        tracing::info!(path = %path.display(), "bootstrap admin key (editor) is in this file");
    }
    let keys = Arc::new(keys::KeyRing::open(store.clone(), &admin_key)?);
    let audit = Arc::new(audit::AuditLog::new(store.clone()));
    let engine = Engine::open_with_plugins(store, settings.engine.clone(), plugins)?;
    engine.spawn_background();
    engine.spawn_retention(engine::RetentionSettings::of(&settings.storage));
    let t = &settings.transport;
    let workers = settings.worker_count();
    let plan = limits::plan_connections(t, workers)?;
    tracing::info!(
        connections_per_worker = plan.per_worker,
        workers,
        open_file_limit = plan.fd_limit,
        "connection limit"
    );
    let state = AppState {
        engine: engine.clone(),
        body_limit: settings.server.body_limit_bytes,
        metrics: metrics_handle(),
        keys: keys.clone(),
        audit: audit.clone(),
        transport: api::transport::TransportState {
            in_flight: limits::InFlight::new(t.max_in_flight, t.overload_retry_after_s),
            body_timeout: Duration::from_millis(t.body_timeout_ms),
            rate_limits: Arc::new(limits::RateLimits::new(&settings.rate_limits)),
        },
    };
    let server = HttpServer::new(move || {
        App::new()
            // Outermost (wrapped last): shed and time bodies before anything else runs.
            .wrap(actix_web::middleware::from_fn(api::transport::admit))
            .app_data(web::Data::new(state.clone()))
            .configure(api::configure)
            .default_service(web::to(api::not_found))
    })
    .workers(workers)
    .client_request_timeout(Duration::from_millis(t.request_head_timeout_ms))
    .client_disconnect_timeout(Duration::from_millis(t.disconnect_timeout_ms))
    .keep_alive(match t.keep_alive_ms {
        0 => actix_web::http::KeepAlive::Disabled,
        ms => actix_web::http::KeepAlive::Timeout(Duration::from_millis(ms)),
    })
    .max_connections(plan.per_worker)
    .backlog(t.backlog);
    let addr = settings.bind_addr()?;
    let server = server
        .bind(addr)
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = server.addrs()[0];
    let server = server.disable_signals().run();
    Ok(Running {
        addr,
        engine,
        server,
        keys,
        audit,
    })
}
