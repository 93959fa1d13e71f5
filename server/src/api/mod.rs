//! HTTP API. One module per area, each with `configure`; handlers only extract, call the engine
//! and map the result.

pub mod admin_api;
pub mod body;
pub mod decide_api;
pub mod error;
pub mod ops_api;
pub mod plugins_api;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::engine::Engine;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub body_limit: usize,
    pub metrics: PrometheusHandle,
}

/// Register every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    decide_api::configure(cfg);
    admin_api::configure(cfg);
    ops_api::configure(cfg);
    plugins_api::configure(cfg);
}

/// JSON 404 for unknown routes.
pub async fn not_found() -> HttpResponse {
    error::plain(StatusCode::NOT_FOUND, "not_found", "no such route")
}
