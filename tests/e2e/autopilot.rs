//! Issue 20 item 3 (the autopilot): a campaign with a planted better α and the autopilot every
//! 2 seconds switches once, audited as `autopilot` with the evidence, and the runs route shows
//! it; a campaign where nothing clears the serving setting is kept; bad settings are a 400
//! naming the field.

use serde_json::{json, Value};

use crate::harness::{client_with, Server};
use crate::optimize::simulate_with as simulate;

const FAST: &[(&str, &str)] = &[
    ("TAILOR__ENGINE__SWEEP_INTERVAL_MS", "50"),
    ("TAILOR__ENGINE__SNAPSHOT_INTERVAL_MS", "300"),
];

/// Each segment has one clearly best item.
fn planted(segment: usize, item: usize) -> f64 {
    if segment == item {
        0.8
    } else {
        0.1
    }
}

/// Nothing to learn: every item is as good as any other.
fn flat(_: usize, _: usize) -> f64 {
    0.3
}

/// Poll the runs of `campaign` until `done` holds; bounded by a number of polls, not a clock.
async fn runs_until(server: &Server, campaign: &str, done: impl Fn(&[Value]) -> bool) -> Value {
    let path = format!("/admin/v1/campaigns/{campaign}/autopilot");
    for _ in 0..3000 {
        let (status, v) = server.get(&path).await;
        assert_eq!(status, 200, "{v}");
        if done(v["runs"].as_array().unwrap()) {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, v) = server.get(&path).await;
    panic!("the autopilot runs of {campaign} never got there: {v}");
}

fn count(runs: &[Value], outcome: &str) -> usize {
    runs.iter().filter(|r| r["outcome"] == outcome).count()
}

/// Turn the autopilot of `campaign` on with `autopilot`, through the campaign update.
async fn enable(server: &Server, campaign: &str, autopilot: Value) {
    let (status, mut config) = server.get(&format!("/admin/v1/campaigns/{campaign}")).await;
    assert_eq!(status, 200, "{config}");
    config["autopilot"] = autopilot;
    let (status, v) = server
        .put(&format!("/admin/v1/campaigns/{campaign}"), &config)
        .await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn autopilot_switches_once_when_a_setting_clears_and_keeps_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), FAST).await;

    // Bad settings: a 400 naming the field, nothing created.
    for (autopilot, log_requests, field) in [
        (json!({"every": "0s"}), true, "autopilot.every"),
        (json!({"window": "2"}), true, "autopilot.window"),
        (json!({"min_decisions": 0}), true, "autopilot.min_decisions"),
        (
            json!({"grid": {"alpha": [-1.0]}}),
            true,
            "autopilot.grid.alpha[0]",
        ),
        (json!({"enabled": true}), false, "autopilot.enabled"),
    ] {
        let (status, v) = server
            .post(
                "/admin/v1/campaigns",
                &json!({"id": "bad", "log_requests": log_requests, "autopilot": autopilot}),
            )
            .await;
        assert_eq!(status, 400, "{autopilot}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let (status, _) = server.get("/admin/v1/campaigns/bad").await;
    assert_eq!(status, 404);

    // LinUCB with α = 20 serves close to round-robin for thousands of decisions; a small α
    // learns each segment's best item in a few hundred (tests/e2e/optimize.rs).
    let grid = json!({"policies": ["linucb", "sparse_linucb"], "alpha": [0.1, 0.3, 1.0], "dimension": [64]});
    server
        .create_campaign(json!({
            "id": "ap",
            "policy": {"type": "linucb", "alpha": 20.0},
            "featurizer": {"dimension": 64, "interactions": true},
            "exploration": 0.3,
            "log_requests": true,
        }))
        .await;
    server
        .create_campaign(json!({
            "id": "flat",
            "policy": {"type": "sparse_linucb", "alpha": 0.2},
            "featurizer": {"dimension": 64, "interactions": true},
            "exploration": 0.3,
            "log_requests": true,
        }))
        .await;
    // Off by default: the route answers, with no run.
    let (status, v) = server.get("/admin/v1/campaigns/ap/autopilot").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["enabled"], false, "{v}");
    assert_eq!(v["runs"], json!([]), "{v}");

    simulate(&server, "ap", 1500, 20, planted).await;
    simulate(&server, "flat", 800, 21, flat).await;
    enable(
        &server,
        "ap",
        json!({"enabled": true, "every": "2s", "window": "1h", "min_decisions": 1000, "cooldown": "1h", "grid": grid}),
    )
    .await;
    enable(
        &server,
        "flat",
        json!({"enabled": true, "every": "2s", "window": "1h", "min_decisions": 500,
               "grid": {"policies": ["sparse_linucb"], "alpha": [0.05, 1.0], "dimension": [64]}}),
    )
    .await;

    // The switch, then two runs in the cool-down: one switch only.
    let report = runs_until(&server, "ap", |runs| {
        let switched = runs.iter().position(|r| r["outcome"] == "switched");
        switched.is_some_and(|i| i >= 2)
    })
    .await;
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(count(runs, "switched"), 1, "{report}");
    let switch = runs.iter().find(|r| r["outcome"] == "switched").unwrap();
    assert!(
        runs[0]["reason"].as_str().unwrap().contains("cool-down"),
        "{report}"
    );
    assert_eq!(runs[0]["outcome"], "skipped", "{report}");
    assert!(report["cooldown_until_ms"].as_u64().is_some(), "{report}");
    let winner = &switch["best"];
    let serving = &switch["serving"];
    assert!(
        winner["value"]["low"].as_f64().unwrap() > serving["value"]["high"].as_f64().unwrap(),
        "{switch}"
    );
    assert!(switch["decisions"].as_u64().unwrap() >= 1000, "{switch}");
    assert!(
        winner["policy"]["alpha"].as_f64().unwrap() <= 1.0,
        "{switch}"
    );

    // The config changed to the winner, inside the grid.
    let (_, config) = server.get("/admin/v1/campaigns/ap").await;
    assert_eq!(config["policy"], winner["policy"], "{config}");
    assert_eq!(config["featurizer"]["dimension"], 64, "{config}");
    assert_eq!(report["serving"]["policy"], winner["policy"], "{report}");

    // Audited as `autopilot`, with the estimates and intervals of serving and winner.
    let (_, audit) = server.get("/admin/v1/audit?campaign=ap&limit=50").await;
    let entries: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "autopilot.switch")
        .collect();
    assert_eq!(entries.len(), 1, "{audit}");
    let entry = entries[0];
    assert_eq!(entry["key_id"], "autopilot", "{entry}");
    assert_eq!(entry["target"], switch["evaluation"], "{entry}");
    assert_eq!(entry["before"]["policy"]["alpha"], 20.0, "{entry}");
    assert_eq!(entry["after"]["policy"], winner["policy"], "{entry}");
    assert!(
        entry["after"]["estimate"]["low"].as_f64().unwrap()
            > entry["before"]["estimate"]["high"].as_f64().unwrap(),
        "{entry}"
    );
    // The optimization behind it is a stored evaluation.
    let (status, ev) = server
        .get(&format!(
            "/admin/v1/campaigns/ap/evaluations/{}",
            switch["evaluation"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{ev}");
    assert_eq!(ev["optimization"]["winner"], winner["name"], "{ev}");
    let (status, list) = server.get("/admin/v1/campaigns/ap/evaluations").await;
    assert_eq!(status, 200, "{list}");

    // Nothing clears on a log without signal: runs, no switch, config and audit untouched.
    let report = runs_until(&server, "flat", |runs| count(runs, "kept") >= 1).await;
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(count(runs, "switched"), 0, "{report}");
    let kept = runs.iter().find(|r| r["outcome"] == "kept").unwrap();
    assert!(
        kept["reason"].as_str().unwrap().contains("clears"),
        "{kept}"
    );
    let (_, config) = server.get("/admin/v1/campaigns/flat").await;
    assert_eq!(config["policy"]["alpha"], 0.2, "{config}");
    let (_, audit) = server.get("/admin/v1/audit?campaign=flat&limit=50").await;
    assert!(
        !audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "autopilot.switch"),
        "{audit}"
    );

    // The runs route: viewer and up, scoped to the key's campaign.
    let (status, v) = server
        .post(
            "/admin/v1/keys",
            &json!({"role": "viewer", "campaign": "flat"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let viewer = client_with(v["key"].as_str().unwrap());
    let r = viewer
        .get(server.url("/admin/v1/campaigns/flat/autopilot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = viewer
        .get(server.url("/admin/v1/campaigns/ap/autopilot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (status, _) = server.get("/admin/v1/campaigns/nope/autopilot").await;
    assert_eq!(status, 404);
}
