//! Reading and parsing request bodies with a size limit, a time limit and field-level JSON
//! errors.
//!
//! The time limit is [`Deadline`], a wrapper that `api::transport` puts around every request's
//! payload: a body that has not ended `transport.body_timeout_ms` after the request head fails
//! with [`BodyRefusal::TimedOut`], which [`read`] turns into 408 `body_timeout`. The wrapper also
//! counts the request in flight once its body has ended (a request still waiting for its body
//! costs no CPU and must not shed others), refusing it with 503 `overloaded` when the bound is
//! reached.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::web::{self, Bytes};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use tokio::time::{Instant, Sleep};

use super::error::TransportError;
use crate::limits::{InFlight, InFlightGuard, Shed};

/// Why [`Deadline`] ended a body early; carried inside a `PayloadError::Io`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyRefusal {
    #[error("the request body did not arrive in full within {timeout_ms} ms")]
    TimedOut { timeout_ms: u64 },
    #[error("overloaded: {} requests in flight", .0.in_flight)]
    Overloaded(Shed),
}

impl From<BodyRefusal> for TransportError {
    fn from(r: BodyRefusal) -> Self {
        match r {
            BodyRefusal::TimedOut { timeout_ms } => TransportError::BodyTimeout { timeout_ms },
            BodyRefusal::Overloaded(shed) => shed.into(),
        }
    }
}

/// The [`BodyRefusal`] inside a payload error, if that is what it is.
pub fn refusal(e: &PayloadError) -> Option<BodyRefusal> {
    match e {
        PayloadError::Io(io) => io.get_ref()?.downcast_ref::<BodyRefusal>().cloned(),
        _ => None,
    }
}

/// Where a request's in-flight count is kept once its body has ended; shared by the middleware
/// (which drops its handle after the response) and the payload (dropped when read).
pub type Admission = Arc<OnceLock<InFlightGuard>>;

/// The connection's payload receiver, shared by [`Deadline`] and the response (see
/// `api::transport`): while a receiver is alive, actix closes a connection whose body was not read
/// to its end instead of draining it, which for a stalled chunked body would never finish.
pub type SharedPayload = Rc<RefCell<Payload>>;

/// A payload that fails once `deadline` passes before it ends, and admits its request into
/// [`InFlight`] when it does end.
pub struct Deadline {
    inner: SharedPayload,
    sleep: Pin<Box<Sleep>>,
    timeout_ms: u64,
    in_flight: Arc<InFlight>,
    admission: Admission,
    done: bool,
}

impl Deadline {
    pub fn new(
        inner: SharedPayload,
        deadline: Instant,
        timeout_ms: u64,
        in_flight: Arc<InFlight>,
        admission: Admission,
    ) -> Self {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            timeout_ms,
            in_flight,
            admission,
            done: false,
        }
    }

    fn fail(&mut self, r: BodyRefusal) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.done = true;
        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            r,
        )))))
    }

    fn timed_out(&mut self) -> Poll<Option<Result<Bytes, PayloadError>>> {
        metrics::counter!("tailor_body_timeouts_total").increment(1);
        let timeout_ms = self.timeout_ms;
        self.fail(BodyRefusal::TimedOut { timeout_ms })
    }
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut *this.inner.borrow_mut()).poll_next(cx);
        match polled {
            Poll::Ready(Some(Ok(chunk))) => {
                // A trickle whose every poll finds a byte waiting still meets the deadline.
                if Instant::now() >= this.sleep.deadline() {
                    return this.timed_out();
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => match this.in_flight.enter() {
                Ok(guard) => {
                    this.done = true;
                    let _ = this.admission.set(guard);
                    Poll::Ready(None)
                }
                Err(shed) => this.fail(BodyRefusal::Overloaded(shed)),
            },
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => this.timed_out(),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Read the whole body, refusing more than `limit` bytes.
pub async fn read(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, TransportError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match refusal(&e) {
            Some(r) => r.into(),
            None => TransportError::Malformed {
                field: "body".into(),
                message: format!("could not read the body: {e}"),
            },
        })?;
        if body.len() + chunk.len() > limit {
            return Err(TransportError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parse JSON, naming the path of the first offending field (e.g. `candidates[2].id`).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, TransportError> {
    if body.is_empty() {
        return Err(TransportError::Malformed {
            field: "body".into(),
            message: "a JSON body is required".into(),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." || path == "?" || path.is_empty() {
            missing_field(&inner.to_string()).unwrap_or_else(|| "body".to_string())
        } else {
            match missing_field(&inner.to_string()) {
                Some(f) => format!("{path}.{f}"),
                None => path,
            }
        };
        TransportError::Malformed {
            field,
            message: inner.to_string(),
        }
    })?;
    de.end().map_err(|e| TransportError::Malformed {
        field: "body".into(),
        message: e.to_string(),
    })?;
    Ok(value)
}

/// serde reports a missing field at its parent's path; name the field itself.
pub(crate) fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailor_wire::DecideRequest;

    fn field_of(body: &str) -> String {
        match parse::<DecideRequest>(body.as_bytes()).unwrap_err() {
            TransportError::Malformed { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_fields() {
        assert_eq!(field_of(r#"{"context": {}}"#), "candidates");
        assert_eq!(
            field_of(r#"{"candidates": [{"id": 3}]}"#),
            "candidates[0].id"
        );
        assert_eq!(
            field_of(r#"{"candidates": [{"features": {}}]}"#),
            "candidates[0].id"
        );
        assert_eq!(field_of(r#"{"candidates": [], "k": "x"}"#), "k");
        assert_eq!(field_of(r#"{"candidates": [], "bogus": 1}"#), "bogus");
        assert_eq!(field_of("{"), "body");
        assert_eq!(field_of(""), "body");
    }
}
