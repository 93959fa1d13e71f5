//! Issue 6 (marketers' control room): API keys and roles, the audit log, holdout, reports.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{Server, ADMIN_KEY};

/// One request with `key` (or none), returning status and JSON body.
async fn call(
    server: &Server,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    // A fresh client without default headers, so "no key" really sends none.
    let mut r = reqwest::Client::new().request(method, server.url(path));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn create_key(server: &Server, body: Value) -> (String, String) {
    let (status, v) = server.post("/admin/v1/keys", &body).await;
    assert_eq!(status, 201, "{v}");
    assert!(v.get("hash").is_none(), "{v}");
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

fn campaign(id: &str) -> Value {
    json!({
        "id": id,
        "policy": {"type": "thompson"},
        "shadow_policies": [{"type": "epsilon_greedy", "epsilon": 0.1}],
    })
}

/// Every admin endpoint × {no key, decide key, viewer, revoked, editor}; decide and reward with
/// scoped keys; the audit log records every change and cannot be changed.
#[tokio::test]
async fn role_matrix_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    server.create_campaign(campaign("home")).await;
    server.create_campaign(campaign("other")).await;
    server.create_campaign(campaign("scratch")).await;

    let (_, decide) = create_key(&server, json!({"role": "decide"})).await;
    let (_, viewer) = create_key(&server, json!({"role": "viewer", "label": "analyst"})).await;
    let (editor_id, editor) = create_key(&server, json!({"role": "editor"})).await;
    let (revoked_id, revoked) = create_key(&server, json!({"role": "editor"})).await;
    let (victim_id, _) = create_key(&server, json!({"role": "decide"})).await;
    assert_eq!(
        server
            .client
            .delete(server.url(&format!("/admin/v1/keys/{revoked_id}")))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    // (method, path, body, expected status for an editor); GETs are reads, the rest writes.
    let endpoints: Vec<(Method, String, Option<Value>, u16)> = vec![
        (Method::GET, "/admin/v1/campaigns".into(), None, 200),
        (Method::GET, "/admin/v1/campaigns/home".into(), None, 200),
        (
            Method::GET,
            "/admin/v1/campaigns/home/stats".into(),
            None,
            200,
        ),
        (Method::GET, "/admin/v1/keys".into(), None, 200),
        (Method::GET, "/admin/v1/audit".into(), None, 200),
        (Method::GET, "/admin/v1/plugins".into(), None, 200),
        (
            Method::GET,
            "/admin/v1/campaigns/home/reports/actions".into(),
            None,
            200,
        ),
        (
            Method::GET,
            "/admin/v1/campaigns/home/reports/lift".into(),
            None,
            200,
        ),
        (
            Method::GET,
            "/admin/v1/campaigns/home/reports/hidden-gems".into(),
            None,
            200,
        ),
        (
            Method::GET,
            "/admin/v1/campaigns/home/reports/affinity".into(),
            None,
            200,
        ),
        (
            Method::GET,
            "/admin/v1/campaigns/home/reports/policies".into(),
            None,
            200,
        ),
        (
            Method::GET,
            "/admin/v1/campaigns/home/reports/policy-values".into(),
            None,
            200,
        ),
        (
            Method::POST,
            "/admin/v1/campaigns".into(),
            Some(campaign("created")),
            201,
        ),
        (
            Method::PUT,
            "/admin/v1/campaigns/home".into(),
            Some(campaign("home")),
            200,
        ),
        (
            Method::POST,
            "/admin/v1/campaigns/home/pause".into(),
            None,
            200,
        ),
        (
            Method::POST,
            "/admin/v1/campaigns/home/resume".into(),
            None,
            200,
        ),
        (
            Method::PUT,
            "/admin/v1/campaigns/home/holdout".into(),
            Some(json!({"share": 0.25})),
            200,
        ),
        (
            Method::PUT,
            "/admin/v1/campaigns/home/policy".into(),
            Some(json!({"type": "thompson"})),
            200,
        ),
        (
            Method::POST,
            "/admin/v1/keys".into(),
            Some(json!({"role": "viewer"})),
            201,
        ),
        (
            Method::DELETE,
            format!("/admin/v1/keys/{victim_id}"),
            None,
            200,
        ),
        (Method::POST, "/admin/v1/plugins/reload".into(), None, 200),
        (
            Method::DELETE,
            "/admin/v1/campaigns/scratch".into(),
            None,
            204,
        ),
    ];
    for (method, path, body, ok) in &endpoints {
        let write = *method != Method::GET;
        let label = format!("{method} {path}");
        let (s, v) = call(&server, None, method.clone(), path, body.as_ref()).await;
        assert_eq!(s, 401, "{label} without a key: {v}");
        assert_eq!(v["error"]["code"], "unauthorized", "{label}: {v}");
        let (s, v) = call(
            &server,
            Some("tlr_nope_nope"),
            method.clone(),
            path,
            body.as_ref(),
        )
        .await;
        assert_eq!(s, 401, "{label} with an unknown key: {v}");
        let (s, v) = call(&server, Some(&revoked), method.clone(), path, body.as_ref()).await;
        assert_eq!(s, 401, "{label} with a revoked key: {v}");
        let (s, v) = call(&server, Some(&decide), method.clone(), path, body.as_ref()).await;
        assert_eq!(s, 403, "{label} with a decide key: {v}");
        assert_eq!(v["error"]["code"], "forbidden", "{label}: {v}");
        let (s, v) = call(&server, Some(&viewer), method.clone(), path, body.as_ref()).await;
        assert_eq!(
            s,
            if write { 403 } else { *ok },
            "{label} with a viewer key: {v}"
        );
        let (s, v) = call(&server, Some(&editor), method.clone(), path, body.as_ref()).await;
        assert_eq!(s, *ok, "{label} with an editor key: {v}");
    }

    // Ops endpoints and the dashboard page stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (s, _) = call(&server, None, Method::GET, path, None).await;
        assert_eq!(s, 200, "{path}");
    }

    // Keys are listed without secrets or hashes.
    let (_, keys) = server.get("/admin/v1/keys").await;
    let listed = keys["keys"].as_array().unwrap();
    assert!(listed
        .iter()
        .all(|k| k.get("key").is_none() && k.get("hash").is_none()));
    assert!(listed
        .iter()
        .any(|k| k["id"] == revoked_id.as_str() && k["revoked_ms"].is_u64()));

    // Decide and reward: any key; a scoped key only its campaign.
    let (_, home_only) = create_key(&server, json!({"role": "decide", "campaign": "home"})).await;
    let body = json!({"candidates": [{"id": "a"}, {"id": "b"}], "event_id": "ev-other"});
    let (s, _) = call(
        &server,
        None,
        Method::POST,
        "/v1/campaigns/other/decide",
        Some(&body),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = call(
        &server,
        Some(&decide),
        Method::POST,
        "/v1/campaigns/other/decide",
        Some(&body),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = call(
        &server,
        Some(&home_only),
        Method::POST,
        "/v1/campaigns/other/decide",
        Some(&body),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let body = json!({"candidates": [{"id": "a"}, {"id": "b"}], "event_id": "ev-home"});
    let (s, _) = call(
        &server,
        Some(&home_only),
        Method::POST,
        "/v1/campaigns/home/decide",
        Some(&body),
    )
    .await;
    assert_eq!(s, 200);
    // Event ids are per campaign: a scoped key rewards in its own campaign, where another
    // campaign's event does not exist (and naming that campaign is refused).
    let (s, v) = call(
        &server,
        Some(&home_only),
        Method::POST,
        "/v1/events/ev-other/reward",
        Some(&json!({"value": 1.0})),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = call(
        &server,
        Some(&home_only),
        Method::POST,
        "/v1/campaigns/other/events/ev-other/reward",
        Some(&json!({"value": 1.0})),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let (s, _) = call(
        &server,
        Some(&home_only),
        Method::POST,
        "/v1/events/ev-home/reward",
        Some(&json!({"value": 1.0})),
    )
    .await;
    assert_eq!(s, 200);
    let batch = json!({"rewards": [{"event_id": "ev-other", "value": 1.0}, {"event_id": "ev-home", "value": 1.0}]});
    let (s, v) = call(
        &server,
        Some(&home_only),
        Method::POST,
        "/v1/rewards",
        Some(&batch),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["http_status"], 404, "{v}");
    assert_eq!(v["results"][1]["status"], "duplicate", "{v}");
    // A scoped admin key sees and changes only its campaign.
    let (_, home_editor) = create_key(&server, json!({"role": "editor", "campaign": "home"})).await;
    let (s, v) = call(
        &server,
        Some(&home_editor),
        Method::GET,
        "/admin/v1/campaigns",
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["campaigns"].as_array().unwrap().len(), 1, "{v}");
    let (s, _) = call(
        &server,
        Some(&home_editor),
        Method::POST,
        "/admin/v1/campaigns/other/pause",
        None,
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = call(
        &server,
        Some(&home_editor),
        Method::GET,
        "/admin/v1/keys",
        None,
    )
    .await;
    assert_eq!(s, 403);

    // The audit log: every change, with the key that made it, before and after.
    let (s, v) = server.get("/admin/v1/audit?campaign=home&limit=50").await;
    assert_eq!(s, 200);
    let entries = v["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "campaign.create",
        "campaign.update",
        "campaign.pause",
        "campaign.resume",
        "campaign.holdout",
        "campaign.policy",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let holdout = entries
        .iter()
        .find(|e| e["action"] == "campaign.holdout")
        .unwrap();
    assert_eq!(holdout["key_id"], editor_id.as_str());
    assert_eq!(holdout["after"]["holdout"], 0.25);
    assert!(holdout["before"].get("holdout").is_none(), "{holdout}");
    assert!(entries.iter().all(|e| e["campaign"] == "home"));
    let (_, v) = server.get("/admin/v1/audit?limit=200").await;
    let all = v["entries"].as_array().unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first");
    for a in [
        "key.create",
        "key.revoke",
        "campaign.delete",
        "admin.request",
    ] {
        assert!(all.iter().any(|e| e["action"] == a), "{a} missing");
    }
    assert!(all.iter().any(|e| e["key_id"] == "bootstrap"));
    // Nothing can edit it.
    for m in [Method::PUT, Method::DELETE, Method::POST] {
        let (s, _) = call(
            &server,
            Some(ADMIN_KEY),
            m,
            "/admin/v1/audit",
            Some(&json!({})),
        )
        .await;
        assert!(s == 404 || s == 405, "{s}");
    }
}

/// Holdout shoppers get the control order, stickily, and are marked in the response and log.
#[tokio::test]
async fn holdout_is_sticky_and_marked() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    server.create_campaign(campaign("home")).await;
    let (s, v) = server
        .put("/admin/v1/campaigns/home/holdout", &json!({"share": 0.3}))
        .await;
    assert_eq!(s, 200, "{v}");
    let salt = v["holdout_salt"].as_str().unwrap().to_string();
    assert!(!salt.is_empty());
    let (s, v) = server
        .put("/admin/v1/campaigns/home/holdout", &json!({"share": 0.7}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["field"], "share");

    let candidates: Vec<Value> = (0..5).map(|i| json!({"id": format!("sku-{i}")})).collect();
    let mut first = std::collections::HashMap::new();
    let n = 300;
    for round in 0..2 {
        for i in 0..n {
            let shopper = format!("shopper-{i}");
            let (s, d) = server
                .post(
                    "/v1/campaigns/home/decide",
                    &json!({"candidates": candidates, "shopper_id": shopper,
                            "event_id": format!("r{round}-{i}")}),
                )
                .await;
            assert_eq!(s, 200, "{d}");
            let held = d["holdout"].as_bool().unwrap();
            if held {
                assert_eq!(d["policy"], "baseline", "{d}");
                assert_eq!(d["actions"][0]["id"], "sku-0", "{d}");
            } else {
                assert_eq!(d["policy"], "thompson", "{d}");
            }
            if let Some(prev) = first.insert(shopper, held) {
                assert_eq!(prev, held, "holdout must be sticky per shopper");
            }
        }
    }
    let held = first.values().filter(|h| **h).count() as f64 / n as f64;
    assert!((0.2..0.4).contains(&held), "held-out share {held}");

    // An update without a salt keeps the assignment; the log keeps the mark across a restart.
    let (_, mut cfg) = server.get("/admin/v1/campaigns/home").await;
    cfg.as_object_mut().unwrap().remove("holdout_salt");
    let (s, v) = server.put("/admin/v1/campaigns/home", &cfg).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["holdout_salt"], salt.as_str());
    server.stop();
    server.restart().await;
    for i in 0..n {
        let (_, d) = server
            .post(
                "/v1/campaigns/home/decide",
                &json!({"candidates": candidates, "shopper_id": format!("shopper-{i}"),
                        "event_id": format!("r0-{i}")}),
            )
            .await;
        assert_eq!(d["replayed"], true);
        assert_eq!(d["holdout"], first[&format!("shopper-{i}")], "{d}");
    }
    // No shopper id: never held out.
    let (_, d) = server
        .post(
            "/v1/campaigns/home/decide",
            &json!({"candidates": candidates}),
        )
        .await;
    assert_eq!(d["holdout"], false);
}

/// Decide for every request in `requests` one at a time and reward each with
/// `reward(decision) -> value` in batches of 50 (so the policy learns as it goes).
async fn stream(
    server: &Server,
    campaign: &str,
    requests: Vec<Value>,
    mut reward: impl FnMut(&Value, &Value) -> f64,
) {
    for chunk in requests.chunks(50) {
        let mut rewards = Vec::new();
        for req in chunk {
            let (s, d) = server
                .post(&format!("/v1/campaigns/{campaign}/decide"), req)
                .await;
            assert_eq!(s, 200, "{d}");
            let value = reward(req, &d);
            rewards.push(json!({"event_id": d["event_id"], "value": value}));
        }
        let (s, v) = server
            .post("/v1/rewards", &json!({"rewards": rewards}))
            .await;
        assert_eq!(s, 200, "{v}");
    }
}

async fn lift_of(server: &Server, campaign: &str, seed: u64, good_rate: f64) -> Value {
    use rand::{Rng, SeedableRng};
    server
        .create_campaign(json!({
            "id": campaign, "policy": {"type": "thompson"},
            "holdout": 0.3, "holdout_salt": "fixed-for-the-test",
        }))
        .await;
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
    // The baseline (candidates as sent) shows the weak item first; personalization can find
    // the strong one when there is one.
    let requests: Vec<Value> = (0..1_500)
        .map(|i| {
            json!({"candidates": [{"id": "weak"}, {"id": "strong"}, {"id": "mid"}],
                   "shopper_id": format!("s{i}"), "event_id": format!("{campaign}-{i}")})
        })
        .collect();
    stream(server, campaign, requests, |_, d| {
        let rate = match d["actions"][0]["id"].as_str().unwrap() {
            "strong" => good_rate,
            _ => 0.05,
        };
        f64::from(u8::from(rng.gen_bool(rate)))
    })
    .await;
    let (s, v) = server
        .get(&format!("/admin/v1/campaigns/{campaign}/reports/lift"))
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

/// A stream where personalization helps shows a positive lift whose interval excludes 0; one
/// where it cannot (every item converts alike) shows an interval containing 0. Both survive a
/// restart unchanged (reports are computed from the logs).
#[tokio::test]
async fn lift_against_the_holdout() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let helps = lift_of(&server, "helps", 7, 0.35).await;
    let abs = &helps["absolute"];
    assert!(abs["low"].as_f64().unwrap() > 0.0, "{helps}");
    assert!(
        helps["relative"]["estimate"].as_f64().unwrap() > 1.0,
        "{helps}"
    );
    assert!(helps["p_value"].as_f64().unwrap() < 0.001, "{helps}");
    let held = helps["holdout"]["decisions"].as_u64().unwrap() as f64;
    assert!((0.2..0.4).contains(&(held / 1_500.0)), "{helps}");
    assert!(!helps["series"].as_array().unwrap().is_empty());

    let null = lift_of(&server, "null", 11, 0.05).await;
    let abs = &null["absolute"];
    assert!(
        abs["low"].as_f64().unwrap() < 0.0 && abs["high"].as_f64().unwrap() > 0.0,
        "{null}"
    );

    // Per policy: the serving policy and the baseline (holdout) are both there.
    let (_, pol) = server
        .get("/admin/v1/campaigns/helps/reports/policies?bucket_seconds=3600")
        .await;
    let names: Vec<&str> = pol["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["baseline", "thompson"], "{pol}");

    server.stop();
    server.restart().await;
    let (_, again) = server.get("/admin/v1/campaigns/helps/reports/lift").await;
    assert_eq!(again["absolute"], helps["absolute"]);
    let (s, v) = server
        .get("/admin/v1/campaigns/helps/reports/lift?bucket_seconds=0")
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["field"], "bucket_seconds");
}

/// Hidden gems and category affinity find what a seeded simulation planted: one rarely shown
/// item that converts at 60 %, and shoppers with "baby" in their history responding to toys.
#[tokio::test]
async fn hidden_gems_and_affinity() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    server
        .create_campaign(
            json!({"id": "shop", "policy": {"type": "thompson"}, "log_requests": true}),
        )
        .await;
    let categories = ["toys", "kitchen", "garden", "books", "shoes"];
    let histories: [&[&str]; 4] = [&["baby"], &["garden"], &["books", "garden"], &[]];
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(3);
    let mut requests = Vec::new();
    // A single candidate per request, so exposures are exactly what we send.
    for i in 0..2_000 {
        let item = i % 10;
        let history = histories[rng.gen_range(0..histories.len())];
        requests.push(json!({
            "context": {"history": {"categories": history}},
            "candidates": [{"id": format!("sku-{item}"),
                            "features": {"category": categories[item / 2]}}],
        }));
    }
    for j in 0..40 {
        let history = histories[j % histories.len()];
        requests.push(json!({
            "context": {"history": {"categories": history}},
            "candidates": [{"id": "sku-gem", "attributes": {"category": "books"}}],
        }));
        requests.push(json!({
            "candidates": [{"id": "sku-dud", "features": {"category": "books"}}],
        }));
    }
    stream(&server, "shop", requests, |req, _| {
        let c = &req["candidates"][0];
        let category = c["features"]["category"]
            .as_str()
            .or(c["attributes"]["category"].as_str())
            .unwrap_or("");
        let baby = req["context"]["history"]["categories"]
            .as_array()
            .is_some_and(|h| h.iter().any(|x| x == "baby"));
        let rate = match c["id"].as_str().unwrap() {
            "sku-gem" => 0.6,
            "sku-dud" => 0.0,
            _ if baby && category == "toys" => 0.5,
            _ => 0.1,
        };
        f64::from(u8::from(rng.gen_bool(rate)))
    })
    .await;

    let (s, v) = server
        .get("/admin/v1/campaigns/shop/reports/hidden-gems")
        .await;
    assert_eq!(s, 200, "{v}");
    let gems: Vec<&str> = v["gems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(gems, ["sku-gem"], "{v}");

    let (s, v) = server.get("/admin/v1/campaigns/shop/reports/actions").await;
    assert_eq!(s, 200, "{v}");
    let actions = v["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 12);
    let gem = actions.iter().find(|a| a["id"] == "sku-gem").unwrap();
    assert_eq!(gem["exposures"], 40);
    let p = &gem["posterior"];
    assert!(p["low"].as_f64().unwrap() < p["estimate"].as_f64().unwrap());
    assert!(p["estimate"].as_f64().unwrap() < p["high"].as_f64().unwrap());

    let (s, v) = server
        .get("/admin/v1/campaigns/shop/reports/affinity?min_exposures=50")
        .await;
    assert_eq!(s, 200, "{v}");
    let top = &v["pairs"][0];
    assert_eq!(
        (top["bought"].as_str(), top["shown"].as_str()),
        (Some("baby"), Some("toys")),
        "{v}"
    );
    assert!(top["lift"].as_f64().unwrap() > 1.5, "{top}");
    assert!(top["rate"]["low"].as_f64().unwrap() > top["baseline_rate"].as_f64().unwrap());
    // No other pair stands out like it.
    for p in v["pairs"].as_array().unwrap().iter().skip(1) {
        assert!(p["lift"].as_f64().unwrap() < 1.5, "{p}");
    }
}

/// Reward over time for the serving and the shadow policies: uniform serves (so its estimate is
/// exactly its logged reward rate), `fixed` (always the first candidate, worth 0.2) and Thompson
/// (learns that `strong`, worth 0.8, is best) shadow it. Seeded; tolerances are several standard
/// errors wide.
#[tokio::test]
async fn shadow_policies_get_reward_over_time_estimates() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    server
        .create_campaign(json!({
            "id": "values", "policy": {"type": "uniform"}, "log_requests": true,
            "shadow_policies": [{"type": "fixed"}, {"type": "thompson"}],
        }))
        .await;
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(11);
    let requests: Vec<Value> = (0..1_200)
        .map(|_| json!({"candidates": [{"id": "weak"}, {"id": "strong"}, {"id": "mid"}, {"id": "low"}]}))
        .collect();
    stream(&server, "values", requests, |_, d| {
        let rate = if d["actions"][0]["id"] == "strong" {
            0.8
        } else {
            0.2
        };
        f64::from(u8::from(rng.gen_bool(rate)))
    })
    .await;

    // One bucket as wide as allowed, so the whole stream lands in one point.
    let q = "?bucket_seconds=31622400";
    let (s, v) = server
        .get(&format!(
            "/admin/v1/campaigns/values/reports/policy-values{q}"
        ))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, logged) = server
        .get(&format!("/admin/v1/campaigns/values/reports/policies{q}"))
        .await;
    assert_eq!(s, 200, "{logged}");
    let point = |name: &str| -> Value {
        let p = v["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["policy"] == name)
            .unwrap_or_else(|| panic!("{name} in {v}"));
        let series = p["series"].as_array().unwrap();
        assert_eq!(series.len(), 1, "{v}");
        series[0].clone()
    };
    let roles: Vec<(&str, &str)> = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["policy"].as_str().unwrap(), p["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [
            ("uniform", "serving"),
            ("fixed", "shadow"),
            ("thompson", "shadow")
        ]
    );

    // The serving policy's estimate is its logged rate (every weight is 1).
    let uniform = point("uniform");
    let logged_rate = logged["policies"][0]["rate"].as_f64().unwrap();
    assert_eq!(logged["policies"][0]["policy"], "uniform");
    assert_eq!(uniform["decisions"], 1_200);
    assert!(
        (uniform["value"].as_f64().unwrap() - logged_rate).abs() < 1e-9,
        "{v}"
    );
    assert!((uniform["effective_sample_size"].as_f64().unwrap() - 1_200.0).abs() < 1e-6);

    // `fixed` always picks the first candidate, worth 0.2; about a quarter of the log agrees.
    let fixed = point("fixed");
    let fv = fixed["value"].as_f64().unwrap();
    assert!((fv - 0.2).abs() < 0.1, "fixed {fv}: {v}");
    let agreement = fixed["agreement"].as_f64().unwrap();
    assert!(
        (agreement - 0.25).abs() < 0.06,
        "fixed agreement {agreement}"
    );

    // Thompson learns `strong` (0.8) in replay: far above `fixed` and the uniform log.
    let thompson = point("thompson");
    let tv = thompson["value"].as_f64().unwrap();
    assert!(tv > 0.6 && tv < 0.9, "thompson {tv}: {v}");
    assert!(
        tv > logged_rate + 0.2,
        "thompson {tv} vs logged {logged_rate}"
    );

    // Bad bucket: the usual JSON error.
    let (s, e) = server
        .get("/admin/v1/campaigns/values/reports/policy-values?bucket_seconds=0")
        .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "bucket_seconds");
}
