//! Issue 17, memory: the log export streams (chunked, complete, well-formed) and the whole-log
//! aggregations still answer over a log of a few thousand decisions interleaved with another
//! campaign's.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::harness::Server;

const FAST: &[(&str, &str)] = &[
    ("TAILOR__ENGINE__SWEEP_INTERVAL_MS", "50"),
    ("TAILOR__ENGINE__SNAPSHOT_INTERVAL_MS", "300"),
];

/// `n` decisions in `campaign` (event ids `<campaign>-<i>`, 20 in flight), then a reward of
/// `i % 3 / 2` for every even `i`. Returns the rewards sent, by event id.
async fn fill(server: &Server, campaign: &str, n: usize) -> HashMap<String, f64> {
    let mut rewarded = HashMap::new();
    for wave in 0..n.div_ceil(50) {
        let mut tasks = Vec::new();
        for i in wave * 50..((wave + 1) * 50).min(n) {
            let client = server.client.clone();
            let url = server.url(&format!("/v1/campaigns/{campaign}/decide"));
            let body = json!({
                "event_id": format!("{campaign}-{i}"),
                "context": {"device": if i % 2 == 0 { "mobile" } else { "desktop" }},
                "candidates": [
                    {"id": "sku-a", "features": {"price": 10.5}},
                    {"id": "sku-b", "features": {"price": 20.0}},
                    {"id": "sku-c"}
                ],
            });
            tasks.push(tokio::spawn(async move {
                let r = client.post(url).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let rewards: Vec<Value> = (wave * 50..((wave + 1) * 50).min(n))
            .filter(|i| i % 2 == 0)
            .map(|i| {
                let v = (i % 3) as f64 / 2.0;
                rewarded.insert(format!("{campaign}-{i}"), v);
                json!({"event_id": format!("{campaign}-{i}"), "value": v})
            })
            .collect();
        let (status, body) = server
            .post("/v1/rewards", &json!({ "rewards": rewards }))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    rewarded
}

#[tokio::test]
async fn the_log_export_streams_every_decision_and_aggregations_fold_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), FAST).await;
    for id in ["big", "other"] {
        server
            .create_campaign(
                json!({"id": id, "policy": {"type": "thompson"}, "reward_wait_seconds": 3600,
                       "log_requests": true}),
            )
            .await;
    }
    let rewarded = fill(&server, "big", 3_000).await;
    fill(&server, "other", 400).await;

    let r = server
        .client
        .get(server.url("/admin/v1/campaigns/big/log"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    assert!(
        r.headers().get("content-length").is_none(),
        "streamed, not built in memory: {:?}",
        r.headers()
    );
    let text = r.text().await.unwrap();
    assert!(text.ends_with('\n'));
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["tailor_log"], 1);
    assert_eq!(header["campaign"]["id"], "big");
    let mut seen = std::collections::HashSet::new();
    let mut last_at = 0;
    for l in lines {
        let line: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        let event = line["event_id"].as_str().unwrap().to_string();
        assert!(event.starts_with("big-"), "{event}");
        last_at = last_at.max(line["at_ms"].as_u64().unwrap());
        assert_eq!(line["candidates"].as_array().unwrap().len(), 3);
        let action = &line["actions"][0];
        assert!(action["probability"].as_f64().unwrap() > 0.0);
        assert_eq!(
            action["reward"].as_f64(),
            rewarded.get(&event).copied(),
            "{event}: the joined reward"
        );
        assert!(seen.insert(event), "each decision once");
    }
    assert_eq!(seen.len(), 3_000);

    // A time range streams only its part.
    let (status, part) = server
        .get_text(&format!("/admin/v1/campaigns/big/log?to_ms={last_at}"))
        .await;
    assert_eq!(status, 200);
    let n = part.lines().count() - 1;
    assert!(n < 3_000 && n > 0, "{n}");

    // Evaluation and the value series read the same log one decision at a time.
    let (status, ev) = server
        .post("/admin/v1/campaigns/big/evaluations", &json!({}))
        .await;
    assert_eq!(status, 201, "{ev}");
    assert_eq!(ev["decisions"], 3_000);
    assert_eq!(ev["used"], 1_500, "the rewarded half; the rest is pending");
    assert_eq!(ev["pending"], 1_500);
    let (status, values) = server
        .get("/admin/v1/campaigns/big/reports/policy-values?bucket_seconds=86400")
        .await;
    assert_eq!(status, 200, "{values}");
    let served: u64 = values["policies"][0]["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["decisions"].as_u64().unwrap())
        .sum();
    assert_eq!(served, 1_500);

    // A client that goes away mid-export leaves the server serving.
    let mut r = server
        .client
        .get(server.url("/admin/v1/campaigns/big/log"))
        .send()
        .await
        .unwrap();
    assert!(!r.chunk().await.unwrap().unwrap().is_empty());
    drop(r);
    let (status, again) = server.get_text("/admin/v1/campaigns/other/log").await;
    assert_eq!(status, 200);
    assert_eq!(again.lines().count(), 401);

    // Errors found before the first byte keep their status.
    let (status, err) = server.get("/admin/v1/campaigns/big/log?format=csv").await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["field"], "format");
    let (status, _) = server.get("/admin/v1/campaigns/nope/log").await;
    assert_eq!(status, 404);
}
