//! `/admin/v1/campaigns/{id}/...`: the marketers' controls — pause, resume, holdout share and the
//! serving-policy toggle. Each is a validated campaign update, audited with before and after.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::{Access, Authorized, Routes, Scope};
use super::error::ApiError;
use super::status;
use super::{auth, body, AppState};
use crate::audit::Change;
use crate::campaign::{CampaignConfig, CampaignStatus};
use crate::error::EngineError;

pub fn configure(r: &mut Routes) {
    let edit = Access::editor(Scope::Path("id"));
    r.post("/admin/v1/campaigns/{id}/pause", edit, pause)
        .post("/admin/v1/campaigns/{id}/resume", edit, resume)
        .put("/admin/v1/campaigns/{id}/holdout", edit, holdout)
        .put("/admin/v1/campaigns/{id}/policy", edit, policy);
}

/// Apply `change` to the campaign's config, update it through the engine, and audit before and
/// after. Every admin surface that edits a campaign (this module, `/personalizer`) goes through here.
pub(crate) async fn change_campaign(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
    action: &str,
    change: impl FnOnce(&mut CampaignConfig) -> Result<(), EngineError>,
) -> Result<CampaignConfig, ApiError> {
    let before = state.engine.campaign(id)?.config.clone();
    let mut config = before.clone();
    change(&mut config)?;
    let rt = state.engine.update_campaign_replicated(config).await?;
    auth::audit(
        state,
        req,
        Change {
            action: action.to_string(),
            campaign: Some(id.to_string()),
            target: None,
            before: serde_json::to_value(&before).expect("campaign config as JSON"),
            after: serde_json::to_value(&rt.config).expect("campaign config as JSON"),
        },
    )
    .await?;
    tracing::info!(campaign = %id, action, "campaign changed");
    Ok(rt.config.clone())
}

/// [`change_campaign`], answering with the new config.
async fn mutate(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
    action: &str,
    change: impl FnOnce(&mut CampaignConfig) -> Result<(), EngineError>,
) -> Result<HttpResponse, ApiError> {
    let config = change_campaign(state, req, id, action, change).await?;
    Ok(status::ok(&config))
}

#[utoipa::path(
    post,
    path = "/admin/v1/campaigns/{id}/pause",
    operation_id = "pause_campaign",
    tag = "controls",
    summary = "Serve the baseline order (keeps logging and learning)",
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "The new config", body = crate::api::openapi::CampaignConfig),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn pause(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    mutate(&state, &req, &id, "campaign.pause", |c| {
        c.status = CampaignStatus::Paused;
        Ok(())
    })
    .await
}

#[utoipa::path(
    post,
    path = "/admin/v1/campaigns/{id}/resume",
    operation_id = "resume_campaign",
    tag = "controls",
    summary = "Serve with the policy again",
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "The new config", body = crate::api::openapi::CampaignConfig),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn resume(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    mutate(&state, &req, &id, "campaign.resume", |c| {
        c.status = CampaignStatus::Active;
        Ok(())
    })
    .await
}

/// `PUT .../holdout {"share": 0.1}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HoldoutBody {
    share: f64,
}

#[utoipa::path(
    put,
    path = "/admin/v1/campaigns/{id}/holdout",
    operation_id = "set_holdout",
    tag = "controls",
    summary = "Set the held-out share of shoppers (0-0.5)",
    params(("id" = String, Path, description = "Campaign id")),
    request_body = HoldoutBody,
    responses(
        (status = 200, description = "The new config", body = crate::api::openapi::CampaignConfig),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn holdout(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let raw = body::read(payload, state.body_limit).await?;
    let b: HoldoutBody = body::parse(&raw)?;
    if !(b.share.is_finite() && (0.0..=0.5).contains(&b.share)) {
        return Err(EngineError::invalid("share", "must be a share between 0 and 0.5").into());
    }
    mutate(&state, &req, &id, "campaign.holdout", |c| {
        c.holdout = b.share;
        Ok(())
    })
    .await
}

/// `PUT .../policy {"type": "linucb"}`: serve with the configured (shadow) policy of that type;
/// the previous serving policy becomes a shadow, so both keep learning.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyBody {
    #[serde(rename = "type")]
    kind: String,
}

#[utoipa::path(
    put,
    path = "/admin/v1/campaigns/{id}/policy",
    operation_id = "set_serving_policy",
    tag = "controls",
    summary = "Serve with the configured shadow policy of this type (the old one becomes a shadow)",
    params(("id" = String, Path, description = "Campaign id")),
    request_body = PolicyBody,
    responses(
        (status = 200, description = "The new config", body = crate::api::openapi::CampaignConfig),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn policy(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let raw = body::read(payload, state.body_limit).await?;
    let b: PolicyBody = body::parse(&raw)?;
    mutate(&state, &req, &id, "campaign.policy", |c| {
        if c.policy.kind() == b.kind {
            return Ok(());
        }
        let i = c
            .shadow_policies
            .iter()
            .position(|p| p.kind() == b.kind)
            .ok_or_else(|| {
                EngineError::invalid_owned(
                    "type",
                    format!(
                        "no policy of type {:?} is configured; configured: {}",
                        b.kind,
                        c.all_policies()
                            .map(|p| p.kind())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
        let next = c.shadow_policies.remove(i);
        let prev = std::mem::replace(&mut c.policy, next);
        c.shadow_policies.insert(i, prev);
        Ok(())
    })
    .await
}
