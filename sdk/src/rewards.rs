//! The background reward sender: a bounded FIFO queue drained in batches to `POST /v1/rewards`.
//!
//! One task sends one batch at a time and retries it (with exponential backoff and jitter) until
//! every item is settled: acknowledged by the server (accepted, duplicate or ignored, all durable),
//! or refused by it for good (404 unknown event, 409 ambiguous event, 410 window closed, 400
//! invalid). Batches settle in queue order, so "everything queued before sequence number N is
//! settled" is one watermark, which is what [`Client::flush`](crate::Client::flush) waits on.
//!
//! Retrying is safe because the server is idempotent per event (`earliest`) and per `reward_id`
//! (`sum`), and every queued reward carries a `reward_id` (the client makes one when the caller
//! gives none), so a batch whose answer was lost can be sent again without doubling anything.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::error::{is_transient_status, Error};
use crate::wire::{BatchReward, BatchRewardResult, RewardBatchResponse};

/// Largest batch the server takes.
pub const MAX_BATCH: usize = 1_000;

/// A snapshot of the client's counters, for dashboards and alerts.
///
/// Reward items move `queued` → (`sent`, possibly several times: `retried`) → `acknowledged` or
/// `dropped`. `rejected` rewards never entered the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Decides answered by the model.
    pub decisions: u64,
    /// Decides answered with a fallback (timeout, unreachable, 5xx).
    pub fallbacks: u64,
    /// Decides that returned an error (4xx: a bug in the request, unknown campaign, bad key).
    pub decide_errors: u64,
    /// Rewards taken into the queue.
    pub rewards_queued: u64,
    /// Rewards refused at the door: queue full, or the client shut down.
    pub rewards_rejected: u64,
    /// Reward items put on the wire, counting every attempt.
    pub rewards_sent: u64,
    /// Reward items the server acknowledged durably (accepted, duplicate or ignored).
    pub rewards_acknowledged: u64,
    /// Reward items sent again after a transport error, a timeout or a 5xx.
    pub rewards_retried: u64,
    /// Reward items given up on: refused by the server for good (unknown event, window closed,
    /// invalid), or still undelivered when the shutdown grace ran out.
    pub rewards_dropped: u64,
    /// Reward batches put on the wire, counting every attempt.
    pub batches_sent: u64,
    /// Rewards queued or in flight right now.
    pub rewards_pending: u64,
}

#[derive(Default)]
pub(crate) struct Cells {
    pub decisions: AtomicU64,
    pub fallbacks: AtomicU64,
    pub decide_errors: AtomicU64,
    queued: AtomicU64,
    rejected: AtomicU64,
    sent: AtomicU64,
    acknowledged: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    batches: AtomicU64,
}

fn bump(cell: &AtomicU64, n: usize) {
    cell.fetch_add(n as u64, Ordering::Relaxed);
}

/// What [`Client::shutdown`](crate::Client::shutdown) hands back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShutdownReport {
    /// True when every reward queued before the shutdown was settled in time.
    pub drained: bool,
    /// Rewards still unsent when the grace period ran out (also counted as dropped): persist
    /// them somewhere if they matter.
    pub undelivered: Vec<BatchReward>,
    /// The counters at the end.
    pub counters: Counters,
}

struct QueueState {
    queue: VecDeque<(u64, BatchReward)>,
    next_seq: u64,
    in_flight: usize,
    closed: bool,
    undelivered: Vec<BatchReward>,
}

/// State shared by the client handles and the sender task.
pub(crate) struct Shared {
    state: Mutex<QueueState>,
    wake: Notify,
    /// Every reward with a sequence number below this is settled.
    settled: watch::Sender<u64>,
    /// Set once by shutdown: when the sender gives up on what is left.
    deadline: watch::Sender<Option<Instant>>,
    pub(crate) cells: Cells,
    capacity: usize,
}

impl Shared {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(QueueState {
                queue: VecDeque::new(),
                next_seq: 0,
                in_flight: 0,
                closed: false,
                undelivered: Vec::new(),
            }),
            wake: Notify::new(),
            settled: watch::Sender::new(0),
            deadline: watch::Sender::new(None),
            cells: Cells::default(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A panic while holding this lock leaves the queue consistent (every update is one
        // statement), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a reward, or refuse it: the overflow policy is reject-new, so what is already queued
    /// keeps its place and the caller learns at once that this one was not taken.
    pub(crate) fn enqueue(&self, reward: BatchReward) -> Result<(), Error> {
        {
            let mut st = self.lock();
            if st.closed {
                bump(&self.cells.rejected, 1);
                return Err(Error::Closed);
            }
            if st.queue.len() >= self.capacity {
                drop(st);
                bump(&self.cells.rejected, 1);
                return Err(Error::QueueFull {
                    capacity: self.capacity,
                    event_id: reward.event_id,
                });
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            st.queue.push_back((seq, reward));
        }
        bump(&self.cells.queued, 1);
        self.wake.notify_one();
        Ok(())
    }

    /// Wait until every reward queued before this call is settled.
    pub(crate) async fn flush(&self) {
        let target = self.lock().next_seq;
        let mut rx = self.settled.subscribe();
        // The sender lives in `self`, so this only ends by reaching the target.
        let _ = rx.wait_for(|settled| *settled >= target).await;
    }

    /// Stop taking rewards and give the sender until `grace` from now to deliver what is queued.
    pub(crate) fn close(&self, grace: Duration) {
        self.lock().closed = true;
        let deadline = Instant::now() + grace;
        self.deadline.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(deadline);
                true
            } else {
                false
            }
        });
        self.wake.notify_one();
    }

