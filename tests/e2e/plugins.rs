//! Issue 4 (native plugins) through the real server: the example cdylibs built by the workspace,
//! installed in a plugin directory, attached to campaigns over the admin API.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde_json::{json, Value};
use tailor_server::store::{LogStore, SledStore};

use crate::harness::{target_dir, Server};

/// The cdylib of workspace crate `krate` (a dev-dependency of this crate, so cargo built it
/// into `target/<profile>/deps` before the tests run).
pub(crate) fn built_plugin(krate: &str) -> PathBuf {
    let path = target_dir().join("deps").join(format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        krate.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    ));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A plugin directory with the given plugins installed, as an operator would.
pub(crate) fn install(dir: &Path, krates: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for k in krates {
        let src = built_plugin(k);
        std::fs::copy(&src, dir.join(src.file_name().unwrap())).unwrap();
    }
}

const ALL: [&str; 7] = [
    "markdown-guard",
    "inventory-floor",
    "repurchase-guard",
    "quiet-hours",
    "shopper-features",
    "tailor-test-plugin-panicky",
    "tailor-test-plugin-abi-mismatch",
];

async fn server_with_plugins(dir: &Path) -> Server {
    let plugins = dir.join("plugins");
    install(&plugins, &ALL);
    Server::start_with_args(
        &dir.join("data"),
        &[],
        &["--plugin-dir", plugins.to_str().unwrap()],
    )
    .await
}

fn plugin<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name && p["current"] == true)
        .unwrap_or_else(|| panic!("{name} not listed: {list}"))
}

#[tokio::test]
async fn admin_lists_plugins_and_refuses_the_abi_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_plugins(dir.path()).await;
    let (status, list) = server.get("/admin/v1/plugins").await;
    assert_eq!(status, 200, "{list}");
    for name in [
        "markdown-guard",
        "inventory-floor",
        "repurchase-guard",
        "quiet-hours",
        "panicky",
    ] {
        assert_eq!(plugin(&list, name)["kind"], "constraint");
    }
    let sf = plugin(&list, "shopper-features");
    assert_eq!(sf["kind"], "feature_extractor");
    assert_eq!(sf["abi"], 1);
    let refused: Vec<&Value> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["error"].is_null())
        .collect();
    assert_eq!(refused.len(), 1, "{list}");
    let msg = refused[0]["error"].as_str().unwrap();
    assert!(msg.contains("ABI mismatch in `abi_version`"), "{msg}");
    assert!(refused[0]["path"]
        .as_str()
        .unwrap()
        .contains("abi_mismatch"));
}

#[tokio::test]
async fn bad_plugin_config_is_a_400_with_the_plugins_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_plugins(dir.path()).await;
    let campaign =
        |plugins: Value| json!({"id": "pdp", "policy": {"type": "thompson"}, "plugins": plugins});

    let (status, body) = server
        .post(
            "/admin/v1/campaigns",
            &campaign(json!([{"name": "inventory-floor", "config": {"min_inventry": 3}}])),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "plugins[0].config");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("unknown field `min_inventry`"), "{msg}");

    let (status, body) = server
        .post(
            "/admin/v1/campaigns",
            &campaign(json!([{"name": "no-such-plugin"}])),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "plugins[0].name");

    // Nothing was half written: the campaign does not exist.
    let (status, _) = server.get("/admin/v1/campaigns/pdp").await;
    assert_eq!(status, 404);

    server
        .create_campaign(campaign(
            json!([{"name": "inventory-floor", "config": {"min_inventory": 3}}]),
        ))
        .await;
    let (status, body) = server
        .put(
            "/admin/v1/campaigns/pdp",
            &campaign(json!([
                {"name": "inventory-floor", "config": {"min_inventory": 3}},
                {"name": "quiet-hours", "config": {"start": 30}}
            ])),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "plugins[1].config");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`start` must be an hour in 0..=23, got 30"));
}

const CATEGORIES: [&str; 4] = ["shoes", "toilet_seats", "coffee", "lamps"];

