//! Off-policy evaluation throughput (logged events/s) on a 1M-event synthetic log (issue 9).
//!
//! Not criterion: one timed pass per configuration is the honest unit here (a pass over 1M
//! events takes seconds, and replayed learning makes passes stateful). Run with
//! `cargo bench -p tailor-benches --bench ope`; `OPE_EVENTS=100000` shortens it.
//!
//! * `estimators`: the pure estimators (`tailor_policies::ope`) on pre-built vectors.
//! * `server path`: `tailor_server::ope::Evaluator` on log lines (JSON features → featurizer →
//!   estimators), what `POST .../evaluations` and `tailor evaluate` do per decision.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde_json::json;
use tailor_policies::ope::{
    Guards, LoggedEvent, LoggedSlot, OffPolicyRun, RewardModelConfig, Target,
};
use tailor_policies::{Arm, FeaturizerConfig, PolicyConfig, SparseFeatures};
use tailor_sdk::wire::Candidate;
use tailor_server::campaign::CampaignConfig;
use tailor_server::ope::log::{LogAction, LogLine};
use tailor_server::ope::{EvaluationRequest, Evaluator};

const CANDIDATES: usize = 10;

fn events() -> usize {
    std::env::var("OPE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn report(label: &str, n: usize, secs: f64) {
    println!(
        "ope/{label:<48} {n} events in {secs:>7.2} s = {:>10.0} events/s",
        n as f64 / secs
    );
}

fn estimators(n: usize, targets: &[(&str, PolicyConfig, bool)], model: RewardModelConfig) {
    let featurizer = FeaturizerConfig {
        dimension: 32,
        ..Default::default()
    }
    .build()
    .unwrap();
    let d = featurizer.dimension();
    let ids: Vec<String> = (0..CANDIDATES).map(|i| format!("sku-{i}")).collect();
    // Four contexts: vectors prebuilt once, as a log of repeated shopper segments would be.
    let vectors: Vec<Vec<_>> = (0..4)
        .map(|c| {
            let mut ctx = SparseFeatures::new();
            ctx.push_categorical("", "segment", &format!("s{c}"));
            ids.iter()
                .map(|id| {
                    let mut f = SparseFeatures::new();
                    f.push_categorical("", "category", &id[..5]);
                    featurizer.vector(&ctx, id, &f)
                })
                .collect()
        })
        .collect();
    let mut run = OffPolicyRun::new(
        Guards::default(),
        model.build(d).unwrap(),
        targets
            .iter()
            .map(|(name, c, learns)| {
                let p = c.build(d).unwrap();
                if *learns {
                    Target::replayed(*name, p, 0.0)
                } else {
                    Target::frozen(*name, p, 0.0)
                }
            })
            .collect(),
    );
    let mut rng = Pcg64Mcg::seed_from_u64(7);
    let label = format!(
        "estimators/{}",
        targets.iter().map(|t| t.0).collect::<Vec<_>>().join("+")
    );
    let start = Instant::now();
    for _ in 0..n {
        let c = rng.gen_range(0..4);
        let arms: Vec<Arm<'_>> = ids
            .iter()
            .zip(&vectors[c])
            .map(|(id, x)| Arm { id, x })
            .collect();
        let a = rng.gen_range(0..CANDIDATES);
        let slots = [LoggedSlot {
            index: a,
            propensity: Some(1.0 / CANDIDATES as f64),
            reward: f64::from(u8::from(rng.gen_bool(0.1 + 0.05 * (a % 4) as f64))),
            pinned: false,
        }];
        run.push(&LoggedEvent {
            arms: &arms,
            slots: &slots,
            explore: true,
        });
    }
    let report_ = run.finish();
    assert_eq!(report_.used, n as u64);
    report(&label, n, start.elapsed().as_secs_f64());
}

fn server_path(n: usize) {
    let campaign: CampaignConfig = serde_json::from_value(json!({
        "id": "bench",
        "policy": {"type": "thompson"},
        "shadow_policies": [{"type": "linucb"}],
        "featurizer": {"dimension": 32},
    }))
    .unwrap();
    let mut rng = Pcg64Mcg::seed_from_u64(8);
    let lines: Vec<LogLine> = (0..n)
        .map(|i| {
            let a = rng.gen_range(0..CANDIDATES);
            LogLine {
                event_id: format!("e{i}"),
                at_ms: i as u64,
                context: json!({"segment": format!("s{}", i % 4), "device": "mobile"}),
                candidates: (0..CANDIDATES)
                    .map(|j| Candidate {
                        id: format!("sku-{j}"),
                        features: json!({"category": format!("c{}", j % 3), "price": 10.0 + j as f64}),
                        attributes: serde_json::Value::Null,
                    })
                    .collect(),
                actions: vec![LogAction {
                    id: format!("sku-{a}"),
                    probability: Some(1.0 / CANDIDATES as f64),
                    reward: Some(f64::from(u8::from(rng.gen_bool(0.1)))),
                    pinned: false,
                }],
                policy: "uniform".into(),
                explore: true,
                holdout: false,
            }
        })
        .collect();
    let mut ev = Evaluator::new(&campaign, EvaluationRequest::default(), None).unwrap();
    let start = Instant::now();
    for l in &lines {
        ev.push(l);
    }
    let out = ev.finish();
    assert_eq!(out.used, n as u64);
    report(
        "server path (thompson+linucb+uniform+baseline)",
        n,
        start.elapsed().as_secs_f64(),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that quick.
    let n = if std::env::args().any(|a| a == "--bench") {
        events()
    } else {
        1_000
    };
    estimators(
        n,
        &[
            ("uniform", PolicyConfig::Uniform {}, false),
            ("baseline", PolicyConfig::Fixed {}, false),
        ],
        RewardModelConfig::Mean {},
    );
    estimators(
        n,
        &[(
            "linucb",
            PolicyConfig::LinUcb {
                alpha: 1.0,
                lambda: 1.0,
                half_life: None,
            },
            true,
        )],
        RewardModelConfig::default(),
    );
    estimators(
        n,
        &[("thompson", PolicyConfig::default(), true)],
        RewardModelConfig::Mean {},
    );
    server_path(n);
}
