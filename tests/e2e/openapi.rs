//! The OpenAPI document at `/openapi.json` lists every route the server registers, and bad query
//! parameters get the JSON error shape naming the parameter.

use serde_json::Value;

use crate::harness::Server;

/// Every `/v1` and `/admin/v1` route (method, path) the server registers. A route added without
/// an OpenAPI annotation fails this test once it is added here; one removed from the server but
/// left in the document fails it too (the request below would 404).
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/campaigns/{campaign}/decide"),
    ("post", "/v1/events/{event_id}/reward"),
    ("post", "/v1/campaigns/{campaign}/events/{event_id}/reward"),
    ("post", "/v1/rewards"),
    ("post", "/v1/events/{event_id}/adjust"),
    ("post", "/v1/campaigns/{campaign}/events/{event_id}/adjust"),
    ("post", "/admin/v1/campaigns"),
    ("get", "/admin/v1/campaigns"),
    ("get", "/admin/v1/campaigns/{id}"),
    ("put", "/admin/v1/campaigns/{id}"),
    ("delete", "/admin/v1/campaigns/{id}"),
    ("get", "/admin/v1/campaigns/{id}/stats"),
    ("post", "/admin/v1/campaigns/{id}/validate"),
    ("post", "/admin/v1/campaigns/{id}/preview"),
    (
        "get",
        "/admin/v1/campaigns/{id}/decisions/{event_id}/explain",
    ),
    ("get", "/admin/v1/campaigns/{id}/digest"),
    ("post", "/admin/v1/campaigns/{id}/pause"),
    ("post", "/admin/v1/campaigns/{id}/resume"),
    ("put", "/admin/v1/campaigns/{id}/holdout"),
    ("put", "/admin/v1/campaigns/{id}/policy"),
    ("get", "/admin/v1/campaigns/{id}/reports/actions"),
    ("get", "/admin/v1/campaigns/{id}/reports/lift"),
    ("get", "/admin/v1/campaigns/{id}/reports/audiences"),
    ("get", "/admin/v1/campaigns/{id}/reports/hidden-gems"),
    ("get", "/admin/v1/campaigns/{id}/reports/affinity"),
    ("get", "/admin/v1/campaigns/{id}/reports/policies"),
    ("get", "/admin/v1/campaigns/{id}/reports/policy-values"),
    ("post", "/admin/v1/campaigns/{id}/evaluations"),
    ("get", "/admin/v1/campaigns/{id}/evaluations"),
    ("get", "/admin/v1/campaigns/{id}/evaluations/{eval}"),
    ("post", "/admin/v1/campaigns/{id}/evaluations/{eval}/apply"),
    ("get", "/admin/v1/campaigns/{id}/shadow"),
    ("get", "/admin/v1/campaigns/{id}/autopilot"),
    ("get", "/admin/v1/campaigns/{id}/log"),
    ("get", "/admin/v1/keys"),
    ("post", "/admin/v1/keys"),
    ("delete", "/admin/v1/keys/{id}"),
    ("get", "/admin/v1/whoami"),
    ("get", "/admin/v1/audit"),
    ("get", "/admin/v1/campaigns/{id}/reports/best-slots"),
    ("get", "/admin/v1/campaigns/{id}/reports/concentration"),
    ("get", "/admin/v1/campaigns/{id}/reports/slot-rates"),
    ("get", "/admin/v1/shoppers/{id}"),
    ("delete", "/admin/v1/shoppers/{id}"),
    ("get", "/admin/v1/plugins"),
    ("post", "/admin/v1/plugins/reload"),
];

