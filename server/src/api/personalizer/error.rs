//! Errors of the Personalizer-compatible surface, in Personalizer's body shape:
//! `{"error": {"code": "BadRequest", "message": "...", "target": "field", "innerError": {"code":
//! "invalid_field"}}}`. The status codes follow Personalizer's (400, 401, 403, 404, 409, 501, ...);
//! `innerError.code` carries Tailor's own code (docs/api.md) for support.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::error::EngineError;

/// An error on its way out of a `/personalizer/...` route.
#[derive(Debug)]
pub struct PzError {
    status: StatusCode,
    code: &'static str,
    inner: &'static str,
    message: String,
    target: Option<String>,
    retry_after_s: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    inner_error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
}

impl PzError {
    /// A feature Personalizer had that Tailor does not offer (501).
    pub fn not_implemented(what: &str) -> Self {
        Self {
            status: StatusCode::NOT_IMPLEMENTED,
            code: "NotImplemented",
            inner: "not_implemented",
            message: format!("{what} is not available in Tailor's Personalizer-compatible API (see docs/migrating-from-personalizer.md)"),
            target: None,
            retry_after_s: None,
        }
    }

    /// 404 for a route the Personalizer API never had.
    pub fn no_route() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "ResourceNotFound",
            inner: "not_found",
            message: "no such Personalizer operation".into(),
            target: None,
            retry_after_s: None,
        }
    }

    /// 404 for an event or resource the caller's learning loop does not have.
    pub fn not_found(message: String) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "ResourceNotFound",
            inner: "not_found",
            message,
            target: None,
            retry_after_s: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl std::fmt::Display for PzError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<EngineError> for PzError {
    fn from(e: EngineError) -> Self {
        let (status, code, inner) = match &e {
            EngineError::Malformed { .. } => {
                (StatusCode::BAD_REQUEST, "BadRequest", "malformed_json")
            }
            EngineError::Invalid { .. } => (StatusCode::BAD_REQUEST, "BadRequest", "invalid_field"),
            EngineError::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "BadRequest",
                "payload_too_large",
            ),
            EngineError::CampaignNotFound { .. } => (
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "campaign_not_found",
            ),
            EngineError::EventNotFound { .. } => {
                (StatusCode::NOT_FOUND, "ResourceNotFound", "event_not_found")
            }
            EngineError::KeyNotFound { .. } => {
                (StatusCode::NOT_FOUND, "ResourceNotFound", "key_not_found")
            }
            EngineError::ShopperNotFound { .. } => (
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "shopper_not_found",
            ),
            EngineError::FrequencyCapped { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "frequency_capped",
            ),
            EngineError::CampaignExists { .. } => {
                (StatusCode::CONFLICT, "Conflict", "campaign_exists")
            }
            EngineError::EventConflict { .. } => {
                (StatusCode::CONFLICT, "Conflict", "event_conflict")
            }
            EngineError::RewardWindowClosed { .. } => (
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "reward_window_closed",
            ),
            EngineError::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "unavailable",
            ),
            EngineError::Unauthorized { .. } => {
                (StatusCode::UNAUTHORIZED, "Unauthorized", "unauthorized")
            }
            EngineError::Forbidden { .. } => (StatusCode::FORBIDDEN, "Forbidden", "forbidden"),
            EngineError::BodyTimeout { .. } => (
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                "body_timeout",
            ),
            EngineError::Overloaded { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "overloaded",
            ),
            EngineError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "rate_limited",
            ),
            EngineError::Storage(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "storage_error",
            ),
        };
        Self {
            status,
            code,
            inner,
            message: e.to_string(),
            target: e.field().map(str::to_string),
            retry_after_s: e.retry_after_s(),
        }
    }
}

impl ResponseError for PzError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if self.status.is_server_error() && self.status != StatusCode::NOT_IMPLEMENTED {
            tracing::error!(error = %self.message, "personalizer request failed");
        }
        metrics::counter!("tailor_http_errors_total", "code" => self.inner).increment(1);
        let mut res = HttpResponse::build(self.status);
        if let Some(s) = self.retry_after_s {
            res.insert_header((actix_web::http::header::RETRY_AFTER, s));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still come; this connection cannot carry another request.
            res.force_close();
        }
        res.json(Body {
            error: Detail {
                code: self.code,
                message: &self.message,
                target: self.target.as_deref(),
                inner_error: Inner { code: self.inner },
            },
        })
    }
}
