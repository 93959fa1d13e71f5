//! `/v1/.../adjust`: corrections of applied rewards (returns), the storefront-facing call beside
//! reward (docs/returns.md). Native API only.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use tailor_wire::AdjustRequest;

use super::auth::{Access, Authorized, Routes, Scope};
use super::decide_api::{event_campaign, named_campaign};
use super::error::ApiError;
use super::{body, path, status};
use crate::keys::Principal;

pub fn configure(r: &mut Routes) {
    // As for rewards: without a campaign in the path, the handler settles the event's campaign
    // (a scoped key's own).
    r.post(
        "/v1/events/{event_id}/adjust",
        Access::decide(Scope::Handler),
        adjust,
    )
    .post(
        "/v1/campaigns/{campaign}/events/{event_id}/adjust",
        Access::decide(Scope::Path("campaign")),
        adjust_in_campaign,
    );
}

#[utoipa::path(
    post,
    path = "/v1/events/{event_id}/adjust",
    operation_id = "adjust",
    tag = "decide",
    summary = "Correct an applied reward (a return)",
    description = "Sets the reward of an event's slot to `value`, or changes it by `delta`, within the campaign's `return_window_seconds` of the decision; learning and reports follow. Exactly once: a repeat with the same `adjustment_id` (or, without one, the same value or delta) answers `duplicate`. Acknowledged once durable. The campaign is settled as for rewards. The id is percent-decoded once.",
    params(("event_id" = String, Path, description = "The decision's event id, percent-encoded")),
    request_body = crate::api::openapi::AdjustRequest,
    responses(
        (status = 200, body = crate::api::openapi::AdjustResponse),
        (status = 400, description = "Invalid input, or the new reward outside `reward_range`; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown event", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "`no_reward`: the slot has no applied reward yet; `ambiguous_event`: several campaigns hold the id", body = crate::api::openapi::ErrorBody),
        (status = 410, description = "`return_window_closed`: the return window has closed", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "Cluster mode: NATS is unreachable (or the stream did not take the adjustment); retry it (a repeat is answered `duplicate`)", body = crate::api::openapi::ErrorBody)
    )
)]
async fn adjust(
    state: Authorized,
    who: Principal,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    adjust_one(state, who, req, payload, None).await
}

#[utoipa::path(
    post,
    path = "/v1/campaigns/{campaign}/events/{event_id}/adjust",
    operation_id = "adjust_in_campaign",
    tag = "decide",
    summary = "Correct an applied reward of a named campaign's event (a return)",
    description = "As `POST /v1/events/{event_id}/adjust`, for the event of this campaign.",
    params(
        ("campaign" = String, Path, description = "Campaign id"),
        ("event_id" = String, Path, description = "The decision's event id, percent-encoded")
    ),
    request_body = crate::api::openapi::AdjustRequest,
    responses(
        (status = 200, body = crate::api::openapi::AdjustResponse),
        (status = 400, description = "Invalid input, or the new reward outside `reward_range`; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown event in this campaign", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "`no_reward`: the slot has no applied reward yet", body = crate::api::openapi::ErrorBody),
        (status = 410, description = "`return_window_closed`: the return window has closed", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "Cluster mode: NATS is unreachable (or the stream did not take the adjustment); retry it (a repeat is answered `duplicate`)", body = crate::api::openapi::ErrorBody)
    )
)]
async fn adjust_in_campaign(
    state: Authorized,
    who: Principal,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let campaign = path::segment(&req, "campaign")?;
    adjust_one(state, who, req, payload, Some(campaign)).await
}

async fn adjust_one(
    state: Authorized,
    who: Principal,
    req: HttpRequest,
    payload: web::Payload,
    in_path: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let event_id = path::segment(&req, "event_id")?;
    let raw = body::read(payload, state.body_limit).await?;
    let request: AdjustRequest = body::parse(&raw)?;
    let named = named_campaign(in_path.as_deref(), request.campaign.as_deref())?;
    let campaign = event_campaign(&state, &who, &event_id, named)?;
    let response = state
        .engine
        .adjust_replicated(&campaign, &event_id, request)
        .await?;
    metrics::histogram!("tailor_adjust_seconds").record(started.elapsed().as_secs_f64());
    Ok(status::ok(response))
}
