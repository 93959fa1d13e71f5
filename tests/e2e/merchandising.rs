//! Issue 22 items 1–2 through the real server: decision previews match real decides and log
//! nothing; logged decisions are explained from the log; pins hold in their window and only
//! there; boosts and a constraint plugin's multiplier demote and promote with honest
//! propensities.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde_json::{json, Value};

use crate::harness::{client_with, Server};
use crate::plugins::install;

async fn server_with_inventory_floor(dir: &Path) -> Server {
    let plugins = dir.join("plugins");
    install(&plugins, &["inventory-floor"]);
    Server::start_with_args(
        &dir.join("data"),
        &[],
        &["--plugin-dir", plugins.to_str().unwrap()],
    )
    .await
}

/// RFC 3339 `hours` from now.
fn hours_from_now(hours: f64) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + (hours * 3_600_000.0) as i64;
    jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
}

const CATEGORIES: [&str; 3] = ["lamps", "sofas", "rugs"];

/// Ten candidates: sku-0 out of stock (removed by inventory-floor), sku-1..3 low on stock
/// (demoted by its multiplier), lamps boosted by the campaign.
fn body(event: &str, device: &str, k: usize) -> Value {
    let candidates: Vec<Value> = (0..10)
        .map(|j| {
            json!({
                "id": format!("sku-{j}"),
                "features": {"price": 10.0 + j as f64},
                "attributes": {
                    "inventory": if j == 0 { 0 } else if j <= 3 { 5 } else { 100 },
                    "category": CATEGORIES[j % 3],
                },
            })
        })
        .collect();
    json!({
        "event_id": event,
        "context": {"device": device},
        "candidates": candidates,
        "k": k,
        "shopper_id": format!("shopper-{event}"),
    })
}

fn slots_of(decide: &Value) -> Vec<(String, f64)> {
    decide["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                a["probability"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn preview_slots(preview: &Value) -> Vec<(String, f64)> {
    preview["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["probability"].as_f64().unwrap(),
            )
        })
        .collect()
}

async fn log_lines(server: &Server, campaign: &str) -> usize {
    let (status, text) = server
        .get_text(&format!("/admin/v1/campaigns/{campaign}/log"))
        .await;
    assert_eq!(status, 200, "{text}");
    text.lines().filter(|l| !l.trim().is_empty()).count()
}

