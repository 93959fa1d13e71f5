//! `/admin/v1/campaigns/{id}/reports/...`: what the dashboard shows, read from the engine's
//! per-campaign aggregates, or folded over the logs where those do not serve (see
//! `engine/reports.rs`, `engine/report_book.rs` and docs/reports.md).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::auth::{Access, Authorized, Routes, Scope};
use super::csv::{self, Format};
use super::error::ApiError;
use super::AppState;
use crate::engine::reports;
use crate::error::EngineError;

pub fn configure(r: &mut Routes) {
    let read = Access::viewer(Scope::Path("id"));
    r.get("/admin/v1/campaigns/{id}/reports/actions", read, actions)
        .get("/admin/v1/campaigns/{id}/reports/lift", read, lift)
        .get(
            "/admin/v1/campaigns/{id}/reports/audiences",
            read,
            audiences,
        )
        .get("/admin/v1/campaigns/{id}/reports/hidden-gems", read, gems)
        .get("/admin/v1/campaigns/{id}/reports/affinity", read, affinity)
        .get("/admin/v1/campaigns/{id}/reports/policies", read, policies)
        .get(
            "/admin/v1/campaigns/{id}/reports/policy-values",
            read,
            policy_values,
        );
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    /// Width of a time-series bucket (default one day).
    bucket_seconds: Option<u64>,
    /// Hidden gems: largest exposure share that counts as rarely shown.
    max_share: Option<f64>,
    /// Affinity: dotted path of the history categories in the context.
    history_path: Option<String>,
    /// Affinity: smallest number of exposures of a pair to report it.
    min_exposures: Option<u64>,
    /// `json` (default) or `csv` (docs/reports.md); `Accept: text/csv` also asks for CSV.
    format: Option<String>,
}

/// The format asked for, and the file name a CSV answer is downloaded as.
fn output(
    req: &HttpRequest,
    q: &Query,
    id: &str,
    report: &str,
) -> Result<(Format, String), EngineError> {
    Ok((
        csv::format(req, q.format.as_deref())?,
        format!("{id}-{report}"),
    ))
}

fn query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, EngineError> {
    super::query::parse(req.query_string())
}

fn bucket(q: &Query) -> Result<u64, EngineError> {
    match q.bucket_seconds {
        None => Ok(86_400),
        Some(b) if (1..=366 * 86_400).contains(&b) => Ok(b),
        Some(_) => Err(EngineError::invalid(
            "bucket_seconds",
            "must be between 1 and 31622400",
        )),
    }
}

/// Compute a report off the async threads, then shape the answer with `wrap`.
async fn read<R, T>(
    state: &AppState,
    id: &str,
    out: (Format, String),
    f: impl FnOnce(&crate::engine::Engine, &str) -> Result<T, EngineError> + Send + 'static,
    wrap: impl FnOnce(T) -> R + Send + 'static,
) -> Result<HttpResponse, ApiError>
where
    T: Send + 'static,
    R: serde::Serialize + Send + 'static,
{
    state.engine.campaign(id)?;
    let engine = state.engine.clone();
    let id = id.to_string();
    let body = web::block(move || {
        f(&engine, &id).map(|t| serde_json::to_value(wrap(t)).expect("a report serializes"))
    })
    .await
    .map_err(|e| EngineError::Unavailable {
        message: format!("report worker failed: {e}"),
    })??;
    Ok(csv::respond(&body, out.0, &out.1))
}

