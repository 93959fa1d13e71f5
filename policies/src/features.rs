//! Namespaced, signed feature hashing.
//!
//! The server walks request JSON and pushes features into [`SparseFeatures`]: nested objects are
//! namespaces (joined with `.`), top-level scalars go in the empty namespace `""`, strings are
//! categorical, numbers numeric, booleans categorical (`"true"`/`"false"`), and arrays of strings
//! are pushed as several categoricals of the same name ([`SparseFeatures::push_set`]).
//!
//! The [`Featurizer`] hashes a candidate into a [`SparseVec`] of a fixed dimension:
//!
//! * a **bias** term (lets a shared linear model absorb the mean reward so the other weights learn
//!   deviations from it);
//! * the **action features**;
//! * the **action id** as a categorical hashed twice with independent seeds, each at value
//!   `1/sqrt(2)`: two ids become indistinguishable only if both hashes collide, so a shared
//!   model can still learn per-item effects in a small dimension;
//! * with `interactions`, **context x action** crosses (every context feature with every action
//!   feature and with both id hashes), which is what lets one linear model rank items differently
//!   per context;
//! * with `context_features`, the context features alone. They cannot change a ranking in a shared
//!   linear model (they add the same amount to every candidate) so they are off by default; they
//!   are useful for per-arm (disjoint) models.
//!
//! Every hash is xxh3 with fixed seeds and the index and sign come from fixed bits of it. Learned
//! models depend on these indices, so **the hashing must never change** between versions; the
//! `hashing_is_stable` test pins a few vectors.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::PolicyError;

// Seeds are arbitrary but frozen: changing any of them silently invalidates every learned model.
const SEED_NAMESPACE: u64 = 0;
const SEED_NAME: u64 = 1;
const SEED_CONTEXT: u64 = 0x7461_696c_6f72_0001;
const SEED_ACTION: u64 = 0x7461_696c_6f72_0002;
const SEED_CROSS: u64 = 0x7461_696c_6f72_0003;
const SEED_ID_1: u64 = 0x7461_696c_6f72_0004;
const SEED_ID_2: u64 = 0x7461_696c_6f72_0005;
const SEED_CROSS_ID: u64 = 0x7461_696c_6f72_0006;
const BIAS_KEY: u64 = 0x7461_696c_6f72_b1a5;

/// Largest dimension a featurizer accepts (2^18). The policies that keep `dimension²` state take
/// at most [`crate::policy::MAX_DENSE_DIMENSION`]; `sparse_linucb` takes all of it.
pub const MAX_DIMENSION: usize = crate::sparse_linear::MAX_SPARSE_DIMENSION;

/// Featurizer settings, stored with a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturizerConfig {
    /// Length of the hashed vector (power of two not required), 1..=262144 (at most 4096 for the
    /// policies that keep dimension² state).
    pub dimension: usize,
    /// Add context x action interactions (context features crossed with action features and with
    /// the action id).
    pub interactions: bool,
    /// Also hash the context features on their own (useful only for per-arm models).
    pub context_features: bool,
}

impl Default for FeaturizerConfig {
    fn default() -> Self {
        Self {
            dimension: 64,
            interactions: true,
            context_features: false,
        }
    }
}

/// A bag of hashed features: `(namespace hash, feature hash, value)`.
///
/// Pushing is cheap and JSON-free; the strings are hashed immediately and never stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseFeatures {
    /// The hashed entries in push order (duplicates are summed by the featurizer).
    pub entries: Vec<(u64, u64, f64)>,
}

impl SparseFeatures {
    /// An empty bag.
    pub fn new() -> Self {
        Self::default()
    }

    /// A numeric feature `name = value` in `namespace`. Zero and non-finite values are skipped
    /// (zero contributes nothing; NaN or infinity would poison a linear model).
    pub fn push_numeric(&mut self, namespace: &str, name: &str, value: f64) {
        self.push_hashed_numeric(namespace_hash(namespace), name_hash(name), value);
    }

    /// A categorical feature `name = value` in `namespace` (one-hot, value 1).
    pub fn push_categorical(&mut self, namespace: &str, name: &str, value: &str) {
        self.entries.push((
            namespace_hash(namespace),
            categorical_hash(name_hash(name), value),
            1.0,
        ));
    }

    /// [`push_numeric`](Self::push_numeric) with the namespace and name already hashed
    /// ([`namespace_hash`], [`name_hash`]): what a parser that hashes each namespace once uses.
    pub fn push_hashed_numeric(&mut self, namespace: u64, name: u64, value: f64) {
        if value == 0.0 || !value.is_finite() {
            return;
        }
        self.entries.push((namespace, name, value));
    }

