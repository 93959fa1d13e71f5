//! `tailor simulate --scenario send-time`: when to send a daily message.
//!
//! Shoppers belong to segments with typical engagement hours (commuters in the morning, office
//! workers at lunch, families in the evening, night owls late); each shopper's own preferred hour
//! is their segment's habit plus individual noise, and their chance of opening a message sent at
//! hour `h` falls off with the circular distance between `h` and their preferred hour. Every day
//! every shopper gets one message; three policies choose its hour:
//!
//! * `per_shopper` — the send-time campaign's model: hierarchical Thompson sampling
//!   (global → segment → shopper, `tailor_policies::send_time`), the same `choose` the engine
//!   calls.
//! * `global_best_hour` — Beta–Bernoulli Thompson sampling on the global per-hour counts only:
//!   it converges to the single hour that is best on average.
//! * `random` — a uniformly random hour.
//!
//! All policies face the same shoppers in the same order with the same coin flips (an open at
//! hour `h` on day `d` happens when a pre-drawn uniform is below the open probability), so they
//! differ only by the hours they choose. Reported: mean open rate over all sends and over the
//! last quarter of days, lift over random, and the share of the oracle's open rate (the oracle
//! knows each shopper's true best hour).

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::bail;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_pcg::Pcg64Mcg;
use serde::Serialize;
use tailor_policies::send_time::grid::PriorTable;
use tailor_policies::send_time::{prior_means, Hierarchy, PopulationCounts, ShopperCounts};

use crate::engine::send_time::{choose, Population};

/// Segments: name, share of shoppers, typical hour.
pub const SEGMENTS: [(&str, f64, f64); 4] = [
    ("commuter", 0.30, 7.5),
    ("office", 0.25, 12.5),
    ("family", 0.30, 19.5),
    ("night_owl", 0.15, 23.0),
];
/// Spread (hours) of individual preferred hours around the segment habit.
const INDIVIDUAL_SD: f64 = 2.5;
/// Open probability: `BASE + PEAK · exp(-d² / (2·WIDTH²))`, `d` the circular distance in hours.
const BASE: f64 = 0.02;
const PEAK: f64 = 0.30;
const WIDTH: f64 = 1.5;
const HOURS: usize = 24;
const DAY_MS: u64 = 86_400_000;

/// One simulated shopper.
#[derive(Debug, Clone)]
pub struct SimShopper {
    pub segment: usize,
    pub preferred: f64,
}

impl SimShopper {
    pub fn open_probability(&self, hour: usize) -> f64 {
        let d = (hour as f64 - self.preferred).rem_euclid(24.0);
        let d = d.min(24.0 - d);
        BASE + PEAK * (-(d * d) / (2.0 * WIDTH * WIDTH)).exp()
    }

    fn best(&self) -> f64 {
        (0..HOURS)
            .map(|h| self.open_probability(h))
            .fold(0.0, f64::max)
    }
}

/// Draw `n` shoppers from `rng`.
pub fn shoppers<R: Rng>(n: usize, rng: &mut R) -> Vec<SimShopper> {
    (0..n)
        .map(|_| {
            let u: f64 = rng.gen();
            let mut acc = 0.0;
            let mut segment = SEGMENTS.len() - 1;
            for (i, s) in SEGMENTS.iter().enumerate() {
                acc += s.1;
                if u < acc {
                    segment = i;
                    break;
                }
            }
            let noise: f64 = rng.sample(StandardNormal);
            SimShopper {
                segment,
                preferred: (SEGMENTS[segment].2 + INDIVIDUAL_SD * noise).rem_euclid(24.0),
            }
        })
        .collect()
}

/// Results of one policy.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyResult {
    pub policy: String,
    pub open_rate: f64,
    pub open_rate_last_quarter: f64,
    pub lift_vs_random: f64,
    pub share_of_oracle: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct SendTimeReport {
    pub seed: u64,
    pub shoppers: usize,
    pub days: usize,
    pub oracle_open_rate: f64,
    pub policies: Vec<PolicyResult>,
}

impl SendTimeReport {
    pub fn result(&self, policy: &str) -> Option<&PolicyResult> {
        self.policies.iter().find(|p| p.policy == policy)
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "send-time scenario: seed {}, {} shoppers x {} days (one send per shopper per day), oracle open rate {:.4}",
            self.seed, self.shoppers, self.days, self.oracle_open_rate
        );
        let _ = writeln!(
            out,
            "| policy | open rate | open rate, last quarter | lift vs random | share of oracle |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for p in &self.policies {
            let _ = writeln!(
                out,
                "| {} | {:.4} | {:.4} | {:+.1}% | {:.1}% |",
                p.policy,
                p.open_rate,
                p.open_rate_last_quarter,
                100.0 * p.lift_vs_random,
                100.0 * p.share_of_oracle
            );
        }
        out
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    PerShopper,
    GlobalBest,
    Random,
}

