//! Issues 6 and 22: the control room in a real browser. Debian's headless `chromium` (installed
//! by `scripts/setup/10-browser.sh`, which `scripts/test` runs) is driven by
//! `tests/browser/dashboard.mjs` through `playwright-core`: a viewer key sees every control
//! disabled; an editor key switches the serving policy, creates a campaign from scratch in the
//! page (policy, exploration, holdout, reward window, a plugin whose config is checked live, pins
//! and boosts), configures it further, previews a decision and pauses it; the API then reports
//! all of it. Screenshots go to `target/test-artifacts/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{target_dir, Server};
use crate::plugins::install;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The browser, Node and the npm packages, or a panic that says how to get them. Never skips:
/// a test that silently passes without a browser would prove nothing.
fn prerequisites() -> (PathBuf, PathBuf) {
    let hint = "run ./scripts/test (its scripts/setup/10-browser.sh installs Debian's chromium \
                and the npm packages of tests/browser), or run that setup script alone";
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.exists(),
        "the browser test needs chromium at {}: {hint}",
        chromium.display()
    );
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        node_ok,
        "the browser test needs Node.js (`node`) on PATH: {hint}"
    );
    let browser_dir = repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "the browser test needs tests/browser/node_modules/playwright-core: {hint}"
    );
    (chromium, browser_dir)
}

