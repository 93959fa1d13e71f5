//! Issue 17, memory: log retention. With `[storage] log_retention_days` set, a campaign's log
//! entries older than the retention and its return window are deleted once its learned state
//! is snapshotted; learned state, counters and report aggregates stay, through a restart; a
//! reward or return for a deleted event is a 404 like an unknown id, and the id may be decided
//! again. A campaign whose return window is longer keeps its log.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::Server;

/// 0.0002 days = 17.28 s; with the 10 s return window below and its margin (the window
/// itself), a log entry goes 20 s after it was logged, when every window has closed.
const RETENTION: &[(&str, &str)] = &[
    ("TAILOR__ENGINE__SWEEP_INTERVAL_MS", "50"),
    ("TAILOR__ENGINE__SNAPSHOT_INTERVAL_MS", "200"),
    ("TAILOR__STORAGE__LOG_RETENTION_DAYS", "0.0002"),
    ("TAILOR__STORAGE__LOG_RETENTION_INTERVAL_MS", "200"),
];

async fn decide(server: &Server, campaign: &str, event: &str) -> (u16, Value) {
    server
        .post(
            &format!("/v1/campaigns/{campaign}/decide"),
            &json!({
                "event_id": event,
                "context": {"device": "mobile"},
                "candidates": [{"id": "sku-a"}, {"id": "sku-b"}, {"id": "sku-c"}],
            }),
        )
        .await
}

/// Decision lines of the campaign's log export (header excluded).
async fn logged(server: &Server, campaign: &str) -> usize {
    let (status, text) = server
        .get_text(&format!("/admin/v1/campaigns/{campaign}/log"))
        .await;
    assert_eq!(status, 200, "{text}");
    text.lines().count() - 1
}

/// Wall-clock fields are not state.
fn timeless(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.retain(|k, _| !k.ends_with("_ms") && !k.ends_with("_at"));
    }
    v
}

/// What must survive retention: counters and report aggregates.
async fn learned(server: &Server, campaign: &str) -> (Value, Value, Value) {
    let stats = timeless(server.stats(campaign).await);
    let (s, actions) = server
        .get(&format!("/admin/v1/campaigns/{campaign}/reports/actions"))
        .await;
    assert_eq!(s, 200, "{actions}");
    let (s, policies) = server
        .get(&format!("/admin/v1/campaigns/{campaign}/reports/policies"))
        .await;
    assert_eq!(s, 200, "{policies}");
    (stats, timeless(actions), timeless(policies))
}

#[tokio::test]
async fn retention_deletes_old_log_entries_and_keeps_what_was_learned() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), RETENTION).await;
    server
        .create_campaign(json!({"id": "short", "policy": {"type": "thompson"},
            "reward_wait_seconds": 10, "return_window_seconds": 10, "log_requests": true}))
        .await;
    server
        .create_campaign(json!({"id": "long", "policy": {"type": "thompson"},
            "reward_wait_seconds": 10, "return_window_seconds": 3600, "log_requests": true}))
        .await;
    for i in 0..60 {
        for c in ["short", "long"] {
            let (s, v) = decide(&server, c, &format!("{c}-{i}")).await;
            assert_eq!(s, 200, "{v}");
        }
    }
    // A reward for every third event (the others get the default reward at their window's end)
    // and one return, all inside the windows.
    let rewards: Vec<Value> = (0..60)
        .step_by(3)
        .flat_map(|i| {
            ["short", "long"].map(|c| json!({"event_id": format!("{c}-{i}"), "value": 1.0}))
        })
        .collect();
    let (s, v) = server
        .post("/v1/rewards", &json!({ "rewards": rewards }))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = server
        .post(
            "/v1/campaigns/short/events/short-0/adjust",
            &json!({"value": 0.0, "adjustment_id": "rma-1"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // Every window closes (default rewards applied, 10 s) before anything is old enough to go
    // (20 s): what was learned then no longer changes.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let start = Instant::now();
    let mut before = learned(&server, "short").await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = learned(&server, "short").await;
        if now == before {
            break;
        }
        before = now;
        assert!(start.elapsed() < Duration::from_secs(60), "still changing");
    }
    assert_eq!(before.0["decisions"], 60, "{}", before.0);
    let long_before = learned(&server, "long").await;

    // The short campaign's log empties; the long one (return window of an hour) keeps its 60.
    let start = Instant::now();
    while logged(&server, "short").await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the log was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(logged(&server, "long").await, 60);

    // What was learned and counted is unchanged, now and after a restart.
    assert_eq!(learned(&server, "short").await, before);
    assert_eq!(learned(&server, "long").await, long_before);
    server.stop();
    server.restart().await;
    assert_eq!(learned(&server, "short").await, before);
    assert_eq!(learned(&server, "long").await, long_before);

    // A reward or a return for a deleted event is an unknown event; the long campaign's late
    // reward is still the documented 410 (window closed).
    let (s, v) = server
        .post(
            "/v1/rewards",
            &json!({"rewards": [{"event_id": "short-1", "value": 1.0}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["http_status"], 404, "{v}");
    let (s, v) = server
        .post(
            "/v1/campaigns/short/events/short-0/adjust",
            &json!({"value": 1.0, "adjustment_id": "rma-2"}),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = server
        .post(
            "/v1/rewards",
            &json!({"rewards": [{"event_id": "long-1", "value": 1.0}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["http_status"], 410, "{v}");

    // The deleted event id can be decided again: a new decision, counted once more.
    let (s, v) = decide(&server, "short", "short-1").await;
    assert_eq!(s, 200, "{v}");
    let after = server.stats("short").await;
    assert_eq!(
        after["decisions"],
        before.0["decisions"].as_u64().unwrap() + 1
    );
}
