//! Issue 8: the Personalizer-compatible API. Raw HTTP against the v1.0 and api-version path
//! forms, deferred activation (restart-safe), multi-slot, errors in Personalizer's shape, the
//! learning modes and configuration round trips, learning parity with the native API, and the
//! official Python client (`azure-ai-personalizer==1.0.0b1`) run against the server.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde_json::{json, Value};

use crate::harness::Server;

const FAST: &[(&str, &str)] = &[
    ("TAILOR__ENGINE__SWEEP_INTERVAL_MS", "50"),
    ("TAILOR__ENGINE__SNAPSHOT_INTERVAL_MS", "300"),
];

/// A Personalizer client: `Ocp-Apim-Subscription-Key` on every request.
struct Pz {
    http: reqwest::Client,
    base: String,
}

impl Pz {
    fn new(server: &Server, key: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "Ocp-Apim-Subscription-Key",
            reqwest::header::HeaderValue::from_str(key).unwrap(),
        );
        Self {
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap(),
            base: server.url("/personalizer"),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
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

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
}

/// A campaign fit for Personalizer-style traffic and an editor key scoped to it.
async fn setup(server: &Server, id: &str, wait_seconds: f64) -> String {
    server
        .create_campaign(json!({
            "id": id,
            "policy": {"type": "epsilon_greedy", "epsilon": 0.1, "estimator": "ridge"},
            "featurizer": {"dimension": 64, "interactions": true},
            "reward_wait_seconds": wait_seconds,
            // Personalizer documented rewards in -1..1; the `sum` test adds three rewards of 1.
            "reward_range": [-1, 3],
        }))
        .await;
    scoped_key(server, id, "editor").await
}

async fn scoped_key(server: &Server, campaign: &str, role: &str) -> String {
    let (status, v) = server
        .post(
            "/admin/v1/keys",
            &json!({"role": role, "campaign": campaign}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    v["key"].as_str().unwrap().to_string()
}

fn actions() -> Value {
    json!([
        {"id": "pasta", "features": [{"cuisine": "italian", "price": 12}, {"spicy": false}]},
        {"id": "curry", "features": [{"cuisine": "indian", "price": 10}, {"spicy": true}]},
        {"id": "salad", "features": [{"cuisine": "any", "price": 8}]},
        {"id": "sushi", "features": [{"cuisine": "japanese", "price": 20}]},
    ])
}

fn assert_pz_error(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

#[tokio::test]
async fn personalizer_rank_reward_over_raw_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), FAST).await;
    let key = setup(&server, "lunch", 600.0).await;
    let pz = Pz::new(&server, &key);

    let body = json!({
        "contextFeatures": [{"time": "noon"}, {"user": {"diet": "none", "visits": 3}}],
        "actions": actions(),
        "excludedActions": ["sushi"],
        "eventId": "ev-1",
        "deferActivation": false,
    });
    let (status, v) = pz.post("/v1.0/rank", &body).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["eventId"], "ev-1");
    let chosen = v["rewardActionId"].as_str().unwrap().to_string();
    assert_ne!(chosen, "sushi");
    let ranking = v["ranking"].as_array().unwrap();
    assert_eq!(ranking.len(), 4, "{v}");
    assert_eq!(ranking[0]["id"], chosen.as_str());
    assert_eq!(ranking[3]["id"], "sushi");
    assert_eq!(ranking[3]["probability"], 0.0);
    let total: f64 = ranking
        .iter()
        .map(|r| r["probability"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-9, "{v}");
    // After the served action, the eligible ones by their probability of being served.
    let rest: Vec<f64> = ranking[1..3]
        .iter()
        .map(|r| r["probability"].as_f64().unwrap())
        .collect();
    assert!(rest[0] >= rest[1], "{v}");

    // The same event id again: the recorded decision.
    let (status, again) = pz.post("/v1.0/rank", &body).await;
    assert_eq!(status, 201);
    assert_eq!(again["rewardActionId"], chosen.as_str());

    let (status, v) = pz
        .post("/v1.0/events/ev-1/reward", &json!({"value": 1.0}))
        .await;
    assert_eq!(status, 204, "{v}");
    let stats = server.stats("lunch").await;
    assert_eq!(stats["rewards"], 1, "{stats}");
    assert_eq!(stats["decisions"], 1, "{stats}");

    // The api-version form and the preview path forms.
    for path in [
        "/rank?api-version=2022-09-01-preview",
        "/v1.1-preview.3/rank",
        "/v1.1-preview.1/rank",
    ] {
        let (status, v) = pz
            .post(
                path,
                &json!({"actions": actions(), "contextFeatures": [{"time": "night"}]}),
            )
            .await;
        assert_eq!(status, 201, "{path}: {v}");
        let id = v["eventId"].as_str().unwrap();
        let reward_path = if path.starts_with("/rank") {
            format!("/events/{id}/reward?api-version=2022-09-01-preview")
        } else {
            format!("{}/events/{id}/reward", &path[..path.len() - 5])
        };
        let (status, v) = pz.post(&reward_path, &json!({"value": 0.5})).await;
        assert_eq!(status, 204, "{reward_path}: {v}");
    }
    let stats = server.stats("lunch").await;
    assert_eq!(stats["rewards"], 4, "{stats}");
    // A late or repeated reward is accepted silently, as Personalizer did.
    let (status, _) = pz
        .post("/v1.0/events/ev-1/reward", &json!({"value": 0.0}))
        .await;
    assert_eq!(status, 204);
    assert_eq!(server.stats("lunch").await["rewards"], 4);
}

#[tokio::test]
async fn personalizer_errors_have_its_shape() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), FAST).await;
    let key = setup(&server, "lunch", 600.0).await;
    let pz = Pz::new(&server, &key);

    // No key, an unknown key, an unscoped key.
    let anon = reqwest::Client::new()
        .post(server.url("/personalizer/v1.0/rank"))
        .json(&json!({"actions": actions()}))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status().as_u16(), 401);
    assert_pz_error(&anon.json::<Value>().await.unwrap(), "Unauthorized");
    let (status, v) = Pz::new(&server, "nope")
        .post("/v1.0/rank", &json!({"actions": actions()}))
        .await;
    assert_eq!(status, 401);
    assert_pz_error(&v, "Unauthorized");
    let (status, v) = Pz::new(&server, crate::harness::ADMIN_KEY)
        .post("/v1.0/rank", &json!({"actions": actions()}))
        .await;
    assert_eq!(status, 403, "{v}");
    assert_pz_error(&v, "Forbidden");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("scoped"),
        "{v}"
    );

    // Bad bodies name the field.
    let (status, v) = pz.post("/v1.0/rank", &json!({"actions": []})).await;
    assert_eq!(status, 400);
    assert_pz_error(&v, "BadRequest");
    assert_eq!(v["error"]["target"], "actions");
    let (status, v) = pz
        .post(
            "/v1.0/rank",
            &json!({"actions": actions(), "contextFeatures": ["x"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["target"], "contextFeatures[0]", "{v}");
    let (status, v) = pz
        .post(
            "/v1.0/rank",
            &json!({"actions": actions(), "excludedActions": ["pasta", "curry", "salad", "sushi"]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["target"], "excludedActions", "{v}");
    let (status, v) = pz.post("/v1.0/rank", &json!({"actions": "nope"})).await;
    assert_eq!(status, 400);
    assert_pz_error(&v, "BadRequest");
    assert_eq!(server.stats("lunch").await["decisions"], 0);

    // Unknown events, other loops' events, unknown routes, feature importances.
    let (status, v) = pz
        .post("/v1.0/events/missing/reward", &json!({"value": 1}))
        .await;
    assert_eq!(status, 404);
    assert_pz_error(&v, "ResourceNotFound");
    let (status, v) = pz.post("/v1.0/events/missing/activate", &json!({})).await;
    assert_eq!(status, 404);
    assert_pz_error(&v, "ResourceNotFound");
    let other = setup(&server, "dinner", 600.0).await;
    let (status, v) = Pz::new(&server, &other)
        .post(
            "/v1.0/rank",
            &json!({"actions": actions(), "eventId": "dinner-1"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = pz
        .post("/v1.0/events/dinner-1/reward", &json!({"value": 1}))
        .await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = pz.get("/v1.0/nothing/here").await;
    assert_eq!(status, 404);
    assert_pz_error(&v, "ResourceNotFound");
    let (status, v) = pz
        .get("/featureImportances?api-version=2022-09-01-preview")
        .await;
    assert_eq!(status, 501);
    assert_pz_error(&v, "NotImplemented");

    // A decide key ranks and rewards but cannot touch configuration.
    let decide = Pz::new(&server, &scoped_key(&server, "lunch", "decide").await);
    let (status, v) = decide
        .post("/v1.0/rank", &json!({"actions": actions()}))
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = decide
        .put(
            "/v1.0/configurations/policy",
            &json!({"name": "p", "arguments": "--cb_explore_adf"}),
        )
        .await;
    assert_eq!(status, 403, "{v}");
    assert_pz_error(&v, "Forbidden");
}

#[tokio::test]
async fn personalizer_deferred_activation_is_restart_safe() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), FAST).await;
    let key = setup(&server, "lunch", 2.0).await;
    let pz = Pz::new(&server, &key);
    let rank = |id: &str, defer: bool| json!({"actions": actions(), "eventId": id, "deferActivation": defer});
    for (id, defer) in [("d-1", true), ("d-2", true), ("plain", false)] {
        let (status, v) = pz.post("/v1.0/rank", &rank(id, defer)).await;
        assert_eq!(status, 201, "{v}");
    }
    // Not activated: the reward is acknowledged but not learned from.
    let (status, _) = pz
        .post("/v1.0/events/d-1/reward", &json!({"value": 1}))
        .await;
    assert_eq!(status, 204);
    assert_eq!(server.stats("lunch").await["rewards"], 0);

    // The reward above was acknowledged after a flush that covered the deferral marks too.
    server.kill9();
    server.restart().await;
    let pz = Pz::new(&server, &key);
    let (status, _) = pz
        .post("/v1.0/events/d-1/reward", &json!({"value": 1}))
        .await;
    assert_eq!(status, 204);
    assert_eq!(server.stats("lunch").await["rewards"], 0);
    let (status, v) = pz.post("/v1.0/events/d-1/activate", &json!({})).await;
    assert_eq!(status, 204, "{v}");
    let (status, _) = pz
        .post("/v1.0/events/d-1/reward", &json!({"value": 1}))
        .await;
    assert_eq!(status, 204);
    assert_eq!(server.stats("lunch").await["rewards"], 1);

    // When the windows close: `plain` gets its default reward, the never-activated `d-2`
    // nothing.
    tokio::time::sleep(std::time::Duration::from_millis(3_000)).await;
    let mut rewards = 0;
    for _ in 0..50 {
        rewards = server.stats("lunch").await["rewards"].as_u64().unwrap();
        if rewards >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(server.stats("lunch").await["rewards"], 2, "{rewards}");
}

/// With `sum` aggregation every reward call counts, equal values included (as in Personalizer).
#[tokio::test]
async fn personalizer_sum_aggregation_counts_every_reward() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), FAST).await;
    let key = setup(&server, "lunch", 600.0).await;
    let pz = Pz::new(&server, &key);
    let (status, v) = pz
        .put(
            "/v1.0/configurations/service",
            &json!({"rewardAggregation": "sum", "rewardWaitTime": "PT1S"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = pz
        .post(
            "/v1.0/rank",
            &json!({"actions": actions(), "eventId": "s-1"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    for _ in 0..3 {
        let (status, _) = pz
            .post("/v1.0/events/s-1/reward", &json!({"value": 1.0}))
            .await;
        assert_eq!(status, 204);
    }
    let mut stats = Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        stats = server.stats("lunch").await;
        if stats["rewards"] == 1 {
            break;
        }
    }
    let sum: f64 = stats["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["reward_sum"].as_f64().unwrap())
        .sum();
    assert_eq!(stats["rewards"], 1, "{stats}");
    assert_eq!(sum, 3.0, "{stats}");
}

#[tokio::test]
async fn personalizer_multi_slot_over_raw_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), FAST).await;
    let key = setup(&server, "page", 600.0).await;
    let pz = Pz::new(&server, &key);
    let body = json!({
        "contextFeatures": [{"device": "mobile"}],
        "actions": actions(),
        "slots": [
            {"id": "hero", "baselineAction": "pasta", "features": [{"size": "large"}]},
            {"id": "side", "baselineAction": "salad", "excludedActions": ["sushi"]},
            {"id": "footer", "baselineAction": "curry"},
        ],
        "eventId": "page-1",
        "deferActivation": true,
    });
    let (status, v) = pz.post("/v1.0/multislot/rank", &body).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["eventId"], "page-1");
    let slots = v["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 3);
    let ids: Vec<&str> = slots
        .iter()
        .map(|s| s["rewardActionId"].as_str().unwrap())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "each action in one slot at most: {v}");
    assert_ne!(ids[1], "sushi");
    assert_eq!(slots[0]["id"], "hero");

    let reward =
        json!({"reward": [{"slotId": "hero", "value": 1.0}, {"slotId": "side", "value": 0.0}]});
    let (status, _) = pz
        .post("/v1.0/multislot/events/page-1/reward", &reward)
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        server.stats("page").await["rewards"],
        0,
        "deferred: not learned"
    );
    let (status, v) = pz
        .post("/v1.0/multislot/events/page-1/activate", &json!({}))
        .await;
    assert_eq!(status, 204, "{v}");
    let (status, _) = pz
        .post("/v1.0/multislot/events/page-1/reward", &reward)
        .await;
    assert_eq!(status, 204);
    assert_eq!(server.stats("page").await["rewards"], 2);
    let (status, v) = pz
        .post(
            "/v1.0/multislot/events/page-1/reward",
            &json!({"reward": [{"slotId": "nope", "value": 1.0}]}),
        )
        .await;
    assert_eq!(status, 404, "{v}");
    assert_pz_error(&v, "ResourceNotFound");

    // Validation: baselines must be actions, distinct, and not excluded.
    for (slots, target) in [
        (
            json!([{"id": "a", "baselineAction": "nope"}]),
            "slots[0].baselineAction",
        ),
        (
            json!([{"id": "a", "baselineAction": "pasta"}, {"id": "b", "baselineAction": "pasta"}]),
            "slots[1].baselineAction",
        ),
        (
            json!([{"id": "a", "baselineAction": "pasta", "excludedActions": ["pasta"]}]),
            "slots[0].baselineAction",
        ),
        (
            json!([{"id": "a", "baselineAction": "pasta"}, {"id": "a", "baselineAction": "curry"}]),
            "slots[1].id",
        ),
    ] {
        let (status, v) = pz
            .post(
                "/multislot/rank?api-version=2022-09-01-preview",
                &json!({"actions": actions(), "slots": slots}),
            )
            .await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["target"], target, "{v}");
    }
}

#[tokio::test]
async fn personalizer_learning_modes_and_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), FAST).await;
    let key = setup(&server, "lunch", 600.0).await;
    let pz = Pz::new(&server, &key);
    let mode = |m: &str| json!({"learningMode": m});

    // Service configuration: mapped fields reach the campaign, the rest is returned as set.
    let (status, v) = pz
        .put(
            "/v1.0/configurations/service",
            &json!({"rewardWaitTime": "PT2H", "defaultReward": -0.5, "rewardAggregation": "sum",
                    "explorationPercentage": 0.25, "logRetentionDays": 90, "modelExportFrequency": "PT5M",
                    "logMirrorSasUri": "https://example.invalid/c"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, campaign) = server.get("/admin/v1/campaigns/lunch").await;
    assert_eq!(status, 200);
    assert_eq!(campaign["reward_wait_seconds"], 7200.0, "{campaign}");
    assert_eq!(campaign["default_reward"], -0.5);
    assert_eq!(campaign["reward_aggregation"], "sum");
    assert_eq!(campaign["exploration"], 0.25);
    let (_, v) = pz.get("/v1.0/configurations/service").await;
    assert_eq!(v["rewardWaitTime"], "PT2H");
    assert_eq!(v["logRetentionDays"], 90);
    assert_eq!(v["logMirrorSasUri"], "https://example.invalid/c");
    assert_eq!(v["learningMode"], "Online");
    assert!(v["lastConfigurationEditDate"].is_string(), "{v}");
    for (body, target) in [
        (json!({"rewardWaitTime": "soon"}), "rewardWaitTime"),
        (
            json!({"explorationPercentage": 20}),
            "explorationPercentage",
        ),
        (json!({"rewardAggregation": "median"}), "rewardAggregation"),
        (json!({"learningMode": "Sometimes"}), "learningMode"),
    ] {
        let (status, v) = pz.put("/v1.0/configurations/service", &body).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["target"], target, "{v}");
    }
    let (_, v) = pz
        .put(
            "/v1.0/configurations/service",
            &json!({"explorationPercentage": 0, "rewardAggregation": "earliest"}),
        )
        .await;
    assert_eq!(v["explorationPercentage"], 0.0, "{v}");

    // Policy: mapped onto the campaign; unsupported arguments refused.
    let (status, v) = pz
        .put(
            "/v1.0/configurations/policy",
            &json!({"name": "p1", "arguments": "--cb_explore_adf --epsilon 0.3 -q UA"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (_, campaign) = server.get("/admin/v1/campaigns/lunch").await;
    assert_eq!(campaign["policy"]["type"], "epsilon_greedy", "{campaign}");
    assert_eq!(campaign["policy"]["epsilon"], 0.3);
    assert_eq!(campaign["featurizer"]["interactions"], true);
    let (_, v) = pz.get("/v1.0/configurations/policy").await;
    assert_eq!(
        v,
        json!({"name": "p1", "arguments": "--cb_explore_adf --epsilon 0.3 -q UA"})
    );
    let (status, v) = pz
        .put(
            "/v1.0/configurations/policy",
            &json!({"name": "p2", "arguments": "--cb_explore_adf --cover 3"}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("--cover"),
        "{v}"
    );
    let (status, v) = pz
        .call(reqwest::Method::DELETE, "/v1.0/configurations/policy", None)
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["arguments"].as_str().unwrap().contains("--epsilon 0.2"),
        "{v}"
    );

    // Apprentice: the baseline (first non-excluded action) is served and learned from.
    let (status, v) = pz
        .put("/v1.0/configurations/service", &mode("Apprentice"))
        .await;
    assert_eq!(status, 200, "{v}");
    let (_, campaign) = server.get("/admin/v1/campaigns/lunch").await;
    assert_eq!(campaign["status"], "paused");
    let model_before = model(&pz).await;
    for i in 0..20 {
        let (status, v) = pz
            .post("/v1.0/rank", &json!({"actions": actions(), "excludedActions": ["pasta"], "eventId": format!("ap-{i}")}))
            .await;
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["rewardActionId"], "curry", "{v}");
        let (status, _) = pz
            .post(&format!("/v1.0/events/ap-{i}/reward"), &json!({"value": 1}))
            .await;
        assert_eq!(status, 204);
    }
    assert_ne!(model(&pz).await, model_before, "apprentice learns");
    let (_, v) = pz.get("/v1.0/configurations/service").await;
    assert_eq!(v["learningMode"], "Apprentice");
    let metrics = &v["latestApprenticeModeMetrics"];
    assert_eq!(metrics["numberOfEvents"], 20, "{v}");
    assert!(
        metrics["numberOfImitatedEvents"].as_u64().unwrap() <= 20,
        "{v}"
    );
    assert_eq!(metrics["sumOfRewards"], 20.0, "{v}");

    // LoggingOnly: the baseline is served, rewards are logged, nothing is learned.
    pz.put("/v1.0/configurations/service", &mode("LoggingOnly"))
        .await;
    let frozen = model(&pz).await;
    let rewards_before = server.stats("lunch").await["rewards"].as_u64().unwrap();
    for i in 0..10 {
        let (_, v) = pz
            .post(
                "/v1.0/rank",
                &json!({"actions": actions(), "eventId": format!("lo-{i}")}),
            )
            .await;
        assert_eq!(v["rewardActionId"], "pasta", "{v}");
        pz.post(&format!("/v1.0/events/lo-{i}/reward"), &json!({"value": 1}))
            .await;
    }
    assert_eq!(model(&pz).await, frozen, "logging only does not learn");
    assert_eq!(
        server.stats("lunch").await["rewards"].as_u64().unwrap(),
        rewards_before + 10,
        "logging only logs the rewards"
    );
    pz.put("/v1.0/configurations/service", &mode("Online"))
        .await;
    let (_, campaign) = server.get("/admin/v1/campaigns/lunch").await;
    assert_eq!(campaign["status"], "active");

    // Model reset, import, properties; logs.
    let learned = model(&pz).await;
    assert_eq!(
        pz.call(reqwest::Method::DELETE, "/v1.0/model", None)
            .await
            .0,
        204
    );
    assert_ne!(model(&pz).await, learned);
    let put = pz
        .http
        .put(format!("{}/v1.0/model", pz.base))
        .header("content-type", "application/octet-stream")
        .body(learned.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 204);
    assert_eq!(model(&pz).await, learned);
    let (status, v) = pz.get("/v1.0/model/properties").await;
    assert_eq!(status, 200);
    assert!(
        v["creationTime"].is_string() && v["lastModifiedTime"].is_string(),
        "{v}"
    );
    let (_, v) = pz.get("/v1.0/logs/properties").await;
    assert!(v["dateRange"]["from"].is_string(), "{v}");
    assert_eq!(
        pz.call(reqwest::Method::DELETE, "/v1.0/logs", None).await.0,
        204
    );
    let (_, v) = pz.get("/v1.0/logs/properties").await;
    assert_eq!(v["dateRange"], json!({}), "{v}");
    // Learned state survives the log deletion and a restart.
    assert_eq!(model(&pz).await, learned);
}

async fn model(pz: &Pz) -> Vec<u8> {
    let r = pz
        .http
        .get(format!("{}/v1.0/model", pz.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/octet-stream"
    );
    r.bytes().await.unwrap().to_vec()
}

/// The same seeded stream (two shopper types, five dishes, each type with its own best dish)
/// through `/personalizer` rank+reward and through native decide+reward, on two campaigns with
/// the same policy: both must find each type's best dish and earn about the same.
#[tokio::test]
async fn personalizer_learns_as_well_as_the_native_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), FAST).await;
    let key = setup(&server, "compat", 600.0).await;
    setup(&server, "native", 600.0).await;
    let pz = Pz::new(&server, &key);
    let dishes = ["pasta", "curry", "salad", "sushi", "tacos"];
    // Click rate of (shopper type, dish).
    let rate = |t: usize, d: usize| match (t, d) {
        (0, 1) => 0.6,
        (1, 3) => 0.6,
        _ => 0.1,
    };
    let rounds = 1_500;
    let wave = 20;
    // The stream: each round's shopper type and the uniform draw that decides its click.
    let mut rng = Pcg64Mcg::seed_from_u64(7);
    let stream: Vec<(usize, f64)> = (0..rounds)
        .map(|_| (rng.gen_range(0..2usize), rng.gen::<f64>()))
        .collect();
    let mut results = Vec::new();
    for native in [false, true] {
        let mut earned = 0.0;
        let mut late_best = 0;
        let mut late = 0;
        for start in (0..rounds).step_by(wave) {
            // A wave of concurrent ranks, then its rewards (as a busy site would send them).
            let mut ranks = Vec::new();
            for (i, &(t, _)) in stream.iter().enumerate().skip(start).take(wave) {
                let segment = ["student", "chef"][t];
                let (url, body) = if native {
                    (
                        server.url("/v1/campaigns/native/decide"),
                        json!({
                            "context": {"user": {"segment": segment}},
                            "candidates": dishes.iter().map(|d| json!({"id": d, "features": {"dish": d}})).collect::<Vec<_>>(),
                            "event_id": format!("n-{i}"),
                        }),
                    )
                } else {
                    (
                        format!("{}/v1.0/rank", pz.base),
                        json!({
                            "contextFeatures": [{"user": {"segment": segment}}],
                            "actions": dishes.iter().map(|d| json!({"id": d, "features": [{"dish": d}]})).collect::<Vec<_>>(),
                            "eventId": format!("p-{i}"),
                        }),
                    )
                };
                let http = if native {
                    server.client.clone()
                } else {
                    pz.http.clone()
                };
                ranks.push(tokio::spawn(async move {
                    let r = http.post(url).json(&body).send().await.unwrap();
                    assert!(r.status().is_success());
                    let v: Value = r.json().await.unwrap();
                    let served = if native {
                        v["actions"][0]["id"].clone()
                    } else {
                        v["rewardActionId"].clone()
                    };
                    (i, served.as_str().unwrap().to_string())
                }));
            }
            let mut rewards = Vec::new();
            for task in ranks {
                let (i, served) = task.await.unwrap();
                let (t, u) = stream[i];
                let d = dishes.iter().position(|x| *x == served).unwrap();
                let value = if u < rate(t, d) { 1.0 } else { 0.0 };
                earned += value;
                if i >= rounds - 300 {
                    late += 1;
                    if (t, d) == (0, 1) || (t, d) == (1, 3) {
                        late_best += 1;
                    }
                }
                let (url, http) = if native {
                    (
                        server.url(&format!("/v1/events/n-{i}/reward")),
                        server.client.clone(),
                    )
                } else {
                    (
                        format!("{}/v1.0/events/p-{i}/reward", pz.base),
                        pz.http.clone(),
                    )
                };
                rewards.push(tokio::spawn(async move {
                    let r = http
                        .post(url)
                        .json(&json!({"value": value}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                }));
            }
            for task in rewards {
                task.await.unwrap();
            }
        }
        results.push((earned / rounds as f64, late_best as f64 / late as f64));
    }
    let ((pz_rate, pz_best), (native_rate, native_best)) = (results[0], results[1]);
    println!("personalizer: reward rate {pz_rate:.3}, best served late {pz_best:.2}; native: {native_rate:.3}, {native_best:.2}");
    // Uniform serving would earn 0.2 and serve the best dish 20% of the time.
    assert!(pz_best > 0.7 && native_best > 0.7, "{results:?}");
    assert!(pz_rate > 0.4 && native_rate > 0.4, "{results:?}");
    assert!((pz_rate - native_rate).abs() < 0.06, "{results:?}");
}

#[tokio::test]
async fn personalizer_official_python_client() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let python = root.join("target/pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/test (its scripts/setup/20-python.sh installs the official \
         Personalizer client, azure-ai-personalizer==1.0.0b1, into target/pyenv)",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), FAST).await;
    let key = setup(&server, "python", 600.0).await;
    let script = root.join("tests/personalizer/client_test.py");
    let base = server.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .env("PERSONALIZER_ENDPOINT", base)
            .env("PERSONALIZER_KEY", key)
            .output()
            .expect("running the Python client test")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the Python client test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
}

