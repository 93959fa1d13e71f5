//! Health, readiness and Prometheus metrics.

use actix_web::HttpResponse;

use super::auth::{Access, Authorized, Routes};
use super::status;

pub fn configure(r: &mut Routes) {
    r.get("/healthz", Access::Public, healthz)
        .get("/readyz", Access::Public, readyz)
        .get("/metrics", Access::Public, metrics);
}

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "ops",
    summary = "Liveness",
    responses(
        (status = 200, body = Object)
    ),
    security(())
)]
async fn healthz() -> HttpResponse {
    status::ok(serde_json::json!({"status": "ok"}))
}

/// Ready once the store answers.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "ops",
    summary = "Readiness (the store answers)",
    responses(
        (status = 200, body = Object),
        (status = 503, body = Object)
    ),
    security(())
)]
async fn readyz(state: Authorized) -> HttpResponse {
    match state.engine.ready() {
        Ok(_) => status::ok(serde_json::json!({"status": "ready"})),
        Err(e) => {
            status::not_ready(serde_json::json!({"status": "unavailable", "error": e.to_string()}))
        }
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "ops",
    summary = "Prometheus metrics",
    responses(
        (status = 200, content_type = "text/plain", body = String)
    ),
    security(())
)]
async fn metrics(state: Authorized) -> HttpResponse {
    status::ok_builder()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
