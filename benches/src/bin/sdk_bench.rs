//! SDK benchmark: what the client adds to a decide on loopback, and durable rewards/s through its
//! batching queue. Starts the real server in this process on a temporary directory.
//!
//! - `decide`: the same request sent sequentially through raw `reqwest` and through
//!   `tailor_sdk::Client::decide` (budget, fallback bookkeeping, typed decoding); the difference
//!   of the means is the client's overhead. Then concurrent decides through one shared client.
//! - `rewards`: decisions are made first, then one reward per event is queued as fast as the
//!   caller can (time per `reward()` call), and `flush()` waits for every one to be acknowledged
//!   durably: rewards/s end to end, per batch size.
//!
//! ```text
//! cargo run --release -p tailor-benches --bin sdk_bench -- --decides 5000 --rewards 20000
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tailor_sdk::wire::{Candidate, DecideRequest, DecideResponse};
use tailor_sdk::{Client, ClientBuilder};
use tailor_server::config::Settings;

#[derive(Debug, Parser)]
struct Args {
    /// Sequential decides per variant (raw reqwest, SDK).
    #[arg(long, default_value_t = 5_000)]
    decides: usize,
    /// Rewards per batch-size run.
    #[arg(long, default_value_t = 20_000)]
    rewards: usize,
    /// Candidates per decide.
    #[arg(long, default_value_t = 20)]
    candidates: usize,
    /// Concurrent decide tasks for the throughput run.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Batch sizes to sweep for rewards.
    #[arg(long, value_delimiter = ',', default_values_t = vec![100, 500, 1000])]
    batch_sizes: Vec<usize>,
    /// Server worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

fn request(candidates: usize) -> DecideRequest {
    DecideRequest {
        context: json!({"user": {"segment": "gold", "device": "mobile"}}),
        candidates: (0..candidates)
            .map(|i| Candidate {
                features: json!({"item": {"category": format!("c{}", i % 5)}}),
                ..Candidate::new(format!("sku-{i}"))
            })
            .collect(),
        ..DecideRequest::default()
    }
}

struct Timing {
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

fn timing(mut samples: Vec<Duration>) -> Timing {
    samples.sort();
    let n = samples.len().max(1);
    let at = |p: f64| samples[((n as f64 * p) as usize).min(n - 1)];
    Timing {
        mean: samples.iter().sum::<Duration>() / n as u32,
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn print(name: &str, t: &Timing) {
    println!(
        "{name:<28} mean {:>9.1} µs   p50 {:>9.1} µs   p99 {:>9.1} µs",
        t.mean.as_secs_f64() * 1e6,
        t.p50.as_secs_f64() * 1e6,
        t.p99.as_secs_f64() * 1e6
    );
}

async fn create_campaign(base: &str, id: &str) -> anyhow::Result<()> {
    let r = keyed_client()
        .post(format!("{base}/admin/v1/campaigns"))
        .json(&json!({"id": id, "policy": {"type": "thompson"}, "reward_wait_seconds": 3600}))
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "creating {id}: {}", r.status());
    Ok(())
}

async fn decides(args: &Args, base: &str) -> anyhow::Result<()> {
    create_campaign(base, "bench").await?;
    let body = request(args.candidates);
    let url = format!("{base}/v1/campaigns/bench/decide");
    let raw = keyed_client();
    let sdk = ClientBuilder::new(base)
        .api_key(BENCH_KEY)
        .decide_budget(Duration::from_secs(5))
        .build()?;
    // Warm both connection pools and the server.
    for _ in 0..200 {
        raw.post(&url).json(&body).send().await?.bytes().await?;
        sdk.decide("bench", &body).await?;
    }
    // Interleave the two so drift (log growth, CPU frequency) hits both alike.
    let mut raw_t = Vec::with_capacity(args.decides);
    let mut sdk_t = Vec::with_capacity(args.decides);
    for _ in 0..args.decides {
        let t = Instant::now();
        let bytes = raw.post(&url).json(&body).send().await?.bytes().await?;
        let _: DecideResponse = serde_json::from_slice(&bytes)?;
        raw_t.push(t.elapsed());
        let t = Instant::now();
        let d = sdk.decide("bench", &body).await?;
        sdk_t.push(t.elapsed());
        anyhow::ensure!(!d.is_fallback(), "fell back: {:?}", d.source);
    }
    let (raw_t, sdk_t) = (timing(raw_t), timing(sdk_t));
    println!(
        "sequential decide, {} candidates, {} calls each:",
        args.candidates, args.decides
    );
    print("  raw reqwest + decode", &raw_t);
    print("  tailor-sdk decide", &sdk_t);
    println!(
        "  SDK overhead per decide: {:+.1} µs (mean), {:+.1} µs (p50)",
        (sdk_t.mean.as_secs_f64() - raw_t.mean.as_secs_f64()) * 1e6,
        (sdk_t.p50.as_secs_f64() - raw_t.p50.as_secs_f64()) * 1e6
    );

    // Many page renders at once through one shared client.
    let total = args.decides * 2;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let sdk = sdk.clone();
        let body = body.clone();
        let n = total / args.concurrency + usize::from(w < total % args.concurrency);
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                sdk.decide("bench", &body).await?;
            }
            Ok::<_, tailor_sdk::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let c = sdk.counters();
    println!(
        "concurrent decide ({} tasks): {:.0} decides/s ({} fallbacks)",
        args.concurrency,
        total as f64 / secs,
        c.fallbacks
    );
    sdk.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Make `n` decisions quickly (concurrently) and return their event ids.
async fn make_events(client: &Client, campaign: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let body = request(5);
    let workers = 16;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = client.clone();
        let body = body.clone();
        let campaign = campaign.to_string();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in (w..n).step_by(workers) {
                let d = client.decide(&campaign, &body).await?;
                ids.push(
                    d.event_id()
                        .ok_or_else(|| anyhow::anyhow!("fallback"))?
                        .to_string(),
                );
            }
            Ok::<_, anyhow::Error>(ids)
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for t in tasks {
        ids.extend(t.await??);
    }
    Ok(ids)
}

async fn rewards(args: &Args, base: &str) -> anyhow::Result<()> {
    println!(
        "rewards through the batching queue ({} per run):",
        args.rewards
    );
    for (i, &batch) in args.batch_sizes.iter().enumerate() {
        let campaign = format!("rewards-{i}");
        create_campaign(base, &campaign).await?;
        let client = ClientBuilder::new(base)
            .api_key(BENCH_KEY)
            .decide_budget(Duration::from_secs(5))
            .batch_size(batch)
            .queue_capacity(args.rewards.max(1))
            .build()?;
        let events = make_events(&client, &campaign, args.rewards).await?;
        let started = Instant::now();
        for e in &events {
            client.reward(e.as_str(), 1.0)?;
        }
        let enqueue = started.elapsed();
        client.flush().await;
        let secs = started.elapsed().as_secs_f64();
        let c = client.counters();
        anyhow::ensure!(
            c.rewards_acknowledged == events.len() as u64,
            "not all acknowledged: {c:?}"
        );
        println!(
            "  batch {batch:>4}: {:>8.0} rewards/s durable end to end, {:>6} batches, reward() {:.0} ns/call",
            events.len() as f64 / secs,
            c.batches_sent,
            enqueue.as_secs_f64() * 1e9 / events.len() as f64
        );
        client.shutdown(Duration::from_secs(5)).await;
    }
    Ok(())
}

/// The bootstrap editor key of the server the bench starts.
const BENCH_KEY: &str = "sdk-bench-admin-key-0123456789";

/// A plain HTTP client sending the bench key, as the SDK does.
fn keyed_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_static("Bearer sdk-bench-admin-key-0123456789"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("tailor-sdk-bench-{}", std::process::id()));
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = args.workers;
    settings.storage.data_dir = dir.clone();
    settings.auth.admin_key = Some(BENCH_KEY.into());
    // One key drives the whole load: measure the server and the SDK, not the per-key rate limit.
    settings.rate_limits.key_per_second = 0.0;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let running = tailor_server::start(&settings)?;
        let base = format!("http://{}", running.addr);
        let handle = running.server.handle();
        tokio::spawn(running.server);
        let result = async {
            decides(&args, &base).await?;
            rewards(&args, &base).await
        }
        .await;
        handle.stop(true).await;
        result
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
