//! Forgetting in wall-clock time, and resets toward the prior (docs/variety.md).
//!
//! A policy built from its [`PolicyConfig`] forgets on the reward clock (its `half_life`, in
//! rewards) or not at all. [`Policy::set_time_half_life`] switches it to wall-clock time: evidence
//! learned at `t` weighs `2^(-(now - t)/half_life)` at `now` ([`time_weight`](super::time_weight)).
//! The time is always an argument (the reward's time when learning, [`Policy::update_at`]; the
//! decision's time when choosing, [`SlateRules::now_ms`](super::SlateRules::now_ms)): nothing here
//! reads a clock, and replaying rewards with their logged times rebuilds the same state.
//!
//! * Per-arm statistics (`thompson`, `gaussian_thompson`) keep the time of their last update and
//!   are aged lazily to the decision's time, so an item nobody rewarded for a week has drifted a
//!   week's worth toward the prior when it is next scored.
//! * Shared models (`linucb`, `linear_thompson`, `sparse_linucb`, `epsilon_greedy` with the
//!   ridge estimator) are discounted at each update by the time since the previous update.
//! * Per-arm models that age with their own reward count (`linucb_disjoint`, `epsilon_greedy`
//!   with the mean estimator) keep no time stamp and are refused, as is a policy that already has
//!   a reward-count `half_life` (one clock at a time).
//!
//! The wall-clock setting and its clock (the time of the latest update) are not part of the
//! encoded state: older snapshots keep decoding, and the caller stores the clock beside it
//! ([`Policy::time_clock`]).

use super::{Estimates, Policy, PolicyConfig, State};
use crate::PolicyError;

impl PolicyConfig {
    /// Whether this policy can forget in wall-clock time (see the [module docs](self)).
    pub fn check_time_half_life(&self) -> Result<(), PolicyError> {
        let refuse = |message: String| {
            Err(PolicyError::InvalidConfig {
                field: "half_life",
                message,
            })
        };
        match self {
            PolicyConfig::LinUcbDisjoint { .. }
            | PolicyConfig::EpsilonGreedy {
                estimator: super::Estimator::Mean,
                ..
            } => refuse(format!(
                "{} keeps per-arm state that ages with its own rewards; a wall-clock half_life needs thompson, gaussian_thompson or a shared-model policy",
                self.kind()
            )),
            PolicyConfig::Thompson { half_life, .. }
            | PolicyConfig::GaussianThompson { half_life, .. }
            | PolicyConfig::LinUcb { half_life, .. }
            | PolicyConfig::LinearThompson { half_life, .. }
            | PolicyConfig::SparseLinUcb { half_life, .. }
            | PolicyConfig::EpsilonGreedy { half_life, .. }
                if half_life.is_some() =>
            {
                refuse(format!(
                    "{} already forgets with a half_life in rewards; use one clock",
                    self.kind()
                ))
            }
            _ => Ok(()),
        }
    }
}

impl Policy {
    /// Forget in wall-clock time with this half-life (ms), or stop (`None`). Switching on keeps
    /// the clock where it was (0, or the last [`set_time_clock`](Self::set_time_clock)); call
    /// [`restamp`](Self::restamp) when the state was learned on another clock.
    pub fn set_time_half_life(&mut self, half_life_ms: Option<f64>) -> Result<(), PolicyError> {
        let Some(h) = half_life_ms else {
            self.time = None;
            return Ok(());
        };
        if !(h.is_finite() && h >= 1.0) {
            return Err(PolicyError::InvalidConfig {
                field: "half_life",
                message: format!("must be at least 1 ms, got {h}"),
            });
        }
        self.config.check_time_half_life()?;
        let last_ms = self.time.map_or(0, |t| t.last_ms);
        self.time = Some(super::TimeDecay {
            half_life_ms: h,
            last_ms,
        });
        Ok(())
    }

