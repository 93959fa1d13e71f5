//! The one place where the server chooses HTTP statuses (docs/errors.md).
//!
//! - [`classify`] is the one table: every error (an [`EngineError`] or the API layer's own
//!   [`TransportError`]) to its status and Tailor's error code.
//! - The native body (`{"error": {"code", "message", "field"}}`) and the Personalizer-compatible
//!   body (`{"error": {"code", "message", "target", "innerError": {"code"}}}`) are both rendered
//!   from that classification; [`personalizer`] only renames the status in Azure's words, with
//!   one documented difference (a closed reward window).
//! - Successful answers go through [`ok`], [`created`], [`no_content`] and [`ok_builder`], and
//!   the readiness probe's 503 through [`not_ready`].
//!
//! A test below fails when a status is chosen anywhere else in the server's source.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use serde::Serialize;
use tailor_wire::ErrorBody;

use super::error::{ApiError, TransportError};
use super::personalizer::error::PzError;
use crate::error::EngineError;

/// Every error's status and Tailor's error code (`error.code` natively, `innerError.code` on the
/// Personalizer surface).
pub fn classify(e: &ApiError) -> (StatusCode, &'static str) {
    use EngineError as E;
    use TransportError as T;
    match e {
        ApiError::Engine(e) => match e {
            E::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_field"),
            E::CampaignNotFound { .. } => (StatusCode::NOT_FOUND, "campaign_not_found"),
            E::CampaignExists { .. } => (StatusCode::CONFLICT, "campaign_exists"),
            E::ConfigConflict { .. } => (StatusCode::CONFLICT, "config_conflict"),
            E::PreconditionFailed { .. } => {
                (StatusCode::PRECONDITION_FAILED, "precondition_failed")
            }
            E::EventNotFound { .. } => (StatusCode::NOT_FOUND, "event_not_found"),
            E::EventIdConflict { .. } => (StatusCode::CONFLICT, "event_id_conflict"),
            E::AmbiguousEvent { .. } => (StatusCode::CONFLICT, "ambiguous_event"),
            E::RewardWindowClosed { .. } => (StatusCode::GONE, "reward_window_closed"),
            E::NoReward { .. } => (StatusCode::CONFLICT, "no_reward"),
            E::ReturnWindowClosed { .. } => (StatusCode::GONE, "return_window_closed"),
            E::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            E::KeyNotFound { .. } => (StatusCode::NOT_FOUND, "key_not_found"),
            E::ShopperNotFound { .. } => (StatusCode::NOT_FOUND, "shopper_not_found"),
            E::FrequencyCapped { .. } => (StatusCode::TOO_MANY_REQUESTS, "frequency_capped"),
            E::EvaluationNotFound { .. } => (StatusCode::NOT_FOUND, "evaluation_not_found"),
            E::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            E::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
        },
        ApiError::Transport(e) => match e {
            T::Malformed { .. } => (StatusCode::BAD_REQUEST, "malformed_json"),
            T::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            T::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            T::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
            T::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            T::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            T::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            T::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            T::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            T::NotImplemented { .. } => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
            T::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        },
    }
}

/// The Personalizer surface's status and Azure error code (`error.code`) for an error: the
/// status [`classify`] gives, named as Azure names it, except for the one difference:
/// Personalizer had no 410, so a closed reward window is a 400 `BadRequest` there (its reward
/// routes answer a late reward 204 before it gets here, as Personalizer did).
pub fn personalizer(e: &ApiError) -> (StatusCode, &'static str) {
    let status = match e {
        ApiError::Engine(EngineError::RewardWindowClosed { .. }) => StatusCode::BAD_REQUEST,
        _ => classify(e).0,
    };
    (status, azure_code(status))
}

/// Azure's error code for a status. Azure has no code for 413: it is a `BadRequest`.
fn azure_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => "BadRequest",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "ResourceNotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::REQUEST_TIMEOUT => "RequestTimeout",
        StatusCode::CONFLICT => "Conflict",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        StatusCode::NOT_IMPLEMENTED => "NotImplemented",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        s if s.is_client_error() => "BadRequest",
        _ => "InternalServerError",
    }
}

