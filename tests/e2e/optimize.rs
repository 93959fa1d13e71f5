//! Issue 20 item 3: policy optimization over the real server's decision log — a planted better
//! α is found, applying it is audited with the caller's key, the refusals (403, 404, 400, 409),
//! and Personalizer's `applyFromEvaluation`.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde_json::{json, Value};

use crate::harness::{client_with, Server};

const FAST: &[(&str, &str)] = &[
    ("TAILOR__ENGINE__SWEEP_INTERVAL_MS", "50"),
    ("TAILOR__ENGINE__SNAPSHOT_INTERVAL_MS", "300"),
];

const SEGMENTS: usize = 4;
const ITEMS: [&str; 4] = ["sku-0", "sku-1", "sku-2", "sku-3"];

/// Click rate: each segment has one clearly best item.
fn rate(segment: usize, item: usize) -> f64 {
    if segment == item {
        0.8
    } else {
        0.1
    }
}

/// `n` decisions of `campaign` with a reward for each, in waves of 20.
async fn simulate(server: &Server, campaign: &str, n: usize, seed: u64) {
    simulate_with(server, campaign, n, seed, rate).await
}

/// `n` decisions of `campaign` (context: one of [`SEGMENTS`] segments; candidates [`ITEMS`]),
/// each rewarded with probability `rate(segment, item)`, in waves of 20. Shared with the
/// autopilot test.
pub(crate) async fn simulate_with(
    server: &Server,
    campaign: &str,
    n: usize,
    seed: u64,
    rate: fn(usize, usize) -> f64,
) {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    for wave in 0..n / 20 {
        let mut tasks = Vec::new();
        for j in 0..20 {
            let i = wave * 20 + j;
            let segment = rng.gen_range(0..SEGMENTS);
            let body = json!({
                "event_id": format!("{campaign}-{i}"),
                "context": {"segment": format!("s{segment}")},
                "candidates": ITEMS.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            });
            let client = server.client.clone();
            let url = server.url(&format!("/v1/campaigns/{campaign}/decide"));
            tasks.push((
                segment,
                tokio::spawn(async move {
                    let r = client.post(url).json(&body).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.json::<Value>().await.unwrap()
                }),
            ));
        }
        let mut rewards = Vec::new();
        for (segment, t) in tasks {
            let d = t.await.unwrap();
            let id = d["actions"][0]["id"].as_str().unwrap();
            let item = ITEMS.iter().position(|x| *x == id).unwrap();
            let v = if rng.gen_bool(rate(segment, item)) {
                1.0
            } else {
                0.0
            };
            rewards.push(json!({"event_id": d["event_id"], "value": v, "action_id": id}));
        }
        let (status, body) = server
            .post("/v1/rewards", &json!({ "rewards": rewards }))
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn key(server: &Server, body: Value) -> (String, String) {
    let (status, v) = server.post("/admin/v1/keys", &body).await;
    assert_eq!(status, 201, "{v}");
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut r = client.request(method, url);
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Poll `path` (through `get`) until its `field` is no longer `running` (the optimization runs on
/// a background thread); bounded by a number of polls, not by a clock.
async fn until_done<F, Fut>(get: F, field: &str, running: &[&str]) -> Value
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    for _ in 0..3000 {
        let (status, v) = get().await;
        assert_eq!(status, 200, "{v}");
        if !running.contains(&v[field].as_str().unwrap_or_default()) {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the optimization did not finish");
}

#[tokio::test]
async fn optimization_finds_a_planted_better_alpha_and_applies_it_audited() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), FAST).await;
    // LinUCB with α = 20: the bonus swamps the learned means for thousands of decisions, so it
    // serves close to round-robin; a small α learns the best item per segment in a few hundred.
    server
        .create_campaign(json!({
            "id": "opt",
            "policy": {"type": "linucb", "alpha": 20.0},
            "featurizer": {"dimension": 64, "interactions": true},
            "exploration": 0.3,
            "log_requests": true,
        }))
        .await;
    let (editor_id, editor) = key(&server, json!({"role": "editor", "label": "tuner"})).await;
    let (_, viewer) = key(&server, json!({"role": "viewer"})).await;
    simulate(&server, "opt", 1500, 20).await;

    let base = server.url("/admin/v1/campaigns/opt/evaluations");
    // A grid too large is refused before anything runs, naming the field.
    let too_large = json!({"optimize": true, "grid": {
        "policies": ["sparse_linucb", "linucb"],
        "alpha": (1..=16).map(|i| i as f64 * 0.1).collect::<Vec<_>>(),
        "dimension": [64, 128, 256, 512],
        "interactions": [true, false],
    }});
    let (status, v) = server
        .post("/admin/v1/campaigns/opt/evaluations", &too_large)
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "grid", "{v}");
    let (status, v) = server
        .post(
            "/admin/v1/campaigns/opt/evaluations",
            &json!({"optimize": true, "grid": {"alpha": [0.1, -2]}}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "grid.alpha[1]", "{v}");

    let request = json!({"optimize": true, "grid": {
        "policies": ["linucb", "sparse_linucb"],
        "alpha": [0.1, 0.3, 1.0],
        "dimension": [64],
    }});
    let (status, started) = server
        .post("/admin/v1/campaigns/opt/evaluations", &request)
        .await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["status"], "running", "{started}");
    assert_eq!(
        started["optimization"]["candidates"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let id = started["id"].as_str().unwrap().to_string();
    let url = format!("{base}/{id}");
    let ev_path = format!("/admin/v1/campaigns/opt/evaluations/{id}");
    let ev = until_done(|| server.get(&ev_path), "status", &["running"]).await;
    assert_eq!(ev["status"], "succeeded", "{ev}");
    let opt = &ev["optimization"];
    assert_eq!(opt["truncated"], false);
    assert!(ev["used"].as_u64().unwrap() >= 1400, "{}", ev["used"]);
    let serving = &opt["serving"]["value"];
    let serving_high = serving["high"].as_f64().unwrap();
    let winner = opt["winner"].as_str().expect("a winner").to_string();
    let best = opt["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == winner.as_str())
        .unwrap()
        .clone();
    assert_eq!(best["beats_serving"], true);
    assert_eq!(best["reliable"], true);
    assert!(
        best["value"]["low"].as_f64().unwrap() > serving_high,
        "winner {best} vs serving {serving}"
    );
    // The planted gap: the winner's estimate well above the serving one's.
    assert!(
        best["value"]["value"].as_f64().unwrap() > serving["value"].as_f64().unwrap() + 0.15,
        "winner {best} vs serving {serving}"
    );
    assert!(best["policy"]["alpha"].as_f64().unwrap() <= 1.0);
    // Listed with the other evaluations.
    let (_, list) = server.get("/admin/v1/campaigns/opt/evaluations").await;
    assert_eq!(list["evaluations"][0]["id"], id.as_str());

    // Refusals: a viewer may not apply; unknown evaluations are 404.
    let apply = format!("{url}/apply");
    let (status, v) = send(
        &client_with(&viewer),
        reqwest::Method::POST,
        apply.clone(),
        None,
    )
    .await;
    assert_eq!(status, 403, "{v}");
    let (status, v) = send(
        &client_with(&editor),
        reqwest::Method::POST,
        format!("{base}/ev-nope/apply"),
        None,
    )
    .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "evaluation_not_found", "{v}");
    let (status, _) = server
        .get("/admin/v1/campaigns/opt/evaluations/ev-nope")
        .await;
    assert_eq!(status, 404);

    // Apply the winner with the editor key.
    let (status, applied) = send(
        &client_with(&editor),
        reqwest::Method::POST,
        apply.clone(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["applied"], winner.as_str());
    let (_, config) = server.get("/admin/v1/campaigns/opt").await;
    assert_eq!(config["policy"], best["policy"], "{config}");
    assert_eq!(config["featurizer"], best["featurizer"], "{config}");
    assert_eq!(config["exploration"], best["exploration"], "{config}");
    // Audited with the caller's key and the settings before and after.
    let (_, audit) = server.get("/admin/v1/audit?campaign=opt&limit=20").await;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "evaluation.apply")
        .unwrap_or_else(|| panic!("no evaluation.apply in {audit}"));
    assert_eq!(entry["key_id"], editor_id.as_str(), "{entry}");
    assert_eq!(entry["target"], id.as_str(), "{entry}");
    assert_eq!(entry["before"]["policy"]["alpha"], 20.0, "{entry}");
    assert_eq!(entry["after"]["policy"], best["policy"], "{entry}");
    // The campaign changed since the optimization started: applying again is a conflict.
    let (status, v) = send(&client_with(&editor), reqwest::Method::POST, apply, None).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["field"], "campaign", "{v}");
    // A plain evaluation is not an optimization.
    let (status, plain) = server
        .post("/admin/v1/campaigns/opt/evaluations", &json!({}))
        .await;
    assert_eq!(status, 201, "{plain}");
    let (status, v) = send(
        &client_with(&editor),
        reqwest::Method::POST,
        format!("{base}/{}/apply", plain["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 409, "{v}");

    // Personalizer: an evaluation with offline experimentation searches the (default) grid and
    // lists its candidates; applyFromEvaluation applies the one named.
    let (status, v) = server
        .post(
            "/admin/v1/keys",
            &json!({"role": "editor", "campaign": "opt"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let pz_key = v["key"].as_str().unwrap().to_string();
    let pz_key_id = v["id"].as_str().unwrap().to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "Ocp-Apim-Subscription-Key",
        reqwest::header::HeaderValue::from_str(&pz_key).unwrap(),
    );
    let pz = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let pz_url = |p: &str| server.url(&format!("/personalizer/v1.1-preview.1{p}"));
    let (status, v) = send(
        &pz,
        reqwest::Method::PUT,
        pz_url("/evaluations/tune-1"),
        Some(&json!({
            "name": "tune",
            "enableOfflineExperimentation": true,
            "policies": [{"name": "mine", "arguments": "--cb_explore_adf --epsilon 0.2 -q ::"}],
        })),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let done = until_done(
        || {
            send(
                &pz,
                reqwest::Method::GET,
                pz_url("/evaluations/tune-1"),
                None,
            )
        },
        "status",
        &["Running"],
    )
    .await;
    assert_eq!(done["status"], "Succeeded", "{done}");
    let values = done["content"]["value"].as_array().unwrap();
    let offline: Vec<&Value> = values
        .iter()
        .filter(|p| p["policySource"] == "OfflineExperimentation")
        .collect();
    assert!(offline.len() > 10, "{done}");
    assert!(offline.iter().any(|p| p["name"] == "mine"), "{done}");
    assert!(done["optimalPolicy"].is_string(), "{done}");
    let candidates = done["tailor"]["optimization"]["candidates"]
        .as_array()
        .unwrap();
    let pick = candidates
        .iter()
        .find(|c| c["policy"]["type"] == "sparse_linucb" && c["name"] != "mine")
        .unwrap()
        .clone();
    let (status, v) = send(
        &pz,
        reqwest::Method::POST,
        pz_url("/configurations/applyFromEvaluation"),
        Some(&json!({"evaluationId": "tune-1", "policyName": pick["name"]})),
    )
    .await;
    assert_eq!(status, 204, "{v}");
    let (_, config) = server.get("/admin/v1/campaigns/opt").await;
    assert_eq!(config["policy"], pick["policy"], "{config}");
    assert_eq!(config["featurizer"], pick["featurizer"], "{config}");
    let (_, audit) = server.get("/admin/v1/audit?campaign=opt&limit=20").await;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "personalizer.applyFromEvaluation")
        .unwrap_or_else(|| panic!("no personalizer.applyFromEvaluation in {audit}"));
    assert_eq!(entry["key_id"], pz_key_id.as_str(), "{entry}");
    // Unknown evaluation: Personalizer's 404.
    let (status, v) = send(
        &pz,
        reqwest::Method::POST,
        pz_url("/configurations/applyFromEvaluation"),
        Some(&json!({"evaluationId": "nope", "policyName": "x"})),
    )
    .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "ResourceNotFound", "{v}");
}
