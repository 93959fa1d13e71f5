//! The variety scenario: a five-slot carousel for a *variety-seeking* shopper, whose interest in
//! a second or third product of a category they were already shown drops
//! (`tailor simulate --scenario variety`; docs/simulation.md, docs/variety.md).
//!
//! The retail [`World`](crate::retail::World) supplies the shoppers, the catalog and each
//! product's true click probability `p`. Here a product in slot `s` that is the `m`-th of its
//! category in the carousel (counting from 0 in the slots above it) is clicked with probability
//! `p · repeat_factor^m`: with the default factor 0.4 the second shoe in a carousel is worth 40 %
//! of a first, the third 16 %. Each slot's click is learned by the policy as that product's reward.
//!
//! Every mode plays the same shoppers, candidates and coin flips (common random numbers) with the
//! policy's own slate draw ([`Policy::choose_slate`]): no rule, the per-category limit, and the
//! diversity share. The score is the expected clicks per carousel (the sum of the true slot
//! probabilities of what was served), which is less noisy than the clicks themselves.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use tailor_policies::policy::SlateRules;
use tailor_policies::{Arm, SparseVec};
use tailor_server::engine::featurize;

use crate::retail::{contender, Setup};
use crate::SimError;

/// How a carousel is drawn in one mode of the scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mode {
    pub name: &'static str,
    /// Most products of one category per carousel (0: no limit).
    pub max_per_value: usize,
    /// Share of slots drawn among categories not shown yet.
    pub diversity: f64,
}

/// The modes compared by default.
pub const MODES: [Mode; 5] = [
    Mode {
        name: "no rule",
        max_per_value: 0,
        diversity: 0.0,
    },
    Mode {
        name: "max 2 per category",
        max_per_value: 2,
        diversity: 0.0,
    },
    Mode {
        name: "max 1 per category",
        max_per_value: 1,
        diversity: 0.0,
    },
    Mode {
        name: "diversity 0.5",
        max_per_value: 0,
        diversity: 0.5,
    },
    Mode {
        name: "max 2 + diversity 0.5",
        max_per_value: 2,
        diversity: 0.5,
    },
];

/// The scenario's settings.
#[derive(Debug, Clone)]
pub struct VarietySettings {
    pub seed: u64,
    pub rounds: usize,
    pub products: usize,
    pub candidates: usize,
    /// Slots per carousel.
    pub k: usize,
    /// A repeat of a category keeps this share of its click probability per earlier repeat.
    pub repeat_factor: f64,
    pub policies: Vec<String>,
}

impl Default for VarietySettings {
    fn default() -> Self {
        Self {
            seed: 7,
            rounds: 5_000,
            products: 60,
            candidates: 20,
            k: 5,
            repeat_factor: 0.4,
            policies: vec!["linucb".into(), "thompson".into()],
        }
    }
}

/// One policy in one mode.
#[derive(Debug, Clone, PartialEq)]
pub struct VarietyResult {
    pub policy: String,
    pub mode: Mode,
    /// Expected clicks per carousel, over every round.
    pub expected_clicks: f64,
    /// The same over the last half of the rounds (after learning).
    pub late_expected_clicks: f64,
    /// Share of carousels holding 3 or more products of one category.
    pub piled_up: f64,
    /// Mean distinct categories per carousel.
    pub categories: f64,
}

