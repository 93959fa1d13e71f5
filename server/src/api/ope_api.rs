//! `/admin/v1/campaigns/{id}/...`: off-policy evaluations, the shadow report and the log export.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::{self, Access, Authorized, Routes, Scope};
use super::body;
use super::error::ApiError;
use super::query::Query;
use super::status;
use crate::audit::Change;
use crate::error::EngineError;
use crate::ope::export::{write_chunks, ExportError, CHUNK_BYTES};
use crate::ope::{self, optimize, EvaluationRequest, Mode, Role};

pub fn configure(r: &mut Routes) {
    let read = Access::viewer(Scope::Path("id"));
    r.post(
        "/admin/v1/campaigns/{id}/evaluations",
        Access::editor(Scope::Path("id")),
        create,
    )
    .get("/admin/v1/campaigns/{id}/evaluations", read, list)
    .get("/admin/v1/campaigns/{id}/evaluations/{eval}", read, get)
    .post(
        "/admin/v1/campaigns/{id}/evaluations/{eval}/apply",
        Access::editor(Scope::Path("id")),
        apply,
    )
    .get("/admin/v1/campaigns/{id}/shadow", read, shadow)
    .get("/admin/v1/campaigns/{id}/log", read, export);
}

/// A time range in the query string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    /// Only `jsonl` (the default) for the log.
    format: Option<String>,
}

fn blocking_error(e: actix_web::error::BlockingError) -> ApiError {
    EngineError::Unavailable {
        message: format!("evaluation worker failed: {e}"),
    }
    .into()
}

