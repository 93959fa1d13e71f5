//! `tailor simulate`: a synthetic retail world that plays the bandit policies against each other.
//!
//! * [`World`]: shoppers in [`SEGMENTS`] (device, region, price sensitivity, discount affinity,
//!   recent categories) and a catalog of products (category, price, markdown count), with a true
//!   click probability for every shopper × product. A few *niche* products are loved by one
//!   segment and poor for everyone else; with `--shift` tastes change half way (the season's hit
//!   product, category trends and every product's appeal are redrawn).
//! * [`Round`]: one shopper and the candidate products a storefront offers them, drawn up front
//!   from the seed so every policy faces the same shoppers, the same candidates and the same
//!   coin flips (common random numbers: policies differ only by what they choose).
//! * Each policy serves from its own campaign: over HTTP against the real server (started in
//!   process on a temporary directory, or `--url` for an external one), or `--in-process` by
//!   calling [`tailor_policies::Policy`] directly with the server's own featurization, which is much faster.
//! * [`Report`]: per policy the mean reward, the cumulative (expected) regret against the oracle
//!   that knows the true probabilities, and the lift over uniform random choice; optionally an SVG
//!   chart of reward over time.
//!
//! The world is drawn from `--seed`, so the in-process mode is reproducible bit for bit. Over HTTP
//! the server seeds each decision from its event id, and the simulator's event ids are
//! deterministic, so runs are close to reproducible but rewards of one wave may be learned in a
//! different order.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_pcg::Pcg64Mcg;
use serde::Serialize;
use serde_json::{json, Value};
use tailor_policies::{Arm, FeaturizerConfig, PolicyConfig, SparseFeatures, SparseVec};

use crate::config::Settings;
use crate::engine::featurize;

/// Options of `tailor simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// `retail` (products, the default) or `send-time` (when to send a daily message; see
    /// `simulate_send_time`).
    #[arg(long, default_value = "retail")]
    pub scenario: String,
    /// Send-time scenario: shoppers.
    #[arg(long, default_value_t = 2_000)]
    pub shoppers: usize,
    /// Send-time scenario: days (one send per shopper per day).
    #[arg(long, default_value_t = 60)]
    pub days: usize,
    /// Send-time scenario: the slot grid, `hour_of_day` or `hour_of_week`.
    #[arg(long, default_value = "hour_of_day")]
    pub slots: String,
    /// Send-time scenario: comma-separated bounds on the slots a shopper's state keeps, one
    /// per-shopper run each (default: 168,16,12,8 on hours of the week, none on hours of the
    /// day); bounds of the grid's size or more are one unbounded run.
    #[arg(long, value_delimiter = ',')]
    pub max_shopper_slots: Vec<usize>,
    /// Shoppers (decisions) per policy.
    #[arg(long, default_value_t = 20_000)]
    pub rounds: usize,
    /// Comma-separated policies (see `--help`); default: uniform, fixed, epsilon_greedy,
    /// thompson, linucb, linear_thompson, and with `--shift` also thompson_forgetting and
    /// linucb_forgetting. Known: thompson, thompson_forgetting, gaussian_thompson, linucb,
    /// linucb_forgetting, linucb_disjoint, linear_thompson, epsilon_greedy, uniform, fixed.
    #[arg(long, value_delimiter = ',')]
    pub policies: Vec<String>,
    /// Seed of the world, the shoppers and the coin flips.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Change tastes half way (season change).
    #[arg(long)]
    pub shift: bool,
    /// Half-life, in rewards, of the `*_forgetting` variants.
    #[arg(long, default_value_t = 4_000.0)]
    pub half_life: f64,
    /// Products in the catalog.
    #[arg(long, default_value_t = 40)]
    pub products: usize,
    /// Candidates offered per decision (a random subset of the catalog).
    #[arg(long, default_value_t = 10)]
    pub candidates: usize,
    /// Hashed feature dimension of the simulated campaigns.
    #[arg(long, default_value_t = 256)]
    pub dimension: usize,
    /// Call the policies directly instead of through the HTTP server.
    #[arg(long, conflicts_with = "url")]
    pub in_process: bool,
    /// Base URL of a running server (default: start one in process on a temporary directory).
    #[arg(long)]
    pub url: Option<String>,
    /// Editor API key for `--url` (creates one campaign per policy).
    #[arg(long, env = "TAILOR_ADMIN_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Concurrent decisions per policy over HTTP (a wave is decided, then rewarded).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Draw reward over time into this SVG file.
    #[arg(long)]
    pub chart: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// The world

const CATEGORIES: [&str; 6] = ["apparel", "shoes", "electronics", "home", "beauty", "toys"];
/// Typical price per category (the catalog median price is around 60).
const CATEGORY_PRICE: [f64; 6] = [40.0, 80.0, 250.0, 60.0, 30.0, 35.0];
/// Category trends before and after the taste shift (logit).
const TREND: [[f64; 6]; 2] = [
    [0.5, 0.2, -0.1, -0.3, 0.0, -0.4],
    [-0.5, -0.2, 0.2, 0.3, 0.0, 0.6],
];
const DEVICES: [&str; 3] = ["mobile", "desktop", "tablet"];
const REGIONS: [&str; 4] = ["north", "south", "east", "west"];

