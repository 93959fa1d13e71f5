//! A shared linear model over large hashed spaces (up to 2^18 dimensions) whose every operation
//! costs O(nonzeros of the vector), never O(d) or O(d²): the model behind `sparse_linucb`.
//!
//! It is ridge regression with the covariance `A⁻¹` replaced by the inverse of `A`'s
//! **diagonal** (`A = λI + Σ xxᵀ`), and the mean learned by the recursive-least-squares step
//! under that diagonal covariance:
//!
//! * per dimension `i`: the weight `θᵢ` and the precision `pᵢ = λ + Σ xᵢ²` (the diagonal of `A`);
//! * predict: `θᵀx`, O(nnz); uncertainty `xᵀΣx = Σ xᵢ²/pᵢ`, O(nnz);
//! * update with reward `r`: `q = xᵀΣx`, `e = r − θᵀx`; `θᵢ += xᵢ e / (pᵢ (1 + q))`, then
//!   `pᵢ += xᵢ²`, O(nnz).
//!
//! (The bake-off in docs/learning.md also tried keeping the diagonal of the exact rank-one
//! covariance update instead, `σᵢ² ← σᵢ² − (σᵢ²xᵢ)²/(1+q)` as AROW does: it shrinks the step
//! sizes more slowly when many features are on together and learned worse on every stream,
//! e.g. 0.643 against 0.704 on `linear-k10-p20-n10`.)
//!
//! The trade against the dense ridge (`linucb`): the mean step is the exact RLS step with the
//! off-diagonal covariance dropped, so correlated features are not decorrelated and learning is
//! closer to a normalized, per-coordinate adaptive gradient step than to an exact solve; the
//! bonus `sqrt(xᵀΣx)` ignores covariance and so overstates the uncertainty of a vector whose
//! features were seen together. In exchange a decision over 100 candidates with 30 nonzeros is
//! ~6000 memory reads at any `d`, and an update ~90.
//!
//! Forgetting (`γ < 1`) discounts the precision toward the prior, `p ← γp + (1−γ)λ`, lazily: the
//! evidence above the prior is stored divided by a global factor `g = γ^t`, so an update touches
//! only its own nonzeros; when `g` underflows toward 1e-150 every stored entry is rescaled once
//! (amortized O(d / updates-between-rescales), i.e. never in practice).
//!
//! **Exact while small.** While the model has touched at most [`EXACT_MAX`] dimensions and does
//! not forget, it also keeps the exact ridge over them (`A⁻¹` and `θ` on those dimensions; any
//! dimension not yet touched has `A⁻¹ᵢᵢ = 1/λ` and no covariance, so this *is* exact LinUCB over
//! the whole space) and predicts with it: on small problems (a few context features × a few
//! actions) the exact solve decorrelates the features and wins by up to 0.03 in the bake-off
//! (docs/learning.md). The diagonal model learns alongside all the while; the first update that
//! would take the block past `EXACT_MAX` dimensions (or any forgetting) hands the exact weights to
//! the diagonal model and drops the block for good. Cost while exact: O(n·nnz + n²) per update,
//! O(nnz²) per scored candidate, n ≤ 128.
//!
//! Memory: in memory a dense `Vec<[f64; 2]>` of `d` entries (16 bytes each: 1 MiB at 2^16, 4 MiB
//! at 2^18), allocated at the first update (a model that never learned holds none), so reads are
//! one cache line per nonzero. Serialized (postcard, snapshots and model
//! files) only the touched dimensions are written, as `(index, θ, evidence)`: at most ~19 bytes
//! per touched dimension (a varint index of ≤ 3 bytes and two f64), bounded by `19·d`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::SparseVec;

/// Largest dimension the sparse model accepts (2^18, Vowpal Wabbit's default `-b 18`).
pub const MAX_SPARSE_DIMENSION: usize = 1 << 18;

/// Largest number of dimensions the exact block covers before the model goes diagonal only.
pub const EXACT_MAX: usize = 128;

/// Below this global evidence factor every entry is rescaled (keeps `g` a normal f64).
const RESCALE_BELOW: f64 = 1e-150;

/// Diagonal-covariance ridge regression in dimension `d`. Public as a type so other modules'
/// enums can hold one; its operations stay crate-internal.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagRidge {
    d: usize,
    lambda: f64,
    /// Per dimension `[θᵢ, eᵢ]`, with precision `pᵢ = λ + g·eᵢ`.
    w: Vec<[f64; 2]>,
    /// Global evidence factor for lazy forgetting (1 without forgetting).
    g: f64,
    /// The exact ridge over the touched dimensions while they are few (`None` once dropped).
    exact: Option<Exact>,
}

