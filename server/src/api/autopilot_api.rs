//! `/admin/v1/campaigns/{id}/autopilot`: the autopilot's settings, schedule and last runs
//! (`ope/autopilot.rs`, docs/optimization.md#autopilot). Read-only: the autopilot is configured
//! in the campaign config's `autopilot` section.

use actix_web::{web, HttpResponse};

use super::auth::{Access, Authorized, Routes, Scope};
use super::error::ApiError;
use super::status;
use crate::error::EngineError;
use crate::ope::autopilot;

pub fn configure(r: &mut Routes) {
    r.get(
        "/admin/v1/campaigns/{id}/autopilot",
        Access::viewer(Scope::Path("id")),
        get,
    );
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/autopilot",
    operation_id = "autopilot_runs",
    tag = "evaluation",
    summary = "The autopilot: settings, whether it runs, next run, cool-down, and the last runs (switched or not, and why), newest first",
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "`{\"enabled\", \"running\", \"settings\", \"serving\", \"next_run_ms\", \"cooldown_until_ms\", \"runs\": [...]}`", body = Object),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn get(state: Authorized, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let id = id.into_inner();
    // The first read of a campaign's runs scans its evaluations in the store.
    let report = web::block(move || autopilot::report(&engine, &id))
        .await
        .map_err(|e| EngineError::Unavailable {
            message: format!("autopilot report failed: {e}"),
        })??;
    Ok(status::ok(report))
}
