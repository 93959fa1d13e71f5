//! `/v1`: decide and reward, the storefront-facing calls.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use tailor_wire::{
    BatchRewardResult, RewardBatchRequest, RewardBatchResponse, RewardRequest, SendTimeRequest,
};

use super::auth::{Access, Authorized, Routes, Scope};
use super::error::ApiError;
use super::{body, path, status, AppState};
use crate::campaign::CampaignKind;
use crate::engine::DecideInput;
use crate::error::EngineError;
use crate::keys::Principal;

/// The campaign whose decision `event_id` a reward joins (event ids are per campaign).
///
/// Named (in the path or the body): that campaign, if the key reaches it. Not named: the key's
/// campaign when it is scoped, so a scoped key never learns whether another campaign holds the
/// id; for an unscoped key, the one live campaign holding it (404 when none, 409
/// `ambiguous_event` listing them when several: such a key sees every campaign).
pub(super) fn event_campaign(
    state: &AppState,
    who: &Principal,
    event_id: &str,
    named: Option<&str>,
) -> Result<String, ApiError> {
    match (named, &who.campaign) {
        (Some(c), Some(scope)) if c != scope => Err(ApiError::forbidden(format!(
            "key {:?} is scoped to campaign {scope:?}",
            who.key_id
        ))),
        (Some(c), _) => Ok(c.to_string()),
        (None, Some(scope)) => Ok(scope.clone()),
        (None, None) => {
            let mut found = state.engine.campaigns_with_event(event_id)?;
            match found.len() {
                0 => Err(EngineError::EventNotFound {
                    id: event_id.to_string(),
                }
                .into()),
                1 => Ok(found.remove(0)),
                _ => Err(EngineError::AmbiguousEvent {
                    id: event_id.to_string(),
                    campaigns: found,
                }
                .into()),
            }
        }
    }
}

/// The campaign named by the path and/or the body; they must agree.
pub(super) fn named_campaign<'a>(
    in_path: Option<&'a str>,
    in_body: Option<&'a str>,
) -> Result<Option<&'a str>, EngineError> {
    match (in_path, in_body) {
        (Some(p), Some(b)) if p != b => Err(EngineError::invalid_owned(
            "campaign",
            format!("{b:?} differs from the campaign in the path ({p:?})"),
        )),
        (Some(p), _) => Ok(Some(p)),
        (None, b) => Ok(b),
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
    // Without a campaign in the path, the handler settles the event's campaign for a scoped
    // key (its own: event ids are per campaign).
    .post(
        "/v1/events/{event_id}/reward",
        Access::decide(Scope::Handler),
        reward,
    )
    .post(
        "/v1/campaigns/{campaign}/events/{event_id}/reward",
        Access::decide(Scope::Path("campaign")),
        reward_in_campaign,
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
        // Parsed straight into hashed features; the body is kept for the decision log.
        CampaignKind::Items => status::ok(
            state
                .engine
                .decide_items_replicated(&path, DecideInput::parse(raw)?)
                .await?,
        ),
        CampaignKind::SendTime => {
            let request: SendTimeRequest = body::parse(&raw)?;
            status::ok(
                state
                    .engine
                    .decide_send_time_replicated(&path, request)
                    .await?,
            )
        }
    };
    metrics::histogram!("tailor_decide_seconds").record(started.elapsed().as_secs_f64());
    Ok(response)
}

#[utoipa::path(
    post,
    path = "/v1/events/{event_id}/reward",
    operation_id = "reward",
    tag = "decide",
    summary = "Reward one decision",
    description = "Event ids are per campaign. Without `campaign` in the body, a campaign-scoped key rewards its campaign's event; an unscoped key rewards the one campaign holding the id, and gets 409 `ambiguous_event` when several do. The id is percent-decoded once (send `+`, `/`, `%` escaped).",
    params(("event_id" = String, Path, description = "The decision's event id, percent-encoded")),
    request_body = crate::api::openapi::RewardRequest,
    responses(
        (status = 200, body = crate::api::openapi::RewardResponse),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown event", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "`ambiguous_event`: several campaigns hold the id; name the campaign", body = crate::api::openapi::ErrorBody),
        (status = 410, description = "The reward window has closed", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn reward(
    state: Authorized,
    who: Principal,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    reward_one(state, who, req, payload, None).await
}

#[utoipa::path(
    post,
    path = "/v1/campaigns/{campaign}/events/{event_id}/reward",
    operation_id = "reward_in_campaign",
    tag = "decide",
    summary = "Reward one decision of a named campaign",
    description = "Event ids are per campaign: the same id in two campaigns names two decisions. The id is percent-decoded once (send `+`, `/`, `%` escaped).",
    params(
        ("campaign" = String, Path, description = "Campaign id"),
        ("event_id" = String, Path, description = "The decision's event id, percent-encoded")
    ),
    request_body = crate::api::openapi::RewardRequest,
    responses(
        (status = 200, body = crate::api::openapi::RewardResponse),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown event in this campaign", body = crate::api::openapi::ErrorBody),
        (status = 410, description = "The reward window has closed", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn reward_in_campaign(
    state: Authorized,
    who: Principal,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let campaign = path::segment(&req, "campaign")?;
    reward_one(state, who, req, payload, Some(campaign)).await
}

async fn reward_one(
    state: Authorized,
    who: Principal,
    req: HttpRequest,
    payload: web::Payload,
    in_path: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let event_id = path::segment(&req, "event_id")?;
    let raw = body::read(payload, state.body_limit).await?;
    let request: RewardRequest = body::parse(&raw)?;
    let named = named_campaign(in_path.as_deref(), request.campaign.as_deref())?;
    let campaign = event_campaign(&state, &who, &event_id, named)?;
    let response = state.engine.reward(&campaign, &event_id, request).await?;
    metrics::histogram!("tailor_reward_seconds").record(started.elapsed().as_secs_f64());
    Ok(status::ok(response))
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
    let ids: Vec<String> = batch.rewards.iter().map(|r| r.event_id.clone()).collect();
    // Items whose campaign cannot be settled (outside a scoped key's campaign, unknown,
    // ambiguous) fail on their own; the rest go through.
    let mut refused = Vec::new();
    let mut allowed = Vec::with_capacity(batch.rewards.len());
    for (i, r) in batch.rewards.into_iter().enumerate() {
        match event_campaign(&state, &who, &r.event_id, r.campaign.as_deref()) {
            Ok(campaign) => allowed.push((
                campaign,
                r.event_id,
                RewardRequest {
                    value: r.value,
                    action_id: r.action_id,
                    reward_id: r.reward_id,
                    campaign: None,
                },
            )),
            Err(e) => refused.push((i, e)),
        }
    }
    let mut outcomes: Vec<_> = (state.engine.reward_batch(allowed).await?)
        .into_iter()
        .map(|o| o.map_err(ApiError::from))
        .collect();
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
                let (status, detail) = e.detail();
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
    Ok(status::ok(RewardBatchResponse { results }))
}
