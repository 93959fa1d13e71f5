//! `shopper-features`: RFM buckets and cyclic time features for Tailor's featurizer.
//!
//! Context features (from shopper attributes in the request context):
//! - `recency_bucket`: index of the first `recency_days` boundary ≥ `days_since_last_purchase`
//!   (0 = bought very recently; `len` = lapsed or never bought);
//! - `frequency_bucket`: number of `frequency` boundaries ≤ `orders_last_365d`;
//! - `monetary_bucket`: number of `monetary` boundaries ≤ `spend_last_365d`;
//! - `hour_sin` / `hour_cos` from `local_hour` (0..24) and `dow_sin` / `dow_cos` from
//!   `day_of_week` (0..7), so 23:00 and 00:00 are neighbours for a linear model.
//!
//! Per-candidate features:
//! - `price_to_aov`: candidate `price` over the shopper's average order value
//!   (`spend_last_365d / orders_last_365d`), when both are known;
//! - `slot_hour_sin` / `slot_hour_cos` from a candidate `local_hour` (send-time slots).
//!
//! Missing inputs produce no feature (the featurizer treats absent as zero).
//!
//! Config (all optional): `{"recency_days": [7, 30, 90, 365], "frequency": [2, 5, 10],
//! "monetary": [50, 200, 1000]}`; boundaries must be finite and strictly increasing.

use std::f64::consts::TAU;

use serde::Deserialize;
use tailor_plugin::{export_plugin, FeatureExtractor, Features, Request};

/// The validated config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShopperFeatures {
    recency_days: Vec<f64>,
    frequency: Vec<f64>,
    monetary: Vec<f64>,
}

impl Default for ShopperFeatures {
    fn default() -> Self {
        ShopperFeatures {
            recency_days: vec![7.0, 30.0, 90.0, 365.0],
            frequency: vec![2.0, 5.0, 10.0],
            monetary: vec![50.0, 200.0, 1000.0],
        }
    }
}

/// The bucket of `x` given sorted `bounds`: how many bounds are strictly below `x`.
pub fn bucket(x: f64, bounds: &[f64]) -> f64 {
    bounds.partition_point(|b| *b < x) as f64
}

fn cyclic(x: f64, period: f64) -> (f64, f64) {
    let a = TAU * (x.rem_euclid(period) / period);
    (a.sin(), a.cos())
}

impl FeatureExtractor for ShopperFeatures {
    fn from_config(config: &serde_json::Value) -> Result<Self, String> {
        let cfg: ShopperFeatures = if config.is_null() {
            ShopperFeatures::default()
        } else {
            serde_json::from_value(config.clone()).map_err(|e| format!("shopper-features: {e}"))?
        };
        for (field, b) in [
            ("recency_days", &cfg.recency_days),
            ("frequency", &cfg.frequency),
            ("monetary", &cfg.monetary),
        ] {
            if b.iter().any(|v| !v.is_finite()) || b.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!(
                    "shopper-features: `{field}` must be finite, strictly increasing boundaries, got {b:?}"
                ));
            }
        }
        Ok(cfg)
    }

    fn extract(&self, request: &Request<'_>, out: &mut Features<'_>) -> Result<(), String> {
        let ctx = request.context();
        if let Some(d) = ctx.number("days_since_last_purchase") {
            out.context("recency_bucket", bucket(d, &self.recency_days));
        }
        let orders = ctx.number("orders_last_365d");
        let spend = ctx.number("spend_last_365d");
        if let Some(n) = orders {
            out.context("frequency_bucket", bucket(n + 0.5, &self.frequency));
        }
        if let Some(m) = spend {
            out.context("monetary_bucket", bucket(m, &self.monetary));
        }
        if let Some(h) = ctx.number("local_hour") {
            let (s, c) = cyclic(h, 24.0);
            out.context("hour_sin", s);
            out.context("hour_cos", c);
        }
        if let Some(d) = ctx.number("day_of_week") {
            let (s, c) = cyclic(d, 7.0);
            out.context("dow_sin", s);
            out.context("dow_cos", c);
        }

        let aov = match (spend, orders) {
            (Some(m), Some(n)) if n > 0.0 && m > 0.0 => Some(m / n),
            _ => None,
        };
        let cols = request.candidates();
        if let (Some(aov), Some(price)) = (aov, cols.numbers("price")) {
            for i in 0..request.len() {
                if let Some(p) = price.get(i) {
                    out.candidate(i, "price_to_aov", p / aov);
                }
            }
        }
        if let Some(hours) = cols.numbers("local_hour") {
            for i in 0..request.len() {
                if let Some(h) = hours.get(i) {
                    let (s, c) = cyclic(h, 24.0);
                    out.candidate(i, "slot_hour_sin", s);
                    out.candidate(i, "slot_hour_cos", c);
                }
            }
        }
        Ok(())
    }
}

export_plugin!(feature_extractor: ShopperFeatures);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tailor_plugin::{testing, RequestBuilder};

    #[test]
    fn rfm_and_cyclic() {
        let p = ShopperFeatures::from_config(&json!(null)).unwrap();
        let ctx = json!({"days_since_last_purchase": 12, "orders_last_365d": 4,
                         "spend_last_365d": 400.0, "local_hour": 0, "day_of_week": 3});
        let items = [json!({"price": 50.0}), json!({"local_hour": 6})];
        let mut b = RequestBuilder::new(&ctx);
        b.candidate("a", &items[0]).candidate("b", &items[1]);
        let f = testing::run_extractor(&p, &b.build()).unwrap();
        assert_eq!(f.context_value("recency_bucket"), Some(1.0));
        assert_eq!(f.context_value("frequency_bucket"), Some(1.0));
        assert_eq!(f.context_value("monetary_bucket"), Some(2.0));
        assert!((f.context_value("hour_cos").unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(f.candidates[0], [("price_to_aov".to_owned(), 0.5)]);
        assert!((f.candidates[1][0].1 - 1.0).abs() < 1e-12, "6h is sin = 1");
    }

    #[test]
    fn unsorted_bounds_refused() {
        let e = ShopperFeatures::from_config(&json!({"monetary": [10, 5]})).unwrap_err();
        assert!(e.contains("`monetary`"), "{e}");
    }
}
