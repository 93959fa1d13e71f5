//! Slates under rules: a per-value limit, a preference for variety, and a promotion's extra
//! exploration, all applied inside the sequential draw (docs/variety.md).
//!
//! Slots are filled one after the other, as by [`Policy::choose_with_exploration`]. Before each
//! slot the candidates still *allowed* are the remaining ones whose attribute value holds fewer
//! than `max_per_value` of the slots above; everything about the slot is drawn over them. The
//! slot is then
//!
//! 1. with probability `ε` (the campaign's exploration) uniform over the allowed candidates;
//! 2. else with probability `π` (a promotion's exploration) uniform over the allowed promoted
//!    candidates (over all allowed ones when none is promoted);
//! 3. else with probability `δ` (the diversity share) the policy's pick among the allowed
//!    candidates whose value the slate does not hold yet (all allowed ones when there are none);
//! 4. else the policy's pick among the allowed candidates;
//!
//! and its reported propensity is the exact mixture
//!
//! ```text
//! p = ε/|A| + (1-ε)·[π·1{i∈P}/|P| + (1-π)·(δ·p_policy(i | N) + (1-δ)·p_policy(i | A))]
//! ```
//!
//! with `A` the allowed, `P` the promoted and `N` the new-valued candidates, and `p_policy(i | S)`
//! the policy's probability of picking `i` among `S` (the same quantity every slot reports
//! without rules). Coins are drawn only for shares above 0, so a slate without rules draws the
//! same random numbers, and serves the same actions, as `choose_with_exploration`. A slate may
//! hold fewer than `k` slots when the limit leaves no allowed candidate.

use rand::Rng;

use super::{Arm, Choice, Policy};
use crate::propensity::MIN_PROPENSITY;
use crate::PolicyError;

/// The rules one slate is drawn under. The default is no rule at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlateRules<'a> {
    /// Per candidate (parallel to the arms, or empty): the index of its attribute value, or
    /// `None` when it has none (never limited, and always counts as a new value).
    pub groups: &'a [Option<u32>],
    /// At most this many slots may share one value (0: no limit).
    pub max_per_value: usize,
    /// Share of slots (0 to 1) drawn among candidates whose value the slate does not hold yet.
    pub diversity: f64,
    /// Per candidate (parallel to the arms, or empty): whether a running promotion names it.
    pub promoted: &'a [bool],
    /// Share of slots (0 to 1) served uniformly among the promoted candidates (ignored without
    /// `explore`, like the campaign's exploration).
    pub promotion_exploration: f64,
    /// The decision's time (ms since the epoch), which posteriors are aged to under a
    /// wall-clock half-life; `None`: the latest update's time.
    pub now_ms: Option<u64>,
}

fn share(field: &'static str, v: f64) -> Result<f64, PolicyError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(PolicyError::InvalidConfig {
            field,
            message: format!("must be between 0 and 1, got {v}"),
        })
    }
}

impl SlateRules<'_> {
    fn check(&self, n: usize) -> Result<(), PolicyError> {
        share("diversity", self.diversity)?;
        share("promotion_exploration", self.promotion_exploration)?;
        for (field, len) in [
            ("groups", self.groups.len()),
            ("promoted", self.promoted.len()),
        ] {
            if len != 0 && len != n {
                return Err(PolicyError::InvalidConfig {
                    field,
                    message: format!("must have one entry per candidate ({n}), got {len}"),
                });
            }
        }
        Ok(())
    }

    /// One more than the largest value index.
    fn values(&self) -> usize {
        self.groups
            .iter()
            .flatten()
            .max()
            .map_or(0, |&g| g as usize + 1)
    }

    fn group(&self, i: usize) -> Option<usize> {
        self.groups.get(i).copied().flatten().map(|g| g as usize)
    }

    /// Whether candidate `i` may fill the next slot given the values' counts so far.
    fn allows(&self, i: usize, counts: &[usize]) -> bool {
        self.max_per_value == 0
            || self
                .group(i)
                .is_none_or(|g| counts.get(g).copied().unwrap_or(0) < self.max_per_value)
    }

    fn is_new(&self, i: usize, counts: &[usize]) -> bool {
        self.group(i)
            .is_none_or(|g| counts.get(g).copied().unwrap_or(0) == 0)
    }
}

