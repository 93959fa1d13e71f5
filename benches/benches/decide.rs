//! In-process decide through the engine (featurize, choose with propensity, log to sled):
//! Thompson and LinUCB over 10/100/1000 candidates.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tailor_benches::decide_body;
use tailor_sdk::wire::DecideRequest;
use tailor_server::campaign::CampaignConfig;
use tailor_server::config::Settings;
use tailor_server::engine::{DecideInput, Engine};
use tailor_server::store::{SledStore, Store};

fn engine(dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> Arc<Engine> {
    let settings = Settings::default();
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(
            dir,
            settings.storage.cache_capacity_bytes,
            settings.storage.flush_every_ms,
        )
        .unwrap(),
    );
    rt.block_on(async { Engine::open(store, settings.engine.clone()).unwrap() })
}

fn bench_decide(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), &rt);
    let policies = [
        ("thompson", serde_json::json!({"type": "thompson"})),
        (
            "linucb_d32",
            serde_json::json!({"type": "linucb", "alpha": 1.0}),
        ),
    ];
    for (name, policy) in &policies {
        let config: CampaignConfig = serde_json::from_value(serde_json::json!({
            "id": name, "policy": policy, "featurizer": {"dimension": 32}
        }))
        .unwrap();
        engine.create_campaign(config).unwrap();
    }
    let mut group = c.benchmark_group("engine_decide");
    for n in [10usize, 100, 1000] {
        let body = decide_body(n, 1);
        let raw = serde_json::to_vec(&body).unwrap();
        let request: DecideRequest = serde_json::from_value(body).unwrap();
        group.throughput(Throughput::Elements(1));
        for (name, _) in &policies {
            group.bench_function(format!("{name}/candidates={n}"), |b| {
                b.iter_batched(
                    || DecideInput {
                        request: request.clone(),
                        raw: raw.clone(),
                        defer: false,
                        log_request: false,
                        slot: None,
                    },
                    |input| engine.decide(name, input).unwrap(),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