/// Property: over many decisions, an item a constraint excludes is never served, and every
/// decision's log record names exactly the excluded candidates.
#[tokio::test]
async fn an_excluded_item_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server_with_plugins(dir.path()).await;
    server
        .create_campaign(json!({
            "id": "pdp",
            "policy": {"type": "thompson"},
            "plugins": [
                {"name": "shopper-features"},
                {"name": "inventory-floor", "config": {"min_inventory": 5, "category_overrides": {"lamps": 1}}},
                {"name": "markdown-guard", "config": {"max_markdowns": 1, "min_discount_affinity": 0.5}},
                {"name": "repurchase-guard", "config": {"one_time_categories": ["toilet_seats"]}},
            ],
        }))
        .await;

    let mut rng = Pcg64Mcg::seed_from_u64(44);
    let mut expected_removed = 0usize;
    let rounds = 300;
    for round in 0..rounds {
        let affinity: f64 = rng.gen_range(0.0..1.0);
        let bought: Vec<&str> = CATEGORIES
            .iter()
            .copied()
            .filter(|_| rng.gen_bool(0.5))
            .collect();
        let mut eligible = Vec::new();
        let candidates: Vec<Value> = (0..8)
            .map(|i| {
                let inventory = rng.gen_range(0..10);
                let markdowns = rng.gen_range(0..3);
                let category = CATEGORIES[rng.gen_range(0..CATEGORIES.len())];
                let floor = if category == "lamps" { 1 } else { 5 };
                let ok = inventory >= floor
                    && markdowns <= 1
                    && (markdowns == 0 || affinity >= 0.5)
                    && !(category == "toilet_seats" && bought.contains(&category));
                let id = format!("sku-{i}");
                if ok {
                    eligible.push(id.clone());
                }
                json!({"id": id, "features": {"category": category},
                       "attributes": {"inventory": inventory, "markdown_count": markdowns, "category": category, "price": 20.0}})
            })
            .collect();
        expected_removed += 8 - eligible.len();
        let body = json!({
            "event_id": format!("e-{round}"),
            "context": {"discount_affinity": affinity, "purchased_categories": bought,
                        "days_since_last_purchase": 20, "orders_last_365d": 3, "spend_last_365d": 150.0},
            "candidates": candidates,
            "k": 2,
        });
        let (status, resp) = server.post("/v1/campaigns/pdp/decide", &body).await;
        if eligible.is_empty() {
            assert_eq!(status, 400, "{resp}");
            continue;
        }
        assert_eq!(status, 200, "{resp}");
        let served: Vec<&str> = resp["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect();
        assert_eq!(served.len(), eligible.len().min(2));
        for id in &served {
            assert!(
                eligible.iter().any(|e| e == id),
                "served excluded {id}: {resp}"
            );
        }
        // Propensities are over the eligible set: a single eligible item is certain.
        if eligible.len() == 1 {
            assert_eq!(resp["actions"][0]["probability"], 1.0);
        }
    }
    assert!(expected_removed > rounds, "the inputs exercise the rules");

    // The decision log records who removed what.
    server.stop();
    let store = SledStore::open(&dir.path().join("data"), 64 << 20, 500).unwrap();
    let mut logged_removed = 0;
    let mut reasons = std::collections::HashSet::new();
    for d in store.decisions("pdp", 0) {
        let d = d.unwrap();
        logged_removed += d.removed.len();
        assert_eq!(d.candidates as usize + d.removed.len(), 8);
        for (plugin, candidate, code) in &d.removed {
            assert!(candidate.starts_with("sku-"));
            assert!(*code >= 1);
            reasons.insert(plugin.clone());
        }
    }
    assert!(logged_removed > 0);
    assert_eq!(
        reasons,
        ["inventory-floor", "markdown-guard", "repurchase-guard"]
            .map(String::from)
            .into()
    );
}

