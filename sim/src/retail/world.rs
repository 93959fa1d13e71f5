//! The synthetic store: a catalog, shoppers in [`SEGMENTS`], their true click probabilities,
//! and the [`Round`]s every policy faces.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::StandardNormal;
use serde_json::{json, Value};
use tailor_policies::SparseFeatures;
use tailor_server::engine::featurize;

use crate::SimError;

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
    pub(super) action: SparseFeatures,
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
    pub fn new<R: Rng>(n: usize, rng: &mut R) -> Result<Self, SimError> {
        if n < 8 {
            return Err(SimError::invalid(
                "--products",
                format!("must be at least 8, got {n}"),
            ));
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
            p.action = featurize::features("features", &p.features).map_err(|source| {
                SimError::Featurize {
                    what: p.id.clone(),
                    source,
                }
            })?;
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
    pub(super) context_features: SparseFeatures,
    pub candidates: Vec<usize>,
    pub probabilities: Vec<f64>,
    coins: Vec<f64>,
}

impl Round {
    /// The reward of serving candidate `j`: 1 when its coin flip falls below its probability.
    pub fn reward(&self, j: usize) -> f64 {
        if self.coins[j] < self.probabilities[j] {
            1.0
        } else {
            0.0
        }
    }

    /// The best candidate's true probability (what the oracle gets).
    pub fn best(&self) -> f64 {
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
) -> Result<Vec<Round>, SimError> {
    let n = world.products.len();
    if candidates < 2 || candidates > n {
        return Err(SimError::invalid(
            "--candidates",
            format!("must be between 2 and --products ({n}), got {candidates}"),
        ));
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
            let context_features =
                featurize::features("context", &context).map_err(|source| SimError::Featurize {
                    what: "the context".into(),
                    source,
                })?;
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