/// A shopper segment: how its shoppers look and what they like.
#[derive(Debug)]
pub struct Segment {
    pub name: &'static str,
    share: f64,
    price_sensitivity: (f64, f64),
    discount_affinity: (f64, f64),
    devices: [f64; 3],
    likes: &'static [usize],
}

/// The shopper segments of the simulated store.
pub const SEGMENTS: [Segment; 5] = [
    Segment {
        name: "bargain_hunter",
        share: 0.30,
        price_sensitivity: (0.6, 1.0),
        discount_affinity: (0.6, 1.0),
        devices: [0.7, 0.2, 0.1],
        likes: &[0, 3],
    },
    Segment {
        name: "premium",
        share: 0.15,
        price_sensitivity: (0.0, 0.3),
        discount_affinity: (0.0, 0.3),
        devices: [0.3, 0.6, 0.1],
        likes: &[2, 4],
    },
    Segment {
        name: "family",
        share: 0.25,
        price_sensitivity: (0.4, 0.8),
        discount_affinity: (0.3, 0.7),
        devices: [0.5, 0.3, 0.2],
        likes: &[5, 3],
    },
    Segment {
        name: "trendsetter",
        share: 0.20,
        price_sensitivity: (0.2, 0.6),
        discount_affinity: (0.2, 0.6),
        devices: [0.8, 0.15, 0.05],
        likes: &[0, 1, 4],
    },
    Segment {
        name: "techie",
        share: 0.10,
        price_sensitivity: (0.2, 0.5),
        discount_affinity: (0.1, 0.4),
        devices: [0.4, 0.55, 0.05],
        likes: &[2, 1],
    },
];

/// Logit of a plain product for an average shopper; sets the store's base click rate (~5 %).
const INTERCEPT: f64 = -3.3;
/// A product in one of the shopper's recently browsed categories.
const RECENT_CATEGORY: f64 = 0.9;
/// A product in one of the segment's favourite categories.
const LIKED_CATEGORY: f64 = 0.4;
/// Price: everyone mildly prefers cheaper, price-sensitive shoppers much more.
const PRICE_ALL: f64 = -0.3;
const PRICE_SENSITIVE: f64 = -1.2;
/// Per markdown: discount lovers are drawn in, full-price shoppers mildly put off.
const MARKDOWN_LOVERS: f64 = 0.5;
const MARKDOWN_OTHERS: f64 = -0.15;
/// Premium-priced products on a phone.
const MOBILE_PREMIUM: f64 = -0.3;
/// Niche products: loved by their segment, poor for everyone else.
const NICHE_LOVED: f64 = 2.2;
const NICHE_OTHERS: f64 = -0.8;
/// The season's hit product, and last season's hit once it is out of season.
const HIT: f64 = 1.2;
const OUT_OF_SEASON: f64 = -0.6;
/// Spread of each product's own appeal, and of region × category tastes.
const PRODUCT_SPREAD: f64 = 0.35;
const REGION_SPREAD: f64 = 0.2;

/// A product of the catalog.
#[derive(Debug, Clone)]
pub struct Product {
    pub id: String,
    pub category: usize,
    pub price: f64,
    pub markdowns: u32,
    /// Segment that loves it, for niche products.
    pub niche_for: Option<usize>,
    /// Own appeal before and after the taste shift (logit).
    appeal: [f64; 2],
    /// What the storefront sends as the candidate's features.
    pub features: Value,
    /// The featurized `features` (the server's own JSON walk).
    action: SparseFeatures,
}

impl Product {
    /// Log price relative to the catalog median, roughly in [-1.5, 1.5].
    fn price_index(&self) -> f64 {
        ((self.price.ln() - 60f64.ln()) / 1.2).clamp(-1.5, 1.5)
    }

    fn price_band(&self) -> &'static str {
        if self.price < 30.0 {
            "budget"
        } else if self.price < 100.0 {
            "mid"
        } else {
            "premium"
        }
    }
}

/// A shopper as the world knows them.
#[derive(Debug, Clone)]
pub struct Shopper {
    pub segment: usize,
    pub device: usize,
    pub region: usize,
    pub price_sensitivity: f64,
    pub discount_affinity: f64,
    pub recent: Vec<usize>,
}