/// Previews answer what a decide with the same seed answers (slots, probabilities, pins),
/// and change nothing: the log, the stats and the learned state are the same afterwards. Every
/// decision is then explained from its log entry, and previewing its logged request with its
/// seed reproduces it.
#[tokio::test]
async fn previews_match_decides_log_nothing_and_decisions_explain() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_inventory_floor(dir.path()).await;
    server
        .create_campaign(json!({
            "id": "pv",
            "policy": {"type": "thompson"},
            "exploration": 0.1,
            "holdout": 0.2,
            "holdout_salt": "e2e-merchandising",
            "log_requests": true,
            "plugins": [{"name": "inventory-floor",
                         "config": {"min_inventory": 1, "low_stock": {"below": 10, "factor": 0.2}}}],
            "merchandising": {
                "pins": [{"item": "sku-7", "slot": 1, "starts_at": hours_from_now(-1.0),
                          "note": "surplus stock"}],
                "boosts": [{"attribute": "category", "value": "lamps", "factor": 3.0}]
            }
        }))
        .await;
    // Some learned state, so the probabilities are not the prior's.
    let mut rng = Pcg64Mcg::seed_from_u64(22);
    for i in 0..150 {
        let (s, d) = server
            .post(
                "/v1/campaigns/pv/decide",
                &body(&format!("warm-{i}"), "mobile", 3),
            )
            .await;
        assert_eq!(s, 200, "{d}");
        for (id, _) in slots_of(&d) {
            let value = if rng.gen_bool(0.3) { 1.0 } else { 0.0 };
            let (s, r) = server
                .post(
                    &format!("/v1/events/warm-{i}/reward"),
                    &json!({"value": value, "action_id": id}),
                )
                .await;
            assert_eq!(s, 200, "{r}");
        }
    }
    let stats_before = server.stats("pv").await;
    let lines_before = log_lines(&server, "pv").await;

    let mut previews = Vec::new();
    for i in 0..40 {
        let device = ["mobile", "desktop"][i % 2];
        let (s, p) = server
            .post(
                "/admin/v1/campaigns/pv/preview",
                &body(&format!("e-{i}"), device, 3),
            )
            .await;
        assert_eq!(s, 200, "{p}");
        assert_eq!(p["dry_run"], true);
        previews.push(p);
    }
    // Previewing twice gives the same answer (same seed from the event id).
    let (_, again) = server
        .post("/admin/v1/campaigns/pv/preview", &body("e-0", "mobile", 3))
        .await;
    assert_eq!(preview_slots(&again), preview_slots(&previews[0]));
    // Nothing was logged, counted or learned.
    assert_eq!(server.stats("pv").await, stats_before);
    assert_eq!(log_lines(&server, "pv").await, lines_before);
    // The event ids are still free.
    let (s, _) = server
        .get("/admin/v1/campaigns/pv/decisions/e-0/explain")
        .await;
    assert_eq!(s, 404);

    let p0 = &previews[0];
    // The preview says what the plugin and the rules did.
    let sku0 = p0["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "sku-0")
        .unwrap();
    assert_eq!(sku0["eligible"], false);
    assert_eq!(sku0["removed"]["reason"], "below_inventory_floor", "{sku0}");
    assert!(
        sku0["removed"]["message"]
            .as_str()
            .unwrap()
            .contains("below inventory floor"),
        "{sku0}"
    );
    let find = |p: &Value, id: &str| {
        p["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()
            .clone()
    };
    // sku-3: a lamp (boost 3) low on stock (plugin 0.2).
    let sku3 = find(p0, "sku-3");
    assert!(
        (sku3["factor"].as_f64().unwrap() - 0.6).abs() < 1e-9,
        "{sku3}"
    );
    let sources: Vec<&str> = sku3["adjustments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["plugin", "boost"], "{sku3}");
    assert!(find(p0, "sku-4")["mean"].is_number());
    assert!(find(p0, "sku-4")["uncertainty"].is_number());
    assert_eq!(p0["pins"][0]["open"], true);
    assert_eq!(p0["boosts"][0]["open"], true);
    assert!(p0["policy_version"].as_u64().unwrap() > 0);

    let mut held_out = 0;
    for (i, p) in previews.iter().enumerate() {
        let device = ["mobile", "desktop"][i % 2];
        let (s, d) = server
            .post(
                "/v1/campaigns/pv/decide",
                &body(&format!("e-{i}"), device, 3),
            )
            .await;
        assert_eq!(s, 200, "{d}");
        assert_eq!(slots_of(&d), preview_slots(p), "event e-{i}: {p}");
        assert_eq!(d["holdout"], p["holdout"]);
        assert_eq!(d["policy"], p["policy"]);
        held_out += usize::from(p["holdout"] == true);
        // The pin holds slot 1 for everyone, holdout shoppers included.
        assert_eq!(p["slots"][1]["id"], "sku-7");
        assert_eq!(p["slots"][1]["pinned"], true);
        assert_eq!(p["slots"][1]["probability"], 1.0);

        let (s, e) = server
            .get(&format!("/admin/v1/campaigns/pv/decisions/e-{i}/explain"))
            .await;
        assert_eq!(s, 200, "{e}");
        assert_eq!(e["seed"], p["seed"]);
        assert_eq!(e["policy"], p["policy"]);
        let logged: Vec<(String, f64, bool)> = e["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_owned(),
                    s["probability"].as_f64().unwrap(),
                    s["pinned"].as_bool().unwrap(),
                )
            })
            .collect();
        let previewed: Vec<(String, f64, bool)> = p["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_owned(),
                    s["probability"].as_f64().unwrap(),
                    s["pinned"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(logged, previewed);
        assert_eq!(e["removed"][0]["id"], "sku-0");
        assert_eq!(e["removed"][0]["reason"], "below_inventory_floor");
        assert_eq!(e["request_logged"], true);
    }
    assert!(held_out > 0 && held_out < previews.len(), "{held_out}");

    // The logged request previewed with the logged seed gives the decision back (no reward
    // since, so the learned state is the same); the event id is swapped so the seed comes
    // from `?seed=` alone.
    let (_, e) = server
        .get("/admin/v1/campaigns/pv/decisions/e-3/explain")
        .await;
    let mut request = e["request"].clone();
    request["event_id"] = json!("another-id");
    let (s, p) = server
        .post(
            &format!(
                "/admin/v1/campaigns/pv/preview?seed={}",
                e["seed"].as_str().unwrap()
            ),
            &request,
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(preview_slots(&p), preview_slots(&previews[3]));

    // Percent-decoded ids; unknown ones are 404; bad seeds are 400 naming `seed`.
    let odd = "a/b c+d%";
    let (s, _) = server
        .post("/v1/campaigns/pv/decide", &body(odd, "mobile", 2))
        .await;
    assert_eq!(s, 200);
    let (s, e) = server
        .get("/admin/v1/campaigns/pv/decisions/a%2Fb%20c%2Bd%25/explain")
        .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["event_id"], odd);
    let (s, e) = server
        .get("/admin/v1/campaigns/pv/decisions/nope/explain")
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("event_not_found"))
    );
    let (s, e) = server
        .post(
            "/admin/v1/campaigns/pv/preview?seed=-1",
            &body("x", "mobile", 1),
        )
        .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("seed")),
        "{e}"
    );
    let (s, e) = server
        .post("/admin/v1/campaigns/pv/preview", &json!({"candidates": []}))
        .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("candidates")),
        "{e}"
    );

    // A viewer key may preview and explain; a decide key may not; a key scoped to another
    // campaign may not.
    let key = |body: Value| {
        let server = &server;
        async move {
            let (s, v) = server.post("/admin/v1/keys", &body).await;
            assert_eq!(s, 201, "{v}");
            client_with(v["key"].as_str().unwrap())
        }
    };
    server
        .create_campaign(json!({"id": "other", "policy": {"type": "uniform"}}))
        .await;
    let viewer = key(json!({"role": "viewer", "campaign": "pv"})).await;
    let decider = key(json!({"role": "decide"})).await;
    let elsewhere = key(json!({"role": "viewer", "campaign": "other"})).await;
    for (client, want) in [(&viewer, 200), (&decider, 403), (&elsewhere, 403)] {
        let r = client
            .post(server.url("/admin/v1/campaigns/pv/preview"))
            .json(&body("k", "mobile", 2))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want);
        let r = client
            .get(server.url("/admin/v1/campaigns/pv/decisions/e-1/explain"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want);
    }
}

