//! HTTP load generator for Tailor.
//!
//! `decide` mode runs two servers in this process, one after the other, under the same load:
//! a bare actix handler that only parses the same request and draws the same random numbers (the
//! ceiling on this machine), then the real Tailor server with its decision log on. It prints
//! requests/s and p50/p99 latency for both and their ratio. `rewards` mode measures durable
//! rewards/s (each acknowledged only after its group commit). `soak` mode loads a separately
//! started server and samples its resident memory.
//!
//! ```text
//! cargo run --release -p tailor-benches --bin loadgen -- decide --seconds 10 --concurrency 32
//! # issue 18's shapes: 100 ids + 8 numeric context features (Thompson); 4 ids + 5 features (LinUCB)
//! cargo run --release -p tailor-benches --bin loadgen -- decide --shape ids --concurrency 64
//! cargo run --release -p tailor-benches --bin loadgen -- decide --shape small --candidates 4 \
//!     --policy linucb --concurrency 64
//! cargo run --release -p tailor-benches --bin loadgen -- rewards --seconds 10 --concurrency 64
//! cargo run --release -p tailor-benches --bin loadgen -- soak --url http://127.0.0.1:8080 \
//!     --key KEY --pid PID --seconds 1800 --concurrency 256   # scripts/measure-memory.sh
//! ```

/// mimalloc: the decide path allocates many small objects (JSON values, feature vectors)
/// from several worker threads, where glibc malloc spends a quarter of the CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::{Parser, Subcommand};
use rand::SeedableRng;
use rand_distr::{Beta, Distribution};
use tailor_benches::decide_body;
use tailor_sdk::wire::DecideRequest;
use tailor_server::config::Settings;

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
    /// Seconds of load per server.
    #[arg(long, default_value_t = 10, global = true)]
    seconds: u64,
    /// Concurrent in-flight requests.
    #[arg(long, default_value_t = 32, global = true)]
    concurrency: usize,
    /// Candidates per decide.
    #[arg(long, default_value_t = 100, global = true)]
    candidates: usize,
    /// Decide body: `catalog` (candidates with categorical and numeric features and
    /// attributes, a nested context), `ids` (candidates with ids only, 8 numeric context
    /// features), `small` (ids only, 5 numeric context features).
    #[arg(long, default_value = "catalog", global = true)]
    shape: String,
    /// Server worker threads (0 = one per core).
    #[arg(long, default_value_t = 0, global = true)]
    workers: usize,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Decide throughput: bare-handler ceiling, then Tailor.
    Decide {
        /// Policy of the Tailor campaign: thompson or linucb.
        #[arg(long, default_value = "thompson")]
        policy: String,
    },
    /// Durable reward ingestion.
    Rewards,
    /// Sustained load against a running server (`tailor serve`), sampling its memory: decides with
    /// fresh event ids, a reward for every `--reward-every`th, for `--seconds` or until
    /// `--decisions` were made. Prints one tab-separated line per sample: seconds, decisions,
    /// errors, VmRSS and VmHWM of `--pid` in MB (scripts/measure-memory.sh).
    Soak {
        /// Base URL of the server, e.g. `http://127.0.0.1:8080`.
        #[arg(long)]
        url: String,
        /// An editor key of the server.
        #[arg(long)]
        key: String,
        /// The server's process id, for /proc/PID/status.
        #[arg(long)]
        pid: Option<u32>,
        /// Seconds between samples.
        #[arg(long, default_value_t = 10)]
        sample_seconds: u64,
        /// Reward every Nth decision (0: no rewards).
        #[arg(long, default_value_t = 4)]
        reward_every: u64,
        /// Stop after this many decisions (0: run for `--seconds`).
        #[arg(long, default_value_t = 0)]
        decisions: u64,
        /// Campaign to decide in (created when missing).
        #[arg(long, default_value = "load")]
        campaign: String,
        /// Prefix of the event ids (distinct per run on one data directory).
        #[arg(long, default_value = "soak")]
        prefix: String,
        /// Create the campaign with `log_requests: true` (what the log export and evaluation
        /// read).
        #[arg(long)]
        log_requests: bool,
    },
}

