//! Issue 22 item 4: returns. `POST /v1/events/{id}/adjust` through the real server: exactly once
//! across `kill -9` (a loop like `killloop.rs`), the per-action report and the counters showing
//! it, every refusal with its status and field, and the SDK's `adjust`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tailor_sdk::wire::{AdjustRequest, AdjustStatus};
use tailor_sdk::ClientBuilder;

use crate::harness::{Server, ADMIN_KEY};

const CAMPAIGN: &str = "returns";
const CANDIDATES: usize = 4;

/// An adjustment as the client saw it: the event, its action, the body sent, the slot's value
/// after it, and whether its answer arrived.
#[derive(Debug, Clone)]
struct Sent {
    event: usize,
    body: Value,
    acknowledged: bool,
}

fn event_id(i: usize) -> String {
    format!("ret-{i}")
}

/// Each event's reward, and its return: even events send the new `value`, odd ones a `delta`,
/// each with its own `adjustment_id`; distinct amounts, so a doubled correction shows in the
/// sums.
fn reward_of(i: usize) -> f64 {
    1.0 + 0.25 * (i % 5) as f64
}

fn return_of(i: usize) -> (Value, f64) {
    let id = format!("rma-{i}");
    if i.is_multiple_of(2) {
        let value = 0.125 * (i % 3) as f64;
        (json!({"value": value, "adjustment_id": id}), value)
    } else {
        let delta = -0.5 - 0.125 * (i % 4) as f64;
        (
            json!({"delta": delta, "adjustment_id": id}),
            reward_of(i) + delta,
        )
    }
}

