//! `POST /admin/v1/campaigns/{id}/validate`: a dry run of create or update. The control room
//! sends the config being edited here as the marketer types, and shows the 400's `field` next to
//! the input it names (`policy.alpha`, `plugins[1].config`, ...). Runs exactly the checks a save
//! runs — serde's parse, [`CampaignConfig::validate`], and attaching the plugin chain (each
//! plugin checks its own config) — and changes nothing.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};

use super::auth::{Access, Audited, Authorized, Routes, Scope};
use super::body;
use super::error::ApiError;
use super::status;
use crate::campaign::CampaignConfig;
use crate::error::EngineError;

pub fn configure(r: &mut Routes) {
    // Editor, like the save it rehearses (a viewer gets the same 403 as on a save).
    r.post(
        "/admin/v1/campaigns/{id}/validate",
        Access::editor(Scope::Path("id")),
        validate,
    );
}

/// Check a config as `POST /admin/v1/campaigns` (when `{id}` does not exist yet) or
/// `PUT /admin/v1/campaigns/{id}` (when it does) would, without creating or changing anything.
/// 200 with `{"valid": true, "exists": bool, "config": ...}` (the config with defaults filled in,
/// as it would be stored), or the save's 400 naming the field.
#[utoipa::path(
    post,
    path = "/admin/v1/campaigns/{id}/validate",
    operation_id = "validate_campaign",
    tag = "campaigns",
    summary = "Dry-run a campaign create or update: the save's checks, nothing stored",
    params(("id" = String, Path, description = "Campaign id (new or existing)")),
    request_body = crate::api::openapi::CampaignConfig,
    responses(
        (status = 200, description = "Valid: `{valid, exists, config}`", body = Object),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn validate(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // A dry run is not a change: no audit entry (the page calls this on every edit; the save
    // that follows is audited as usual).
    req.extensions_mut().insert(Audited);
    let raw = body::read(payload, state.body_limit).await?;
    let mut config: CampaignConfig = body::parse(&raw)?;
    if config.id.is_empty() {
        config.id = id.clone();
    } else if config.id != *id {
        return Err(EngineError::invalid("id", "does not match the campaign in the path").into());
    }
    let existing = state.engine.campaign(&id).ok();
    // What the engine fills in on a save, so the answer shows what would be stored.
    if let Some(old) = &existing {
        if config.holdout_salt.is_empty() {
            config.holdout_salt = old.config.holdout_salt.clone();
        }
        if config.personalizer.is_none() {
            config.personalizer = old.config.personalizer.clone();
        }
    }
    config.validate()?;
    crate::plugins::attach_campaign_chain(state.engine.plugins(), &config.plugins)?;
    Ok(status::ok(serde_json::json!({
        "valid": true,
        "exists": existing.is_some(),
        "config": config,
    })))
}