/// Play every policy in every mode.
pub fn run(s: &VarietySettings, modes: &[Mode]) -> Result<Vec<VarietyResult>, SimError> {
    if s.k == 0 || s.k > s.candidates {
        return Err(SimError::invalid(
            "--k",
            format!("must be between 1 and --candidates ({})", s.candidates),
        ));
    }
    if !(s.repeat_factor.is_finite() && (0.0..=1.0).contains(&s.repeat_factor)) {
        return Err(SimError::invalid(
            "--repeat-factor",
            "must be between 0 and 1".into(),
        ));
    }
    let setup = Setup::draw(s.seed, s.products, s.rounds, s.candidates, false)?;
    let world = &setup.world;
    let featurize = |what: &str, v| {
        featurize::features(what, v).map_err(|source| SimError::Featurize {
            what: what.into(),
            source,
        })
    };
    let contexts = setup
        .rounds
        .iter()
        .map(|r| featurize("context", &r.context))
        .collect::<Result<Vec<_>, _>>()?;
    let actions = world
        .products
        .iter()
        .map(|p| featurize("features", &p.features))
        .collect::<Result<Vec<_>, _>>()?;
    // One coin per round and slot, shared by every mode and policy.
    let mut rng = Pcg64Mcg::seed_from_u64(s.seed ^ 0x0076_6172_6965_7479);
    let coins: Vec<Vec<f64>> = (0..s.rounds)
        .map(|_| (0..s.k).map(|_| rng.gen()).collect())
        .collect();
    let categories = world.products.iter().map(|p| p.category).max().unwrap_or(0) + 1;
    let mut out = Vec::new();
    for name in &s.policies {
        let c = contender(name, 1_000.0, 64)?;
        let refused = |source| SimError::Policy {
            name: name.clone(),
            source,
        };
        let featurizer = c.featurizer.build().map_err(refused)?;
        for mode in modes {
            let mut policy = c.policy.build(featurizer.dimension()).map_err(refused)?;
            let mut rng = Pcg64Mcg::seed_from_u64(s.seed ^ 0x5eed);
            let (mut total, mut late, mut piled, mut distinct) = (0.0, 0.0, 0usize, 0usize);
            for (t, round) in setup.rounds.iter().enumerate() {
                let vectors: Vec<SparseVec> = round
                    .candidates
                    .iter()
                    .map(|&p| featurizer.vector(&contexts[t], &world.products[p].id, &actions[p]))
                    .collect();
                let arms: Vec<Arm<'_>> = round
                    .candidates
                    .iter()
                    .zip(&vectors)
                    .map(|(&p, x)| Arm {
                        id: &world.products[p].id,
                        x,
                    })
                    .collect();
                let groups: Vec<Option<u32>> = round
                    .candidates
                    .iter()
                    .map(|&p| Some(world.products[p].category as u32))
                    .collect();
                let rules = SlateRules {
                    groups: &groups,
                    max_per_value: mode.max_per_value,
                    diversity: mode.diversity,
                    ..Default::default()
                };
                let slate = policy
                    .choose_slate(&arms, s.k, true, 0.0, &rules, &mut rng)
                    .map_err(refused)?;
                let mut shown = vec![0u32; categories];
                let mut expected = 0.0;
                for (slot, choice) in slate.iter().enumerate() {
                    let j = choice.index;
                    let category = world.products[round.candidates[j]].category;
                    let p = round.probabilities[j] * s.repeat_factor.powi(shown[category] as i32);
                    shown[category] += 1;
                    expected += p;
                    let click = f64::from(u8::from(coins[t][slot] < p));
                    policy.update(arms[j], click, choice.probability);
                }
                total += expected;
                if t >= s.rounds / 2 {
                    late += expected;
                }
                piled += usize::from(shown.iter().any(|&n| n >= 3));
                distinct += shown.iter().filter(|&&n| n > 0).count();
            }
            let n = s.rounds as f64;
            out.push(VarietyResult {
                policy: name.clone(),
                mode: *mode,
                expected_clicks: total / n,
                late_expected_clicks: late / (s.rounds - s.rounds / 2) as f64,
                piled_up: piled as f64 / n,
                categories: distinct as f64 / n,
            });
        }
    }
    Ok(out)
}

/// The results as a Markdown table (lift against the same policy's "no rule" mode).
pub fn table(s: &VarietySettings, results: &[VarietyResult]) -> String {
    let mut md = format!(
        "Variety scenario: seed {}, {} rounds, {} products, {} candidates, {} slots, repeat factor {}\n\n\
         | policy | mode | expected clicks / carousel | last half | lift (last half) | carousels with 3+ of a category | categories / carousel |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
        s.seed, s.rounds, s.products, s.candidates, s.k, s.repeat_factor
    );
    for r in results {
        let base = results
            .iter()
            .find(|b| b.policy == r.policy && b.mode.max_per_value == 0 && b.mode.diversity == 0.0)
            .map_or(r.late_expected_clicks, |b| b.late_expected_clicks);
        md.push_str(&format!(
            "| {} | {} | {:.4} | {:.4} | {:+.1} % | {:.1} % | {:.2} |\n",
            r.policy,
            r.mode.name,
            r.expected_clicks,
            r.late_expected_clicks,
            100.0 * (r.late_expected_clicks / base - 1.0),
            100.0 * r.piled_up,
            r.categories
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22 item 3: the variety-seeking shopper's reward rises with the limit, and the limit
    /// holds in every carousel.
    #[test]
    fn a_variety_seeking_shopper_clicks_more_under_the_limit() {
        let s = VarietySettings {
            rounds: 1_500,
            policies: vec!["linucb".into()],
            ..Default::default()
        };
        let r = run(&s, &MODES[..2]).unwrap();
        eprintln!("{}", table(&s, &r));
        let (free, limited) = (&r[0], &r[1]);
        assert_eq!(limited.piled_up, 0.0);
        assert!(free.piled_up > 0.2, "{free:?}");
        assert!(
            limited.late_expected_clicks > 1.01 * free.late_expected_clicks,
            "{limited:?} vs {free:?}"
        );
    }

    #[test]
    fn settings_out_of_range_name_their_option() {
        let bad = |s: VarietySettings| match run(&s, &MODES).unwrap_err() {
            SimError::Invalid { option, .. } => option,
            other => panic!("{other}"),
        };
        assert_eq!(
            bad(VarietySettings {
                k: 0,
                ..Default::default()
            }),
            "--k"
        );
        assert_eq!(
            bad(VarietySettings {
                repeat_factor: 1.5,
                ..Default::default()
            }),
            "--repeat-factor"
        );
    }
}
