//! Holdout assignment: a sticky share of shoppers who always get the control order.
//!
//! A shopper is in the holdout when `xxh3(shopper_id, seed = xxh3(salt)) / 2^64 < share`. The
//! salt is per campaign (generated at creation, kept across updates), so the same shopper can be
//! held out of one campaign and not another, and raising the share only adds shoppers (nobody
//! moves from the holdout to personalized traffic). A decision without a `shopper_id` is never
//! held out: there is nothing to keep it sticky by.

use crate::campaign::CampaignConfig;

/// Whether this shopper is in the campaign's holdout.
pub fn in_holdout(config: &CampaignConfig, shopper_id: Option<&str>) -> bool {
    let Some(shopper) = shopper_id else {
        return false;
    };
    if config.holdout <= 0.0 {
        return false;
    }
    let seed = xxhash_rust::xxh3::xxh3_64(config.holdout_salt.as_bytes());
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(shopper.as_bytes(), seed);
    (h as f64 / 18_446_744_073_709_551_616.0) < config.holdout
}

/// A fresh random salt for a new campaign.
pub fn new_salt() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(share: f64, salt: &str) -> CampaignConfig {
        serde_json::from_value(serde_json::json!({
            "id": "c", "policy": {"type": "thompson"}, "holdout": share, "holdout_salt": salt
        }))
        .unwrap()
    }

    #[test]
    fn share_is_respected_sticky_and_salted() {
        let c = config(0.2, "salt-a");
        let n = 20_000;
        let held: Vec<bool> = (0..n)
            .map(|i| in_holdout(&c, Some(&format!("shopper-{i}"))))
            .collect();
        let share = held.iter().filter(|h| **h).count() as f64 / n as f64;
        assert!((share - 0.2).abs() < 0.015, "{share}");
        // Sticky: the same answer every time.
        for (i, h) in held.iter().enumerate().take(100) {
            assert_eq!(in_holdout(&c, Some(&format!("shopper-{i}"))), *h);
        }
        // Growing the share only adds shoppers.
        let bigger = config(0.3, "salt-a");
        for (i, h) in held.iter().enumerate().take(2_000) {
            if *h {
                assert!(in_holdout(&bigger, Some(&format!("shopper-{i}"))));
            }
        }
        // Another salt gives another assignment.
        let other = config(0.2, "salt-b");
        let same = (0..2_000)
            .filter(|i| in_holdout(&other, Some(&format!("shopper-{i}"))) == held[*i])
            .count();
        assert!(same < 1_900, "{same}");
        assert!(!in_holdout(&c, None));
        assert!(!in_holdout(&config(0.0, "salt-a"), Some("shopper-1")));
    }
}
