//! The API layer's errors: [`ApiError`] is what a handler fails with, either an [`EngineError`]
//! or a [`TransportError`] (what the HTTP layer refuses on its own). Which status and code each
//! becomes is decided in one place, `api::status` (docs/errors.md).

use std::time::Duration;

use actix_web::http::StatusCode;
use tailor_wire::ErrorDetail;

use crate::error::EngineError;
use crate::limits::Shed;

/// What the HTTP layer refuses before, around or instead of the engine: the request's body,
/// deadline and load, its credentials, and its route.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The request body is not JSON of the expected shape.
    #[error("{field}: {message}")]
    Malformed { field: String, message: String },
    #[error("body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The request body did not arrive in full within `transport.body_timeout_ms`.
    #[error("the request body did not arrive in full within {timeout_ms} ms")]
    BodyTimeout { timeout_ms: u64 },
    /// No credentials, or credentials that match no live key.
    #[error("{message}")]
    Unauthorized { message: String },
    /// A valid key whose role or campaign scope does not allow the request.
    #[error("{message}")]
    Forbidden { message: String },
    /// More requests are being processed than `transport.max_in_flight`; retry later.
    #[error(
        "the server is overloaded ({in_flight} requests in flight); retry after {retry_after_s} s"
    )]
    Overloaded {
        in_flight: usize,
        retry_after_s: u64,
    },
    /// The key's or the campaign's request rate is spent (`rate_limits.*`).
    #[error("rate limit of {scope} exceeded; retry after {} ms", retry_after.as_millis())]
    RateLimited {
        /// `key "ID"` or `campaign "ID"`.
        scope: String,
        retry_after: Duration,
    },
    /// No such route, or (Personalizer surface) a resource that this caller's learning loop
    /// does not have.
    #[error("{message}")]
    NotFound { message: String },
    /// A Personalizer path called with a method it does not answer; `allow` lists the methods it
    /// does (`GET, PUT`), sent back in the `Allow` header.
    #[error("this Personalizer operation answers {allow} only")]
    MethodNotAllowed { allow: &'static str },
    /// A Personalizer feature that Tailor does not offer.
    #[error("{what} is not available in Tailor's Personalizer-compatible API (see docs/migrating-from-personalizer.md)")]
    NotImplemented { what: String },
    /// The server failed in a way no request can fix (a worker thread lost).
    #[error("{message}")]
    Internal { message: String },
}

impl TransportError {
    /// Seconds a client should wait before retrying (the `Retry-After` header), for the errors
    /// that are about load rather than the request.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::Overloaded { retry_after_s, .. } => Some(*retry_after_s),
            // Round up: a client retrying after a rounded-down wait would be refused again.
            Self::RateLimited { retry_after, .. } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
            }
            _ => None,
        }
    }

    /// The offending field, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Malformed { field, .. } => Some(field),
            Self::PayloadTooLarge { .. } | Self::BodyTimeout { .. } => Some("body"),
            _ => None,
        }
    }
}

impl From<crate::engine::parse::MalformedBody> for TransportError {
    fn from(e: crate::engine::parse::MalformedBody) -> Self {
        Self::Malformed {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<crate::engine::parse::MalformedBody> for ApiError {
    fn from(e: crate::engine::parse::MalformedBody) -> Self {
        Self::Transport(e.into())
    }
}

impl From<Shed> for TransportError {
    fn from(s: Shed) -> Self {
        Self::Overloaded {
            in_flight: s.in_flight,
            retry_after_s: s.retry_after_s,
        }
    }
}

/// An error on its way out as a response (rendered by `api::status`).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Engine(e.into())
    }
}

impl From<Shed> for ApiError {
    fn from(s: Shed) -> Self {
        Self::Transport(s.into())
    }
}

impl ApiError {
    /// 401: no credentials, or credentials that match no live key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        TransportError::Unauthorized {
            message: message.into(),
        }
        .into()
    }

    /// 403: the key's role or campaign scope does not allow the request.
    pub fn forbidden(message: impl Into<String>) -> Self {
        TransportError::Forbidden {
            message: message.into(),
        }
        .into()
    }

    /// The offending field, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Engine(e) => e.field(),
            Self::Transport(e) => e.field(),
        }
    }

    /// Seconds for the `Retry-After` header, for refusals about load.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::Engine(_) => None,
            Self::Transport(e) => e.retry_after_s(),
        }
    }

    /// Status and native JSON detail (`code`, `message`, `field`): the body of an error
    /// response, and of an error reported inside a 200 (batch items).
    pub fn detail(&self) -> (StatusCode, ErrorDetail) {
        let (status, code) = super::status::classify(self);
        (
            status,
            ErrorDetail {
                code: code.to_string(),
                message: self.to_string(),
                field: self.field().map(str::to_string),
            },
        )
    }
}
