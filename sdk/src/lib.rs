//! Tailor's Rust SDK: call a Tailor decision server from a storefront.
//!
//! - [`Client`] (built with [`ClientBuilder`]) asks for decisions with a time budget and reports
//!   rewards through a bounded background queue that sends batches, retries with backoff and
//!   jitter, and drains on [`Client::flush`] and [`Client::shutdown`].
//! - [`Decision`] is what a decide returns: the actions to show and their [`DecisionSource`]:
//!   the model, or a [`FallbackReason`] when the server was slow, down or failing. The page
//!   always gets something to render.
//! - [`Error`] is the one error type; [`Counters`] are the client's numbers for ops.
//! - [`wire`] holds the request and response types (the `tailor-wire` crate, shared with the
//!   server).
//! - [`blocking`] wraps the client for callers without an async runtime.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tailor_sdk::wire::{Candidate, DecideRequest};
//! use tailor_sdk::{Client, DecideOptions};
//!
//! # async fn page() -> Result<(), tailor_sdk::Error> {
//! let client = Client::builder("http://127.0.0.1:8080")
//!     .api_key("storefront-key")
//!     .decide_budget(Duration::from_millis(50))
//!     .build()?;
//!
//! let request = DecideRequest {
//!     context: serde_json::json!({"user": {"segment": "gold", "device": "mobile"}}),
//!     candidates: ["sku-1", "sku-2", "sku-3"].into_iter().map(Candidate::new).collect(),
//!     shopper_id: Some("shopper-42".into()),
//!     ..DecideRequest::default()
//! };
//! let options = DecideOptions::new().default_actions(["sku-1"]);
//! let decision = client.decide_with("home", &request, &options).await?;
//! println!("show {:?} (fallback: {})", decision.actions, decision.is_fallback());
//!
//! // Later, when the shopper clicks: queued, sent in the background. A fallback has nothing
//! // to reward, so this is a no-op for one.
//! client.reward_decision(&decision, 1.0)?;
//!
//! // At exit: deliver what is queued (up to 5 s), and keep what could not be sent.
//! let report = client.shutdown(Duration::from_secs(5)).await;
//! assert!(report.undelivered.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! `sdk/examples/storefront.rs` runs a simulated page-render loop against a live server.
//!
//! # Behaviour under failure
//!
//! - **Decide**: a timeout, a transport error, or a 5xx/408/429 answer gives a fallback within
//!   the budget, counted in [`Counters::fallbacks`]. A 4xx (bad request, unknown campaign, bad
//!   key) is a bug in the caller and is returned as [`Error::Server`] so it gets fixed rather
//!   than silently serving defaults forever.
//! - **Reward**: [`Client::reward`] never waits. The queue is bounded; when full it refuses the
//!   new reward with [`Error::QueueFull`] (counted in [`Counters::rewards_rejected`]). Batches
//!   are retried on transport errors, timeouts and 5xx with exponential backoff and jitter,
//!   without limit while the client runs; items the server refuses for good (404 unknown
//!   event, 410 reward window closed, 400 invalid) are dropped and counted in
//!   [`Counters::rewards_dropped`]. Every reward carries a `reward_id`, so a retry never counts
//!   twice.
//! - **TLS**: `https` URLs need the `rustls` feature; the default build is plain HTTP and needs
//!   no C toolchain.

pub mod blocking;
mod client;
mod decision;
mod error;
mod rewards;
pub use tailor_wire as wire;

pub use client::{Client, ClientBuilder, ADJUST_ATTEMPTS};
pub use decision::{DecideOptions, Decision, DecisionSource, FallbackReason};
pub use error::Error;
pub use rewards::{Counters, ShutdownReport};

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Client>();
    is::<blocking::Client>();
    is::<Decision>();
    is::<Error>();
}
