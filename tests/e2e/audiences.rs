//! Issue 22 item 5: reports cut by an audience field of the context.

use serde_json::{json, Value};

use crate::harness::Server;

fn audience<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["audiences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["audience"] == name)
        .unwrap_or_else(|| panic!("no audience {name:?} in {report}"))
}

fn reward_sum(a: &Value) -> f64 {
    a["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["reward_sum"].as_f64().unwrap())
        .sum()
}

/// Shoppers of segment `vip` always convert, `new` never, and three `rare` ones fall below the
/// small-sample bar: each audience gets its own per-action results, lift and series, flagged
/// when small; the cut survives a restart and comes as CSV too.
#[tokio::test]
async fn reports_are_cut_by_audience_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]).await;
    let (s, v) = server
        .post(
            "/admin/v1/campaigns",
            &json!({"id": "bad", "audience_field": "seg ment"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["field"], "audience_field", "{v}");
    server
        .create_campaign(json!({
            "id": "aud", "policy": {"type": "thompson"}, "audience_field": "segment",
            "holdout": 0.3, "holdout_salt": "fixed-for-the-test",
        }))
        .await;
    let mut expected_vip = 0.0;
    for i in 0..303 {
        let segment = match i {
            0..=2 => Some("rare"),
            _ if i % 2 == 0 => Some("vip"),
            _ => Some("new"),
        };
        let mut context = json!({"hour": 12});
        if let Some(seg) = segment {
            context["segment"] = json!(seg);
        }
        let (s, d) = server
            .post(
                "/v1/campaigns/aud/decide",
                &json!({"event_id": format!("e{i}"), "shopper_id": format!("s{i}"),
                        "context": context,
                        "candidates": [{"id": "a"}, {"id": "b"}]}),
            )
            .await;
        assert_eq!(s, 200, "{d}");
        let value = if segment == Some("vip") { 1.0 } else { 0.0 };
        expected_vip += value;
        let (s, r) = server
            .post(
                &format!("/v1/campaigns/aud/events/e{i}/reward"),
                &json!({"value": value}),
            )
            .await;
        assert_eq!(s, 200, "{r}");
    }
    // One decision without the field at all.
    let (s, d) = server
        .post(
            "/v1/campaigns/aud/decide",
            &json!({"event_id": "bare", "candidates": [{"id": "a"}, {"id": "b"}]}),
        )
        .await;
    assert_eq!(s, 200, "{d}");

    let path = "/admin/v1/campaigns/aud/reports/audiences?bucket_seconds=3600";
    let (s, report) = server.get(path).await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["field"], "segment", "{report}");
    let vip = audience(&report, "vip");
    let new = audience(&report, "new");
    let rare = audience(&report, "rare");
    assert_eq!(vip["decisions"], 150, "{vip}");
    assert_eq!(new["decisions"], 150, "{new}");
    assert_eq!(rare["decisions"], 3, "{rare}");
    assert_eq!(audience(&report, "(none)")["decisions"], 1, "{report}");
    assert_eq!(reward_sum(vip), expected_vip, "{vip}");
    assert_eq!(reward_sum(new), 0.0, "{new}");
    assert_eq!(rare["small_sample"], true, "{rare}");
    assert_eq!(vip["small_sample"], false, "{vip}");
    // Lift per audience: vip's personalized and holdout arms both convert every time.
    for arm in ["personalized", "holdout"] {
        let a = &vip["lift"][arm];
        assert!(a["decisions"].as_u64().unwrap() >= 30, "{vip}");
        assert_eq!(a["reward_sum"].as_f64(), a["decisions"].as_f64(), "{vip}");
        assert_eq!(new["lift"][arm]["reward_sum"], 0.0, "{new}");
    }

    let (s, e) = server
        .get("/admin/v1/campaigns/aud/reports/audiences?bucket_seconds=60")
        .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["field"], "bucket_seconds", "{e}");
    let (s, csv) = server.get_text(&format!("{path}&format=csv")).await;
    assert_eq!(s, 200, "{csv}");
    assert!(csv.contains("vip") && csv.contains("rare"), "{csv}");

    server.stop();
    server.restart().await;
    let (s, again) = server.get(path).await;
    assert_eq!(s, 200, "{again}");
    for name in ["vip", "new", "rare", "(none)"] {
        let (a, b) = (audience(&report, name), audience(&again, name));
        assert_eq!(a["decisions"], b["decisions"], "{name}");
        assert_eq!(reward_sum(a), reward_sum(b), "{name}");
    }
}