/// Exact ridge regression restricted to the dimensions touched so far (at most [`EXACT_MAX`]).
/// Untouched dimensions have the prior `A⁻¹ᵢᵢ = 1/λ`, `θᵢ = 0` and no covariance with any other,
/// so predictions are those of the full-dimension exact ridge.
#[derive(Debug, Clone, PartialEq, Default)]
struct Exact {
    /// `(dimension, slot)` sorted by dimension; slots number the dimensions in order of arrival.
    index: Vec<(u32, u32)>,
    /// `A⁻¹` over the slots, row-major `n × n`.
    ainv: Vec<f64>,
    /// `θ` over the slots.
    theta: Vec<f64>,
}

impl Exact {
    fn n(&self) -> usize {
        self.theta.len()
    }

    fn slot(&self, dim: u32) -> Option<usize> {
        self.index
            .binary_search_by_key(&dim, |e| e.0)
            .ok()
            .map(|i| self.index[i].1 as usize)
    }

    /// Dimensions of `idx` not yet in the block.
    fn missing(&self, idx: &[u32]) -> usize {
        idx.iter().filter(|&&i| self.slot(i).is_none()).count()
    }

    /// Add the dimensions of `idx` not yet in the block, each with the prior `1/λ`.
    fn grow(&mut self, idx: &[u32], lambda: f64) {
        let n = self.n();
        let fresh: Vec<u32> = idx
            .iter()
            .copied()
            .filter(|&i| self.slot(i).is_none())
            .collect();
        if fresh.is_empty() {
            return;
        }
        let m = n + fresh.len();
        let mut ainv = vec![0.0; m * m];
        for r in 0..n {
            ainv[r * m..r * m + n].copy_from_slice(&self.ainv[r * n..r * n + n]);
        }
        for s in n..m {
            ainv[s * m + s] = 1.0 / lambda;
        }
        self.ainv = ainv;
        for (k, &dim) in fresh.iter().enumerate() {
            self.index.push((dim, (n + k) as u32));
            self.theta.push(0.0);
        }
        self.index.sort_unstable_by_key(|e| e.0);
    }

    /// `(slots, values)` of the nonzeros in the block, and `Σ v²` of those outside it.
    fn split(&self, idx: &[u32], val: &[f64]) -> (Vec<(usize, f64)>, f64) {
        let mut inside = Vec::with_capacity(idx.len());
        let mut outside = 0.0;
        for (&i, &v) in idx.iter().zip(val) {
            match self.slot(i) {
                Some(s) => inside.push((s, v)),
                None => outside += v * v,
            }
        }
        (inside, outside)
    }

    /// `(θᵀx, xᵀA⁻¹x)`.
    fn mean_variance(&self, idx: &[u32], val: &[f64], lambda: f64) -> (f64, f64) {
        let (xs, outside) = self.split(idx, val);
        let n = self.n();
        let mut m = 0.0;
        let mut q = outside / lambda;
        for &(s, v) in &xs {
            m += self.theta[s] * v;
            let row = &self.ainv[s * n..s * n + n];
            q += v * xs.iter().map(|&(t, w)| row[t] * w).sum::<f64>();
        }
        (m, q)
    }

    fn mean(&self, idx: &[u32], val: &[f64]) -> f64 {
        idx.iter()
            .zip(val)
            .filter_map(|(&i, &v)| self.slot(i).map(|s| self.theta[s] * v))
            .sum()
    }

    /// `u = A⁻¹x` over the slots (every dimension of `x` must be in the block).
    fn solve(&self, xs: &[(usize, f64)]) -> Vec<f64> {
        let n = self.n();
        (0..n)
            .map(|r| {
                let row = &self.ainv[r * n..r * n + n];
                xs.iter().map(|&(s, v)| row[s] * v).sum()
            })
            .collect()
    }

    /// The recursive-least-squares step (Sherman–Morrison); `x` must lie in the block.
    fn update(&mut self, idx: &[u32], val: &[f64], reward: f64) {
        let (xs, _) = self.split(idx, val);
        let u = self.solve(&xs);
        let q: f64 = xs.iter().map(|&(s, v)| u[s] * v).sum();
        let m: f64 = xs.iter().map(|&(s, v)| self.theta[s] * v).sum();
        let denom = 1.0 + q;
        let err = reward - m;
        if !(denom.is_finite() && err.is_finite()) {
            return;
        }
        let n = self.n();
        for r in 0..n {
            self.theta[r] += u[r] * err / denom;
            if u[r] == 0.0 {
                continue;
            }
            // A⁻¹ −= uuᵀ/(1+q), computed once per pair so A⁻¹ stays exactly symmetric.
            for c in r..n {
                let v = self.ainv[r * n + c] - u[r] * u[c] / denom;
                self.ainv[r * n + c] = v;
                self.ainv[c * n + r] = v;
            }
        }
    }

    /// `θ += delta·A⁻¹x` (the ridge correction of an already learned reward).
    fn adjust(&mut self, idx: &[u32], val: &[f64], delta: f64) {
        let (xs, _) = self.split(idx, val);
        let u = self.solve(&xs);
        self.theta
            .iter_mut()
            .zip(&u)
            .for_each(|(t, u)| *t += delta * u);
    }

