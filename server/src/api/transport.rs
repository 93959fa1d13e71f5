//! The outermost middleware: overload shedding and the request-body deadline (issue 17).
//!
//! Every request but the exempt health routes passes here before authentication:
//!
//! - without a body, it is counted in flight at once, or answered 503 `overloaded` with
//!   `Retry-After` when `transport.max_in_flight` requests are already being processed;
//! - with a body, it is refused the same way if the bound is already reached, else its payload is
//!   wrapped in [`body::Deadline`]: the body must end within `transport.body_timeout_ms` of now
//!   (408 `body_timeout` otherwise), and the request is counted in flight only once it has.
//!
//! Connection-level limits (head timeout, keep-alive, connection count) are actix settings, set in
//! `crate::start`; per-key and per-campaign rate limits run after authentication (`api::auth`).

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::HttpMessage;
use futures_util::Stream;

use super::body::{self, Admission, SharedPayload};
use super::error::{ApiError, TransportError};
use super::personalizer::error::PzError;
use super::AppState;

/// Routes that never wait and never count: probes must answer while the server sheds load.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

fn refuse(path: &str, e: TransportError) -> actix_web::Error {
    if path.starts_with("/personalizer") {
        PzError::from(e).into()
    } else {
        ApiError::from(e).into()
    }
}

/// The middleware (see the module documentation).
pub async fn admit(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if exempt(req.path()) {
        return next.call(req).await;
    }
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered")
        .clone();
    let in_flight = &state.transport.in_flight;
    let admission: Admission = Arc::new(OnceLock::new());
    let mut held = None;
    match req.take_payload() {
        Payload::None => {
            let guard = in_flight
                .enter()
                .map_err(|shed| refuse(req.path(), shed.into()))?;
            let _ = admission.set(guard);
        }
        payload => {
            if let Err(shed) = in_flight.check() {
                // Refused before its body was read: close the connection (see below).
                tokio::task::spawn_local(async move { drop(payload) });
                return Err(refuse(req.path(), shed.into()));
            }
            let timeout = state.transport.body_timeout;
            let shared: SharedPayload = Rc::new(RefCell::new(payload));
            let deadline = body::Deadline::new(
                shared.clone(),
                tokio::time::Instant::now() + timeout,
                timeout.as_millis() as u64,
                in_flight.clone(),
                admission.clone(),
            );
            let boxed: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
                Box::pin(deadline);
            req.set_payload(Payload::from(boxed));
            held = Some(shared);
        }
    }
    let res = next.call(req).await;
    // The in-flight count ends with the response (or with the payload, if a handler still holds
    // it).
    let ended = admission.get().is_some();
    drop(admission);
    if let Some(held) = held.filter(|_| !ended) {
        // A body not read to its end (refused, timed out): keep its receiver alive until actix
        // has sent the response, which it does in this same poll. Then actix closes the
        // connection; with the receiver gone it would drain the body instead, and a chunked body
        // that never ends would hold the connection forever.
        tokio::task::spawn_local(async move { drop(held) });
    }
    res
}

/// What the middleware needs, kept in [`AppState`].
#[derive(Debug, Clone)]
pub struct TransportState {
    pub in_flight: Arc<crate::limits::InFlight>,
    pub body_timeout: Duration,
    pub rate_limits: Arc<crate::limits::RateLimits>,
}
