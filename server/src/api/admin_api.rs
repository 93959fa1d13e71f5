//! `/admin/v1`: campaigns and their statistics.

use actix_web::{web, HttpRequest, HttpResponse};
use tailor_wire::{ActionStats, CampaignStats};

use super::auth::{Access, Authorized, Routes, Scope};
use super::error::ApiError;
use super::status;
use super::{auth, body};
use crate::audit::Change;
use crate::campaign::CampaignConfig;
use crate::engine::etag::IfMatch;
use crate::engine::CampaignRuntime;
use crate::error::EngineError;
use crate::keys::Principal;

fn json_of(config: &CampaignConfig) -> serde_json::Value {
    serde_json::to_value(config).expect("campaign config as JSON")
}

/// The request's `If-Match` header, if any (a value that is not text matches nothing).
pub(crate) fn if_match(req: &HttpRequest) -> Option<IfMatch> {
    req.headers()
        .get(actix_web::http::header::IF_MATCH)
        .map(|v| v.to_str().map_or(IfMatch::Tags(Vec::new()), IfMatch::parse))
}

/// A campaign's config with its `ETag`.
fn config_with_etag(state: &Authorized, rt: &CampaignRuntime) -> HttpResponse {
    status::ok_builder()
        .insert_header((
            actix_web::http::header::ETAG,
            state.engine.campaign_etag(rt),
        ))
        .json(&rt.config)
}

pub fn configure(r: &mut Routes) {
    let campaign = Scope::Path("id");
    r.post("/admin/v1/campaigns", Access::editor(Scope::Server), create)
        // Filtered to a scoped key's campaign by the handler.
        .get("/admin/v1/campaigns", Access::viewer(Scope::Handler), list)
        .get("/admin/v1/campaigns/{id}", Access::viewer(campaign), get)
        .put("/admin/v1/campaigns/{id}", Access::editor(campaign), update)
        .delete("/admin/v1/campaigns/{id}", Access::editor(campaign), delete)
        .get(
            "/admin/v1/campaigns/{id}/stats",
            Access::viewer(campaign),
            stats,
        );
}

