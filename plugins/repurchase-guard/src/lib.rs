//! `repurchase-guard`: don't offer another toilet seat to someone who just bought one.
//!
//! Excludes a candidate whose category is a one-time purchase the shopper already bought (reason
//! `already_purchased_one_time`). Replenishable categories (coffee, razor blades) stay eligible.
//! Categories in neither list follow `unlisted` (`"replenishable"` by default: only rule out what
//! merchandising named).
//!
//! Candidate attribute: `category` (string). Context attribute: `purchased_categories` (array of
//! strings). Both names configurable.
//!
//! Config: `{"one_time_categories": ["toilet_seats", "mattresses"],
//!           "replenishable_categories": ["coffee"], "unlisted": "replenishable",
//!           "category_attribute": "category", "purchased_attribute": "purchased_categories"}`

use std::collections::HashSet;

use serde::Deserialize;
use tailor_plugin::{export_plugin, Constraint, Request, Verdicts};

/// Reason code: one-time category the shopper already bought.
pub const ALREADY_PURCHASED: u32 = 1;

/// How categories in neither list are treated.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unlisted {
    /// Stay eligible after a purchase.
    #[default]
    Replenishable,
    /// Excluded after a purchase.
    OneTime,
}

/// The validated config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepurchaseGuard {
    #[serde(default)]
    one_time_categories: HashSet<String>,
    #[serde(default)]
    replenishable_categories: HashSet<String>,
    #[serde(default)]
    unlisted: Unlisted,
    #[serde(default = "default_category")]
    category_attribute: String,
    #[serde(default = "default_purchased")]
    purchased_attribute: String,
}

fn default_category() -> String {
    "category".into()
}

fn default_purchased() -> String {
    "purchased_categories".into()
}

impl RepurchaseGuard {
    fn is_one_time(&self, category: &str) -> bool {
        if self.one_time_categories.contains(category) {
            true
        } else if self.replenishable_categories.contains(category) {
            false
        } else {
            self.unlisted == Unlisted::OneTime
        }
    }
}

impl Constraint for RepurchaseGuard {
    const REASONS: &'static [&'static str] = &["already_purchased_one_time"];

    fn from_config(config: &serde_json::Value) -> Result<Self, String> {
        let cfg: RepurchaseGuard =
            serde_json::from_value(config.clone()).map_err(|e| format!("repurchase-guard: {e}"))?;
        if let Some(c) = cfg
            .one_time_categories
            .intersection(&cfg.replenishable_categories)
            .next()
        {
            return Err(format!(
                "repurchase-guard: category `{c}` is in both `one_time_categories` and `replenishable_categories`"
            ));
        }
        if cfg.one_time_categories.is_empty() && cfg.unlisted == Unlisted::Replenishable {
            return Err(
                "repurchase-guard: `one_time_categories` is empty and `unlisted` is `replenishable`, so nothing would ever be excluded".into(),
            );
        }
        Ok(cfg)
    }

    fn evaluate(&self, request: &Request<'_>, out: &mut Verdicts<'_>) -> Result<(), String> {
        let Some(bought) = request.context().set(&self.purchased_attribute) else {
            return Ok(()); // no purchase history: nothing to guard
        };
        if bought.is_empty() {
            return Ok(());
        }
        let Some(category) = request.candidates().strings(&self.category_attribute) else {
            return Ok(());
        };
        for i in 0..request.len() {
            if let Some(c) = category.get(i) {
                if self.is_one_time(c) && bought.contains(c) {
                    out.exclude(i, ALREADY_PURCHASED);
                }
            }
        }
        Ok(())
    }
}

export_plugin!(constraint: RepurchaseGuard);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tailor_plugin::{testing, RequestBuilder};

    #[test]
    fn one_time_vs_replenishable() {
        let p = RepurchaseGuard::from_config(&json!({
            "one_time_categories": ["toilet_seats"], "replenishable_categories": ["coffee"]
        }))
        .unwrap();
        let ctx = json!({"purchased_categories": ["toilet_seats", "coffee", "lamps"]});
        let items = [
            json!({"category": "toilet_seats"}),
            json!({"category": "coffee"}),
            json!({"category": "lamps"}),
            json!({}),
        ];
        let mut b = RequestBuilder::new(&ctx);
        for (i, it) in items.iter().enumerate() {
            b.candidate(["a", "b", "c", "d"][i], it);
        }
        let r = testing::run_constraint(&p, &b.build()).unwrap();
        assert_eq!(r.eligible, [false, true, true, true]);
        assert_eq!(r.reason[0], Some("already_purchased_one_time"));
    }

    #[test]
    fn contradictory_config_is_refused() {
        let e = RepurchaseGuard::from_config(
            &json!({"one_time_categories": ["a"], "replenishable_categories": ["a"]}),
        )
        .unwrap_err();
        assert!(e.contains("`a`"), "{e}");
    }
}
