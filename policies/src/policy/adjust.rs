//! Corrections of rewards already learned (a purchase reward of 1 that a return turns into 0).
//!
//! [`Policy::adjust`] replaces one learned observation's reward `old` by `new` for the same arm
//! and vector. What that means per policy (docs/returns.md):
//!
//! | policy | correction | exact? |
//! |---|---|---|
//! | `thompson` | successes `+= new−old`, failures `−= new−old` (both clamped to [0, 1] first, counts floored at 0) | yes, without forgetting |
//! | `gaussian_thompson` | the observation is replaced in the arm's weighted mean and sum of squares (count unchanged) | yes, without forgetting |
//! | `linucb`, `linear_thompson`, `linucb_disjoint`, `epsilon_greedy` (ridge) | `b += (new−old)·x`, `θ += (new−old)·A⁻¹x`; `A` unchanged | yes, without forgetting |
//! | `sparse_linucb` | `θᵢ += (new−old)·xᵢ/pᵢ` (its diagonal `A`) | as the diagonal model itself |
//! | `epsilon_greedy` (mean) | the arm's running mean moves by `(new−old)/weight` | yes, without forgetting |
//! | `uniform`, `fixed` | nothing (they learn nothing) | — |
//!
//! The reward clock (forgetting) does not advance: a correction is not a new observation. With
//! forgetting the original reward's weight has decayed since it was learned; the correction
//! enters at full weight. An arm the policy has never learned (a policy added after the reward)
//! is left as it is.

use std::sync::OnceLock;

use super::{Arm, Estimates, Policy, State};
use crate::propensity::BetaTable;