    /// The wall-clock half-life (ms), when set.
    pub fn time_half_life(&self) -> Option<f64> {
        self.time.map(|t| t.half_life_ms)
    }

    /// The time of the latest update under a wall-clock half-life (what a snapshot must keep
    /// beside the encoded state).
    pub fn time_clock(&self) -> Option<u64> {
        self.time.map(|t| t.last_ms)
    }

    /// Restore the clock [`time_clock`](Self::time_clock) reported (no effect without a
    /// wall-clock half-life).
    pub fn set_time_clock(&mut self, last_ms: u64) {
        if let Some(t) = &mut self.time {
            t.last_ms = last_ms;
        }
    }

    /// Stamp every piece of evidence as learned at `now_ms`: for state learned on the reward
    /// clock (or without forgetting) that starts ageing in wall-clock time now.
    pub fn restamp(&mut self, now_ms: u64) {
        if self.time.is_none() {
            return;
        }
        match &mut self.state {
            State::Beta(b) => b.arms.values_mut().for_each(|a| a.clock = now_ms),
            State::Gaussian(g) => g.arms.values_mut().for_each(|a| a.clock = now_ms),
            _ => {}
        }
        self.set_time_clock(now_ms);
    }

    /// Move learned evidence toward the prior, keeping the share `keep` (0: back to the prior,
    /// 1: unchanged) — a promotion's reset. With `ids`, only those actions' per-arm state; a
    /// shared model (one set of weights for every action) is discounted only when `ids` is
    /// `None` (the whole campaign). Returns how many per-arm states (or shared models) moved.
    pub fn forget_toward_prior(&mut self, ids: Option<&[String]>, keep: f64) -> usize {
        let keep = if keep.is_finite() {
            keep.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let named = |id: &str| ids.is_none_or(|ids| ids.iter().any(|i| i == id));
        let mut moved = 0;
        match &mut self.state {
            State::Beta(b) => {
                for (id, a) in b.arms.iter_mut().filter(|(id, _)| named(id)) {
                    let _ = id;
                    a.successes *= keep;
                    a.failures *= keep;
                    a.table = Default::default();
                    moved += 1;
                }
            }
            State::Gaussian(g) => {
                for (_, a) in g.arms.iter_mut().filter(|(id, _)| named(id)) {
                    a.weight *= keep;
                    a.m2 *= keep;
                    a.table = Default::default();
                    moved += 1;
                }
            }
            State::LinUcbDisjoint { arms, .. } => {
                for (_, m) in arms.iter_mut().filter(|(id, _)| named(id)) {
                    m.discount(keep);
                    moved += 1;
                }
            }
            State::EpsilonGreedy {
                estimates: Estimates::Mean(m),
                ..
            } => {
                let before = m.len();
                if keep == 0.0 {
                    m.retain(|id, _| !named(id));
                    moved = before - m.len();
                } else {
                    for (_, e) in m.iter_mut().filter(|(id, _)| named(id)) {
                        e.0 *= keep;
                        moved += 1;
                    }
                }
            }
            State::LinUcb { model, .. } | State::LinTs { model, .. } if ids.is_none() => {
                model.discount(keep);
                moved = 1;
            }
            State::EpsilonGreedy {
                estimates: Estimates::Ridge(model),
                ..
            } if ids.is_none() => {
                model.discount(keep);
                moved = 1;
            }
            State::SparseLinUcb { model, .. } if ids.is_none() => {
                model.discount(keep);
                moved = 1;
            }
            _ => {}
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::super::{time_weight, Arm, Estimator, Policy, PolicyConfig, State};
    use crate::SparseVec;

    const H: f64 = 3_600_000.0; // an hour
    const T0: u64 = 1_700_000_000_000;

    fn thompson() -> Policy {
        let mut p = PolicyConfig::default().build(4).unwrap();
        p.set_time_half_life(Some(H)).unwrap();
        p
    }

    fn arm<'a>(id: &'a str, x: &'a SparseVec) -> Arm<'a> {
        Arm { id, x }
    }

    fn beta_at(p: &Policy, id: &str, now: u64) -> (f64, f64) {
        match &p.state {
            State::Beta(b) => p.beta_params(b, id, now),
            _ => unreachable!(),
        }
    }

    #[test]
    fn time_weight_halves_every_half_life() {
        assert_eq!(time_weight(H, T0, T0), 1.0);
        assert!((time_weight(H, T0, T0 + 3_600_000) - 0.5).abs() < 1e-12);
        assert!((time_weight(H, T0, T0 + 7_200_000) - 0.25).abs() < 1e-12);
        assert!((time_weight(H, T0, T0 + 1_800_000) - 0.5f64.sqrt()).abs() < 1e-12);
        // A clock that goes back never adds weight.
        assert_eq!(time_weight(H, T0, T0 - 5_000), 1.0);
        // Weights compose: aging in two steps equals aging in one.
        let two =
            time_weight(H, T0, T0 + 1_000_000) * time_weight(H, T0 + 1_000_000, T0 + 5_000_000);
        assert!((two - time_weight(H, T0, T0 + 5_000_000)).abs() < 1e-12);
    }

    #[test]
    fn per_arm_evidence_ages_to_the_decision_time() {
        let x = SparseVec::default();
        let mut p = thompson();
        for _ in 0..10 {
            p.update_at(arm("a", &x), 1.0, 0.5, T0);
        }
        // All ten learned at T0: Beta(1 + 10, 1) then, Beta(1 + 5, 1) one half-life later.
        let (a, b) = beta_at(&p, "a", T0);
        assert!((a - 11.0).abs() < 1e-9 && (b - 1.0).abs() < 1e-9, "{a} {b}");
        let (a, _) = beta_at(&p, "a", T0 + 3_600_000);
        assert!((a - 6.0).abs() < 1e-9, "{a}");
        // A reward a half-life later lands on the halved evidence.
        p.update_at(arm("a", &x), 0.0, 0.5, T0 + 3_600_000);
        let (a, b) = beta_at(&p, "a", T0 + 3_600_000);
        assert!((a - 6.0).abs() < 1e-9 && (b - 2.0).abs() < 1e-9, "{a} {b}");
        assert_eq!(p.time_clock(), Some(T0 + 3_600_000));
        // A reward stamped before the latest update (clock skew) is learned at the latest time.
        p.update_at(arm("b", &x), 1.0, 0.5, T0);
        assert_eq!(p.time_clock(), Some(T0 + 3_600_000));
    }

    #[test]
    fn shared_models_discount_by_the_time_between_updates() {
        // One half-life between updates is one step of γ = 1/2 on the reward clock.
        let x = SparseVec {
            idx: vec![0, 2],
            val: vec![1.0, 0.5],
        };
        let y = SparseVec {
            idx: vec![1],
            val: vec![1.0],
        };
        let linucb = |half_life| PolicyConfig::LinUcb {
            alpha: 1.0,
            lambda: 1.0,
            half_life,
        };
        let mut timed = linucb(None).build(4).unwrap();
        timed.set_time_half_life(Some(H)).unwrap();
        let mut counted = linucb(Some(1.0)).build(4).unwrap();
        for (i, (v, r)) in [(&x, 1.0), (&y, 0.0), (&x, 0.5)].into_iter().enumerate() {
            timed.update_at(arm("a", v), r, 1.0, T0 + i as u64 * 3_600_000);
            counted.update(arm("a", v), r, 1.0);
        }
        // The incremental inverse approximates a discount (it skips the `(1-γ)λI` term); the
        // exact solution from `A` and `b` must agree.
        for p in [&mut timed, &mut counted] {
            if let State::LinUcb { model, .. } = &mut p.state {
                model.refresh();
            }
        }
        for v in [&x, &y] {
            let (a, b) = (
                timed.estimate(arm("a", v)).unwrap(),
                counted.estimate(arm("a", v)).unwrap(),
            );
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }

    #[test]
    fn replaying_the_same_rewards_at_the_same_times_gives_the_same_state() {
        let x = SparseVec::default();
        let play = || {
            let mut p = thompson();
            for i in 0..50u64 {
                let id = ["a", "b", "c"][(i % 3) as usize];
                p.update_at(arm(id, &x), (i % 2) as f64, 0.3, T0 + i * 61_000);
            }
            (postcard::to_stdvec(&p).unwrap(), p.time_clock())
        };
        assert_eq!(play(), play());
        // And a copy loaded from its encoding, given its clock back, keeps learning alike.
        let (bytes, clock) = play();
        let mut loaded: Policy = postcard::from_bytes(&bytes).unwrap();
        loaded.set_time_half_life(Some(H)).unwrap();
        loaded.set_time_clock(clock.unwrap());
        let mut live = thompson();
        for i in 0..50u64 {
            let id = ["a", "b", "c"][(i % 3) as usize];
            live.update_at(arm(id, &x), (i % 2) as f64, 0.3, T0 + i * 61_000);
        }
        for p in [&mut loaded, &mut live] {
            p.update_at(arm("a", &x), 1.0, 0.3, T0 + 9_000_000);
        }
        assert_eq!(
            beta_at(&loaded, "a", T0 + 9_999_999),
            beta_at(&live, "a", T0 + 9_999_999)
        );
    }

    #[test]
    fn forgetting_toward_the_prior_touches_only_the_named_items() {
        let x = SparseVec::default();
        let mut p = PolicyConfig::default().build(4).unwrap();
        for id in ["a", "b"] {
            for _ in 0..8 {
                p.update(arm(id, &x), 1.0, 0.5);
            }
        }
        assert_eq!(p.forget_toward_prior(Some(&["a".to_string()]), 0.25), 1);
        assert_eq!(p.beta_posterior("a"), Some((3.0, 1.0)));
        assert_eq!(p.beta_posterior("b"), Some((9.0, 1.0)));
        assert_eq!(p.forget_toward_prior(None, 0.0), 2);
        assert_eq!(p.beta_posterior("b"), Some((1.0, 1.0)));
        // A shared model has no per-item state: only a campaign-wide reset moves it.
        let mut l = PolicyConfig::LinUcb {
            alpha: 1.0,
            lambda: 1.0,
            half_life: None,
        }
        .build(4)
        .unwrap();
        let v = SparseVec {
            idx: vec![0],
            val: vec![1.0],
        };
        l.update(arm("a", &v), 1.0, 1.0);
        assert!(l.estimate(arm("a", &v)).unwrap() > 0.4);
        assert_eq!(l.forget_toward_prior(Some(&["a".to_string()]), 0.0), 0);
        assert_eq!(l.forget_toward_prior(None, 0.0), 1);
        assert!(l.estimate(arm("a", &v)).unwrap().abs() < 1e-12);
    }

    #[test]
    fn one_clock_at_a_time() {
        let refused = |c: PolicyConfig| c.build(4).unwrap().set_time_half_life(Some(H)).is_err();
        assert!(refused(PolicyConfig::Thompson {
            prior_alpha: 1.0,
            prior_beta: 1.0,
            half_life: Some(100.0)
        }));
        assert!(refused(PolicyConfig::LinUcbDisjoint {
            alpha: 1.0,
            lambda: 1.0,
            half_life: None
        }));
        assert!(refused(PolicyConfig::EpsilonGreedy {
            epsilon: 0.1,
            estimator: Estimator::Mean,
            lambda: 1.0,
            half_life: None
        }));
        assert!(!refused(PolicyConfig::EpsilonGreedy {
            epsilon: 0.1,
            estimator: Estimator::Ridge,
            lambda: 1.0,
            half_life: None
        }));
        assert!(thompson().set_time_half_life(Some(0.5)).is_err());
    }
}