/// What one load run saw.
struct Report {
    requests: u64,
    errors: u64,
    seconds: f64,
    latencies_us: Vec<u32>,
}

impl Report {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
    fn print(&self, name: &str) {
        println!(
            "{name:<28} {:>10.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} requests, {} errors)",
            self.rps(),
            self.pct(0.50),
            self.pct(0.99),
            self.requests,
            self.errors
        );
    }
}

/// Drive `make_request` from `concurrency` tasks for `seconds`.
async fn drive<F, Fut>(seconds: u64, concurrency: usize, make_request: F) -> Report
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let make_request = Arc::new(make_request);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let make_request = make_request.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = t as u64 * 1_000_000_000;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let ok = make_request(i).await;
                lat.push(t0.elapsed().as_micros() as u32);
                if !ok {
                    errors += 1;
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies_us.extend(l);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    Report {
        requests: latencies_us.len() as u64,
        errors,
        seconds,
        latencies_us,
    }
}

/// The ceiling: parse the same body and draw one Beta sample per candidate.
async fn bare_decide(body: web::Bytes) -> HttpResponse {
    let req: DecideRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
    };
    let mut rng = rand_pcg::Pcg64Mcg::from_entropy();
    let beta = Beta::new(2.0, 3.0).unwrap();
    let mut best = 0;
    let mut best_v = f64::MIN;
    for (i, _) in req.candidates.iter().enumerate() {
        let v = beta.sample(&mut rng);
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    HttpResponse::Ok().json(serde_json::json!({
        "event_id": "bare",
        "actions": [{"id": req.candidates[best].id, "probability": 1.0}],
        "policy": "bare"
    }))
}

/// The bootstrap editor key of the server the load generator starts.
const BENCH_KEY: &str = "loadgen-admin-key-0123456789";

fn client(concurrency: usize) -> reqwest::Client {
    client_with_key(concurrency, BENCH_KEY)
}

fn client_with_key(concurrency: usize, key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap()
}

/// The decide body of `--shape`.
fn shaped_body(args: &Args) -> serde_json::Value {
    let numeric = |n: usize| -> serde_json::Map<String, serde_json::Value> {
        (0..n)
            .map(|i| (format!("f{i}"), serde_json::json!(0.25 + i as f64 * 0.5)))
            .collect()
    };
    let ids = |n: usize| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| serde_json::json!({"id": format!("sku-{i}")}))
            .collect()
    };
    match args.shape.as_str() {
        "ids" => serde_json::json!({"context": numeric(8), "candidates": ids(args.candidates)}),
        "small" => serde_json::json!({"context": numeric(5), "candidates": ids(args.candidates)}),
        _ => decide_body(args.candidates, 1),
    }
}

/// The ceiling of a linear policy: parse the same body, one dot product per candidate over the
/// numeric context (plus a bias), serve the best.
async fn bare_linear(body: web::Bytes) -> HttpResponse {
    let req: DecideRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
    };
    let mut x = vec![1.0];
    if let serde_json::Value::Object(m) = &req.context {
        x.extend(m.values().filter_map(|v| v.as_f64()));
    }
    let mut best = 0;
    let mut best_v = f64::MIN;
    for (i, _) in req.candidates.iter().enumerate() {
        let v: f64 = x
            .iter()
            .enumerate()
            .map(|(j, xj)| xj * (0.1 + ((i * 7 + j) % 5) as f64 * 0.05))
            .sum();
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    HttpResponse::Ok().json(serde_json::json!({
        "event_id": "bare",
        "actions": [{"id": req.candidates[best].id, "probability": 1.0}],
        "policy": "bare"
    }))
}

