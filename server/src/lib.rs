//! The Tailor server: an actix-web [`api`] over the decision [`engine`], persisting to an
//! embedded [`store`] (sled). [`run`] wires them together; the `tailor` binary calls it.

pub mod api;
pub mod audit;
pub mod campaign;
pub mod config;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod ope;
pub mod plugins;
pub mod simulate;
pub mod simulate_send_time;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use actix_web::{web, App, HttpServer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::api::AppState;
use crate::config::Settings;
use crate::engine::Engine;
use crate::store::{SledStore, Store};

/// The process-wide Prometheus recorder (metrics are global by design of the `metrics` crate).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .expect("non-empty buckets")
                .install_recorder()
                .expect("the Prometheus recorder is installed once")
        })
        .clone()
}

/// A started server: its address, engine, and the actix handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    pub server: actix_web::dev::Server,
}

/// Open the store, recover state, bind, and return the (not yet awaited) server.
pub fn start(settings: &Settings) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&settings.storage.data_dir)?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open(
        &settings.storage.data_dir,
        settings.storage.cache_capacity_bytes,
        settings.storage.flush_every_ms,
    )?);
    let plugins = Arc::new(match &settings.plugins.dir {
        Some(dir) => plugins::PluginHost::open(dir),
        None => plugins::PluginHost::empty(),
    });
    let (admin_key, key_file) = keys::bootstrap_key(
        settings.auth.admin_key.as_deref(),
        &settings.storage.data_dir,
    )?;
    if let Some(path) = key_file {
        tracing::info!(path = %path.display(), "bootstrap admin key (editor) is in this file");
    }
    let keys = Arc::new(keys::KeyRing::open(store.clone(), &admin_key)?);
    let audit = Arc::new(audit::AuditLog::new(store.clone()));
    let engine = Engine::open_with_plugins(store, settings.engine.clone(), plugins)?;
    engine.spawn_background();
    let state = AppState {
        engine: engine.clone(),
        body_limit: settings.server.body_limit_bytes,
        metrics: metrics_handle(),
        keys,
        audit,
    };
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(api::auth::authorize))
            .app_data(web::Data::new(state.clone()))
            .configure(api::configure)
            .default_service(web::to(api::not_found))
    });
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    let server = server.bind(settings.bind_addr()?)?;
    let addr = server.addrs()[0];
    let server = server.disable_signals().run();
    Ok(Running {
        addr,
        engine,
        server,
    })
}
