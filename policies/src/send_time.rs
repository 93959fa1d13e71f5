//! Send-time optimization: hierarchical Beta–Bernoulli Thompson sampling over send slots.
//!
//! Every slot (an hour of the day, an hour of the week, or a custom window) has an engagement
//! rate. Three levels share strength:
//!
//! ```text
//! global    m0_j = (S_j + 1) / (N_j + 2)                       (uniform Beta(1, 1) prior)
//! segment   m1_j = (S_gj + κ·m0_j) / (N_gj + κ)                (global mean as prior, strength κ)
//! shopper   θ_uj ~ Beta(κ·m1_j + s_uj,  κ·(1 − m1_j) + n_uj − s_uj)
//! ```
//!
//! with `S, N` (decayed) successes and trials, `κ` the configured prior strength. A new shopper
//! samples around the population's (segment's) rates and so mostly gets its best times; a shopper
//! with their own history gets their own. The served slot is the argmax of one draw per eligible
//! slot, sampled through the distribution of the maximum on a grid ([`grid`]): the propensity
//! comes from the same numbers as the draw, so logged propensities are exact for the policy
//! that ran, and a decision over 168 slots costs microseconds.
//!
//! Forgetting: counts decay by `2^(-Δt / half_life)`; the caller passes the clock as
//! milliseconds since the epoch. Shopper counts are stored compactly ([`ShopperCounts`]): only
//! touched slots, quantized to 1/8 of a trial, which keeps 168 touched slots under 1.5 KB
//! postcard-encoded (test `worst_case_state_fits`), and at most
//! [`Hierarchy::max_shopper_slots`] of them, the weakest giving way.
//!
//! No I/O, no clock: time is passed in, the RNG is passed in.

use serde::{Deserialize, Serialize};

pub mod grid;

/// Most slots a grid may have (a week of hours).
pub const MAX_SLOTS: usize = 168;

/// Quantization of stored shopper counts: 1/8 of a trial.
const QUANT: f32 = 8.0;

/// How strongly levels borrow from the level above, and how fast they forget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hierarchy {
    /// Pseudo-trials of the prior each level takes from the level above (κ).
    pub prior_strength: f64,
    /// Half-life of counts in milliseconds; `None` keeps them forever.
    pub half_life_ms: Option<f64>,
    /// Most distinct slots a shopper's state keeps (at least 1): a new slot beyond them
    /// replaces the one with the least evidence of engagement (fewest opens, then fewest decayed
    /// trials), which goes back to the population prior. Bounds a decision's cost, which grows
    /// with the touched slots.
    pub max_shopper_slots: usize,
}

impl Hierarchy {
    /// Factor by which counts last updated at `then_ms` shrink by `now_ms`.
    pub fn decay(&self, then_ms: u64, now_ms: u64) -> f64 {
        match self.half_life_ms {
            Some(h) if now_ms > then_ms && h > 0.0 => (-((now_ms - then_ms) as f64) / h).exp2(),
            _ => 1.0,
        }
    }
}

/// Population (global or one segment) counts per slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopulationCounts {
    pub successes: Vec<f64>,
    pub trials: Vec<f64>,
    /// When the counts were last decayed (ms since the epoch).
    pub clock_ms: u64,
}

impl PopulationCounts {
    pub fn new(slots: usize) -> Self {
        Self {
            successes: vec![0.0; slots],
            trials: vec![0.0; slots],
            clock_ms: 0,
        }
    }

    /// Learn one outcome (`reward` clamped to [0, 1]) of `slot` at `now_ms`.
    pub fn update(&mut self, h: &Hierarchy, slot: usize, reward: f64, now_ms: u64) {
        if slot >= self.trials.len() {
            return;
        }
        let g = h.decay(self.clock_ms, now_ms);
        if g < 1.0 {
            self.successes.iter_mut().for_each(|s| *s *= g);
            self.trials.iter_mut().for_each(|n| *n *= g);
        }
        self.clock_ms = self.clock_ms.max(now_ms);
        self.trials[slot] += 1.0;
        self.successes[slot] += reward.clamp(0.0, 1.0);
    }

    /// Observed rate of `slot` (0 when never tried).
    pub fn rate(&self, slot: usize) -> f64 {
        let n = self.trials.get(slot).copied().unwrap_or(0.0);
        if n > 0.0 {
            self.successes[slot] / n
        } else {
            0.0
        }
    }
}

/// One shopper's counts: only touched slots, quantized. Compact when postcard-encoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShopperCounts {
    /// The time the stored counts are expressed at (minutes since the epoch): at a later time
    /// they are worth `decay(clock, now)` times as much. It moves forward (and the counts are
    /// decayed to it) only once they have lost half their weight, so that rounding the counts
    /// to eighths does not undo the decay of frequent small updates.
    pub clock_min: u32,
    /// `(slot, successes·8, trials·8)` at the clock, sorted by slot.
    pub slots: Vec<(u8, u16, u16)>,
}