/// Workers send the returns of events `0..n` while the server is killed at random moments and
/// restarted; then every return is sent again. An acknowledged one must come back `duplicate`;
/// one whose answer the kill cut off comes back `accepted` (now applied) or `duplicate` (it had
/// been). After that every return is applied, so the counters and the per-action report must
/// hold exactly the corrected rewards: a return applied twice (live and again in the replay)
/// would move a sum twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn returns_apply_exactly_once_across_kill9() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshots every 300 ms, so kills land before, during and after them.
    let mut server = Server::start(
        dir.path(),
        &[("TAILOR__ENGINE__SNAPSHOT_INTERVAL_MS", "300")],
    )
    .await;
    server
        .create_campaign(json!({
            "id": CAMPAIGN, "policy": {"type": "thompson"},
            "reward_wait_seconds": 86_400.0,
            "reward_range": [0.0, 3.0]
        }))
        .await;
    let candidates: Vec<Value> = (0..CANDIDATES)
        .map(|i| json!({"id": format!("sku-{i}")}))
        .collect();
    let n = 1_000;
    let mut actions = Vec::with_capacity(n);
    for i in 0..n {
        let (status, d) = server
            .post(
                &format!("/v1/campaigns/{CAMPAIGN}/decide"),
                &json!({"candidates": candidates, "event_id": event_id(i)}),
            )
            .await;
        assert_eq!(status, 200, "{d}");
        actions.push(d["actions"][0]["id"].as_str().unwrap().to_string());
        let (status, r) = server
            .post(
                &format!("/v1/events/{}/reward", event_id(i)),
                &json!({"value": reward_of(i)}),
            )
            .await;
        assert_eq!(
            (status, r["status"].as_str()),
            (200, Some("accepted")),
            "{r}"
        );
    }
    let rewards_before = server.stats(CAMPAIGN).await["rewards"].as_u64().unwrap();

    let next = Arc::new(AtomicUsize::new(0));
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(22);
    let mut cycles = 0;
    while next.load(Ordering::Relaxed) < n && cycles < 8 {
        let mut workers = Vec::new();
        for _ in 0..4 {
            let (client, base) = (server.client.clone(), server.base.clone());
            let (next, sent) = (next.clone(), sent.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let (body, _) = return_of(i);
                    let answer = client
                        .post(format!("{base}/v1/events/{}/adjust", event_id(i)))
                        .json(&body)
                        .send()
                        .await;
                    let acknowledged = match answer {
                        Ok(r) if r.status().as_u16() == 200 => match r.json::<Value>().await {
                            Ok(v) => {
                                assert_eq!(v["status"], "accepted", "{i}: {v}");
                                true
                            }
                            Err(_) => false,
                        },
                        _ => false,
                    };
                    sent.lock().unwrap().push(Sent {
                        event: i,
                        body,
                        acknowledged,
                    });
                    if !acknowledged {
                        return;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..200))).await;
        server.kill9();
        for w in workers {
            w.await.expect("worker");
        }
        server.restart().await;
        cycles += 1;
    }
    // Whatever the kills left unsent goes now.
    let mut sent = std::mem::take(&mut *sent.lock().unwrap());
    let seen: std::collections::HashSet<usize> = sent.iter().map(|s| s.event).collect();
    for i in (0..n).filter(|i| !seen.contains(i)) {
        sent.push(Sent {
            event: i,
            body: return_of(i).0,
            acknowledged: false,
        });
    }
    let (mut acknowledged, mut cut_off) = (0, 0);
    for s in &sent {
        let (status, v) = server
            .post(&format!("/v1/events/{}/adjust", event_id(s.event)), &s.body)
            .await;
        assert_eq!(status, 200, "{}: {v}", s.event);
        let (_, want) = return_of(s.event);
        assert_eq!(v["value"].as_f64(), Some(want), "{}: {v}", s.event);
        if s.acknowledged {
            acknowledged += 1;
            assert_eq!(
                v["status"], "duplicate",
                "acknowledged return {} lost: {v}",
                s.event
            );
        } else {
            cut_off += 1;
            assert!(
                v["status"] == "duplicate" || v["status"] == "accepted",
                "{v}"
            );
        }
    }
    eprintln!("{cycles} kills; {acknowledged} returns acknowledged, {cut_off} cut off or unsent");
    assert!(cycles >= 2 && acknowledged > 0, "{cycles} {acknowledged}");

    // Every return is applied once: the counters and the per-action report hold the corrected
    // rewards, and a return is not a reward; and they still do after one more kill.
    server.kill9();
    server.restart().await;
    let mut expected: HashMap<&str, f64> = HashMap::new();
    for (i, a) in actions.iter().enumerate() {
        *expected.entry(a).or_default() += return_of(i).1;
    }
    let stats = server.stats(CAMPAIGN).await;
    assert_eq!(stats["rewards"].as_u64(), Some(rewards_before), "{stats}");
    let (status, report) = server
        .get(&format!("/admin/v1/campaigns/{CAMPAIGN}/reports/actions"))
        .await;
    assert_eq!(status, 200, "{report}");
    for (id, want) in &expected {
        let counted = crate::harness::action(&stats, id).unwrap()["reward_sum"]
            .as_f64()
            .unwrap();
        assert!(
            (counted - want).abs() < 1e-9,
            "{id}: counters {counted}, want {want}"
        );
        let row = (report["actions"].as_array().unwrap().iter())
            .find(|r| r["id"] == *id)
            .unwrap();
        let shown = row["reward_sum"].as_f64().unwrap();
        assert!(
            (shown - want).abs() < 1e-9,
            "{id}: report {shown}, want {want}: {row}"
        );
    }
}

