//! `GET /admin/v1/audit`: the audit log, newest first. Read-only: no route changes it.

use actix_web::HttpResponse;
use serde::Deserialize;

use super::auth::{Access, Authorized, Routes, Scope};
use super::error::ApiError;
use super::query::Query;
use super::status;
use crate::audit::MAX_LIMIT;
use crate::error::EngineError;
use crate::keys::Principal;

pub fn configure(r: &mut Routes) {
    // Filtered to a scoped key's campaign by the handler.
    r.get("/admin/v1/audit", Access::viewer(Scope::Handler), list);
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    campaign: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    operation_id = "list_audit",
    tag = "audit",
    summary = "The audit log, newest first",
    params(("campaign" = Option<String>, Query, description = "Only this campaign's entries"), ("limit" = Option<usize>, Query, description = "1-1000, default 100")),
    responses(
        (status = 200, body = crate::api::openapi::AuditList),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn list(
    state: Authorized,
    who: Principal,
    q: Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(EngineError::invalid_owned("limit", format!("must be 1-{MAX_LIMIT}")).into());
    }
    // A campaign-scoped key sees only its campaign's entries.
    let campaign = match (&who.campaign, &q.campaign) {
        (Some(scope), Some(c)) if scope != c => {
            return Err(ApiError::forbidden(format!(
                "key {:?} is scoped to campaign {scope:?}",
                who.key_id
            )))
        }
        (Some(scope), _) => Some(scope.as_str()),
        (None, c) => c.as_deref(),
    };
    let entries = state.audit.list(campaign, limit)?;
    Ok(status::ok(serde_json::json!({ "entries": entries })))
}
