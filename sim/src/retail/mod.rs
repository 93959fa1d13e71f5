//! The retail scenario of `tailor simulate`: a synthetic store that plays the bandit policies
//! against each other.
//!
//! * [`World`]: shoppers in [`SEGMENTS`] (device, region, price sensitivity, discount affinity,
//!   recent categories) and a catalog of products (category, price, markdown count), with a true
//!   click probability for every shopper × product. A few *niche* products are loved by one
//!   segment and poor for everyone else; with `--shift` tastes change half way (the season's hit
//!   product, category trends and every product's appeal are redrawn).
//! * [`Round`]: one shopper and the candidate products a storefront offers them, drawn up front
//!   from the seed so every policy faces the same shoppers, the same candidates and the same
//!   coin flips (common random numbers: policies differ only by what they choose).
//! * Each policy serves from its own campaign: over HTTP against the real server (the runner in
//!   the `tailor` binary), or in process ([`play_in_process`]) by calling
//!   [`tailor_policies::Policy`] directly with the server's own featurization, which is much
//!   faster. Either way each policy leaves a [`Trace`].
//! * [`Report`]: per policy the mean reward, the cumulative (expected) regret against the oracle
//!   that knows the true probabilities, and the lift over uniform random choice; [`chart`] draws
//!   reward over time as SVG.
//!
//! The world is drawn from the seed, so in-process play is reproducible bit for bit. Over HTTP
//! the server seeds each decision from its event id, and the simulator's event ids are
//! deterministic, so runs are close to reproducible but rewards of one wave may be learned in a
//! different order.

mod chart;
mod report;
mod world;

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;
use tailor_policies::{Arm, FeaturizerConfig, PolicyConfig, PolicyError, SparseVec};

pub use chart::chart;
pub use report::{PolicyResult, Reference, Report, Trace};
pub use world::{rounds, Product, Round, Segment, Shopper, World, SEGMENTS};

use crate::SimError;

/// A drawn run: the world, the rounds every policy plays, and where tastes shift.
#[derive(Debug)]
pub struct Setup {
    pub seed: u64,
    pub world: World,
    pub rounds: Vec<Round>,
    /// Candidates offered per round.
    pub candidates: usize,
    pub shift_at: Option<usize>,
}

