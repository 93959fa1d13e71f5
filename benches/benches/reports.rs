//! The dashboard's reports and `stats` on a campaign with many logged decisions while other
//! campaigns share the store (issue 18, item 4): the incremental aggregates (what the server
//! serves now) against the fold over the logs (what it did before), in one run.
//!
//! The store is built once, straight through the `Store` trait (a decision, its join state and
//! one reward each: explicit 1.0 for about 12 %, the default 0.0 otherwise, spread over 30 days,
//! 1,000 products, 20 % holdout), then opened by the engine, which counts everything through
//! the same path decisions and rewards take live (the replay after a crash).
//!
//! `REPORTS_DECISIONS` (default 1,000,000) sets the campaign's decisions; `REPORTS_OTHERS`
//! (default 5 × that) the decisions of the 10 other campaigns together. `REPORTS_BEFORE=0`
//! skips the fold over the logs (seconds per call at these sizes).
//!
//! Besides criterion's estimates, each call is timed 100 times after criterion and its p50 and
//! p99 printed (`reports/p50-p99 ...`).

use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use tailor_server::api::admin_api::campaign_stats;
use tailor_server::campaign::CampaignConfig;
use tailor_server::config::Settings;
use tailor_server::engine::reports;
use tailor_server::engine::Engine;
use tailor_server::store::{
    DecisionRecord, EventRecord, LoggedAction, RewardKind, RewardRecord, ServedAction, SledStore,
    SlotState, Store,
};

const TARGET: &str = "big";
const OTHERS: usize = 10;
const PRODUCTS: usize = 1_000;
const DAYS: u64 = 30;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(id: &str) -> CampaignConfig {
    serde_json::from_value(serde_json::json!({
        "id": id, "policy": {"type": "thompson"}, "holdout": 0.2
    }))
    .unwrap()
}

/// Log decisions `from..to` of the `total` of `campaign` (spread evenly over the days), with one
/// reward each.
fn log(
    store: &dyn Store,
    campaign: &str,
    (from, to, total): (usize, usize, usize),
    t0: u64,
    rng: &mut Pcg64Mcg,
) {
    let span = DAYS * 86_400_000;
    for i in from..to {
        let at_ms = t0 + (i as u64 * span) / total.max(1) as u64;
        let holdout = rng.gen_bool(0.2);
        let policy = if holdout { "baseline" } else { "thompson" };
        let action = LoggedAction {
            id: format!("sku-{}", rng.gen_range(0..PRODUCTS)),
            probability: 0.5,
            x: Default::default(),
        };
        let event_id = format!("{campaign}-{i}");
        let d = DecisionRecord {
            seq: store.next_seq().unwrap(),
            event_id: event_id.clone(),
            campaign: campaign.into(),
            at_ms,
            deadline_ms: at_ms + 600_000,
            policy: policy.into(),
            seed: 0,
            holdout,
            explore: true,
            actions: vec![action.clone()],
            candidates: 10,
            request: Vec::new(),
            removed: Vec::new(),
            candidate_set: 0,
            pinned: Default::default(),
            audience: Default::default(),
        };
        let mut event = EventRecord {
            event_id: event_id.clone(),
            campaign: campaign.into(),
            decision_seq: d.seq,
            at_ms,
            deadline_ms: d.deadline_ms,
            policy: policy.into(),
            holdout,
            actions: vec![ServedAction {
                id: action.id.clone(),
                probability: action.probability,
            }],
            slots: vec![SlotState::default()],
            closed: false,
            candidate_set: 0,
            deferred: false,
            vectors: Vec::new(),
        };
        store.log_decision(&d, &event).unwrap();
        let p = if holdout { 0.08 } else { 0.13 };
        let (kind, value) = if rng.gen_bool(p) {
            (RewardKind::Explicit, 1.0)
        } else {
            (RewardKind::Default, 0.0)
        };
        event.slots[0].value = value;
        event.slots[0].applied = true;
        event.closed = true;
        let r = RewardRecord {
            seq: store.next_seq().unwrap(),
            event_id,
            campaign: campaign.into(),
            at_ms: at_ms + 60_000,
            kind,
            slot: 0,
            action,
            value,
            holdout,
            policy: policy.into(),
        };
        store.commit_rewards(&event, &[r], true).unwrap();
    }
}

