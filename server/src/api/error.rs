//! The one place where engine errors become HTTP status codes and JSON bodies.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use tailor_wire::{ErrorBody, ErrorDetail};

use crate::error::EngineError;

/// An [`EngineError`] on its way out as a response.
#[derive(Debug)]
pub struct ApiError(pub EngineError);

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        Self(e)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ApiError {
    fn code(&self) -> (StatusCode, &'static str) {
        match &self.0 {
            EngineError::Malformed { .. } => (StatusCode::BAD_REQUEST, "malformed_json"),
            EngineError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_field"),
            EngineError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            EngineError::CampaignNotFound { .. } => (StatusCode::NOT_FOUND, "campaign_not_found"),
            EngineError::CampaignExists { .. } => (StatusCode::CONFLICT, "campaign_exists"),
            EngineError::EventNotFound { .. } => (StatusCode::NOT_FOUND, "event_not_found"),
            EngineError::EventIdConflict { .. } => (StatusCode::CONFLICT, "event_id_conflict"),
            EngineError::AmbiguousEvent { .. } => (StatusCode::CONFLICT, "ambiguous_event"),
            EngineError::RewardWindowClosed { .. } => (StatusCode::GONE, "reward_window_closed"),
            EngineError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            EngineError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
            EngineError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            EngineError::KeyNotFound { .. } => (StatusCode::NOT_FOUND, "key_not_found"),
            EngineError::ShopperNotFound { .. } => (StatusCode::NOT_FOUND, "shopper_not_found"),
            EngineError::FrequencyCapped { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "frequency_capped")
            }
            EngineError::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            EngineError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            EngineError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            EngineError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
        }
    }
}

impl ApiError {
    /// Status and JSON detail, for errors reported inside a 200 (batch items).
    pub fn detail(&self) -> (StatusCode, ErrorDetail) {
        let (status, code) = self.code();
        (
            status,
            ErrorDetail {
                code: code.to_string(),
                message: self.0.to_string(),
                field: self.0.field().map(str::to_string),
            },
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.code();
        if status.is_server_error() {
            tracing::error!(error = %self.0, "request failed");
        }
        metrics::counter!("tailor_http_errors_total", "code" => code).increment(1);
        let mut res = HttpResponse::build(status);
        if let Some(s) = self.0.retry_after_s() {
            res.insert_header((actix_web::http::header::RETRY_AFTER, s));
        }
        if matches!(self.0, EngineError::BodyTimeout { .. }) {
            // The rest of the body may still come; this connection cannot carry another request.
            res.force_close();
        }
        res.json(ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: self.0.to_string(),
                field: self.0.field().map(str::to_string),
            },
        })
    }
}

/// A JSON error for failures outside the engine (unknown route, wrong method).
pub fn plain(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message: message.to_string(),
            field: None,
        },
    })
}
