//! [`Client`] and its [`ClientBuilder`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::Url;
use tokio::task::JoinHandle;

use crate::decision::{DecideOptions, Decision, FallbackReason};
use crate::error::{is_transient_status, Error};
use crate::rewards::{Backoff, Counters, Sender, Shared, ShutdownReport, MAX_BATCH};
use crate::wire::{
    AdjustRequest, AdjustResponse, BatchReward, CampaignStats, DecideRequest, DecideResponse,
};

/// Attempts [`Client::adjust`] makes before giving up on a transient failure.
pub const ADJUST_ATTEMPTS: u32 = 4;

/// Settings of a [`Client`]; every one has a default suited to a storefront.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    api_key: Option<String>,
    decide_budget: Duration,
    request_timeout: Duration,
    connect_timeout: Duration,
    queue_capacity: usize,
    batch_size: usize,
    retry_initial: Duration,
    retry_max: Duration,
    pool_max_idle_per_host: usize,
    pool_idle_timeout: Duration,
    pub(crate) drop_grace: Duration,
}

impl ClientBuilder {
    /// Settings for the server at `base_url` (e.g. `http://tailor.internal:8080`).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            decide_budget: Duration::from_millis(100),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            queue_capacity: 100_000,
            batch_size: 500,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            pool_max_idle_per_host: 64,
            pool_idle_timeout: Duration::from_secs(4),
            drop_grace: Duration::from_secs(5),
        }
    }

    /// Send `Authorization: Bearer KEY` with every request.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Default wall-clock budget of a decide, connection included (default 100 ms). Past it,
    /// the decide returns a fallback.
    pub fn decide_budget(mut self, budget: Duration) -> Self {
        self.decide_budget = budget;
        self
    }

    /// Timeout of reward batches and admin calls (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Timeout of establishing a TCP connection (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Most rewards waiting to be sent (default 100,000). When full, `reward` refuses new ones
    /// with [`Error::QueueFull`].
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Most rewards per batch (default 500, at most 1,000).
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size;
        self
    }

    /// First and largest delay between retries of a reward batch (default 100 ms and 10 s).
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial;
        self.retry_max = max;
        self
    }

    /// Idle keep-alive connections kept per host (default 64).
    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.pool_max_idle_per_host = n;
        self
    }

    /// How long an idle keep-alive connection is kept (default 4 s). Keep it below the server's
    /// keep-alive (`transport.keep_alive_ms`, 5 s by default, or a proxy's): a request written
    /// on a connection the server is closing at that moment fails instead of being answered.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// How long the reward sender keeps delivering after the last handle is dropped without
    /// [`Client::shutdown`] (default 5 s).
    pub fn drop_grace(mut self, grace: Duration) -> Self {
        self.drop_grace = grace;
        self
    }

    /// Build the client and start its reward sender on the current Tokio runtime.
    pub fn build(self) -> Result<Client, Error> {
        let invalid = |field, message: &str| Error::InvalidSetting {
            field,
            message: message.to_string(),
        };
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return Err(invalid("batch_size", "must be 1 to 1000"));
        }
        if self.queue_capacity == 0 {
            return Err(invalid("queue_capacity", "must be positive"));
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return Err(invalid(
                "retry_backoff",
                "initial must be positive and at most max",
            ));
        }
        let base = parse_base(&self.base_url)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;

        let mut headers = HeaderMap::new();
        if let Some(key) = &self.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| invalid("api_key", "must be visible ASCII (it goes in a header)"))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("tailor-sdk/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .pool_idle_timeout(self.pool_idle_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(Error::Transport)?;

        let shared = Arc::new(Shared::new(self.queue_capacity));
        let sender = Sender {
            shared: shared.clone(),
            http: http.clone(),
            url: endpoint(&base, &["v1", "rewards"]),
            batch_size: self.batch_size,
            backoff: Backoff {
                initial: self.retry_initial,
                max: self.retry_max,
            },
            request_timeout: self.request_timeout,
        };
        let worker = runtime.spawn(sender.run());
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                decide_budget: self.decide_budget,
                request_timeout: self.request_timeout,
                shared,
                worker: Mutex::new(Some(worker)),
                reward_prefix: rand::random::<u64>(),
                reward_seq: AtomicU64::new(0),
                drop_grace: self.drop_grace,
            }),
        })
    }
}

