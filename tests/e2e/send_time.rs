//! Issue 7 (send-time optimization) through the real server: time zones and DST, learning per
//! shopper from rewards joined by event id, quiet hours, the frequency cap, erasing a shopper,
//! and persistence across `kill -9`.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde_json::{json, Value};
use tailor_server::campaign::DEFAULT_MAX_SHOPPER_SLOTS;

use crate::harness::Server;
use crate::plugins::install;

fn campaign(id: &str, extra: Value) -> Value {
    let mut c = json!({
        "id": id,
        "kind": "send_time",
        "slots": "hour_of_day",
        "reward_wait_seconds": 86400,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

async fn decide(server: &Server, campaign: &str, body: Value) -> (u16, Value) {
    server
        .post(&format!("/v1/campaigns/{campaign}/decide"), &body)
        .await
}

async fn reward(server: &Server, event: &str, value: f64) {
    let (s, v) = server
        .post(
            &format!("/v1/events/{event}/reward"),
            &json!({ "value": value }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

/// `(hours, minutes)` of a `±HH:MM` suffix.
fn offset_minutes(local: &str) -> i64 {
    let tail = &local[local.len() - 6..];
    let sign = if tail.starts_with('-') { -1 } else { 1 };
    let h: i64 = tail[1..3].parse().unwrap();
    let m: i64 = tail[4..6].parse().unwrap();
    sign * (h * 60 + m)
}

/// Minutes since midnight of an RFC 3339 time's clock part.
fn clock_minutes(t: &str) -> i64 {
    let clock = &t[11..16];
    clock[..2].parse::<i64>().unwrap() * 60 + clock[3..].parse::<i64>().unwrap()
}

/// The response's local time and UTC `send_at` agree through the reported offset, and the slot's
/// local hour is the one the local time shows.
fn check_consistent(d: &Value) {
    let local = d["slot"]["local_time"].as_str().unwrap();
    let utc = d["send_at"].as_str().unwrap();
    assert!(utc.ends_with('Z'), "{d}");
    let diff = (clock_minutes(local) - clock_minutes(utc) - offset_minutes(local)).rem_euclid(1440);
    assert_eq!(diff, 0, "local time and send_at disagree: {d}");
    assert_eq!(
        d["slot"]["local_hour"].as_i64().unwrap(),
        clock_minutes(local) / 60,
        "{d}"
    );
}

#[tokio::test]
async fn send_time_decides_in_the_shoppers_zone_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;

    // Config validation names the field.
    for (body, field) in [
        (json!({"id": "x", "kind": "send_time"}), "slots"),
        (
            json!({"id": "x", "kind": "send_time", "slots": [{"id": "lunch", "start": "25:00"}]}),
            "slots[0].start",
        ),
        (
            json!({"id": "x", "kind": "send_time", "slots": [{"id": "a", "start": "09:00", "days": ["someday"]}]}),
            "slots[0].days[0]",
        ),
        (
            json!({"id": "x", "kind": "send_time", "slots": "hour_of_day", "send_time": {"prior_strength": -1}}),
            "send_time.prior_strength",
        ),
        (
            json!({"id": "x", "kind": "send_time", "slots": "hour_of_day", "send_time": {"frequency_cap_hours": -1}}),
            "send_time.frequency_cap_hours",
        ),
        (
            json!({"id": "x", "kind": "send_time", "slots": "hour_of_day", "send_time": {"max_shopper_slots": 0}}),
            "send_time.max_shopper_slots",
        ),
        (
            json!({"id": "x", "kind": "send_time", "slots": "hour_of_week", "send_time": {"max_shopper_slots": 169}}),
            "send_time.max_shopper_slots",
        ),
        (
            json!({"id": "x", "slots": "hour_of_day", "policy": {"type": "thompson"}}),
            "slots",
        ),
    ] {
        let (s, v) = server.post("/admin/v1/campaigns", &body).await;
        assert_eq!(s, 400, "{body} -> {v}");
        assert_eq!(v["error"]["field"], field, "{body} -> {v}");
    }

    server
        .create_campaign(campaign(
            "email",
            json!({"send_time": {"min_lead_minutes": 30}}),
        ))
        .await;
    let (s, d) = decide(
        &server,
        "email",
        json!({"shopper_id": "ann", "timezone": "America/New_York", "earliest": "2030-06-01T12:00:00Z"}),
    )
    .await;
    assert_eq!(s, 200, "{d}");
    check_consistent(&d);
    assert!(
        d["send_at"].as_str().unwrap() >= "2030-06-01T12:30:00Z",
        "lead time: {d}"
    );
    assert!(
        d["send_at"].as_str().unwrap() < "2030-06-02T12:30:00Z",
        "{d}"
    );
    assert!(
        d["slot"]["local_time"]
            .as_str()
            .unwrap()
            .ends_with("-04:00"),
        "EDT: {d}"
    );
    let p = d["probability"].as_f64().unwrap();
    assert!(p > 0.0 && p <= 1.0, "{d}");
    // Before any learning every slot is alike: exactly 1/24.
    assert!((p - 1.0 / 24.0).abs() < 1e-9, "{d}");

    // A retried event id gets the recorded decision back.
    let (s, again) = decide(
        &server,
        "email",
        json!({"shopper_id": "ann", "timezone": "America/New_York", "event_id": d["event_id"]}),
    )
    .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["send_at"], d["send_at"]);
    assert_eq!(again["replayed"], true);

    // Winter in Paris: +01:00.
    let (s, w) = decide(
        &server,
        "email",
        json!({"shopper_id": "bob", "timezone": "Europe/Paris", "earliest": "2030-01-15T08:00:00+01:00"}),
    )
    .await;
    assert_eq!(s, 200, "{w}");
    check_consistent(&w);
    assert!(
        w["slot"]["local_time"]
            .as_str()
            .unwrap()
            .ends_with("+01:00"),
        "{w}"
    );

    // Request errors name the field.
    for (body, field) in [
        (
            json!({"shopper_id": "ann", "timezone": "Mars/Base"}),
            "timezone",
        ),
        (json!({"shopper_id": "ann"}), "timezone"),
        (json!({"timezone": "UTC"}), "shopper_id"),
        (json!({"shopper_id": "", "timezone": "UTC"}), "shopper_id"),
        (
            json!({"shopper_id": "ann", "timezone": "UTC", "earliest": "tomorrow"}),
            "earliest",
        ),
        (
            json!({"shopper_id": "ann", "timezone": "UTC", "context": [1]}),
            "context",
        ),
        (json!({"candidates": [{"id": "a"}]}), "candidates"),
    ] {
        let (s, v) = decide(&server, "email", body.clone()).await;
        assert_eq!(s, 400, "{body} -> {v}");
        assert_eq!(v["error"]["field"], field, "{body} -> {v}");
    }
}

#[tokio::test]
async fn each_shopper_learns_their_own_hour_and_it_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    server
        .create_campaign(campaign(
            "push",
            json!({"send_time": {"prior_strength": 4}}),
        ))
        .await;
    let favourite = [("night-owl", 22), ("early-bird", 6)];
    let mut rng = Pcg64Mcg::seed_from_u64(7);
    for round in 0..150 {
        for (shopper, fav) in favourite {
            let (s, d) = decide(
                &server,
                "push",
                json!({"shopper_id": shopper, "timezone": "Asia/Tokyo", "event_id": format!("{shopper}-{round}")}),
            )
            .await;
            assert_eq!(s, 200, "{d}");
            let hour = d["slot"]["local_hour"].as_i64().unwrap();
            // Opens mostly at the favourite hour, rarely otherwise.
            let p = if hour == fav { 0.9 } else { 0.05 };
            let value = if rng.gen::<f64>() < p { 1.0 } else { 0.0 };
            reward(&server, d["event_id"].as_str().unwrap(), value).await;
        }
    }
    let greedy =
        |shopper: &str| json!({"shopper_id": shopper, "timezone": "Asia/Tokyo", "explore": false});
    for (shopper, fav) in favourite {
        let (s, d) = decide(&server, "push", greedy(shopper)).await;
        assert_eq!(s, 200, "{d}");
        assert_eq!(d["slot"]["local_hour"], fav, "{shopper}: {d}");
    }
    let (s, newcomer) = decide(&server, "push", greedy("newcomer")).await;
    assert_eq!(s, 200);
    let population_pick = newcomer["slot"]["id"].clone();
    assert!(
        population_pick == "h22" || population_pick == "h06",
        "a new shopper gets one of the population's best hours: {newcomer}"
    );
    let (s, info) = server.get("/admin/v1/shoppers/night-owl").await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["campaigns"][0]["campaign"], "push");
    // 150 sends; the slots beyond the default bound went with their trials.
    assert!(
        info["campaigns"][0]["trials"].as_f64().unwrap() > 60.0,
        "{info}"
    );
    assert!(
        info["campaigns"][0]["slots_learned"].as_u64().unwrap() <= DEFAULT_MAX_SHOPPER_SLOTS as u64,
        "{info}"
    );
    assert!(
        info["campaigns"][0]["state_bytes"].as_u64().unwrap() <= 1536,
        "{info}"
    );

    // Reports: best slots, concentration of learned preferences, reward rate by slot.
    let (s, best) = server
        .get("/admin/v1/campaigns/push/reports/best-slots?top=2")
        .await;
    assert_eq!(s, 200, "{best}");
    let top: Vec<&str> = best["segments"][0]["best"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["slot"].as_str().unwrap())
        .collect();
    assert!(top.contains(&"h22") && top.contains(&"h06"), "{best}");
    let (s, conc) = server
        .get("/admin/v1/campaigns/push/reports/concentration?min_trials=10")
        .await;
    assert_eq!(s, 200, "{conc}");
    assert_eq!(conc["shoppers_reported"], 2, "{conc}");
    // One of the two loves the other hour than the population's best.
    assert_eq!(conc["share_best_differs_from_population"], 0.5, "{conc}");
    let entropy = conc["mean_normalized_entropy"].as_f64().unwrap();
    assert!(entropy > 0.0 && entropy < 1.0, "{conc}");
    let (s, rates) = server
        .get("/admin/v1/campaigns/push/reports/slot-rates")
        .await;
    assert_eq!(s, 200, "{rates}");
    let h22 = &rates["slots"][22];
    assert_eq!(h22["slot"], "h22");
    assert!(h22["reward_rate"].as_f64().unwrap() > 0.6, "{h22}");
    assert!(h22["sends"].as_u64().unwrap() > 50, "{h22}");
    let (s, v) = server
        .get("/admin/v1/campaigns/push/reports/best-slots?top=0")
        .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("top")), "{v}");

    // kill -9 right after acknowledged rewards: learning is replayed or was persisted.
    server.kill9();
    server.restart().await;
    for (shopper, fav) in favourite {
        let (s, d) = decide(&server, "push", greedy(shopper)).await;
        assert_eq!(s, 200, "{d}");
        assert_eq!(
            d["slot"]["local_hour"], fav,
            "after restart, {shopper}: {d}"
        );
    }
    let (_, again) = decide(&server, "push", greedy("newcomer-2")).await;
    assert_eq!(
        again["slot"]["id"], population_pick,
        "population after restart: {again}"
    );
}

