//! The send-time scenario of `tailor simulate --scenario send-time`: when to send a daily message.
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
//!
//! **Hours of the week** (`--slots hour_of_week`): the grid has 168 slots and each day's send
//! picks among that weekday's 24. Shoppers keep other hours at the weekend (each segment shifts
//! its habit, each shopper by a bit more) and engage more or less on weekend days, so a
//! shopper's best slot depends on the day and their state can touch up to 168 slots. Counts
//! forget with the server's default half-life (30 days), and `per_shopper` is played once per
//! bound on the slots a shopper's state keeps (`--max-shopper-slots`, default 168, 16, 12, 8)
//! to show what the bound costs in learning; the table adds the slots kept at the end.

use std::collections::HashMap;
use std::fmt::Write as _;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_pcg::Pcg64Mcg;
use serde::Serialize;
use tailor_policies::send_time::grid::PriorTable;
use tailor_policies::send_time::{
    prior_means, Hierarchy, PopulationCounts, ShopperCounts, MAX_SLOTS,
};

use tailor_server::engine::send_time::{choose, Population};

use crate::SimError;

/// Segments: name, share of shoppers, typical hour.
pub const SEGMENTS: [(&str, f64, f64); 4] = [
    ("commuter", 0.30, 7.5),
    ("office", 0.25, 12.5),
    ("family", 0.30, 19.5),
    ("night_owl", 0.15, 23.0),
];
/// Hours of the week: per segment, the engagement weight on weekdays and at the weekend, and
/// how many hours later the weekend habit is.
pub const WEEKLY: [(f64, f64, f64); 4] = [
    (1.0, 0.5, 2.0),
    (1.0, 0.4, 7.0),
    (0.8, 1.0, -9.0),
    (1.0, 1.0, 1.0),
];
/// Spread (hours) of individual weekend shifts around the segment's.
const WEEKEND_SD: f64 = 2.0;
/// Spread (hours) of individual preferred hours around the segment habit.
const INDIVIDUAL_SD: f64 = 2.5;
/// Open probability: `BASE + PEAK · exp(-d² / (2·WIDTH²))`, `d` the circular distance in hours.
const BASE: f64 = 0.02;
const PEAK: f64 = 0.30;
const WIDTH: f64 = 1.5;
const HOURS: usize = 24;
const DAY_MS: u64 = 86_400_000;

/// The slot grid a scenario plays on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grid {
    /// 24 slots; every day's send may take any.
    HourOfDay,
    /// 168 slots (Monday 00:00 first); a day's send takes one of that weekday's 24.
    HourOfWeek,
}

impl Grid {
    pub fn parse(name: &str) -> Result<Self, SimError> {
        match name {
            "hour_of_day" => Ok(Self::HourOfDay),
            "hour_of_week" => Ok(Self::HourOfWeek),
            other => Err(SimError::invalid(
                "--slots",
                format!("must be hour_of_day or hour_of_week, got {other:?}"),
            )),
        }
    }

    fn slots(self) -> usize {
        match self {
            Self::HourOfDay => HOURS,
            Self::HourOfWeek => 7 * HOURS,
        }
    }

    /// The slots a send on `day` (day 0 a Monday) may take.
    fn eligible(self, day: usize) -> Vec<usize> {
        match self {
            Self::HourOfDay => (0..HOURS).collect(),
            Self::HourOfWeek => {
                let first = (day % 7) * HOURS;
                (first..first + HOURS).collect()
            }
        }
    }
}

/// One simulated shopper.
#[derive(Debug, Clone)]
pub struct SimShopper {
    pub segment: usize,
    pub preferred: f64,
    /// Preferred hour at the weekend (hours of the week only; else the same).
    pub weekend_preferred: f64,
}

impl SimShopper {
    /// Open probability of a send at hour of the day `hour`.
    pub fn open_probability(&self, hour: usize) -> f64 {
        Self::peak_at(hour, self.preferred)
    }

