//! Issue 17: a `kill -9` loop. Workers stream decides and rewards over HTTP into the real server;
//! at a random moment of each cycle the server is killed without warning and restarted on the
//! same data directory. At the end every acknowledged reward must be counted exactly once.
//!
//! The check: after the last restart each reward is sent again with the same value. An
//! acknowledged reward must come back `duplicate` (`accepted` or `event_not_found` means it was
//! lost). A reward whose answer the kill cut off resolves either way (`accepted`: it had not been
//! applied, now it is; `duplicate`: it had been), or `event_not_found` when its decision, never
//! flushed, went with the kill. Then every reward that exists is applied once, so the campaign's
//! reward count and each action's count and sum must equal what the decisions and values add up
//! to; anything over is a doubled reward.
//!
//! CI runs [`kill9_loop_counts_every_acknowledged_reward_once`] (4 cycles). By hand:
//! `cargo run -p tailor-tests --bin killloop -- --cycles 200` (docs/security/adversarial.md).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::harness::Server;

const CAMPAIGN: &str = "killloop";
const CANDIDATES: usize = 5;

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct Options {
    pub cycles: u32,
    pub seed: u64,
    /// Concurrent decide-then-reward streams.
    pub workers: usize,
    /// Each cycle's traffic runs for a random time in `min_run_ms..max_run_ms` before the kill.
    pub min_run_ms: u64,
    pub max_run_ms: u64,
    /// Print one line per cycle.
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cycles: 4,
            seed: 17,
            workers: 4,
            min_run_ms: 50,
            max_run_ms: 700,
            verbose: false,
        }
    }
}

/// What a run saw. `lost` and `doubled` must be zero.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub cycles: u32,
    /// Decisions answered 200.
    pub decisions: u64,
    /// Rewards answered 200 `accepted`.
    pub acknowledged: u64,
    /// Rewards whose answer the kill cut off (or that got an error status).
    pub unacknowledged: u64,
    /// Of those, found applied before the check re-sent them.
    pub unacknowledged_applied: u64,
    /// Of those, whose decision did not survive the kill (never acknowledged either).
    pub unacknowledged_decision_lost: u64,
    /// Acknowledged rewards missing after the restarts.
    pub lost: u64,
    /// Rewards counted more than once.
    pub doubled: u64,
}

/// A reward as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Acknowledged,
    Unknown,
}

#[derive(Debug, Clone)]
struct Sent {
    event_id: String,
    action: String,
    value: f64,
    outcome: Outcome,
}

/// Run the loop in `dir` (a fresh directory).
pub async fn run(dir: &Path, opts: &Options) -> Report {
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(opts.seed);
    // Snapshots every 300 ms: kills land before, during and after them, so recovery mixes a
    // snapshot with a replayed log tail. Rate limits off: the check re-sends every reward of
    // every cycle as fast as the server answers (tens of thousands by hand), which is not what
    // this loop tests (429s were answered past ~35,000 rewards).
    let mut server = Server::start(
        dir,
        &[
            ("TAILOR__ENGINE__SNAPSHOT_INTERVAL_MS", "300"),
            ("TAILOR__RATE_LIMITS__KEY_PER_SECOND", "0"),
        ],
    )
    .await;
    server
        .create_campaign(json!({
            "id": CAMPAIGN, "policy": {"type": "thompson"},
            // No window closes during the run: a default reward would blur the count.
            "reward_wait_seconds": 86_400.0,
            // The values below run to 2.25, distinct so that a doubled reward shows in the sums.
            "reward_range": [0.0, 3.0]
        }))
        .await;
    let next_event = Arc::new(AtomicU64::new(0));
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let decisions = Arc::new(AtomicU64::new(0));
    let mut report = Report::default();
    for cycle in 0..opts.cycles {
        let before = sent.lock().unwrap().len();
        let mut workers = Vec::with_capacity(opts.workers);
        for w in 0..opts.workers {
            let client = server.client.clone();
            let base = server.base.clone();
            let next_event = next_event.clone();
            let sent = sent.clone();
            let decisions = decisions.clone();
            workers.push(tokio::spawn(async move {
                stream(client, base, w, next_event, sent, decisions).await
            }));
        }
        let run_ms = rng.gen_range(opts.min_run_ms..=opts.max_run_ms.max(opts.min_run_ms));
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        server.kill9();
        for w in workers {
            w.await.expect("worker panicked");
        }
        server.restart().await;
        report.cycles += 1;
        if opts.verbose {
            let s = sent.lock().unwrap();
            let new = &s[before..];
            let acked = new
                .iter()
                .filter(|r| r.outcome == Outcome::Acknowledged)
                .count();
            println!(
                "cycle {}: killed after {run_ms} ms; {acked} rewards acknowledged, {} cut off",
                cycle + 1,
                new.len() - acked
            );
        }
    }
    report.decisions = decisions.load(Ordering::Relaxed);
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    check(&server, &sent, &mut report).await;
    report
}

