//! Starts the real `tailor` binary on port 0 with a temporary sled directory, and talks to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The bootstrap editor key every test server starts with (`TAILOR_ADMIN_KEY`).
pub const ADMIN_KEY: &str = "e2e-admin-key-0123456789abcdef";

/// A client that sends `Authorization: Bearer <key>` on every request. Idle connections are
/// dropped after 2 s, before the server's 5 s keep-alive closes them: a request written on a
/// connection the server is closing at that moment fails, which loaded CI runs met.
pub fn client_with(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// `target/<profile>` of this test binary.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/e2e-<hash>, or target/<profile>/killloop for the by-hand binaries
    // that include this harness (tests/src/bin).
    let dir = exe.parent().expect("the binary's directory");
    if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of the `tailor` binary, building it if this test was run without `--workspace`.
pub fn tailor_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let bin = target_dir().join(format!("tailor{}", std::env::consts::EXE_SUFFIX));
            // Always ask cargo: a no-op when `cargo test --workspace` just built it, and it keeps
            // `cargo test -p tailor-tests` from testing a stale binary.
            {
                let status = Command::new(env!("CARGO"))
                    .args(["build", "-p", "tailor-cli", "--bin", "tailor"])
                    .status()
                    .expect("running cargo build");
                assert!(status.success(), "building the tailor binary failed");
            }
            assert!(bin.exists(), "{} not found", bin.display());
            bin
        })
        .clone()
}

/// A running server process. Killed when dropped.
pub struct Server {
    pub data_dir: PathBuf,
    pub base: String,
    env: Vec<(String, String)>,
    extra_args: Vec<String>,
    child: Option<Child>,
    /// Sends the bootstrap editor key ([`ADMIN_KEY`]) with every request.
    pub client: reqwest::Client,
}

impl Server {
    /// Start on a fresh temporary directory with `env` settings (e.g. `TAILOR__ENGINE__...`).
    pub async fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_with_args(dir, env, &[]).await
    }

    pub async fn start_with_args(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        let mut s = Server {
            data_dir: dir.to_path_buf(),
            base: String::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            client: client_with(ADMIN_KEY),
        };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(tailor_bin());
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("TAILOR_ADMIN_KEY", ADMIN_KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("starting tailor");
        let (tx, rx) = mpsc::channel::<String>();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for pipe in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                // After `Error:`, everything: the causes follow on their own lines.
                let mut failed = false;
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if std::env::var_os("TAILOR_TEST_LOG").is_some() {
                        eprintln!("[tailor] {line}");
                    }
                    if line.contains("listening") {
                        if let Some(rest) = line.split("addr=").nth(1) {
                            let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                            let _ = tx.send(addr);
                        }
                    }
                    failed |= line.contains("Error:");
                    if failed || line.contains("ERROR") {
                        eprintln!("[tailor] {line}");
                    }
                }
            });
        }
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .expect("the server did not report its address within 60 s");
        self.base = format!("http://{addr}");
        self.child = Some(child);
    }

    /// `kill -9` the process.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().unwrap();
        }
    }

    /// Graceful stop (SIGTERM) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// Start again on the same directory (after `kill9` or `stop`).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.spawn().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POST JSON, returning status and parsed body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request");
        status_json(r).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        status_json(r).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request");
        status_json(r).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        status_json(r).await
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn delete(&self, path: &str) -> u16 {
        let r = self
            .client
            .delete(self.url(path))
            .send()
            .await
            .expect("request");
        r.status().as_u16()
    }

    /// Create a campaign, asserting success.
    pub async fn create_campaign(&self, body: Value) {
        let (status, resp) = self.post("/admin/v1/campaigns", &body).await;
        assert_eq!(status, 201, "creating campaign: {resp}");
    }

    pub async fn stats(&self, campaign: &str) -> Value {
        let (status, v) = self
            .get(&format!("/admin/v1/campaigns/{campaign}/stats"))
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn status_json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// The per-action entry of a stats document.
pub fn action<'a>(stats: &'a Value, id: &str) -> Option<&'a Value> {
    stats["actions"].as_array()?.iter().find(|a| a["id"] == id)
}
