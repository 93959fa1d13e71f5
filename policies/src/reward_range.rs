//! The interval a campaign's rewards live in ([`RewardRange`]).
//!
//! Every learner here is an average of some kind, so one reward far outside the values it usually
//! sees can outweigh thousands of ordinary ones for good (issue 17: one reward of 10⁶ turned a
//! LinUCB campaign's best-product share from 0.97 to 0.06). The server keeps every reward a
//! campaign learns from inside its range, and the off-policy estimators ([`crate::ope`]) keep
//! their estimates inside it.

use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// Largest magnitude a bound may have. Sums of a billion rewards of this size stay far from
/// `f64::MAX`, and squared (as the variance sums square them) stay finite too.
pub const MAX_REWARD_MAGNITUDE: f64 = 1e9;

/// A closed interval `[lo, hi]` of rewards, written `[lo, hi]` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "[f64; 2]", into = "[f64; 2]")]
pub struct RewardRange {
    pub lo: f64,
    pub hi: f64,
}

impl Default for RewardRange {
    /// `[0, 1]`: clicks, conversions, opens.
    fn default() -> Self {
        Self::UNIT
    }
}

impl From<[f64; 2]> for RewardRange {
    fn from([lo, hi]: [f64; 2]) -> Self {
        Self { lo, hi }
    }
}

impl From<RewardRange> for [f64; 2] {
    fn from(r: RewardRange) -> Self {
        [r.lo, r.hi]
    }
}

impl RewardRange {
    /// `[0, 1]`.
    pub const UNIT: Self = Self { lo: 0.0, hi: 1.0 };

    /// `[lo, hi]`, validated.
    pub fn new(lo: f64, hi: f64) -> Result<Self, PolicyError> {
        let r = Self { lo, hi };
        r.validate()?;
        Ok(r)
    }

    /// Both bounds finite, at most [`MAX_REWARD_MAGNITUDE`] in magnitude, and `lo < hi`.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let sane = |v: f64| v.is_finite() && v.abs() <= MAX_REWARD_MAGNITUDE;
        if !(sane(self.lo) && sane(self.hi)) {
            return Err(PolicyError::InvalidConfig {
                field: "reward_range",
                message: format!(
                    "bounds must be finite numbers between -{MAX_REWARD_MAGNITUDE:e} and {MAX_REWARD_MAGNITUDE:e}, got [{}, {}]",
                    self.lo, self.hi
                ),
            });
        }
        if self.lo >= self.hi {
            return Err(PolicyError::InvalidConfig {
                field: "reward_range",
                message: format!(
                    "must be [low, high] with low < high, got [{}, {}]",
                    self.lo, self.hi
                ),
            });
        }
        Ok(())
    }

    /// Whether `v` lies in the range (NaN never does).
    pub fn contains(&self, v: f64) -> bool {
        self.lo <= v && v <= self.hi
    }

    /// `v` moved to the nearest bound when outside; NaN becomes `lo`.
    pub fn clamp(&self, v: f64) -> f64 {
        if v.is_nan() {
            self.lo
        } else {
            v.clamp(self.lo, self.hi)
        }
    }

    /// `hi − lo`.
    pub fn width(&self) -> f64 {
        self.hi - self.lo
    }

    /// The range of a sum of `k` rewards of this range (a slate of `k` slots).
    pub fn times(&self, k: usize) -> Self {
        let k = k.max(1) as f64;
        Self {
            lo: self.lo * k,
            hi: self.hi * k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        assert!(RewardRange::new(0.0, 1.0).is_ok());
        assert!(RewardRange::new(-5.0, 1e9).is_ok());
        for (lo, hi) in [
            (1.0, 1.0),
            (2.0, 1.0),
            (f64::NAN, 1.0),
            (0.0, f64::INFINITY),
            (-1e10, 0.0),
            (0.0, 1e308),
        ] {
            let e = RewardRange::new(lo, hi).unwrap_err();
            assert!(
                matches!(
                    e,
                    PolicyError::InvalidConfig {
                        field: "reward_range",
                        ..
                    }
                ),
                "[{lo}, {hi}]: {e}"
            );
        }
    }

    #[test]
    fn clamp_and_json_shape() {
        let r = RewardRange::new(-1.0, 2.0).unwrap();
        assert_eq!(r.clamp(1e308), 2.0);
        assert_eq!(r.clamp(-1e308), -1.0);
        assert_eq!(r.clamp(f64::NAN), -1.0);
        assert_eq!(r.clamp(0.5), 0.5);
        assert_eq!(serde_json::to_string(&r).unwrap(), "[-1.0,2.0]");
        let back: RewardRange = serde_json::from_str("[0, 10]").unwrap();
        assert_eq!(back, RewardRange::new(0.0, 10.0).unwrap());
        assert_eq!(r.times(3), RewardRange { lo: -3.0, hi: 6.0 });
    }
}
