//! HTTP API. One module per area, each with `configure`; handlers only extract, call the engine
//! and map the result.

pub mod admin_api;
pub mod audit_api;
pub mod auth;
pub mod body;
pub mod control_api;
pub mod decide_api;
pub mod error;
pub mod keys_api;
pub mod ope_api;
pub mod openapi;
pub mod ops_api;
pub mod personalizer;
pub mod plugins_api;
pub mod query;
pub mod reports_api;
pub mod send_time_api;
pub mod shoppers_api;
pub mod transport;
pub mod ui;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
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
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(query::config());
    decide_api::configure(cfg);
    admin_api::configure(cfg);
    ops_api::configure(cfg);
    plugins_api::configure(cfg);
    ope_api::configure(cfg);
    keys_api::configure(cfg);
    audit_api::configure(cfg);
    control_api::configure(cfg);
    reports_api::configure(cfg);
    personalizer::configure(cfg);
    shoppers_api::configure(cfg);
    send_time_api::configure(cfg);
    ui::configure(cfg);
    openapi::configure(cfg);
}

/// JSON 404 for unknown routes.
pub async fn not_found() -> HttpResponse {
    error::plain(StatusCode::NOT_FOUND, "not_found", "no such route")
}