#[tokio::test]
async fn quiet_hours_are_never_violated_in_local_time() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    install(&plugins, &["quiet-hours"]);
    let server = Server::start_with_args(
        &dir.path().join("data"),
        &[],
        &["--plugin-dir", plugins.to_str().unwrap()],
    )
    .await;
    server
        .create_campaign(campaign(
            "quiet",
            json!({
                "slots": "hour_of_week",
                "plugins": [{"name": "quiet-hours", "config": {"start": 21, "end": 8}}],
                "send_time": {"min_lead_minutes": 17}
            }),
        ))
        .await;
    let zones = [
        "America/New_York",
        "Europe/London",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "Pacific/Chatham",
        "America/Santiago",
        "UTC",
    ];
    // Instants around the 2026 DST changes and random ones over a year.
    let mut earliest = vec![
        "2026-03-08T06:30:00Z",
        "2026-03-29T00:30:00Z",
        "2026-10-25T00:30:00Z",
        "2026-11-01T05:30:00Z",
        "2026-04-05T15:00:00Z",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    let mut rng = Pcg64Mcg::seed_from_u64(11);
    for _ in 0..20 {
        let day = rng.gen_range(1..=28);
        let month = rng.gen_range(1..=12);
        let hour = rng.gen_range(0..24);
        earliest.push(format!("2027-{month:02}-{day:02}T{hour:02}:17:00Z"));
    }
    let mut n = 0;
    for (i, at) in earliest.iter().enumerate() {
        for (z, zone) in zones.iter().enumerate() {
            let (s, d) = decide(
                &server,
                "quiet",
                json!({"shopper_id": format!("s{i}-{z}"), "timezone": zone, "earliest": at}),
            )
            .await;
            assert_eq!(s, 200, "{d}");
            check_consistent(&d);
            let h = d["slot"]["local_hour"].as_i64().unwrap();
            assert!(
                (8..21).contains(&h),
                "quiet hours violated: {zone} {at} -> {d}"
            );
            assert!(d["send_at"].as_str().unwrap() > at.as_str(), "{d}");
            n += 1;
        }
    }
    assert_eq!(n, earliest.len() * zones.len());
    // A shopper's own window (context) replaces the configured one.
    for k in 0..30 {
        let (s, d) = decide(
            &server,
            "quiet",
            json!({"shopper_id": format!("own-{k}"), "timezone": "Europe/Berlin",
                   "context": {"quiet_start": 10, "quiet_end": 18}}),
        )
        .await;
        assert_eq!(s, 200, "{d}");
        let h = d["slot"]["local_hour"].as_i64().unwrap();
        assert!(!(10..18).contains(&h), "{d}");
    }
    // Every slot quiet: a 400 naming the slots.
    server
        .create_campaign(campaign(
            "late-only",
            json!({
                "slots": [{"id": "late", "start": "23:00"}, {"id": "dawn", "start": "05:30"}],
                "plugins": [{"name": "quiet-hours", "config": {"start": 21, "end": 8}}]
            }),
        ))
        .await;
    let (s, v) = decide(
        &server,
        "late-only",
        json!({"shopper_id": "never", "timezone": "UTC"}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["field"], "slots", "{v}");
}

#[tokio::test]
async fn frequency_cap_allows_one_send_per_window() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    server
        .create_campaign(campaign(
            "capped",
            json!({"send_time": {"frequency_cap_hours": 48}}),
        ))
        .await;
    let body =
        |at: &str| json!({"shopper_id": "carol", "timezone": "Europe/Madrid", "earliest": at});
    let (s, first) = decide(&server, "capped", body("2031-05-01T00:00:00Z")).await;
    assert_eq!(s, 200, "{first}");
    let (s, v) = decide(&server, "capped", body("2031-05-01T00:00:00Z")).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["code"], "frequency_capped");
    assert_eq!(v["error"]["field"], "earliest");
    let msg = v["error"]["message"].as_str().unwrap();
    let next = msg
        .split("go out at ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(next > first["send_at"].as_str().unwrap(), "{msg}");
    // Another shopper is not capped.
    let (s, _) = decide(
        &server,
        "capped",
        json!({"shopper_id": "dave", "timezone": "Europe/Madrid", "earliest": "2031-05-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(s, 200);
    // Asking from the next allowed time works, and keeps the 48 h spacing.
    let (s, second) = decide(&server, "capped", body(next)).await;
    assert_eq!(s, 200, "{second}");
    assert!(second["send_at"].as_str().unwrap() >= next, "{second}");
}

#[tokio::test]
async fn a_shoppers_state_keeps_at_most_max_shopper_slots() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    server
        .create_campaign(campaign(
            "bounded",
            json!({"send_time": {"max_shopper_slots": 3}}),
        ))
        .await;
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (s, d) = decide(
            &server,
            "bounded",
            json!({"shopper_id": "fay", "timezone": "Europe/Paris"}),
        )
        .await;
        assert_eq!(s, 200, "{d}");
        served.insert(d["slot"]["id"].as_str().unwrap().to_string());
        reward(&server, d["event_id"].as_str().unwrap(), 0.0).await;
    }
    assert!(served.len() > 3, "explored only {served:?}");
    let (s, info) = server.get("/admin/v1/shoppers/fay").await;
    assert_eq!(s, 200, "{info}");
    let learned = &info["campaigns"][0];
    assert_eq!(learned["campaign"], "bounded", "{info}");
    assert_eq!(learned["slots_learned"], 3, "{info}");
}

#[tokio::test]
async fn deleting_a_shopper_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    for id in ["a", "b"] {
        server.create_campaign(campaign(id, json!({}))).await;
    }
    let shopper = "erase-me-7f3a";
    let mut events = Vec::new();
    for c in ["a", "b"] {
        for _ in 0..3 {
            let (s, d) = decide(
                &server,
                c,
                json!({"shopper_id": shopper, "timezone": "Asia/Tokyo", "context": {"segment": "vip"}}),
            )
            .await;
            assert_eq!(s, 200, "{d}");
            events.push(d["event_id"].as_str().unwrap().to_string());
        }
    }
    reward(&server, &events[0], 1.0).await;
    // An items campaign logs raw requests, which name the shopper (and another one, who stays).
    server
        .create_campaign(
            json!({"id": "recs", "policy": {"type": "thompson"}, "log_requests": true}),
        )
        .await;
    let other = "keep-me-51c2";
    for (i, who) in [shopper, other, shopper].into_iter().enumerate() {
        let (s, d) = server
            .post(
                "/v1/campaigns/recs/decide",
                &json!({"candidates": [{"id": "x"}, {"id": "y"}], "shopper_id": who,
                        "context": {"device": "web"}, "event_id": format!("recs-{i}")}),
            )
            .await;
        assert_eq!(s, 200, "{d}");
    }
    let (s, info) = server.get(&format!("/admin/v1/shoppers/{shopper}")).await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["campaigns"].as_array().unwrap().len(), 2);

    // Deleting needs an editor key.
    let viewer = crate::harness::client_with("nope");
    let r = viewer
        .delete(server.url(&format!("/admin/v1/shoppers/{shopper}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    assert_eq!(
        server
            .delete(&format!("/admin/v1/shoppers/{shopper}"))
            .await,
        200
    );
    // Idempotent.
    assert_eq!(
        server
            .delete(&format!("/admin/v1/shoppers/{shopper}"))
            .await,
        200
    );
    let (s, v) = server.get(&format!("/admin/v1/shoppers/{shopper}")).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], "shopper_not_found");
    // A late reward for an old send still joins (population learning) but brings nothing back.
    reward(&server, &events[1], 1.0).await;
    let (s, _) = server.get(&format!("/admin/v1/shoppers/{shopper}")).await;
    assert_eq!(s, 404);
    // The audit log has the deletion, without the shopper id.
    let (s, audit) = server.get("/admin/v1/audit").await;
    assert_eq!(s, 200, "{audit}");
    let text = audit.to_string();
    assert!(text.contains("shopper.delete"), "{text}");
    assert!(!text.contains(shopper), "{text}");

    // Nothing in any tree of the store or any decision log file mentions the shopper; the
    // other shopper's logged request is untouched.
    server.stop();
    let db = tailor_server::store::sled_config(dir.path(), false)
        .open()
        .unwrap();
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    for name in db.tree_names() {
        for kv in db.open_tree(&name).unwrap().iter() {
            let (k, v) = kv.unwrap();
            let name = format!("tree {:?}", String::from_utf8_lossy(&name));
            blobs.push((name.clone(), k.to_vec()));
            blobs.push((name, v.to_vec()));
        }
    }
    let mut dirs = vec![dir.path().join("logs")];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                blobs.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    let mentions = |blob: &[u8], id: &str| blob.windows(id.len()).any(|w| w == id.as_bytes());
    assert!(
        blobs.iter().any(|(_, b)| mentions(b, other)),
        "the other shopper's logged request was scrubbed too"
    );
    for (place, blob) in &blobs {
        assert!(
            !mentions(blob, shopper),
            "{place} still holds the shopper id"
        );
    }
    drop(db);
    server.restart().await;
    let (s, _) = server.get(&format!("/admin/v1/shoppers/{shopper}")).await;
    assert_eq!(s, 404);
}