/// Pins in windows past, future and now on a uniform policy with k = 4: only the open one is
/// applied, always in its slot, logged as pinned; the closed ones are never applied. A pin
/// whose item a constraint removed, or that is not among the candidates, is skipped and the
/// preview says why. Off-policy evaluation runs over the pinned log.
#[tokio::test]
async fn pins_hold_in_their_window_and_never_outside_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_inventory_floor(dir.path()).await;
    let pins = json!([
        {"item": "sku-4", "slot": 0, "starts_at": hours_from_now(-3.0), "ends_at": hours_from_now(-1.0)},
        {"item": "sku-5", "slot": 1, "starts_at": hours_from_now(1.0)},
        {"item": "sku-6", "slot": 2, "starts_at": hours_from_now(-1.0), "ends_at": hours_from_now(1.0)},
        {"item": "sku-0", "slot": 3},
        {"item": "sku-99", "slot": 0, "starts_at": hours_from_now(-1.0)}
    ]);
    server
        .create_campaign(json!({
            "id": "pins",
            "policy": {"type": "uniform"},
            "log_requests": true,
            "plugins": [{"name": "inventory-floor", "config": {"min_inventory": 1}}],
            "merchandising": {"pins": pins}
        }))
        .await;
    let n = 300;
    let mut at_slot = [0usize; 3];
    for i in 0..n {
        let (s, d) = server
            .post(
                "/v1/campaigns/pins/decide",
                &body(&format!("d-{i}"), "mobile", 4),
            )
            .await;
        assert_eq!(s, 200, "{d}");
        let slots = slots_of(&d);
        assert_eq!(slots.len(), 4);
        assert_eq!(slots[2], ("sku-6".to_owned(), 1.0), "decision {i}: {d}");
        at_slot[0] += usize::from(slots[0].0 == "sku-4");
        at_slot[1] += usize::from(slots[1].0 == "sku-5");
        assert!(slots.iter().all(|(id, _)| id != "sku-0"));
        // The other slots are uniform over the eligible, unpinned candidates: 8 left for slot 0.
        assert!((slots[0].1 - 1.0 / 8.0).abs() < 1e-12, "{d}");
        for (id, _) in &slots {
            let reward = if id == "sku-1" || id == "sku-6" {
                1.0
            } else {
                0.0
            };
            let (s, r) = server
                .post(
                    &format!("/v1/events/d-{i}/reward"),
                    &json!({"value": reward, "action_id": id}),
                )
                .await;
            assert_eq!(s, 200, "{r}");
        }
    }
    // The closed pins' items land in their slots only at the uniform rate (1/8 and 1/7).
    assert!(at_slot[0] < n / 4, "past pin applied? {at_slot:?}");
    assert!(at_slot[1] < n / 4, "future pin applied? {at_slot:?}");

    let (_, e) = server
        .get("/admin/v1/campaigns/pins/decisions/d-0/explain")
        .await;
    let pinned: Vec<bool> = e["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pinned"].as_bool().unwrap())
        .collect();
    assert_eq!(pinned, [false, false, true, false], "{e}");

    let (s, p) = server
        .post("/admin/v1/campaigns/pins/preview", &body("pv", "mobile", 4))
        .await;
    assert_eq!(s, 200, "{p}");
    let outcome: Vec<(bool, bool)> = p["pins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["open"].as_bool().unwrap(),
                o["applied"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        [
            (false, false),
            (false, false),
            (true, true),
            (true, false),
            (true, false)
        ],
        "{p}"
    );
    assert!(
        p["pins"][0]["why"].as_str().unwrap().contains("window"),
        "{p}"
    );
    assert!(
        p["pins"][3]["why"]
            .as_str()
            .unwrap()
            .contains("inventory-floor"),
        "{p}"
    );
    assert!(
        p["pins"][4]["why"].as_str().unwrap().contains("not among"),
        "{p}"
    );
    // k = 2: the open pin's slot is beyond the answer.
    let (_, p) = server
        .post("/admin/v1/campaigns/pins/preview", &body("pv", "mobile", 2))
        .await;
    assert_eq!(p["pins"][2]["applied"], false);
    assert!(
        p["pins"][2]["why"].as_str().unwrap().contains("beyond"),
        "{p}"
    );

    // The exported log marks the pinned slot; evaluation runs over it.
    let (_, text) = server.get_text("/admin/v1/campaigns/pins/log").await;
    let line: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(line["actions"][2]["pinned"], true, "{line}");
    assert!(line["actions"][0].get("pinned").is_none(), "{line}");
    let (s, ev) = server
        .post(
            "/admin/v1/campaigns/pins/evaluations",
            &json!({"candidates": [{"policy": {"type": "fixed"}}]}),
        )
        .await;
    assert_eq!(s, 201, "{ev}");
    assert_eq!(ev["used"], n, "{ev}");

    // Config checks name the field; the update is audited.
    let bad = |pins: Value| json!({"id": "pins", "policy": {"type": "uniform"}, "merchandising": {"pins": pins}});
    let (s, e) = server
        .put(
            "/admin/v1/campaigns/pins",
            &bad(json!([{"item": "a", "slot": 100}])),
        )
        .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("merchandising.pins[0].slot")),
        "{e}"
    );
    let (s, e) = server
        .put(
            "/admin/v1/campaigns/pins",
            &bad(json!([{"item": "a", "slot": 0}, {"item": "b", "slot": 0}])),
        )
        .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (400, Some("merchandising.pins[1].slot")),
        "{e}"
    );
    let (s, _) = server
        .put(
            "/admin/v1/campaigns/pins",
            &bad(json!([{"item": "sku-2", "slot": 0}])),
        )
        .await;
    assert_eq!(s, 200);
    let (_, audit) = server.get("/admin/v1/audit?campaign=pins").await;
    let text = audit.to_string();
    assert!(
        text.contains("sku-2") && text.contains("merchandising"),
        "{audit}"
    );
    let (_, d) = server
        .post("/v1/campaigns/pins/decide", &body("after", "mobile", 3))
        .await;
    assert_eq!(d["actions"][0]["id"], "sku-2");
}
