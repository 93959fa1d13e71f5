//! Issue 22 item 7: `POST /admin/v1/campaigns/{id}/validate`, the dry run the control room's
//! editor calls as the marketer types. It runs the save's checks (plugins check their own
//! configs), names the field, stores nothing and writes no audit entry.

use serde_json::{json, Value};

use crate::harness::{client_with, Server};
use crate::plugins::install;

async fn post_as(server: &Server, key: &str, path: &str, body: &Value) -> u16 {
    client_with(key)
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn validate_dry_runs_a_save_naming_the_field_and_changes_nothing() {
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
        .create_campaign(json!({"id": "home", "policy": {"type": "thompson"}, "holdout": 0.1}))
        .await;
    let (_, home) = server.get("/admin/v1/campaigns/home").await;

    // A new id: checked as a create, defaults filled in, nothing created.
    let (s, v) = server
        .post(
            "/admin/v1/campaigns/fresh/validate",
            &json!({"plugins": [{"name": "inventory-floor", "config": {"min_inventory": 2}}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["valid"], true);
    assert_eq!(v["exists"], false);
    assert_eq!(v["config"]["id"], "fresh");
    assert_eq!(v["config"]["policy"]["type"], "sparse_linucb", "{v}");
    let (s, _) = server.get("/admin/v1/campaigns/fresh").await;
    assert_eq!(s, 404, "a dry run creates nothing");

    // Each mistake names its field, as the save would.
    let cases = [
        (json!({"exploration": 2.0}), "exploration"),
        (
            json!({"policy": {"type": "epsilon_greedy", "epsilon": 1.5}}),
            "policy.epsilon",
        ),
        (json!({"reward_wait_seconds": 0}), "reward_wait_seconds"),
        (
            json!({"plugins": [{"name": "inventory-floor", "config": {"min_inventory": -1}}]}),
            "plugins[0].config",
        ),
        (
            json!({"plugins": [{"name": "no-such-plugin"}]}),
            "plugins[0].name",
        ),
        (json!({"id": "other"}), "id"),
        (json!({"bogus": 1}), "body"),
    ];
    for (body, field) in cases {
        let (s, v) = server
            .post("/admin/v1/campaigns/fresh/validate", &body)
            .await;
        assert_eq!(s, 400, "{body}: {v}");
        let named = v["error"]["field"].as_str().unwrap_or_default();
        assert!(
            named == field || (field == "body" && named.contains("bogus")),
            "{body}: field {named:?}, expected {field:?}: {v}"
        );
    }
    // The plugin's own words come back.
    let (_, v) = server
        .post(
            "/admin/v1/campaigns/fresh/validate",
            &json!({"plugins": [{"name": "inventory-floor", "config": {"min_inventory": -1}}]}),
        )
        .await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("min_inventory"),
        "{v}"
    );

    // An existing id: checked as an update, the holdout salt carried over, nothing changed.
    let mut edit = home.clone();
    edit["holdout"] = json!(0.3);
    edit.as_object_mut().unwrap().remove("holdout_salt");
    let (s, v) = server
        .post("/admin/v1/campaigns/home/validate", &edit)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["exists"], true);
    assert_eq!(v["config"]["holdout"], 0.3);
    assert_eq!(v["config"]["holdout_salt"], home["holdout_salt"], "{v}");
    let (_, now) = server.get("/admin/v1/campaigns/home").await;
    assert_eq!(now, home, "a dry run changes nothing");

    // Editor access like the save: a viewer and a key scoped elsewhere are refused.
    let (_, viewer) = server
        .post("/admin/v1/keys", &json!({"role": "viewer"}))
        .await;
    let (_, scoped) = server
        .post(
            "/admin/v1/keys",
            &json!({"role": "editor", "campaign": "other"}),
        )
        .await;
    for key in [&viewer, &scoped] {
        let key = key["key"].as_str().unwrap();
        let s = post_as(&server, key, "/admin/v1/campaigns/home/validate", &edit).await;
        assert_eq!(s, 403);
    }
    let scoped_key = scoped["key"].as_str().unwrap();
    let s = post_as(
        &server,
        scoped_key,
        "/admin/v1/campaigns/other/validate",
        &json!({}),
    )
    .await;
    assert_eq!(s, 200, "a scoped editor checks its own campaign");

    // No audit entry from any of it: the log holds the create and the two key creations.
    let (_, audit) = server.get("/admin/v1/audit").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["key.create", "key.create", "campaign.create"],
        "{audit}"
    );
}