impl Shopper {
    /// The decide request's `context`: everything a storefront knows about the shopper.
    pub fn context(&self) -> Value {
        json!({
            "segment": SEGMENTS[self.segment].name,
            "device": DEVICES[self.device],
            "region": REGIONS[self.region],
            "price_sensitivity": round2(self.price_sensitivity),
            "discount_affinity": round2(self.discount_affinity),
            "recent_categories": self.recent.iter().map(|&c| CATEGORIES[c]).collect::<Vec<_>>(),
        })
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The simulated store: a catalog and the true tastes of its shoppers.
#[derive(Debug)]
pub struct World {
    pub products: Vec<Product>,
    /// Region × category taste (logit).
    region_taste: [[f64; 6]; 4],
    /// The season's hit product before and after the shift.
    hits: [usize; 2],
    /// Product indices in the retailer's bestseller order (by pre-shift popularity), the order
    /// candidates are sent in and what the `fixed` policy serves.
    bestseller_rank: Vec<usize>,
}

fn normal<R: Rng>(rng: &mut R, sd: f64) -> f64 {
    rng.sample::<f64, _>(StandardNormal) * sd
}

fn pick_weighted<R: Rng>(rng: &mut R, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

impl World {
    /// Draw a catalog of `n` products (at least 8) from `rng`.
    pub fn new<R: Rng>(n: usize, rng: &mut R) -> anyhow::Result<Self> {
        if n < 8 {
            bail!("--products must be at least 8, got {n}");
        }
        let mut categories: Vec<usize> = (0..n).map(|i| i % CATEGORIES.len()).collect();
        categories.shuffle(rng);
        let mut products: Vec<Product> = categories
            .into_iter()
            .enumerate()
            .map(|(i, category)| {
                let price = (CATEGORY_PRICE[category].ln() + normal(rng, 0.5)).exp();
                let markdowns = pick_weighted(rng, &[0.5, 0.25, 0.15, 0.1]) as u32;
                let own = normal(rng, PRODUCT_SPREAD);
                // After the shift a product keeps a little of its old appeal.
                let later = 0.3 * own + (1.0f64 - 0.09).sqrt() * normal(rng, PRODUCT_SPREAD);
                Product {
                    id: format!("sku-{i:03}"),
                    category,
                    price: (price * 100.0).round() / 100.0,
                    markdowns,
                    niche_for: None,
                    appeal: [own, later],
                    features: Value::Null,
                    action: SparseFeatures::default(),
                }
            })
            .collect();
        // One niche product for each of four segments (not the largest one, whose favourites
        // are what a context-free policy learns anyway).
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        for (k, &p) in order.iter().take(4).enumerate() {
            products[p].niche_for = Some(k + 1);
        }
        // The season's hits: apparel before the shift, toys or home after, never a niche one.
        let hit_of = |cats: &[usize], rng: &mut R| -> usize {
            let pool: Vec<usize> = order[4..]
                .iter()
                .copied()
                .filter(|&p| cats.contains(&products[p].category))
                .collect();
            pool[rng.gen_range(0..pool.len())]
        };
        let hits = [hit_of(&[0], rng), hit_of(&[5, 3], rng)];
        let mut region_taste = [[0.0; 6]; 4];
        for row in &mut region_taste {
            for v in row.iter_mut() {
                *v = normal(rng, REGION_SPREAD);
            }
        }
        for p in &mut products {
            p.features = json!({
                "category": CATEGORIES[p.category],
                "price_band": p.price_band(),
                "price_index": round2(p.price_index()),
                "markdowns": p.markdowns,
                "on_sale": p.markdowns > 0,
            });
            p.action = featurize::features("features", &p.features)
                .map_err(|e| anyhow!("featurizing {}: {e}", p.id))?;
        }
        let mut world = World {
            products,
            region_taste,
            hits,
            bestseller_rank: Vec::new(),
        };
        // The retailer ranks by last season's popularity over its whole clientele.
        let popularity: Vec<f64> = (0..n)
            .map(|p| {
                world.products[p].appeal[0]
                    + TREND[0][world.products[p].category]
                    + if p == world.hits[0] { HIT } else { 0.0 }
                    + if world.products[p].niche_for.is_some() {
                        NICHE_OTHERS
                    } else {
                        0.0
                    }
            })
            .collect();
        let mut rank: Vec<usize> = (0..n).collect();
        rank.sort_by(|&a, &b| popularity[b].total_cmp(&popularity[a]));
        world.bestseller_rank = rank;
        Ok(world)
    }

    /// A random shopper.
    pub fn shopper<R: Rng>(&self, rng: &mut R) -> Shopper {
        let shares: Vec<f64> = SEGMENTS.iter().map(|s| s.share).collect();
        let segment = pick_weighted(rng, &shares);
        let s = &SEGMENTS[segment];
        let device = pick_weighted(rng, &s.devices);
        let region = rng.gen_range(0..REGIONS.len());
        let price_sensitivity = rng.gen_range(s.price_sensitivity.0..=s.price_sensitivity.1);
        let discount_affinity = rng.gen_range(s.discount_affinity.0..=s.discount_affinity.1);
        let n_recent = rng.gen_range(1..=2);
        let mut recent = Vec::with_capacity(n_recent);
        while recent.len() < n_recent {
            let c = if rng.gen_bool(0.7) {
                s.likes[rng.gen_range(0..s.likes.len())]
            } else {
                rng.gen_range(0..CATEGORIES.len())
            };
            if !recent.contains(&c) {
                recent.push(c);
            }
        }
        Shopper {
            segment,
            device,
            region,
            price_sensitivity,
            discount_affinity,
            recent,
        }
    }

    /// True click probability of `product` for `shopper` in `phase` (0 before the shift, 1
    /// after).
    pub fn probability(&self, shopper: &Shopper, product: usize, phase: usize) -> f64 {
        let p = &self.products[product];
        let seg = &SEGMENTS[shopper.segment];
        let mut z = INTERCEPT + p.appeal[phase] + TREND[phase][p.category];
        if self.hits[phase] == product {
            z += HIT;
        } else if phase == 1 && self.hits[0] == product {
            z += OUT_OF_SEASON;
        }
        if shopper.recent.contains(&p.category) {
            z += RECENT_CATEGORY;
        }
        if seg.likes.contains(&p.category) {
            z += LIKED_CATEGORY;
        }
        let price = p.price_index();
        z += PRICE_ALL * price + PRICE_SENSITIVE * shopper.price_sensitivity * price;
        let md = p.markdowns as f64;
        z += MARKDOWN_LOVERS * shopper.discount_affinity * md
            + MARKDOWN_OTHERS * (1.0 - shopper.discount_affinity) * md;
        if shopper.device == 0 && p.price_band() == "premium" {
            z += MOBILE_PREMIUM;
        }
        z += self.region_taste[shopper.region][p.category];
        match p.niche_for {
            Some(s) if s == shopper.segment => z += NICHE_LOVED,
            Some(_) => z += NICHE_OTHERS,
            None => {}
        }
        sigmoid(z)
    }
}

/// One decision: a shopper, the candidates offered (in bestseller order), their true click
/// probabilities and the coin flips that decide each candidate's click.
#[derive(Debug, Clone)]
pub struct Round {
    pub shopper: Shopper,
    pub context: Value,
    context_features: SparseFeatures,
    pub candidates: Vec<usize>,
    pub probabilities: Vec<f64>,
    coins: Vec<f64>,
}

impl Round {
    fn reward(&self, j: usize) -> f64 {
        if self.coins[j] < self.probabilities[j] {
            1.0
        } else {
            0.0
        }
    }

    fn best(&self) -> f64 {
        self.probabilities.iter().copied().fold(0.0, f64::max)
    }
}

/// Draw `rounds` rounds; tastes change at `shift_at`.
pub fn rounds<R: Rng>(
    world: &World,
    rounds: usize,
    candidates: usize,
    shift_at: Option<usize>,
    rng: &mut R,
) -> anyhow::Result<Vec<Round>> {
    let n = world.products.len();
    if candidates < 2 || candidates > n {
        bail!("--candidates must be between 2 and --products ({n}), got {candidates}");
    }
    let position: Vec<usize> = {
        let mut pos = vec![0; n];
        for (rank, &p) in world.bestseller_rank.iter().enumerate() {
            pos[p] = rank;
        }
        pos
    };
    (0..rounds)
        .map(|t| {
            let phase = usize::from(shift_at.is_some_and(|s| t >= s));
            let shopper = world.shopper(rng);
            let mut offered: Vec<usize> = rand::seq::index::sample(rng, n, candidates).into_vec();
            offered.sort_by_key(|&p| position[p]);
            let probabilities = offered
                .iter()
                .map(|&p| world.probability(&shopper, p, phase))
                .collect();
            let coins = (0..candidates).map(|_| rng.gen::<f64>()).collect();
            let context = shopper.context();
            let context_features = featurize::features("context", &context)
                .map_err(|e| anyhow!("featurizing the context: {e}"))?;
            Ok(Round {
                shopper,
                context,
                context_features,
                candidates: offered,
                probabilities,
                coins,
            })
        })
        .collect()
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
pub fn contender(name: &str, half_life: f64, dimension: usize) -> anyhow::Result<Contender> {
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
        "uniform" => PolicyConfig::Uniform {},
        "fixed" => PolicyConfig::Fixed {},
        other => bail!(
            "unknown policy {other:?}; known: thompson, thompson_forgetting, gaussian_thompson, \
             linucb, linucb_forgetting, linucb_disjoint, linear_thompson, epsilon_greedy, \
             uniform, fixed"
        ),
    };
    policy
        .validate()
        .map_err(|e| anyhow!("policy {name}: {e}"))?;
    let featurizer = FeaturizerConfig {
        dimension,
        interactions: true,
        // Per-arm models see no cross features of their own id; they need the context alone.
        context_features: matches!(policy, PolicyConfig::LinUcbDisjoint { .. }),
    };
    featurizer
        .build()
        .map_err(|e| anyhow!("--dimension: {e}"))?;
    Ok(Contender {
        name: name.to_string(),
        policy,
        featurizer,
    })
}

// ---------------------------------------------------------------------------------------------
// Results

/// How many points each policy's reward-over-time curve has.
const CURVE_POINTS: usize = 100;

/// Per-round outcomes of one policy: the true probability of what it served, and the reward.
#[derive(Debug, Clone, Default)]
struct Trace {
    expected: Vec<f64>,
    reward: Vec<f64>,
}

/// One policy's results.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyResult {
    pub name: String,
    pub config: PolicyConfig,
    /// Mean observed reward (click rate).
    pub mean_reward: f64,
    /// Mean true click probability of what was served (the noise-free version of the above).
    pub expected_reward: f64,
    /// Σ (oracle's true probability − served true probability): expected cumulative regret.
    pub regret: f64,
    /// `mean_reward / uniform − 1`, where uniform is the exact expected reward of serving a
    /// uniformly random candidate on the same shoppers.
    pub lift_over_uniform: f64,
    /// Mean observed reward before the taste shift (all rounds without a shift).
    pub mean_reward_before_shift: f64,
    /// Mean observed reward after the taste shift (null without a shift).
    pub mean_reward_after_shift: Option<f64>,
    /// Mean observed reward over the last quarter of the run (after learning settles).
    pub mean_reward_last_quarter: f64,
}

/// A reference row: what a policy that knows the true probabilities would get.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    pub name: &'static str,
    pub mean_reward: f64,
    pub mean_reward_before_shift: f64,
    pub mean_reward_after_shift: Option<f64>,
    pub mean_reward_last_quarter: f64,
}

impl Reference {
    fn new(name: &'static str, per_round: &[f64], shift_at: Option<usize>) -> Self {
        let split = shift_at.unwrap_or(per_round.len());
        Reference {
            name,
            mean_reward: mean(per_round),
            mean_reward_before_shift: mean(&per_round[..split]),
            mean_reward_after_shift: shift_at.map(|s| mean(&per_round[s..])),
            mean_reward_last_quarter: mean(&per_round[per_round.len() * 3 / 4..]),
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub seed: u64,
    pub rounds: usize,
    pub products: usize,
    pub candidates: usize,
    pub shift_at: Option<usize>,
    /// Mean true probability of the best candidate of each round.
    pub oracle_mean_reward: f64,
    /// Mean true probability of a uniformly random candidate.
    pub uniform_mean_reward: f64,
    /// Reference rows without learning or noise (true probabilities): `oracle` serves each
    /// shopper's best candidate, `best_context_free` the candidate with the best click rate over
    /// all shoppers of the phase (the ceiling of context-free policies such as `thompson`).
    pub references: Vec<Reference>,
    pub policies: Vec<PolicyResult>,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn report(
    mode: &'static str,
    args: &SimulateArgs,
    shift_at: Option<usize>,
    rounds: &[Round],
    contenders: &[Contender],
    traces: &[Trace],
) -> Report {
    let oracle: Vec<f64> = rounds.iter().map(Round::best).collect();
    let uniform = mean(
        &rounds
            .iter()
            .map(|r| mean(&r.probabilities))
            .collect::<Vec<_>>(),
    );
    let split = shift_at.unwrap_or(rounds.len());
    let mut context_free = context_free_oracle(&rounds[..split]);
    context_free.extend(context_free_oracle(&rounds[split..]));
    let policies = contenders
        .iter()
        .zip(traces)
        .map(|(c, t)| {
            let mean_reward = mean(&t.reward);
            PolicyResult {
                name: c.name.clone(),
                config: c.policy.clone(),
                mean_reward,
                expected_reward: mean(&t.expected),
                regret: oracle.iter().zip(&t.expected).map(|(o, e)| o - e).sum(),
                lift_over_uniform: if uniform > 0.0 {
                    mean_reward / uniform - 1.0
                } else {
                    0.0
                },
                mean_reward_before_shift: mean(&t.reward[..split]),
                mean_reward_after_shift: shift_at.map(|s| mean(&t.reward[s..])),
                mean_reward_last_quarter: mean(&t.reward[t.reward.len() * 3 / 4..]),
            }
        })
        .collect();
    Report {
        mode,
        seed: args.seed,
        rounds: rounds.len(),
        products: args.products,
        candidates: args.candidates,
        shift_at,
        oracle_mean_reward: mean(&oracle),
        uniform_mean_reward: uniform,
        references: vec![
            Reference::new("oracle", &oracle, shift_at),
            Reference::new("best_context_free", &context_free, shift_at),
        ],
        policies,
    }
}

/// The true probability of the candidate with the best click rate averaged over all shoppers of
/// `rounds` (one taste phase), per round: what the best context-free policy would get.
fn context_free_oracle(rounds: &[Round]) -> Vec<f64> {
    let n = rounds
        .iter()
        .flat_map(|r| r.candidates.iter().copied())
        .max()
        .map_or(0, |m| m + 1);
    let mut sum = vec![0.0f64; n];
    let mut count = vec![0.0f64; n];
    for r in rounds {
        for (&p, &q) in r.candidates.iter().zip(&r.probabilities) {
            sum[p] += q;
            count[p] += 1.0;
        }
    }
    let avg: Vec<f64> = sum
        .iter()
        .zip(&count)
        .map(|(s, c)| s / c.max(1.0))
        .collect();
    rounds
        .iter()
        .map(|r| {
            let best = (0..r.candidates.len())
                .max_by(|&a, &b| avg[r.candidates[a]].total_cmp(&avg[r.candidates[b]]))
                .unwrap_or(0);
            r.probabilities[best]
        })
        .collect()
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} rounds, {} products, {} candidates per decision, seed {}, {}{}",
            self.rounds,
            self.products,
            self.candidates,
            self.seed,
            self.mode.replace('_', " "),
            match self.shift_at {
                Some(s) => format!(", taste shift at round {s}"),
                None => String::new(),
            }
        );
        let _ = writeln!(
            out,
            "oracle mean reward {:.4}, uniform {:.4}",
            self.oracle_mean_reward, self.uniform_mean_reward
        );
        let shift = self.shift_at.is_some();
        let _ = write!(
            out,
            "{:<22} {:>11} {:>10} {:>10}",
            "policy", "mean reward", "regret", "lift"
        );
        if shift {
            let _ = write!(out, " {:>13} {:>12}", "before shift", "after shift");
        }
        let _ = writeln!(out, " {:>12}", "last quarter");
        for r in &self.references {
            let _ = write!(
                out,
                "{:<22} {:>11.4} {:>10} {:>10}",
                format!("({})", r.name),
                r.mean_reward,
                "",
                ""
            );
            if shift {
                let _ = write!(
                    out,
                    " {:>13.4} {:>12.4}",
                    r.mean_reward_before_shift,
                    r.mean_reward_after_shift.unwrap_or(f64::NAN)
                );
            }
            let _ = writeln!(out, " {:>12.4}", r.mean_reward_last_quarter);
        }
        for p in &self.policies {
            let _ = write!(
                out,
                "{:<22} {:>11.4} {:>10.1} {:>+9.1}%",
                p.name,
                p.mean_reward,
                p.regret,
                100.0 * p.lift_over_uniform
            );
            if shift {
                let _ = write!(
                    out,
                    " {:>13.4} {:>12.4}",
                    p.mean_reward_before_shift,
                    p.mean_reward_after_shift.unwrap_or(f64::NAN)
                );
            }
            let _ = writeln!(out, " {:>12.4}", p.mean_reward_last_quarter);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Running

fn progress(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {msg} [{elapsed_precise}] {wide_bar} {pos}/{len} decisions ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Run `tailor simulate`; `settings` configure the in-process server of the HTTP mode.
pub fn run(args: &SimulateArgs, settings: &Settings) -> anyhow::Result<()> {
    match args.scenario.as_str() {
        "retail" => {}
        "send-time" | "send_time" => {
            use crate::simulate_send_time::{run, Grid, Scenario};
            let grid = Grid::parse(&args.slots)?;
            let mut scenario = Scenario::new(args.seed, args.shoppers, args.days, grid);
            if !args.max_shopper_slots.is_empty() {
                if let Some(bad) = args
                    .max_shopper_slots
                    .iter()
                    .find(|&&b| !(1..=tailor_policies::send_time::MAX_SLOTS).contains(&b))
                {
                    bail!("--max-shopper-slots must be between 1 and 168, got {bad}");
                }
                scenario.max_shopper_slots = args.max_shopper_slots.clone();
            }
            let report = run(&scenario)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            return Ok(());
        }
        other => bail!("--scenario must be retail or send-time, got {other:?}"),
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let names = if args.policies.is_empty() {
        default_policies(args.shift)
    } else {
        args.policies.clone()
    };
    let mut contenders = Vec::with_capacity(names.len());
    for name in &names {
        let name = name.trim();
        if contenders.iter().any(|c: &Contender| c.name == name) {
            bail!("--policies names {name:?} twice");
        }
        contenders.push(contender(name, args.half_life, args.dimension)?);
    }
    let mut rng = Pcg64Mcg::seed_from_u64(args.seed);
    let world = World::new(args.products, &mut rng)?;
    let shift_at = args.shift.then_some(args.rounds / 2);
    let rounds = rounds(&world, args.rounds, args.candidates, shift_at, &mut rng)?;
    let bar = progress((args.rounds * contenders.len()) as u64, false);
    let (mode, traces) = if args.in_process {
        bar.set_message("in process");
        (
            "in_process",
            run_in_process(args, &world, &rounds, &contenders, &bar)?,
        )
    } else {
        bar.set_message("over HTTP");
        (
            "http",
            run_http(args, settings, &world, &rounds, &contenders, &bar)?,
        )
    };
    bar.finish_and_clear();
    let report = report(mode, args, shift_at, &rounds, &contenders, &traces);
    if let Some(path) = &args.chart {
        std::fs::write(path, chart(&report, &rounds, &traces))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
        if let Some(path) = &args.chart {
            println!("chart: {}", path.display());
        }
    }
    Ok(())
}

/// Each policy plays every round on its own thread (policies are independent given the rounds).
fn run_in_process(
    args: &SimulateArgs,
    world: &World,
    rounds: &[Round],
    contenders: &[Contender],
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Trace>> {
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(contenders.len());
    let mut results: Vec<Option<anyhow::Result<Trace>>> =
        (0..contenders.len()).map(|_| None).collect();
    let done = std::sync::Mutex::new(&mut results);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= contenders.len() {
                    break;
                }
                let r = play(args.seed, world, rounds, &contenders[i], bar);
                done.lock().expect("no thread panics holding it")[i] = Some(r);
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every contender was played"))
        .collect()
}

fn play(
    seed: u64,
    world: &World,
    rounds: &[Round],
    c: &Contender,
    bar: &ProgressBar,
) -> anyhow::Result<Trace> {
    let featurizer = c.featurizer.build()?;
    let mut policy = c.policy.build(featurizer.dimension())?;
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ xxhash_rust::xxh3::xxh3_64(c.name.as_bytes()));
    let mut trace = Trace {
        expected: Vec::with_capacity(rounds.len()),
        reward: Vec::with_capacity(rounds.len()),
    };
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
        let choice = policy.choose(&arms, 1, true, &mut rng)?[0];
        let j = choice.index;
        let reward = round.reward(j);
        policy.update(arms[j], reward, choice.probability);
        trace.expected.push(round.probabilities[j]);
        trace.reward.push(reward);
        if t % 256 == 255 {
            bar.inc(256);
        }
    }
    bar.inc((rounds.len() % 256) as u64);
    Ok(trace)
}

/// Over HTTP: one campaign per policy, all policies concurrently, each in waves of
/// `--concurrency` decisions followed by their rewards.
fn run_http(
    args: &SimulateArgs,
    settings: &Settings,
    world: &World,
    rounds: &[Round],
    contenders: &[Contender],
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Trace>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Keep the temporary directory alive until the server is done with it.
        let mut _data_dir = None;
        let mut running = None;
        let (base, key, prefix) = match &args.url {
            Some(url) => {
                let key = args
                    .api_key
                    .clone()
                    .ok_or_else(|| anyhow!("--url needs --api-key (or TAILOR_ADMIN_KEY)"))?;
                // An external server may already have campaigns of an earlier run.
                let nonce: u32 = rand::random();
                (
                    url.trim_end_matches('/').to_string(),
                    key,
                    format!("sim-{nonce:08x}"),
                )
            }
            None => {
                let dir = tempfile::tempdir().context("creating a temporary data directory")?;
                let key = format!("sim-{:032x}", rand::random::<u128>());
                let mut settings = settings.clone();
                settings.server.bind = "127.0.0.1:0".into();
                settings.storage.data_dir = dir.path().to_path_buf();
                settings.auth.admin_key = Some(key.clone());
                settings.plugins.dir = None;
                settings.validate()?;
                let r = crate::start(&settings).context("starting the in-process server")?;
                let base = format!("http://{}", r.addr);
                let handle = r.server.handle();
                let task = tokio::spawn(r.server);
                running = Some((handle, task, r.engine));
                _data_dir = Some(dir);
                (base, key, "sim".to_string())
            }
        };
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .context("the API key is not a valid header value")?,
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .pool_max_idle_per_host(64)
            .build()?;
        let candidates: Vec<Value> = world
            .products
            .iter()
            .map(|p| json!({"id": p.id, "features": p.features}))
            .collect();
        let shared = Arc::new(Shared {
            client,
            base,
            candidates,
            bar: bar.clone(),
        });
        let rounds = Arc::new(rounds.to_vec());
        let mut tasks = Vec::new();
        for c in contenders {
            let campaign = format!("{prefix}-{}-s{}", c.name.replace('_', "-"), args.seed);
            shared.create(&campaign, c).await?;
            tasks.push(tokio::spawn(play_http(
                shared.clone(),
                rounds.clone(),
                campaign,
                args.concurrency.max(1),
            )));
        }
        let mut traces = Vec::with_capacity(tasks.len());
        for t in tasks {
            traces.push(t.await.context("a simulation task panicked")??);
        }
        if let Some((handle, task, engine)) = running {
            handle.stop(true).await;
            let _ = task.await;
            engine
                .flush()
                .await
                .context("flushing the in-process server")?;
        }
        Ok(traces)
    })
}

struct Shared {
    client: reqwest::Client,
    base: String,
    /// Each product as a decide candidate.
    candidates: Vec<Value>,
    bar: ProgressBar,
}

impl Shared {
    async fn send(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .client
            .post(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {url}: {status}: {body}");
        }
        Ok(body)
    }

    async fn create(&self, campaign: &str, c: &Contender) -> anyhow::Result<()> {
        self.send(
            "/admin/v1/campaigns",
            &json!({
                "id": campaign,
                "policy": c.policy,
                "featurizer": c.featurizer,
                "reward_wait_seconds": 3600,
            }),
        )
        .await
        .map(|_| ())
    }
}

async fn play_http(
    shared: Arc<Shared>,
    rounds: Arc<Vec<Round>>,
    campaign: String,
    wave: usize,
) -> anyhow::Result<Trace> {
    let decide = format!("/v1/campaigns/{campaign}/decide");
    let mut trace = Trace {
        expected: Vec::with_capacity(rounds.len()),
        reward: Vec::with_capacity(rounds.len()),
    };
    for start in (0..rounds.len()).step_by(wave) {
        let end = (start + wave).min(rounds.len());
        let decisions = futures_util::future::join_all((start..end).map(|t| {
            let round = &rounds[t];
            let body = json!({
                "event_id": format!("{campaign}-{t}"),
                "context": round.context,
                "candidates": round
                    .candidates
                    .iter()
                    .map(|&p| shared.candidates[p].clone())
                    .collect::<Vec<_>>(),
            });
            let shared = &shared;
            let decide = &decide;
            async move { shared.send(decide, &body).await }
        }))
        .await;
        let mut rewards = Vec::with_capacity(end - start);
        for (t, d) in (start..end).zip(decisions) {
            let d = d?;
            let round = &rounds[t];
            let id = d["actions"][0]["id"]
                .as_str()
                .ok_or_else(|| anyhow!("decide answered without actions[0].id: {d}"))?;
            let j = round
                .candidates
                .iter()
                .position(|&p| shared.candidates[p]["id"] == id)
                .ok_or_else(|| anyhow!("decide chose {id:?}, which was not a candidate"))?;
            let reward = round.reward(j);
            trace.expected.push(round.probabilities[j]);
            trace.reward.push(reward);
            let event = d["event_id"]
                .as_str()
                .ok_or_else(|| anyhow!("decide answered without event_id: {d}"))?
                .to_string();
            rewards.push((event, reward));
        }
        let acks = futures_util::future::join_all(rewards.iter().map(|(event, reward)| {
            let shared = &shared;
            async move {
                shared
                    .send(
                        &format!("/v1/events/{event}/reward"),
                        &json!({ "value": reward }),
                    )
                    .await
            }
        }))
        .await;
        for a in acks {
            a?;
        }
        shared.bar.inc((end - start) as u64);
    }
    Ok(trace)
}

// ---------------------------------------------------------------------------------------------
// Chart

const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Bucket means of `v` into at most [`CURVE_POINTS`] points: `(round at bucket end, mean)`.
fn curve(v: &[f64]) -> Vec<(f64, f64)> {
    let size = v.len().div_ceil(CURVE_POINTS).max(1);
    v.chunks(size)
        .enumerate()
        .map(|(i, c)| ((i * size + c.len()) as f64, mean(c)))
        .collect()
}

/// Reward over time (the true click probability of what each policy served, averaged per
/// bucket of rounds, so coin-flip noise does not hide the curves), with the oracle dashed.
fn chart(report: &Report, rounds: &[Round], traces: &[Trace]) -> String {
    let (w, h) = (900.0, 480.0);
    let (left, right, top, bottom) = (60.0, 190.0, 30.0, 50.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let oracle = curve(&rounds.iter().map(Round::best).collect::<Vec<_>>());
    let curves: Vec<Vec<(f64, f64)>> = traces.iter().map(|t| curve(&t.expected)).collect();
    let ymax = oracle
        .iter()
        .chain(curves.iter().flatten())
        .map(|p| p.1)
        .fold(0.0, f64::max);
    // A round number of tenths or hundredths above the highest point.
    let step = if ymax > 0.2 { 0.05 } else { 0.01 };
    let ymax = ((ymax / step).ceil() * step).max(step);
    let xmax = rounds.len().max(1) as f64;
    let x = |r: f64| left + pw * r / xmax;
    let y = |v: f64| top + ph * (1.0 - v / ymax);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="18" font-size="14">Reward over time (true click probability of the served product, mean per {} rounds), seed {}</text>"#,
        rounds.len().div_ceil(CURVE_POINTS),
        report.seed
    );
    // Axes and grid.
    let mut v = 0.0;
    while v <= ymax + 1e-9 {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.2}</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0
        );
        v += step;
    }
    for i in 0..=5 {
        let r = xmax * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(r),
            top + ph + 18.0,
            r.round()
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">round</text>"#,
        left + pw / 2.0,
        h - 10.0
    );
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{:.1}" stroke="black"/><line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        top + ph,
        top + ph,
        left + pw,
        top + ph
    );
    if let Some(at) = report.shift_at {
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{top}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="2,3"/><text x="{:.1}" y="{:.1}" fill="#666">taste shift</text>"##,
            x(at as f64),
            x(at as f64),
            top + ph,
            x(at as f64) + 4.0,
            top + 12.0
        );
    }
    let polyline = |points: &[(f64, f64)]| -> String {
        points
            .iter()
            .map(|&(r, v)| format!("{:.1},{:.1}", x(r), y(v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#000" stroke-width="1.5" stroke-dasharray="6,4" points="{}"/>"##,
        polyline(&oracle)
    );
    let legend_x = left + pw + 15.0;
    let _ = writeln!(
        s,
        r##"<line x1="{legend_x}" y1="{top}" x2="{:.1}" y2="{top}" stroke="#000" stroke-dasharray="6,4"/><text x="{:.1}" y="{:.1}">oracle</text>"##,
        legend_x + 24.0,
        legend_x + 30.0,
        top + 4.0
    );
    for (i, (p, points)) in report.policies.iter().zip(&curves).enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            polyline(points)
        );
        let ly = top + 20.0 * (i + 1) as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{legend_x}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            legend_x + 24.0,
            legend_x + 30.0,
            ly + 4.0,
            escape(&p.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_is_reproducible_from_its_seed() {
        let draw = |seed| {
            let mut rng = Pcg64Mcg::seed_from_u64(seed);
            let world = World::new(20, &mut rng).unwrap();
            let r = rounds(&world, 50, 5, Some(25), &mut rng).unwrap();
            r.iter()
                .flat_map(|r| r.probabilities.clone())
                .collect::<Vec<f64>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn probabilities_are_plausible_click_rates() {
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        let world = World::new(40, &mut rng).unwrap();
        let r = rounds(&world, 2_000, 10, None, &mut rng).unwrap();
        let all: Vec<f64> = r.iter().flat_map(|r| r.probabilities.clone()).collect();
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
    fn chart_is_an_svg_with_one_line_per_policy() {
        let mut rng = Pcg64Mcg::seed_from_u64(2);
        let world = World::new(10, &mut rng).unwrap();
        let r = rounds(&world, 300, 4, Some(150), &mut rng).unwrap();
        let args = SimulateArgs {
            scenario: "retail".into(),
            shoppers: 0,
            days: 0,
            slots: "hour_of_day".into(),
            max_shopper_slots: vec![],
            rounds: 300,
            policies: vec![],
            seed: 2,
            shift: true,
            half_life: 100.0,
            products: 10,
            candidates: 4,
            dimension: 32,
            in_process: true,
            url: None,
            api_key: None,
            concurrency: 1,
            json: false,
            chart: None,
        };
        let contenders = vec![
            contender("uniform", 100.0, 32).unwrap(),
            contender("thompson", 100.0, 32).unwrap(),
        ];
        let traces =
            run_in_process(&args, &world, &r, &contenders, &ProgressBar::hidden()).unwrap();
        let rep = report("in_process", &args, Some(150), &r, &contenders, &traces);
        let svg = chart(&rep, &r, &traces);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("taste shift"));
    }
}