    fn fits(&self, d: usize) -> bool {
        let n = self.n();
        let mut seen = vec![false; n];
        n <= EXACT_MAX
            && self.index.len() == n
            && self.ainv.len() == n * n
            && self.index.windows(2).all(|w| w[0].0 < w[1].0)
            && self.index.iter().all(|&(i, s)| {
                (i as usize) < d
                    && (s as usize) < n
                    && !std::mem::replace(&mut seen[s as usize], true)
            })
            && self.theta.iter().chain(&self.ainv).all(|v| v.is_finite())
    }
}

impl DiagRidge {
    pub(crate) fn new(d: usize, lambda: f64) -> Self {
        Self {
            d,
            lambda,
            // Allocated at the first update: a campaign that never learns costs nothing.
            w: Vec::new(),
            g: 1.0,
            exact: Some(Exact::default()),
        }
    }

    /// Whether a decoded state is usable: sizes match, numbers finite, evidence non-negative.
    pub(crate) fn fits(&self, d: usize) -> bool {
        self.d == d
            && (self.w.len() == d || self.w.is_empty())
            && self.lambda.is_finite()
            && self.lambda > 0.0
            && self.g.is_finite()
            && self.g > 0.0
            && self.g <= 1.0
            && self
                .w
                .iter()
                .all(|[t, e]| t.is_finite() && e.is_finite() && *e >= 0.0)
            && self.exact.as_ref().is_none_or(|x| x.fits(d))
    }

    /// Whether predictions come from the exact block (the model is still small).
    pub fn is_exact(&self) -> bool {
        self.exact.is_some()
    }

    /// Hand the exact weights to the diagonal model and drop the block for good.
    fn go_diagonal(&mut self) {
        if let Some(x) = self.exact.take() {
            if x.n() == 0 {
                return;
            }
            if self.w.is_empty() {
                self.w = vec![[0.0, 0.0]; self.d];
            }
            for &(i, s) in &x.index {
                self.w[i as usize][0] = x.theta[s as usize];
            }
        }
    }

