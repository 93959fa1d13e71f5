//! Shared helpers for Tailor's benches and the `loadgen` HTTP load generator.

use serde_json::{json, Value};

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
