//! Issue 17: schemathesis, the OpenAPI fuzzer, against the real server's `/openapi.json` with
//! the bootstrap editor key: no 5xx, and every documented response matches its schema.
//!
//! Schemathesis is pinned in `tests/schemathesis/requirements.txt` and installed into
//! `target/stenv` by `scripts/setup/30-schemathesis.sh` (run by `./scripts/test`). CI runs a
//! bounded, seeded form (`--max-examples 10`); a longer run by hand:
//! `TAILOR_SCHEMATHESIS_EXAMPLES=200 TAILOR_SCHEMATHESIS_SEED=5 cargo test -p tailor-tests
//! --test e2e -- schemathesis --nocapture` (docs/security/adversarial.md).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::harness::{Server, ADMIN_KEY};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The objects `tests/schemathesis/schemathesis.toml` names, so that generated requests reach
/// real campaigns, events and a shopper about half the time.
async fn fixtures(server: &Server) {
    server
        .create_campaign(json!({"id": "st-items", "policy": {"type": "linucb"}}))
        .await;
    server
        .create_campaign(json!({
            "id": "st-send", "kind": "send_time", "slots": "hour_of_day",
            "reward_wait_seconds": 86_400
        }))
        .await;
    server
        .create_campaign(json!({"id": "st-paused", "status": "paused"}))
        .await;
    for i in 1..=3 {
        let (s, v) = server
            .post(
                "/v1/campaigns/st-items/decide",
                &json!({
                    "event_id": format!("st-ev-{i}"),
                    "candidates": [{"id": "a"}, {"id": "b"}],
                    "context": {"x": i}
                }),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = server
        .post(
            "/v1/campaigns/st-send/decide",
            &json!({"event_id": "st-ev-send", "shopper_id": "st-shopper", "timezone": "Europe/Paris"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_response_off_the_schema() {
    let schemathesis = root().join("target/stenv/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: run ./scripts/test (its scripts/setup/30-schemathesis.sh installs the \
         pinned tests/schemathesis/requirements.txt into target/stenv)",
        schemathesis.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]).await;
    fixtures(&server).await;
    let examples =
        std::env::var("TAILOR_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".to_string());
    let seed = std::env::var("TAILOR_SCHEMATHESIS_SEED").unwrap_or_else(|_| "17".to_string());
    let mut cmd = tokio::process::Command::new(&schemathesis);
    cmd.arg("--config-file")
        .arg(root().join("tests/schemathesis/schemathesis.toml"))
        .arg("run")
        .arg(server.url("/openapi.json"))
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--header", &format!("Authorization: Bearer {ADMIN_KEY}")])
        .args(["--max-examples", &examples, "--seed", &seed])
        .args(["--workers", "1", "--no-color"])
        // Hypothesis keeps its example database in the working directory.
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    // A bound on a wedged run, far above the 14-90 s the default takes; not a timing assertion.
    let out = tokio::time::timeout(Duration::from_secs(900), cmd.output())
        .await
        .expect("schemathesis did not finish within 15 minutes")
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // It really ran: every operation tested, cases generated, none failed.
    assert!(stdout.contains("Tested: "), "{stdout}");
    assert!(
        stdout.contains(" generated, ") && stdout.contains(" passed"),
        "{stdout}"
    );
}
