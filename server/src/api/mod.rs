//! HTTP API. One module per area, each with `configure`; handlers only extract, call the engine
//! and map the result.

pub mod adjust_api;
pub mod admin_api;
pub mod audit_api;
pub mod auth;
pub mod autopilot_api;
pub mod body;
pub mod cluster_api;
pub mod control_api;
pub mod csv;
pub mod decide_api;
pub mod error;
pub mod keys_api;
pub mod ope_api;
pub mod openapi;
pub mod ops_api;
pub mod path;
pub mod personalizer;
pub mod plugins_api;
pub mod preview_api;
pub mod query;
pub mod reports_api;
pub mod send_time_api;
pub mod shoppers_api;
pub mod status;
pub mod transport;
pub mod ui;
pub mod validate_api;

use std::sync::Arc;

use actix_web::web;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::audit::AuditLog;
use crate::engine::Engine;
use crate::keys::KeyRing;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub body_limit: usize,
    pub metrics: PrometheusHandle,
    pub keys: Arc<KeyRing>,
    pub audit: Arc<AuditLog>,
    /// In-flight bound, body deadline and rate limits (`api::transport`, `crate::limits`).
    pub transport: transport::TransportState,
}

/// Register every route.
/// Register every route, each with its declared [`auth::Access`].
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(query::config());
    let mut r = auth::Routes::new(cfg);
    decide_api::configure(&mut r);
    adjust_api::configure(&mut r);
    admin_api::configure(&mut r);
    preview_api::configure(&mut r);
    cluster_api::configure(&mut r);
    ops_api::configure(&mut r);
    plugins_api::configure(&mut r);
    ope_api::configure(&mut r);
    autopilot_api::configure(&mut r);
    keys_api::configure(&mut r);
    audit_api::configure(&mut r);
    control_api::configure(&mut r);
    reports_api::configure(&mut r);
    shoppers_api::configure(&mut r);
    send_time_api::configure(&mut r);
    validate_api::configure(&mut r);
    ui::configure(&mut r);
    openapi::configure(&mut r);
    personalizer::configure(cfg);
}

/// JSON 404 for unknown routes.
pub async fn not_found() -> Result<actix_web::HttpResponse, error::ApiError> {
    Err(error::TransportError::NotFound {
        message: "no such route".into(),
    }
    .into())
}