fn artifacts_dir() -> PathBuf {
    // target/<profile>/.. = target/
    let dir = target_dir()
        .parent()
        .expect("target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("creating target/test-artifacts");
    dir
}

/// Open the control room as viewer (every control disabled) and as editor: switch the serving
/// policy from Thompson to the shadow LinUCB, create `summer-sale` in the page, configure it,
/// preview and pause it. The admin API then agrees with everything the page showed.
#[tokio::test]
async fn dashboard_in_chromium_creates_configures_previews_and_pauses_a_campaign() {
    let (chromium, browser_dir) = prerequisites();
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    install(&plugins, &["inventory-floor"]);
    let server = Server::start_with_args(
        &dir.path().join("data"),
        &[],
        &["--plugin-dir", plugins.to_str().unwrap()],
    )
    .await;
    server
        .create_campaign(json!({
            "id": "home-recs",
            "policy": {"type": "thompson"},
            "shadow_policies": [{"type": "linucb", "alpha": 0.5}],
            "holdout": 0.2,
        }))
        .await;
    // Some traffic, so every report section has something to draw.
    let candidates: Vec<Value> = (0..4).map(|i| json!({"id": format!("sku-{i}")})).collect();
    let mut rewards = Vec::new();
    let mut first_event = String::new();
    for i in 0..120 {
        let (s, d) = server
            .post(
                "/v1/campaigns/home-recs/decide",
                &json!({"candidates": candidates, "shopper_id": format!("s-{i}"),
                        "context": {"history": {"categories": ["shoes"]}}}),
            )
            .await;
        assert_eq!(s, 200, "{d}");
        if i == 0 {
            first_event = d["event_id"].as_str().unwrap().to_string();
        }
        let value = if d["actions"][0]["id"] == "sku-2" || i % 3 == 0 {
            1.0
        } else {
            0.0
        };
        rewards.push(json!({"event_id": d["event_id"], "value": value}));
    }
    let (s, v) = server
        .post("/v1/rewards", &json!({"rewards": rewards}))
        .await;
    assert_eq!(s, 200, "{v}");

    let mut keys = Vec::new();
    for role in ["editor", "viewer"] {
        let (s, v) = server
            .post("/admin/v1/keys", &json!({"role": role, "label": "browser"}))
            .await;
        assert_eq!(s, 201, "{v}");
        keys.push((
            v["id"].as_str().unwrap().to_string(),
            v["key"].as_str().unwrap().to_string(),
        ));
    }
    let [(editor_id, editor), (_, viewer)] = <[_; 2]>::try_from(keys).unwrap();

    let shots = artifacts_dir();
    let out = tokio::task::spawn_blocking({
        let base = server.base.clone();
        move || {
            Command::new("node")
                .arg("dashboard.mjs")
                .current_dir(&browser_dir)
                .env("TAILOR_URL", base)
                .env("TAILOR_CAMPAIGN", "home-recs")
                .env("TAILOR_POLICY", "linucb")
                .env("TAILOR_NEW_CAMPAIGN", "summer-sale")
                .env("TAILOR_PLUGIN", "inventory-floor")
                .env("TAILOR_EVENT_ID", first_event)
                .env("TAILOR_EDITOR_KEY", editor)
                .env("TAILOR_VIEWER_KEY", viewer)
                .env("TAILOR_SCREENSHOT_DIR", &shots)
                .env("CHROMIUM", chromium)
                .output()
                .expect("running node tests/browser/dashboard.mjs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    let shots = artifacts_dir();
    eprintln!("screenshots: {}/dashboard-*.png", shots.display());
    assert!(
        out.status.success(),
        "the browser script failed:\n{stdout}\n{stderr}"
    );
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|l| serde_json::from_str(l).unwrap())
        .expect("the browser script's RESULT line");
    assert_eq!(result["serving_before"], "thompson", "{result}");
    assert_eq!(result["serving_after"], "linucb", "{result}");
    for shot in [
        "dashboard-viewer.png",
        "dashboard-create.png",
        "dashboard-preview.png",
        "dashboard-editor.png",
    ] {
        let len = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 1000, "{shot} missing or empty");
    }

    // The API agrees: LinUCB serves, Thompson is now the shadow, decisions say so.
    let (_, c) = server.get("/admin/v1/campaigns/home-recs").await;
    assert_eq!(c["policy"]["type"], "linucb", "{c}");
    assert_eq!(c["shadow_policies"][0]["type"], "thompson", "{c}");
    let (_, d) = server
        .post(
            "/v1/campaigns/home-recs/decide",
            &json!({"candidates": candidates}),
        )
        .await;
    assert_eq!(d["policy"], "linucb", "{d}");
    // Exactly one policy change, made with the editor key (the viewer changed nothing).
    let (_, audit) = server.get("/admin/v1/audit?campaign=home-recs").await;
    let changes: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "campaign.policy")
        .collect();
    assert_eq!(changes.len(), 1, "{audit}");
    assert_eq!(changes[0]["key_id"], editor_id.as_str());
    assert_eq!(changes[0]["after"]["policy"]["type"], "linucb");

    // The campaign created in the page, as configured there, and paused.
    let (s, c) = server.get("/admin/v1/campaigns/summer-sale").await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["kind"], "items", "{c}");
    assert_eq!(c["status"], "paused", "{c}");
    assert_eq!(c["policy"]["type"], "epsilon_greedy", "{c}");
    assert_eq!(c["policy"]["epsilon"], 0.2, "{c}");
    assert_eq!(c["shadow_policies"][0]["type"], "thompson", "{c}");
    assert_eq!(c["exploration"], 0.05, "{c}");
    assert_eq!(c["holdout"], 0.1, "{c}");
    assert_eq!(c["reward_wait_seconds"], 7200.0, "{c}");
    assert_eq!(c["plugins"][0]["name"], "inventory-floor", "{c}");
    assert_eq!(
        c["plugins"][0]["config"],
        json!({"min_inventory": 2}),
        "{c}"
    );
    if std::env::var("TAILOR_SKIP_MERCH").as_deref() != Ok("1") {
        assert_eq!(
            c["merchandising"]["pins"],
            json!([{"item": "sku-3", "slot": 0}]),
            "{c}"
        );
        assert_eq!(c["merchandising"]["boosts"][0]["factor"], 2.0, "{c}");
    }
    // The preview logged nothing.
    let stats = server.stats("summer-sale").await;
    assert_eq!(stats["decisions"], 0, "{stats}");
    // Create, update and pause, by the editor key; the live checks of the form left no entry.
    let (_, audit) = server.get("/admin/v1/audit?campaign=summer-sale").await;
    let mut actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["key_id"].as_str().unwrap()))
        .collect();
    actions.reverse();
    assert_eq!(
        actions,
        [
            ("campaign.create", editor_id.as_str()),
            ("campaign.update", editor_id.as_str()),
            ("campaign.pause", editor_id.as_str()),
        ],
        "{audit}"
    );
    assert!(
        result["validate_400s"].as_u64().unwrap() >= 2,
        "the page checked the invalid configs with the server: {result}"
    );
}