#[utoipa::path(
    post,
    path = "/admin/v1/campaigns/{id}/evaluations",
    operation_id = "create_evaluation",
    tag = "evaluation",
    summary = "Run and store an off-policy evaluation (docs/evaluation.md), or start a policy optimization with `\"optimize\": true` (docs/optimization.md; answered `status: running`, finished in the background)",
    params(("id" = String, Path, description = "Campaign id")),
    request_body = Object,
    responses(
        (status = 201, description = "The stored evaluation", body = Object),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "Too many optimizations running", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn create(
    state: Authorized,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let raw = body::read(payload, state.body_limit).await?;
    let request: EvaluationRequest = if raw.iter().all(u8::is_ascii_whitespace) {
        EvaluationRequest::default()
    } else {
        body::parse(&raw)?
    };
    let engine = state.engine.clone();
    let id = id.into_inner();
    // Reading the log and replaying learning is CPU-bound: keep it off the async workers.
    let ev = web::block(move || ope::run_and_store(&engine, &id, request))
        .await
        .map_err(blocking_error)??;
    tracing::info!(campaign = %ev.campaign, evaluation = %ev.id, status = ?ev.status, used = ev.used, "evaluation stored");
    Ok(status::created(ev))
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/evaluations",
    operation_id = "list_evaluations",
    tag = "evaluation",
    summary = "Stored evaluations",
    params(("id" = String, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "`{\"evaluations\": [...]}`", body = Object),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn list(state: Authorized, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let evaluations = ope::list(&state.engine, &id)?;
    Ok(status::ok(
        serde_json::json!({ "evaluations": evaluations }),
    ))
}

#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/evaluations/{eval}",
    operation_id = "get_evaluation",
    tag = "evaluation",
    summary = "One stored evaluation",
    params(("id" = String, Path, description = "Campaign id"), ("eval" = String, Path, description = "Evaluation id")),
    responses(
        (status = 200, body = Object),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign or evaluation", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn get(state: Authorized, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let id = super::path::segment(&req, "id")?;
    let eval = super::path::segment(&req, "eval")?;
    Ok(status::ok(find_evaluation(&state, &id, &eval)?))
}

fn find_evaluation(
    state: &Authorized,
    id: &str,
    eval: &str,
) -> Result<ope::Evaluation, EngineError> {
    ope::list(&state.engine, id)?
        .into_iter()
        .find(|e| e.id == eval)
        .ok_or_else(|| EngineError::EvaluationNotFound {
            id: eval.to_string(),
        })
}

/// Body of `POST .../evaluations/{eval}/apply` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ApplyBody {
    /// The candidate to apply, by name (default: the winner).
    candidate: Option<String>,
}

#[utoipa::path(
    post,
    path = "/admin/v1/campaigns/{id}/evaluations/{eval}/apply",
    operation_id = "apply_evaluation",
    tag = "evaluation",
    summary = "Apply an optimization's winner (or the candidate named in `{\"candidate\"}`) to the campaign: its policy, feature space and exploration (docs/optimization.md). Audited.",
    params(("id" = String, Path, description = "Campaign id"), ("eval" = String, Path, description = "Evaluation id")),
    request_body = Object,
    responses(
        (status = 200, description = "`{\"applied\": name, \"before\", \"after\", \"campaign\"}`", body = Object),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign or evaluation", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "Not a finished optimization, no winner, or the campaign changed since it started", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn apply(
    state: Authorized,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = super::path::segment(&req, "id")?;
    let eval = super::path::segment(&req, "eval")?;
    let raw = body::read(payload, state.body_limit).await?;
    let body: ApplyBody = if raw.iter().all(u8::is_ascii_whitespace) {
        ApplyBody::default()
    } else {
        body::parse(&raw)?
    };
    let ev = find_evaluation(&state, &id, &eval)?;
    let applied = apply_evaluation(
        &state,
        &req,
        &ev,
        body.candidate.as_deref(),
        "evaluation.apply",
    )
    .await?;
    Ok(status::ok(applied))
}

/// Apply `candidate` (default: the winner) of the optimization `ev` to its campaign, audited as
/// `action` by the caller's key with the learning settings before and after. Shared with
/// Personalizer's `applyFromEvaluation`.
pub(crate) async fn apply_evaluation(
    state: &super::AppState,
    req: &HttpRequest,
    ev: &ope::Evaluation,
    candidate: Option<&str>,
    action: &str,
) -> Result<serde_json::Value, ApiError> {
    let setting = optimize::chosen(ev, candidate)?;
    let current = state.engine.campaign(&ev.campaign)?.config.clone();
    let mut config = current.clone();
    optimize::apply_setting(&mut config, ev, setting)?;
    let rt = state.engine.update_campaign_replicated(config).await?;
    let before = optimize::settings_of(&current);
    let after = optimize::settings_of(&rt.config);
    auth::audit(
        state,
        req,
        Change {
            action: action.to_string(),
            campaign: Some(ev.campaign.clone()),
            target: Some(ev.id.clone()),
            before: before.clone(),
            after: after.clone(),
        },
    )
    .await?;
    tracing::info!(campaign = %ev.campaign, evaluation = %ev.id, applied = %setting.name, "optimization applied");
    Ok(serde_json::json!({
        "evaluation": ev.id,
        "applied": setting.name,
        "before": before,
        "after": after,
        "campaign": rt.config,
    }))
}

/// The shadow report: for every configured policy, how often it would have served what was
/// served (agreement) and its estimated value, over a replay of the range. Not stored.
#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/shadow",
    operation_id = "shadow_report",
    tag = "evaluation",
    summary = "Serving and shadow policies: agreement with what was served and estimated value",
    params(("id" = String, Path, description = "Campaign id"), ("from_ms" = Option<u64>, Query, description = "Decisions at or after this instant (ms since the epoch)"), ("to_ms" = Option<u64>, Query, description = "Decisions before this instant")),
    responses(
        (status = 200, body = Object),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn shadow(
    state: Authorized,
    id: web::Path<String>,
    query: Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let q = query.into_inner();
    let id = id.into_inner();
    let ev = web::block(move || {
        let rt = engine.campaign(&id)?;
        ope::evaluate_campaign(
            &engine,
            &rt,
            EvaluationRequest {
                from_ms: q.from_ms,
                to_ms: q.to_ms,
                mode: Mode::Replay,
                ..Default::default()
            },
        )
    })
    .await
    .map_err(blocking_error)??;
    let policies: Vec<serde_json::Value> = ev
        .policies
        .iter()
        .filter(|p| matches!(p.role, Role::Serving | Role::Shadow))
        .map(|p| {
            serde_json::json!({
                "name": p.name,
                "role": p.role,
                "agreement": p.estimate.as_ref().map(|e| e.agreement),
                "value": p.estimate.as_ref().map(|e| e.dr),
                "estimate": p.estimate,
                "refused": p.refused,
            })
        })
        .collect();
    Ok(status::ok(serde_json::json!({
        "campaign": ev.campaign,
        "from_ms": ev.from_ms,
        "to_ms": ev.to_ms,
        "decisions": ev.decisions,
        "used": ev.used,
        "logging": ev.logging,
        "policies": policies,
    })))
}

/// Chunks of the log export waiting for the client (each about [`CHUNK_BYTES`]): a slow client
/// holds the store scan back instead of the export piling up in memory.
const EXPORT_CHANNEL_CHUNKS: usize = 4;

/// The campaign's decision log as JSON lines (docs/evaluation.md), header first, streamed while
/// the store is read (chunked transfer; memory stays bounded whatever the log's size).
#[utoipa::path(
    get,
    path = "/admin/v1/campaigns/{id}/log",
    operation_id = "export_log",
    tag = "evaluation",
    summary = "The decision log as JSON lines, header first",
    params(("id" = String, Path, description = "Campaign id"), ("from_ms" = Option<u64>, Query, description = "Decisions at or after this instant (ms since the epoch)"), ("to_ms" = Option<u64>, Query, description = "Decisions before this instant"), ("format" = Option<String>, Query, description = "Only `jsonl`")),
    responses(
        (status = 200, description = "JSON lines", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "Invalid input; `error.field` names it", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such campaign", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No key, or an unknown or revoked one", body = crate::api::openapi::ErrorBody),
        (status = 403, description = "The key's role or campaign scope does not allow this", body = crate::api::openapi::ErrorBody)
    )
)]
async fn export(
    state: Authorized,
    id: web::Path<String>,
    query: Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    if q.format.as_deref().is_some_and(|f| f != "jsonl") {
        return Err(EngineError::invalid("format", "only \"jsonl\" is supported").into());
    }
    let rt = state.engine.campaign(&id)?;
    let store = state.engine.store().clone();
    let id = id.into_inner();
    // The reward index is built before the response starts, so a store failure here is still a
    // 500; a failure while streaming can only cut the response short.
    let index = web::block({
        let store = store.clone();
        let id = id.clone();
        move || ope::reward_index(store.as_ref(), &id)
    })
    .await
    .map_err(blocking_error)?
    .map_err(EngineError::from)?;
    let header = ope::header(&rt.config, q.from_ms, q.to_ms);
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<web::Bytes, std::io::Error>>(EXPORT_CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let lines = ope::log_lines(store.as_ref(), &id, q.from_ms, q.to_ms, &index);
        let sent = write_chunks(&header, lines, CHUNK_BYTES, |chunk| {
            tx.blocking_send(Ok(web::Bytes::from(chunk))).is_ok()
        });
        match sent {
            Ok(n) => {
                tracing::debug!(campaign = %id, lines = n.lines, unreadable = n.unreadable, "log exported");
            }
            Err(ExportError::Closed) => {
                tracing::debug!(campaign = %id, "log export stopped: the client went away");
            }
            Err(ExportError::Store(e)) => {
                tracing::error!(campaign = %id, error = %e, "log export cut short");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(status::ok_builder()
        .content_type("application/x-ndjson")
        .streaming(body))
}