/// Every answer of the route through the real server, and the SDK's `adjust`.
#[tokio::test]
async fn adjust_answers_and_the_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    server
        .create_campaign(json!({"id": "shop", "policy": {"type": "thompson"}}))
        .await;
    server
        .create_campaign(json!({"id": "brief", "policy": {"type": "thompson"},
            "reward_wait_seconds": 1.0, "return_window_seconds": 1.0}))
        .await;
    let (status, e) = server
        .post(
            "/admin/v1/campaigns",
            &json!({"id": "bad", "return_window_seconds": 1e12}),
        )
        .await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (400, Some("return_window_seconds")),
        "{e}"
    );
    let decide = |campaign: &'static str, id: &'static str| {
        let server = &server;
        async move {
            let (status, d) = server
                .post(
                    &format!("/v1/campaigns/{campaign}/decide"),
                    &json!({"candidates": [{"id": "a"}, {"id": "b"}], "event_id": id, "k": 2}),
                )
                .await;
            assert_eq!(status, 200, "{d}");
            d
        }
    };
    let d = decide("shop", "order-1").await;
    let second = d["actions"][1]["id"].as_str().unwrap().to_string();
    decide("shop", "order-2").await;
    decide("brief", "quick").await;
    for (event, campaign, body) in [
        (
            "order-1",
            "shop",
            json!({"value": 1.0, "action_id": second}),
        ),
        ("quick", "brief", json!({"value": 1.0})),
    ] {
        let (status, r) = server
            .post(
                &format!("/v1/campaigns/{campaign}/events/{event}/reward"),
                &body,
            )
            .await;
        assert_eq!(status, 200, "{r}");
    }
    let cases = [
        (
            "/v1/events/nope/adjust",
            json!({"value": 0.0}),
            404,
            "event_not_found",
            None,
        ),
        (
            "/v1/events/order-2/adjust",
            json!({"value": 0.0}),
            409,
            "no_reward",
            None,
        ),
        (
            "/v1/events/order-1/adjust",
            json!({"value": 0.0}),
            409,
            "no_reward",
            None,
        ),
        (
            "/v1/events/order-1/adjust",
            json!({"value": 2.0, "action_id": second}),
            400,
            "invalid_field",
            Some("value"),
        ),
        (
            "/v1/events/order-1/adjust",
            json!({"delta": -2.0, "action_id": second}),
            400,
            "invalid_field",
            Some("delta"),
        ),
        (
            "/v1/events/order-1/adjust",
            json!({"value": 0.0, "action_id": "zz"}),
            400,
            "invalid_field",
            Some("action_id"),
        ),
        (
            "/v1/events/order-1/adjust",
            json!({"action_id": second}),
            400,
            "invalid_field",
            Some("value"),
        ),
        (
            "/v1/events/order-1/adjust",
            json!({"value": 0.0, "adjustment_id": ""}),
            400,
            "invalid_field",
            Some("adjustment_id"),
        ),
        (
            "/v1/events/order-1/adjust",
            json!({"value": "0"}),
            400,
            "malformed_json",
            None,
        ),
        (
            "/v1/campaigns/brief/events/order-1/adjust",
            json!({"value": 0.0}),
            404,
            "event_not_found",
            None,
        ),
    ];
    for (path, body, want, code, field) in cases {
        let (status, e) = server.post(path, &body).await;
        assert_eq!(status, want, "{path} {body}: {e}");
        assert_eq!(e["error"]["code"], code, "{path} {body}: {e}");
        if let Some(f) = field {
            assert_eq!(e["error"]["field"], f, "{path} {body}: {e}");
        }
    }
    // The return window (1 s from the decision) passes: 410.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, e) = server
        .post("/v1/events/quick/adjust", &json!({"value": 0.0}))
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (410, Some("return_window_closed")),
        "{e}"
    );

    // The SDK: a return, its retry-safe repeat, and a server refusal.
    let client = ClientBuilder::new(&server.base)
        .api_key(ADMIN_KEY)
        .build()
        .unwrap();
    let ret = AdjustRequest {
        value: Some(0.0),
        action_id: Some(second.clone()),
        adjustment_id: Some("rma-77".into()),
        ..Default::default()
    };
    let r = client.adjust("order-1", ret.clone()).await.unwrap();
    assert_eq!(
        (r.status, r.previous, r.value),
        (AdjustStatus::Accepted, 1.0, 0.0)
    );
    assert_eq!(r.action_id, second);
    let again = client.adjust("order-1", ret).await.unwrap();
    assert_eq!(again.status, AdjustStatus::Duplicate);
    match client
        .adjust(
            "nope",
            AdjustRequest {
                value: Some(0.0),
                ..Default::default()
            },
        )
        .await
    {
        Err(tailor_sdk::Error::Server { status: 404, .. }) => {}
        other => panic!("{other:?}"),
    }
    let (_, report) = server.get("/admin/v1/campaigns/shop/reports/actions").await;
    let row = (report["actions"].as_array().unwrap().iter())
        .find(|r| r["id"] == second.as_str())
        .unwrap();
    assert_eq!(row["reward_sum"], 0.0, "{report}");
    assert_eq!(row["rewarded"], 0, "{report}");

    // CSV export of the reports: by query or by Accept header, a bad format named.
    let (status, text) = server
        .get_text("/admin/v1/campaigns/shop/reports/actions?format=csv")
        .await;
    assert_eq!(status, 200, "{text}");
    let lines: Vec<Vec<&str>> = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').collect())
        .collect();
    let col = |name: &str| lines[0].iter().position(|c| *c == name).expect(name);
    let (id, sum, rewarded) = (
        col("actions.id"),
        col("actions.reward_sum"),
        col("actions.rewarded"),
    );
    let row = lines.iter().find(|l| l[id] == second).expect("a row");
    assert_eq!((row[sum], row[rewarded]), ("0.0", "0"), "{text}");
    let r = server
        .client
        .get(server.url("/admin/v1/campaigns/shop/reports/policies?bucket_seconds=3600"))
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = r.text().await.unwrap();
    assert!(text.starts_with("bucket_seconds,policies."), "{text}");
    let (status, e) = server
        .get("/admin/v1/campaigns/shop/reports/lift?format=xml")
        .await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (400, Some("format")),
        "{e}"
    );
}