/// `n` actions with distinct ids and one feature each.
fn many_actions(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"id": format!("a{i}"), "features": [{"i": i}]}))
            .collect(),
    )
}

fn assert_target(status: u16, v: &Value, target: &str) {
    assert_eq!(status, 400, "{v}");
    assert_pz_error(v, "BadRequest");
    assert_eq!(v["error"]["target"], target, "{v}");
}

/// Issue 17: the limits Personalizer documented (50 actions, 50 slots, 256-character ids),
/// contexts nested as deep as Personalizer took them, and error targets in the caller's names.
#[tokio::test]
async fn personalizer_limits_and_targets_are_personalizers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), FAST).await;
    let key = setup(&server, "limits", 600.0).await;
    let pz = Pz::new(&server, &key);

    // 50 actions rank; 51 and 1,001 are refused, naming `actions`, before anything is logged.
    let (status, v) = pz
        .post("/v1.0/rank", &json!({"actions": many_actions(50)}))
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["ranking"].as_array().unwrap().len(), 50);
    for n in [51, 1001] {
        let (status, v) = pz
            .post("/v1.0/rank", &json!({"actions": many_actions(n)}))
            .await;
        assert_target(status, &v, "actions");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("50"),
            "{v}"
        );
    }
    assert_eq!(server.stats("limits").await["decisions"], 1);

    // Ids: 256 characters pass, 257 are refused under the caller's field name.
    let long = |n: usize| "e".repeat(n);
    let (status, v) = pz
        .post(
            "/v1.0/rank",
            &json!({"actions": actions(), "eventId": long(256)}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = pz
        .post(
            "/v1.0/rank",
            &json!({"actions": actions(), "eventId": long(257)}),
        )
        .await;
    assert_target(status, &v, "eventId");
    let mut acts = actions();
    acts[1]["id"] = json!(long(257));
    let (status, v) = pz.post("/v1.0/rank", &json!({"actions": acts})).await;
    assert_target(status, &v, "actions[1].id");

    // An error the engine finds names the action as sent, even past excluded actions: the
    // duplicate is the third candidate but the fourth action.
    let dup = json!([
        {"id": "a", "features": [{"x": 1}]},
        {"id": "skip", "features": [{"x": 2}]},
        {"id": "b", "features": [{"x": 3}]},
        {"id": "a", "features": [{"x": 4}]},
    ]);
    let (status, v) = pz
        .post(
            "/v1.0/rank",
            &json!({"actions": dup, "excludedActions": ["skip"]}),
        )
        .await;
    assert_target(status, &v, "actions[3].id");
    // A non-finite number cannot be sent as JSON; a bad array item in the context can.
    let (status, v) = pz
        .post(
            "/v1.0/rank",
            &json!({"actions": actions(), "contextFeatures": [{"user": {"tags": [{"x": 1}]}}]}),
        )
        .await;
    assert_target(status, &v, "contextFeatures.user.tags[0]");
    let (status, v) = pz
        .post(
            "/v1.0/rank",
            &json!({"actions": [{"id": "a", "features": [{"n": {"bad": [[1]]}}]}]}),
        )
        .await;
    assert_target(status, &v, "actions[0].features.n.bad[0]");

    // Contexts nested 5 levels deep rank (Personalizer took them); 33 levels are refused,
    // naming the path under `contextFeatures`.
    let five = json!([{"user": {"profile": {"history": {"last": {"category": "shoes"}}}}}]);
    let (status, v) = pz
        .post(
            "/v1.0/rank",
            &json!({"actions": actions(), "contextFeatures": five}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let mut deep = json!(1);
    for _ in 0..34 {
        deep = json!({ "n": deep });
    }
    let (status, v) = pz
        .post(
            "/v1.0/rank",
            &json!({"actions": actions(), "contextFeatures": [deep]}),
        )
        .await;
    assert_target(status, &v, &format!("contextFeatures{}", ".n".repeat(33)));

    // Multi-slot: 50 slots at most, 256-character slot ids, and an event id that with a slot
    // id would not fit Tailor's per-slot event is refused before the first slot is decided.
    let before = server.stats("limits").await["decisions"].as_u64().unwrap();
    let slots51: Vec<Value> = (0..51)
        .map(|i| json!({"id": format!("s{i}"), "baselineAction": "a0"}))
        .collect();
    let (status, v) = pz
        .post(
            "/v1.0/multislot/rank",
            &json!({"actions": many_actions(50), "slots": slots51}),
        )
        .await;
    assert_target(status, &v, "slots");
    let (status, v) = pz
        .post(
            "/v1.0/multislot/rank",
            &json!({"actions": actions(), "slots": [{"id": long(257), "baselineAction": "pasta"}]}),
        )
        .await;
    assert_target(status, &v, "slots[0].id");
    let (status, v) = pz
        .post(
            "/v1.0/multislot/rank",
            &json!({
                "actions": actions(),
                "eventId": long(200),
                "slots": [
                    {"id": "hero", "baselineAction": "pasta"},
                    {"id": long(100), "baselineAction": "salad"},
                ],
            }),
        )
        .await;
    assert_target(status, &v, "eventId");
    assert_eq!(
        server.stats("limits").await["decisions"].as_u64().unwrap(),
        before,
        "nothing was decided for the refused multi-slot ranks"
    );
}

/// Issue 17: a Personalizer path called with the wrong method is a 405 in Personalizer's shape
/// with `Allow`; an unknown path stays a 404.
#[tokio::test]
async fn personalizer_wrong_methods_are_405_with_allow() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), FAST).await;
    let key = setup(&server, "methods", 600.0).await;
    let pz = Pz::new(&server, &key);
    let q = "?api-version=2022-09-01-preview";
    for (method, path, allow) in [
        (reqwest::Method::GET, "/v1.0/rank".to_string(), "POST"),
        (reqwest::Method::GET, format!("/rank{q}"), "POST"),
        (
            reqwest::Method::PUT,
            "/v1.1-preview.3/multislot/rank".into(),
            "POST",
        ),
        (
            reqwest::Method::GET,
            "/v1.0/events/e1/reward".into(),
            "POST",
        ),
        (
            reqwest::Method::DELETE,
            format!("/events/e1/activate{q}"),
            "POST",
        ),
        (
            reqwest::Method::GET,
            "/v1.0/multislot/events/e1/reward".into(),
            "POST",
        ),
        (
            reqwest::Method::DELETE,
            "/v1.0/configurations/service".into(),
            "GET, PUT",
        ),
        (
            reqwest::Method::POST,
            format!("/configurations/policy{q}"),
            "GET, PUT, DELETE",
        ),
        (
            reqwest::Method::POST,
            "/v1.0/model".into(),
            "GET, PUT, DELETE",
        ),
        (
            reqwest::Method::DELETE,
            "/v1.0/model/properties".into(),
            "GET",
        ),
        (reqwest::Method::GET, "/v1.0/logs".into(), "DELETE"),
        (reqwest::Method::POST, "/v1.0/evaluations".into(), "GET"),
        (
            reqwest::Method::POST,
            format!("/evaluations/ev1{q}"),
            "GET, PUT, DELETE",
        ),
    ] {
        let resp = pz
            .http
            .request(method.clone(), format!("{}{path}", pz.base))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{method} {path}");
        assert_eq!(
            resp.headers().get("allow").and_then(|h| h.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        let v: Value = resp.json().await.unwrap();
        assert_pz_error(&v, "MethodNotAllowed");
        assert_eq!(
            v["error"]["innerError"]["code"], "method_not_allowed",
            "{v}"
        );
    }
    // The right methods still answer, and unknown paths are still 404s.
    let (status, v) = pz.post("/v1.0/rank", &json!({"actions": actions()})).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = pz.get("/v1.0/configurations/service").await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = pz.get("/v1.0/nothing/here").await;
    assert_eq!(status, 404, "{v}");
    assert_pz_error(&v, "ResourceNotFound");
}

/// Issue 17: an evaluation ending before it starts is refused naming `endTime`; VW arguments
/// that change nothing (`--quiet`, ...) are accepted with a note, those Tailor cannot honour
/// are still refused.
#[tokio::test]
async fn personalizer_evaluation_times_and_harmless_vw_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), FAST).await;
    let key = setup(&server, "evals", 600.0).await;
    let pz = Pz::new(&server, &key);
    let (status, v) = pz
        .put(
            "/v1.0/evaluations/backwards",
            &json!({
                "name": "backwards",
                "startTime": "2026-03-02T00:00:00Z",
                "endTime": "2026-03-01T00:00:00Z",
            }),
        )
        .await;
    assert_target(status, &v, "endTime");
    let (status, v) = pz.get("/v1.0/evaluations").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["value"],
        json!([]),
        "the refused evaluation was not stored: {v}"
    );
    // Equal times are an (empty) window, not an error.
    let (status, v) = pz
        .put(
            "/v1.0/evaluations/instant",
            &json!({"startTime": "2026-03-01T00:00:00Z", "endTime": "2026-03-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");

    let args = "--cb_explore_adf --quiet --epsilon 0.1 --holdout_off --progress 100 -q ::";
    let resp = pz
        .http
        .put(format!("{}/v1.0/configurations/policy", pz.base))
        .json(&json!({"name": "quiet", "arguments": args}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("x-tailor-ignored-arguments")
            .and_then(|h| h.to_str().ok()),
        Some("--quiet --holdout_off --progress 100")
    );
    let (status, v) = pz.get("/v1.0/configurations/policy").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["arguments"], args);
    let config = server.get("/admin/v1/campaigns/evals").await.1;
    assert_eq!(config["policy"]["epsilon"], 0.1, "{config}");
    for bad in [
        "--cb_explore_adf -t",
        "--cb_explore_adf -f model.vw",
        "--cb_explore_adf --passes 2",
    ] {
        let (status, v) = pz
            .put(
                "/v1.0/configurations/policy",
                &json!({"name": "bad", "arguments": bad}),
            )
            .await;
        assert_target(status, &v, "arguments");
    }
    let (status, v) = pz
        .put(
            "/v1.0/configurations/policy",
            &json!({"name": "long", "arguments": format!("--cb_explore_adf{}", " --quiet".repeat(200))}),
        )
        .await;
    assert_target(status, &v, "arguments");
}