/// An error response of either surface: logged when the server is at fault, counted by Tailor's
/// code, with `Allow` (405), `Retry-After` (load) and a closed connection (body timeout).
fn respond(
    e: &ApiError,
    status: StatusCode,
    code: &'static str,
    body: impl Serialize,
) -> HttpResponse {
    if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
        tracing::error!(error = %e, "request failed");
    }
    metrics::counter!("tailor_http_errors_total", "code" => code).increment(1);
    let mut res = HttpResponse::build(status);
    if let ApiError::Transport(TransportError::MethodNotAllowed { allow }) = e {
        res.insert_header((header::ALLOW, *allow));
    }
    if let Some(s) = e.retry_after_s() {
        res.insert_header((header::RETRY_AFTER, s));
    }
    if matches!(e, ApiError::Transport(TransportError::BodyTimeout { .. })) {
        // The rest of the body may still come; this connection cannot carry another request.
        res.force_close();
    }
    res.json(body)
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        classify(self).0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, detail) = self.detail();
        respond(self, status, classify(self).1, ErrorBody { error: detail })
    }
}

impl ResponseError for PzError {
    fn status_code(&self) -> StatusCode {
        personalizer(self.error()).0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, azure) = personalizer(self.error());
        let code = classify(self.error()).1;
        respond(self.error(), status, code, self.body(azure, code))
    }
}

/// 200 with a JSON body.
pub fn ok(body: impl Serialize) -> HttpResponse {
    HttpResponse::Ok().json(body)
}

/// 201 with a JSON body: something was created (a campaign, a key, an evaluation, a
/// Personalizer ranking).
pub fn created(body: impl Serialize) -> HttpResponse {
    HttpResponse::Created().json(body)
}

/// 204, no body.
pub fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

/// A 200 for the caller to finish: another content type, extra headers, a stream.
pub fn ok_builder() -> HttpResponseBuilder {
    HttpResponse::Ok()
}

