//! `/admin/v1/shoppers`: what is stored about a shopper, and erasing it (privacy).

use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use super::auth;
use super::auth::{Access, Authorized, Routes, Scope};
use super::error::ApiError;
use super::status;
use crate::audit::Change;

pub fn configure(r: &mut Routes) {
    // A shopper's state spans campaigns: server-wide.
    r.get(
        "/admin/v1/shoppers/{id}",
        Access::viewer(Scope::Server),
        get,
    )
    .delete(
        "/admin/v1/shoppers/{id}",
        Access::editor(Scope::Server),
        delete,
    );
}

#[utoipa::path(
    get,
    path = "/admin/v1/shoppers/{id}",
    operation_id = "get_shopper",
    tag = "shoppers",
    summary = "What is stored about a shopper (send-time state per campaign)",
    params(("id" = String, Path, description = "Shopper id")),
    responses(
        (status = 200, description = "`{shopper_id, campaigns: [{campaign, last_send_at, last_seen_at, slots_learned, trials, state_bytes}]}`"),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign or shopper", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn get(state: Authorized, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(status::ok(state.engine.shopper(&id)?))
}

/// The audit log is append-only, so it records a digest of the shopper id, never the id.
fn digest(id: &str) -> String {
    let d = Sha256::digest(id.as_bytes());
    format!(
        "shopper:sha256:{}",
        d.iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

#[utoipa::path(
    delete,
    path = "/admin/v1/shoppers/{id}",
    operation_id = "delete_shopper",
    tag = "shoppers",
    summary = "Erase a shopper everywhere (idempotent, audited)",
    params(("id" = String, Path, description = "Shopper id")),
    responses(
        (status = 200, description = "`{deleted: true, campaign_states}`; also on a repeat"),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign or shopper", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn delete(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let removed = state.engine.delete_shopper_replicated(&id).await?;
    state.engine.durable().await?;
    let change = Change {
        action: "shopper.delete".into(),
        campaign: None,
        target: Some(digest(&id)),
        before: serde_json::json!({ "campaign_states": removed }),
        after: serde_json::Value::Null,
    };
    auth::audit(&state, &req, change).await?;
    Ok(status::ok(
        serde_json::json!({ "deleted": true, "campaign_states": removed }),
    ))
}
