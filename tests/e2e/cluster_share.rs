//! Issue 19, what replicas share besides the log: `If-Match` across replicas, API keys and the
//! audit trail, shopper deletion, send-time decisions and the Personalizer surface. Real
//! `nats-server -js` (temp dir, loopback) and real `tailor serve --cluster` replicas, as in
//! `cluster.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::Nats;
use crate::harness::{client_with, Server};
use crate::if_match::{assert_precondition_failed, get_tagged, write_tagged};

async fn replica(nats: &Nats, dir: &Path, name: &str) -> Server {
    Server::start_with_args(
        dir,
        &[("TAILOR__CLUSTER__NODE_ID", name)],
        &["--cluster", &nats.url()],
    )
    .await
}

/// Poll a condition (an expression that may `.await`) every 10 ms until it holds; panics after
/// 20 s. Evaluates to when it started polling (`.elapsed()`: how long it took).
macro_rules! until {
    ($what:expr, $cond:expr) => {{
        let started = Instant::now();
        while !$cond {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{}: not within 20 s",
                $what
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        started
    }};
}

async fn served(server: &Server, campaign: &str) {
    until!(
        format!("{campaign} on {}", server.base),
        server
            .get(&format!("/admin/v1/campaigns/{campaign}"))
            .await
            .0
            == 200
    );
}

async fn digests_agree(replicas: &[&Server], campaign: &str) -> Value {
    let started = Instant::now();
    loop {
        let mut ds = Vec::new();
        for r in replicas {
            let (s, d) = r
                .get(&format!("/admin/v1/campaigns/{campaign}/digest"))
                .await;
            assert_eq!(s, 200, "{d}");
            ds.push(d);
        }
        // `applied_seq` differs (clock ticks); the learned state and counts may not.
        if ds.iter().all(|d| {
            d["digest"] == ds[0]["digest"]
                && d["decisions"] == ds[0]["decisions"]
                && d["rewards"] == ds[0]["rewards"]
        }) {
            return ds[0].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "digests differ: {ds:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A config read on one replica and saved on another; a save based on the older read loses
/// with 412 on whichever replica, even before that replica applied the newer write.
#[tokio::test]
async fn if_match_across_replicas() {
    let nats = Nats::start();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = replica(&nats, dirs[0].path(), "a").await;
    let b = replica(&nats, dirs[1].path(), "b").await;
    a.create_campaign(json!({"id": "home", "policy": {"type": "thompson"}}))
        .await;
    served(&b, "home").await;

    let (_, mut config, tag) = get_tagged(&a, "home").await;
    let tag = tag.expect("ETag");
    assert!(
        tag.starts_with("\"r"),
        "cluster tags are bucket revisions: {tag}"
    );
    until!(
        "B has A's revision",
        get_tagged(&b, "home").await.2.as_deref() == Some(tag.as_str())
    );

    // Saved on B from A's read.
    config["exploration"] = json!(0.2);
    let (s, v, newer) = write_tagged(&b, "home", Some(&config), Some(&tag)).await;
    assert_eq!(s, 200, "{v}");
    let newer = newer.unwrap();
    assert_ne!(newer, tag);
    // A saves from the same, now older, read: refused, applied or not yet on A.
    let mut stale = config.clone();
    stale["exploration"] = json!(0.4);
    let (s, v, _) = write_tagged(&a, "home", Some(&stale), Some(&tag)).await;
    assert_eq!(s, 412, "{v}");
    assert_precondition_failed(&v);
    until!(
        "A applies B's save",
        get_tagged(&a, "home").await.1["exploration"] == 0.2
    );
    assert_eq!(
        get_tagged(&a, "home").await.2.as_deref(),
        Some(newer.as_str())
    );

    // Two editors on two replicas save from the same read at once: one wins, one gets 412.
    for round in 0..5 {
        let (_, base, tag) = get_tagged(&a, "home").await;
        let tag = tag.unwrap();
        until!(
            "B at A's revision",
            get_tagged(&b, "home").await.2.as_deref() == Some(tag.as_str())
        );
        let mut x = base.clone();
        x["exploration"] = json!(0.01 * f64::from(round + 1));
        let mut y = base.clone();
        y["exploration"] = json!(0.3);
        let (rx, ry) = tokio::join!(
            write_tagged(&a, "home", Some(&x), Some(&tag)),
            write_tagged(&b, "home", Some(&y), Some(&tag))
        );
        let mut statuses = [rx.0, ry.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 412], "{rx:?} {ry:?}");
    }
    // Without If-Match, today's behaviour: the replica's own compare-and-set.
    let (_, base, _) = get_tagged(&b, "home").await;
    let (s, v, _) = write_tagged(&b, "home", Some(&base), None).await;
    assert_eq!(s, 200, "{v}");

    // Deletion: refused from an older read, done from the current one, on every replica.
    let (s, v, _) = write_tagged(&a, "home", None, Some(&tag)).await;
    assert_eq!(s, 412, "{v}");
    let current = get_tagged(&b, "home").await.2.unwrap();
    until!(
        "A at B's revision",
        get_tagged(&a, "home").await.2.as_deref() == Some(current.as_str())
    );
    let (s, v, _) = write_tagged(&a, "home", None, Some(&current)).await;
    assert_eq!(s, 204, "{v}");
    until!("deleted on B", get_tagged(&b, "home").await.0 == 404);
}

async fn audit_trail(server: &Server) -> Vec<Value> {
    let (s, v) = server.get("/admin/v1/audit?limit=100").await;
    assert_eq!(s, 200, "{v}");
    v["entries"].as_array().unwrap().clone()
}

async fn whoami(server: &Server, key: &str) -> u16 {
    client_with(key)
        .get(server.url("/admin/v1/whoami"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A key created on one replica works on every replica; revoked on another, every replica
/// refuses it; audit entries written on any replica are listed on every replica, also after a
/// restart.
#[tokio::test]
async fn keys_and_audit_are_shared() {
    let nats = Nats::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = replica(&nats, dirs[0].path(), "a").await;
    let b = replica(&nats, dirs[1].path(), "b").await;
    let mut c = replica(&nats, dirs[2].path(), "c").await;

    let (s, created) = a
        .post("/admin/v1/keys", &json!({"role": "editor", "label": "ops"}))
        .await;
    assert_eq!(s, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(whoami(&a, &key).await, 200);
    for r in [&b, &c] {
        let lag = until!("the new key works", whoami(r, &key).await == 200).elapsed();
        eprintln!("key honoured by {} after {lag:?}", r.base);
    }
    // The new key works for changes on another replica: a campaign created with it on C.
    let (s, v) = client_with(&key)
        .post(c.url("/admin/v1/campaigns"))
        .json(&json!({"id": "home", "policy": {"type": "thompson"}}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(s, 201, "{:?}", v.text().await);

    // Revoked on B: refused everywhere.
    let status = b
        .client
        .delete(b.url(&format!("/admin/v1/keys/{id}")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 200);
    assert_eq!(whoami(&b, &key).await, 401);
    for r in [&a, &c] {
        let lag = until!("the revoked key is refused", whoami(r, &key).await == 401).elapsed();
        eprintln!("revocation honoured by {} after {lag:?}", r.base);
    }
    let (_, keys) = c.get("/admin/v1/keys").await;
    let listed = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .cloned()
        .expect("the key is listed on C");
    assert!(listed["revoked_ms"].is_u64(), "{listed}");
    assert!(listed.get("hash").is_none() && listed.get("key").is_none());

    // One audit trail: key.create (A), campaign.create (C, by the new key), key.revoke (B).
    let expected = [
        ("key.revoke", "b"),
        ("campaign.create", "c"),
        ("key.create", "a"),
    ];
    let mut reference = Vec::new();
    for r in [&a, &b, &c] {
        until!("every entry listed", audit_trail(r).await.len() >= 3);
        let entries = audit_trail(r).await;
        let got: Vec<(String, String)> = entries
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_string(),
                    e["replica"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(x, y)| (x.to_string(), y.to_string()))
            .collect();
        assert_eq!(got, want, "{entries:?}");
        assert_eq!(entries[1]["key_id"], id.as_str());
        if reference.is_empty() {
            reference = entries;
        } else {
            assert_eq!(
                entries, reference,
                "the same entries, the same seq, on every replica"
            );
        }
    }

    // C restarts: it resumes the audit mirror (nothing twice) and still honours the keys.
    c.kill9();
    c.restart().await;
    assert_eq!(audit_trail(&c).await, reference);
    assert_eq!(whoami(&c, &key).await, 401);
    let (s, v) = a.post("/admin/v1/keys", &json!({"role": "viewer"})).await;
    assert_eq!(s, 201, "{v}");
    let viewer = v["key"].as_str().unwrap().to_string();
    until!(
        "C takes a key created after its restart",
        whoami(&c, &viewer).await == 200
    );
    until!(
        "C lists the entry written after its restart",
        audit_trail(&c).await.len() == 4
    );
}

fn send_body(shopper: &str, event_id: Option<&str>) -> Value {
    let mut b = json!({"shopper_id": shopper, "timezone": "Europe/Madrid",
        "earliest": "2031-05-01T00:00:00Z"});
    if let Some(e) = event_id {
        b["event_id"] = json!(e);
    }
    b
}

async fn send(server: &Server, body: Value) -> (u16, Value) {
    server.post("/v1/campaigns/email/decide", &body).await
}

async fn shopper_of(server: &Server, shopper: &str) -> (u16, Value) {
    server.get(&format!("/admin/v1/shoppers/{shopper}")).await
}

/// What a replica holds about a shopper, without what depends on the time of asking
/// (`trials` decays with the clock).
async fn shopper_facts(server: &Server, shopper: &str) -> (u16, Vec<Value>) {
    let (s, v) = shopper_of(server, shopper).await;
    let facts = v["campaigns"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    json!([
                        c["campaign"],
                        c["last_send_at"],
                        c["last_seen_at"],
                        c["slots_learned"],
                        c["state_bytes"]
                    ])
                })
                .collect()
        })
        .unwrap_or_default();
    (s, facts)
}

/// Send-time decisions travel in the stream (the frequency cap, the send event and the
/// rewards are the same on every replica), and deleting a shopper reaches every replica and a
/// replica that replays the stream after a restart.
#[tokio::test]
async fn send_time_and_shopper_deletion_across_replicas() {
    let nats = Nats::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = replica(&nats, dirs[0].path(), "a").await;
    let mut b = replica(&nats, dirs[1].path(), "b").await;
    let c = replica(&nats, dirs[2].path(), "c").await;
    a.create_campaign(json!({
        "id": "email", "kind": "send_time", "slots": "hour_of_day",
        "reward_wait_seconds": 86400, "send_time": {"frequency_cap_hours": 48}
    }))
    .await;
    served(&b, "email").await;
    served(&c, "email").await;

    let (s, first) = send(&a, send_body("carol", Some("s-1"))).await;
    assert_eq!(s, 200, "{first}");
    // Every replica holds carol's state and applies her cap.
    for r in [&b, &c] {
        until!("carol's state", shopper_of(r, "carol").await.0 == 200);
    }
    let (s, v) = send(&b, send_body("carol", None)).await;
    assert_eq!(s, 429, "the cap claimed on A holds on B: {v}");
    // A retry of the event id on another replica gets the recorded send.
    let (s, again) = send(&c, send_body("carol", Some("s-1"))).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["send_at"], first["send_at"]);
    assert_eq!(again["replayed"], true);
    // Its reward on another replica learns everywhere.
    let (s, r) = c
        .post(
            "/v1/campaigns/email/events/s-1/reward",
            &json!({"value": 1.0}),
        )
        .await;
    assert_eq!((s, r["status"].clone()), (200, json!("accepted")), "{r}");
    let (s, dave) = send(&b, send_body("dave", None)).await;
    assert_eq!(s, 200, "{dave}");
    let digest = digests_agree(&[&a, &b, &c], "email").await;
    assert_eq!(digest["decisions"], 2, "{digest}");
    assert_eq!(digest["rewards"], 1, "{digest}");
    let on_a = shopper_facts(&a, "carol").await;
    for r in [&b, &c] {
        assert_eq!(shopper_facts(r, "carol").await, on_a);
    }
    let (_, carol) = shopper_of(&a, "carol").await;
    assert_eq!(carol["campaigns"][0]["slots_learned"], 1, "{carol}");

    // Deleted on C: gone on every replica, and her cap with it.
    let (s, v) = c
        .client
        .delete(c.url("/admin/v1/shoppers/carol"))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(s, 200);
    let v: Value = v.json().await.unwrap();
    assert_eq!(v["campaign_states"], 1, "{v}");
    for r in [&a, &b] {
        until!("carol deleted", shopper_of(r, "carol").await.0 == 404);
    }
    assert_eq!(shopper_of(&a, "dave").await.0, 200, "others stay");
    let (s, v) = send(&a, send_body("carol", Some("s-3"))).await;
    assert_eq!(s, 200, "no cap after the deletion: {v}");

    // B replays the stream after a restart: the deletion in its place, so carol's state is
    // only what followed it — the same as A's.
    b.kill9();
    b.restart().await;
    let on_a = shopper_facts(&a, "carol").await;
    assert_eq!(on_a.0, 200);
    assert_eq!(
        on_a.1[0][3], 0,
        "nothing learned about carol since: {on_a:?}"
    );
    until!("B replayed", shopper_facts(&b, "carol").await == on_a);
    assert_eq!(
        shopper_facts(&b, "dave").await,
        shopper_facts(&a, "dave").await
    );
    let digest = digests_agree(&[&a, &b, &c], "email").await;
    assert_eq!(digest["decisions"], 3, "{digest}");
}

async fn pz_call(http: &reqwest::Client, key: &str, url: String, body: Value) -> (u16, Value) {
    let r = http
        .post(url)
        .header("Ocp-Apim-Subscription-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (s, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The Personalizer-compatible surface in cluster mode: rank on one replica, reward and
/// activate on another; every replica learns the same.
#[tokio::test]
async fn personalizer_surface_across_replicas() {
    let nats = Nats::start();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = replica(&nats, dirs[0].path(), "a").await;
    let b = replica(&nats, dirs[1].path(), "b").await;
    a.create_campaign(json!({
        "id": "lunch",
        "policy": {"type": "epsilon_greedy", "epsilon": 0.1, "estimator": "ridge"},
        "featurizer": {"dimension": 64},
        "reward_wait_seconds": 600,
    }))
    .await;
    served(&b, "lunch").await;
    // Personalizer calls need a key scoped to the campaign: made on A, shared with B.
    let (s, v) = a
        .post(
            "/admin/v1/keys",
            &json!({"role": "decide", "campaign": "lunch"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let pz = |server: &Server, path: &str, body: Value| {
        pz_call(
            &http,
            &key,
            server.url(&format!("/personalizer/v1.0{path}")),
            body,
        )
    };
    let actions = json!([
        {"id": "pasta", "features": [{"cuisine": "italian"}]},
        {"id": "curry", "features": [{"cuisine": "indian"}]},
        {"id": "salad", "features": [{"cuisine": "any"}]},
    ]);
    let rank = |id: &str, defer: bool| json!({"actions": actions.clone(), "eventId": id, "deferActivation": defer});

    until!(
        "B honours the key",
        pz(&b, "/events/none/activate", json!({})).await.0 == 404
    );

    // Deferred on A; a reward on B before activation is taken but not learned.
    let (s, ranked) = pz(&a, "/rank", rank("p-1", true)).await;
    assert_eq!(s, 201, "{ranked}");
    let (s, again) = pz(&b, "/rank", rank("p-1", true)).await;
    assert_eq!(s, 201, "{again}");
    assert_eq!(
        again["rewardActionId"], ranked["rewardActionId"],
        "a retry on B gets A's rank"
    );
    let (s, v) = pz(&b, "/events/p-1/reward", json!({"value": 1})).await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(b.stats("lunch").await["rewards"], 0);
    // Activated on B, rewarded on A: learned on both.
    let (s, v) = pz(&b, "/events/p-1/activate", json!({})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = pz(&a, "/events/p-1/reward", json!({"value": 1})).await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = pz(&a, "/events/missing/activate", json!({})).await;
    assert_eq!(s, 404, "{v}");

    // Rounds alternating the replicas: salad is the one that pays.
    for i in 0..40 {
        let (ranker, rewarder) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let id = format!("q-{i}");
        let (s, r) = pz(ranker, "/rank", rank(&id, false)).await;
        assert_eq!(s, 201, "{r}");
        let value = if r["rewardActionId"] == "salad" { 1 } else { 0 };
        let path = format!("/events/{id}/reward");
        // Sent to the other replica at once: its read barrier waits until it applied the rank.
        let answer = pz(rewarder, &path, json!({ "value": value })).await;
        assert_eq!(answer.0, 204, "{id}: {}", answer.1);
    }
    let digest = digests_agree(&[&a, &b], "lunch").await;
    assert_eq!(digest["decisions"], 41, "{digest}");
    assert_eq!(digest["rewards"], 41, "{digest}");
    assert_eq!(a.stats("lunch").await, b.stats("lunch").await);

    // Model operations go through the stream: reset on B, the model exported before it
    // imported on A, the logs deleted on B — each the same on both replicas.
    use reqwest::Method;
    let (s, v) = a
        .post(
            "/admin/v1/keys",
            &json!({"role": "editor", "campaign": "lunch"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let editor = v["key"].as_str().unwrap().to_string();
    let admin = |method: Method, server: &Server, path: &str| {
        http.request(method, server.url(&format!("/personalizer/v1.0{path}")))
            .header("Ocp-Apim-Subscription-Key", editor.as_str())
    };
    until!(
        "B honours the editor key",
        admin(Method::GET, &b, "/model/properties")
            .send()
            .await
            .unwrap()
            .status()
            == 200
    );
    let r = admin(Method::GET, &a, "/model").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let model = r.bytes().await.unwrap();
    let r = admin(Method::DELETE, &b, "/model").send().await.unwrap();
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    let reset = digests_agree(&[&a, &b], "lunch").await;
    assert_ne!(reset["digest"], digest["digest"], "reset on both: {reset}");
    let r = admin(Method::PUT, &a, "/model")
        .body(model)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    let imported = digests_agree(&[&a, &b], "lunch").await;
    assert_ne!(
        imported["digest"], reset["digest"],
        "imported on both: {imported}"
    );
    // A file that is not a model is refused where it arrives, and changes nothing.
    let r = admin(Method::PUT, &b, "/model")
        .body("not a model")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        digests_agree(&[&a, &b], "lunch").await["digest"],
        imported["digest"]
    );
    let r = admin(Method::DELETE, &b, "/logs").send().await.unwrap();
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    for r in [&a, &b] {
        until!(format!("logs deleted on {}", r.base), {
            let v: Value = admin(Method::GET, r, "/logs/properties")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["dateRange"] == json!({})
        });
    }
}

/// Promotion boundaries pass on stream time in cluster mode: every replica resets the named
/// items at the same point of the stream (the digests agree afterwards) and records the
/// boundary in its audit trail, once.
#[tokio::test]
async fn promotion_boundaries_apply_on_every_replica() {
    use crate::variety::{first_slot, promotion_entries, start_launch_promotion, teach};
    let nats = Nats::start();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = replica(&nats, dirs[0].path(), "a").await;
    let b = replica(&nats, dirs[1].path(), "b").await;
    let mut campaign = json!({"id": "promo", "policy": {"type": "thompson"}});
    a.create_campaign(campaign.clone()).await;
    served(&b, "promo").await;
    teach(&a, "promo", "p0", 1.0, 20, "a").await;
    digests_agree(&[&a, &b], "promo").await;
    let (p0, _, p2) = first_slot(&b, "promo", "before").await;
    assert!(p0 > 0.9 && p2 < 0.1, "learned on A, served by B: {p0} {p2}");

    start_launch_promotion(&mut campaign);
    let (s, v) = b.put("/admin/v1/campaigns/promo", &campaign).await;
    assert_eq!(s, 200, "{v}");
    for r in [&a, &b] {
        until!(
            format!("the boundary on {}", r.base),
            !promotion_entries(r, "promo").await.is_empty()
        );
    }
    digests_agree(&[&a, &b], "promo").await;
    for (r, tag) in [(&a, "after-a"), (&b, "after-b")] {
        let (p0, _, p2) = first_slot(r, "promo", tag).await;
        assert_eq!(p0, p2, "p0 back at the prior on {}", r.base);
        let entries = promotion_entries(r, "promo").await;
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0]["action"], "promotion.start");
        assert_eq!(entries[0]["after"]["moved"][0]["states"], 1);
    }
}