    fn peak_at(hour: usize, preferred: f64) -> f64 {
        let d = (hour as f64 - preferred).rem_euclid(24.0);
        let d = d.min(24.0 - d);
        BASE + PEAK * (-(d * d) / (2.0 * WIDTH * WIDTH)).exp()
    }

    /// Open probability of a send in `slot` of `grid`.
    pub fn open_probability_in(&self, grid: Grid, slot: usize) -> f64 {
        match grid {
            Grid::HourOfDay => self.open_probability(slot),
            Grid::HourOfWeek => {
                let (day, hour) = (slot / HOURS, slot % HOURS);
                let (weekday, weekend, _) = WEEKLY[self.segment];
                let (weight, preferred) = if day >= 5 {
                    (weekend, self.weekend_preferred)
                } else {
                    (weekday, self.preferred)
                };
                BASE + weight * (Self::peak_at(hour, preferred) - BASE)
            }
        }
    }

    /// The best open probability among `eligible`.
    fn best(&self, grid: Grid, eligible: &[usize]) -> f64 {
        eligible
            .iter()
            .map(|&j| self.open_probability_in(grid, j))
            .fold(0.0, f64::max)
    }
}

/// Draw `n` shoppers from `rng` (with weekend habits for hours of the week).
pub fn shoppers_on<R: Rng>(grid: Grid, n: usize, rng: &mut R) -> Vec<SimShopper> {
    let mut people = shoppers(n, rng);
    if grid == Grid::HourOfWeek {
        for p in &mut people {
            let noise: f64 = rng.sample(StandardNormal);
            p.weekend_preferred =
                (p.preferred + WEEKLY[p.segment].2 + WEEKEND_SD * noise).rem_euclid(24.0);
        }
    }
    people
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
            let preferred = (SEGMENTS[segment].2 + INDIVIDUAL_SD * noise).rem_euclid(24.0);
            SimShopper {
                segment,
                preferred,
                weekend_preferred: preferred,
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
    /// Per-shopper policies: the bound on slots kept, and the mean and largest number of
    /// slots shoppers' states kept at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots_kept: Option<SlotsKept>,
}

/// How many slots per-shopper states kept.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SlotsKept {
    pub bound: usize,
    pub mean: f64,
    pub max: usize,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct SendTimeReport {
    pub seed: u64,
    pub grid: Grid,
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
        let weekly = self.grid == Grid::HourOfWeek;
        let _ = writeln!(
            out,
            "send-time scenario: seed {}, {} shoppers x {} days (one send per shopper per day{}), oracle open rate {:.4}",
            self.seed,
            self.shoppers,
            self.days,
            if weekly { ", 168 hours of the week" } else { "" },
            self.oracle_open_rate
        );
        let _ =
            writeln!(
            out,
            "| policy | open rate | open rate, last quarter | lift vs random | share of oracle |{}",
            if weekly { " slots kept: mean / max |" } else { "" }
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|{}",
            if weekly { "---:|" } else { "" }
        );
        for p in &self.policies {
            let _ = write!(
                out,
                "| {} | {:.4} | {:.4} | {:+.1}% | {:.1}% |",
                p.policy,
                p.open_rate,
                p.open_rate_last_quarter,
                100.0 * p.lift_vs_random,
                100.0 * p.share_of_oracle
            );
            if weekly {
                match p.slots_kept {
                    Some(k) => {
                        let _ = write!(out, " {:.1} / {} |", k.mean, k.max);
                    }
                    None => out.push_str(" – |"),
                }
            }
            out.push('\n');
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

/// One run of the scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub shoppers: usize,
    pub days: usize,
    pub grid: Grid,
    /// Bounds on the slots a shopper's state keeps: `per_shopper` is played once per bound.
    pub max_shopper_slots: Vec<usize>,
}

impl Scenario {
    /// The scenario on `grid`: for hours of the week with the bounds 168 (none), 32, 16 and 8.
    pub fn new(seed: u64, shoppers: usize, days: usize, grid: Grid) -> Self {
        let max_shopper_slots = match grid {
            Grid::HourOfDay => vec![MAX_SLOTS],
            Grid::HourOfWeek => vec![MAX_SLOTS, 16, 12, 8],
        };
        Self {
            seed,
            shoppers,
            days,
            grid,
            max_shopper_slots,
        }
    }

    /// The hierarchy per-shopper policies learn with, keeping at most `bound` slots: no
    /// forgetting on hours of the day (as in the README's table), the server's default
    /// half-life (30 days) on hours of the week.
    fn hierarchy(&self, bound: usize) -> Hierarchy {
        Hierarchy {
            prior_strength: 10.0,
            half_life_ms: match self.grid {
                Grid::HourOfDay => None,
                Grid::HourOfWeek => Some(30.0 * DAY_MS as f64),
            },
            max_shopper_slots: bound,
        }
    }
}

/// The world every policy faces: shoppers, the order they are messaged each day, the coin
/// flips.
struct World {
    people: Vec<SimShopper>,
    orders: Vec<Vec<usize>>,
    flips: Vec<Vec<f64>>,
}

impl World {
    fn new(sc: &Scenario) -> Result<Self, SimError> {
        if sc.shoppers == 0 {
            return Err(SimError::invalid("--shoppers", "must be at least 1".into()));
        }
        if sc.days == 0 {
            return Err(SimError::invalid("--days", "must be at least 1".into()));
        }
        if let Some(bad) = sc
            .max_shopper_slots
            .iter()
            .find(|&&b| !(1..=MAX_SLOTS).contains(&b))
        {
            return Err(SimError::invalid(
                "--max-shopper-slots",
                format!("must be between 1 and {MAX_SLOTS}, got {bad}"),
            ));
        }
        let mut rng = Pcg64Mcg::seed_from_u64(sc.seed);
        let people = shoppers_on(sc.grid, sc.shoppers, &mut rng);
        let mut orders = Vec::with_capacity(sc.days);
        let mut flips = Vec::with_capacity(sc.days);
        for _ in 0..sc.days {
            let mut order: Vec<usize> = (0..sc.shoppers).collect();
            order.shuffle(&mut rng);
            orders.push(order);
            flips.push(
                (0..sc.shoppers)
                    .map(|_| rng.gen::<f64>())
                    .collect::<Vec<f64>>(),
            );
        }
        Ok(Self {
            people,
            orders,
            flips,
        })
    }
}

/// What one policy's play left: its result, and for per-shopper play the learned state.
pub struct Played {
    pub result: PolicyResult,
    /// The population's counts at the end.
    pub population: Population,
    /// Each shopper's segment and state at the end.
    pub states: Vec<(usize, ShopperCounts)>,
    /// The clock at the last send (ms).
    pub now_ms: u64,
}

fn play(sc: &Scenario, world: &World, name: &str, kind: Kind, bound: usize) -> Played {
    let slots = sc.grid.slots();
    let h = sc.hierarchy(bound);
    let n_shoppers = sc.shoppers;
    let last_quarter = sc.days - sc.days.div_ceil(4);
    let mut prng = Pcg64Mcg::seed_from_u64(sc.seed ^ 0x5eed);
    let mut pop = Population {
        global: PopulationCounts::new(slots),
        segments: Default::default(),
        version: 0,
    };
    let mut own: Vec<ShopperCounts> = vec![ShopperCounts::default(); n_shoppers];
    let (mut opens, mut late_opens, mut late_sends) = (0.0f64, 0.0f64, 0.0f64);
    let mut tables: HashMap<&str, PriorTable> = HashMap::new();
    let mut now = 0;
    for day in 0..sc.days {
        now = day as u64 * DAY_MS;
        let eligible = sc.grid.eligible(day);
        if kind == Kind::PerShopper {
            // Priors refreshed once a simulated day (the server: at most once a second).
            for (segment, _, _) in SEGMENTS {
                let mut means = Vec::new();
                prior_means(&h, &pop.global, pop.segments.get(segment), &mut means);
                tables.insert(segment, PriorTable::new(&h, &means));
            }
        }
        for &s in &world.orders[day] {
            let person = &world.people[s];
            let segment = SEGMENTS[person.segment].0;
            let slot = match kind {
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
                    let mut best = (eligible[0], f64::NEG_INFINITY);
                    for &j in &eligible {
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
                Kind::Random => eligible[prng.gen_range(0..eligible.len())],
            };
            let opened = world.flips[day][s] < person.open_probability_in(sc.grid, slot);
            let r = if opened { 1.0 } else { 0.0 };
            opens += r;
            if day >= last_quarter {
                late_opens += r;
                late_sends += 1.0;
            }
            match kind {
                Kind::PerShopper => {
                    pop.global.update(&h, slot, r, now);
                    pop.segments
                        .entry(segment.to_string())
                        .or_insert_with(|| PopulationCounts::new(slots))
                        .update(&h, slot, r, now);
                    own[s].update(&h, slot, r, now);
                }
                Kind::GlobalBest => pop.global.update(&h, slot, r, now),
                Kind::Random => {}
            }
        }
    }
    let slots_kept = (kind == Kind::PerShopper).then(|| SlotsKept {
        bound,
        mean: own.iter().map(|c| c.slots.len() as f64).sum::<f64>() / n_shoppers as f64,
        max: own.iter().map(|c| c.slots.len()).max().unwrap_or(0),
    });
    Played {
        result: PolicyResult {
            policy: name.to_string(),
            open_rate: opens / (n_shoppers * sc.days) as f64,
            open_rate_last_quarter: late_opens / late_sends.max(1.0),
            lift_vs_random: 0.0,
            share_of_oracle: 0.0,
            slots_kept,
        },
        population: pop,
        states: world.people.iter().map(|p| p.segment).zip(own).collect(),
        now_ms: now,
    }
}

/// Play the hour-of-day scenario (the README's table).
pub fn simulate(seed: u64, n_shoppers: usize, days: usize) -> Result<SendTimeReport, SimError> {
    run(&Scenario::new(seed, n_shoppers, days, Grid::HourOfDay))
}

/// Play `sc`: per-shopper Thompson sampling once per bound, the global best hour, random.
pub fn run(sc: &Scenario) -> Result<SendTimeReport, SimError> {
    let world = World::new(sc)?;
    // The oracle knows each shopper's best eligible slot every day.
    let eligible: Vec<Vec<usize>> = (0..sc.days).map(|d| sc.grid.eligible(d)).collect();
    let oracle = world
        .people
        .iter()
        .map(|p| eligible.iter().map(|e| p.best(sc.grid, e)).sum::<f64>() / sc.days as f64)
        .sum::<f64>()
        / sc.shoppers as f64;
    // Bounds of the grid's size or more are the same unbounded run.
    let mut bounds: Vec<usize> = Vec::new();
    for &b in &sc.max_shopper_slots {
        let b = b.min(sc.grid.slots());
        if !bounds.contains(&b) {
            bounds.push(b);
        }
    }
    let mut runs: Vec<(String, Kind, usize)> = bounds
        .iter()
        .map(|&bound| {
            let name = if bound >= sc.grid.slots() {
                "per_shopper".to_string()
            } else {
                format!("per_shopper, at most {bound} slots")
            };
            (name, Kind::PerShopper, bound)
        })
        .collect();
    runs.push(("global_best_hour".into(), Kind::GlobalBest, MAX_SLOTS));
    runs.push(("random".into(), Kind::Random, MAX_SLOTS));
    let mut results: Vec<PolicyResult> = runs
        .iter()
        .map(|(name, kind, bound)| play(sc, &world, name, *kind, *bound).result)
        .collect();
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
        seed: sc.seed,
        grid: sc.grid,
        shoppers: sc.shoppers,
        days: sc.days,
        oracle_open_rate: oracle,
        policies: results,
    })
}

/// The per-shopper policy's state after playing `sc` keeping at most `bound` slots: what
/// realistic shoppers look like after months of sends (the send-time benchmark decides for
/// them).
pub fn learned_states(sc: &Scenario, bound: usize) -> Result<Played, SimError> {
    let world = World::new(sc)?;
    Ok(play(sc, &world, "per_shopper", Kind::PerShopper, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_probability_peaks_at_the_preferred_hour() {
        let s = SimShopper {
            segment: 0,
            preferred: 23.0,
            weekend_preferred: 23.0,
        };
        assert!(s.open_probability(23) > s.open_probability(0));
        assert!(s.open_probability(0) > s.open_probability(12));
        assert!((s.open_probability(23) - (BASE + PEAK)).abs() < 1e-12);
    }

    #[test]
    fn hours_of_the_week_follow_weekday_and_weekend_habits() {
        let office = SimShopper {
            segment: 1,
            preferred: 12.0,
            weekend_preferred: 19.0,
        };
        let (mon, sat) = (0, 5 * HOURS);
        let p = |slot| office.open_probability_in(Grid::HourOfWeek, slot);
        assert!((p(mon + 12) - (BASE + PEAK)).abs() < 1e-12);
        assert!((p(sat + 19) - (BASE + WEEKLY[1].1 * PEAK)).abs() < 1e-12);
        assert!(p(sat + 19) > p(sat + 12) && p(mon + 12) > p(mon + 19));
        assert_eq!(
            Grid::HourOfWeek.eligible(12),
            (5 * 24..6 * 24).collect::<Vec<_>>()
        );
        assert_eq!(p(mon + 12), office.open_probability_in(Grid::HourOfDay, 12));
        assert!(matches!(
            Grid::parse("hour_of_month"),
            Err(SimError::Invalid {
                option: "--slots",
                ..
            })
        ));
    }

    #[test]
    fn bounded_states_keep_learning_on_hours_of_the_week() {
        let mut sc = Scenario::new(7, 300, 56, Grid::HourOfWeek);
        sc.max_shopper_slots = vec![MAX_SLOTS, 8];
        let r = run(&sc).unwrap();
        let free = r.result("per_shopper").unwrap();
        let bounded = r.result("per_shopper, at most 8 slots").unwrap();
        let global = r.result("global_best_hour").unwrap().open_rate;
        assert!(
            free.open_rate > global && bounded.open_rate > global,
            "{}",
            r.table()
        );
        let (kept_free, kept_bounded) = (free.slots_kept.unwrap(), bounded.slots_kept.unwrap());
        assert!(kept_free.mean > 8.0, "{}", r.table());
        assert_eq!(kept_bounded.max, 8, "{}", r.table());
        assert!(bounded.open_rate > 0.9 * free.open_rate, "{}", r.table());
        let played = learned_states(&sc, 8).unwrap();
        assert_eq!(played.states.len(), 300);
        assert!(played.states.iter().all(|(_, s)| s.slots.len() <= 8));
        assert_eq!(played.result.open_rate, bounded.open_rate);
    }

    #[test]
    fn empty_scenarios_and_bounds_out_of_range_are_refused() {
        let option = |sc: &Scenario| match run(sc).unwrap_err() {
            SimError::Invalid { option, .. } => option,
            other => panic!("{other}"),
        };
        let sc = Scenario::new(1, 10, 2, Grid::HourOfWeek);
        assert_eq!(
            option(&Scenario {
                shoppers: 0,
                ..sc.clone()
            }),
            "--shoppers"
        );
        assert_eq!(
            option(&Scenario {
                days: 0,
                ..sc.clone()
            }),
            "--days"
        );
        for bad in [0, MAX_SLOTS + 1] {
            let sc = Scenario {
                max_shopper_slots: vec![8, bad],
                ..sc.clone()
            };
            assert_eq!(option(&sc), "--max-shopper-slots");
        }
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