    /// Several categoricals of one name (a JSON array of strings), each with value 1.
    pub fn push_set<'a>(
        &mut self,
        namespace: &str,
        name: &str,
        values: impl IntoIterator<Item = &'a str>,
    ) {
        for v in values {
            self.push_categorical(namespace, name, v);
        }
    }

    /// Number of pushed entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn hash_str(s: &str, seed: u64) -> u64 {
    xxh3_64_with_seed(s.as_bytes(), seed)
}

/// The hash of a namespace (the dotted path of nested objects, `""` at the top level) as it is
/// stored in [`SparseFeatures::entries`].
pub fn namespace_hash(namespace: &str) -> u64 {
    hash_str(namespace, SEED_NAMESPACE)
}

/// The hash of a feature name: a numeric feature's feature hash, and the seed of a categorical
/// one's ([`categorical_hash`]).
pub fn name_hash(name: &str) -> u64 {
    hash_str(name, SEED_NAME)
}

/// The feature hash of the categorical `name = value`, from `name_hash(name)`.
pub fn categorical_hash(name_hash: u64, value: &str) -> u64 {
    hash_str(value, name_hash)
}

fn mix(a: u64, b: u64, seed: u64) -> u64 {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&a.to_le_bytes());
    buf[8..].copy_from_slice(&b.to_le_bytes());
    xxh3_64_with_seed(&buf, seed)
}

/// Largest dimension [`SparseVec::from_pairs_below`] sorts by counting.
const COUNTING_SORT_MAX: usize = 1024;

/// A sparse vector in the featurizer's dimension: sorted unique indices with values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SparseVec {
    /// Strictly increasing indices.
    pub idx: Vec<u32>,
    /// Values, one per index.
    pub val: Vec<f64>,
}

impl SparseVec {
    /// Builds a vector from unsorted `(index, value)` pairs, summing duplicates and dropping
    /// exact zeros.
    pub fn from_pairs(mut pairs: Vec<(u32, f64)>) -> Self {
        Self::from_pairs_in(&mut pairs)
    }

    /// [`from_pairs`](Self::from_pairs) over a caller's buffer (sorted in place, left for
    /// reuse). Pairs on one index are summed in ascending order of value, so the result does
    /// not depend on the order the pairs came in (the same features pushed in another order
    /// give the same vector, bit for bit).
    pub fn from_pairs_in(pairs: &mut [(u32, f64)]) -> Self {
        // The general sort, even for a candidate's few dozen pairs: a hand-written insertion
        // sort measured slower (featurizing 100 LinUCB candidates: 66-74 µs vs 52-54 µs).
        pairs.sort_unstable_by_key(|p| p.0);
        Self::from_sorted(pairs)
    }

    /// [`from_pairs_in`](Self::from_pairs_in) for pairs whose indices are below `dim`, sorted by
    /// counting when `dim` is small next to the number of pairs (the usual dense-policy
    /// dimensions), else as there. `sorted` and `counts` are the caller's reused buffers; the
    /// result is the same vector, bit for bit.
    pub fn from_pairs_below(
        pairs: &mut [(u32, f64)],
        dim: usize,
        sorted: &mut Vec<(u32, f64)>,
        counts: &mut Vec<u32>,
    ) -> Self {
        if dim > COUNTING_SORT_MAX || dim > 8 * pairs.len() {
            return Self::from_pairs_in(pairs);
        }
        counts.clear();
        counts.resize(dim + 1, 0);
        for p in pairs.iter() {
            counts[p.0 as usize + 1] += 1;
        }
        // Running sums: `counts[i]` becomes the number of pairs below index `i`.
        let mut below = 0;
        for c in counts.iter_mut() {
            below += *c;
            *c = below;
        }
        sorted.clear();
        sorted.resize(pairs.len(), (0, 0.0));
        for &p in pairs.iter() {
            let slot = &mut counts[p.0 as usize];
            sorted[*slot as usize] = p;
            *slot += 1;
        }
        Self::from_sorted(sorted)
    }

