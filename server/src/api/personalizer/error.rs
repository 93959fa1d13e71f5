//! Errors of the Personalizer-compatible surface, in Personalizer's body shape:
//! `{"error": {"code": "BadRequest", "message": "...", "target": "field", "innerError": {"code":
//! "invalid_field"}}}`. The status codes follow Personalizer's (400, 401, 403, 404, 409, 501, ...);
//! `innerError.code` carries Tailor's own code (docs/api.md) for support. `target` names the
//! field as the caller sent it (`actions[2].id`, `eventId`), never Tailor's internal name
//! ([`target_of`]).

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
    /// The methods a path answers, for a 405's `Allow` header.
    allow: Option<&'static str>,
    /// Seconds for a 429's or 503's `Retry-After` header.
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
            allow: None,
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
            allow: None,
            retry_after_s: None,
        }
    }

    /// 405 for a Personalizer path called with a method it does not answer; `allow` lists the
    /// methods it does (`GET, PUT`), sent back in the `Allow` header.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "MethodNotAllowed",
            inner: "method_not_allowed",
            message: format!("this Personalizer operation answers {allow} only"),
            target: None,
            allow: Some(allow),
            retry_after_s: None,
        }
    }

    /// An engine error raised for a decision whose candidates are the request's `actions`
    /// picked by `actions`: candidate `i` is `actions[actions[i]]` (some were excluded or moved).
    pub fn for_actions(e: EngineError, actions: &[usize]) -> Self {
        let target = e.field().map(|f| target_of(f, Some(actions)));
        let mut out = Self::from(e);
        out.target = target;
        out
    }

    /// 404 for an event or resource the caller's learning loop does not have.
    pub fn not_found(message: String) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "ResourceNotFound",
            inner: "not_found",
            message,
            target: None,
            allow: None,
            retry_after_s: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

/// A field path of Tailor's decide request (what the engine names in errors) as the
/// Personalizer request called it: `candidates[i]...` is `actions[j]...` (`j = actions[i]` when
/// the candidates are a selection of the actions, else `i`), `context...` is
/// `contextFeatures...`, `event_id` is `eventId`. Anything else is already the caller's name.
pub fn target_of(field: &str, actions: Option<&[usize]>) -> String {
    if field == "event_id" {
        return "eventId".into();
    }
    if let Some(rest) = field.strip_prefix("context") {
        if rest.is_empty() || rest.starts_with(['.', '[']) {
            return format!("contextFeatures{rest}");
        }
    }
    if let Some(rest) = field.strip_prefix("candidates") {
        if rest.is_empty() {
            return "actions".into();
        }
        if let Some((index, tail)) = rest
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .and_then(|(i, tail)| Some((i.parse::<usize>().ok()?, tail)))
        {
            let j = actions.map_or(Some(index), |m| m.get(index).copied());
            if let Some(j) = j {
                return format!("actions[{j}]{tail}");
            }
            return "actions".into();
        }
    }
    field.to_string()
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
            EngineError::EventIdConflict { .. } => {
                (StatusCode::CONFLICT, "Conflict", "event_id_conflict")
            }
            EngineError::AmbiguousEvent { .. } => {
                (StatusCode::CONFLICT, "Conflict", "ambiguous_event")
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
            target: e.field().map(|f| target_of(f, None)),
            allow: None,
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
        let mut response = HttpResponse::build(self.status);
        if let Some(allow) = self.allow {
            response.insert_header((actix_web::http::header::ALLOW, allow));
        }
        if let Some(s) = self.retry_after_s {
            response.insert_header((actix_web::http::header::RETRY_AFTER, s));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still come; this connection cannot carry another request.
            response.force_close();
        }
        response.json(Body {
            error: Detail {
                code: self.code,
                message: &self.message,
                target: self.target.as_deref(),
                inner_error: Inner { code: self.inner },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_use_the_personalizer_names() {
        for (tailor, personalizer) in [
            ("event_id", "eventId"),
            ("context", "contextFeatures"),
            ("context.user.age", "contextFeatures.user.age"),
            ("candidates", "actions"),
            ("candidates[2].id", "actions[2].id"),
            ("candidates[0].features.ns.x", "actions[0].features.ns.x"),
            // Already Personalizer's names (serde paths of the camelCase wire types).
            ("actions[1].id", "actions[1].id"),
            ("excludedActions", "excludedActions"),
            ("slots[0].baselineAction", "slots[0].baselineAction"),
            ("contextual", "contextual"),
            ("body", "body"),
        ] {
            assert_eq!(target_of(tailor, None), personalizer, "{tailor}");
        }
        // Candidates that are a selection of the actions: candidate 1 is action 3.
        let picked = [0, 3, 4];
        assert_eq!(
            target_of("candidates[1].id", Some(&picked)),
            "actions[3].id"
        );
        assert_eq!(
            target_of("candidates[2].features.a", Some(&picked)),
            "actions[4].features.a"
        );
        assert_eq!(target_of("candidates[9].id", Some(&picked)), "actions");
        assert_eq!(target_of("event_id", Some(&picked)), "eventId");
    }

    #[test]
    fn engine_errors_carry_the_mapped_target() {
        let e = PzError::from(EngineError::invalid("event_id", "too long"));
        assert_eq!(e.target.as_deref(), Some("eventId"));
        let e = PzError::for_actions(
            EngineError::invalid("candidates[1].id", "duplicate"),
            &[0, 2],
        );
        assert_eq!(e.target.as_deref(), Some("actions[2].id"));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = PzError::method_not_allowed("POST");
        assert_eq!(e.status(), StatusCode::METHOD_NOT_ALLOWED);
        let r = e.error_response();
        assert_eq!(r.headers().get("allow").unwrap(), "POST");
    }
}