    pub(crate) fn take_undelivered(&self) -> Vec<BatchReward> {
        std::mem::take(&mut self.lock().undelivered)
    }

    pub(crate) fn is_drained(&self) -> bool {
        let st = self.lock();
        *self.settled.borrow() >= st.next_seq && st.undelivered.is_empty()
    }

    pub(crate) fn counters(&self) -> Counters {
        let pending = {
            let st = self.lock();
            (st.queue.len() + st.in_flight) as u64
        };
        let c = &self.cells;
        let get = |cell: &AtomicU64| cell.load(Ordering::Relaxed);
        Counters {
            decisions: get(&c.decisions),
            fallbacks: get(&c.fallbacks),
            decide_errors: get(&c.decide_errors),
            rewards_queued: get(&c.queued),
            rewards_rejected: get(&c.rejected),
            rewards_sent: get(&c.sent),
            rewards_acknowledged: get(&c.acknowledged),
            rewards_retried: get(&c.retried),
            rewards_dropped: get(&c.dropped),
            batches_sent: get(&c.batches),
            rewards_pending: pending,
        }
    }

    fn mark_settled(&self, upto: u64) {
        self.settled.send_if_modified(|s| {
            if upto > *s {
                *s = upto;
                true
            } else {
                false
            }
        });
    }

    fn deadline_passed(&self) -> bool {
        matches!(*self.deadline.borrow(), Some(d) if Instant::now() >= d)
    }

    /// Give up on `items`: count them dropped and keep them for the shutdown report.
    fn abandon(&self, items: Vec<(u64, BatchReward)>) {
        if items.is_empty() {
            return;
        }
        bump(&self.cells.dropped, items.len());
        tracing::warn!(
            count = items.len(),
            "shutdown grace ran out; rewards not delivered"
        );
        let mut st = self.lock();
        st.in_flight = 0;
        st.undelivered.extend(items.into_iter().map(|(_, r)| r));
    }

    /// Resolves when the shutdown deadline passes (never, before shutdown).
    async fn until_deadline(&self) {
        let mut rx = self.deadline.subscribe();
        loop {
            let deadline = *rx.borrow_and_update();
            match deadline {
                Some(d) => return tokio::time::sleep_until(d).await,
                None => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}

/// Exponential backoff with "equal jitter": half the step fixed, half random, so a fleet of
/// storefronts that lost the server together does not come back in lockstep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let step = self
            .initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        let half = step / 2;
        half + half.mul_f64(rand::thread_rng().gen::<f64>())
    }
}

/// What one attempt at a batch came to.
enum Outcome {
    /// The server answered per item, in request order.
    Items(Vec<BatchRewardResult>),
    /// Nothing is known to be settled: send all again.
    RetryAll(String),
    /// The whole batch is refused for good (a 4xx other than 408/429).
    RefuseAll(Error),
}

#[derive(Serialize)]
struct BatchBody<'a> {
    rewards: Vec<&'a BatchReward>,
}

/// The sender task.
pub(crate) struct Sender {
    pub shared: std::sync::Arc<Shared>,
    pub http: reqwest::Client,
    pub url: reqwest::Url,
    pub batch_size: usize,
    pub backoff: Backoff,
    pub request_timeout: Duration,
}

impl Sender {
    pub(crate) async fn run(self) {
        while let Some(batch) = self.next_batch().await {
            let end = batch.last().map_or(0, |(seq, _)| seq + 1);
            self.deliver(batch).await;
            self.shared.mark_settled(end);
        }
        let end = self.shared.lock().next_seq;
        self.shared.mark_settled(end);
    }