impl Setup {
    /// Draw `products` products and `rounds` rounds of `candidates` candidates from `seed`;
    /// with `shift`, tastes change half way.
    pub fn draw(
        seed: u64,
        products: usize,
        rounds: usize,
        candidates: usize,
        shift: bool,
    ) -> Result<Setup, SimError> {
        if rounds == 0 {
            return Err(SimError::invalid("--rounds", "must be at least 1".into()));
        }
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let world = World::new(products, &mut rng)?;
        let shift_at = shift.then_some(rounds / 2);
        let rounds = world::rounds(&world, rounds, candidates, shift_at, &mut rng)?;
        Ok(Setup {
            seed,
            world,
            rounds,
            candidates,
            shift_at,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Policies

/// A named policy to simulate: its configuration and its campaign's featurizer.
#[derive(Debug, Clone)]
pub struct Contender {
    pub name: String,
    pub policy: PolicyConfig,
    pub featurizer: FeaturizerConfig,
}

/// The default line-up.
pub fn default_policies(shift: bool) -> Vec<String> {
    let mut names: Vec<&str> = vec![
        "uniform",
        "fixed",
        "epsilon_greedy",
        "thompson",
        "linucb",
        "linear_thompson",
    ];
    if shift {
        names.extend(["thompson_forgetting", "linucb_forgetting"]);
    }
    names.into_iter().map(String::from).collect()
}

/// The configuration behind a policy name. The linear policies' exploration widths are set for
/// click rewards (a standard deviation of a few tenths); the configuration defaults of 1 explore
/// too long for a run of a few thousand shoppers.
pub fn contender(name: &str, half_life: f64, dimension: usize) -> Result<Contender, SimError> {
    let forget = Some(half_life);
    let policy = match name {
        "thompson" => PolicyConfig::Thompson {
            prior_alpha: 1.0,
            prior_beta: 1.0,
            half_life: None,
        },
        "thompson_forgetting" => PolicyConfig::Thompson {
            prior_alpha: 1.0,
            prior_beta: 1.0,
            half_life: forget,
        },
        "gaussian_thompson" => PolicyConfig::GaussianThompson {
            prior_mean: 0.0,
            prior_count: 1.0,
            prior_shape: 1.0,
            prior_scale: 0.1,
            half_life: None,
        },
        "linucb" => PolicyConfig::LinUcb {
            alpha: 0.3,
            lambda: 1.0,
            half_life: None,
        },
        "linucb_forgetting" => PolicyConfig::LinUcb {
            alpha: 0.3,
            lambda: 1.0,
            half_life: forget,
        },
        "linucb_disjoint" => PolicyConfig::LinUcbDisjoint {
            alpha: 0.3,
            lambda: 1.0,
            half_life: None,
        },
        "linear_thompson" => PolicyConfig::LinearThompson {
            scale: 0.1,
            lambda: 1.0,
            half_life: None,
        },
        "epsilon_greedy" => PolicyConfig::EpsilonGreedy {
            epsilon: 0.1,
            estimator: Default::default(),
            lambda: 1.0,
            half_life: None,
        },
        // What a campaign created without a policy gets (docs/learning.md), in its own space.
        "sparse_linucb" => PolicyConfig::SparseLinUcb {
            alpha: tailor_policies::policy::DEFAULT_SPARSE_ALPHA,
            lambda: 1.0,
            half_life: None,
        },
        "uniform" => PolicyConfig::Uniform {},
        "fixed" => PolicyConfig::Fixed {},
        other => return Err(SimError::UnknownPolicy(other.to_string())),
    };
    let refused = |source| SimError::Policy {
        name: name.to_string(),
        source,
    };
    policy.validate().map_err(refused)?;
    let featurizer = FeaturizerConfig {
        dimension: if matches!(policy, PolicyConfig::SparseLinUcb { .. }) {
            1 << 16
        } else {
            dimension
        },
        interactions: true,
        // Per-arm models see no cross features of their own id; they need the context alone.
        context_features: matches!(policy, PolicyConfig::LinUcbDisjoint { .. }),
    };
    featurizer.build().map_err(|e| match e {
        PolicyError::InvalidConfig { message, .. } => SimError::invalid("--dimension", message),
        other => refused(other),
    })?;
    Ok(Contender {
        name: name.to_string(),
        policy,
        featurizer,
    })
}

// ---------------------------------------------------------------------------------------------
// Playing in process

/// Play every contender over `setup`'s rounds, each policy on its own thread (policies are
/// independent given the rounds); `progress` is told how many decisions were made, in batches.
/// Traces come back in the contenders' order.
pub fn play_in_process(
    setup: &Setup,
    contenders: &[Contender],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Trace>, SimError> {
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(contenders.len());
    let mut results: Vec<Option<Result<Trace, SimError>>> =
        (0..contenders.len()).map(|_| None).collect();
    let done = std::sync::Mutex::new(&mut results);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= contenders.len() {
                    break;
                }
                let r = play(setup, &contenders[i], progress);
                done.lock().expect("no thread panics holding it")[i] = Some(r);
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every contender was played"))
        .collect()
}

fn play(setup: &Setup, c: &Contender, progress: &(dyn Fn(u64) + Sync)) -> Result<Trace, SimError> {
    let refused = |source| SimError::Policy {
        name: c.name.clone(),
        source,
    };
    let (world, rounds) = (&setup.world, &setup.rounds);
    let featurizer = c.featurizer.build().map_err(refused)?;
    let mut policy = c.policy.build(featurizer.dimension()).map_err(refused)?;
    let mut rng =
        Pcg64Mcg::seed_from_u64(setup.seed ^ xxhash_rust::xxh3::xxh3_64(c.name.as_bytes()));
    let mut trace = Trace::with_capacity(rounds.len());
    let mut vectors: Vec<SparseVec> = Vec::new();
    for (t, round) in rounds.iter().enumerate() {
        vectors.clear();
        vectors.extend(round.candidates.iter().map(|&p| {
            let product = &world.products[p];
            featurizer.vector(&round.context_features, &product.id, &product.action)
        }));
        let arms: Vec<Arm<'_>> = round
            .candidates
            .iter()
            .zip(&vectors)
            .map(|(&p, x)| Arm {
                id: &world.products[p].id,
                x,
            })
            .collect();
        let choice = policy.choose(&arms, 1, true, &mut rng).map_err(refused)?[0];
        let j = choice.index;
        let reward = trace.serve(round, j);
        policy.update(arms[j], reward, choice.probability);
        if t % 256 == 255 {
            progress(256);
        }
    }
    progress((rounds.len() % 256) as u64);
    Ok(trace)
}

#[cfg(test)]
mod tests {
    use super::report::mean;
    use super::*;

    #[test]
    fn world_is_reproducible_from_its_seed() {
        let draw = |seed| {
            let setup = Setup::draw(seed, 20, 50, 5, true).unwrap();
            setup
                .rounds
                .iter()
                .flat_map(|r| r.probabilities.clone())
                .collect::<Vec<f64>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn probabilities_are_plausible_click_rates() {
        let setup = Setup::draw(1, 40, 2_000, 10, false).unwrap();
        let all: Vec<f64> = setup
            .rounds
            .iter()
            .flat_map(|r| r.probabilities.clone())
            .collect();
        assert!(all.iter().all(|p| (0.0..1.0).contains(p)));
        let m = mean(&all);
        assert!((0.02..0.15).contains(&m), "mean click rate {m}");
    }

    #[test]
    fn niche_products_are_loved_by_their_segment_only() {
        let mut rng = Pcg64Mcg::seed_from_u64(5);
        let world = World::new(40, &mut rng).unwrap();
        let niche = world
            .products
            .iter()
            .position(|p| p.niche_for.is_some())
            .unwrap();
        let lover = world.products[niche].niche_for.unwrap();
        let mut fan = world.shopper(&mut rng);
        fan.segment = lover;
        let mut other = fan.clone();
        other.segment = (lover + 1) % SEGMENTS.len();
        assert!(world.probability(&fan, niche, 0) > 3.0 * world.probability(&other, niche, 0));
    }

    #[test]
    fn settings_out_of_range_name_their_option() {
        let option = |r: Result<Setup, SimError>| match r.unwrap_err() {
            SimError::Invalid { option, .. } => option,
            other => panic!("{other}"),
        };
        assert_eq!(option(Setup::draw(1, 7, 10, 2, false)), "--products");
        assert_eq!(option(Setup::draw(1, 8, 10, 9, false)), "--candidates");
        assert_eq!(option(Setup::draw(1, 8, 0, 2, false)), "--rounds");
        assert!(matches!(
            contender("greedy", 100.0, 32),
            Err(SimError::UnknownPolicy(name)) if name == "greedy"
        ));
        assert!(matches!(
            contender("thompson", 100.0, 0),
            Err(SimError::Invalid {
                option: "--dimension",
                ..
            })
        ));
    }

    #[test]
    fn in_process_play_is_reproducible_and_counts_every_decision() {
        let setup = Setup::draw(4, 12, 600, 4, false).unwrap();
        let contenders = vec![
            contender("uniform", 100.0, 32).unwrap(),
            contender("linucb", 100.0, 32).unwrap(),
        ];
        let counted = AtomicUsize::new(0);
        let count = |n: u64| {
            counted.fetch_add(n as usize, Ordering::Relaxed);
        };
        let first = play_in_process(&setup, &contenders, &count).unwrap();
        assert_eq!(counted.load(Ordering::Relaxed), 2 * 600);
        let again = play_in_process(&setup, &contenders, &|_| {}).unwrap();
        for (a, b) in first.iter().zip(&again) {
            assert_eq!(a.reward, b.reward);
            assert_eq!(a.expected.len(), 600);
        }
        assert_ne!(first[0].expected, first[1].expected);
    }

    #[test]
    fn chart_is_an_svg_with_one_line_per_policy() {
        let setup = Setup::draw(2, 10, 300, 4, true).unwrap();
        let contenders = vec![
            contender("uniform", 100.0, 32).unwrap(),
            contender("thompson", 100.0, 32).unwrap(),
        ];
        let traces = play_in_process(&setup, &contenders, &|_| {}).unwrap();
        let rep = Report::new("in_process", &setup, &contenders, &traces);
        assert_eq!(rep.shift_at, Some(150));
        assert_eq!((rep.products, rep.candidates, rep.rounds), (10, 4, 300));
        let svg = chart(&rep, &setup.rounds, &traces);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("taste shift"));
    }
}
