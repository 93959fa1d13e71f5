//! `/admin/v1/campaigns/{id}/reports/...` of send-time campaigns: best slots per segment, how
//! concentrated shoppers' learned preferences are, reward rate by slot.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::{Access, Authorized, Routes, Scope};
use super::error::ApiError;
use super::status;
use crate::error::EngineError;

pub fn configure(r: &mut Routes) {
    let read = Access::viewer(Scope::Path("id"));
    r.get(
        "/admin/v1/campaigns/{id}/reports/best-slots",
        read,
        best_slots,
    )
    .get(
        "/admin/v1/campaigns/{id}/reports/concentration",
        read,
        concentration,
    )
    .get(
        "/admin/v1/campaigns/{id}/reports/slot-rates",
        read,
        slot_rates,
    );
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    /// Best slots: how many per segment (default 5).
    top: Option<usize>,
    /// Concentration: smallest number of (decayed) trials of a shopper to count them.
    min_trials: Option<f64>,
}

/// Parsed by `api/query.rs`, so a bad parameter is named in the error.
fn query(req: &HttpRequest) -> Result<Query, EngineError> {
    super::query::parse(req.query_string())
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/reports/best-slots",
    operation_id = "report_best_slots",
    tag = "reports",
    summary = "Send-time: best slots per segment",
    params(("id" = String, Path, description = "Campaign id"), ("top" = Option<usize>, Query, description = "Slots per segment, 1-168, default 5")),
    responses(
        (status = 200, description = "`{campaign, segments: [{segment, trials, best: [{slot, index, rate, trials, successes}]}]}`"),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign or shopper", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn best_slots(
    state: Authorized,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = query(&req)?;
    let top = q.top.unwrap_or(5);
    if !(1..=168).contains(&top) {
        return Err(EngineError::invalid("top", "must be between 1 and 168").into());
    }
    Ok(status::ok(state.engine.report_best_slots(&id, top)?))
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/reports/concentration",
    operation_id = "report_concentration",
    tag = "reports",
    summary = "Send-time: how concentrated shoppers' learned preferences are",
    params(("id" = String, Path, description = "Campaign id"), ("min_trials" = Option<f64>, Query, description = "Smallest number of trials of a shopper, default 5")),
    responses(
        (status = 200, description = "Mean normalized entropy, share whose best slot differs from the population's, common best slots"),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign or shopper", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn concentration(
    state: Authorized,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = query(&req)?;
    let min = q.min_trials.unwrap_or(5.0);
    if !(min.is_finite() && min >= 0.0) {
        return Err(EngineError::invalid("min_trials", "must be a number of at least 0").into());
    }
    Ok(status::ok(state.engine.report_concentration(&id, min)?))
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/reports/slot-rates",
    operation_id = "report_slot_rates",
    tag = "reports",
    summary = "Send-time: reward rate by slot",
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "Per slot: sends, rewards, reward rate, learned rate"),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign or shopper", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn slot_rates(state: Authorized, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(status::ok(state.engine.report_slot_rates(&id)?))
}