fn quantize(x: f64) -> u16 {
    (x * QUANT as f64).round().clamp(0.0, u16::MAX as f64) as u16
}

impl ShopperCounts {
    /// `(successes, trials)` of every touched slot, decayed to `now_ms`.
    pub fn decayed(
        &self,
        h: &Hierarchy,
        now_ms: u64,
    ) -> impl Iterator<Item = (usize, f64, f64)> + '_ {
        let g = h.decay(self.clock_min as u64 * 60_000, now_ms);
        self.slots.iter().map(move |&(s, succ, n)| {
            (
                s as usize,
                succ as f64 / QUANT as f64 * g,
                n as f64 / QUANT as f64 * g,
            )
        })
    }

    /// Learn one outcome of `slot` at `now_ms`. Once the counts have lost half their weight
    /// they are decayed to `now_ms` (see [`ShopperCounts::clock_min`]); slots decayed below 1/16
    /// of a trial are then dropped, so state shrinks when a shopper goes quiet. Beyond
    /// [`Hierarchy::max_shopper_slots`] the other slots with the least evidence of engagement
    /// go: the fewest successes, then the fewest trials, then the lower slot. So a new slot
    /// replaces the weakest, a slot the shopper engages with outlasts ones they ignore, and a
    /// lowered bound applies at the next update.
    pub fn update(&mut self, h: &Hierarchy, slot: usize, reward: f64, now_ms: u64) {
        if slot >= MAX_SLOTS {
            return;
        }
        let mut g = h.decay(self.clock_min as u64 * 60_000, now_ms);
        if g < 0.5 {
            for e in &mut self.slots {
                e.1 = quantize(e.1 as f64 / QUANT as f64 * g);
                e.2 = quantize(e.2 as f64 / QUANT as f64 * g);
            }
            self.slots.retain(|e| e.2 > 0);
            self.clock_min = (now_ms / 60_000).min(u32::MAX as u64) as u32;
            // (The clock is whole minutes: what is left of the minute still decays.)
            g = h.decay(self.clock_min as u64 * 60_000, now_ms);
        }
        // The outcome, expressed at the clock.
        let weight = 1.0 / g;
        let r = reward.clamp(0.0, 1.0) * weight;
        match self.slots.binary_search_by_key(&(slot as u8), |e| e.0) {
            Ok(i) => {
                let e = &mut self.slots[i];
                let n = e.2 as f64 / QUANT as f64 + weight;
                let s = e.1 as f64 / QUANT as f64 + r;
                e.2 = quantize(n);
                e.1 = quantize(s).min(e.2);
            }
            Err(i) => self
                .slots
                .insert(i, (slot as u8, quantize(r), quantize(weight))),
        }
        // Over the bound (a new slot, or a bound lowered since): the weakest others go.
        let bound = h.max_shopper_slots.max(1);
        while self.slots.len() > bound {
            let weakest = (0..self.slots.len())
                .filter(|&e| self.slots[e].0 as usize != slot)
                .min_by_key(|&e| (self.slots[e].1, self.slots[e].2))
                .expect("more than one slot is kept");
            self.slots.remove(weakest);
        }
    }

    /// Total (decayed) trials.
    pub fn trials(&self, h: &Hierarchy, now_ms: u64) -> f64 {
        self.decayed(h, now_ms).map(|(_, _, n)| n).sum()
    }
}

/// Prior means `m1_j` of a shopper in a segment (or of the whole population when `segment` is
/// `None`), per slot, written into `out`.
pub fn prior_means(
    h: &Hierarchy,
    global: &PopulationCounts,
    segment: Option<&PopulationCounts>,
    out: &mut Vec<f64>,
) {
    out.clear();
    let k = h.prior_strength;
    for j in 0..global.trials.len() {
        let m0 = (global.successes[j] + 1.0) / (global.trials[j] + 2.0);
        let m1 = match segment {
            Some(s) => (s.successes[j] + k * m0) / (s.trials[j] + k),
            None => m0,
        };
        out.push(m1);
    }
}

/// Beta posterior parameters `(α, β)` of every slot for one shopper, given the prior means from
/// [`prior_means`].
pub fn posteriors(
    h: &Hierarchy,
    prior: &[f64],
    shopper: Option<&ShopperCounts>,
    now_ms: u64,
    out: &mut Vec<(f64, f64)>,
) {
    out.clear();
    let k = h.prior_strength;
    out.extend(prior.iter().map(|&m| (k * m, k * (1.0 - m))));
    if let Some(s) = shopper {
        for (j, succ, n) in s.decayed(h, now_ms) {
            if let Some(p) = out.get_mut(j) {
                p.0 += succ;
                p.1 += (n - succ).max(0.0);
            }
        }
    }
    for p in out.iter_mut() {
        // Keep both shapes positive whatever the counts say.
        p.0 = p.0.max(1e-3);
        p.1 = p.1.max(1e-3);
    }
}

