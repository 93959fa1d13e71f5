//! `inventory-floor`: don't recommend what we can't ship.
//!
//! Excludes a candidate whose inventory is below the floor for its category (reason
//! `below_inventory_floor`). The floor is `min_inventory` unless `category_overrides` names the
//! candidate's category (bulky furniture may be fine at 1 unit, fast fashion needs 10). A
//! candidate with no inventory attribute is kept unless `exclude_missing` is true (reason
//! `inventory_unknown`).
//!
//! With `low_stock`, a kept candidate whose inventory is below `low_stock.below` is demoted:
//! its score is multiplied by `low_stock.factor` (0 to 1), so the policy shows it less without
//! removing it (docs/merchandising.md: multipliers act as demotions with honest propensities).
//!
//! Candidate attributes: `inventory` (number), `category` (string); names configurable.
//!
//! Config: `{"min_inventory": 5, "category_overrides": {"furniture": 1},
//!           "exclude_missing": false, "inventory_attribute": "inventory",
//!           "category_attribute": "category", "low_stock": {"below": 20, "factor": 0.5}}`

use std::collections::HashMap;

use serde::Deserialize;
use tailor_plugin::{export_plugin, Constraint, Request, Verdicts};

/// Reason code: inventory below the (category's) floor.
pub const BELOW_FLOOR: u32 = 1;
/// Reason code: no inventory attribute and `exclude_missing` is set.
pub const UNKNOWN: u32 = 2;

/// The validated config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryFloor {
    min_inventory: f64,
    #[serde(default)]
    category_overrides: HashMap<String, f64>,
    #[serde(default)]
    exclude_missing: bool,
    #[serde(default = "default_inventory")]
    inventory_attribute: String,
    #[serde(default = "default_category")]
    category_attribute: String,
    #[serde(default)]
    low_stock: Option<LowStock>,
    /// `category_overrides` sorted by category, for allocation- and hash-free lookups.
    #[serde(skip)]
    overrides: Vec<(String, f64)>,
}

/// Demote (not remove) candidates running low.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LowStock {
    below: f64,
    factor: f64,
}

fn default_inventory() -> String {
    "inventory".into()
}

fn default_category() -> String {
    "category".into()
}

impl InventoryFloor {
    fn floor_for(&self, category: Option<&str>) -> f64 {
        match category {
            Some(c) if !self.overrides.is_empty() => self
                .overrides
                .binary_search_by(|(k, _)| k.as_str().cmp(c))
                .map_or(self.min_inventory, |i| self.overrides[i].1),
            _ => self.min_inventory,
        }
    }
}

impl Constraint for InventoryFloor {
    const REASONS: &'static [&'static str] = &["below_inventory_floor", "inventory_unknown"];

    fn from_config(config: &serde_json::Value) -> Result<Self, String> {
        let cfg: InventoryFloor =
            serde_json::from_value(config.clone()).map_err(|e| format!("inventory-floor: {e}"))?;
        if !cfg.min_inventory.is_finite() || cfg.min_inventory < 0.0 {
            return Err(format!(
                "inventory-floor: `min_inventory` must be a non-negative number, got {}",
                cfg.min_inventory
            ));
        }
        if let Some((cat, v)) = cfg
            .category_overrides
            .iter()
            .find(|(_, v)| !v.is_finite() || **v < 0.0)
        {
            return Err(format!(
                "inventory-floor: `category_overrides.{cat}` must be a non-negative number, got {v}"
            ));
        }
        if let Some(l) = cfg.low_stock {
            if !(l.below.is_finite() && l.factor.is_finite() && (0.0..=1.0).contains(&l.factor)) {
                return Err(format!(
                    "inventory-floor: `low_stock` needs a finite `below` and a `factor` from 0 to 1, got {} and {}",
                    l.below, l.factor
                ));
            }
        }
        let mut cfg = cfg;
        cfg.overrides = cfg
            .category_overrides
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        cfg.overrides.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(cfg)
    }

    fn evaluate(&self, request: &Request<'_>, out: &mut Verdicts<'_>) -> Result<(), String> {
        let cols = request.candidates();
        let inventory = cols.numbers(&self.inventory_attribute);
        let category = cols.strings(&self.category_attribute);
        for i in 0..request.len() {
            let floor = self.floor_for(category.and_then(|c| c.get(i)));
            match inventory.and_then(|c| c.get(i)) {
                Some(n) if n < floor => out.exclude(i, BELOW_FLOOR),
                Some(n) => {
                    if let Some(l) = self.low_stock.filter(|l| n < l.below) {
                        out.scale(i, l.factor);
                    }
                }
                None if self.exclude_missing => out.exclude(i, UNKNOWN),
                None => {}
            }
        }
        Ok(())
    }
}

export_plugin!(constraint: InventoryFloor);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tailor_plugin::{testing, RequestBuilder};

    #[test]
    fn low_stock_is_demoted_not_removed() {
        let p = InventoryFloor::from_config(
            &json!({"min_inventory": 2, "low_stock": {"below": 10, "factor": 0.25}}),
        )
        .unwrap();
        let ctx = json!({});
        let items = [
            json!({"inventory": 1}),
            json!({"inventory": 5}),
            json!({"inventory": 50}),
        ];
        let mut b = RequestBuilder::new(&ctx);
        b.candidate("a", &items[0])
            .candidate("b", &items[1])
            .candidate("c", &items[2]);
        let out = testing::run_constraint(&p, &b.build()).unwrap();
        assert_eq!(out.eligible, [false, true, true]);
        assert_eq!(out.multiplier[1], 0.25);
        assert_eq!(out.multiplier[2], 1.0);
        assert!(InventoryFloor::from_config(
            &json!({"min_inventory": 2, "low_stock": {"below": 10, "factor": 2}})
        )
        .is_err());
    }

    #[test]
    fn floors_and_overrides() {
        let p = InventoryFloor::from_config(
            &json!({"min_inventory": 5, "category_overrides": {"furniture": 1}}),
        )
        .unwrap();
        let ctx = json!({});
        let items = [
            json!({"inventory": 4, "category": "shoes"}),
            json!({"inventory": 5, "category": "shoes"}),
            json!({"inventory": 1, "category": "furniture"}),
            json!({"inventory": 0, "category": "furniture"}),
            json!({"category": "shoes"}),
        ];
        let mut b = RequestBuilder::new(&ctx);
        for (i, it) in items.iter().enumerate() {
            b.candidate(["a", "b", "c", "d", "e"][i], it);
        }
        let r = testing::run_constraint(&p, &b.build()).unwrap();
        assert_eq!(r.eligible, [false, true, true, false, true]);
    }

    #[test]
    fn bad_config() {
        let e = InventoryFloor::from_config(&json!({})).unwrap_err();
        assert!(e.contains("min_inventory"), "{e}");
        let e = InventoryFloor::from_config(
            &json!({"min_inventory": 1, "category_overrides": {"x": -1}}),
        )
        .unwrap_err();
        assert!(e.contains("category_overrides.x"), "{e}");
    }
}
