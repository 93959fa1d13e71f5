//! Issue 17: the standing adversarial suite's authorization part. Every route of
//! `/openapi.json` × path spellings × callers that may not use it must end in 401 or 403 (or the
//! router's own 404/405: the spelling names no route), never in a handler's answer.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{Server, ADMIN_KEY};

/// One raw HTTP/1.1 request with the path exactly as given (no client-side normalization of
/// dot segments, slashes or escapes). Returns the status and the body.
fn raw(addr: &str, method: &str, path: &str, key: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = "{}";
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(k) = key {
        head.push_str(&format!(
            "Authorization: Bearer {k}\r\nOcp-Apim-Subscription-Key: {k}\r\n"
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    // Read the head and then Content-Length bytes: waiting for the close would wait out the
    // server's linger on a connection whose request body it never read.
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if body.len() >= length {
                break;
            }
        }
        if n == 0 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Percent-encode every ASCII letter of `s` (`admin` → `%61%64%6D%69%6E`), in `upper` or lower
/// hex.
fn encode_letters(s: &str, upper: bool) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                if upper {
                    format!("%{:02X}", c as u8)
                } else {
                    format!("%{:02x}", c as u8)
                }
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The spellings of `path` an attacker tries.
fn spellings(path: &str) -> Vec<String> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let first = segs[0];
    let rest = segs[1..].join("/");
    let tail = if rest.is_empty() {
        String::new()
    } else {
        format!("/{rest}")
    };
    let mut out = vec![
        path.to_string(),
        // The first letter of the first segment encoded: `/%61dmin/...`.
        format!("/%{:02x}{}{tail}", first.as_bytes()[0], &first[1..]),
        // Every letter of the first segment, lower and upper hex.
        format!("/{}{tail}", encode_letters(first, false)),
        format!("/{}{tail}", encode_letters(first, true)),
        // Every letter of every segment but parameters' values.
        format!(
            "/{}",
            segs.iter()
                .map(|s| encode_letters(s, false))
                .collect::<Vec<_>>()
                .join("/")
        ),
        // Slashes encoded, doubled; dot segments; a trailing slash; case.
        format!("/{}", segs.join("%2F")),
        format!("//{}", segs.join("/")),
        format!("/{}", segs.join("//")),
        format!("/x/..{path}"),
        format!("/.{path}"),
        format!("{path}/"),
        format!("{path}?x=1"),
        format!("/{}{tail}", first.to_uppercase()),
    ];
    if segs.len() > 1 {
        // The second segment's first letter (`/v1/%63ampaigns/...`).
        let second = segs[1];
        if let Some(b) = second
            .as_bytes()
            .first()
            .filter(|b| b.is_ascii_alphabetic())
        {
            let mut s = segs.clone();
            let enc = format!("%{:02x}{}", b, &second[1..]);
            s[1] = &enc;
            out.push(format!("/{}", s.join("/")));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Who calls, and what they may use.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Caller {
    Nobody,
    /// An unscoped viewer key.
    Viewer,
    /// A decide key scoped to campaign `other`.
    DecideElsewhere,
}

fn is_public(path: &str) -> bool {
    ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"].contains(&path)
        || path.starts_with("/ui")
}

/// A Personalizer decide call (rank, reward, activate): any role of the loop's key.
fn personalizer_decide(method: &str, path: &str) -> bool {
    method == "POST"
        && (path.ends_with("/rank") || path.ends_with("/reward") || path.ends_with("/activate"))
}

/// Whether `caller` may call `method path` (path with parameters filled in: campaigns are
/// `home`, the one the scoped key does not reach).
fn allowed(caller: Caller, method: &str, path: &str) -> bool {
    if is_public(path) {
        return true;
    }
    match caller {
        Caller::Nobody => false,
        // A preview changes nothing, so viewers may run it (issue 22).
        Caller::Viewer => {
            path.starts_with("/v1/")
                || (path.starts_with("/admin/") && method == "GET")
                || (method == "POST" && path.starts_with("/admin/") && path.ends_with("/preview"))
        }
        Caller::DecideElsewhere => {
            (path.starts_with("/v1/") && !path.starts_with("/v1/campaigns/home"))
                || (path.starts_with("/personalizer/") && personalizer_decide(method, path))
        }
    }
}

/// Fill in path parameters: campaigns are `home` (not the scoped key's), everything else a
/// plausible id.
fn fill(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                match seg {
                    "{campaign}" | "{id}"
                        if !path.contains("/keys/") && !path.contains("/shoppers/") =>
                    {
                        "home".to_string()
                    }
                    "{id}" if path.contains("/keys/") => "k-1".to_string(),
                    "{id}" => "shopper-1".to_string(),
                    _ => "e1".to_string(),
                }
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether a refused answer came from the route's authorization (401/403) or from the router
/// (404/405 for a spelling that names no route) — not from a handler.
fn refused(status: u16, body: &str) -> bool {
    match status {
        401 | 403 | 405 => true,
        // The router's 404s: the native JSON `not_found` and Personalizer's no-route error.
        404 => {
            let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            v["error"]["code"] == "not_found"
                || v["error"]["code"]
                    .as_str()
                    .is_some_and(|c| c.contains("NotFound") || c.contains("Route"))
        }
        _ => false,
    }
}

async fn key(server: &Server, body: Value) -> (String, String) {
    let (status, v) = server.post("/admin/v1/keys", &body).await;
    assert_eq!(status, 201, "{v}");
    (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    )
}

/// Issue 17 (critical): every route × spelling × caller without the right → 401/403, never a
/// handler's success; the encoded spellings do reach their handlers for a caller with the right,
/// so the refusals are the authorization's doing.
#[tokio::test]
async fn bypass_matrix_over_every_route_and_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    for id in ["home", "other"] {
        server
            .create_campaign(json!({"id": id, "policy": {"type": "thompson"}}))
            .await;
    }
    let (_, viewer) = key(&server, json!({"role": "viewer"})).await;
    let (_, decide_other) = key(&server, json!({"role": "decide", "campaign": "other"})).await;
    let addr = server.base.trim_start_matches("http://").to_string();

    let (status, spec) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = spec["paths"].as_object().expect("paths");
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(operations.len() >= 35, "{} operations", operations.len());

    let mut tried = 0usize;
    let mut by_caller: BTreeMap<String, usize> = BTreeMap::new();
    let mut successes = Vec::new();
    for (method, template) in &operations {
        let path = fill(template);
        for spelling in spellings(&path) {
            for (caller, k) in [
                (Caller::Nobody, None),
                (Caller::Viewer, Some(viewer.as_str())),
                (Caller::DecideElsewhere, Some(decide_other.as_str())),
            ] {
                if allowed(caller, method, &path) {
                    continue;
                }
                let started = std::time::Instant::now();
                let (status, body) = raw(&addr, method, &spelling, k);
                if started.elapsed() > Duration::from_secs(1) {
                    eprintln!(
                        "slow: {caller:?} {method} {spelling} -> {status} in {:?}",
                        started.elapsed()
                    );
                }
                tried += 1;
                *by_caller.entry(format!("{caller:?}")).or_default() += 1;
                if !refused(status, &body) {
                    successes.push(format!("{caller:?} {method} {spelling} -> {status} {body}"));
                }
            }
        }
    }
    eprintln!(
        "bypass matrix: {tried} requests without the right {by_caller:?}, {} got through",
        successes.len()
    );
    assert!(tried > 1_000, "only {tried} requests");
    assert!(
        successes.is_empty(),
        "{} got through:\n{}",
        successes.len(),
        successes.join("\n")
    );

    // The encoded spellings are routed: with the right key they reach the handler.
    for path in [
        "/%61dmin/v1/keys",
        "/admin/v1/%63ampaigns/home",
        "/admin/v1/campaigns/%68ome",
    ] {
        let (status, body) = raw(&addr, "GET", path, Some(ADMIN_KEY));
        assert_eq!(status, 200, "{path}: {body}");
    }
    // The scoped key's own campaign, spelled with escapes, is its own campaign.
    let (status, body) = raw(
        &addr,
        "POST",
        "/%76%31/campaigns/%6Fther/decide",
        Some(&decide_other),
    );
    assert_eq!(
        status, 400,
        "reaches the handler, which wants candidates: {body}"
    );
    let (status, _) = raw(
        &addr,
        "POST",
        "/v1/campaigns/%68ome/decide",
        Some(&decide_other),
    );
    assert_eq!(status, 403);
    // Nothing was created, changed or deleted by the refused calls.
    let (_, list) = server.get("/admin/v1/campaigns").await;
    let ids: Vec<&str> = list["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["home", "other"], "{list}");
}

/// Issue 17: changes are audited with the real key id, whatever the spelling, and a plugin reload
/// is audited too.
#[tokio::test]
async fn changes_are_audited_with_the_callers_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    server
        .create_campaign(json!({"id": "home", "policy": {"type": "thompson"}}))
        .await;
    let (editor_id, editor) = key(&server, json!({"role": "editor", "campaign": "home"})).await;
    let addr = server.base.trim_start_matches("http://").to_string();

    let holdout = r#"{"share": 0.1}"#;
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "PUT /%61dmin/v1/campaigns/%68ome/holdout HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {editor}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{holdout}",
        holdout.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let (status, _) = raw(&addr, "POST", "/%61dmin/v1/plugins/reload", Some(ADMIN_KEY));
    assert_eq!(status, 200);

    let (status, audit) = server.get("/admin/v1/audit").await;
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().expect("entries");
    assert!(entries.iter().all(|e| e["key_id"] != "unknown"), "{audit}");
    let holdout_entry = entries
        .iter()
        .find(|e| e["campaign"] == "home" && e["action"].as_str().unwrap().contains("holdout"))
        .unwrap_or_else(|| panic!("no holdout entry: {audit}"));
    assert_eq!(
        holdout_entry["key_id"],
        editor_id.as_str(),
        "{holdout_entry}"
    );
    assert!(
        entries.iter().any(|e| e["target"]
            .as_str()
            .is_some_and(|t| t.contains("plugins/reload"))),
        "the reload is audited: {audit}"
    );
}