impl Policy {
    /// Fill up to `min(k, arms.len())` slots under `rules` ([module docs](self)); each slot's
    /// probability is over the candidates still allowed when it was drawn. Fewer slots come
    /// back when the per-value limit leaves no candidate.
    pub fn choose_slate<R: Rng + ?Sized>(
        &self,
        arms: &[Arm<'_>],
        k: usize,
        explore: bool,
        exploration: f64,
        rules: &SlateRules<'_>,
        rng: &mut R,
    ) -> Result<Vec<Choice>, PolicyError> {
        if arms.is_empty() {
            return Err(PolicyError::NoCandidates);
        }
        share("exploration", exploration)?;
        rules.check(arms.len())?;
        let eps = if explore { exploration } else { 0.0 };
        let promo = if explore && !rules.promoted.is_empty() {
            rules.promotion_exploration
        } else {
            0.0
        };
        let diversity = if rules.groups.is_empty() {
            0.0
        } else {
            rules.diversity
        };
        let limited = rules.max_per_value > 0 && !rules.groups.is_empty();
        let scorer = self.scorer(arms, explore, self.clock(rules.now_ms), rng);
        let k = k.min(arms.len());
        let mut counts = vec![0usize; rules.values()];
        let mut remaining: Vec<usize> = (0..arms.len()).collect();
        let (mut allowed_buf, mut new_buf, mut promo_buf) = (Vec::new(), Vec::new(), Vec::new());
        let mut out = Vec::with_capacity(k);
        for _ in 0..k {
            let allowed: &[usize] = if limited {
                allowed_buf.clear();
                allowed_buf.extend(
                    remaining
                        .iter()
                        .copied()
                        .filter(|&i| rules.allows(i, &counts)),
                );
                &allowed_buf
            } else {
                &remaining
            };
            if allowed.is_empty() {
                break;
            }
            let fresh: &[usize] = if diversity > 0.0 {
                new_buf.clear();
                new_buf.extend(
                    allowed
                        .iter()
                        .copied()
                        .filter(|&i| rules.is_new(i, &counts)),
                );
                if new_buf.is_empty() {
                    allowed
                } else {
                    &new_buf
                }
            } else {
                allowed
            };
            let promoted: &[usize] = if promo > 0.0 {
                promo_buf.clear();
                promo_buf.extend(allowed.iter().copied().filter(|&i| rules.promoted[i]));
                if promo_buf.is_empty() {
                    allowed
                } else {
                    &promo_buf
                }
            } else {
                allowed
            };
            // Draw each mixing coin only when its share is above 0, so a slate without rules
            // keeps the policy's random stream.
            let chosen = if eps > 0.0 && rng.gen::<f64>() < eps {
                allowed[rng.gen_range(0..allowed.len())]
            } else if promo > 0.0 && rng.gen::<f64>() < promo {
                promoted[rng.gen_range(0..promoted.len())]
            } else if diversity > 0.0 && rng.gen::<f64>() < diversity {
                scorer.pick(fresh, rng)
            } else {
                scorer.pick(allowed, rng)
            };
            let policy_p = |set: &[usize]| {
                if set.contains(&chosen) {
                    scorer.probability(chosen, set)
                } else {
                    0.0
                }
            };
            let mut p_policy = scorer.probability(chosen, allowed);
            if diversity > 0.0 {
                p_policy = diversity * policy_p(fresh) + (1.0 - diversity) * p_policy;
            }
            if promo > 0.0 {
                let u = if promoted.contains(&chosen) {
                    1.0 / promoted.len() as f64
                } else {
                    0.0
                };
                p_policy = promo * u + (1.0 - promo) * p_policy;
            }
            let p = (1.0 - eps) * p_policy + eps / allowed.len() as f64;
            out.push(Choice {
                index: chosen,
                probability: p.clamp(MIN_PROPENSITY, 1.0),
            });
            if let Some(g) = rules.group(chosen) {
                counts[g] += 1;
            }
            remaining.retain(|&i| i != chosen);
        }
        Ok(out)
    }

    /// The probability that the first slot of [`choose_slate`](Self::choose_slate) is each
    /// candidate, without drawing, at the rules' time (the limit and the diversity share cannot
    /// act on the first slot; a promotion's exploration can).
    pub fn first_slot_distribution_with(
        &self,
        arms: &[Arm<'_>],
        explore: bool,
        exploration: f64,
        rules: &SlateRules<'_>,
    ) -> Result<Vec<f64>, PolicyError> {
        let eps = if explore { exploration } else { 0.0 };
        let promo = if explore {
            rules.promotion_exploration
        } else {
            0.0
        };
        let promoted = rules.promoted.iter().filter(|&&b| b).count();
        if promo == 0.0 || promoted == 0 {
            return self.first_slot_distribution_at(arms, explore, exploration, rules.now_ms);
        }
        rules.check(arms.len())?;
        let mut p = self.first_slot_distribution_at(arms, explore, 0.0, rules.now_ms)?;
        let n = arms.len() as f64;
        for (i, pi) in p.iter_mut().enumerate() {
            let u = if rules.promoted[i] {
                1.0 / promoted as f64
            } else {
                0.0
            };
            *pi = eps / n + (1.0 - eps) * (promo * u + (1.0 - promo) * *pi);
        }
        Ok(p)
    }
}

/// The candidates in the order sent under the per-value limit (the baseline a paused campaign,
/// a holdout shopper or a failed plugin gets): each allowed candidate in turn, probability 1.
pub fn ordered_slate(n: usize, k: usize, rules: &SlateRules<'_>) -> Vec<Choice> {
    let mut counts = vec![0usize; rules.values()];
    let mut out = Vec::with_capacity(k.min(n));
    for i in 0..n {
        if out.len() == k {
            break;
        }
        if rules.groups.is_empty() || rules.allows(i, &counts) {
            if let Some(g) = rules.group(i) {
                counts[g] += 1;
            }
            out.push(Choice {
                index: i,
                probability: 1.0,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::SeedableRng;
    use rand_pcg::Pcg64Mcg;

    use super::*;
    use crate::{Estimator, PolicyConfig, SparseVec};

    const IDS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
    /// Values of the eight candidates: four of value 0, three of 1, one without.
    const GROUPS: [Option<u32>; 8] = [
        Some(0),
        Some(0),
        Some(0),
        Some(0),
        Some(1),
        Some(1),
        Some(1),
        None,
    ];

    fn learned(config: PolicyConfig) -> Policy {
        let mut p = config.build(4).unwrap();
        let x = SparseVec::default();
        // Value 0 holds the best items, so an unlimited slate piles them up.
        for (i, id) in IDS.iter().enumerate() {
            for r in 0..20 {
                let reward = f64::from(u8::from(r < 16 - 2 * i));
                p.update(Arm { id, x: &x }, reward, 1.0);
            }
        }
        p
    }

    fn arms(x: &SparseVec) -> Vec<Arm<'_>> {
        IDS.iter().map(|id| Arm { id, x }).collect()
    }

    #[test]
    fn without_rules_a_slate_is_choose_with_exploration() {
        let x = SparseVec::default();
        for config in [
            PolicyConfig::default(),
            PolicyConfig::EpsilonGreedy {
                epsilon: 0.2,
                estimator: Estimator::Mean,
                lambda: 1.0,
                half_life: None,
            },
        ] {
            let p = learned(config);
            for seed in 0..50 {
                let a = p
                    .choose_with_exploration(
                        &arms(&x),
                        5,
                        true,
                        0.1,
                        &mut Pcg64Mcg::seed_from_u64(seed),
                    )
                    .unwrap();
                let b = p
                    .choose_slate(
                        &arms(&x),
                        5,
                        true,
                        0.1,
                        &SlateRules::default(),
                        &mut Pcg64Mcg::seed_from_u64(seed),
                    )
                    .unwrap();
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn the_limit_holds_in_every_slate_and_each_slot_is_over_the_allowed() {
        let x = SparseVec::default();
        let p = learned(PolicyConfig::default());
        let rules = SlateRules {
            groups: &GROUPS,
            max_per_value: 2,
            ..Default::default()
        };
        let mut rng = Pcg64Mcg::seed_from_u64(7);
        for _ in 0..2_000 {
            let slate = p
                .choose_slate(&arms(&x), 5, true, 0.3, &rules, &mut rng)
                .unwrap();
            // 2 of value 0, 2 of value 1, and the one without a value.
            assert_eq!(slate.len(), 5);
            let mut counts = HashMap::new();
            for c in &slate {
                if let Some(g) = GROUPS[c.index] {
                    *counts.entry(g).or_insert(0) += 1;
                }
            }
            assert!(counts.values().all(|&n| n <= 2), "{slate:?}");
        }
        // The uniform policy makes the slot probabilities easy to name: once value 0 is full,
        // the next slot is uniform over the 4 candidates left that are allowed, not the 6 left.
        let u = PolicyConfig::Uniform {}.build(4).unwrap();
        let mut seen = 0;
        for seed in 0..500 {
            let slate = u
                .choose_slate(
                    &arms(&x),
                    3,
                    true,
                    0.0,
                    &rules,
                    &mut Pcg64Mcg::seed_from_u64(seed),
                )
                .unwrap();
            if GROUPS[slate[0].index] == Some(0) && GROUPS[slate[1].index] == Some(0) {
                assert_eq!(slate[2].probability, 1.0 / 4.0);
                seen += 1;
            }
        }
        assert!(seen > 0);
        // A slate runs short rather than break the limit.
        let short = SlateRules {
            groups: &[Some(0); 8],
            max_per_value: 2,
            ..Default::default()
        };
        assert_eq!(
            p.choose_slate(&arms(&x), 5, true, 0.0, &short, &mut rng)
                .unwrap()
                .len(),
            2
        );
        let ordered = ordered_slate(8, 5, &rules);
        let served: Vec<usize> = ordered.iter().map(|c| c.index).collect();
        assert_eq!(served, vec![0, 1, 4, 5, 7]);
    }

    /// Exact mixture propensities, checked against frequencies: epsilon-greedy draws a fresh coin
    /// every slot, so each slot's reported probability is the true conditional frequency.
    #[test]
    fn mixture_propensities_match_the_frequencies_served() {
        let x = SparseVec::default();
        let p = learned(PolicyConfig::EpsilonGreedy {
            epsilon: 0.1,
            estimator: Estimator::Mean,
            lambda: 1.0,
            half_life: None,
        });
        let promoted = [false, false, false, false, false, true, true, false];
        let rules = SlateRules {
            groups: &GROUPS,
            max_per_value: 2,
            diversity: 0.5,
            promoted: &promoted,
            promotion_exploration: 0.2,
            now_ms: None,
        };
        let mut rng = Pcg64Mcg::seed_from_u64(11);
        // (first slot, second slot) → (times served, reported probability).
        let mut first: HashMap<usize, (u32, f64)> = HashMap::new();
        let mut second: HashMap<(usize, usize), (u32, f64)> = HashMap::new();
        let n = 60_000;
        for _ in 0..n {
            let s = p
                .choose_slate(&arms(&x), 3, true, 0.1, &rules, &mut rng)
                .unwrap();
            let e = first.entry(s[0].index).or_insert((0, s[0].probability));
            assert_eq!(e.1, s[0].probability);
            e.0 += 1;
            let e = second
                .entry((s[0].index, s[1].index))
                .or_insert((0, s[1].probability));
            assert_eq!(e.1, s[1].probability);
            e.0 += 1;
        }
        let total: f64 = first.values().map(|(_, q)| q).sum();
        assert!(
            (total - 1.0).abs() < 1e-9,
            "first-slot probabilities sum to {total}"
        );
        for (&i, &(c, q)) in &first {
            let f = f64::from(c) / f64::from(n);
            assert!(
                (f - q).abs() < 0.01,
                "slot 1, {i}: served {f}, reported {q}"
            );
        }
        for (&(i, j), &(c, q)) in &second {
            let given = f64::from(first[&i].0);
            if given < 3_000.0 {
                continue;
            }
            let f = f64::from(c) / given;
            assert!(
                (f - q).abs() < 0.025,
                "slot 2 after {i}, {j}: served {f}, reported {q}"
            );
        }
        // The distribution without drawing agrees with the first slot.
        let d = p
            .first_slot_distribution_with(&arms(&x), true, 0.1, &rules)
            .unwrap();
        for (&i, &(_, q)) in &first {
            assert!((d[i] - q).abs() < 1e-12);
        }
    }

    #[test]
    fn full_diversity_serves_each_value_once_before_repeating() {
        let x = SparseVec::default();
        let p = learned(PolicyConfig::default());
        let rules = SlateRules {
            groups: &GROUPS,
            diversity: 1.0,
            ..Default::default()
        };
        let mut rng = Pcg64Mcg::seed_from_u64(3);
        for _ in 0..500 {
            let s = p
                .choose_slate(&arms(&x), 3, true, 0.0, &rules, &mut rng)
                .unwrap();
            let values: Vec<Option<u32>> = s.iter().map(|c| GROUPS[c.index]).collect();
            // Three slots, three distinct values (0, 1 and none) while any is new.
            assert!(
                values.contains(&Some(0)) && values.contains(&Some(1)) && values.contains(&None),
                "{values:?}"
            );
        }
        let bad = SlateRules {
            diversity: 1.5,
            ..rules
        };
        assert!(p
            .choose_slate(&arms(&x), 3, true, 0.0, &bad, &mut rng)
            .is_err());
    }
}