/// 503 with the readiness probe's own body (`/readyz` while the store does not answer): a probe
/// answers in one shape whether ready or not, not in the error shape.
pub fn not_ready(body: impl Serialize) -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(body)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::StoreError;

    /// Every error with its native status and code and its Personalizer status and Azure code.
    /// The public contract (docs/errors.md): changing a row is an API change.
    #[rustfmt::skip]
    fn table() -> Vec<(ApiError, u16, &'static str, u16, &'static str)> {
        use EngineError as E;
        use TransportError as T;
        let s = String::new;
        vec![
            (E::invalid("f", "m").into(), 400, "invalid_field", 400, "BadRequest"),
            (E::CampaignNotFound { id: s() }.into(), 404, "campaign_not_found", 404, "ResourceNotFound"),
            (E::CampaignExists { id: s() }.into(), 409, "campaign_exists", 409, "Conflict"),
            (E::ConfigConflict { id: s(), revision: 1 }.into(), 409, "config_conflict", 409, "Conflict"),
            (E::PreconditionFailed { id: s(), current: s() }.into(), 412, "precondition_failed", 412, "BadRequest"),
            (E::EventNotFound { id: s() }.into(), 404, "event_not_found", 404, "ResourceNotFound"),
            (E::EventIdConflict { id: s() }.into(), 409, "event_id_conflict", 409, "Conflict"),
            (E::AmbiguousEvent { id: s(), campaigns: vec![] }.into(), 409, "ambiguous_event", 409, "Conflict"),
            // The one difference: Personalizer had no 410.
            (E::RewardWindowClosed { id: s() }.into(), 410, "reward_window_closed", 400, "BadRequest"),
            (E::NoReward { id: s(), detail: s() }.into(), 409, "no_reward", 409, "Conflict"),
            (E::ReturnWindowClosed { id: s() }.into(), 410, "return_window_closed", 410, "BadRequest"),
            (E::Unavailable { message: s() }.into(), 503, "unavailable", 503, "ServiceUnavailable"),
            (E::KeyNotFound { id: s() }.into(), 404, "key_not_found", 404, "ResourceNotFound"),
            (E::ShopperNotFound { id: s() }.into(), 404, "shopper_not_found", 404, "ResourceNotFound"),
            (E::FrequencyCapped { next_allowed: s() }.into(), 429, "frequency_capped", 429, "TooManyRequests"),
            (E::Storage(StoreError::Schema { found: 0, expected: 1 }).into(), 500, "storage_error", 500, "InternalServerError"),
            (T::Malformed { field: s(), message: s() }.into(), 400, "malformed_json", 400, "BadRequest"),
            (T::PayloadTooLarge { limit: 1 }.into(), 413, "payload_too_large", 413, "BadRequest"),
            (T::BodyTimeout { timeout_ms: 1 }.into(), 408, "body_timeout", 408, "RequestTimeout"),
            (T::Unauthorized { message: s() }.into(), 401, "unauthorized", 401, "Unauthorized"),
            (T::Forbidden { message: s() }.into(), 403, "forbidden", 403, "Forbidden"),
            (T::Overloaded { in_flight: 1, retry_after_s: 1 }.into(), 503, "overloaded", 503, "ServiceUnavailable"),
            (T::RateLimited { scope: s(), retry_after: Duration::from_millis(1) }.into(), 429, "rate_limited", 429, "TooManyRequests"),
            (T::NotFound { message: s() }.into(), 404, "not_found", 404, "ResourceNotFound"),
            (T::MethodNotAllowed { allow: "GET" }.into(), 405, "method_not_allowed", 405, "MethodNotAllowed"),
            (T::NotImplemented { what: s() }.into(), 501, "not_implemented", 501, "NotImplemented"),
            (T::Internal { message: s() }.into(), 500, "internal", 500, "InternalServerError"),
        ]
    }

    #[test]
    fn one_map_for_both_surfaces() {
        for (e, status, code, pz_status, azure) in table() {
            assert_eq!(
                classify(&e),
                (StatusCode::from_u16(status).unwrap(), code),
                "{e:?}"
            );
            assert_eq!(
                personalizer(&e),
                (StatusCode::from_u16(pz_status).unwrap(), azure),
                "{e:?}"
            );
            // Both bodies come from the classification.
            let native = e.error_response();
            assert_eq!(native.status().as_u16(), status, "{e:?}");
            let pz = PzError::from(e).error_response();
            assert_eq!(pz.status().as_u16(), pz_status);
        }
    }

    #[test]
    fn load_refusals_say_when_to_retry() {
        let e = ApiError::from(TransportError::RateLimited {
            scope: "key \"k\"".into(),
            retry_after: Duration::from_millis(1_200),
        });
        let r = e.error_response();
        assert_eq!(r.headers().get("retry-after").unwrap(), "2");
        let r = PzError::from(e).error_response();
        assert_eq!(r.headers().get("retry-after").unwrap(), "2");
        let r = PzError::method_not_allowed("GET, PUT").error_response();
        assert_eq!(r.headers().get("allow").unwrap(), "GET, PUT");
    }

    /// The rule: no status is chosen outside this module. In the server's source (tests modules
    /// and comments aside), outside `api/status.rs`, none of these may appear:
    ///
    /// - `StatusCode::` (a status constant, or `from_u16`);
    /// - `HttpResponse::` (a constructor such as `Ok()` or `NotFound()`, `build(`, `new(`);
    /// - `HttpResponseBuilder::`;
    /// - `ResponseError for` (an error type choosing its own status, or the trait's default 500);
    /// - actix's `ErrorXxx(...)` helpers (`ErrorBadRequest(e)`) and `InternalError`.
    ///
    /// Handlers answer with `status::ok`/`created`/`no_content`/`ok_builder` or fail with an
    /// `ApiError`/`PzError`. There are no exceptions.
    #[test]
    fn no_status_is_chosen_outside_this_module() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let this = src.join("api").join("status.rs");
        let mut offenders = Vec::new();
        let mut scanned = 0;
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("source dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") || path == this {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("source");
                scanned += 1;
                for (i, line) in code_lines(&text) {
                    if let Some(what) = chooses_status(line) {
                        offenders.push(format!(
                            "{}:{}: {what}: {}",
                            path.display(),
                            i + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
        assert!(scanned > 40, "only {scanned} source files found");
        assert!(
            offenders.is_empty(),
            "statuses chosen outside api/status.rs (use its helpers or an ApiError):\n{}",
            offenders.join("\n")
        );
    }

    /// The lines a file's code is on: comment lines and a trailing `#[cfg(test)] mod ...` are
    /// left out (tests assert statuses, they do not choose them).
    fn code_lines(text: &str) -> Vec<(usize, &str)> {
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            if t.starts_with("#[cfg(test)]")
                && lines
                    .get(i + 1)
                    .is_some_and(|next| next.trim_start().starts_with("mod "))
            {
                break;
            }
            if !t.starts_with("//") {
                out.push((i, *line));
            }
        }
        out
    }

    /// What in `line` chooses a status, if anything.
    fn chooses_status(line: &str) -> Option<&'static str> {
        for (token, what) in [
            ("StatusCode::", "a status code"),
            ("HttpResponse::", "a response constructor"),
            ("HttpResponseBuilder::", "a response builder"),
            ("ResponseError for", "an error type with its own status"),
            ("InternalError", "actix's InternalError"),
        ] {
            if line.contains(token) {
                return Some(what);
            }
        }
        // actix_web::error::ErrorBadRequest(e) and its siblings.
        let bytes = line.as_bytes();
        let mut from = 0;
        while let Some(at) = line[from..].find("Error") {
            let start = from + at;
            from = start + 5;
            let ident_before = start > 0 && {
                let c = bytes[start - 1];
                c.is_ascii_alphanumeric() || c == b'_'
            };
            if ident_before || !bytes.get(from).is_some_and(u8::is_ascii_uppercase) {
                continue;
            }
            let end = line[from..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(line.len(), |n| from + n);
            // actix's helpers are `Error` + a status name; other `Error…(` identifiers
            // (`ErrorPath(..)`) are not status choices.
            let status_name = [
                "BadRequest",
                "Unauthorized",
                "Forbidden",
                "NotFound",
                "MethodNotAllowed",
                "NotAcceptable",
                "RequestTimeout",
                "Conflict",
                "Gone",
                "PayloadTooLarge",
                "UnprocessableEntity",
                "TooManyRequests",
                "InternalServerError",
                "NotImplemented",
                "BadGateway",
                "ServiceUnavailable",
                "GatewayTimeout",
            ]
            .contains(&&line[from..end]);
            if status_name && line[end..].starts_with('(') {
                return Some("an actix error helper");
            }
        }
        None
    }

    #[test]
    fn the_scan_finds_what_it_forbids() {
        for line in [
            "    HttpResponse::Ok().json(x)",
            "HttpResponse::build(StatusCode::GONE)",
            "let s = actix_web::http::StatusCode::NOT_FOUND;",
            "Err(actix_web::error::ErrorBadRequest(e))",
            "impl ResponseError for Mine {}",
        ] {
            assert!(chooses_status(line).is_some(), "{line}");
        }
        for line in [
            "let (status, detail) = e.detail();",
            "ErrorDetail { code, message, field }",
            "fn f() -> Result<HttpResponse, ApiError> {",
            "Err(ApiError::from(e))",
            "if res.status().is_success() {",
        ] {
            assert!(chooses_status(line).is_none(), "{line}");
        }
        let text = "a\n// HttpResponse::Ok()\nb\n#[cfg(test)]\nmod tests {\nStatusCode::OK\n}";
        let kept: Vec<&str> = code_lines(text).into_iter().map(|(_, l)| l).collect();
        assert_eq!(kept, ["a", "b"]);
    }
}
