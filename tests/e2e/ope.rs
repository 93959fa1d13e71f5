//! Issue 9: off-policy evaluation over the real server's decision log, the shadow report, and
//! the exported log reproducing the campaign's own estimate through `tailor evaluate`.

use std::path::Path;
use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde_json::{json, Value};

use crate::harness::{tailor_bin, Server};

const FAST: &[(&str, &str)] = &[
    ("TAILOR__ENGINE__SWEEP_INTERVAL_MS", "50"),
    ("TAILOR__ENGINE__SNAPSHOT_INTERVAL_MS", "300"),
];

const DEVICES: [&str; 2] = ["mobile", "desktop"];
const ITEMS: [&str; 3] = ["sku-a", "sku-b", "sku-c"];

/// Click rate of an item on a device.
fn rate(device: usize, item: usize) -> f64 {
    [[0.5, 0.2, 0.1], [0.1, 0.3, 0.6]][device][item]
}

fn decide_body(event: &str, device: usize, k: usize) -> Value {
    json!({
        "event_id": event,
        "context": {"device": DEVICES[device]},
        "candidates": ITEMS.iter().map(|id| json!({"id": id, "features": {"category": id}})).collect::<Vec<_>>(),
        "k": k,
    })
}

/// `n` decisions with a reward for every served slot; returns nothing, the log is the point.
async fn simulate(server: &Server, campaign: &str, n: usize, k: usize, seed: u64) {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    for wave in 0..n / 20 {
        let mut tasks = Vec::new();
        for j in 0..20 {
            let i = wave * 20 + j;
            let device = rng.gen_range(0..2);
            let event = format!("{campaign}-{i}");
            let body = decide_body(&event, device, k);
            let client = server.client.clone();
            let url = server.url(&format!("/v1/campaigns/{campaign}/decide"));
            tasks.push((
                device,
                tokio::spawn(async move {
                    let r = client.post(url).json(&body).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.json::<Value>().await.unwrap()
                }),
            ));
        }
        let mut rewards = Vec::new();
        for (device, t) in tasks {
            let d = t.await.unwrap();
            for a in d["actions"].as_array().unwrap() {
                let id = a["id"].as_str().unwrap();
                let item = ITEMS.iter().position(|x| *x == id).unwrap();
                let v = if rng.gen_bool(rate(device, item)) {
                    1.0
                } else {
                    0.0
                };
                rewards.push(json!({"event_id": d["event_id"], "value": v, "action_id": id}));
            }
        }
        let (status, body) = server
            .post("/v1/rewards", &json!({ "rewards": rewards }))
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

fn find<'a>(ev: &'a Value, name: &str) -> &'a Value {
    ev["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no policy {name} in {ev}"))
}