/// One worker: decide, then reward the chosen action, until the server goes away.
async fn stream(
    client: reqwest::Client,
    base: String,
    worker: usize,
    next_event: Arc<AtomicU64>,
    sent: Arc<Mutex<Vec<Sent>>>,
    decisions: Arc<AtomicU64>,
) {
    let candidates: Vec<Value> = (0..CANDIDATES)
        .map(|i| json!({"id": format!("sku-{i}")}))
        .collect();
    loop {
        let n = next_event.fetch_add(1, Ordering::Relaxed);
        let event_id = format!("ev-{n}");
        let decide = client
            .post(format!("{base}/v1/campaigns/{CAMPAIGN}/decide"))
            .json(&json!({
                "candidates": candidates,
                "event_id": event_id,
                "context": {"worker": worker}
            }))
            .send()
            .await;
        let Ok(r) = decide else { return };
        if r.status().as_u16() != 200 {
            return;
        }
        let Ok(body) = r.json::<Value>().await else {
            return;
        };
        decisions.fetch_add(1, Ordering::Relaxed);
        let action = body["actions"][0]["id"]
            .as_str()
            .expect("a decision names its action")
            .to_string();
        // Distinct values so that a doubled reward shows in the sums as well as the counts.
        let value = 0.25 * (n % 8) as f64 + 0.5;
        let reward = client
            .post(format!("{base}/v1/events/{event_id}/reward"))
            .json(&json!({"value": value}))
            .send()
            .await;
        let outcome = match reward {
            Ok(r) if r.status().as_u16() == 200 => match r.json::<Value>().await {
                Ok(v) => {
                    assert_eq!(
                        v["status"], "accepted",
                        "the first reward of {event_id}: {v}"
                    );
                    Outcome::Acknowledged
                }
                Err(_) => Outcome::Unknown,
            },
            _ => Outcome::Unknown,
        };
        sent.lock().unwrap().push(Sent {
            event_id,
            action,
            value,
            outcome,
        });
        if outcome == Outcome::Unknown {
            return;
        }
    }
}

/// Re-send every reward and compare the counts (see the module doc).
async fn check(server: &Server, sent: &[Sent], report: &mut Report) {
    let mut expected: HashMap<&str, (u64, f64)> = HashMap::new();
    for s in sent {
        let (status, body) = server
            .post(
                &format!("/v1/events/{}/reward", s.event_id),
                &json!({"value": s.value}),
            )
            .await;
        let answer = if status == 200 {
            body["status"].as_str().unwrap_or("").to_string()
        } else {
            body["error"]["code"].as_str().unwrap_or("").to_string()
        };
        let applied = match (s.outcome, answer.as_str()) {
            (Outcome::Acknowledged, "duplicate") => true,
            (Outcome::Acknowledged, "accepted" | "event_not_found") => {
                report.lost += 1;
                answer == "accepted"
            }
            (Outcome::Unknown, "duplicate") => {
                report.unacknowledged_applied += 1;
                true
            }
            (Outcome::Unknown, "accepted") => true,
            (Outcome::Unknown, "event_not_found") => {
                report.unacknowledged_decision_lost += 1;
                false
            }
            (_, other) => panic!("re-sending {}: {status} {other}: {body}", s.event_id),
        };
        match s.outcome {
            Outcome::Acknowledged => report.acknowledged += 1,
            Outcome::Unknown => report.unacknowledged += 1,
        }
        if applied {
            let e = expected.entry(&s.action).or_default();
            e.0 += 1;
            e.1 += s.value;
        }
    }
    let stats = server.stats(CAMPAIGN).await;
    let total: u64 = expected.values().map(|e| e.0).sum();
    let counted = stats["rewards"].as_u64().expect("stats.rewards");
    // Every reward that exists has been applied by now; fewer counted means some went missing
    // after being answered `duplicate`.
    report.lost += total.saturating_sub(counted);
    let mut doubled = 0;
    for i in 0..CANDIDATES {
        let id = format!("sku-{i}");
        let (count, sum) = expected.get(id.as_str()).copied().unwrap_or_default();
        let a = crate::harness::action(&stats, &id);
        let got_count = a.and_then(|a| a["rewards"].as_u64()).unwrap_or(0);
        let got_sum = a.and_then(|a| a["reward_sum"].as_f64()).unwrap_or(0.0);
        doubled += got_count.saturating_sub(count);
        if got_count == count {
            assert!(
                (got_sum - sum).abs() < 1e-6 * sum.max(1.0),
                "{id}: reward sum {got_sum}, expected {sum}: {stats}"
            );
        }
    }
    report.doubled = doubled.max(counted.saturating_sub(total));
}

/// The bounded CI form: 4 cycles.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_loop_counts_every_acknowledged_reward_once() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(dir.path(), &Options::default()).await;
    eprintln!("{report:?}");
    assert_eq!(report.cycles, 4);
    assert!(report.acknowledged > 0, "{report:?}");
    assert_eq!((report.lost, report.doubled), (0, 0), "{report:?}");
}
