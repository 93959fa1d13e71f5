//! A blocking [`Client`] for callers without an async runtime (a synchronous web framework, a
//! batch job). It owns a small Tokio runtime whose one worker thread runs the reward sender;
//! each call blocks the calling thread until it is done.
//!
//! Do not call it from inside an async runtime (Tokio panics when a runtime blocks inside
//! another); use [`crate::Client`] there.
//!
//! ```no_run
//! use std::time::Duration;
//! use tailor_sdk::blocking::Client;
//! use tailor_sdk::wire::{Candidate, DecideRequest};
//! use tailor_sdk::ClientBuilder;
//!
//! let client = Client::new(ClientBuilder::new("http://127.0.0.1:8080"))?;
//! let request = DecideRequest {
//!     candidates: vec![Candidate::new("sku-1"), Candidate::new("sku-2")],
//!     ..DecideRequest::default()
//! };
//! let decision = client.decide("home", &request)?;
//! client.reward_decision(&decision, 1.0)?;
//! client.shutdown(Duration::from_secs(5));
//! # Ok::<(), tailor_sdk::Error>(())
//! ```

use std::time::Duration;

use crate::decision::{DecideOptions, Decision};
use crate::rewards::{Counters, ShutdownReport};
use crate::wire::{BatchReward, CampaignStats, DecideRequest};
use crate::{ClientBuilder, Error};

/// The blocking twin of [`crate::Client`]; same semantics, same counters.
#[derive(Debug)]
pub struct Client {
    inner: crate::Client,
    runtime: tokio::runtime::Runtime,
    drop_grace: Duration,
}

impl Drop for Client {
    /// Dropping the runtime would stop the reward sender mid-queue, so a drop without
    /// [`Client::shutdown`] first drains for the builder's drop grace (a no-op after shutdown).
    /// Inside an async runtime blocking is not allowed; there the queue is abandoned.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            self.runtime.block_on(self.inner.shutdown(self.drop_grace));
        } else if self.inner.counters().rewards_pending > 0 {
            tracing::warn!(
                pending = self.inner.counters().rewards_pending,
                "blocking client dropped inside an async runtime without shutdown; rewards abandoned"
            );
        }
    }
}

impl Client {
    /// Start a runtime and build the client on it.
    pub fn new(builder: ClientBuilder) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tailor-sdk")
            .enable_all()
            .build()
            .map_err(|e| Error::InvalidSetting {
                field: "runtime",
                message: e.to_string(),
            })?;
        let drop_grace = builder.drop_grace;
        let inner = runtime.block_on(async { builder.build() })?;
        Ok(Self {
            inner,
            runtime,
            drop_grace,
        })
    }

    /// See [`crate::Client::decide`].
    pub fn decide(&self, campaign: &str, request: &DecideRequest) -> Result<Decision, Error> {
        self.runtime.block_on(self.inner.decide(campaign, request))
    }

    /// See [`crate::Client::decide_with`].
    pub fn decide_with(
        &self,
        campaign: &str,
        request: &DecideRequest,
        options: &DecideOptions,
    ) -> Result<Decision, Error> {
        self.runtime
            .block_on(self.inner.decide_with(campaign, request, options))
    }

    /// See [`crate::Client::reward`]. Never blocks.
    pub fn reward(&self, event_id: impl Into<String>, value: f64) -> Result<(), Error> {
        self.inner.reward(event_id, value)
    }

    /// See [`crate::Client::reward_in`]. Never blocks.
    pub fn reward_in(
        &self,
        campaign: impl Into<String>,
        event_id: impl Into<String>,
        value: f64,
    ) -> Result<(), Error> {
        self.inner.reward_in(campaign, event_id, value)
    }

    /// See [`crate::Client::reward_decision`]. Never blocks.
    pub fn reward_decision(&self, decision: &Decision, value: f64) -> Result<bool, Error> {
        self.inner.reward_decision(decision, value)
    }

    /// See [`crate::Client::reward_with`]. Never blocks.
    pub fn reward_with(&self, reward: BatchReward) -> Result<(), Error> {
        self.inner.reward_with(reward)
    }

    /// See [`crate::Client::flush`].
    pub fn flush(&self) {
        self.runtime.block_on(self.inner.flush());
    }

    /// See [`crate::Client::flush`]; gives up after `timeout` and says whether it finished.
    pub fn flush_timeout(&self, timeout: Duration) -> bool {
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, self.inner.flush()).await })
            .is_ok()
    }

    /// See [`crate::Client::shutdown`].
    pub fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.runtime.block_on(self.inner.shutdown(grace))
    }

    /// See [`crate::Client::campaign_stats`].
    pub fn campaign_stats(&self, campaign: &str) -> Result<CampaignStats, Error> {
        self.runtime.block_on(self.inner.campaign_stats(campaign))
    }

    /// See [`crate::Client::counters`].
    pub fn counters(&self) -> Counters {
        self.inner.counters()
    }

    /// The async client inside, for code that has both worlds.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }
}