/// Play the scenario.
pub fn simulate(seed: u64, n_shoppers: usize, days: usize) -> anyhow::Result<SendTimeReport> {
    if n_shoppers == 0 || days == 0 {
        bail!("the send-time scenario needs at least one shopper and one day");
    }
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let people = shoppers(n_shoppers, &mut rng);
    // The order shoppers are messaged each day, and the coin flips, shared by every policy.
    let mut orders = Vec::with_capacity(days);
    let mut flips = Vec::with_capacity(days);
    for _ in 0..days {
        let mut order: Vec<usize> = (0..n_shoppers).collect();
        order.shuffle(&mut rng);
        orders.push(order);
        flips.push(
            (0..n_shoppers)
                .map(|_| rng.gen::<f64>())
                .collect::<Vec<f64>>(),
        );
    }
    let oracle = people.iter().map(SimShopper::best).sum::<f64>() / n_shoppers as f64;
    let h = Hierarchy {
        prior_strength: 10.0,
        half_life_ms: None,
    };
    let eligible: Vec<usize> = (0..HOURS).collect();
    let last_quarter = days - days.div_ceil(4);
    let mut results = Vec::new();
    for (name, kind) in [
        ("per_shopper", Kind::PerShopper),
        ("global_best_hour", Kind::GlobalBest),
        ("random", Kind::Random),
    ] {
        let mut prng = Pcg64Mcg::seed_from_u64(seed ^ 0x5eed);
        let mut pop = Population {
            global: PopulationCounts::new(HOURS),
            segments: Default::default(),
            version: 0,
        };
        let mut own: Vec<ShopperCounts> = vec![ShopperCounts::default(); n_shoppers];
        let (mut opens, mut late_opens, mut late_sends) = (0.0f64, 0.0f64, 0.0f64);
        let mut tables: HashMap<&str, PriorTable> = HashMap::new();
        for day in 0..days {
            let now = day as u64 * DAY_MS;
            if kind == Kind::PerShopper {
                // Priors refreshed once a simulated day (the server: at most once a second).
                for (segment, _, _) in SEGMENTS {
                    let mut means = Vec::new();
                    prior_means(&h, &pop.global, pop.segments.get(segment), &mut means);
                    tables.insert(segment, PriorTable::new(&h, &means));
                }
            }
            for &s in &orders[day] {
                let person = &people[s];
                let segment = SEGMENTS[person.segment].0;
                let hour = match kind {
                    Kind::PerShopper => {
                        choose(
                            &h,
                            &tables[segment],
                            Some(&own[s]),
                            &eligible,
                            0.0,
                            now,
                            &mut prng,
                        )
                        .slot
                    }
                    Kind::GlobalBest => {
                        // Thompson on the global counts alone (uniform prior).
                        let mut best = (0, f64::NEG_INFINITY);
                        for j in 0..HOURS {
                            let a = 1.0 + pop.global.successes[j];
                            let b = 1.0 + pop.global.trials[j] - pop.global.successes[j];
                            let d = rand_distr::Distribution::sample(
                                &rand_distr::Beta::new(a, b).expect("positive shapes"),
                                &mut prng,
                            );
                            if d > best.1 {
                                best = (j, d);
                            }
                        }
                        best.0
                    }
                    Kind::Random => prng.gen_range(0..HOURS),
                };
                let opened = flips[day][s] < person.open_probability(hour);
                let r = if opened { 1.0 } else { 0.0 };
                opens += r;
                if day >= last_quarter {
                    late_opens += r;
                    late_sends += 1.0;
                }
                match kind {
                    Kind::PerShopper => {
                        pop.global.update(&h, hour, r, now);
                        pop.segments
                            .entry(segment.to_string())
                            .or_insert_with(|| PopulationCounts::new(HOURS))
                            .update(&h, hour, r, now);
                        own[s].update(&h, hour, r, now);
                    }
                    Kind::GlobalBest => pop.global.update(&h, hour, r, now),
                    Kind::Random => {}
                }
            }
        }
        results.push(PolicyResult {
            policy: name.to_string(),
            open_rate: opens / (n_shoppers * days) as f64,
            open_rate_last_quarter: late_opens / late_sends.max(1.0),
            lift_vs_random: 0.0,
            share_of_oracle: 0.0,
        });
    }
    let random = results
        .iter()
        .find(|r| r.policy == "random")
        .map(|r| r.open_rate)
        .unwrap_or(f64::NAN);
    for r in &mut results {
        r.lift_vs_random = r.open_rate / random - 1.0;
        r.share_of_oracle = r.open_rate / oracle;
    }
    Ok(SendTimeReport {
        seed,
        shoppers: n_shoppers,
        days,
        oracle_open_rate: oracle,
        policies: results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_probability_peaks_at_the_preferred_hour() {
        let s = SimShopper {
            segment: 0,
            preferred: 23.0,
        };
        assert!(s.open_probability(23) > s.open_probability(0));
        assert!(s.open_probability(0) > s.open_probability(12));
        assert!((s.open_probability(23) - (BASE + PEAK)).abs() < 1e-12);
    }

    #[test]
    fn per_shopper_beats_global_best_hour_with_the_seed() {
        let r = simulate(7, 400, 40).unwrap();
        let per = r.result("per_shopper").unwrap().open_rate;
        let global = r.result("global_best_hour").unwrap().open_rate;
        let random = r.result("random").unwrap().open_rate;
        assert!(per > global && global > random, "{}", r.table());
    }
}
