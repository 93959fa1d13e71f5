//! `/v1`: decide and reward, the storefront-facing calls.

use std::time::Instant;

use actix_web::{web, HttpResponse};
use tailor_sdk::wire::{
    BatchRewardResult, DecideRequest, RewardBatchRequest, RewardBatchResponse, RewardRequest,
    SendTimeRequest,
};

use super::auth::{Access, Authorized, Routes, Scope};
use super::error::ApiError;
use super::{body, AppState};
use crate::campaign::CampaignKind;
use crate::engine::DecideInput;
use crate::error::EngineError;
use crate::keys::Principal;

/// A campaign-scoped key may reward only its campaign's events. Unknown events pass through
/// (the engine answers 404).
fn check_reward_scope(
    state: &AppState,
    who: &Principal,
    event_id: &str,
) -> Result<(), EngineError> {
    let Some(scope) = &who.campaign else {
        return Ok(());
    };
    match state.engine.store().event(event_id)? {
        Some(e) if e.campaign != *scope => Err(EngineError::Forbidden {
            message: format!("key {:?} is scoped to campaign {scope:?}", who.key_id),
        }),
        _ => Ok(()),
    }
}

/// Most rewards accepted in one batch.
pub const MAX_BATCH: usize = 1_000;

pub fn configure(r: &mut Routes) {
    r.post(
        "/v1/campaigns/{campaign}/decide",
        Access::decide(Scope::Path("campaign")),
        decide,
    )
    // A scoped key's rewards are checked against each event's campaign.
    .post(
        "/v1/events/{event_id}/reward",
        Access::decide(Scope::Handler),
        reward,
    )
    .post("/v1/rewards", Access::decide(Scope::Handler), reward_batch);
}

#[utoipa::path(
    post,
    path = "/v1/campaigns/{campaign}/decide",
    operation_id = "decide",
    tag = "decide",
    summary = "Rank candidates for one shopper; on a send_time campaign, choose a send slot",
    description = "Items campaigns take a DecideRequest. `send_time` campaigns take `{shopper_id, timezone, context?, earliest?, event_id?, explore?}` and answer `{event_id, slot, send_at, probability, policy, replayed}` (docs/send-time.md).",
    params(("campaign" = String, Path, description = "Campaign id")),
    request_body = crate::api::openapi::DecideRequest,
    responses(
        (status = 200, description = "The chosen actions with their probabilities", body = crate::api::openapi::DecideResponse),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Body over the limit", body = crate::api::openapi::ErrorBody),
        (status = 429, description = "send_time: inside the shopper's frequency cap (`frequency_capped`)", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "A constraint plugin failed and the campaign refuses", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn decide(
    state: Authorized,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let raw = body::read(payload, state.body_limit).await?;
    // The body's shape follows the campaign's kind; the engine checks the kind again.
    let response = match state.engine.campaign(&path)?.config.kind {
        CampaignKind::Items => {
            let request: DecideRequest = body::parse(&raw)?;
            state.engine.decide(
                &path,
                DecideInput {
                    request,
                    raw,
                    defer: false,
                },
            )?
        }
        CampaignKind::SendTime => {
            let request: SendTimeRequest = body::parse(&raw)?;
            state.engine.decide(&path, request)?
        }
    };
    metrics::histogram!("tailor_decide_seconds").record(started.elapsed().as_secs_f64());
    Ok(HttpResponse::Ok().json(response))
}

#[utoipa::path(
    post,
    path = "/v1/events/{event_id}/reward",
    operation_id = "reward",
    tag = "decide",
    summary = "Reward one decision",
    params(("event_id" = String, Path, description = "The decision's event id")),
    request_body = crate::api::openapi::RewardRequest,
    responses(
        (status = 200, body = crate::api::openapi::RewardResponse),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown event", body = crate::api::openapi::ErrorBody),
        (status = 410, description = "The reward window has closed", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn reward(
    state: Authorized,
    who: Principal,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    check_reward_scope(&state, &who, &path)?;
    let raw = body::read(payload, state.body_limit).await?;
    let request: RewardRequest = body::parse(&raw)?;
    let response = state.engine.reward(&path, request).await?;
    metrics::histogram!("tailor_reward_seconds").record(started.elapsed().as_secs_f64());
    Ok(HttpResponse::Ok().json(response))
}

#[utoipa::path(
    post,
    path = "/v1/rewards",
    operation_id = "reward_batch",
    tag = "decide",
    summary = "Reward up to 1,000 decisions at once",
    request_body = crate::api::openapi::RewardBatchRequest,
    responses(
        (status = 200, description = "One result per item, in request order; items fail on their own", body = crate::api::openapi::RewardBatchResponse),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn reward_batch(
    state: Authorized,
    who: Principal,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let raw = body::read(payload, state.body_limit).await?;
    let batch: RewardBatchRequest = body::parse(&raw)?;
    if batch.rewards.len() > MAX_BATCH {
        return Err(EngineError::invalid_owned(
            "rewards",
            format!("at most {MAX_BATCH} rewards per batch"),
        )
        .into());
    }
    let items = batch
        .rewards
        .into_iter()
        .map(|r| {
            (
                r.event_id,
                RewardRequest {
                    value: r.value,
                    action_id: r.action_id,
                    reward_id: r.reward_id,
                },
            )
        })
        .collect::<Vec<_>>();
    let ids: Vec<String> = items.iter().map(|(id, _)| id.clone()).collect();
    // Items outside a scoped key's campaign fail on their own; the rest go through.
    let mut refused = Vec::new();
    let mut allowed = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match check_reward_scope(&state, &who, &item.0) {
            Ok(()) => allowed.push(item),
            Err(e) => refused.push((i, e)),
        }
    }
    let mut outcomes = state.engine.reward_batch(allowed).await?;
    for (i, e) in refused {
        outcomes.insert(i, Err(e));
    }
    let results = ids
        .into_iter()
        .zip(outcomes)
        .map(|(event_id, outcome)| match outcome {
            Ok(r) => BatchRewardResult {
                event_id,
                status: Some(r.status),
                error: None,
                http_status: 200,
            },
            Err(e) => {
                let (status, detail) = ApiError(e).detail();
                BatchRewardResult {
                    event_id,
                    status: None,
                    error: Some(detail),
                    http_status: status.as_u16(),
                }
            }
        })
        .collect::<Vec<_>>();
    metrics::histogram!("tailor_reward_batch_seconds").record(started.elapsed().as_secs_f64());
    Ok(HttpResponse::Ok().json(RewardBatchResponse { results }))
}
