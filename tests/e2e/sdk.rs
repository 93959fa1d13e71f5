//! Issue 5 (Rust SDK): the real client against the real server: normal path, fallback within
//! budget while the server is down or hanging, rewards queued through an outage delivered
//! exactly once, and a `kill -9` mid-stream that loses and doubles nothing.
//!
//! The harness restarts the server on a new port, so the client talks to it through [`Relay`],
//! a plain TCP forwarder on a port that stays put (the way a storefront talks to a load
//! balancer). The relay can also swallow connections to play a server that accepts and hangs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tailor_sdk::wire::{Candidate, DecideRequest};
use tailor_sdk::{ClientBuilder, DecisionSource, Error, FallbackReason};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Server, ADMIN_KEY};

/// Generous slack over the budget for a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(250);

#[derive(Clone, Copy)]
enum Mode {
    Forward(SocketAddr),
    /// Accept and never answer.
    Hang,
}

struct Relay {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(mode: Mode) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(mode));
        let current = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let mode = *current.lock().unwrap();
                tokio::spawn(async move {
                    match mode {
                        Mode::Forward(to) => {
                            // A dead backend closes the client's connection at once.
                            if let Ok(mut up) = TcpStream::connect(to).await {
                                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                            }
                        }
                        Mode::Hang => {
                            tokio::time::sleep(Duration::from_secs(120)).await;
                            drop(down);
                        }
                    }
                });
            }
        });
        Relay { addr, mode, task }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn server_addr(server: &Server) -> SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

fn request(event_id: Option<String>) -> DecideRequest {
    DecideRequest {
        context: json!({"user": {"segment": "gold"}}),
        candidates: ["a", "b", "c"].into_iter().map(Candidate::new).collect(),
        event_id,
        ..DecideRequest::default()
    }
}

fn total_reward_sum(stats: &tailor_sdk::wire::CampaignStats) -> f64 {
    stats.actions.iter().map(|a| a.reward_sum).sum()
}

