//! Cluster-mode load generator (issue 19, docs/scale-out.md "Benchmarks"): the real `tailor`
//! binary as separate processes, single-node mode and 1, 2 and 3 replicas on one NATS
//! JetStream server, in one run.
//!
//! For each setup: decide throughput (fresh event ids, round-robin over the replicas), then
//! reward throughput (one reward per decided event, sent to another replica than the one that
//! decided when there are several), with p50/p99 latency. In cluster mode one more replica,
//! the *follower*, takes no requests: its CPU time (utime + stime from /proc) over the events it
//! applied is the cost of following the stream. Then, at moderate load (`--rate` decide+reward
//! pairs per second), the reward acknowledgement latency and the learning lag: a probe reward
//! on one replica, acknowledged, then polled on every replica until its digest counts it.
//!
//! ```text
//! cargo build --release -p tailor-cli -p tailor-benches
//! bash scripts/setup/40-nats.sh
//! target/release/cluster_bench --seconds 10 --concurrency 16
//! ```

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
struct Args {
    /// Seconds of decide load, then of reward load, per setup.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent in-flight requests for the throughput phases.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Decide+reward pairs per second in the moderate-load phase.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Seconds of the moderate-load phase.
    #[arg(long, default_value_t = 10)]
    moderate_seconds: u64,
    /// Replica counts to run (single-node mode always runs first).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    replicas: Vec<usize>,
    /// The `tailor` binary (default: target/release/tailor).
    #[arg(long)]
    tailor: Option<PathBuf>,
    /// The `nats-server` binary (default: target/natsenv/bin/nats-server).
    #[arg(long)]
    nats: Option<PathBuf>,
}

const KEY: &str = "cluster-bench-admin-key-0123456789";
const CAMPAIGN: &str = "bench";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// utime + stime of the process, seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap();
        // Fields after the command name (which is in parentheses).
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        ticks / 100.0
    }
}

fn start_nats(bin: &Path, dir: &Path) -> (Proc, String) {
    let port = free_port();
    let mut child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting nats-server");
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("Server is ready") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("nats-server not ready");
    (Proc(child), format!("nats://127.0.0.1:{port}"))
}

fn start_tailor(bin: &Path, dir: &Path, cluster: Option<(&str, &str)>) -> (Proc, String) {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("TAILOR_ADMIN_KEY", KEY)
        .env("TAILOR__RATE_LIMITS__KEY_PER_SECOND", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((servers, node)) = cluster {
        cmd.args(["--cluster", servers])
            .env("TAILOR__CLUSTER__NODE_ID", node);
    }
    let mut child = cmd.spawn().expect("starting tailor");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    if let Some(rest) = line.split("addr=").nth(1) {
                        let _ = tx.send(rest.split_whitespace().next().unwrap_or("").into());
                    }
                }
                if line.contains("ERROR") {
                    eprintln!("[tailor] {line}");
                }
            }
        });
    }
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("tailor did not report its address");
    (Proc(child), format!("http://{addr}"))
}

fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {KEY}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(256)
        .build()
        .unwrap()
}

fn decide_body(event: &str) -> Value {
    json!({
        "event_id": event,
        "context": {"device": "mobile", "hour": 13},
        "candidates": (0..20).map(|i| json!({"id": format!("sku-{i}")})).collect::<Vec<_>>()
    })
}

/// Latencies (µs, sorted) and counts of one phase.
struct Report {
    ok: u64,
    errors: u64,
    seconds: f64,
    lat: Vec<u32>,
}