#[tokio::test]
async fn openapi_document_lists_every_route_with_bearer_security() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    // Open like the dashboard page: no key needed.
    let r = reqwest::get(server.url("/openapi.json")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = serde_json::from_str(&r.text().await.unwrap()).expect("valid JSON");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["type"],
        "http"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));

    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), p.clone()))
        })
        .filter(|(_, p)| p.starts_with("/v1/") || p.starts_with("/admin/"))
        .collect();
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    expected.sort();
    assert_eq!(
        documented, expected,
        "documented routes vs the server's routes"
    );

    // Every listed route exists on the server: a request with placeholders filled in is not the
    // JSON 404 `not_found` of an unknown route (it may be a 404 of an unknown campaign).
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{campaign}", "nope")
            .replace("{event_id}", "nope")
            .replace("{id}", "nope")
            .replace("{eval}", "nope");
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = server
            .client
            .request(m, server.url(&concrete))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            !(status == 404 && body["error"]["code"] == "not_found"),
            "{method} {path} is documented but not routed"
        );
    }

    // Operations carry request and response schemas, and every $ref resolves.
    let decide = &paths["/v1/campaigns/{campaign}/decide"]["post"];
    assert!(
        decide["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap()
            .ends_with("/DecideRequest")
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "unresolved $ref {name}");
    }
    // Open routes declare no security.
    assert_eq!(
        paths["/healthz"]["get"]["security"],
        serde_json::json!([{}])
    );

    // The interactive page is served too.
    let (status, html) = server.get_text("/docs").await;
    assert_eq!(status, 200);
    assert!(html.contains("/openapi.json"));
}

/// Bad query parameters: 400 with the JSON error shape naming the parameter, on every handler
/// that reads a query string.
#[tokio::test]
async fn bad_query_parameters_are_json_errors_naming_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    server
        .create_campaign(serde_json::json!({"id": "home", "policy": {"type": "thompson"}}))
        .await;
    let cases = [
        ("/admin/v1/audit?limit=abc", "limit"),
        ("/admin/v1/audit?limit=-3", "limit"),
        ("/admin/v1/audit?limit=0", "limit"),
        ("/admin/v1/audit?bogus=1", "bogus"),
        (
            "/admin/v1/campaigns/home/reports/lift?bucket_seconds=day",
            "bucket_seconds",
        ),
        (
            "/admin/v1/campaigns/home/reports/hidden-gems?max_share=lots",
            "max_share",
        ),
        (
            "/admin/v1/campaigns/home/reports/affinity?min_exposures=x",
            "min_exposures",
        ),
        ("/admin/v1/campaigns/home/reports/actions?extra=1", "extra"),
        (
            "/admin/v1/campaigns/home/shadow?from_ms=yesterday",
            "from_ms",
        ),
        ("/admin/v1/campaigns/home/log?to_ms=1.5", "to_ms"),
        (
            "/admin/v1/campaigns/home/reports/best-slots?top=many",
            "top",
        ),
        (
            "/admin/v1/campaigns/home/reports/concentration?min_trials=x",
            "min_trials",
        ),
        (
            "/admin/v1/campaigns/home/reports/concentration?bogus=1",
            "bogus",
        ),
    ];
    for (path, field) in cases {
        let r = server.client.get(server.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["error"]["field"], field, "{path}: {v}");
        assert_eq!(v["error"]["code"], "invalid_field", "{path}: {v}");
    }
    // Good parameters still work.
    let (status, v) = server.get("/admin/v1/audit?limit=5&campaign=home").await;
    assert_eq!(status, 200, "{v}");
}

/// Every `/v1` and `/admin/v1` path registered in `server/src/api` (in a `configure`) is in
/// the document, so a route added without an OpenAPI annotation fails here, naming it.
#[test]
fn every_registered_route_path_is_documented() {
    let api = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src/api");
    let mut files = vec![api];
    let mut registered = std::collections::BTreeSet::new();
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if p.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        // Routes are registered in each module's `configure` (through `auth::Routes`): every
        // path literal inside one is a registered route.
        let mut in_configure = false;
        for line in text.lines() {
            if line.starts_with("pub fn configure") {
                in_configure = true;
            } else if line == "}" {
                in_configure = false;
            }
            if !in_configure {
                continue;
            }
            for prefix in ["\"/v1/", "\"/admin/v1"] {
                if let Some(at) = line.find(prefix) {
                    let rest = &line[at + 1..];
                    registered.insert(rest[..rest.find('"').unwrap()].to_string());
                }
            }
        }
    }
    assert!(registered.len() >= 20, "found only {registered:?}");
    let documented: std::collections::BTreeSet<String> =
        ROUTES.iter().map(|(_, p)| p.to_string()).collect();
    let missing: Vec<&String> = registered.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes without OpenAPI documentation: {missing:?}. Annotate the handler with \
         #[utoipa::path(...)], list it in ApiDoc's paths (server/src/api/openapi.rs) and in \
         ROUTES here"
    );
    let stale: Vec<&String> = documented.difference(&registered).collect();
    assert!(stale.is_empty(), "documented but not registered: {stale:?}");
}