/// A window that closes with the default reward keeps no settled entry per slot (store schema
/// 7: the compact marker and the decision's frame stand for it). Returns still find such a
/// slot, with the default as its previous value, next to a slot a real reward settled; a late
/// reward is still `410` and a replayed decide still gets its recorded answer, also after a
/// `kill -9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_closed_with_the_default_reward_can_be_returned() {
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        Server::start(dir.path(), &[("TAILOR__ENGINE__SWEEP_INTERVAL_MS", "50")]).await;
    server
        .create_campaign(json!({"id": "carts", "policy": {"type": "thompson"},
            "reward_wait_seconds": 1.0, "return_window_seconds": 600.0, "default_reward": 0.25}))
        .await;
    let body = json!({"candidates": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "event_id": "cart-1", "k": 2});
    let (status, d) = server.post("/v1/campaigns/carts/decide", &body).await;
    assert_eq!(status, 200, "{d}");
    let first = d["actions"][0]["id"].as_str().unwrap().to_string();
    let second = d["actions"][1]["id"].as_str().unwrap().to_string();
    let (status, r) = server
        .post(
            "/v1/campaigns/carts/events/cart-1/reward",
            &json!({"value": 1.0, "action_id": first}),
        )
        .await;
    assert_eq!(status, 200, "{r}");

    // Until the window closes the unrewarded slot has nothing to return (409); then it has the
    // default.
    let mut waited = 0;
    let r = loop {
        let (status, r) = server
            .post(
                "/v1/campaigns/carts/events/cart-1/adjust",
                &json!({"value": 0.75, "action_id": second, "adjustment_id": "rma-1"}),
            )
            .await;
        if status == 200 {
            break r;
        }
        assert_eq!(
            (status, r["error"]["code"].as_str()),
            (409, Some("no_reward")),
            "{r}"
        );
        waited += 1;
        assert!(waited < 300, "the window never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (
            r["status"].as_str(),
            r["previous"].as_f64(),
            r["value"].as_f64()
        ),
        (Some("accepted"), Some(0.25), Some(0.75)),
        "{r}"
    );

    server.kill9();
    server.restart().await;
    for (event_action, value, previous) in [(&second, 0.75, 0.75), (&first, 0.5, 1.0)] {
        let (status, r) = server
            .post(
                "/v1/campaigns/carts/events/cart-1/adjust",
                &json!({"value": value, "action_id": event_action}),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["previous"].as_f64(), Some(previous), "{r}");
    }
    let (status, r) = server
        .post(
            "/v1/campaigns/carts/events/cart-1/reward",
            &json!({"value": 1.0, "action_id": second}),
        )
        .await;
    assert_eq!(
        (status, r["error"]["code"].as_str()),
        (410, Some("reward_window_closed")),
        "{r}"
    );
    let (status, again) = server.post("/v1/campaigns/carts/decide", &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["actions"], d["actions"], "the recorded answer");
    let mut other = body.clone();
    other["candidates"] = json!([{"id": "x"}, {"id": "y"}]);
    let (status, e) = server.post("/v1/campaigns/carts/decide", &other).await;
    assert_eq!(
        status, 409,
        "another candidate set under a closed event id: {e}"
    );
}