impl Report {
    fn pct(&self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return f64::NAN;
        }
        self.lat[((self.lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
    }
    fn line(&self, what: &str) -> String {
        format!(
            "{what:<9} {:>8.0}/s  p50 {:>6.2} ms  p99 {:>7.2} ms  ({} ok, {} errors)",
            self.ok as f64 / self.seconds,
            self.pct(0.5),
            self.pct(0.99),
            self.ok,
            self.errors
        )
    }
}

/// Run `f(i)` from `concurrency` tasks for `seconds` (or until `limit` calls were made).
async fn drive<F, Fut>(seconds: u64, concurrency: usize, limit: u64, f: F) -> Report
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (f, next, stop) = (f.clone(), next.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let t0 = Instant::now();
                if f(i).await {
                    lat.push(t0.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let deadline = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if next.load(Ordering::Relaxed) >= limit { break; }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    Report {
        ok: lat.len() as u64,
        errors,
        seconds,
        lat,
    }
}

async fn post(c: &reqwest::Client, url: String, body: &Value) -> Option<Value> {
    let r = c.post(url).json(body).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

async fn digest(c: &reqwest::Client, base: &str) -> Value {
    c.get(format!("{base}/admin/v1/campaigns/{CAMPAIGN}/digest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn until_served(c: &reqwest::Client, bases: &[String]) {
    for b in bases {
        loop {
            let r = c
                .get(format!("{b}/admin/v1/campaigns/{CAMPAIGN}"))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Wait until every base reports `applied_seq` >= the first's (all caught up).
async fn until_caught_up(c: &reqwest::Client, bases: &[String]) -> u64 {
    loop {
        let mut seqs = Vec::new();
        for b in bases {
            seqs.push(digest(c, b).await["applied_seq"].as_u64().unwrap_or(0));
        }
        let max = *seqs.iter().max().unwrap();
        if seqs.iter().all(|s| *s == max) {
            return max;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One setup: `replicas` = 0 is single-node mode.
async fn run_setup(args: &Args, tailor: &Path, nats: &Path, replicas: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let c = client();
    let mut procs = Vec::new();
    let mut bases = Vec::new();
    let mut follower = None;
    let _nats;
    if replicas == 0 {
        let (p, base) = start_tailor(tailor, &tmp.path().join("single"), None);
        procs.push(p);
        bases.push(base);
    } else {
        let (p, url) = start_nats(nats, &tmp.path().join("nats"));
        _nats = p;
        for i in 0..replicas {
            let (p, base) = start_tailor(
                tailor,
                &tmp.path().join(format!("r{i}")),
                Some((&url, &format!("r{i}"))),
            );
            procs.push(p);
            bases.push(base);
        }
        follower = Some(start_tailor(
            tailor,
            &tmp.path().join("follower"),
            Some((&url, "follower")),
        ));
    }
    let r = c
        .post(format!("{}/admin/v1/campaigns", bases[0]))
        .json(&json!({"id": CAMPAIGN, "policy": {"type": "thompson"}, "reward_wait_seconds": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let mut all = bases.clone();
    if let Some((_, b)) = &follower {
        all.push(b.clone());
    }
    until_served(&c, &all).await;
    let name = if replicas == 0 {
        "single node".to_string()
    } else {
        format!("{replicas} replica(s)")
    };

    let follower_cpu0 = follower.as_ref().map(|(p, _)| p.cpu_seconds());
    let seq0 = match &follower {
        Some((_, b)) => digest(&c, b).await["applied_seq"].as_u64().unwrap_or(0),
        None => 0,
    };
    let bases = Arc::new(bases);
    let (cd, bd) = (c.clone(), bases.clone());
    let decide = drive(args.seconds, args.concurrency, u64::MAX, move |i| {
        let (c, b) = (cd.clone(), bd.clone());
        async move {
            let base = &b[i as usize % b.len()];
            post(
                &c,
                format!("{base}/v1/campaigns/{CAMPAIGN}/decide"),
                &decide_body(&format!("e{i}")),
            )
            .await
            .is_some()
        }
    })
    .await;
    let decided = decide.ok + decide.errors;
    let (cr, br) = (c.clone(), bases.clone());
    let reward = drive(args.seconds, args.concurrency, decided, move |i| {
        let (c, b) = (cr.clone(), br.clone());
        async move {
            let base = &b[(i as usize + 1) % b.len()];
            post(
                &c,
                format!("{base}/v1/campaigns/{CAMPAIGN}/events/e{i}/reward"),
                &json!({"value": (i % 3 == 0) as u8 as f64}),
            )
            .await
            .is_some_and(|v| v["status"] == "accepted")
        }
    })
    .await;
    println!("{name:<14} {}", decide.line("decide"));
    println!("{name:<14} {}", reward.line("reward"));
    if let Some((p, fb)) = &follower {
        let mut all = bases.as_ref().clone();
        all.push(fb.clone());
        let seq1 = until_caught_up(&c, &all).await;
        let cpu = p.cpu_seconds() - follower_cpu0.unwrap();
        let events = seq1.saturating_sub(seq0);
        println!(
            "{name:<14} follower: {events} events applied, {:.1} s CPU, {:.1} µs CPU per applied event (incl. ticks)",
            cpu,
            cpu * 1e6 / events.max(1) as f64
        );
    }
    if replicas == 0 {
        return;
    }

    // Moderate load: `rate` decide+reward pairs per second, reward latency, and probes of the
    // learning lag.
    let stop = Arc::new(AtomicBool::new(false));
    let period = Duration::from_secs_f64(4.0 / args.rate as f64);
    let mut load = Vec::new();
    for t in 0..4u64 {
        let (c, b, stop) = (c.clone(), bases.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            let mut lat = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let event = format!("m{t}-{i}");
                let d = &b[i as usize % b.len()];
                let r = &b[(i as usize + 1) % b.len()];
                i += 1;
                if post(
                    &c,
                    format!("{d}/v1/campaigns/{CAMPAIGN}/decide"),
                    &decide_body(&event),
                )
                .await
                .is_none()
                {
                    continue;
                }
                let t0 = Instant::now();
                if post(
                    &c,
                    format!("{r}/v1/campaigns/{CAMPAIGN}/events/{event}/reward"),
                    &json!({"value": 1.0}),
                )
                .await
                .is_some()
                {
                    lat.push(t0.elapsed().as_micros() as u32);
                }
            }
            lat
        }));
    }
    let mut lags = Vec::new();
    let started = Instant::now();
    let mut probe = 0;
    while started.elapsed() < Duration::from_secs(args.moderate_seconds) {
        let event = format!("probe-{probe}");
        let on = &bases[probe % bases.len()];
        probe += 1;
        if post(
            &c,
            format!("{on}/v1/campaigns/{CAMPAIGN}/decide"),
            &decide_body(&event),
        )
        .await
        .is_none()
        {
            continue;
        }
        // The answering replica applied the reward before it answered: its applied sequence
        // right after the ack is at or past the reward's; the lag is until every replica
        // reached it (an upper bound: it includes the polls' round trips).
        let r = &bases[probe % bases.len()];
        if post(
            &c,
            format!("{r}/v1/campaigns/{CAMPAIGN}/events/{event}/reward"),
            &json!({"value": 0.5}),
        )
        .await
        .is_none()
        {
            continue;
        }
        let acked = Instant::now();
        let target = digest(&c, r).await["applied_seq"].as_u64().unwrap_or(0);
        let mut worst = Duration::ZERO;
        for b in bases.iter() {
            loop {
                let seq = digest(&c, b).await["applied_seq"].as_u64().unwrap_or(0);
                if seq >= target {
                    worst = worst.max(acked.elapsed());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        lags.push(worst.as_micros() as u32);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for l in load {
        lat.extend(l.await.unwrap());
    }
    lat.sort_unstable();
    lags.sort_unstable();
    let pct = |v: &[u32], p: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
        }
    };
    println!(
        "{name:<14} moderate load {}/s: reward ack p50 {:.2} ms p99 {:.2} ms ({} rewards); learning lag p50 {:.2} ms p99 {:.2} ms ({} probes)",
        args.rate,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len(),
        pct(&lags, 0.5),
        pct(&lags, 0.99),
        lags.len()
    );
    drop(procs);
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tailor = args
        .tailor
        .clone()
        .unwrap_or_else(|| workspace().join("target/release/tailor"));
    let nats = args
        .nats
        .clone()
        .unwrap_or_else(|| workspace().join("target/natsenv/bin/nats-server"));
    anyhow::ensure!(tailor.exists(), "{} is missing", tailor.display());
    anyhow::ensure!(nats.exists(), "{} is missing", nats.display());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "cluster bench: {} s decide + {} s reward at {} concurrent, moderate load {}/s for {} s; {} core(s); load average {}",
        args.seconds,
        args.seconds,
        args.concurrency,
        args.rate,
        args.moderate_seconds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        run_setup(&args, &tailor, &nats, 0).await;
        for &n in &args.replicas {
            run_setup(&args, &tailor, &nats, n).await;
        }
    });
    Ok(())
}