    /// The next batch in queue order; `None` once closed and empty.
    async fn next_batch(&self) -> Option<Vec<(u64, BatchReward)>> {
        loop {
            let notified = self.shared.wake.notified();
            {
                let mut st = self.shared.lock();
                if self.shared.deadline_passed() && !st.queue.is_empty() {
                    let rest: Vec<_> = st.queue.drain(..).collect();
                    drop(st);
                    self.shared.abandon(rest);
                    continue;
                }
                if !st.queue.is_empty() {
                    let n = st.queue.len().min(self.batch_size);
                    st.in_flight = n;
                    return Some(st.queue.drain(..n).collect());
                }
                if st.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Send `items` until each is acknowledged or refused, or the shutdown deadline passes.
    async fn deliver(&self, mut items: Vec<(u64, BatchReward)>) {
        let mut attempt = 0u32;
        loop {
            let outcome = tokio::select! {
                o = self.send(&items) => o,
                () = self.shared.until_deadline() => return self.shared.abandon(items),
            };
            items = match outcome {
                Outcome::Items(results) => self.settle(items, results),
                Outcome::RetryAll(reason) => {
                    tracing::debug!(count = items.len(), %reason, "reward batch not delivered; will retry");
                    items
                }
                Outcome::RefuseAll(error) => {
                    tracing::error!(count = items.len(), %error, "reward batch refused; dropped");
                    bump(&self.shared.cells.dropped, items.len());
                    Vec::new()
                }
            };
            self.shared.lock().in_flight = items.len();
            if items.is_empty() {
                return;
            }
            bump(&self.shared.cells.retried, items.len());
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(self.backoff.delay(attempt)) => {}
                () = self.shared.until_deadline() => return self.shared.abandon(items),
            }
        }
    }

    /// Count what the server settled; return what to send again.
    fn settle(
        &self,
        items: Vec<(u64, BatchReward)>,
        results: Vec<BatchRewardResult>,
    ) -> Vec<(u64, BatchReward)> {
        let mut retry = Vec::new();
        for ((seq, reward), result) in items.into_iter().zip(results) {
            if result.status.is_some() {
                bump(&self.shared.cells.acknowledged, 1);
            } else if is_transient_status(result.http_status) {
                retry.push((seq, reward));
            } else {
                bump(&self.shared.cells.dropped, 1);
                let (code, message) = result
                    .error
                    .map(|e| (e.code, e.message))
                    .unwrap_or_default();
                tracing::warn!(
                    event_id = %reward.event_id,
                    status = result.http_status,
                    %code,
                    %message,
                    "reward refused by the server; dropped"
                );
            }
        }
        retry
    }

    async fn send(&self, items: &[(u64, BatchReward)]) -> Outcome {
        let body = BatchBody {
            rewards: items.iter().map(|(_, r)| r).collect(),
        };
        bump(&self.shared.cells.sent, items.len());
        bump(&self.shared.cells.batches, 1);
        let response = self
            .http
            .post(self.url.clone())
            .timeout(self.request_timeout)
            .json(&body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return Outcome::RetryAll(crate::client::error_chain(&e)),
        };
        let status = response.status().as_u16();
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Outcome::RetryAll(crate::client::error_chain(&e)),
        };
        if (200..300).contains(&status) {
            match serde_json::from_slice::<RewardBatchResponse>(&bytes) {
                Ok(r)
                    if r.results.len() == items.len()
                        && r.results
                            .iter()
                            .zip(items)
                            .all(|(res, (_, item))| res.event_id == item.event_id) =>
                {
                    Outcome::Items(r.results)
                }
                Ok(_) => Outcome::RetryAll("batch answer does not match the request".into()),
                Err(e) => Outcome::RetryAll(format!("undecodable batch answer: {e}")),
            }
        } else if is_transient_status(status) {
            Outcome::RetryAll(format!("HTTP {status}"))
        } else {
            Outcome::RefuseAll(Error::from_body(status, &bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_half() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in 1..40 {
            let step = Duration::from_millis(100)
                .saturating_mul(1 << (attempt - 1).min(20))
                .min(Duration::from_secs(2));
            let d = b.delay(attempt);
            assert!(
                d >= step / 2 && d <= step,
                "attempt {attempt}: {d:?} vs {step:?}"
            );
        }
    }

    fn reward(id: &str) -> BatchReward {
        BatchReward::new(id, 1.0)
    }

    #[tokio::test]
    async fn overflow_rejects_new_rewards_and_counts_them() {
        let shared = Shared::new(2);
        shared.enqueue(reward("a")).unwrap();
        shared.enqueue(reward("b")).unwrap();
        match shared.enqueue(reward("c")) {
            Err(Error::QueueFull { capacity, event_id }) => {
                assert_eq!((capacity, event_id.as_str()), (2, "c"));
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        let c = shared.counters();
        assert_eq!(
            (c.rewards_queued, c.rewards_rejected, c.rewards_pending),
            (2, 1, 2)
        );
        shared.close(Duration::ZERO);
        assert!(matches!(shared.enqueue(reward("d")), Err(Error::Closed)));
    }
}