    /// The nonzeros of `x` inside `d` (indices beyond `d` are ignored, as by the dense model).
    fn inside<'x>(&self, x: &'x SparseVec) -> (&'x [u32], &'x [f64]) {
        let n = x.idx.partition_point(|&i| (i as usize) < self.d);
        (&x.idx[..n], &x.val[..n])
    }

    #[inline]
    fn precision(&self, e: f64) -> f64 {
        self.lambda + self.g * e
    }

    /// `θᵀx`.
    pub(crate) fn mean(&self, x: &SparseVec) -> f64 {
        if let Some(e) = &self.exact {
            let (idx, val) = self.inside(x);
            return e.mean(idx, val);
        }
        if self.w.is_empty() {
            return 0.0;
        }
        let (idx, val) = self.inside(x);
        idx.iter()
            .zip(val)
            .map(|(&i, &v)| self.w[i as usize][0] * v)
            .sum()
    }

    /// `(θᵀx, xᵀΣx)` in one pass over the nonzeros.
    pub(crate) fn mean_variance(&self, x: &SparseVec) -> (f64, f64) {
        let (idx, val) = self.inside(x);
        if let Some(e) = &self.exact {
            return e.mean_variance(idx, val, self.lambda);
        }
        self.diag_mean_variance(idx, val)
    }

    /// The diagonal model's `(θᵀx, xᵀΣx)`.
    fn diag_mean_variance(&self, idx: &[u32], val: &[f64]) -> (f64, f64) {
        if self.w.is_empty() {
            return (0.0, val.iter().map(|v| v * v).sum::<f64>() / self.lambda);
        }
        let (mut m, mut q) = (0.0, 0.0);
        for (&i, &v) in idx.iter().zip(val) {
            let [t, e] = self.w[i as usize];
            m += t * v;
            q += v * v / self.precision(e);
        }
        (m, q)
    }

    /// Learn `reward` at `x` after discounting old evidence by `gamma` (1 = no forgetting).
    /// Touches exactly the nonzeros of `x` (plus, with forgetting, a rescale of every entry
    /// about once per `ln(1e150)/ln(1/γ)` updates).
    pub(crate) fn update(&mut self, x: &SparseVec, reward: f64, gamma: f64) {
        if self.w.is_empty() {
            self.w = vec![[0.0, 0.0]; self.d];
        }
        if gamma < 1.0 {
            // The exact block does not forget: forgetting makes the model diagonal.
            self.go_diagonal();
            self.g *= gamma;
            if self.g < RESCALE_BELOW {
                let g = self.g;
                self.w.iter_mut().for_each(|w| w[1] *= g);
                self.g = 1.0;
            }
        }
        let (idx, val) = self.inside(x);
        let lambda = self.lambda;
        let overflow = self
            .exact
            .as_ref()
            .is_some_and(|e| e.n() + e.missing(idx) > EXACT_MAX);
        if overflow {
            self.go_diagonal();
        } else if let Some(e) = &mut self.exact {
            e.grow(idx, lambda);
            e.update(idx, val, reward);
        }
        // The diagonal model learns all along, ready to take over.
        let (m, q) = self.diag_mean_variance(idx, val);
        let denom = 1.0 + q;
        let err = reward - m;
        if !(denom.is_finite() && err.is_finite()) {
            return;
        }
        for (&i, &v) in idx.iter().zip(val) {
            let [t, e] = self.w[i as usize];
            let s = 1.0 / self.precision(e);
            let sx = s * v;
            // σ² ← σ² − (σ²x)²/(1+q) = σ²(1 − σ²x²/(1+q)), with 0 < σ²x² ≤ q < 1+q.
            // The precision is the diagonal of A = λI + Σ xxᵀ: pᵢ += xᵢ².
            self.w[i as usize] = [t + sx * err / denom, e + v * v / self.g];
        }
    }

    /// Correct an already learned reward at `x` by `delta`: `θᵢ += delta·xᵢ/pᵢ`, the ridge
    /// correction `delta·A⁻¹x` under this model's diagonal `A`; the precisions are unchanged
    /// (same vector, another reward). As approximate as the diagonal model itself.
    pub(crate) fn adjust(&mut self, x: &SparseVec, delta: f64) {
        if self.w.is_empty() || !delta.is_finite() {
            return;
        }
        let (idx, val) = self.inside(x);
        if let Some(e) = &mut self.exact {
            if e.missing(idx) == 0 {
                e.adjust(idx, val, delta);
            }
        }
        for (&i, &v) in idx.iter().zip(val) {
            let [t, e] = self.w[i as usize];
            self.w[i as usize] = [t + delta * v / self.precision(e), e];
        }
    }

    /// Discount every dimension's evidence by `gamma` toward the prior without learning (a
    /// promotion's reset); `gamma = 0` forgets everything, weights included.
    pub(crate) fn discount(&mut self, gamma: f64) {
        if gamma <= 0.0 {
            self.w = Vec::new();
            self.g = 1.0;
            self.exact = Some(Exact::default());
            return;
        }
        if gamma < 1.0 {
            self.go_diagonal();
            self.g *= gamma;
            if self.g < RESCALE_BELOW {
                let g = self.g;
                self.w.iter_mut().for_each(|w| w[1] *= g);
                self.g = 1.0;
            }
        }
    }

    /// Dimensions holding anything learned (what the serialized form stores).
    pub fn touched(&self) -> usize {
        self.w
            .iter()
            .filter(|[t, e]| *t != 0.0 || *e != 0.0)
            .count()
    }

    /// The dimension.
    pub fn dimension(&self) -> usize {
        self.d
    }

    #[cfg(test)]
    pub(crate) fn entry(&self, i: usize) -> (f64, f64) {
        let [t, e] = self.w.get(i).copied().unwrap_or([0.0, 0.0]);
        (t, self.precision(e))
    }
}

/// The serialized form, version 1 (before the exact block): only touched dimensions.
#[cfg(test)]
#[derive(Serialize, Deserialize)]
struct Repr {
    d: u32,
    lambda: f64,
    g: f64,
    /// `(index, θ, evidence)`, strictly increasing indices.
    entries: Vec<(u32, f64, f64)>,
}

/// The exact block as stored: dimensions in slot order, `A⁻¹`'s upper triangle row by row, `θ`.
type ExactRepr = (Vec<u32>, Vec<f64>, Vec<f64>);

/// Version 2 starts with a 0 where version 1 has its dimension (never 0), then the version:
/// `(0, 2, d, λ, g, entries, exact block)`. Both are read.
const REPR_VERSION: u32 = 2;

impl Serialize for DiagRidge {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let entries: Vec<(u32, f64, f64)> = self
            .w
            .iter()
            .enumerate()
            .filter(|(_, [t, e])| *t != 0.0 || *e != 0.0)
            .map(|(i, &[t, e])| (i as u32, t, e))
            .collect();
        let exact: Option<ExactRepr> = self.exact.as_ref().map(|x| {
            let n = x.n();
            let mut dims = vec![0u32; n];
            for &(i, s) in &x.index {
                dims[s as usize] = i;
            }
            let upper = (0..n)
                .flat_map(|r| (r..n).map(move |c| (r, c)))
                .map(|(r, c)| x.ainv[r * n + c])
                .collect();
            (dims, upper, x.theta.clone())
        });
        let mut t = s.serialize_tuple(7)?;
        t.serialize_element(&0u32)?;
        t.serialize_element(&REPR_VERSION)?;
        t.serialize_element(&(self.d as u32))?;
        t.serialize_element(&self.lambda)?;
        t.serialize_element(&self.g)?;
        t.serialize_element(&entries)?;
        t.serialize_element(&exact)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for DiagRidge {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use serde::de::{Error, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DiagRidge;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sparse model")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DiagRidge, A::Error> {
                let first: u32 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::custom("sparse model: missing dimension"))?;
                let (d, version) = if first == 0 {
                    let v: u32 = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::custom("sparse model: missing version"))?;
                    if v != REPR_VERSION {
                        return Err(A::Error::custom(format!(
                            "sparse model version {v} unknown"
                        )));
                    }
                    let d: u32 = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::custom("sparse model: missing dimension"))?;
                    (d, v)
                } else {
                    (first, 1)
                };
                let lambda: f64 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::custom("sparse model: missing lambda"))?;
                let g: f64 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::custom("sparse model: missing g"))?;
                let entries: Vec<(u32, f64, f64)> = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::custom("sparse model: missing entries"))?;
                let exact: Option<ExactRepr> = if version >= 2 {
                    seq.next_element()?
                        .ok_or_else(|| A::Error::custom("sparse model: missing exact block"))?
                } else {
                    // Version 1 predates the block: the model was diagonal all along.
                    None
                };
                DiagRidge::decode(d, lambda, g, entries, exact).map_err(A::Error::custom)
            }
        }
        de.deserialize_tuple(7, V)
    }
}

