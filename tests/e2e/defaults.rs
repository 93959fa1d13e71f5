//! Issue 20: a campaign created with only an id learns from context (docs/learning.md).

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde_json::{json, Value};

use crate::harness::Server;

/// Segment `a` converts on `sku-0`, segment `b` on `sku-1` (80 %); everything else at 5 %.
fn rate(segment: &str, id: &str) -> f64 {
    match (segment, id) {
        ("a", "sku-0") | ("b", "sku-1") => 0.8,
        _ => 0.05,
    }
}

fn body(segment: &str, event_id: String) -> Value {
    json!({
        "context": {"segment": segment},
        "candidates": (0..4).map(|i| json!({"id": format!("sku-{i}")})).collect::<Vec<_>>(),
        "event_id": event_id,
    })
}

#[tokio::test]
async fn a_campaign_created_with_only_an_id_learns_from_context() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    server
        .create_campaign(json!({"id": "plain", "kind": "items"}))
        .await;
    let (_, c) = server.get("/admin/v1/campaigns/plain").await;
    assert_eq!(c["policy"]["type"], "sparse_linucb", "{c}");
    assert_eq!(c["featurizer"]["dimension"], 65536, "{c}");
    assert_eq!(c["featurizer"]["interactions"], true, "{c}");

    let mut rng = Pcg64Mcg::seed_from_u64(20);
    for wave in 0..30 {
        let mut rewards = Vec::new();
        for j in 0..20 {
            let segment = if j % 2 == 0 { "a" } else { "b" };
            let (s, d) = server
                .post(
                    "/v1/campaigns/plain/decide",
                    &body(segment, format!("learn-{wave}-{j}")),
                )
                .await;
            assert_eq!(s, 200, "{d}");
            let id = d["actions"][0]["id"].as_str().unwrap().to_string();
            let value = f64::from(u8::from(rng.gen_bool(rate(segment, &id))));
            rewards.push(json!({"event_id": d["event_id"], "value": value}));
        }
        let (s, v) = server
            .post("/v1/rewards", &json!({"rewards": rewards}))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    // Each segment now gets its own best item; a context-free policy (the old `thompson`
    // default) could serve at most one of them, so at most about half of these.
    for (segment, best) in [("a", "sku-0"), ("b", "sku-1")] {
        let mut hits = 0;
        for i in 0..50 {
            let (s, d) = server
                .post(
                    "/v1/campaigns/plain/decide",
                    &body(segment, format!("probe-{segment}-{i}")),
                )
                .await;
            assert_eq!(s, 200, "{d}");
            hits += usize::from(d["actions"][0]["id"] == best);
        }
        assert!(hits >= 40, "segment {segment}: {hits}/50 served {best}");
    }
}
