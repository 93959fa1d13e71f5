//! The client's one error type.

use std::time::Duration;

/// Everything a [`Client`](crate::Client) call can fail with.
///
/// [`Client::decide`](crate::Client::decide) turns timeouts, transport failures and 5xx answers
/// into a fallback [`Decision`](crate::Decision) instead; it only returns
/// [`Error::Server`] for a 4xx (a bug in the request, an unknown campaign, a bad key), so such
/// bugs are loud rather than silently served the default.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The base URL given to the builder cannot be used.
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A builder setting is out of range.
    #[error("invalid client setting {field}: {message}")]
    InvalidSetting {
        field: &'static str,
        message: String,
    },
    /// The client needs a Tokio runtime to run its reward sender; none was current.
    #[error("the client must be built inside a Tokio runtime (it spawns its reward sender)")]
    NoRuntime,
    /// An argument the server would refuse anyway, caught before queueing.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    /// The server answered with an error body (`{"error": {code, message, field}}`).
    #[error("server answered {status} {code}: {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    /// No answer within the time allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request did not get through (connection refused or reset, DNS, TLS, ...).
    #[error("transport: {0}")]
    Transport(#[source] reqwest::Error),
    /// The server answered something that is not the expected JSON.
    #[error("could not decode the server's answer: {0}")]
    Decode(String),
    /// The reward queue holds `capacity` rewards already; this one was refused (and counted in
    /// [`Counters::rewards_rejected`](crate::Counters::rewards_rejected)).
    #[error("reward queue is full ({capacity} pending); reward for event {event_id:?} refused")]
    QueueFull { capacity: usize, event_id: String },
    /// [`Client::shutdown`](crate::Client::shutdown) was called; no more rewards are taken.
    #[error("the client is shut down")]
    Closed,
}

impl Error {
    /// Build [`Error::Server`] from a status and a body that should be an `ErrorBody`.
    pub(crate) fn from_body(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<crate::wire::ErrorBody>(body) {
            Ok(b) => Error::Server {
                status,
                code: b.error.code,
                message: b.error.message,
                field: b.error.field,
            },
            Err(_) => Error::Server {
                status,
                code: "http_error".into(),
                message: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
                field: None,
            },
        }
    }
}

/// Whether an HTTP status means "try again later" rather than "this request is wrong".
pub(crate) fn is_transient_status(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_keep_code_and_field_and_survive_a_non_json_body() {
        let body = br#"{"error":{"code":"invalid_field","message":"bad","field":"candidates"}}"#;
        match Error::from_body(400, body) {
            Error::Server {
                status,
                code,
                field,
                ..
            } => {
                assert_eq!((status, code.as_str()), (400, "invalid_field"));
                assert_eq!(field.as_deref(), Some("candidates"));
            }
            other => panic!("{other:?}"),
        }
        match Error::from_body(502, b"<html>bad gateway</html>") {
            Error::Server { code, message, .. } => {
                assert_eq!(code, "http_error");
                assert!(message.contains("bad gateway"));
            }
            other => panic!("{other:?}"),
        }
        assert!(is_transient_status(503) && is_transient_status(429));
        assert!(!is_transient_status(404) && !is_transient_status(410));
    }
}