#[utoipa::path(
    post,
    path = "/admin/v1/campaigns",
    operation_id = "create_campaign",
    tag = "campaigns",
    summary = "Create a campaign",
    request_body = crate::api::openapi::CampaignConfig,
    responses(
        (status = 201, body = crate::api::openapi::CampaignConfig),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "The id is taken", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn create(
    state: Authorized,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let raw = body::read(payload, state.body_limit).await?;
    let config: CampaignConfig = body::parse(&raw)?;
    let rt = state.engine.create_campaign_replicated(config).await?;
    let change = Change {
        action: "campaign.create".into(),
        campaign: Some(rt.config.id.clone()),
        target: None,
        before: serde_json::Value::Null,
        after: json_of(&rt.config),
    };
    auth::audit(&state, &req, change).await?;
    tracing::info!(campaign = %rt.config.id, policy = rt.config.policy.kind(), "campaign created");
    Ok(status::created(&rt.config))
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns",
    operation_id = "list_campaigns",
    tag = "campaigns",
    summary = "List campaigns (a scoped key sees its own)",
    responses(
        (status = 200, body = crate::api::openapi::CampaignList),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn list(state: Authorized, who: Principal) -> HttpResponse {
    let configs: Vec<CampaignConfig> = state
        .engine
        .campaigns()
        .iter()
        .filter(|c| who.campaign.as_ref().is_none_or(|s| *s == c.config.id))
        .map(|c| c.config.clone())
        .collect();
    status::ok(serde_json::json!({ "campaigns": configs }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}",
    operation_id = "get_campaign",
    tag = "campaigns",
    summary = "A campaign's config",
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, body = crate::api::openapi::CampaignConfig, headers(
            ("ETag" = String, description = "The config's version: send it back as `If-Match` on PUT or DELETE")
        )),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn get(state: Authorized, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let rt = state.engine.campaign(&id)?;
    Ok(config_with_etag(&state, &rt))
}

#[utoipa::path(
    put,
    path = "/admin/v1/campaigns/{id}",
    operation_id = "update_campaign",
    tag = "campaigns",
    summary = "Replace a campaign's config (learned state of kept policies stays)",
    params(
        ("id" = String, Path, description = "Campaign id"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` of the config this edit is based on (or `*`): saved only if the campaign still has it, else 412. Without it the save is unconditional")
    ),
    request_body = crate::api::openapi::CampaignConfig,
    responses(
        (status = 200, body = crate::api::openapi::CampaignConfig, headers(
            ("ETag" = String, description = "The saved config's version")
        )),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "Cluster mode: another replica saved first (`config_conflict`)", body = crate::api::openapi::ErrorBody),
        (status = 412, description = "`If-Match` names a version that is no longer current: someone saved since; `error.field` is `If-Match`", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn update(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let raw = body::read(payload, state.body_limit).await?;
    let mut config: CampaignConfig = body::parse(&raw)?;
    if config.id.is_empty() {
        config.id = id.clone();
    } else if config.id != *id {
        return Err(EngineError::invalid("id", "does not match the campaign in the path").into());
    }
    let before = json_of(&state.engine.campaign(&id)?.config);
    let rt = state
        .engine
        .update_campaign_replicated_if(config, if_match(&req).as_ref())
        .await?;
    let change = Change {
        action: "campaign.update".into(),
        campaign: Some(rt.config.id.clone()),
        target: None,
        before,
        after: json_of(&rt.config),
    };
    auth::audit(&state, &req, change).await?;
    tracing::info!(campaign = %rt.config.id, policy = rt.config.policy.kind(), "campaign updated");
    Ok(config_with_etag(&state, &rt))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/campaigns/{id}",
    operation_id = "delete_campaign",
    tag = "campaigns",
    summary = "Delete a campaign",
    params(
        ("id" = String, Path, description = "Campaign id"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` of the config this deletion is based on (or `*`): deleted only if the campaign still has it, else 412")
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "Cluster mode: another replica saved first (`config_conflict`)", body = crate::api::openapi::ErrorBody),
        (status = 412, description = "`If-Match` names a version that is no longer current; `error.field` is `If-Match`", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn delete(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let before = json_of(&state.engine.campaign(&id)?.config);
    state
        .engine
        .delete_campaign_replicated_if(&id, if_match(&req).as_ref())
        .await?;
    let change = Change {
        action: "campaign.delete".into(),
        campaign: Some(id.clone()),
        target: None,
        before,
        after: serde_json::Value::Null,
    };
    auth::audit(&state, &req, change).await?;
    tracing::info!(campaign = %id, "campaign deleted");
    Ok(status::no_content())
}

/// Per-action counters of a campaign, most exposed first.
pub fn campaign_stats(rt: &CampaignRuntime) -> CampaignStats {
    let books = rt.books.lock();
    let mut actions: Vec<ActionStats> = books
        .counters
        .iter()
        .map(|(id, c)| ActionStats {
            id: id.clone(),
            exposures: c.exposures,
            rewards: c.rewards,
            reward_sum: c.reward_sum,
            mean: if c.exposures == 0 {
                0.0
            } else {
                c.reward_sum / c.exposures as f64
            },
        })
        .collect();
    actions.sort_by(|a, b| b.exposures.cmp(&a.exposures).then(a.id.cmp(&b.id)));
    CampaignStats {
        campaign: rt.config.id.clone(),
        decisions: books.decisions,
        rewards: books.rewards,
        actions,
    }
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/stats",
    operation_id = "campaign_stats",
    tag = "campaigns",
    summary = "Per-action counters",
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, body = crate::api::openapi::CampaignStats),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn stats(state: Authorized, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let rt = state.engine.campaign(&id)?;
    Ok(status::ok(campaign_stats(&rt)))
}