/// Store schema 8: a closed window's marker moves from the journal to its campaign's close file
/// when the journal drains. A `kill -9` right after hundreds of windows closed (the newest
/// markers still only in the journal, the older ones in the close files) closes none of them
/// again: the reward count (explicit and default rewards) is the same after the restart, and
/// every window still answers a late reward with `410`, a replayed decide with its recorded
/// answer and a return with what its slot settled at.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closed_windows_close_once_across_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        dir.path(),
        &[
            ("TAILOR__ENGINE__SWEEP_INTERVAL_MS", "50"),
            // Recovery from the log, not from a snapshot.
            ("TAILOR__ENGINE__SNAPSHOT_INTERVAL_MS", "3600000"),
        ],
    )
    .await;
    server
        .create_campaign(json!({"id": "shut", "policy": {"type": "thompson"},
            "reward_wait_seconds": 1.0, "return_window_seconds": 600.0, "default_reward": 0.25}))
        .await;
    let n = 300;
    let body = |i: usize| json!({"candidates": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "event_id": format!("shut-{i}")});
    let mut served = Vec::new();
    for i in 0..n {
        let (status, d) = server.post("/v1/campaigns/shut/decide", &body(i)).await;
        assert_eq!(status, 200, "{d}");
        served.push(d["actions"].clone());
        if i % 4 == 0 {
            let (status, r) = server
                .post(
                    &format!("/v1/campaigns/shut/events/shut-{i}/reward"),
                    &json!({"value": 1.0}),
                )
                .await;
            assert_eq!(status, 200, "{r}");
        }
    }
    // Every window closes: one reward per decision, explicit or default.
    let mut waited = 0;
    let before = loop {
        let stats = server.stats("shut").await;
        if stats["rewards"] == n as u64 {
            break stats;
        }
        assert!(stats["rewards"].as_u64().unwrap() < n as u64, "{stats}");
        waited += 1;
        assert!(waited < 300, "the windows never closed: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    server.kill9();
    server.restart().await;
    // Time for the sweeper to close anything recovery wrongly held open again.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = server.stats("shut").await;
    assert_eq!(after["rewards"], before["rewards"], "{before} then {after}");
    assert_eq!(after["actions"], before["actions"], "{before} then {after}");
    let closes = dir.path().join("closes").join("c-shut");
    assert!(
        std::fs::read_dir(&closes).unwrap().count() > 0,
        "the markers are in the close files"
    );
    for i in (0..n).step_by(7) {
        let (status, r) = server
            .post(
                &format!("/v1/campaigns/shut/events/shut-{i}/reward"),
                &json!({"value": 1.0}),
            )
            .await;
        assert_eq!(
            (status, r["error"]["code"].as_str()),
            (410, Some("reward_window_closed")),
            "shut-{i}: {r}"
        );
        let (status, again) = server.post("/v1/campaigns/shut/decide", &body(i)).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["actions"], served[i], "shut-{i}: the recorded answer");
        let (status, r) = server
            .post(
                &format!("/v1/campaigns/shut/events/shut-{i}/adjust"),
                &json!({"value": 0.0, "adjustment_id": format!("rma-{i}")}),
            )
            .await;
        assert_eq!(status, 200, "shut-{i}: {r}");
        let settled = if i % 4 == 0 { 1.0 } else { 0.25 };
        assert_eq!(r["previous"].as_f64(), Some(settled), "shut-{i}: {r}");
    }
}