/// Decide and reward through the SDK; rewards show in stats; 4xx surfaces as an error; a
/// reward the server refuses for good is dropped and counted; the blocking wrapper works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sdk_decides_and_rewards_show_in_stats() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    server
        // A reward of 2.0 below: the range must allow it (issue 17).
        .create_campaign(
            json!({"id": "home", "policy": {"type": "thompson"}, "reward_range": [0, 2]}),
        )
        .await;
    // The key is not checked yet; it must not get in the way.
    let client = ClientBuilder::new(&server.base)
        .api_key(ADMIN_KEY)
        .decide_budget(Duration::from_secs(5))
        .build()
        .unwrap();

    let n = 40;
    let mut events = Vec::new();
    for _ in 0..n {
        let d = client.decide("home", &request(None)).await.unwrap();
        assert_eq!(d.source, DecisionSource::Model);
        assert_eq!(d.actions.len(), 1);
        let response = d.response.as_ref().unwrap();
        assert!(["a", "b", "c"].contains(&d.actions[0].as_str()));
        assert!(response.actions[0].probability > 0.0);
        assert!(client.reward_decision(&d, 1.0).unwrap());
        events.push(d.event_id().unwrap().to_string());
    }
    // A second reward for an event is one more call, and `earliest` keeps only the first.
    client.reward(&events[0], 1.0).unwrap();
    // An unknown event is refused for good: dropped and counted, not retried forever.
    client.reward("no-such-event", 1.0).unwrap();
    tokio::time::timeout(Duration::from_secs(20), client.flush())
        .await
        .expect("flush");

    let c = client.counters();
    assert_eq!(c.decisions, n as u64);
    assert_eq!(c.fallbacks, 0);
    assert_eq!(c.rewards_queued, n as u64 + 2);
    assert_eq!(c.rewards_acknowledged, n as u64 + 1, "{c:?}");
    assert_eq!(c.rewards_dropped, 1, "{c:?}");
    assert_eq!(c.rewards_pending, 0);

    let stats = client.campaign_stats("home").await.unwrap();
    assert_eq!(stats.decisions, n as u64, "{stats:?}");
    assert_eq!(stats.rewards, n as u64, "{stats:?}");
    assert_eq!(total_reward_sum(&stats), n as f64);

    // A repeated event id replays the recorded decision.
    let first = client
        .decide("home", &request(Some("fixed-1".into())))
        .await
        .unwrap();
    let again = client
        .decide("home", &request(Some("fixed-1".into())))
        .await
        .unwrap();
    assert_eq!(first.actions, again.actions);
    assert!(again.response.unwrap().replayed);

    // Caller bugs are errors, not silent fallbacks.
    match client.decide("no-such-campaign", &request(None)).await {
        Err(Error::Server { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (404, "campaign_not_found"));
        }
        other => panic!("expected a 404 error, got {other:?}"),
    }
    let empty = DecideRequest::default();
    match client.decide("home", &empty).await {
        Err(Error::Server {
            status: 400, field, ..
        }) => {
            assert_eq!(field.as_deref(), Some("candidates"));
        }
        other => panic!("expected a 400 error, got {other:?}"),
    }
    assert_eq!(client.counters().decide_errors, 2);

    // Multi-slot: two actions, and a reward for the second slot by its action id.
    let slate = DecideRequest {
        k: Some(2),
        ..request(None)
    };
    let d = client.decide("home", &slate).await.unwrap();
    assert_eq!(d.actions.len(), 2, "{d:?}");
    assert_ne!(d.actions[0], d.actions[1]);
    client
        .reward_with(tailor_sdk::wire::BatchReward {
            event_id: d.event_id().unwrap().to_string(),
            value: 0.5,
            action_id: Some(d.actions[1].clone()),
            reward_id: None,
            campaign: None,
        })
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), client.flush())
        .await
        .expect("flush");
    assert_eq!(client.counters().rewards_acknowledged, n as u64 + 2);
    let stats = client.campaign_stats("home").await.unwrap();
    assert_eq!(stats.rewards, n as u64 + 1, "{stats:?}");

    let report = client.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained && report.undelivered.is_empty());
    assert!(matches!(client.reward(&events[1], 1.0), Err(Error::Closed)));

    // The blocking wrapper owns its runtime, so it runs off the async threads.
    let base = server.base.clone();
    let stats = tokio::task::spawn_blocking(move || {
        let client =
            tailor_sdk::blocking::Client::new(ClientBuilder::new(base).api_key(ADMIN_KEY)).unwrap();
        let d = client.decide("home", &request(None)).unwrap();
        assert!(!d.is_fallback());
        assert!(client.reward_decision(&d, 2.0).unwrap());
        assert!(client.flush_timeout(Duration::from_secs(20)));
        let report = client.shutdown(Duration::from_secs(5));
        assert_eq!(report.counters.rewards_acknowledged, 1);
        client.campaign_stats("home").unwrap()
    })
    .await
    .unwrap();
    assert_eq!(stats.rewards, n as u64 + 2);
    assert_eq!(total_reward_sum(&stats), n as f64 + 2.5);
}

/// With the server down or hanging, decide falls back within its budget; rewards queued during
/// the outage are delivered once it is back, exactly once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sdk_falls_back_within_budget_and_delivers_rewards_after_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    server
        .create_campaign(json!({"id": "home", "policy": {"type": "thompson"}}))
        .await;
    let relay = Relay::start(Mode::Forward(server_addr(&server))).await;
    let budget = Duration::from_millis(200);
    let client = ClientBuilder::new(relay.url())
        .api_key(ADMIN_KEY)
        .decide_budget(budget)
        .request_timeout(Duration::from_secs(1))
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .build()
        .unwrap();

    let n = 30;
    let mut events = Vec::new();
    for _ in 0..n {
        // The first call includes connecting; give it room, the budget is for the outage.
        let d = client
            .decide_with(
                "home",
                &request(None),
                &tailor_sdk::DecideOptions::new().budget(Duration::from_secs(5)),
            )
            .await
            .unwrap();
        assert!(!d.is_fallback(), "{d:?}");
        events.push(d.event_id().unwrap().to_string());
    }

    server.stop();

    // Down: connections are refused (the relay closes them).
    let options = tailor_sdk::DecideOptions::new().default_actions(["house-pick"]);
    for _ in 0..3 {
        let started = Instant::now();
        let d = client
            .decide_with("home", &request(None), &options)
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(took < budget + SLACK, "fallback took {took:?}");
        assert_eq!(d.actions, ["house-pick"]);
        assert_eq!(d.event_id(), None);
        assert!(
            matches!(
                d.fallback_reason(),
                Some(FallbackReason::Unreachable { .. })
            ),
            "{d:?}"
        );
        // Nothing to reward for a fallback.
        assert!(!client.reward_decision(&d, 1.0).unwrap());
    }

    // Hanging: accepted, never answered. The budget cuts it off.
    relay.set(Mode::Hang);
    let started = Instant::now();
    let d = client.decide("home", &request(None)).await.unwrap();
    let took = started.elapsed();
    assert!(took >= budget, "returned before the budget: {took:?}");
    assert!(took < budget + SLACK, "fallback took {took:?}");
    assert_eq!(d.actions, ["a"], "first candidate by default");
    assert_eq!(
        d.fallback_reason(),
        Some(&FallbackReason::Timeout { budget })
    );
    relay.set(Mode::Forward(server_addr(&server)));

    // Rewards queue up while the server is down, and are retried.
    for e in &events {
        client.reward(e, 1.0).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let c = client.counters();
    assert_eq!(c.rewards_acknowledged, 0, "{c:?}");
    assert!(c.rewards_retried > 0, "{c:?}");
    assert_eq!(c.rewards_pending, n as u64);
    assert_eq!(c.fallbacks, 4);

    server.restart().await;
    relay.set(Mode::Forward(server_addr(&server)));
    tokio::time::timeout(Duration::from_secs(20), client.flush())
        .await
        .expect("rewards delivered after the server came back");

    let c = client.counters();
    assert_eq!(c.rewards_acknowledged, n as u64, "{c:?}");
    assert_eq!(c.rewards_dropped, 0, "{c:?}");
    let stats = client.campaign_stats("home").await.unwrap();
    assert_eq!(stats.decisions, n as u64, "{stats:?}");
    assert_eq!(stats.rewards, n as u64, "exactly once: {stats:?}");
    assert_eq!(total_reward_sum(&stats), n as f64, "{stats:?}");
    assert!(client.shutdown(Duration::from_secs(5)).await.drained);
}

