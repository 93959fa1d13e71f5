//! Issue 17, part 5: event ids. Ids with `+`, `/` and `%` (base64) are rewarded and activated
//! through every route; ids are per campaign (and a scoped key learns nothing of other
//! campaigns); a Personalizer single-slot `X/main` and a multi-slot `X` slot `main` are two
//! events; a replay over other candidates is a 409; a schema 1 store is migrated at start.

use std::time::Duration;

use serde_json::{json, Value};
use tailor_sdk::wire::{Candidate, DecideRequest};
use tailor_sdk::ClientBuilder;

use crate::harness::{client_with, Server, ADMIN_KEY};

/// A base64-ish id: every character actix's router keeps escaped, and `=`.
const B64: &str = "a+b/c%d==";
/// [`B64`] as one path segment.
const B64_PATH: &str = "a%2Bb%2Fc%25d%3D%3D";

async fn items_campaign(server: &Server, id: &str) {
    server
        .create_campaign(json!({
            "id": id,
            "policy": {"type": "thompson"},
            "reward_wait_seconds": 600,
        }))
        .await;
}

async fn key(server: &Server, role: &str, campaign: Option<&str>) -> String {
    let mut body = json!({ "role": role });
    if let Some(c) = campaign {
        body["campaign"] = json!(c);
    }
    let (status, v) = server.post("/admin/v1/keys", &body).await;
    assert_eq!(status, 201, "{v}");
    v["key"].as_str().unwrap().to_string()
}