    /// The vector of pairs sorted by index (any order within an index).
    fn from_sorted(pairs: &mut [(u32, f64)]) -> Self {
        let mut out = SparseVec {
            idx: Vec::with_capacity(pairs.len()),
            val: Vec::with_capacity(pairs.len()),
        };
        let mut run = 0;
        while run < pairs.len() {
            let i = pairs[run].0;
            let mut end = run + 1;
            while end < pairs.len() && pairs[end].0 == i {
                end += 1;
            }
            let sum = match &mut pairs[run..end] {
                [(_, a)] => *a,
                // Two sum the same in either order.
                [(_, a), (_, b)] => *a + *b,
                // Three or more values on one index are summed in ascending order, so the sum
                // does not depend on the order they came in; collisions are rare and short.
                more => {
                    insertion_sort_by_value(more);
                    more[1..].iter().fold(more[0].1, |acc, p| acc + p.1)
                }
            };
            // Collisions may cancel exactly; a stored zero would only cost time.
            if sum != 0.0 {
                out.idx.push(i);
                out.val.push(sum);
            }
            run = end;
        }
        out
    }

    /// Number of stored (nonzero) entries.
    pub fn nnz(&self) -> usize {
        self.idx.len()
    }

    /// Dot product with a dense vector; indices outside `dense` are ignored.
    pub fn dot(&self, dense: &[f64]) -> f64 {
        self.iter()
            .filter_map(|(i, v)| dense.get(i).map(|d| d * v))
            .sum()
    }

    /// `(index, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.idx
            .iter()
            .zip(&self.val)
            .map(|(&i, &v)| (i as usize, v))
    }
}