impl Policy {
    /// Replace the reward `old` learned for `arm` by `new` (see the module docs for what each
    /// policy does). Non-finite values are ignored.
    pub fn adjust(&mut self, arm: Arm<'_>, old: f64, new: f64) {
        if !(old.is_finite() && new.is_finite()) || old == new {
            return;
        }
        let delta = new - old;
        let no_forgetting = self.decay == 1.0;
        match &mut self.state {
            State::Beta(b) => {
                let d = new.clamp(0.0, 1.0) - old.clamp(0.0, 1.0);
                let prior = b.prior;
                if let Some(e) = b.arms.get_mut(arm.id) {
                    e.successes = (e.successes + d).max(0.0);
                    e.failures = (e.failures - d).max(0.0);
                    e.table = OnceLock::new();
                    if no_forgetting {
                        let (a, bb) = (prior.0 + e.successes, prior.1 + e.failures);
                        e.table.get_or_init(|| BetaTable::new(a, bb));
                    }
                }
            }
            State::Gaussian(g) => {
                if let Some(e) = g.arms.get_mut(arm.id) {
                    // Replacing one observation of weight 1 among `weight`: the mean moves by
                    // delta/weight and Σ(x-μ)² by delta·(new + old − μ' − μ). The Student-t
                    // table depends only on the weight, which is unchanged.
                    let w = e.weight.max(1.0);
                    let mean1 = e.mean + delta / w;
                    e.m2 = (e.m2 + delta * (new + old - mean1 - e.mean)).max(0.0);
                    e.mean = mean1;
                }
            }
            State::LinUcb { model, .. } | State::LinTs { model, .. } => model.adjust(arm.x, delta),
            State::SparseLinUcb { model, .. } => model.adjust(arm.x, delta),
            State::LinUcbDisjoint { arms, .. } => {
                if let Some(m) = arms.get_mut(arm.id) {
                    m.adjust(arm.x, delta);
                }
            }
            State::EpsilonGreedy { estimates, .. } => match estimates {
                Estimates::Mean(m) => {
                    if let Some(e) = m.get_mut(arm.id) {
                        e.1 += delta / e.0.max(1.0);
                    }
                }
                Estimates::Ridge(r) => r.adjust(arm.x, delta),
            },
            State::Uniform | State::Fixed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_pcg::Pcg64Mcg;
    use serde_json::json;

    use crate::{Arm, PolicyConfig, SparseVec};

    fn configs() -> Vec<PolicyConfig> {
        [
            json!({"type": "thompson"}),
            json!({"type": "gaussian_thompson"}),
            json!({"type": "linucb"}),
            json!({"type": "linucb_disjoint"}),
            json!({"type": "linear_thompson"}),
            json!({"type": "sparse_linucb"}),
            json!({"type": "epsilon_greedy"}),
            json!({"type": "epsilon_greedy", "estimator": "ridge"}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
    }

    /// Learning a stream and then correcting one reward ends where learning the corrected
    /// stream does (every exact policy; `sparse_linucb` within its diagonal approximation is
    /// checked to move toward the corrected model).
    #[test]
    fn an_adjustment_equals_learning_the_corrected_reward() {
        let mut rng = Pcg64Mcg::seed_from_u64(22);
        let ids = ["a", "b", "c"];
        let dim = 16;
        let stream: Vec<(usize, SparseVec, f64)> = (0..60)
            .map(|_| {
                let i = rng.gen_range(0..ids.len());
                let x = SparseVec::from_pairs(vec![
                    (i as u32, 1.0),
                    (rng.gen_range(3..dim as u32), rng.gen_range(-1.0..1.0)),
                ]);
                (i, x, f64::from(u8::from(rng.gen_bool(0.4))))
            })
            .collect();
        // Correct every fifth reward: 1 → 0 (a return) or 0 → 1.
        let corrected: Vec<f64> = (stream.iter().enumerate())
            .map(|(k, (_, _, r))| if k % 5 == 0 { 1.0 - r } else { *r })
            .collect();
        for config in configs() {
            let mut adjusted = config.build(dim).unwrap();
            let mut direct = config.build(dim).unwrap();
            for ((i, x, r), c) in stream.iter().zip(&corrected) {
                adjusted.update(Arm { id: ids[*i], x }, *r, 0.5);
                direct.update(Arm { id: ids[*i], x }, *c, 0.5);
            }
            let before: Vec<f64> = (stream.iter())
                .map(|(i, x, _)| adjusted.estimate(Arm { id: ids[*i], x }).unwrap())
                .collect();
            for ((i, x, r), c) in stream.iter().zip(&corrected) {
                adjusted.adjust(Arm { id: ids[*i], x }, *r, *c);
            }
            let (mut gap, mut gap_before) = (0.0, 0.0);
            for (k, (i, x, _)) in stream.iter().enumerate() {
                let arm = Arm { id: ids[*i], x };
                let (a, d) = (
                    adjusted.estimate(arm).unwrap(),
                    direct.estimate(arm).unwrap(),
                );
                gap += (a - d).abs();
                gap_before += (before[k] - d).abs();
                if config.kind() != "sparse_linucb" {
                    assert!((a - d).abs() < 1e-9, "{}: {a} vs {d}", config.kind());
                }
            }
            // The diagonal model is order-dependent and approximate: its corrections must at
            // least bring it most of the way to the corrected stream's model.
            assert!(
                gap <= 0.5 * gap_before,
                "{}: off by {gap} after, {gap_before} before",
                config.kind()
            );
            if let Some(p) = adjusted.normal_inverse_gamma_posterior("a") {
                let q = direct.normal_inverse_gamma_posterior("a").unwrap();
                assert!((p.3 - q.3).abs() < 1e-9, "scale {p:?} vs {q:?}");
            }
            adjusted.check_state().unwrap();
        }
    }

    /// A correction never advances the forgetting clock and leaves unknown arms alone.
    #[test]
    fn adjustments_are_not_observations() {
        let config: PolicyConfig =
            serde_json::from_value(json!({"type": "thompson", "half_life": 10})).unwrap();
        let mut p = config.build(4).unwrap();
        let x = SparseVec::default();
        p.update(Arm { id: "a", x: &x }, 1.0, 1.0);
        let clock = p.rewards;
        p.adjust(Arm { id: "a", x: &x }, 1.0, 0.0);
        p.adjust(Arm { id: "zz", x: &x }, 1.0, 0.0);
        assert_eq!(p.rewards, clock);
        assert_eq!(p.beta_posterior("a").unwrap(), (1.0, 2.0));
        assert_eq!(p.beta_posterior("zz").unwrap(), (1.0, 1.0));
    }
}
