//! In-process decide through the engine (featurize, choose with propensity, log to sled):
//! Thompson and LinUCB over 10/100/1000 candidates; the same from the request bytes (parse
//! included) on issue 18's two target shapes, and each stage of it on its own (parse, featurize,
//! choose, log) so the sum can be read against the whole.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;
use tailor_benches::{create_target_campaigns, decide_body, engine, target_shapes};
use tailor_policies::{Arm, Featurizer, FeaturizerConfig, Policy, PolicyConfig, SparseVec};
use tailor_sdk::wire::DecideRequest;
use tailor_server::engine::{DecideInput, Engine};
use tailor_server::store::{DecisionRecord, EventRecord, LoggedAction, ServedAction, SlotState};

fn bench_decide(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &rt);
    create_target_campaigns(&engine);
    let mut group = c.benchmark_group("engine_decide");
    for n in [10usize, 100, 1000] {
        let body = decide_body(n, 1);
        let raw = serde_json::to_vec(&body).unwrap();
        group.throughput(Throughput::Elements(1));
        for name in ["thompson", "linucb_d32"] {
            group.bench_function(format!("{name}/candidates={n}"), |b| {
                b.iter_batched(
                    || DecideInput::parse(raw.clone()).unwrap(),
                    |input| engine.decide_items(name, input).unwrap(),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_decide, bench_from_bytes, bench_stages);

/// In-process decide from the request bytes: parse, validate, featurize, choose, log (sled).
fn bench_from_bytes(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &rt);
    create_target_campaigns(&engine);
    let mut group = c.benchmark_group("decide_from_bytes");
    group.throughput(Throughput::Elements(1));
    for (name, raw) in target_shapes() {
        group.bench_function(format!("{name}/candidates=100"), |b| {
            b.iter(|| decide_bytes(&engine, name, &raw))
        });
    }
    group.finish();
}

/// One decide from bytes, through the path the HTTP handler takes.
fn decide_bytes(engine: &Engine, campaign: &str, raw: &[u8]) -> tailor_sdk::wire::DecideResponse {
    engine
        .decide_items(campaign, DecideInput::parse(raw.to_vec()).unwrap())
        .unwrap()
}

/// Each stage of [`decide_bytes`] alone, on the same shapes.
fn bench_stages(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &rt);
    let featurizer = FeaturizerConfig {
        dimension: 32,
        ..FeaturizerConfig::default()
    }
    .build()
    .unwrap();
    let mut group = c.benchmark_group("decide_stage");
    group.throughput(Throughput::Elements(1));
    for ((name, raw), policy) in target_shapes().into_iter().zip([
        serde_json::json!({"type": "thompson"}),
        serde_json::json!({"type": "linucb", "alpha": 1.0}),
    ]) {
        let config: PolicyConfig = serde_json::from_value(policy).unwrap();
        let reads_x = config.uses_features();
        let policy: Policy = config.build(32).unwrap();
        group.bench_function(format!("parse/{name}"), |b| b.iter(|| stages::parse(&raw)));
        let parsed = stages::parse(&raw);
        group.bench_function(format!("featurize/{name}"), |b| {
            b.iter(|| stages::featurize(&parsed, &featurizer, reads_x))
        });
        // The `Value` path the decide took before issue 18, side by side.
        group.bench_function(format!("parse_value/{name}"), |b| {
            b.iter(|| stages::parse_value(&raw))
        });
        let values = stages::parse_value(&raw);
        group.bench_function(format!("featurize_value/{name}"), |b| {
            b.iter(|| stages::featurize_value(&values, &featurizer, reads_x))
        });
        let (ids, vectors) = stages::featurize(&parsed, &featurizer, reads_x);
        assert_eq!(
            (ids.clone(), vectors.clone()),
            stages::featurize_value(&values, &featurizer, reads_x)
        );
        let empty = SparseVec::default();
        let arms: Vec<Arm<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Arm {
                id,
                x: vectors.get(i).unwrap_or(&empty),
            })
            .collect();
        let mut rng = Pcg64Mcg::seed_from_u64(7);
        group.bench_function(format!("choose/{name}"), |b| {
            b.iter(|| {
                policy
                    .choose_with_exploration(&arms, 1, true, 0.0, &mut rng)
                    .unwrap()
            })
        });
        let action = LoggedAction {
            id: ids[0].clone(),
            probability: 0.01,
            x: vectors.first().cloned().unwrap_or_default(),
        };
        let mut n = 0u64;
        let store = engine.store();
        group.bench_function(format!("log/{name}"), |b| {
            b.iter(|| {
                n += 1;
                let seq = store.next_seq().unwrap();
                let decision = DecisionRecord {
                    seq,
                    event_id: format!("{n:032x}"),
                    campaign: name.to_string(),
                    at_ms: 1_700_000_000_000,
                    deadline_ms: 1_700_000_600_000,
                    policy: "p".into(),
                    seed: n,
                    holdout: false,
                    explore: true,
                    actions: vec![action.clone()],
                    candidates: 100,
                    // Campaigns log requests only when asked (`log_requests`).
                    request: Vec::new(),
                    removed: Vec::new(),
                    candidate_set: 1,
                    pinned: Default::default(),
                    audience: Default::default(),
                };
                let event = EventRecord {
                    event_id: decision.event_id.clone(),
                    campaign: decision.campaign.clone(),
                    decision_seq: seq,
                    at_ms: decision.at_ms,
                    deadline_ms: decision.deadline_ms,
                    policy: decision.policy.clone(),
                    holdout: false,
                    actions: vec![ServedAction {
                        id: action.id.clone(),
                        probability: action.probability,
                    }],
                    slots: vec![SlotState::default()],
                    closed: false,
                    candidate_set: 1,
                    deferred: false,
                    vectors: Vec::new(),
                };
                store.log_decision(&decision, &event).unwrap();
            })
        });
    }
    group.finish();
}

/// The parse and featurize stages as the engine runs them, and as it ran them before issue 18.
mod stages {
    use super::*;
    use tailor_policies::VectorScratch;
    use tailor_server::engine::featurize;
    use tailor_server::engine::parse::ItemsRequest;

    pub fn parse(raw: &[u8]) -> ItemsRequest {
        ItemsRequest::parse(raw).unwrap()
    }

    /// Features checked, vectors built when the policy reads them.
    pub fn featurize(
        req: &ItemsRequest,
        featurizer: &Featurizer,
        reads_x: bool,
    ) -> (Vec<String>, Vec<SparseVec>) {
        assert!(req.context_error().is_none());
        for i in 0..req.len() {
            assert!(req.features_error(i).is_none());
        }
        let vectors = if reads_x {
            let keys = featurizer.context_keys(req.context());
            let mut scratch = VectorScratch::default();
            (0..req.len())
                .map(|i| featurizer.vector_with(&keys, req.id(i), req.features(i), &mut scratch))
                .collect()
        } else {
            Vec::new()
        };
        (req.ids().map(str::to_string).collect(), vectors)
    }

    pub fn parse_value(raw: &[u8]) -> DecideRequest {
        tailor_server::api::body::parse(raw).unwrap()
    }

    /// Validated feature bags of every candidate, and vectors when the policy reads them.
    pub fn featurize_value(
        req: &DecideRequest,
        featurizer: &Featurizer,
        reads_x: bool,
    ) -> (Vec<String>, Vec<SparseVec>) {
        let context = featurize::features("context", &req.context).unwrap();
        let mut bags = Vec::with_capacity(req.candidates.len());
        for (i, c) in req.candidates.iter().enumerate() {
            bags.push(
                featurize::features_at(|| format!("candidates[{i}].features"), &c.features)
                    .unwrap(),
            );
        }
        let vectors = if reads_x {
            req.candidates
                .iter()
                .zip(&bags)
                .map(|(c, f)| featurizer.vector(&context, &c.id, f))
                .collect()
        } else {
            Vec::new()
        };
        (
            req.candidates.iter().map(|c| c.id.clone()).collect(),
            vectors,
        )
    }
}

criterion_main!(benches);