/// The served slot and the probability the policy had of serving it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlotChoice {
    pub slot: usize,
    pub probability: f64,
}

/// The slot with the highest posterior mean among `eligible` (no exploration; probability 1).
/// `None` when nothing is eligible.
pub fn greedy(params: &[(f64, f64)], eligible: &[usize]) -> Option<SlotChoice> {
    let mean = |j: usize| params[j].0 / (params[j].0 + params[j].1);
    let best = eligible
        .iter()
        .copied()
        .max_by(|&a, &b| mean(a).total_cmp(&mean(b)).then(b.cmp(&a)))?;
    Some(SlotChoice {
        slot: best,
        probability: 1.0,
    })
}

/// Probability that `slot`'s draw is the largest among `eligible` under continuous Thompson
/// sampling, by exact-CDF Gauss–Legendre quadrature (slots with identical posteriors grouped).
/// Hundreds of microseconds over 168 slots: the reference that [`grid`] is tested against.
#[cfg(test)]
pub(crate) fn win_probability(params: &[(f64, f64)], eligible: &[usize], slot: usize) -> f64 {
    use crate::propensity::{group, max_probability, BetaMarginal, MIN_PROPENSITY};

    let n = eligible.len();
    if n <= 1 {
        return 1.0;
    }
    let bits = |p: (f64, f64)| (p.0.to_bits(), p.1.to_bits());
    let mine = params[slot];
    let items: Vec<((u64, u64), ())> = eligible
        .iter()
        .filter(|&&j| j != slot)
        .map(|&j| (bits(params[j]), ()))
        .collect();
    if items.iter().all(|&(k, _)| k == bits(mine)) {
        return 1.0 / n as f64;
    }
    let others = group(items, |(a, b), ()| {
        BetaMarginal::new(f64::from_bits(a), f64::from_bits(b))
    });
    max_probability(&BetaMarginal::new(mine.0, mine.1), &others).max(MIN_PROPENSITY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_pcg::Pcg64Mcg;

    const H: Hierarchy = Hierarchy {
        prior_strength: 10.0,
        half_life_ms: None,
        max_shopper_slots: MAX_SLOTS,
    };

    #[test]
    fn new_shopper_follows_population_and_engaged_shopper_their_own() {
        let mut global = PopulationCounts::new(24);
        for _ in 0..2000 {
            global.update(&H, 9, 0.5, 0);
        }
        for j in 0..24 {
            for _ in 0..200 {
                global.update(&H, j, 0.1, 0);
            }
        }
        let mut prior = Vec::new();
        prior_means(&H, &global, None, &mut prior);
        let table = grid::PriorTable::new(&H, &prior);
        let eligible: Vec<usize> = (0..24).collect();
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        let mut pick = |me: Option<&ShopperCounts>| {
            grid::choose(&table, &H, me, 0, &eligible, &mut rng)
                .unwrap()
                .slot
        };
        let nines = (0..500).filter(|_| pick(None) == 9).count();
        assert!(nines > 300, "new shopper picked hour 9 {nines}/500 times");

        let mut me = ShopperCounts::default();
        for _ in 0..30 {
            me.update(&H, 20, 1.0, 0);
            me.update(&H, 9, 0.0, 0);
        }
        let twenties = (0..500).filter(|_| pick(Some(&me)) == 20).count();
        assert!(
            twenties > 450,
            "engaged shopper got hour 20 {twenties}/500 times"
        );
    }

    #[test]
    fn greedy_and_single() {
        let params = vec![(1.0, 9.0), (5.0, 5.0), (2.0, 8.0)];
        let c = greedy(&params, &[0, 1, 2]).unwrap();
        assert_eq!((c.slot, c.probability), (1, 1.0));
        assert_eq!(greedy(&params, &[0, 2]).unwrap().slot, 2);
        assert!(greedy(&params, &[]).is_none());
        let table = grid::PriorTable::new(&H, &[0.1, 0.5, 0.2]);
        let mut rng = Pcg64Mcg::seed_from_u64(0);
        let c = grid::choose(&table, &H, None, 0, &[2], &mut rng).unwrap();
        assert_eq!((c.slot, c.probability), (2, 1.0));
        assert!(grid::choose(&table, &H, None, 0, &[], &mut rng).is_none());
    }

    #[test]
    fn forgetting_shrinks_and_drops() {
        let h = Hierarchy {
            prior_strength: 10.0,
            half_life_ms: Some(86_400_000.0),
            max_shopper_slots: MAX_SLOTS,
        };
        let mut s = ShopperCounts::default();
        s.update(&h, 3, 1.0, 0);
        let later = 86_400_000;
        let n: f64 = s.decayed(&h, later).map(|e| e.2).sum();
        assert!((n - 0.5).abs() < 1e-9, "{n}");
        // Ten half-lives later the slot is gone once the state is touched.
        s.update(&h, 4, 0.0, 10 * later);
        assert_eq!(s.slots.len(), 1);
        assert_eq!(s.slots[0].0, 4);
    }

    #[test]
    fn daily_updates_still_forget() {
        const DAY: u64 = 86_400_000;
        let h = Hierarchy {
            half_life_ms: Some(30.0 * DAY as f64),
            ..H
        };
        let mut s = ShopperCounts::default();
        s.update(&h, 3, 1.0, 0);
        for day in 1..=30 {
            s.update(&h, 4, 0.0, day * DAY);
        }
        // One half-life later the single send weighs half a trial.
        let at = |s: &ShopperCounts, slot: usize| s.decayed(&h, 30 * DAY).find(|e| e.0 == slot);
        let (_, succ, n) = at(&s, 3).unwrap();
        assert!(
            (n - 0.5).abs() < 1e-9 && (succ - 0.5).abs() < 1e-9,
            "{n} {succ}"
        );
        // Thirty daily sends, each decayed by its age (rounding to eighths aside).
        let exact: f64 = (1..=30).map(|d| (-(30 - d) as f64 / 30.0).exp2()).sum();
        let (_, _, n4) = at(&s, 4).unwrap();
        assert!((n4 - exact).abs() < 0.5, "{n4} vs {exact}");
        // Four months on, the single send is gone.
        for day in 31..=150 {
            s.update(&h, 4, 0.0, day * DAY);
        }
        assert!(s.slots.iter().all(|e| e.0 != 3), "{:?}", s.slots);
        assert!(s.trials(&h, 150 * DAY) < 45.0);
    }

    #[test]
    fn full_state_replaces_its_weakest_slot() {
        let h = Hierarchy {
            max_shopper_slots: 3,
            ..H
        };
        let mut s = ShopperCounts::default();
        for (slot, sends) in [(40, 3), (7, 1), (90, 2)] {
            for _ in 0..sends {
                s.update(&h, slot, 0.0, 0);
            }
        }
        s.update(&h, 7, 1.0, 0);
        // Slot 7 has 2 trials and a success, slot 90 two trials: 90 is the weakest.
        s.update(&h, 12, 1.0, 0);
        let kept: Vec<u8> = s.slots.iter().map(|e| e.0).collect();
        assert_eq!(kept, vec![7, 12, 40], "sorted by slot, 90 evicted");
        // A slot already kept is updated in place, never evicting.
        s.update(&h, 12, 0.0, 0);
        assert_eq!(s.slots.len(), 3);
        assert_eq!(s.slots[1], (12, 8, 16));
        // A slot with an open outlasts one ignored three times.
        s.update(&h, 100, 0.0, 0);
        let kept: Vec<u8> = s.slots.iter().map(|e| e.0).collect();
        assert_eq!(kept, vec![7, 12, 100]);
        // Among slots without opens, the fewest trials go; ties, the lower slot.
        s.update(&h, 101, 0.0, 0);
        let kept: Vec<u8> = s.slots.iter().map(|e| e.0).collect();
        assert_eq!(kept, vec![7, 12, 101]);
        // A cap of 0 still keeps one slot.
        let mut one = ShopperCounts::default();
        let h0 = Hierarchy {
            max_shopper_slots: 0,
            ..H
        };
        one.update(&h0, 1, 1.0, 0);
        one.update(&h0, 2, 0.0, 0);
        assert_eq!(one.slots, vec![(2, 0, 8)]);
        // A bound lowered later applies at the next update, which keeps the slot it updates.
        let mut many = ShopperCounts::default();
        for slot in 0..6 {
            for _ in 0..=slot {
                many.update(&H, slot, 0.0, 0);
            }
        }
        many.update(
            &Hierarchy {
                max_shopper_slots: 2,
                ..H
            },
            1,
            1.0,
            0,
        );
        let kept: Vec<u8> = many.slots.iter().map(|e| e.0).collect();
        assert_eq!(
            kept,
            vec![1, 5],
            "slot 1 updated, slot 5 the strongest other"
        );
    }

    #[test]
    fn worst_case_state_fits() {
        let mut s = ShopperCounts {
            clock_min: u32::MAX,
            slots: Vec::new(),
        };
        for j in 0..MAX_SLOTS {
            s.slots.push((j as u8, u16::MAX, u16::MAX));
        }
        let bytes = postcard::to_stdvec(&s).unwrap();
        assert!(bytes.len() <= 1_500, "{} bytes", bytes.len());
    }
}