impl DiagRidge {
    fn decode(
        d: u32,
        lambda: f64,
        g: f64,
        entries: Vec<(u32, f64, f64)>,
        exact: Option<ExactRepr>,
    ) -> Result<Self, String> {
        let d = d as usize;
        // A decoded state may come from an imported file: never allocate beyond the bound.
        if d == 0 || d > MAX_SPARSE_DIMENSION {
            return Err(format!(
                "sparse model dimension {d} outside 1..={MAX_SPARSE_DIMENSION}"
            ));
        }
        let mut w = if entries.is_empty() {
            Vec::new()
        } else {
            vec![[0.0, 0.0]; d]
        };
        let mut last: Option<u32> = None;
        for (i, t, e) in entries {
            if (i as usize) >= d || last.is_some_and(|l| l >= i) {
                return Err("sparse model entries out of order or range".into());
            }
            last = Some(i);
            w[i as usize] = [t, e];
        }
        let exact = match exact {
            None => None,
            Some((dims, upper, theta)) => {
                let n = dims.len();
                if n > EXACT_MAX || theta.len() != n || upper.len() != n * (n + 1) / 2 {
                    return Err("sparse model exact block malformed".into());
                }
                let mut ainv = vec![0.0; n * n];
                let mut k = 0;
                for r in 0..n {
                    for c in r..n {
                        ainv[r * n + c] = upper[k];
                        ainv[c * n + r] = upper[k];
                        k += 1;
                    }
                }
                let mut index: Vec<(u32, u32)> = dims
                    .iter()
                    .enumerate()
                    .map(|(s, &i)| (i, s as u32))
                    .collect();
                index.sort_unstable_by_key(|e| e.0);
                if index.windows(2).any(|w| w[0].0 == w[1].0)
                    || index.iter().any(|&(i, _)| i as usize >= d)
                {
                    return Err(
                        "sparse model exact block dimensions repeated or out of range".into(),
                    );
                }
                Some(Exact { index, ainv, theta })
            }
        };
        Ok(Self {
            d,
            lambda,
            w,
            g,
            exact,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{DMatrix, DVector};
    use rand::{Rng, SeedableRng};
    use rand_pcg::Pcg64Mcg;

    #[test]
    fn memory_is_allocated_at_the_first_update() {
        let mut m = DiagRidge::new(1 << 18, 2.0);
        assert!(m.w.is_empty());
        let x = SparseVec::from_pairs(vec![(7, 1.0), (9, 2.0)]);
        assert_eq!(m.mean_variance(&x), (0.0, 5.0 / 2.0));
        let back: DiagRidge = postcard::from_bytes(&postcard::to_allocvec(&m).unwrap()).unwrap();
        assert!(back.w.is_empty() && back.fits(1 << 18));
        m.update(&x, 1.0, 1.0);
        assert_eq!(m.w.len(), 1 << 18);
        assert!(m.fits(1 << 18));
    }

    #[test]
    fn one_hot_vectors_match_the_exact_ridge() {
        // With orthogonal (one-hot) vectors the covariance is diagonal, so the model must equal
        // ridge regression exactly: θᵢ = Σr/(λ+n), pᵢ = λ + n.
        let mut m = DiagRidge::new(8, 2.0);
        let mut rng = Pcg64Mcg::seed_from_u64(3);
        let mut sums = [0.0; 8];
        let mut counts = [0.0; 8];
        for _ in 0..500 {
            let i = rng.gen_range(0..8u32);
            let r: f64 = rng.gen();
            m.update(&SparseVec::from_pairs(vec![(i, 1.0)]), r, 1.0);
            sums[i as usize] += r;
            counts[i as usize] += 1.0;
        }
        for i in 0..8 {
            let (t, p) = m.entry(i);
            assert!((t - sums[i] / (2.0 + counts[i])).abs() < 1e-9, "θ_{i}");
            assert!((p - (2.0 + counts[i])).abs() < 1e-6, "p_{i}");
        }
    }

    #[test]
    fn first_step_is_the_exact_ridge_step() {
        // From the prior (Σ = I/λ, diagonal) one update's mean is the exact Sherman–Morrison
        // step, and the precision is the diagonal of A.
        let d = 6;
        let x = SparseVec::from_pairs(vec![(0, 1.0), (2, -0.5), (5, 2.0)]);
        let mut m = DiagRidge::new(d, 1.5);
        m.update(&x, 0.8, 1.0);
        let mut dense = DVector::<f64>::zeros(d);
        for (i, v) in x.iter() {
            dense[i] = v;
        }
        let a = DMatrix::<f64>::identity(d, d) * 1.5 + &dense * dense.transpose();
        let theta = a.clone().try_inverse().unwrap() * (&dense * 0.8);
        for i in 0..d {
            assert!((m.entry(i).0 - theta[i]).abs() < 1e-12);
            assert!((m.entry(i).1 - a[(i, i)]).abs() < 1e-12);
        }
    }

    #[test]
    fn an_update_touches_only_the_vectors_nonzeros() {
        // Cost independent of d, shown by structure: after an update exactly the nonzeros of x
        // changed, at d = 2^12 and 2^18 alike.
        for d in [1usize << 12, 1 << 18] {
            let mut m = DiagRidge::new(d, 1.0);
            let mut rng = Pcg64Mcg::seed_from_u64(9);
            for _ in 0..50 {
                let x = random_x(&mut rng, d, 30);
                m.update(&x, rng.gen(), 1.0);
            }
            let before = m.clone();
            let x = random_x(&mut rng, d, 30);
            m.update(&x, 1.0, 1.0);
            let changed: Vec<usize> = (0..d).filter(|&i| m.w[i] != before.w[i]).collect();
            let nnz: Vec<usize> = x.idx.iter().map(|&i| i as usize).collect();
            assert!(
                changed.iter().all(|i| nnz.contains(i)),
                "d={d}: touched outside x"
            );
            assert_eq!(changed.len(), nnz.len(), "d={d}");
        }
    }

    #[test]
    fn forgetting_is_lazy_and_decays_toward_the_prior() {
        let gamma: f64 = 0.9;
        let mut m = DiagRidge::new(4, 2.0);
        let x = SparseVec::from_pairs(vec![(1, 1.0)]);
        for _ in 0..300 {
            m.update(&x, 1.0, gamma);
        }
        // Untouched dimensions stay at the prior; the touched one settles where the discounted
        // evidence and the fresh step balance (bounded, not growing without end).
        assert_eq!(m.entry(0), (0.0, 2.0));
        let p = m.entry(1).1;
        assert!(p > 2.0 && p < 2.0 + 1.0 / (1.0 - gamma) + 1.0, "p = {p}");
        assert!((m.entry(1).0 - 1.0).abs() < 0.1);
        // Long enough to force the global rescale several times: numbers stay sane.
        for _ in 0..20_000 {
            m.update(&x, 1.0, gamma);
        }
        assert!(m.fits(4));
        assert!(m.g >= RESCALE_BELOW);
    }

    #[test]
    fn postcard_round_trip_stores_touched_dimensions_only() {
        let d = 1 << 16;
        let mut m = DiagRidge::new(d, 1.0);
        let mut rng = Pcg64Mcg::seed_from_u64(4);
        for _ in 0..200 {
            m.update(&random_x(&mut rng, d, 20), rng.gen(), 1.0);
        }
        let bytes = postcard::to_allocvec(&m).unwrap();
        let back: DiagRidge = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, m);
        let touched = m.touched();
        assert!(touched > 1000 && touched <= 4000, "{touched}");
        assert!(bytes.len() <= 32 + 19 * touched, "{} bytes", bytes.len());
        // A forged dimension beyond the bound is refused before anything is allocated.
        let forged = Repr {
            d: u32::MAX,
            lambda: 1.0,
            g: 1.0,
            entries: vec![],
        };
        let bytes = postcard::to_allocvec(&forged).unwrap();
        assert!(postcard::from_bytes::<DiagRidge>(&bytes).is_err());
    }

    /// The exact ridge over `d` dimensions after learning `(x, r)` pairs: `(θ, A⁻¹)`.
    fn dense_ridge(
        d: usize,
        lambda: f64,
        data: &[(SparseVec, f64)],
    ) -> (DVector<f64>, DMatrix<f64>) {
        let mut a = DMatrix::<f64>::identity(d, d) * lambda;
        let mut b = DVector::<f64>::zeros(d);
        for (x, r) in data {
            let mut v = DVector::<f64>::zeros(d);
            for (i, val) in x.iter() {
                v[i] = val;
            }
            a += &v * v.transpose();
            b += &v * *r;
        }
        let ainv = a.try_inverse().unwrap();
        (&ainv * b, ainv)
    }

    #[test]
    fn while_small_the_model_is_the_exact_ridge() {
        // Correlated features on few dimensions: mean and variance equal the dense ridge's,
        // including for vectors with dimensions never seen.
        let d = 64;
        let mut m = DiagRidge::new(d, 1.0);
        let mut rng = Pcg64Mcg::seed_from_u64(21);
        let mut data = Vec::new();
        for _ in 0..300 {
            let a = rng.gen_range(-1.0..1.0);
            let i = rng.gen_range(0..6u32);
            let x = SparseVec::from_pairs(vec![(i, 1.0), (10 + i, a), (20, a * 0.9 + 0.1)]);
            let r = 0.3 * f64::from(i) - a + rng.gen_range(-0.1..0.1);
            m.update(&x, r, 1.0);
            data.push((x, r));
        }
        assert!(m.is_exact());
        let (theta, ainv) = dense_ridge(d, 1.0, &data);
        for probe in [
            SparseVec::from_pairs(vec![(2, 1.0), (12, 0.5), (20, 0.55)]),
            SparseVec::from_pairs(vec![(5, 1.0), (40, 2.0)]),
        ] {
            let mut v = DVector::<f64>::zeros(d);
            for (i, val) in probe.iter() {
                v[i] = val;
            }
            let (mean, var) = m.mean_variance(&probe);
            assert!(
                (mean - theta.dot(&v)).abs() < 1e-9,
                "{mean} vs {}",
                theta.dot(&v)
            );
            assert!((var - (v.transpose() * &ainv * &v)[0]).abs() < 1e-9);
            assert!((m.mean(&probe) - mean).abs() < 1e-12);
        }
    }

    #[test]
    fn past_the_exact_bound_the_diagonal_model_takes_over_with_the_exact_weights() {
        let d = 1 << 12;
        let mut m = DiagRidge::new(d, 1.0);
        let mut rng = Pcg64Mcg::seed_from_u64(5);
        // 40 dimensions, learned exactly.
        for _ in 0..200 {
            let x = random_x(&mut rng, 40, 5);
            m.update(&x, rng.gen(), 1.0);
        }
        assert!(m.is_exact());
        let probe = SparseVec::from_pairs(vec![(3, 1.0), (17, -0.5)]);
        let exact_mean = m.mean(&probe);
        let big = SparseVec::from_pairs((0..EXACT_MAX as u32).map(|i| (1000 + i, 0.01)).collect());
        m.update(&big, 0.0, 1.0);
        assert!(!m.is_exact());
        // The probe's dimensions were not in the overflowing vector: the diagonal model
        // predicts exactly what the exact block did.
        assert!((m.mean(&probe) - exact_mean).abs() < 1e-12);
        assert!(m.fits(d));
        // Forgetting also ends the block.
        let mut f = DiagRidge::new(d, 1.0);
        f.update(&probe, 1.0, 1.0);
        assert!(f.is_exact());
        f.update(&probe, 1.0, 0.99);
        assert!(!f.is_exact());
        // A full reset starts exact again.
        f.discount(0.0);
        assert!(f.is_exact());
    }

    #[test]
    fn version_1_states_still_decode_and_version_2_round_trips_the_block() {
        // A version-1 encoding (before the block): read as a diagonal model.
        let v1 = Repr {
            d: 1 << 16,
            lambda: 1.0,
            g: 1.0,
            entries: vec![(3, 0.5, 2.0), (70, -0.25, 1.0)],
        };
        let old: DiagRidge = postcard::from_bytes(&postcard::to_allocvec(&v1).unwrap()).unwrap();
        assert!(!old.is_exact() && old.fits(1 << 16));
        assert_eq!(old.entry(3), (0.5, 3.0));
        assert_eq!(
            old.mean(&SparseVec::from_pairs(vec![(3, 2.0), (70, 4.0)])),
            0.0
        );
        // A version-2 encoding with its exact block.
        let mut m = DiagRidge::new(1 << 16, 1.0);
        let mut rng = Pcg64Mcg::seed_from_u64(8);
        for _ in 0..100 {
            m.update(&random_x(&mut rng, 50, 4), rng.gen(), 1.0);
        }
        assert!(m.is_exact());
        let back: DiagRidge = postcard::from_bytes(&postcard::to_allocvec(&m).unwrap()).unwrap();
        assert!(back.fits(1 << 16));
        assert_eq!(back, m);
        // A forged block is refused.
        let forged = (
            0u32,
            REPR_VERSION,
            8u32,
            1.0f64,
            1.0f64,
            Vec::<(u32, f64, f64)>::new(),
            Some((vec![1u32, 1], vec![1.0f64, 0.0, 1.0], vec![0.0f64, 0.0])),
        );
        assert!(
            postcard::from_bytes::<DiagRidge>(&postcard::to_allocvec(&forged).unwrap()).is_err()
        );
    }

    /// A seeded multiclass-to-bandit stream with a linear boundary (label = argmax of `Wx`,
    /// no noise, so the oracle's reward is 1), played by a policy built from `json`. Returns
    /// the mean reward over the last `tail` decisions.
    fn play_linear(json: &str, dimension: usize, seed: u64, n: usize, tail: usize) -> f64 {
        use crate::{Arm, FeaturizerConfig, PolicyConfig, SparseFeatures};
        use rand_distr::StandardNormal;
        let (k, p) = (5, 10);
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let w: Vec<Vec<f64>> = (0..k)
            .map(|_| (0..p).map(|_| rng.sample(StandardNormal)).collect())
            .collect();
        let f = FeaturizerConfig {
            dimension,
            interactions: true,
            context_features: false,
        }
        .build()
        .unwrap();
        let config: PolicyConfig = serde_json::from_str(json).unwrap();
        let mut policy = config.build(dimension).unwrap();
        let ids: Vec<String> = (0..k).map(|c| format!("c{c}")).collect();
        let names: Vec<String> = (0..p).map(|j| format!("f{j}")).collect();
        let mut hits = 0.0;
        for t in 0..n {
            let x: Vec<f64> = (0..p).map(|_| rng.sample(StandardNormal)).collect();
            let label = (0..k)
                .max_by(|&a, &b| {
                    let s = |c: usize| w[c].iter().zip(&x).map(|(a, b)| a * b).sum::<f64>();
                    s(a).total_cmp(&s(b))
                })
                .unwrap();
            let mut ctx = SparseFeatures::new();
            for (name, v) in names.iter().zip(&x) {
                ctx.push_numeric("", name, *v);
            }
            let vs: Vec<SparseVec> = ids
                .iter()
                .map(|id| {
                    let mut a = SparseFeatures::new();
                    a.push_categorical("", "class", id);
                    f.vector(&ctx, id, &a)
                })
                .collect();
            let arms: Vec<Arm<'_>> = ids.iter().zip(&vs).map(|(id, x)| Arm { id, x }).collect();
            let c = policy.choose(&arms, 1, true, &mut rng).unwrap()[0];
            let r = if c.index == label { 1.0 } else { 0.0 };
            if t >= n - tail {
                hits += r;
            }
            policy.update(arms[c.index], r, c.probability);
        }
        hits / tail as f64
    }

    #[test]
    fn learns_a_linear_boundary_at_any_dimension() {
        // Five seeds, 5 classes, 10 features; the oracle earns 1 and uniform 0.2. After 4000
        // decisions the last 2000 must earn at least 0.85 on every seed (the bake-off's
        // `linear-k5-p10` reaches ~0.90 of its oracle progressively over 10000).
        for seed in 0..5 {
            for d in [1usize << 12, 1 << 18] {
                let r = play_linear(r#"{"type":"sparse_linucb"}"#, d, seed, 6000, 2000);
                assert!(r >= 0.85, "seed {seed}, d {d}: {r}");
            }
        }
    }

    #[test]
    fn policy_state_round_trips_through_postcard_and_keeps_deciding_alike() {
        use crate::{Arm, Policy, PolicyConfig};
        let d = 1 << 16;
        let mut p = PolicyConfig::SparseLinUcb {
            alpha: 0.3,
            lambda: 1.0,
            half_life: Some(500.0),
        }
        .build(d)
        .unwrap();
        let mut rng = Pcg64Mcg::seed_from_u64(11);
        let xs: Vec<SparseVec> = (0..20).map(|_| random_x(&mut rng, d, 30)).collect();
        let ids: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
        let arms: Vec<Arm<'_>> = ids.iter().zip(&xs).map(|(id, x)| Arm { id, x }).collect();
        for _ in 0..300 {
            let i = rng.gen_range(0..arms.len());
            p.update(arms[i], f64::from(i % 3 == 0), 0.5);
        }
        let bytes = postcard::to_allocvec(&p).unwrap();
        let back: Policy = postcard::from_bytes(&bytes).unwrap();
        back.check_state().unwrap();
        assert_eq!(back.rewards_seen(), 300);
        for a in &arms {
            assert_eq!(back.estimate(*a), p.estimate(*a));
        }
        let pick = |q: &Policy| {
            q.choose(&arms, 3, true, &mut Pcg64Mcg::seed_from_u64(5))
                .unwrap()
        };
        assert_eq!(pick(&back), pick(&p));
        // 20 vectors of 30 nonzeros touch at most 600 dimensions of 65536: the encoding holds
        // those, not the dimension.
        assert!(bytes.len() < 600 * 19 + 200, "{} bytes", bytes.len());
    }

    fn random_x(rng: &mut Pcg64Mcg, d: usize, nnz: usize) -> SparseVec {
        SparseVec::from_pairs(
            (0..nnz)
                .map(|_| (rng.gen_range(0..d as u32), rng.gen_range(-1.0..1.0)))
                .collect(),
        )
    }
}