fn parse_base(url: &str) -> Result<Url, Error> {
    let bad = |reason: &str| Error::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    match parsed.scheme() {
        "http" => {}
        "https" if cfg!(feature = "rustls") => {}
        "https" => return Err(bad("https needs the `rustls` feature of tailor-sdk")),
        _ => return Err(bad("the scheme must be http or https")),
    }
    if parsed.cannot_be_a_base() || parsed.host().is_none() {
        return Err(bad("not a base URL with a host"));
    }
    Ok(parsed)
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) is escaped in a
/// path segment: reserved characters such as `+`, `/`, `%`, `=` or `&` then reach the server as
/// data (a base64 id `a+b/c==` round-trips), whatever the server or a proxy would make of them.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `base` with `segments` appended, each percent-encoded as one path segment.
fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    let mut path = url.path().trim_end_matches('/').to_string();
    for s in segments {
        path.push('/');
        path.extend(percent_encoding::utf8_percent_encode(s, SEGMENT));
    }
    // The escapes are kept as they are: `set_path` does not encode `%` again.
    url.set_path(&path);
    url
}

/// An error and its sources on one line (reqwest's own message omits the cause).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    decide_budget: Duration,
    request_timeout: Duration,
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
    reward_prefix: u64,
    reward_seq: AtomicU64,
    drop_grace: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Without an explicit shutdown, the sender keeps delivering for a grace period and then
        // stops, rather than running forever or dropping the queue on the floor.
        self.shared.close(self.drop_grace);
    }
}