/// Sort a short run of pairs by value (`f64::total_cmp`): collisions on one index are a few
/// pairs, where this beats a general sort's set-up.
fn insertion_sort_by_value(run: &mut [(u32, f64)]) {
    for k in 1..run.len() {
        let mut j = k;
        while j > 0 && run[j - 1].1.total_cmp(&run[j].1).is_gt() {
            run.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Runtime featurizer built from a validated [`FeaturizerConfig`].
#[derive(Debug, Clone)]
pub struct Featurizer {
    config: FeaturizerConfig,
}

impl FeaturizerConfig {
    /// Validates the settings.
    pub fn build(&self) -> Result<Featurizer, PolicyError> {
        if self.dimension == 0 || self.dimension > MAX_DIMENSION {
            return Err(PolicyError::InvalidConfig {
                field: "dimension",
                message: format!("must be between 1 and {MAX_DIMENSION}"),
            });
        }
        Ok(Featurizer {
            config: self.clone(),
        })
    }
}

impl Featurizer {
    /// The dimension of every vector this featurizer produces.
    pub fn dimension(&self) -> usize {
        self.config.dimension
    }

    /// The settings this featurizer was built from.
    pub fn config(&self) -> &FeaturizerConfig {
        &self.config
    }

    /// The vector of one candidate `action_id` with its `action` features in `context`.
    pub fn vector(
        &self,
        context: &SparseFeatures,
        action_id: &str,
        action: &SparseFeatures,
    ) -> SparseVec {
        self.vector_with(
            &self.context_keys(&context.entries),
            action_id,
            &action.entries,
            &mut VectorScratch::default(),
        )
    }

    /// The keys of a decision's context features, computed once for all its candidates
    /// ([`vector_with`](Self::vector_with)).
    pub fn context_keys(&self, context: &[(u64, u64, f64)]) -> ContextKeys {
        ContextKeys(
            context
                .iter()
                .map(|&(ns, f, v)| (mix(ns, f, SEED_CONTEXT), v))
                .collect(),
        )
    }

    /// [`vector`](Self::vector) from the context's precomputed keys and raw entries, with
    /// buffers the caller keeps between calls; the same vector, bit for bit.
    pub fn vector_with(
        &self,
        context: &ContextKeys,
        action_id: &str,
        action: &[(u64, u64, f64)],
        scratch: &mut VectorScratch,
    ) -> SparseVec {
        let context = &context.0;
        let dim = self.config.dimension as u64;
        let pairs = &mut scratch.pairs;
        pairs.clear();
        pairs.reserve(
            3 + action.len()
                + if self.config.interactions {
                    context.len() * (action.len() + 2)
                } else {
                    0
                },
        );
        // Index from the high bits (multiply-shift, no modulo bias), sign from the lowest bit, so
        // index and sign are independent.
        let index = |key: u64, slots: u64| ((key as u128 * slots as u128) >> 64) as u32;
        let signed = |key: u64, value: f64| if key & 1 == 0 { value } else { -value };
        let entry = |key: u64, value: f64| (index(key, dim), signed(key, value));
        pairs.push(entry(BIAS_KEY, 1.0));
        let id1 = xxh3_64_with_seed(action_id.as_bytes(), SEED_ID_1);
        let id2 = xxh3_64_with_seed(action_id.as_bytes(), SEED_ID_2);
        let half = std::f64::consts::FRAC_1_SQRT_2;
        pairs.push(entry(id1, half));
        // The second id hash skips the first one's index: landing on it with the opposite sign
        // would cancel the id out entirely and make the item look like every other such item.
        let i1 = index(id1, dim);
        if dim > 1 {
            let mut i2 = index(id2, dim - 1);
            if i2 >= i1 {
                i2 += 1;
            }
            pairs.push((i2, signed(id2, half)));
        } else {
            pairs.push(entry(id2, half));
        }
        let action_keys = &mut scratch.action_keys;
        action_keys.clear();
        action_keys.extend(
            action
                .iter()
                .map(|&(ns, f, v)| (mix(ns, f, SEED_ACTION), v)),
        );
        for &(k, v) in action_keys.iter() {
            pairs.push(entry(k, v));
        }
        if self.config.interactions || self.config.context_features {
            for &(ck, cv) in context {
                if self.config.context_features {
                    pairs.push(entry(ck, cv));
                }
                if self.config.interactions {
                    for &(ak, av) in action_keys.iter() {
                        pairs.push(entry(mix(ck, ak, SEED_CROSS), cv * av));
                    }
                    pairs.push(entry(mix(ck, id1, SEED_CROSS_ID), cv * half));
                    pairs.push(entry(mix(ck, id2, SEED_CROSS_ID), cv * half));
                }
            }
        }
        SparseVec::from_pairs_below(
            pairs,
            self.config.dimension,
            &mut scratch.sorted,
            &mut scratch.counts,
        )
    }
}

/// A decision's context features as the featurizer crosses them, from
/// [`Featurizer::context_keys`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContextKeys(Vec<(u64, f64)>);

/// Buffers [`Featurizer::vector_with`] reuses from one candidate to the next.
#[derive(Debug, Clone, Default)]
pub struct VectorScratch {
    pairs: Vec<(u32, f64)>,
    action_keys: Vec<(u64, f64)>,
    sorted: Vec<(u32, f64)>,
    counts: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fz(dim: usize, interactions: bool) -> Featurizer {
        FeaturizerConfig {
            dimension: dim,
            interactions,
            context_features: false,
        }
        .build()
        .unwrap()
    }

    #[test]
    fn rejects_bad_dimension() {
        for d in [0, MAX_DIMENSION + 1] {
            let err = FeaturizerConfig {
                dimension: d,
                ..Default::default()
            }
            .build()
            .unwrap_err();
            assert!(matches!(
                err,
                PolicyError::InvalidConfig {
                    field: "dimension",
                    ..
                }
            ));
        }
    }

    #[test]
    fn vectors_are_sorted_unique_and_in_range() {
        let f = fz(16, true);
        let mut ctx = SparseFeatures::new();
        ctx.push_categorical("user", "segment", "gold");
        ctx.push_numeric("", "hour", 13.0);
        ctx.push_set("user", "tags", ["a", "b", "c"]);
        let mut act = SparseFeatures::new();
        act.push_categorical("item", "brand", "acme");
        act.push_numeric("item", "price", 9.5);
        let v = f.vector(&ctx, "sku-1", &act);
        assert!(v.idx.windows(2).all(|w| w[0] < w[1]));
        assert!(v.idx.iter().all(|&i| i < 16));
        assert_eq!(v.idx.len(), v.val.len());
    }

    #[test]
    fn id_is_two_hashes_and_bias() {
        let f = fz(1 << 12, false);
        let v = f.vector(&SparseFeatures::new(), "sku-1", &SparseFeatures::new());
        assert_eq!(v.nnz(), 3);
        let mut vals: Vec<f64> = v.val.iter().map(|x| x.abs()).collect();
        vals.sort_by(f64::total_cmp);
        assert!((vals[0] - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert!((vals[1] - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert_eq!(vals[2], 1.0);
    }

    #[test]
    fn interactions_depend_on_context_and_id() {
        let f = fz(1 << 12, true);
        let mut ctx_a = SparseFeatures::new();
        ctx_a.push_categorical("", "segment", "gold");
        let mut ctx_b = SparseFeatures::new();
        ctx_b.push_categorical("", "segment", "silver");
        let act = SparseFeatures::new();
        let a1 = f.vector(&ctx_a, "x", &act);
        let a2 = f.vector(&ctx_b, "x", &act);
        assert_eq!(a1.nnz(), 5);
        assert_ne!(a1, a2);
        // Without interactions, context alone does not enter the vector.
        let g = fz(1 << 12, false);
        assert_eq!(g.vector(&ctx_a, "x", &act), g.vector(&ctx_b, "x", &act));
    }

    #[test]
    fn distinct_ids_rarely_collide_in_small_dimension() {
        // With two hashes on distinct indices at dimension 64, a pair of ids is indistinguishable
        // only if both land on the same indices with the same signs: about 1.2e-4 per pair,
        // 0.6 expected among these 4950 pairs.
        let f = fz(64, false);
        let empty = SparseFeatures::new();
        let vs: Vec<SparseVec> = (0..100)
            .map(|i| f.vector(&empty, &format!("sku-{i}"), &empty))
            .collect();
        let mut same = 0;
        for i in 0..vs.len() {
            for j in 0..i {
                if vs[i] == vs[j] {
                    same += 1;
                }
            }
        }
        assert!(same <= 3, "{same} identical pairs");
    }

    #[test]
    fn vectors_do_not_depend_on_push_order() {
        // Dimension 2: every entry collides, so sums of many values meet in one index.
        for interactions in [false, true] {
            let f = fz(2, interactions);
            let mut ctx = SparseFeatures::new();
            ctx.push_numeric("u", "a", 0.1);
            ctx.push_numeric("u", "b", 1e-17);
            ctx.push_numeric("", "c", 3.3);
            let mut act = Vec::new();
            for (i, v) in [0.7, -1e16, 1e16, 0.3, 2.9].into_iter().enumerate() {
                act.push((i as u64 * 0x9e37_79b9, 17, v));
            }
            let forward = f.vector_with(
                &f.context_keys(&ctx.entries),
                "sku",
                &act,
                &mut VectorScratch::default(),
            );
            let mut rev_ctx = ctx.entries.clone();
            rev_ctx.reverse();
            act.reverse();
            let backward = f.vector_with(
                &f.context_keys(&rev_ctx),
                "sku",
                &act,
                &mut VectorScratch::default(),
            );
            assert_eq!(forward, backward);
            let mut one_bag = SparseFeatures::new();
            one_bag.entries = act.clone();
            assert_eq!(f.vector(&ctx, "sku", &one_bag), backward);
        }
        // The hashed pushes are the named ones.
        let mut a = SparseFeatures::new();
        a.push_numeric("ns.x", "price", 2.0);
        a.push_categorical("ns.x", "brand", "acme");
        let mut b = SparseFeatures::new();
        b.push_hashed_numeric(namespace_hash("ns.x"), name_hash("price"), 2.0);
        b.entries.push((
            namespace_hash("ns.x"),
            categorical_hash(name_hash("brand"), "acme"),
            1.0,
        ));
        b.push_hashed_numeric(1, 2, 0.0);
        assert_eq!(a, b);
    }

    /// Sorting by counting gives the general sort's vectors, bit for bit, with many collisions.
    #[test]
    fn counting_sort_matches_the_general_sort() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let (mut sorted, mut counts) = (Vec::new(), Vec::new());
        for dim in [1usize, 2, 7, 32, 64, 1024] {
            for _ in 0..50 {
                let n = rng.gen_range(1..200);
                let pairs: Vec<(u32, f64)> = (0..n)
                    .map(|_| {
                        let v = if rng.gen_bool(0.1) {
                            0.0
                        } else {
                            rng.gen_range(-3.0..3.0)
                        };
                        (rng.gen_range(0..dim as u32), v)
                    })
                    .collect();
                let want = SparseVec::from_pairs(pairs.clone());
                let mut p = pairs.clone();
                let got = SparseVec::from_pairs_below(&mut p, dim, &mut sorted, &mut counts);
                assert_eq!(got, want, "dim {dim}");
                let bits = |v: &SparseVec| v.val.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "dim {dim}");
            }
        }
    }

    #[test]
    fn hashing_is_stable() {
        // Pinned: learned models depend on these exact indices and signs.
        let f = fz(64, true);
        let mut ctx = SparseFeatures::new();
        ctx.push_categorical("", "segment", "gold");
        let mut act = SparseFeatures::new();
        act.push_numeric("item", "price", 2.0);
        let v = f.vector(&ctx, "sku-1", &act);
        let pinned = format!("{:?} {:?}", v.idx, v.val);
        assert_eq!(pinned, PINNED, "feature hashing changed");
    }

    const PINNED: &str = "[4, 14, 15, 29, 35, 58] [0.7071067811865476, 0.7071067811865476, -2.0, -1.0, -0.7071067811865476, -2.7071067811865475]";
}