async fn load_decide(args: &Args, url: String) -> Report {
    let body = Arc::new(serde_json::to_vec(&shaped_body(args)).unwrap());
    let client = client(args.concurrency);
    drive(args.seconds, args.concurrency, move |_| {
        let client = client.clone();
        let url = url.clone();
        let body = body.clone();
        async move {
            match client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.as_ref().clone())
                .send()
                .await
            {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await
}

fn tailor_settings(args: &Args, dir: &std::path::Path) -> Settings {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = args.workers;
    settings.storage.data_dir = dir.to_path_buf();
    settings.auth.admin_key = Some(BENCH_KEY.into());
    // One key drives the whole load: measure the server, not its per-key rate limit.
    settings.rate_limits.key_per_second = 0.0;
    settings
}

/// VmRSS and VmHWM of a process, in MB.
fn memory_mb(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

struct SoakArgs<'a> {
    url: &'a str,
    key: &'a str,
    pid: Option<u32>,
    sample_seconds: u64,
    reward_every: u64,
    decisions: u64,
    campaign: &'a str,
    prefix: &'a str,
    log_requests: bool,
}

async fn soak(args: &Args, soak: SoakArgs<'_>) -> anyhow::Result<()> {
    let c = client_with_key(args.concurrency, soak.key);
    let r = c
        .post(format!("{}/admin/v1/campaigns", soak.url))
        .json(&serde_json::json!({"id": soak.campaign, "policy": {"type": "thompson"}, "featurizer": {"dimension": 32}, "log_requests": soak.log_requests}))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().as_u16() == 201 || r.status().as_u16() == 409,
        "creating the campaign: {} {}",
        r.status(),
        r.text().await?
    );
    // The body without its closing brace: each request appends its own event id.
    let mut body = serde_json::to_string(&decide_body(args.candidates, 1))?;
    body.pop();
    let body = Arc::new(body);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let decide_url = format!("{}/v1/campaigns/{}/decide", soak.url, soak.campaign);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (c, body, next, done, errors, stop) = (
            c.clone(),
            body.clone(),
            next.clone(),
            done.clone(),
            errors.clone(),
            stop.clone(),
        );
        let decide_url = decide_url.clone();
        let (url, prefix, limit, every) = (
            soak.url.to_string(),
            soak.prefix.to_string(),
            soak.decisions,
            soak.reward_every,
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if limit > 0 && i >= limit {
                    break;
                }
                let event = format!("{prefix}-{i}");
                let req = format!("{body},\"event_id\":\"{event}\"}}");
                let ok = match c
                    .post(&decide_url)
                    .header("content-type", "application/json")
                    .body(req)
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                done.fetch_add(1, Ordering::Relaxed);
                if every > 0 && i % every == 0 {
                    let ok = c
                        .post(format!("{url}/v1/events/{event}/reward"))
                        .json(&serde_json::json!({"value": (i / every % 2) as f64}))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    println!("seconds\tdecisions\terrors\trss_mb\thwm_mb");
    let sample = |t: f64| {
        let (rss, hwm) = soak.pid.and_then(memory_mb).unwrap_or((f64::NAN, f64::NAN));
        println!(
            "{t:.0}\t{}\t{}\t{rss:.1}\t{hwm:.1}",
            done.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed)
        );
    };
    sample(0.0);
    loop {
        tokio::time::sleep(Duration::from_secs(soak.sample_seconds.max(1))).await;
        let t = started.elapsed().as_secs_f64();
        let finished = tasks.iter().all(|t| t.is_finished());
        sample(t);
        if finished || (soak.decisions == 0 && t >= args.seconds as f64) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    Ok(())
}

async fn create_campaign(base: &str, policy: &str) {
    let policy = match policy {
        "linucb" => serde_json::json!({"type": "linucb", "alpha": 1.0}),
        _ => serde_json::json!({"type": "thompson"}),
    };
    let r = client(1)
        .post(format!("{base}/admin/v1/campaigns"))
        .json(&serde_json::json!({"id": "load", "policy": policy, "featurizer": {"dimension": 32}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match &args.mode {
            Mode::Decide { policy } => {
                println!(
                    "decide, {} candidates ({} body), {} concurrent, {} s per server, {} core(s)",
                    args.candidates,
                    args.shape,
                    args.concurrency,
                    args.seconds,
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(1)
                );
                let linear = policy == "linucb";
                let mut bare = HttpServer::new(move || {
                    if linear {
                        App::new().route("/decide", web::post().to(bare_linear))
                    } else {
                        App::new().route("/decide", web::post().to(bare_decide))
                    }
                })
                .disable_signals();
                if args.workers > 0 {
                    bare = bare.workers(args.workers);
                }
                let bare = bare.bind("127.0.0.1:0")?;
                let addr = bare.addrs()[0];
                let server = bare.run();
                let handle = server.handle();
                tokio::spawn(server);
                let ceiling = load_decide(&args, format!("http://{addr}/decide")).await;
                handle.stop(true).await;
                ceiling.print("bare handler (ceiling)");

                let dir = tempfile::tempdir()?;
                let running = tailor_server::start(&tailor_settings(&args, dir.path()))?;
                let base = format!("http://{}", running.addr);
                let handle = running.server.handle();
                tokio::spawn(running.server);
                create_campaign(&base, policy).await;
                let tailor = load_decide(&args, format!("{base}/v1/campaigns/load/decide")).await;
                handle.stop(true).await;
                tailor.print(&format!("tailor {policy} (log on)"));
                println!("ratio to ceiling: {:.2}", tailor.rps() / ceiling.rps());
            }
            Mode::Soak {
                url,
                key,
                pid,
                sample_seconds,
                reward_every,
                decisions,
                campaign,
                prefix,
                log_requests,
            } => {
                soak(
                    &args,
                    SoakArgs {
                        url,
                        key,
                        pid: *pid,
                        sample_seconds: *sample_seconds,
                        reward_every: *reward_every,
                        decisions: *decisions,
                        campaign,
                        prefix,
                        log_requests: *log_requests,
                    },
                )
                .await?;
            }
            Mode::Rewards => {
                let dir = tempfile::tempdir()?;
                let running = tailor_server::start(&tailor_settings(&args, dir.path()))?;
                let base = format!("http://{}", running.addr);
                let handle = running.server.handle();
                tokio::spawn(running.server);
                create_campaign(&base, "thompson").await;
                // Decide first (not timed), then reward each event once, durably.
                let n_events = 200_000usize;
                let body = serde_json::to_vec(&decide_body(10, 1)).unwrap();
                let c = client(args.concurrency);
                println!("preparing events ...");
                let prep = drive(args.seconds, args.concurrency, {
                    let c = c.clone();
                    let base = base.clone();
                    let body = Arc::new(body);
                    move |i| {
                        let c = c.clone();
                        let url = format!("{base}/v1/campaigns/load/decide");
                        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        v["event_id"] = format!("ev-{i}").into();
                        async move {
                            c.post(&url)
                                .json(&v)
                                .send()
                                .await
                                .is_ok_and(|r| r.status().is_success())
                        }
                    }
                })
                .await;
                let _ = n_events;
                prep.print("decides (preparation)");
                let rewards = drive(args.seconds, args.concurrency, {
                    let c = c.clone();
                    let base = base.clone();
                    move |i| {
                        let c = c.clone();
                        let url = format!("{base}/v1/events/ev-{i}/reward");
                        async move {
                            c.post(&url)
                                .json(&serde_json::json!({"value": 1.0}))
                                .send()
                                .await
                                .is_ok_and(|r| r.status().is_success())
                        }
                    }
                })
                .await;
                handle.stop(true).await;
                rewards.print("durable rewards");
                println!("(an error is a reward to an event the preparation did not reach)");
            }
        }
        Ok(())
    })
}