async fn post_as(server: &Server, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = client_with(key)
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A Personalizer call with `Ocp-Apim-Subscription-Key`.
async fn pz(server: &Server, key: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server.url(&format!("/personalizer/v1.0{path}")))
        .header("Ocp-Apim-Subscription-Key", key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn rewards(stats: &Value) -> u64 {
    stats["rewards"].as_u64().unwrap()
}

fn decide_body(event_id: &str, candidates: &[&str]) -> Value {
    let candidates: Vec<Value> = candidates.iter().map(|c| json!({ "id": c })).collect();
    json!({ "event_id": event_id, "candidates": candidates })
}

#[tokio::test]
async fn base64_ids_are_decided_rewarded_and_activated_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    items_campaign(&server, "home").await;
    items_campaign(&server, "cart").await;
    items_campaign(&server, "mail").await;

    // Native: the id decides, and every reward form reaches the same event.
    let (s, d) = server
        .post("/v1/campaigns/home/decide", &decide_body(B64, &["x", "y"]))
        .await;
    assert_eq!((s, d["event_id"].as_str()), (200, Some(B64)), "{d}");
    let (s, v) = server
        .post(
            &format!("/v1/events/{B64_PATH}/reward"),
            &json!({"value": 1.0}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["event_id"].as_str(), v["status"].as_str()),
        (Some(B64), Some("accepted"))
    );
    // `+` and `=` unescaped are data too.
    let (s, v) = server
        .post("/v1/events/a+b%2Fc%25d==/reward", &json!({"value": 1.0}))
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("duplicate")), "{v}");
    let (s, v) = server
        .post(
            &format!("/v1/campaigns/home/events/{B64_PATH}/reward"),
            &json!({"value": 1.0}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("duplicate")), "{v}");
    // A literal escape in an id is not decoded twice: `a+b%2Fc%25d==` is another id.
    let (s, v) = server
        .post(
            "/v1/events/a%2Bb%252Fc%2525d%3D%3D/reward",
            &json!({"value": 1.0}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("event_not_found")),
        "{v}"
    );
    assert_eq!(rewards(&server.stats("home").await), 1);

    // The SDK: the id in a body both ways, and a campaign id in its paths.
    let client = ClientBuilder::new(&server.base)
        .api_key(ADMIN_KEY)
        // A loaded 2-core machine: the default 100 ms budget would test the fallback instead.
        .decide_budget(Duration::from_secs(5))
        .build()
        .unwrap();
    let request = DecideRequest {
        candidates: vec![Candidate::new("x"), Candidate::new("y")],
        event_id: Some(B64.into()),
        ..Default::default()
    };
    let d = client.decide("cart", &request).await.unwrap();
    assert_eq!(d.event_id(), Some(B64), "{d:?}");
    client.reward_in("cart", B64, 1.0).unwrap();
    tokio::time::timeout(Duration::from_secs(20), client.flush())
        .await
        .expect("flush");
    let c = client.counters();
    assert_eq!((c.rewards_acknowledged, c.rewards_dropped), (1, 0), "{c:?}");
    assert_eq!(rewards(&server.stats("cart").await), 1);
    assert_eq!(rewards(&server.stats("home").await), 1, "home untouched");

    // Personalizer: rank deferred, reward (ignored), activate, reward (learned).
    let pz_key = key(&server, "decide", Some("mail")).await;
    let (s, v) = pz(
        &server,
        &pz_key,
        "/rank",
        &json!({"actions": [{"id": "x"}, {"id": "y"}], "eventId": B64, "deferActivation": true}),
    )
    .await;
    assert_eq!((s, v["eventId"].as_str()), (201, Some(B64)), "{v}");
    let reward = format!("/events/{B64_PATH}/reward");
    let (s, v) = pz(&server, &pz_key, &reward, &json!({"value": 1.0})).await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(rewards(&server.stats("mail").await), 0, "deferred");
    let (s, v) = pz(
        &server,
        &pz_key,
        &format!("/events/{B64_PATH}/activate"),
        &json!({}),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = pz(&server, &pz_key, &reward, &json!({"value": 1.0})).await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(rewards(&server.stats("mail").await), 1);
    // Multi-slot under the same id (another event: multi-slot ids are their own).
    let (s, v) = pz(
        &server,
        &pz_key,
        "/multislot/rank",
        &json!({
            "actions": [{"id": "x"}, {"id": "y"}],
            "slots": [{"id": "top", "baselineAction": "x"}],
            "eventId": B64,
            "deferActivation": true,
        }),
    )
    .await;
    assert_eq!((s, v["eventId"].as_str()), (201, Some(B64)), "{v}");
    let (s, v) = pz(
        &server,
        &pz_key,
        &format!("/multislot/events/{B64_PATH}/activate"),
        &json!({}),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = pz(
        &server,
        &pz_key,
        &format!("/multislot/events/{B64_PATH}/reward"),
        &json!({"reward": [{"slotId": "top", "value": 1.0}]}),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(rewards(&server.stats("mail").await), 2);
}

#[tokio::test]
async fn event_ids_are_per_campaign_and_scoped_keys_see_only_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    items_campaign(&server, "c1").await;
    items_campaign(&server, "c2").await;

    // The same page-view id in two campaigns: two independent decisions.
    for c in ["c1", "c2"] {
        let (s, v) = server
            .post(
                &format!("/v1/campaigns/{c}/decide"),
                &decide_body("pv-1", &["a", "b"]),
            )
            .await;
        assert_eq!((s, v["replayed"].as_bool()), (200, Some(false)), "{c}: {v}");
    }
    let (s, v) = server
        .post(
            "/v1/campaigns/c2/decide",
            &decide_body("only-2", &["a", "b"]),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // An unscoped key must name the campaign when the id is in several.
    let (s, v) = server
        .post("/v1/events/pv-1/reward", &json!({"value": 1.0}))
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "ambiguous_event", "{v}");
    assert_eq!(v["error"]["field"], "campaign", "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("c1") && m.contains("c2"), "{m}");
    let (s, v) = server
        .post(
            "/v1/campaigns/c1/events/pv-1/reward",
            &json!({"value": 1.0}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("accepted")), "{v}");
    let (s, v) = server
        .post(
            "/v1/events/pv-1/reward",
            &json!({"value": 1.0, "campaign": "c2"}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("accepted")), "{v}");
    // Path and body must agree.
    let (s, v) = server
        .post(
            "/v1/campaigns/c1/events/pv-1/reward",
            &json!({"value": 1.0, "campaign": "c2"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("campaign")),
        "{v}"
    );
    // An id in one campaign needs no name.
    let (s, v) = server
        .post("/v1/events/only-2/reward", &json!({"value": 1.0}))
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("accepted")), "{v}");
    assert_eq!(rewards(&server.stats("c1").await), 1);
    assert_eq!(rewards(&server.stats("c2").await), 2);

    // A key scoped to c1 rewards c1's event without naming it, and learns nothing of c2.
    let c1_key = key(&server, "decide", Some("c1")).await;
    let (s, v) = post_as(
        &server,
        &c1_key,
        "/v1/events/pv-1/reward",
        &json!({"value": 1.0}),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("duplicate")), "{v}");
    let (s, v) = post_as(
        &server,
        &c1_key,
        "/v1/events/only-2/reward",
        &json!({"value": 1.0}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("event_not_found")),
        "{v}"
    );
    assert!(
        !v.to_string().contains("c2"),
        "names the other campaign: {v}"
    );
    let (s, v) = post_as(
        &server,
        &c1_key,
        "/v1/campaigns/c2/events/only-2/reward",
        &json!({"value": 1.0}),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = post_as(
        &server,
        &c1_key,
        "/v1/rewards",
        &json!({"rewards": [
            {"event_id": "only-2", "value": 1.0},
            {"event_id": "only-2", "value": 1.0, "campaign": "c2"},
            {"event_id": "pv-1", "value": 1.0, "campaign": "c1"},
        ]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let statuses: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["http_status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [404, 403, 200], "{v}");
    assert!(!v["results"][0].to_string().contains("c2"), "{v}");
    // Reusing c2's id in c1 is a new decision, not a 409 naming c2.
    let (s, v) = post_as(
        &server,
        &c1_key,
        "/v1/campaigns/c1/decide",
        &decide_body("only-2", &["a", "b"]),
    )
    .await;
    assert_eq!((s, v["replayed"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(rewards(&server.stats("c2").await), 2, "c2 untouched");

    // The SDK with the scoped key: a plain reward goes to c1.
    let client = ClientBuilder::new(&server.base)
        .api_key(&c1_key)
        .build()
        .unwrap();
    client.reward("only-2", 1.0).unwrap();
    tokio::time::timeout(Duration::from_secs(20), client.flush())
        .await
        .expect("flush");
    assert_eq!(client.counters().rewards_acknowledged, 1);
    assert_eq!(rewards(&server.stats("c1").await), 2);
    assert_eq!(rewards(&server.stats("c2").await), 2);
}

#[tokio::test]
async fn personalizer_single_slot_and_multislot_ids_do_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    items_campaign(&server, "page").await;
    let k = key(&server, "decide", Some("page")).await;
    let single = |id: &str| json!({"actions": [{"id": "pasta"}, {"id": "curry"}], "eventId": id, "deferActivation": true});
    let multi = |id: &str| {
        json!({
            "actions": [{"id": "salad"}, {"id": "sushi"}],
            "slots": [{"id": "main", "baselineAction": "salad"}],
            "eventId": id,
            "deferActivation": true,
        })
    };
    let in_set = |v: &Value, set: &[&str]| set.contains(&v.as_str().unwrap_or_default());
    // Both orders: single first for X, multi first for Y.
    for (id, single_first) in [("X", true), ("Y", false)] {
        let slot_id = format!("{id}/main");
        for step in 0..2 {
            if (step == 0) == single_first {
                let (s, v) = pz(&server, &k, "/rank", &single(&slot_id)).await;
                assert_eq!(s, 201, "{v}");
                assert!(
                    in_set(&v["rewardActionId"], &["pasta", "curry"]),
                    "{id}: {v}"
                );
            } else {
                let (s, v) = pz(&server, &k, "/multislot/rank", &multi(id)).await;
                assert_eq!(s, 201, "{v}");
                assert!(
                    in_set(&v["slots"][0]["rewardActionId"], &["salad", "sushi"]),
                    "{id}: {v}"
                );
            }
        }
    }
    // Activating the multi-slot X leaves the single-slot `X/main` deferred.
    let (s, v) = pz(&server, &k, "/multislot/events/X/activate", &json!({})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = pz(
        &server,
        &k,
        "/events/X%2Fmain/reward",
        &json!({"value": 1.0}),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(
        rewards(&server.stats("page").await),
        0,
        "X/main is still deferred"
    );
    let (s, v) = pz(
        &server,
        &k,
        "/multislot/events/X/reward",
        &json!({"reward": [{"slotId": "main", "value": 1.0}]}),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(rewards(&server.stats("page").await), 1);
    let (s, v) = pz(&server, &k, "/events/X%2Fmain/activate", &json!({})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = pz(
        &server,
        &k,
        "/events/X%2Fmain/reward",
        &json!({"value": 1.0}),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(rewards(&server.stats("page").await), 2);
    // And a slot that was never decided is unknown, even though `Y/other`-like ids exist.
    let (s, v) = pz(
        &server,
        &k,
        "/multislot/events/Y/reward",
        &json!({"reward": [{"slotId": "other", "value": 1.0}]}),
    )
    .await;
    assert_eq!(s, 404, "{v}");
}

#[tokio::test]
async fn a_replay_over_other_candidates_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    items_campaign(&server, "home").await;
    let (s, first) = server
        .post(
            "/v1/campaigns/home/decide",
            &decide_body("e1", &["a", "b", "c"]),
        )
        .await;
    assert_eq!(s, 200, "{first}");
    // The same candidates, in any order: the recorded decision.
    let (s, again) = server
        .post(
            "/v1/campaigns/home/decide",
            &decide_body("e1", &["c", "a", "b"]),
        )
        .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["actions"], first["actions"]);
    for other in [&["a", "b"][..], &["a", "b", "c", "d"], &["x", "y", "z"]] {
        let (s, v) = server
            .post("/v1/campaigns/home/decide", &decide_body("e1", other))
            .await;
        assert_eq!(s, 409, "{other:?}: {v}");
        assert_eq!(v["error"]["code"], "event_id_conflict", "{v}");
        assert_eq!(v["error"]["field"], "event_id", "{v}");
    }
    assert_eq!(server.stats("home").await["decisions"], 1);

    // Personalizer: the same, in its error shape.
    let k = key(&server, "decide", Some("home")).await;
    let body = |actions: &[&str]| {
        let actions: Vec<Value> = actions.iter().map(|a| json!({ "id": a })).collect();
        json!({"actions": actions, "eventId": "pz-1"})
    };
    let (s, v) = pz(&server, &k, "/rank", &body(&["a", "b"])).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = pz(&server, &k, "/rank", &body(&["a", "b"])).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = pz(&server, &k, "/rank", &body(&["a", "q"])).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "Conflict", "{v}");
    assert_eq!(v["error"]["innerError"]["code"], "event_id_conflict", "{v}");
}

#[tokio::test]
async fn a_schema1_store_is_migrated_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    items_campaign(&server, "home").await;
    items_campaign(&server, "page").await;
    let k = key(&server, "decide", Some("page")).await;
    let (s, old) = server
        .post("/v1/campaigns/home/decide", &decide_body(B64, &["a", "b"]))
        .await;
    assert_eq!(s, 200, "{old}");
    let (s, v) = pz(
        &server,
        &k,
        "/multislot/rank",
        &json!({
            "actions": [{"id": "salad"}, {"id": "sushi"}],
            "slots": [{"id": "main", "baselineAction": "salad"}],
            "eventId": "page-9",
            "deferActivation": true,
        }),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    server.stop();
    // Rewrite the store the way the build before per-campaign event ids laid it out.
    tailor_server::store::downgrade_to_schema1(dir.path()).unwrap();

    server.restart().await;
    // The old decisions are found under their campaign: a replay, a reward, an activation of a
    // multi-slot event whose slots still carry the old `{eventId}/{slotId}` ids.
    let (s, v) = server
        .post("/v1/campaigns/home/decide", &decide_body(B64, &["a", "b"]))
        .await;
    assert_eq!((s, v["replayed"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(v["actions"], old["actions"]);
    let (s, v) = server
        .post(
            &format!("/v1/events/{B64_PATH}/reward"),
            &json!({"value": 1.0}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("accepted")), "{v}");
    assert_eq!(rewards(&server.stats("home").await), 1);
    let (s, v) = pz(&server, &k, "/multislot/events/page-9/activate", &json!({})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = pz(
        &server,
        &k,
        "/multislot/events/page-9/reward",
        &json!({"reward": [{"slotId": "main", "value": 1.0}]}),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(rewards(&server.stats("page").await), 1);
    // New decisions follow the new rules: the old id is free in another campaign.
    let (s, v) = server
        .post("/v1/campaigns/page/decide", &decide_body(B64, &["x", "y"]))
        .await;
    assert_eq!((s, v["replayed"].as_bool()), (200, Some(false)), "{v}");
}
