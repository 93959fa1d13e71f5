//! `/admin/v1/plugins`: what the plugin host loaded, and reloading it.

use actix_web::{web, HttpResponse};

use super::auth::{Access, Authorized, Routes, Scope};
use super::error::{ApiError, TransportError};
use super::status;

pub fn configure(r: &mut Routes) {
    r.get("/admin/v1/plugins", Access::viewer(Scope::Server), list)
        .post(
            "/admin/v1/plugins/reload",
            Access::editor(Scope::Server),
            reload,
        );
}

/// Every loaded plugin (current and older versions, with failure counts and quarantine reason)
/// and every file that failed to load.
#[utoipa::path(
    get,
    path = "/admin/v1/plugins",
    operation_id = "list_plugins",
    tag = "plugins",
    summary = "Loaded plugins and load failures",
    responses(
        (status = 200, body = Object),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn list(state: Authorized) -> HttpResponse {
    let host = state.engine.plugins();
    status::ok(serde_json::json!({
        "dir": host.dir(),
        "generation": host.generation(),
        "plugins": host.plugins(),
    }))
}

/// Loads new or changed libraries; campaigns move to the new current versions.
#[utoipa::path(
    post,
    path = "/admin/v1/plugins/reload",
    operation_id = "reload_plugins",
    tag = "plugins",
    summary = "Load new or changed plugin libraries",
    responses(
        (status = 200, body = Object),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn reload(state: Authorized) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let report = web::block(move || engine.reload_plugins())
        .await
        .map_err(|e| TransportError::Internal {
            message: e.to_string(),
        })?;
    Ok(status::ok(report))
}
