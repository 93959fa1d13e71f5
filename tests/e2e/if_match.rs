//! `ETag` / `If-Match` on campaign edits (issue 19): an edit based on an older read is refused
//! with 412 instead of silently replacing a newer config. Single-node here; across replicas in
//! `cluster_share.rs`.

use serde_json::{json, Value};

use crate::harness::Server;

/// `GET` a campaign: (status, config, ETag).
pub async fn get_tagged(server: &Server, id: &str) -> (u16, Value, Option<String>) {
    let r = server
        .client
        .get(server.url(&format!("/admin/v1/campaigns/{id}")))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    (status, r.json().await.unwrap_or(Value::Null), etag)
}

/// `PUT` (or `DELETE` when `body` is None) a campaign with an optional `If-Match`: (status,
/// body, ETag).
pub async fn write_tagged(
    server: &Server,
    id: &str,
    body: Option<&Value>,
    if_match: Option<&str>,
) -> (u16, Value, Option<String>) {
    let url = server.url(&format!("/admin/v1/campaigns/{id}"));
    let mut r = match body {
        Some(b) => server.client.put(url).json(b),
        None => server.client.delete(url),
    };
    if let Some(tag) = if_match {
        r = r.header("If-Match", tag);
    }
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        etag,
    )
}

pub fn assert_precondition_failed(v: &Value) {
    assert_eq!(v["error"]["code"], "precondition_failed", "{v}");
    assert_eq!(v["error"]["field"], "If-Match", "{v}");
}

#[tokio::test]
async fn stale_edits_are_refused_with_412_single_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    server
        .create_campaign(json!({"id": "home", "policy": {"type": "thompson"}}))
        .await;

    let (s, mut config, e1) = get_tagged(&server, "home").await;
    assert_eq!(s, 200);
    let e1 = e1.expect("GET answers an ETag");
    assert!(e1.starts_with('"') && e1.ends_with('"'), "{e1}");

    // A save based on the current version goes through and answers the new version.
    config["exploration"] = json!(0.2);
    let (s, saved, e2) = write_tagged(&server, "home", Some(&config), Some(&e1)).await;
    assert_eq!(s, 200, "{saved}");
    let e2 = e2.expect("PUT answers the new ETag");
    assert_ne!(e1, e2);
    assert_eq!(
        get_tagged(&server, "home").await.2.as_deref(),
        Some(e2.as_str())
    );

    // A save based on the older read is refused and changes nothing.
    let mut stale = config.clone();
    stale["exploration"] = json!(0.4);
    let (s, v, _) = write_tagged(&server, "home", Some(&stale), Some(&e1)).await;
    assert_eq!(s, 412, "{v}");
    assert_precondition_failed(&v);
    assert_eq!(get_tagged(&server, "home").await.1["exploration"], 0.2);
    // So is an If-Match that is not a quoted tag, or a weak one.
    let weak = format!("W/{e2}");
    for bad in ["nonsense", weak.as_str()] {
        let (s, v, _) = write_tagged(&server, "home", Some(&stale), Some(bad)).await;
        assert_eq!(s, 412, "{bad}: {v}");
    }
    // A list naming the current version, and `*`, pass; no If-Match is today's unconditional save.
    let list = format!("\"h0000\", {e2}");
    let (s, v, e3) = write_tagged(&server, "home", Some(&config), Some(&list)).await;
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = write_tagged(&server, "home", Some(&config), Some("*")).await;
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = write_tagged(&server, "home", Some(&stale), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(get_tagged(&server, "home").await.1["exploration"], 0.4);
    // Same content, same tag: the tag names the config, not the time it was saved.
    assert!(e3.is_some());

    // Two editors who read the same version save at once: exactly one wins.
    for round in 0..5 {
        let (_, base, tag) = get_tagged(&server, "home").await;
        let tag = tag.unwrap();
        let mut a = base.clone();
        a["exploration"] = json!(0.01 * f64::from(round + 1));
        let mut b = base.clone();
        // Distinct from every earlier save: a save that changes nothing keeps the tag.
        b["exploration"] = json!(0.3 + 0.01 * f64::from(round));
        let (x, y) = tokio::join!(
            write_tagged(&server, "home", Some(&a), Some(&tag)),
            write_tagged(&server, "home", Some(&b), Some(&tag))
        );
        let mut statuses = [x.0, y.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 412], "{x:?} {y:?}");
    }

    // A deletion based on an older read is refused; based on the current one it goes.
    let (s, v, _) = write_tagged(&server, "home", None, Some(&e1)).await;
    assert_eq!(s, 412, "{v}");
    assert_precondition_failed(&v);
    assert_eq!(get_tagged(&server, "home").await.0, 200);
    let current = get_tagged(&server, "home").await.2.unwrap();
    let (s, v, _) = write_tagged(&server, "home", None, Some(&current)).await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(get_tagged(&server, "home").await.0, 404);

    // The refused edits were not audited as changes: 1 create, 1 + 4 updates (three with a
    // passing If-Match or none, and one per concurrent pair), 1 delete.
    let (s, audit) = server.get("/admin/v1/audit?campaign=home&limit=100").await;
    assert_eq!(s, 200, "{audit}");
    let updates = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "campaign.update")
        .count();
    assert_eq!(updates, 4 + 5, "{audit}");

    // The API description names the header and the 412.
    let (_, api) = server.get("/openapi.json").await;
    let put = &api["paths"]["/admin/v1/campaigns/{id}"]["put"];
    assert!(
        put["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "If-Match" && p["in"] == "header"),
        "{put}"
    );
    assert!(put["responses"]["412"].is_object(), "{put}");
    let get = &api["paths"]["/admin/v1/campaigns/{id}"]["get"];
    assert!(
        get["responses"]["200"]["headers"]["ETag"].is_object(),
        "{get}"
    );
}
