//! `/v1`: decide and reward, the storefront-facing calls.

use std::time::Instant;

use actix_web::{web, HttpResponse};
use tailor_sdk::wire::{DecideRequest, RewardRequest};

use super::error::ApiError;
use super::{body, AppState};
use crate::engine::DecideInput;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/campaigns/{campaign}/decide", web::post().to(decide))
        .route("/v1/events/{event_id}/reward", web::post().to(reward));
}

async fn decide(
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let raw = body::read(payload, state.body_limit).await?;
    let request: DecideRequest = body::parse(&raw)?;
    let response = state.engine.decide(&path, DecideInput { request, raw })?;
    metrics::histogram!("tailor_decide_seconds").record(started.elapsed().as_secs_f64());
    Ok(HttpResponse::Ok().json(response))
}

async fn reward(
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let raw = body::read(payload, state.body_limit).await?;
    let request: RewardRequest = body::parse(&raw)?;
    let response = state.engine.reward(&path, request).await?;
    metrics::histogram!("tailor_reward_seconds").record(started.elapsed().as_secs_f64());
    Ok(HttpResponse::Ok().json(response))
}
