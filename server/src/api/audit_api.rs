//! `GET /admin/v1/audit`: the audit log, newest first. Read-only: no route changes it.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
use crate::audit::MAX_LIMIT;
use crate::error::EngineError;
use crate::keys::Principal;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/v1/audit", web::get().to(list));
}

#[derive(Debug, Deserialize)]
struct Query {
    campaign: Option<String>,
    limit: Option<usize>,
}

async fn list(
    state: web::Data<AppState>,
    who: Principal,
    q: web::Query<Query>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(EngineError::invalid_owned("limit", format!("must be 1-{MAX_LIMIT}")).into());
    }
    // A campaign-scoped key sees only its campaign's entries.
    let campaign = match (&who.campaign, &q.campaign) {
        (Some(scope), Some(c)) if scope != c => {
            return Err(EngineError::Forbidden {
                message: format!("key {:?} is scoped to campaign {scope:?}", who.key_id),
            }
            .into())
        }
        (Some(scope), _) => Some(scope.as_str()),
        (None, c) => c.as_deref(),
    };
    let entries = state.audit.list(campaign, limit)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "entries": entries })))
}
