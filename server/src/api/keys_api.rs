//! `/admin/v1/keys`: create (the secret is shown once), list (no secrets), revoke.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::{Access, Authorized, Routes, Scope};
use super::error::ApiError;
use super::status;
use super::{auth, body};
use crate::audit::Change;
use crate::keys::{Principal, Role};

pub fn configure(r: &mut Routes) {
    r.post("/admin/v1/keys", Access::editor(Scope::Server), create)
        .get("/admin/v1/keys", Access::viewer(Scope::Server), list)
        .delete("/admin/v1/keys/{id}", Access::editor(Scope::Server), revoke)
        .get("/admin/v1/whoami", Access::viewer(Scope::Handler), whoami);
}

/// The calling key's id, role and scope (the dashboard uses it to disable controls).
#[utoipa::path(
    get,
    path = "/admin/v1/whoami",
    operation_id = "whoami",
    tag = "keys",
    summary = "The calling key's id, role and scope",
    responses(
        (status = 200, body = crate::api::openapi::Whoami),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn whoami(who: Principal) -> HttpResponse {
    status::ok(serde_json::json!({
        "key_id": who.key_id,
        "role": who.role,
        "campaign": who.campaign,
    }))
}

/// `POST /admin/v1/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    role: Role,
    #[serde(default)]
    campaign: Option<String>,
    #[serde(default)]
    label: Option<String>,
}

#[utoipa::path(
    post,
    path = "/admin/v1/keys",
    operation_id = "create_key",
    tag = "keys",
    summary = "Create a key (its secret is in this answer only)",
    request_body = CreateKey,
    responses(
        (status = 201, body = crate::api::openapi::CreatedKey),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn create(
    state: Authorized,
    req: HttpRequest,
    who: Principal,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let raw = body::read(payload, state.body_limit).await?;
    let body: CreateKey = body::parse(&raw)?;
    let (info, key) = state
        .keys
        .create_replicated(body.role, body.campaign, body.label, &who.key_id)
        .await?;
    auth::audit(
        &state,
        &req,
        Change {
            action: "key.create".into(),
            campaign: info.campaign.clone(),
            target: Some(info.id.clone()),
            before: serde_json::Value::Null,
            after: serde_json::to_value(&info).expect("key info as JSON"),
        },
    )
    .await?;
    tracing::info!(key = %info.id, role = info.role.as_str(), "API key created");
    let mut out = serde_json::to_value(&info).expect("key info as JSON");
    out["key"] = serde_json::Value::String(key);
    Ok(status::created(out))
}

#[utoipa::path(
    get,
    path = "/admin/v1/keys",
    operation_id = "list_keys",
    tag = "keys",
    summary = "List keys (no secrets)",
    responses(
        (status = 200, body = crate::api::openapi::KeyList),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn list(state: Authorized) -> HttpResponse {
    status::ok(serde_json::json!({ "keys": state.keys.list() }))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/keys/{id}",
    operation_id = "revoke_key",
    tag = "keys",
    summary = "Revoke a key, effective at once",
    params(("id" = String, Path, description = "Key id")),
    responses(
        (status = 200, body = crate::api::openapi::KeyInfo),
        (status = 404, description = "No such key", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn revoke(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (before, after) = state.keys.revoke_replicated(&id).await?;
    auth::audit(
        &state,
        &req,
        Change {
            action: "key.revoke".into(),
            campaign: after.campaign.clone(),
            target: Some(after.id.clone()),
            before: serde_json::to_value(&before).expect("key info as JSON"),
            after: serde_json::to_value(&after).expect("key info as JSON"),
        },
    )
    .await?;
    tracing::info!(key = %id, "API key revoked");
    Ok(status::ok(after))
}