/// `kill -9` and restart while rewards stream in: nothing acknowledged is lost, nothing retried
/// counts twice. `sum` aggregation makes a doubled reward visible in the totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sdk_kill9_mid_stream_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        Server::start(dir.path(), &[("TAILOR__ENGINE__SWEEP_INTERVAL_MS", "50")]).await;
    let window_s = 8.0;
    server
        .create_campaign(json!({
            "id": "cart", "policy": {"type": "thompson"},
            "reward_wait_seconds": window_s, "reward_aggregation": "sum",
            // Each event's total is 1 + 2 (issue 17: totals stay in the range).
            "reward_range": [0, 3]
        }))
        .await;
    let relay = Relay::start(Mode::Forward(server_addr(&server))).await;
    let client = ClientBuilder::new(relay.url())
        .api_key(ADMIN_KEY)
        .decide_budget(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(2))
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .batch_size(16)
        .build()
        .unwrap();

    let n = 120;
    let started = Instant::now();
    let mut events = Vec::new();
    for _ in 0..n {
        let d = client.decide("cart", &request(None)).await.unwrap();
        assert!(!d.is_fallback());
        events.push(d.event_id().unwrap().to_string());
    }
    // Two rewards per event (an add-to-cart and a purchase): each call counts once under `sum`.
    let mut acknowledged_before_kill = 0;
    for (i, e) in events.iter().enumerate() {
        client.reward(e, 1.0).unwrap();
        client.reward(e, 2.0).unwrap();
        if i == n / 3 {
            client.flush().await;
            acknowledged_before_kill = client.counters().rewards_acknowledged;
        }
        if i == n / 3 + 5 {
            // Some of these are in flight right now.
            server.kill9();
        }
        if i == 2 * n / 3 {
            server.restart().await;
            relay.set(Mode::Forward(server_addr(&server)));
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(acknowledged_before_kill, 2 * (n as u64 / 3 + 1));
    tokio::time::timeout(Duration::from_secs(20), client.flush())
        .await
        .expect("flush after the restart");
    let c = client.counters();
    assert_eq!(c.rewards_acknowledged, 2 * n as u64, "{c:?}");
    assert_eq!(c.rewards_dropped, 0, "{c:?}");
    assert!(
        c.rewards_retried > 0,
        "the kill should have cost retries: {c:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs_f64(window_s - 1.0),
        "too slow to test within the reward window"
    );

    // Sums are applied when the windows close.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stats = loop {
        let stats = client.campaign_stats("cart").await.unwrap();
        if stats.rewards >= n as u64 || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stats.decisions, n as u64, "{stats:?}");
    assert_eq!(stats.rewards, n as u64, "{stats:?}");
    assert_eq!(total_reward_sum(&stats), 3.0 * n as f64, "{stats:?}");
    assert!(client.shutdown(Duration::from_secs(5)).await.drained);
}