/// Fold the campaign's logs into a report off the async threads (one decision at a time), then
/// shape the answer with `wrap`.
async fn report<F, R>(
    state: &AppState,
    id: &str,
    out: (Format, String),
    history_path: Option<String>,
    fold: F,
    wrap: impl FnOnce(F::Out) -> R + Send + 'static,
) -> Result<HttpResponse, ApiError>
where
    F: reports::RowFold + Send + 'static,
    R: serde::Serialize + Send + 'static,
{
    state.engine.campaign(id)?;
    let engine = state.engine.clone();
    let id = id.to_string();
    let body = web::block(move || {
        let out = engine.fold_report(&id, history_path.as_deref(), fold)?;
        Ok::<_, EngineError>(serde_json::to_value(wrap(out)).expect("a report serializes"))
    })
    .await
    .map_err(|e| EngineError::Unavailable {
        message: format!("report worker failed: {e}"),
    })??;
    Ok(csv::respond(&body, out.0, &out.1))
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/reports/actions",
    operation_id = "report_actions",
    tag = "reports",
    summary = "Per action: exposures, reward rate, posterior interval",
    params(("id" = String, Path, description = "Campaign id"), ("format" = Option<String>, Query, description = "json (default) or csv; `Accept: text/csv` also answers CSV")),
    responses(
        (status = 200, body = crate::api::openapi::ActionsReport),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn actions(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let q: Query = query(&req)?;
    read(
        &state,
        &id,
        output(&req, &q, &id, "actions")?,
        |e, id| e.actions_report(id),
        |a| serde_json::json!({ "actions": a }),
    )
    .await
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/reports/lift",
    operation_id = "report_lift",
    tag = "reports",
    summary = "Personalized vs holdout, overall and per bucket",
    params(("id" = String, Path, description = "Campaign id"), ("bucket_seconds" = Option<u64>, Query, description = "Time-series bucket width, default 86400"), ("format" = Option<String>, Query, description = "json (default) or csv; `Accept: text/csv` also answers CSV")),
    responses(
        (status = 200, body = crate::api::openapi::LiftReport),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn lift(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let q: Query = query(&req)?;
    let b = bucket(&q)?;
    let out = output(&req, &q, &id, "lift")?;
    read(&state, &id, out, move |e, id| e.lift_report(id, b), |l| l).await
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/reports/audiences",
    operation_id = "report_audiences",
    tag = "reports",
    summary = "Per-action results, lift and reward over time per value of the campaign's audience_field",
    description = "One entry per value of the context field the campaign names in `audience_field` (at most 20 values, later ones as `other`; `(none)` when the context lacked it), counted from decisions logged while the field was set. `small_sample` flags an audience with fewer than 30 personalized or holdout decisions. `bucket_seconds` must be a whole number of hours.",
    params(("id" = String, Path, description = "Campaign id"), ("bucket_seconds" = Option<u64>, Query, description = "Time-series bucket width, a multiple of 3600, default 86400"), ("format" = Option<String>, Query, description = "json (default) or csv; `Accept: text/csv` also answers CSV")),
    responses(
        (status = 200, body = crate::api::openapi::AudiencesReport),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn audiences(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let q: Query = query(&req)?;
    let b = bucket(&q)?;
    let out = output(&req, &q, &id, "audiences")?;
    read(
        &state,
        &id,
        out,
        move |e, id| e.audiences_report(id, b),
        |a| a,
    )
    .await
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/reports/hidden-gems",
    operation_id = "report_hidden_gems",
    tag = "reports",
    summary = "Rarely shown actions that do well",
    params(("id" = String, Path, description = "Campaign id"), ("max_share" = Option<f64>, Query, description = "Largest exposure share that counts as rarely shown, in (0, 1]"), ("format" = Option<String>, Query, description = "json (default) or csv; `Accept: text/csv` also answers CSV")),
    responses(
        (status = 200, body = crate::api::openapi::GemsReport),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn gems(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let q: Query = query(&req)?;
    if let Some(s) = q.max_share {
        if !(s.is_finite() && s > 0.0 && s <= 1.0) {
            return Err(EngineError::invalid("max_share", "must be in (0, 1]").into());
        }
    }
    let max_share = q.max_share;
    read(
        &state,
        &id,
        output(&req, &q, &id, "hidden-gems")?,
        move |e, id| e.gems_report(id, max_share),
        |g| g,
    )
    .await
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/reports/affinity",
    operation_id = "report_affinity",
    tag = "reports",
    summary = "Category affinity: shoppers who bought X shown items of Y",
    params(("id" = String, Path, description = "Campaign id"), ("history_path" = Option<String>, Query, description = "Dotted context path of the history categories, default history.categories"), ("min_exposures" = Option<u64>, Query, description = "Smallest exposures of a reported pair, default 10"), ("format" = Option<String>, Query, description = "json (default) or csv; `Accept: text/csv` also answers CSV")),
    responses(
        (status = 200, body = crate::api::openapi::AffinityReport),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn affinity(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let q: Query = query(&req)?;
    let path = q
        .history_path
        .clone()
        .unwrap_or_else(|| "history.categories".into());
    if path.is_empty() || path.len() > 200 {
        return Err(EngineError::invalid("history_path", "must be 1-200 characters").into());
    }
    let min = q.min_exposures.unwrap_or(10);
    let fold = reports::AffinityFold::new(&path, min);
    let out = output(&req, &q, &id, "affinity")?;
    report(&state, &id, out, Some(path), fold, |a| a).await
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/reports/policies",
    operation_id = "report_policies",
    tag = "reports",
    summary = "Reward over time per policy",
    params(("id" = String, Path, description = "Campaign id"), ("bucket_seconds" = Option<u64>, Query, description = "Time-series bucket width, default 86400"), ("format" = Option<String>, Query, description = "json (default) or csv; `Accept: text/csv` also answers CSV")),
    responses(
        (status = 200, body = crate::api::openapi::PoliciesReport),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn policies(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let q: Query = query(&req)?;
    let b = bucket(&q)?;
    read(
        &state,
        &id,
        output(&req, &q, &id, "policies")?,
        move |e, id| e.policies_report(id, b),
        move |p| serde_json::json!({ "bucket_seconds": b, "policies": p }),
    )
    .await
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/reports/policy-values",
    operation_id = "report_policy_values",
    tag = "reports",
    summary = "Estimated reward over time of the serving and every shadow policy (replay + SNIPS)",
    params(("id" = String, Path, description = "Campaign id"), ("bucket_seconds" = Option<u64>, Query, description = "Time-series bucket width, default 86400"), ("format" = Option<String>, Query, description = "json (default) or csv; `Accept: text/csv` also answers CSV")),
    responses(
        (status = 200, body = crate::ope::ValueSeriesReport),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn policy_values(
    state: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let q: Query = query(&req)?;
    let b = bucket(&q)?;
    let (format, name) = output(&req, &q, &id, "policy-values")?;
    let rt = state.engine.campaign(&id)?;
    let engine = state.engine.clone();
    let body = web::block(move || {
        crate::ope::value_series(&engine, &rt, b)
            .map(|v| serde_json::to_value(v).expect("a report serializes"))
    })
    .await
    .map_err(|e| EngineError::Unavailable {
        message: format!("report worker failed: {e}"),
    })??;
    Ok(csv::respond(&body, format, &name))
}