fn build(dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> Arc<Engine> {
    let settings = Settings::default();
    let open = || -> Arc<dyn Store> {
        Arc::new(
            SledStore::open(
                dir,
                settings.storage.cache_capacity_bytes,
                settings.storage.flush_every_ms,
            )
            .unwrap(),
        )
    };
    let n = env("REPORTS_DECISIONS", 1_000_000);
    let others = env("REPORTS_OTHERS", 5 * n);
    let store = open();
    let engine = rt.block_on(async { Engine::open(store.clone(), settings.engine.clone()) });
    let engine = engine.unwrap();
    engine.create_campaign(config(TARGET)).unwrap();
    for o in 0..OTHERS {
        engine
            .create_campaign(config(&format!("other-{o}")))
            .unwrap();
    }
    drop(engine);
    let started = Instant::now();
    let mut rng = Pcg64Mcg::seed_from_u64(18);
    let t0 = 1_780_000_000_000;
    // Interleaved in chunks, as campaigns share the log.
    let chunks = 100;
    for c in 0..chunks {
        let (m, k) = (n / chunks, others / OTHERS / chunks);
        log(
            store.as_ref(),
            TARGET,
            (c * m, (c + 1) * m, n),
            t0,
            &mut rng,
        );
        for o in 0..OTHERS {
            let id = format!("other-{o}");
            log(
                store.as_ref(),
                &id,
                (c * k, (c + 1) * k, others / OTHERS),
                t0,
                &mut rng,
            );
        }
        if c % 10 == 9 {
            println!(
                "reports/build: {}% logged after {:.0} s",
                c + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    rt.block_on(store.flush()).unwrap();
    let logged = started.elapsed();
    let started = Instant::now();
    let engine = rt
        .block_on(async { Engine::open(store.clone(), settings.engine.clone()) })
        .unwrap();
    println!(
        "reports/build: {} decisions in {TARGET:?} and {} in {OTHERS} others logged in {:.0} s; \
         engine open (replay through the counting path) {:.1} s",
        n / chunks * chunks,
        others / OTHERS / chunks * chunks * OTHERS,
        logged.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    engine
}

fn percentiles(label: &str, mut f: impl FnMut()) {
    let mut t: Vec<f64> = (0..100)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    println!(
        "reports/p50-p99 {label:<28} p50 {:>9.3} ms  p99 {:>9.3} ms",
        t[49], t[98]
    );
}

fn bench_reports(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = build(dir.path(), &rt);
    let e = engine.as_ref();
    let campaign = engine.campaign(TARGET).unwrap();

    let mut group = c.benchmark_group("reports_incremental");
    group.bench_function("actions", |b| b.iter(|| e.actions_report(TARGET).unwrap()));
    group.bench_function("hidden_gems", |b| {
        b.iter(|| e.gems_report(TARGET, None).unwrap())
    });
    group.bench_function("lift/day", |b| {
        b.iter(|| e.lift_report(TARGET, 86_400).unwrap())
    });
    group.bench_function("lift/hour", |b| {
        b.iter(|| e.lift_report(TARGET, 3_600).unwrap())
    });
    group.bench_function("policies/day", |b| {
        b.iter(|| e.policies_report(TARGET, 86_400).unwrap())
    });
    group.bench_function("stats", |b| b.iter(|| campaign_stats(&campaign)));
    group.finish();
    percentiles("incremental/actions", || {
        e.actions_report(TARGET).unwrap();
    });
    percentiles("incremental/hidden_gems", || {
        e.gems_report(TARGET, None).unwrap();
    });
    percentiles("incremental/lift/day", || {
        e.lift_report(TARGET, 86_400).unwrap();
    });
    percentiles("incremental/lift/hour", || {
        e.lift_report(TARGET, 3_600).unwrap();
    });
    percentiles("incremental/policies/day", || {
        e.policies_report(TARGET, 86_400).unwrap();
    });
    percentiles("stats", || {
        campaign_stats(&campaign);
    });

    if env("REPORTS_BEFORE", 1) == 0 {
        return;
    }
    // The fold over the logs, as every report did before (and affinity and sub-hour buckets
    // still do).
    let range = campaign.config.reward_range;
    let store = engine.store().clone();
    let mut group = c.benchmark_group("reports_log_fold");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(1));
    group.measurement_time(std::time::Duration::from_millis(1));
    group.bench_function("actions", |b| {
        b.iter(|| {
            reports::fold(
                store.as_ref(),
                TARGET,
                range,
                None,
                reports::ActionsFold::default(),
            )
            .unwrap()
        })
    });
    group.bench_function("lift/day", |b| {
        b.iter(|| {
            reports::fold(
                store.as_ref(),
                TARGET,
                range,
                None,
                reports::LiftFold::new(86_400),
            )
            .unwrap()
        })
    });
    group.finish();
    // Same numbers both ways (the equivalence tests check all reports; this is a spot check).
    let folded = reports::fold(
        store.as_ref(),
        TARGET,
        range,
        None,
        reports::LiftFold::new(86_400),
    )
    .unwrap();
    let inc = e.lift_report(TARGET, 86_400).unwrap();
    assert_eq!(
        folded.total.personalized.decisions,
        inc.total.personalized.decisions
    );
    assert_eq!(folded.total.holdout.decisions, inc.total.holdout.decisions);
    assert!(
        (folded.total.personalized.reward_sum - inc.total.personalized.reward_sum).abs() < 1e-6
    );
}

criterion_group!(benches, bench_reports);
criterion_main!(benches);