fn tailor(args: &[&str]) -> String {
    let out = Command::new(tailor_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tailor {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every policy's estimates in two evaluation documents agree (same log, same replay).
fn assert_same_estimates(a: &Value, b: &Value) {
    let pa = a["policies"].as_array().unwrap();
    let pb = b["policies"].as_array().unwrap();
    assert_eq!(pa.len(), pb.len());
    for (x, y) in pa.iter().zip(pb) {
        assert_eq!(x["name"], y["name"]);
        assert_eq!(x["estimate"], y["estimate"], "policy {}", x["name"]);
        assert_eq!(x["refused"], y["refused"]);
    }
    assert_eq!(a["used"], b["used"]);
    assert_eq!(a["logging"], b["logging"]);
}

fn evaluate_file(path: &Path) -> Value {
    let out = tailor(&[
        "evaluate",
        path.to_str().unwrap(),
        "--json",
        "--policy",
        r#"{"policy":{"type":"epsilon_greedy","epsilon":0.2}}"#,
        "--policy",
        r#"{"exploration":0.3}"#,
    ]);
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn evaluations_shadow_report_and_export_reproduce_the_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), FAST).await;
    server
        .create_campaign(json!({
            "id": "ope",
            "policy": {"type": "thompson"},
            "log_requests": true,
            "shadow_policies": [{"type": "linucb", "alpha": 0.5}],
        }))
        .await;
    simulate(&server, "ope", 600, 1, 9).await;

    let request = json!({
        "candidates": [
            {"policy": {"type": "epsilon_greedy", "epsilon": 0.2}},
            {"exploration": 0.3},
        ]
    });
    let (status, ev) = server
        .post("/admin/v1/campaigns/ope/evaluations", &request)
        .await;
    assert_eq!(status, 201, "{ev}");
    assert_eq!(ev["decisions"], 600);
    assert_eq!(ev["used"], 600);
    assert_eq!(ev["mode"], "replay");
    let names: Vec<&str> = ev["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "thompson",
            "linucb",
            "uniform",
            "baseline",
            "epsilon_greedy",
            "thompson+explore0.3"
        ]
    );
    assert_eq!(find(&ev, "thompson")["role"], "serving");
    assert_eq!(find(&ev, "linucb")["role"], "shadow");
    assert_eq!(find(&ev, "epsilon_greedy")["role"], "candidate");
    let logging = &ev["logging"]["total"];
    assert!((0.0..=1.0).contains(&logging["value"].as_f64().unwrap()));
    // Uniform's true value is the mean rate; its estimate must be close (Thompson explores
    // every item, so the log supports it well).
    let truth: f64 = (0..2)
        .flat_map(|d| (0..3).map(move |i| rate(d, i)))
        .sum::<f64>()
        / 6.0;
    let u = &find(&ev, "uniform")["estimate"]["dr"];
    let (v, se) = (
        u["value"].as_f64().unwrap(),
        u["std_error"].as_f64().unwrap(),
    );
    assert!(
        (v - truth).abs() < 4.0 * se + 0.02,
        "uniform {v} ± {se}, truth {truth}"
    );
    for p in ev["policies"].as_array().unwrap() {
        let e = &p["estimate"];
        assert!(e.is_object(), "{p}");
        assert!(e["ips"]["low"].as_f64() <= e["ips"]["high"].as_f64());
        assert!(e["effective_sample_size"].as_f64().unwrap() > 0.0);
    }

    // Stored and listed.
    let (status, list) = server.get("/admin/v1/campaigns/ope/evaluations").await;
    assert_eq!(status, 200);
    assert_eq!(list["evaluations"][0]["id"], ev["id"]);
    let (status, one) = server
        .get(&format!(
            "/admin/v1/campaigns/ope/evaluations/{}",
            ev["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one, ev);

    // The shadow report: agreement and value of the serving and shadow policies.
    let (status, shadow) = server.get("/admin/v1/campaigns/ope/shadow").await;
    assert_eq!(status, 200, "{shadow}");
    let lin = shadow["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "linucb")
        .unwrap();
    let agreement = lin["agreement"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&agreement), "{lin}");
    assert!(lin["value"]["value"].is_number());

    // Bad input is named.
    let (status, err) = server
        .post(
            "/admin/v1/campaigns/ope/evaluations",
            &json!({"candidates": [{"exploration": 2.0}]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["field"], "candidates[0].exploration");
    let (status, _) = server
        .post("/admin/v1/campaigns/nope/evaluations", &json!({}))
        .await;
    assert_eq!(status, 404);

    // Export over HTTP and evaluate the file: the same numbers.
    let (status, text) = server
        .get_text("/admin/v1/campaigns/ope/log?format=jsonl")
        .await;
    assert_eq!(status, 200);
    assert_eq!(text.lines().count(), 601, "header + 600 decisions");
    let file = dir.path().join("../ope-http.jsonl");
    std::fs::write(&file, &text).unwrap();
    assert_same_estimates(&ev, &evaluate_file(&file));

    // Offline export from the stopped server's directory: the same again; replay writes one
    // line per decision with every policy's would-be choice.
    server.stop();
    let offline = tempfile::tempdir().unwrap();
    let exported = offline.path().join("ope.jsonl");
    tailor(&[
        "export",
        "--campaign",
        "ope",
        "--out",
        exported.to_str().unwrap(),
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_same_estimates(&ev, &evaluate_file(&exported));
    let traces = offline.path().join("traces.jsonl");
    tailor(&[
        "replay",
        exported.to_str().unwrap(),
        "--out",
        traces.to_str().unwrap(),
    ]);
    let lines: Vec<Value> = std::fs::read_to_string(&traces)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 600);
    assert!(lines[0]["policies"]["linucb"]["would_serve"].is_string());
    std::fs::remove_file(&file).ok();
}

#[tokio::test]
async fn multi_slot_logs_are_evaluated_slot_wise() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), FAST).await;
    server
        .create_campaign(
            json!({"id": "carousel", "policy": {"type": "thompson"}, "log_requests": true}),
        )
        .await;
    simulate(&server, "carousel", 200, 2, 11).await;
    let (status, ev) = server
        .post("/admin/v1/campaigns/carousel/evaluations", &json!({}))
        .await;
    assert_eq!(status, 201, "{ev}");
    assert_eq!(ev["used"], 200);
    assert_eq!(ev["logging"]["slots"].as_array().unwrap().len(), 2);
    let u = find(&ev, "uniform");
    assert_eq!(u["slots"].as_array().unwrap().len(), 2);
    let total = u["estimate"]["ips"]["value"].as_f64().unwrap();
    let slot_sum: f64 = u["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["estimate"]["ips"]["value"].as_f64().unwrap())
        .sum();
    assert!((total - slot_sum).abs() < 1e-9, "{total} vs {slot_sum}");
}