/// A Tailor client: decisions with a time budget and fallback, rewards through a background
/// batching queue. Cheap to clone (one connection pool and one queue, shared).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base.as_str())
            .field("decide_budget", &self.inner.decide_budget)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with default settings; see [`ClientBuilder`] for the rest.
    pub fn new(base_url: impl Into<String>) -> Result<Self, Error> {
        ClientBuilder::new(base_url).build()
    }

    /// Start configuring a client.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url)
    }

    /// Decide with the client's default budget, falling back to the first `k` candidates.
    pub async fn decide(&self, campaign: &str, request: &DecideRequest) -> Result<Decision, Error> {
        self.decide_with(campaign, request, &DecideOptions::default())
            .await
    }

    /// Ask the campaign's policy which candidates to show.
    ///
    /// Returns within the budget (plus scheduling noise). When the server does not answer in
    /// time, cannot be reached, answers 5xx/408/429 or answers garbage, the result is a
    /// [`Decision`] marked [`DecisionSource::Fallback`](crate::DecisionSource::Fallback) with the
    /// options' default actions (or the first `k` candidates). A 4xx is the caller's bug (bad
    /// request, unknown campaign, bad key) and comes back as [`Error::Server`]; wrap the call
    /// if the page should show a default then too.
    pub async fn decide_with(
        &self,
        campaign: &str,
        request: &DecideRequest,
        options: &DecideOptions,
    ) -> Result<Decision, Error> {
        let budget = options.budget.unwrap_or(self.inner.decide_budget);
        let url = endpoint(&self.inner.base, &["v1", "campaigns", campaign, "decide"]);
        let call = async {
            let response = self.inner.http.post(url).json(request).send().await?;
            let status = response.status().as_u16();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        let cells = &self.inner.shared.cells;
        let reason = match tokio::time::timeout(budget, call).await {
            Err(_) => FallbackReason::Timeout { budget },
            Ok(Err(e)) if e.is_builder() => return Err(Error::Transport(e)),
            Ok(Err(e)) => FallbackReason::Unreachable {
                message: error_chain(&e),
            },
            Ok(Ok((status, body))) if (200..300).contains(&status) => {
                match serde_json::from_slice::<DecideResponse>(&body) {
                    Ok(response) => {
                        cells.decisions.fetch_add(1, Ordering::Relaxed);
                        return Ok(Decision::from_response(response));
                    }
                    Err(e) => FallbackReason::InvalidResponse {
                        message: e.to_string(),
                    },
                }
            }
            Ok(Ok((status, body))) if is_transient_status(status) => FallbackReason::ServerError {
                status,
                code: serde_json::from_slice::<crate::wire::ErrorBody>(&body)
                    .ok()
                    .map(|b| b.error.code),
            },
            Ok(Ok((status, body))) => {
                cells.decide_errors.fetch_add(1, Ordering::Relaxed);
                return Err(Error::from_body(status, &body));
            }
        };
        cells.fallbacks.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(campaign, %reason, "decide fell back");
        Ok(Decision::fallback(
            request,
            &options.default_actions,
            reason,
        ))
    }

    /// Queue a reward of `value` for the first slot of `event_id`. Never waits on the network.
    ///
    /// Event ids are per campaign: the server rewards the event of the key's campaign (a
    /// campaign-scoped key) or of the one campaign holding the id. When the same id may exist in
    /// several campaigns, use [`Client::reward_in`].
    pub fn reward(&self, event_id: impl Into<String>, value: f64) -> Result<(), Error> {
        self.reward_with(BatchReward::new(event_id, value))
    }

    /// Queue a reward of `value` for the first slot of `event_id` in `campaign`.
    pub fn reward_in(
        &self,
        campaign: impl Into<String>,
        event_id: impl Into<String>,
        value: f64,
    ) -> Result<(), Error> {
        self.reward_with(BatchReward::new(event_id, value).in_campaign(campaign))
    }

    /// Queue a reward for a decision; `Ok(false)` for a fallback, which has nothing to reward.
    pub fn reward_decision(&self, decision: &Decision, value: f64) -> Result<bool, Error> {
        match decision.event_id() {
            Some(id) => self.reward(id, value).map(|()| true),
            None => Ok(false),
        }
    }

    /// Queue a reward with every field (slot `action_id`, your own `reward_id`).
    ///
    /// Each call is one reward. Without a `reward_id` the client makes a unique one, so the
    /// retries of this call are idempotent on the server and two calls are two rewards (under
    /// `sum` aggregation; `earliest` keeps the first per event anyway). If the same reward may
    /// reach this call twice (an at-least-once event pipeline), pass a stable `reward_id` such
    /// as the order id.
    ///
    /// Overflow policy: when [`ClientBuilder::queue_capacity`] rewards are already waiting, the
    /// new one is refused with [`Error::QueueFull`] (and counted in
    /// [`Counters::rewards_rejected`]); queued rewards keep their place.
    pub fn reward_with(&self, mut reward: BatchReward) -> Result<(), Error> {
        let invalid = |field, message: &str| Error::InvalidArgument {
            field,
            message: message.to_string(),
        };
        if reward.event_id.is_empty() {
            return Err(invalid("event_id", "must not be empty"));
        }
        if reward.campaign.as_deref() == Some("") {
            return Err(invalid("campaign", "must not be empty when given"));
        }
        if !reward.value.is_finite() {
            return Err(invalid("value", "must be a finite number"));
        }
        match &reward.reward_id {
            Some(id) if id.is_empty() || id.len() > 256 => {
                return Err(invalid("reward_id", "must be 1-256 characters"));
            }
            Some(_) => {}
            None => {
                let seq = self.inner.reward_seq.fetch_add(1, Ordering::Relaxed);
                reward.reward_id = Some(format!("sdk-{:016x}-{seq}", self.inner.reward_prefix));
            }
        }
        self.inner.shared.enqueue(reward)
    }

    /// Wait until every reward queued before this call is settled: acknowledged durably by the
    /// server, or dropped for good (see [`Counters::rewards_dropped`]). While the server is down
    /// this waits for it; bound it with `tokio::time::timeout` if needed.
    pub async fn flush(&self) {
        self.inner.shared.flush().await;
    }

    /// Stop taking rewards, deliver what is queued for up to `grace`, and stop the sender.
    /// What could not be delivered in time is handed back (and counted as dropped). Every clone
    /// of this client is shut down too.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.inner.shared.close(grace);
        let worker = self
            .inner
            .worker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match worker {
            Some(handle) => {
                let _ = handle.await;
            }
            None => self.inner.shared.flush().await,
        }
        let undelivered = self.inner.shared.take_undelivered();
        ShutdownReport {
            drained: undelivered.is_empty() && self.inner.shared.is_drained(),
            undelivered,
            counters: self.counters(),
        }
    }

    /// The client's counters right now.
    pub fn counters(&self) -> Counters {
        self.inner.shared.counters()
    }

    /// Correct a reward already applied to `event_id` (a return: `AdjustRequest { value:
    /// Some(0.0), .. }` turns a purchase's 1 into 0; or send `delta`). Sent at once, not queued:
    /// returns once the server made it durable, with the slot's reward before and after.
    ///
    /// Without an `adjustment_id` the client makes a unique one, so retries of this call (on a
    /// timeout, a lost connection or a 5xx, up to [`ADJUST_ATTEMPTS`] attempts) are applied once
    /// and two calls are two adjustments. If the same return may reach this call twice (an
    /// at-least-once pipeline), pass a stable `adjustment_id` such as the return's id. A 4xx is
    /// returned as [`Error::Server`]: 404 unknown event, 409 `no_reward` (nothing applied yet),
    /// 410 `return_window_closed`, 400 a value outside the campaign's `reward_range`.
    pub async fn adjust(
        &self,
        event_id: &str,
        mut request: AdjustRequest,
    ) -> Result<AdjustResponse, Error> {
        let invalid = |field, message: &str| Error::InvalidArgument {
            field,
            message: message.to_string(),
        };
        if event_id.is_empty() {
            return Err(invalid("event_id", "must not be empty"));
        }
        match (request.value, request.delta) {
            (Some(v), None) | (None, Some(v)) if v.is_finite() => {}
            (Some(_), Some(_)) => return Err(invalid("delta", "send value or delta, not both")),
            _ => return Err(invalid("value", "send a finite value (or delta)")),
        }
        match &request.adjustment_id {
            Some(id) if id.is_empty() || id.len() > 256 => {
                return Err(invalid("adjustment_id", "must be 1-256 characters"));
            }
            Some(_) => {}
            None => {
                let seq = self.inner.reward_seq.fetch_add(1, Ordering::Relaxed);
                request.adjustment_id =
                    Some(format!("sdk-adj-{:016x}-{seq}", self.inner.reward_prefix));
            }
        }
        let url = endpoint(&self.inner.base, &["v1", "events", event_id, "adjust"]);
        let timeout = self.inner.request_timeout;
        let mut pause = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let call = async {
                let response = self
                    .inner
                    .http
                    .post(url.clone())
                    .json(&request)
                    .send()
                    .await?;
                let status = response.status().as_u16();
                Ok::<_, reqwest::Error>((status, response.bytes().await?))
            };
            let outcome = match tokio::time::timeout(timeout, call).await {
                Err(_) => Err(Error::Timeout(timeout)),
                Ok(Err(e)) => Err(Error::Transport(e)),
                Ok(Ok((status, body))) if (200..300).contains(&status) => {
                    return serde_json::from_slice(&body).map_err(|e| Error::Decode(e.to_string()))
                }
                Ok(Ok((status, body))) if !is_transient_status(status) => {
                    return Err(Error::from_body(status, &body))
                }
                Ok(Ok((status, body))) => Err(Error::from_body(status, &body)),
            };
            if attempt >= ADJUST_ATTEMPTS {
                return outcome;
            }
            attempt += 1;
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }

    /// `GET /admin/v1/campaigns/{campaign}/stats`.
    pub async fn campaign_stats(&self, campaign: &str) -> Result<CampaignStats, Error> {
        let url = endpoint(
            &self.inner.base,
            &["admin", "v1", "campaigns", campaign, "stats"],
        );
        let timeout = self.inner.request_timeout;
        let call = async {
            let response = self.inner.http.get(url).send().await?;
            let status = response.status().as_u16();
            Ok::<_, reqwest::Error>((status, response.bytes().await?))
        };
        let (status, body) = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| Error::Timeout(timeout))?
            .map_err(Error::Transport)?;
        if !(200..300).contains(&status) {
            return Err(Error::from_body(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| Error::Decode(e.to_string()))
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.inner.base.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_encode_segments_and_keep_a_base_path() {
        let base = parse_base("http://h:1/tailor/").unwrap();
        assert_eq!(
            endpoint(&base, &["v1", "campaigns", "a b/c", "decide"]).as_str(),
            "http://h:1/tailor/v1/campaigns/a%20b%2Fc/decide"
        );
        let base = parse_base("http://h:1").unwrap();
        assert_eq!(
            endpoint(&base, &["v1", "rewards"]).as_str(),
            "http://h:1/v1/rewards"
        );
        // Every reserved character is escaped, so a base64 id stays one segment, unchanged.
        assert_eq!(
            endpoint(&base, &["e", "a+b/c%d==", "x&y;z?#"]).as_str(),
            "http://h:1/e/a%2Bb%2Fc%25d%3D%3D/x%26y%3Bz%3F%23"
        );
        assert_eq!(
            endpoint(&base, &["é ~._-"]).as_str(),
            "http://h:1/%C3%A9%20~._-"
        );
        assert!(parse_base("ftp://h").is_err());
        assert!(parse_base("nonsense").is_err());
    }

    #[test]
    fn building_outside_a_runtime_is_an_error() {
        assert!(matches!(
            Client::new("http://127.0.0.1:1"),
            Err(Error::NoRuntime)
        ));
    }

    #[tokio::test]
    async fn bad_rewards_are_refused_before_queueing() {
        let client = Client::new("http://127.0.0.1:1").unwrap();
        assert!(matches!(
            client.reward("e", f64::NAN),
            Err(Error::InvalidArgument { field: "value", .. })
        ));
        assert!(matches!(
            client.reward("", 1.0),
            Err(Error::InvalidArgument {
                field: "event_id",
                ..
            })
        ));
        assert_eq!(client.counters().rewards_queued, 0);
    }

    #[tokio::test]
    async fn an_unreachable_server_gives_a_marked_fallback() {
        // Port 1 on loopback refuses connections.
        let client = Client::new("http://127.0.0.1:1").unwrap();
        let request = DecideRequest {
            candidates: vec![crate::wire::Candidate::new("a")],
            ..DecideRequest::default()
        };
        let d = client.decide("home", &request).await.unwrap();
        assert!(d.is_fallback());
        assert_eq!(d.actions, ["a"]);
        assert_eq!(client.counters().fallbacks, 1);
        let report = client.shutdown(Duration::ZERO).await;
        assert!(report.drained);
    }
}
