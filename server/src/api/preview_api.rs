//! `/admin/v1/campaigns/{id}/preview` and `.../decisions/{event_id}/explain`: what a decide
//! would answer and why, and why a logged decision was what it was (docs/merchandising.md).
//! Viewer keys may call both (a preview changes nothing); a scoped key only for its campaign.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::{Access, Authorized, Routes, Scope};
use super::error::ApiError;
use super::{body, path, query, status};
use crate::engine::DecideInput;
use crate::error::EngineError;

pub fn configure(r: &mut Routes) {
    let campaign = Scope::Path("id");
    r.post(
        "/admin/v1/campaigns/{id}/preview",
        Access::viewer(campaign),
        preview,
    )
    .get(
        "/admin/v1/campaigns/{id}/decisions/{event_id}/explain",
        Access::viewer(campaign),
        explain,
    );
}

/// `?seed=`: the decision seed to use (a decimal 64-bit integer).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// Decimal 0 to 18446744073709551615, e.g. the `seed` of an explanation. Omitted: the seed a
    /// decide with the body's `event_id` would use, or a fresh one.
    #[param(value_type = Option<String>)]
    pub seed: Option<String>,
}

fn seed_of(q: &PreviewQuery) -> Result<Option<u64>, EngineError> {
    q.seed
        .as_deref()
        .map(|s| {
            s.parse::<u64>().map_err(|_| {
                EngineError::invalid(
                    "seed",
                    "must be a decimal integer from 0 to 18446744073709551615",
                )
            })
        })
        .transpose()
}

#[utoipa::path(
    post,
    path = "/admin/v1/campaigns/{id}/preview",
    operation_id = "preview_decision",
    tag = "campaigns",
    summary = "Preview a decide: the answer and why, logging nothing",
    description = "Takes a decide body (items campaigns) and answers what a decide would serve now: the slots with their probabilities and pins, every candidate with its chance of the top slot, the serving policy's estimate, uncertainty and score, the factors (boosts, plugin multipliers) applied, the constraint plugins' removals in words, every pin and boost and what it did, the holdout assignment and the policy's version. Nothing is logged, learned, counted or remembered. With the same seed (`?seed=`, or the body's `event_id`) and an unchanged learned state, a decide answers the same.",
    params(("id" = String, Path, description = "Campaign id"), PreviewQuery),
    request_body = crate::api::openapi::DecideRequest,
    responses(
        (status = 200, body = crate::engine::preview::Preview),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Body over the limit", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "A constraint plugin failed and the campaign refuses", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn preview(
    state: Authorized,
    req: HttpRequest,
    q: query::Query<PreviewQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path::segment(&req, "id")?;
    let seed = seed_of(&q)?;
    let raw = body::read(payload, state.body_limit).await?;
    let input = DecideInput::parse(raw)?;
    Ok(status::ok(state.engine.preview_items(&id, input, seed)?))
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/decisions/{event_id}/explain",
    operation_id = "explain_decision",
    tag = "campaigns",
    summary = "Explain a logged decision from its log entry",
    description = "What was served (slots, probabilities, pins), which candidates constraint plugins removed and why (reason codes in words), the policy, seed, holdout flag, and the logged request when the campaign logs requests. 404 when the decision is unknown or its log entry was deleted.",
    params(
        ("id" = String, Path, description = "Campaign id"),
        ("event_id" = String, Path, description = "Event id, percent-encoded")
    ),
    responses(
        (status = 200, body = crate::engine::preview::Explanation),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign or decision", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn explain(state: Authorized, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let id = path::segment(&req, "id")?;
    let event_id = path::segment(&req, "event_id")?;
    Ok(status::ok(state.engine.explain_decision(&id, &event_id)?))
}
