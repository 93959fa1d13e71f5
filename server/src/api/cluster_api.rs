//! `/admin/v1/campaigns/{id}/digest`: a digest of a campaign's learned state, to compare
//! replicas (docs/scale-out.md). Served in both modes.

use actix_web::{web, HttpResponse};

use super::auth::{Access, Authorized, Routes, Scope};
use super::error::ApiError;
use super::status;

pub fn configure(r: &mut Routes) {
    r.get(
        "/admin/v1/campaigns/{id}/digest",
        Access::viewer(Scope::Path("id")),
        digest,
    );
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/digest",
    operation_id = "campaign_digest",
    tag = "campaigns",
    summary = "A hash of the campaign's learned state and counters (equal on replicas that applied the same events)",
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, body = crate::cluster::digest::Digest),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
pub(crate) async fn digest(
    state: Authorized,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(status::ok(state.engine.digest(&id)?))
}
