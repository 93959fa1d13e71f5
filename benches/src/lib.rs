//! Shared helpers for Tailor's benches and the `loadgen` HTTP load generator.

use std::sync::Arc;

use serde_json::{json, Value};
use tailor_server::campaign::CampaignConfig;
use tailor_server::config::Settings;
use tailor_server::engine::Engine;
use tailor_server::store::{SledStore, Store};

/// A decide body with `n` candidates, each with a few features, and a small context — the shape
/// a storefront sends for a category page.
pub fn decide_body(n: usize, seed: u64) -> Value {
    let categories = ["shoes", "outerwear", "denim", "tops", "accessories"];
    let candidates: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "id": format!("sku-{i}"),
                "features": {
                    "category": categories[i % categories.len()],
                    "price": 10.0 + (i as f64 * 7.3) % 190.0,
                    "brand": format!("brand-{}", i % 17),
                },
                "attributes": {"inventory": 5 + i % 40, "markdowns": i % 3}
            })
        })
        .collect();
    json!({
        "context": {
            "device": if seed.is_multiple_of(2) { "mobile" } else { "desktop" },
            "shopper": {"segment": format!("seg-{}", seed % 4), "recent": ["shoes", "denim"]},
        },
        "candidates": candidates,
    })
}

/// 100 candidates with ids only and 8 numeric context features: the shape of issue 18's
/// Thompson target.
pub fn ids_only_body(n: usize) -> Vec<u8> {
    let context: serde_json::Map<String, Value> = (0..8)
        .map(|i| (format!("f{i}"), json!(0.125 + i as f64 * 1.5)))
        .collect();
    let candidates: Vec<Value> = (0..n).map(|i| json!({"id": format!("sku-{i}")})).collect();
    serde_json::to_vec(&json!({"context": context, "candidates": candidates}))
        .expect("a JSON value encodes")
}

/// The two shapes of issue 18's in-process targets: (campaign, body). The campaigns are
/// `thompson` and `linucb_d32` (LinUCB, alpha 1), both with a 32-dimension featurizer.
pub fn target_shapes() -> [(&'static str, Vec<u8>); 2] {
    [
        ("thompson", ids_only_body(100)),
        (
            "linucb_d32",
            serde_json::to_vec(&decide_body(100, 1)).expect("a JSON value encodes"),
        ),
    ]
}

/// An engine with default settings over a sled store in `dir` (no plugins), for in-process
/// benches.
pub fn engine(dir: &std::path::Path, rt: &tokio::runtime::Runtime) -> Arc<Engine> {
    let settings = Settings::default();
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(
            dir,
            settings.storage.cache_capacity_bytes,
            settings.storage.flush_every_ms,
        )
        .expect("a sled store in a fresh directory"),
    );
    rt.block_on(async { Engine::open(store, settings.engine.clone()) })
        .expect("an engine over a fresh store")
}

/// The campaigns of [`target_shapes`]: `thompson` and `linucb_d32` (LinUCB, alpha 1), both
/// with a 32-dimension featurizer.
pub fn create_target_campaigns(engine: &Engine) {
    for (name, policy) in [
        ("thompson", json!({"type": "thompson"})),
        ("linucb_d32", json!({"type": "linucb", "alpha": 1.0})),
    ] {
        let config: CampaignConfig = serde_json::from_value(json!({
            "id": name, "policy": policy, "featurizer": {"dimension": 32}
        }))
        .expect("a valid campaign");
        engine.create_campaign(config).expect("a new campaign");
    }
}
