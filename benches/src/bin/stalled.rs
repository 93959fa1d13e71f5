//! Stalled request bodies against a real server (issue 17): opens `--connections` connections
//! that send a decide request's head and part of its body and then stall, measures `/healthz` and
//! decide latency while they hang, and how long until the server has closed them all.
//!
//! ```text
//! cargo run --release -p tailor-benches --bin stalled -- --connections 2000 --body-timeout-ms 10000
//! ```
//!
//! Loopback only: the server runs in this process on 127.0.0.1, port 0.

use std::time::{Duration, Instant};

use clap::Parser;
use tailor_server::config::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &str = "stalled-bench-admin-key-0123456789";

#[derive(Debug, Parser)]
struct Args {
    /// Stalled connections to hold at once.
    #[arg(long, default_value_t = 2_000)]
    connections: usize,
    /// `transport.body_timeout_ms` of the server.
    #[arg(long, default_value_t = 10_000)]
    body_timeout_ms: u64,
    /// Sequential requests per latency sample.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// HTTP workers (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Send the stalled bodies without an API key (they are refused 401 before the body).
    #[arg(long)]
    unauthenticated: bool,
    /// Stall with `Transfer-Encoding: chunked` instead of `Content-Length`.
    #[arg(long)]
    chunked: bool,
}

struct Latency {
    p50: Duration,
    p99: Duration,
    max: Duration,
    failed: usize,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}  failed {}",
            self.p50, self.p99, self.max, self.failed
        )
    }
}

async fn measure(client: &reqwest::Client, base: &str, samples: usize) -> (Latency, Latency) {
    let body = serde_json::json!({"candidates": (0..20).map(|i| serde_json::json!({"id": format!("sku-{i}")})).collect::<Vec<_>>()});
    let mut health = Vec::with_capacity(samples);
    let mut decide = Vec::with_capacity(samples);
    let (mut hf, mut df) = (0, 0);
    for _ in 0..samples {
        let t = Instant::now();
        match client.get(format!("{base}/healthz")).send().await {
            Ok(r) if r.status().is_success() => health.push(t.elapsed()),
            _ => hf += 1,
        }
        let t = Instant::now();
        let ok = match client
            .post(format!("{base}/v1/campaigns/shop/decide"))
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            decide.push(t.elapsed());
        } else {
            df += 1;
        }
    }
    (summary(health, hf), summary(decide, df))
}

fn summary(mut v: Vec<Duration>, failed: usize) -> Latency {
    v.sort();
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Latency {
        p50: at(0.5),
        p99: at(0.99),
        max: v.last().copied().unwrap_or_default(),
        failed,
    }
}

async fn stall(addr: &str, auth: bool, chunked: bool) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    let auth = if auth {
        format!("Authorization: Bearer {KEY}\r\n")
    } else {
        String::new()
    };
    let framing = if chunked {
        "Transfer-Encoding: chunked\r\n\r\n10\r\n{\"candidates\": ["
    } else {
        "Content-Length: 1000\r\n\r\n{\"candidates\": ["
    };
    let head = format!(
        "POST /v1/campaigns/shop/decide HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n{framing}"
    );
    s.write_all(head.as_bytes()).await?;
    Ok(s)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    anyhow::ensure!(
        (args.connections as u64) * 2 + 512 <= limit,
        "this process may open {limit} files; {} stalled connections need both ends here",
        args.connections
    );
    let dir = tempfile::tempdir()?;
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = args.workers;
    settings.storage.data_dir = dir.path().to_path_buf();
    settings.auth.admin_key = Some(KEY.into());
    settings.transport.body_timeout_ms = args.body_timeout_ms;
    settings.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let running = tailor_server::start(&settings)?;
        let addr = running.addr.to_string();
        let base = format!("http://{addr}");
        let handle = running.server.handle();
        tokio::spawn(running.server);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {KEY}").parse()?,
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .pool_max_idle_per_host(1)
            .build()?;
        let r = client
            .post(format!("{base}/admin/v1/campaigns"))
            .json(&serde_json::json!({"id": "shop", "policy": {"type": "thompson"}}))
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 201, "creating the campaign: {}", r.status());

        let (h, d) = measure(&client, &base, args.samples).await;
        println!("idle:             /healthz {h}");
        println!("                  decide   {d}");

        let t0 = Instant::now();
        let mut stalled = Vec::with_capacity(args.connections);
        for _ in 0..args.connections {
            stalled.push(stall(&addr, !args.unauthenticated, args.chunked).await?);
        }
        let opened = t0.elapsed();
        println!(
            "{} stalled bodies ({}{}) opened in {opened:.2?}",
            args.connections,
            if args.unauthenticated { "no key, " } else { "" },
            if args.chunked { "chunked" } else { "Content-Length" }
        );
        let (h, d) = measure(&client, &base, args.samples).await;
        println!(
            "during (until {:.2?}): /healthz {h}",
            t0.elapsed()
        );
        println!("                  decide   {d}");

        let readers: Vec<_> = stalled
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    let _ = s.read_to_end(&mut out).await;
                    let status = String::from_utf8_lossy(&out)
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("none")
                        .to_string();
                    (t0.elapsed(), status)
                })
            })
            .collect();
        let mut closed = Vec::with_capacity(readers.len());
        let mut statuses = std::collections::BTreeMap::<String, usize>::new();
        for r in readers {
            let (at, status) = r.await?;
            closed.push(at);
            *statuses.entry(status).or_default() += 1;
        }
        closed.sort();
        println!(
            "closed by the server: first {:.2?}, last {:.2?} after the first was opened (body timeout {} ms, last opened at {opened:.2?}); answers {statuses:?}",
            closed[0],
            closed[closed.len() - 1],
            args.body_timeout_ms
        );
        let (h, d) = measure(&client, &base, args.samples).await;
        println!("after:            /healthz {h}");
        println!("                  decide   {d}");
        handle.stop(true).await;
        Ok(())
    })
}