#[tokio::test]
async fn quiet_hours_slots_are_never_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_plugins(dir.path()).await;
    server
        .create_campaign(json!({
            "id": "newsletter",
            "policy": {"type": "thompson"},
            "plugins": [{"name": "quiet-hours", "config": {"start": 22, "end": 7}}],
        }))
        .await;
    let slots: Vec<Value> = (0..24)
        .map(|h| json!({"id": format!("slot-{h:02}"), "attributes": {"local_hour": h}}))
        .collect();
    for i in 0..100 {
        let ctx = if i % 2 == 0 {
            json!({})
        } else {
            json!({"quiet_start": 12, "quiet_end": 14})
        };
        let (status, resp) = server
            .post(
                "/v1/campaigns/newsletter/decide",
                &json!({"context": ctx, "candidates": slots}),
            )
            .await;
        assert_eq!(status, 200, "{resp}");
        let hour: u32 = resp["actions"][0]["id"].as_str().unwrap()[5..]
            .parse()
            .unwrap();
        if i % 2 == 0 {
            assert!((7..22).contains(&hour), "slot {hour} is in 22-7");
        } else {
            assert!(!(12..14).contains(&hour), "slot {hour} is in 12-14");
        }
    }
}

#[tokio::test]
async fn a_panicking_plugin_is_contained_and_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_plugins(dir.path()).await;
    for (id, on_failure) in [("soft", "baseline"), ("strict", "refuse")] {
        server
            .create_campaign(json!({
                "id": id,
                "policy": {"type": "thompson"},
                "plugins": [{"name": "panicky", "on_failure": on_failure}],
            }))
            .await;
    }
    let candidates = json!([{"id": "a"}, {"id": "b", "attributes": {"bad": true}}, {"id": "c"}]);
    let decide = |campaign: &'static str, mode: &'static str| {
        let body = json!({"context": {"mode": mode}, "candidates": candidates.clone(), "k": 3});
        let server = &server;
        async move {
            server
                .post(&format!("/v1/campaigns/{campaign}/decide"), &body)
                .await
        }
    };

    // Healthy: "b" is removed and the propensities are over the two eligible items.
    let (status, resp) = decide("soft", "ok").await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["actions"].as_array().unwrap().len(), 2);

    // Panics: the baseline campaign serves the candidates in order, the strict one refuses.
    let (status, resp) = decide("soft", "panic").await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["policy"], "baseline");
    assert_eq!(resp["actions"][0]["id"], "a");
    let (status, resp) = decide("strict", "panic").await;
    assert_eq!(status, 503, "{resp}");
    assert!(resp["error"]["message"]
        .as_str()
        .unwrap()
        .contains("asked to panic"));

    // Three more failures (five in a row) quarantine it; it is no longer called.
    for _ in 0..3 {
        decide("soft", "error").await;
    }
    let (_, list) = server.get("/admin/v1/plugins").await;
    let p = plugin(&list, "panicky");
    assert_eq!(p["failures"], 5, "{p}");
    let reason = p["quarantined"].as_str().expect("quarantined");
    assert!(reason.contains("5 consecutive failures"), "{reason}");
    let (status, resp) = decide("soft", "ok").await;
    assert_eq!(status, 200);
    assert_eq!(
        resp["policy"], "baseline",
        "quarantined: falls back without calling"
    );
    assert_eq!(
        plugin(&server.get("/admin/v1/plugins").await.1, "panicky")["calls"],
        6
    );

    // The server kept serving other campaigns all along.
    server
        .create_campaign(json!({"id": "plain", "policy": {"type": "thompson"}}))
        .await;
    let (status, _) = server
        .post(
            "/v1/campaigns/plain/decide",
            &json!({"candidates": [{"id": "x"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics.contains("tailor_plugin_failures_total"),
        "failures are counted in metrics"
    );
}

#[tokio::test]
async fn reload_loads_a_new_version_beside_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_plugins(dir.path()).await;
    server
        .create_campaign(json!({
            "id": "pdp",
            "policy": {"type": "thompson"},
            "plugins": [{"name": "inventory-floor", "config": {"min_inventory": 2}}],
        }))
        .await;
    let (status, report) = server.post("/admin/v1/plugins/reload", &json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["loaded"].as_array().unwrap().len(),
        0,
        "nothing changed"
    );

    // Install a "new build" atomically (write aside, rename over), as docs/plugins.md says.
    let installed = dir
        .path()
        .join("plugins")
        .join(built_plugin("inventory-floor").file_name().unwrap());
    let mut bytes = std::fs::read(&installed).unwrap();
    bytes.extend_from_slice(b"new build");
    let tmp = installed.with_extension("tmp");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &installed).unwrap();

    let (status, report) = server.post("/admin/v1/plugins/reload", &json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["loaded"][0]["name"], "inventory-floor");
    let (_, list) = server.get("/admin/v1/plugins").await;
    let versions: Vec<&Value> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "inventory-floor")
        .collect();
    assert_eq!(versions.len(), 2, "old and new side by side: {list}");
    assert_eq!(versions.iter().filter(|p| p["current"] == true).count(), 1);

    // The campaign moved to the new version and still applies its rule.
    let (status, resp) = server
        .post(
            "/v1/campaigns/pdp/decide",
            &json!({"candidates": [
                {"id": "low", "attributes": {"inventory": 1}},
                {"id": "ok", "attributes": {"inventory": 9}}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["actions"][0]["id"], "ok");
    assert_eq!(resp["actions"][0]["probability"], 1.0);
    let (_, list) = server.get("/admin/v1/plugins").await;
    let current = plugin(&list, "inventory-floor");
    assert_eq!(current["calls"], 1, "the new version served: {current}");
}

// Issue 17: malformed plugin files. Before the fix, `dlopen` mapped a truncated library straight
// from its file and the server died with SIGBUS (at start, on reload, in `tailor plugin check`),
// and a FIFO named `*.so` blocked startup forever.

/// The bad files of issue 17, made in `dir`: (file name, what the listed error must say).
fn make_bad_file(dir: &Path, case: &str) -> (PathBuf, &'static str) {
    let good = std::fs::read(built_plugin("inventory-floor")).unwrap();
    match case {
        "truncated" => {
            let path = dir.join("truncated.so");
            std::fs::write(&path, &good[..64 << 10]).unwrap();
            (path, "is truncated or corrupt")
        }
        "garbage" => {
            let path = dir.join("x.so");
            let mut rng = Pcg64Mcg::seed_from_u64(17);
            let bytes: Vec<u8> = (0..8192).map(|_| rng.gen()).collect();
            std::fs::write(&path, bytes).unwrap();
            (path, "is not an ELF shared library")
        }
        "empty" => {
            let path = dir.join("empty.so");
            std::fs::write(&path, b"").unwrap();
            (path, "is empty (0 bytes)")
        }
        "fifo" => {
            let path = dir.join("y.so");
            mkfifo(&path);
            (path, "is a FIFO, not a regular file")
        }
        other => unreachable!("{other}"),
    }
}

const BAD_CASES: [&str; 4] = ["truncated", "garbage", "empty", "fifo"];

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("running mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// The error listed by `GET /admin/v1/plugins` for `path`.
async fn listed_error(server: &Server, path: &Path) -> String {
    let (status, list) = server.get("/admin/v1/plugins").await;
    assert_eq!(status, 200, "{list}");
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["path"] == path.to_str().unwrap())
        .find_map(|p| p["error"].as_str())
        .unwrap_or_else(|| panic!("no error listed for {}: {list}", path.display()))
        .to_owned()
}

/// `inventory-floor` (min 2) still excludes the low-stock item on campaign `pdp`.
async fn inventory_floor_still_applies(server: &Server) {
    let (status, resp) = server
        .post(
            "/v1/campaigns/pdp/decide",
            &json!({"candidates": [
                {"id": "low", "attributes": {"inventory": 1}},
                {"id": "ok", "attributes": {"inventory": 9}}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["actions"][0]["id"], "ok");
    assert_eq!(resp["actions"][0]["probability"], 1.0);
}

async fn create_floor_campaign(server: &Server) {
    server
        .create_campaign(json!({
            "id": "pdp",
            "policy": {"type": "thompson"},
            "plugins": [{"name": "inventory-floor", "config": {"min_inventory": 2}}],
        }))
        .await;
}

#[tokio::test]
async fn a_bad_plugin_file_at_start_is_listed_and_the_server_serves() {
    for case in BAD_CASES {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        install(&plugins, &["inventory-floor"]);
        let (bad, message) = make_bad_file(&plugins, case);
        let server = Server::start_with_args(
            &dir.path().join("data"),
            &[],
            &["--plugin-dir", plugins.to_str().unwrap()],
        )
        .await;
        assert_eq!(server.get("/healthz").await.0, 200, "{case}");
        let error = listed_error(&server, &bad).await;
        assert!(error.contains(message), "{case}: {error}");
        assert!(error.starts_with(bad.to_str().unwrap()), "{case}: {error}");
        // The good plugin beside it loaded and works.
        create_floor_campaign(&server).await;
        inventory_floor_still_applies(&server).await;
    }
}

#[tokio::test]
async fn reload_after_a_plugin_file_went_bad_in_place_keeps_the_loaded_version() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    install(&plugins, &["inventory-floor"]);
    let server = Server::start_with_args(
        &dir.path().join("data"),
        &[],
        &["--plugin-dir", plugins.to_str().unwrap()],
    )
    .await;
    create_floor_campaign(&server).await;
    inventory_floor_still_applies(&server).await;
    let installed = plugins.join(built_plugin("inventory-floor").file_name().unwrap());
    let good = std::fs::read(&installed).unwrap();

    // Truncated in place (the same inode: what `cp` over the file does halfway), overwritten in
    // place with garbage, emptied, then swapped for a FIFO.
    type Spoil = Box<dyn Fn(&Path)>;
    let spoils: [(&str, Spoil, &str); 4] = [
        (
            "truncated",
            Box::new(|p: &Path| {
                let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                f.set_len(64 << 10).unwrap();
            }),
            "is truncated or corrupt",
        ),
        (
            "garbage",
            Box::new(|p: &Path| {
                let mut rng = Pcg64Mcg::seed_from_u64(18);
                let bytes: Vec<u8> = (0..8192).map(|_| rng.gen()).collect();
                std::fs::write(p, bytes).unwrap();
            }),
            "is not an ELF shared library",
        ),
        (
            "empty",
            Box::new(|p: &Path| std::fs::write(p, b"").unwrap()),
            "is empty (0 bytes)",
        ),
        (
            "fifo",
            Box::new(|p: &Path| {
                std::fs::remove_file(p).unwrap();
                mkfifo(p);
            }),
            "is a FIFO, not a regular file",
        ),
    ];
    for (case, spoil, message) in spoils {
        if installed.symlink_metadata().is_ok_and(|m| m.is_file()) {
            std::fs::write(&installed, &good).unwrap();
        }
        spoil(&installed);
        let (status, report) = server.post("/admin/v1/plugins/reload", &json!({})).await;
        assert_eq!(status, 200, "{case}: {report}");
        assert!(report["loaded"].as_array().unwrap().is_empty(), "{report}");
        let errors = report["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{case}: {report}");
        assert!(
            errors[0]["error"].as_str().unwrap().contains(message),
            "{case}: {report}"
        );
        assert_eq!(server.get("/healthz").await.0, 200, "{case}");
        assert!(listed_error(&server, &installed).await.contains(message));
        let (_, list) = server.get("/admin/v1/plugins").await;
        assert!(plugin(&list, "inventory-floor")["error"].is_null());
        inventory_floor_still_applies(&server).await;
    }
    let (_, list) = server.get("/admin/v1/plugins").await;
    assert_eq!(
        plugin(&list, "inventory-floor")["calls"],
        5,
        "one loaded version served every decision: {list}"
    );
}

#[test]
fn plugin_check_refuses_bad_files_without_crashing() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    for case in BAD_CASES {
        let (bad, message) = make_bad_file(dir.path(), case);
        let mut child = Command::new(crate::harness::tailor_bin())
            .args(["plugin", "check"])
            .arg(&bad)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A hang (the old FIFO behaviour) fails the test instead of blocking it forever.
        let mut waited = 0;
        while child.try_wait().unwrap().is_none() {
            if waited == 600 {
                child.kill().unwrap();
                panic!("{case}: `tailor plugin check` hung");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            waited += 1;
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{case}: exit {:?} (None: killed by a signal): {stderr}",
            out.status
        );
        assert!(stderr.contains(bad.to_str().unwrap()), "{case}: {stderr}");
        assert!(stderr.contains(message), "{case}: {stderr}");
    }
}
