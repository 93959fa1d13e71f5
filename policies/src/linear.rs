//! Ridge regression over sparse hashed vectors, shared by LinUCB, linear Thompson sampling and
//! the ridge estimator of epsilon-greedy.
//!
//! The model keeps `A = λI + Σ γ^age x xᵀ`, `b = Σ γ^age r x`, `A⁻¹` and `θ = A⁻¹ b`. An update
//! costs `O(d·nnz)` for `A⁻¹x`, `O(d²)` for the Sherman–Morrison correction of `A⁻¹` (computed on
//! the upper triangle and mirrored, so `A⁻¹` is exactly symmetric) and `O(d)` for `θ`. Scoring a
//! candidate only touches its nonzero indices: `θᵀx` is `O(nnz)` and `xᵀA⁻¹x` is `O(nnz²)`.
//!
//! Forgetting (`γ < 1`) discounts toward the prior: `A ← γA + (1-γ)λI`, `b ← γb`, so old evidence
//! fades but `A` never drops below `λI`. The incremental `A⁻¹` applies `A⁻¹/γ` and ignores the
//! `(1-γ)λI` term, which only overstates uncertainty slightly. Every `max(d, 16)` updates `A⁻¹`,
//! `θ` and (for Thompson) the Cholesky factor are recomputed exactly from `A`, which both restores
//! that term and removes floating-point drift, at an amortized `O(d²)` per update.

use nalgebra::DMatrix;
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::SparseVec;

/// Ridge regression state in dimension `d` (matrices row-major). Public as a type so other
/// modules' public enums can hold one; its operations stay crate-internal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ridge {
    d: usize,
    lambda: f64,
    a: Vec<f64>,
    a_inv: Vec<f64>,
    b: Vec<f64>,
    theta: Vec<f64>,
    /// Lower Cholesky factor of `A`, kept only for Thompson sampling (empty otherwise).
    chol: Vec<f64>,
    since_refresh: u32,
}

impl Ridge {
    pub(crate) fn new(d: usize, lambda: f64, with_cholesky: bool) -> Self {
        let mut a = vec![0.0; d * d];
        let mut a_inv = vec![0.0; d * d];
        let mut chol = if with_cholesky {
            vec![0.0; d * d]
        } else {
            Vec::new()
        };
        for i in 0..d {
            a[i * d + i] = lambda;
            a_inv[i * d + i] = 1.0 / lambda;
            if with_cholesky {
                chol[i * d + i] = lambda.sqrt();
            }
        }
        Self {
            d,
            lambda,
            a,
            a_inv,
            b: vec![0.0; d],
            theta: vec![0.0; d],
            chol,
            since_refresh: 0,
        }
    }

    /// Whether the buffers have the lengths `d` implies and hold finite numbers. A decoded state (a snapshot entry, an
    /// imported model file) may not, and would index out of bounds when used (issue 17, found by
    /// the `record` fuzz target).
    pub(crate) fn fits(&self, d: usize, with_cholesky: bool) -> bool {
        let chol = if with_cholesky { d * d } else { 0 };
        self.d == d
            && d.checked_mul(d).is_some()
            && self.a.len() == d * d
            && self.a_inv.len() == d * d
            && self.b.len() == d
            && self.theta.len() == d
            && self.chol.len() == chol
            && [&self.a, &self.a_inv, &self.b, &self.theta, &self.chol]
                .iter()
                .all(|v| v.iter().all(|x| x.is_finite()))
    }

    /// `θᵀx`.
    pub(crate) fn mean(&self, x: &SparseVec) -> f64 {
        x.dot(&self.theta)
    }

    /// `xᵀA⁻¹x` over the nonzero indices of `x` (indices beyond `d` are ignored). `scratch` is a
    /// reusable buffer so scoring many candidates allocates once.
    pub(crate) fn variance(&self, x: &SparseVec, scratch: &mut Vec<f64>) -> f64 {
        let d = self.d;
        let n = x.idx.partition_point(|&i| (i as usize) < d);
        let (idx, val) = (&x.idx[..n], &x.val[..n]);
        let q = if n * 3 < d {
            // Few nonzeros: the symmetric half of the nnz x nnz block, O(nnz²/2) gathers.
            let mut q = 0.0;
            for (k, (&i, &xi)) in idx.iter().zip(val).enumerate() {
                let row = &self.a_inv[i as usize * d..i as usize * d + d];
                let off: f64 = idx[..k]
                    .iter()
                    .zip(&val[..k])
                    .map(|(&j, &xj)| row[j as usize] * xj)
                    .sum();
                q += xi * (row[i as usize] * xi + 2.0 * off);
            }
            q
        } else {
            // Dense-ish: densify once, then contiguous row dot products the compiler vectorizes.
            scratch.clear();
            scratch.resize(d, 0.0);
            for (&i, &v) in idx.iter().zip(val) {
                scratch[i as usize] = v;
            }
            idx.iter()
                .zip(val)
                .map(|(&i, &xi)| xi * dot(&self.a_inv[i as usize * d..i as usize * d + d], scratch))
                .sum()
        };
        q.max(0.0)
    }

    /// A draw of `θ̃ ~ N(θ, scale² A⁻¹)`: `θ + scale·L⁻ᵀz` with `A = LLᵀ`, one `O(d²)` triangular
    /// solve. Requires the model to be built `with_cholesky`.
    pub(crate) fn sample_theta<R: Rng + ?Sized>(&self, scale: f64, rng: &mut R) -> Vec<f64> {
        let d = self.d;
        let mut w: Vec<f64> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
        // Back substitution for Lᵀw = z (Lᵀ is upper triangular; L[j][i] = Lᵀ[i][j]).
        for i in (0..d).rev() {
            let s: f64 = w[i + 1..]
                .iter()
                .enumerate()
                .map(|(k, wj)| self.chol[(i + 1 + k) * d + i] * wj)
                .sum();
            w[i] = (w[i] - s) / self.chol[i * d + i];
        }
        for (wi, t) in w.iter_mut().zip(&self.theta) {
            *wi = t + scale * *wi;
        }
        w
    }

    /// Learn `reward` at `x`, after discounting old evidence by `gamma` (1 = no forgetting).
    pub(crate) fn update(&mut self, x: &SparseVec, reward: f64, gamma: f64) {
        let d = self.d;
        let n = x.idx.partition_point(|&i| (i as usize) < d);
        let (idx, val) = (&x.idx[..n], &x.val[..n]);
        if gamma < 1.0 {
            for i in 0..d {
                for j in 0..d {
                    self.a[i * d + j] *= gamma;
                }
                self.a[i * d + i] += (1.0 - gamma) * self.lambda;
                self.b[i] *= gamma;
            }
            let inv = 1.0 / gamma;
            self.a_inv.iter_mut().for_each(|v| *v *= inv);
            let s = gamma.sqrt();
            self.chol.iter_mut().for_each(|v| *v *= s);
        }
        for (k, &i) in idx.iter().enumerate() {
            for (l, &j) in idx.iter().enumerate() {
                self.a[i as usize * d + j as usize] += val[k] * val[l];
            }
            self.b[i as usize] += reward * val[k];
        }
        // Sherman–Morrison: A⁻¹ ← A⁻¹ - (A⁻¹x)(A⁻¹x)ᵀ / (1 + xᵀA⁻¹x).
        let mut u = vec![0.0; d];
        for (r, ui) in u.iter_mut().enumerate() {
            let row = &self.a_inv[r * d..r * d + d];
            *ui = idx
                .iter()
                .zip(val)
                .map(|(&j, &v)| row[j as usize] * v)
                .sum();
        }
        let xu: f64 = idx.iter().zip(val).map(|(&j, &v)| u[j as usize] * v).sum();
        let denom = 1.0 + xu;
        if denom.is_finite() && denom > 0.0 {
            for i in 0..d {
                let ui = u[i] / denom;
                for (j, uj) in u.iter().enumerate().skip(i) {
                    let v = self.a_inv[i * d + j] - ui * uj;
                    self.a_inv[i * d + j] = v;
                    self.a_inv[j * d + i] = v;
                }
            }
            // θ' = θ + A⁻¹x (r - xᵀθ) / (1 + xᵀA⁻¹x); scaling A⁻¹ and b by 1/γ and γ leaves θ.
            let err = (reward - x.dot(&self.theta)) / denom;
            for (t, ui) in self.theta.iter_mut().zip(&u) {
                *t += ui * err;
            }
        }
        if !self.chol.is_empty() {
            let mut dense = vec![0.0; d];
            for (&i, &v) in idx.iter().zip(val) {
                dense[i as usize] = v;
            }
            chol_rank_one_update(&mut self.chol, d, &mut dense);
        }
        self.since_refresh += 1;
        if self.since_refresh as usize >= d.max(16) {
            self.refresh();
        }
    }

    /// Correct an already learned reward at `x` by `delta` (a return turning a purchase's 1
    /// into 0 is `delta = -1`): `b += delta·x` and `θ += delta·A⁻¹x`. `A` (and so `A⁻¹` and the
    /// Cholesky factor) is unchanged: the observation is the same vector with another reward.
    /// Exact without forgetting; with it, the correction enters at full weight, as a fresh
    /// reward would (the original's weight has decayed since).
    pub(crate) fn adjust(&mut self, x: &SparseVec, delta: f64) {
        let d = self.d;
        let n = x.idx.partition_point(|&i| (i as usize) < d);
        let (idx, val) = (&x.idx[..n], &x.val[..n]);
        if !delta.is_finite() || idx.is_empty() {
            return;
        }
        for (&i, &v) in idx.iter().zip(val) {
            self.b[i as usize] += delta * v;
        }
        for (r, t) in self.theta.iter_mut().enumerate() {
            let row = &self.a_inv[r * d..r * d + d];
            let u: f64 = idx
                .iter()
                .zip(val)
                .map(|(&j, &v)| row[j as usize] * v)
                .sum();
            *t += delta * u;
        }
    }

    /// Discount every piece of evidence by `gamma` toward the prior (`A ← γA + (1-γ)λI`,
    /// `b ← γb`) without learning anything: a promotion's reset. `gamma = 0` is the prior.
    pub(crate) fn discount(&mut self, gamma: f64) {
        let d = self.d;
        let gamma = gamma.clamp(0.0, 1.0);
        for i in 0..d {
            for j in 0..d {
                self.a[i * d + j] *= gamma;
            }
            self.a[i * d + i] += (1.0 - gamma) * self.lambda;
            self.b[i] *= gamma;
        }
        self.refresh();
    }

    /// Recompute `A⁻¹`, `θ` and the Cholesky factor exactly from `A` and `b`.
    pub(crate) fn refresh(&mut self) {
        let d = self.d;
        self.since_refresh = 0;
        let a = DMatrix::from_row_slice(d, d, &self.a);
        let Some(ch) = a.cholesky() else {
            // A = λI + PSD terms is positive definite; failing here means it was poisoned, and
            // the incremental state is the best we have.
            return;
        };
        let inv = ch.inverse();
        for i in 0..d {
            for j in i..d {
                let v = 0.5 * (inv[(i, j)] + inv[(j, i)]);
                self.a_inv[i * d + j] = v;
                self.a_inv[j * d + i] = v;
            }
        }
        let b = nalgebra::DVector::from_column_slice(&self.b);
        let theta = ch.solve(&b);
        self.theta.copy_from_slice(theta.as_slice());
        if !self.chol.is_empty() {
            let l = ch.l();
            for i in 0..d {
                for j in 0..d {
                    self.chol[i * d + j] = l[(i, j)];
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn a_matrix(&self) -> DMatrix<f64> {
        DMatrix::from_row_slice(self.d, self.d, &self.a)
    }

    #[cfg(test)]
    pub(crate) fn a_inv_matrix(&self) -> DMatrix<f64> {
        DMatrix::from_row_slice(self.d, self.d, &self.a_inv)
    }

    #[cfg(test)]
    pub(crate) fn theta(&self) -> &[f64] {
        &self.theta
    }
}

/// Dot product with four independent accumulators (lets the compiler use SIMD lanes).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

/// `L ← chol(LLᵀ + xxᵀ)` in place (`x` is consumed as workspace).
fn chol_rank_one_update(l: &mut [f64], d: usize, x: &mut [f64]) {
    for k in 0..d {
        if x[k] == 0.0 {
            continue;
        }
        let lkk = l[k * d + k];
        let r = lkk.hypot(x[k]);
        let c = r / lkk;
        let s = x[k] / lkk;
        l[k * d + k] = r;
        for i in k + 1..d {
            let lik = (l[i * d + k] + s * x[i]) / c;
            l[i * d + k] = lik;
            x[i] = c * x[i] - s * lik;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_pcg::Pcg64Mcg;

    fn random_x(rng: &mut Pcg64Mcg, d: usize) -> SparseVec {
        let nnz = rng.gen_range(1..=d.min(6));
        SparseVec::from_pairs(
            (0..nnz)
                .map(|_| (rng.gen_range(0..d as u32), rng.gen_range(-1.5..1.5)))
                .collect(),
        )
    }

    #[test]
    fn inverse_and_theta_match_direct_solution() {
        let d = 12;
        let mut rng = Pcg64Mcg::seed_from_u64(7);
        let mut m = Ridge::new(d, 0.5, true);
        let mut a = DMatrix::<f64>::identity(d, d) * 0.5;
        let mut b = nalgebra::DVector::<f64>::zeros(d);
        for step in 0..37 {
            let x = random_x(&mut rng, d);
            let r = rng.gen_range(0.0..1.0);
            m.update(&x, r, 1.0);
            let mut dense = nalgebra::DVector::<f64>::zeros(d);
            for (i, v) in x.iter() {
                dense[i] = v;
            }
            a += &dense * dense.transpose();
            b += &dense * r;
            let inv = a.clone().try_inverse().unwrap();
            assert!((m.a_inv_matrix() - &inv).amax() < 1e-9, "step {step}");
            let theta = &inv * &b;
            for i in 0..d {
                assert!((m.theta()[i] - theta[i]).abs() < 1e-9);
            }
            let l = DMatrix::from_row_slice(d, d, &m.chol);
            assert!((&l * l.transpose() - &a).amax() < 1e-9);
            let q = dense.dot(&(&inv * &dense));
            assert!((m.variance(&x, &mut Vec::new()) - q).abs() < 1e-9);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 48,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// A⁻¹ (and LinTS's Cholesky factor) stay symmetric positive definite after any
        /// sequence of updates, with or without forgetting.
        #[test]
        fn inverse_stays_symmetric_positive_definite(
            d in 1usize..10,
            lambda in 0.01..10.0f64,
            forget in proptest::bool::ANY,
            steps in proptest::collection::vec(
                (proptest::collection::vec((0u32..10, -50.0..50.0f64), 1..6), -100.0..100.0f64),
                1..80,
            ),
        ) {
            let gamma = if forget { 0.9 } else { 1.0 };
            let mut m = Ridge::new(d, lambda, true);
            for (pairs, r) in steps {
                let x = SparseVec::from_pairs(pairs.into_iter().map(|(i, v)| (i % d as u32, v)).collect());
                m.update(&x, r, gamma);
                let inv = m.a_inv_matrix();
                proptest::prop_assert_eq!(&inv, &inv.transpose());
                proptest::prop_assert!(inv.clone().cholesky().is_some(), "A⁻¹ not positive definite");
                let l = DMatrix::from_row_slice(d, d, &m.chol);
                proptest::prop_assert!((0..d).all(|i| l[(i, i)] > 0.0));
                proptest::prop_assert!(m.theta().iter().all(|t| t.is_finite()));
            }
            if !forget {
                let a = m.a_matrix();
                let resid = (&a * m.a_inv_matrix() - DMatrix::<f64>::identity(d, d)).amax();
                proptest::prop_assert!(resid < 1e-6, "A·A⁻¹ - I = {}", resid);
            }
        }
    }

    #[test]
    fn forgetting_discounts_toward_the_prior() {
        let d = 4;
        let gamma = 0.9;
        let mut m = Ridge::new(d, 2.0, false);
        let x = SparseVec::from_pairs(vec![(1, 1.0)]);
        for _ in 0..200 {
            m.update(&x, 1.0, gamma);
        }
        // Stationary A[1][1] = λ + 1/(1-γ) and θ = 1/(1 + λ(1-γ)).
        m.refresh();
        let a = m.a_matrix();
        assert!((a[(1, 1)] - (2.0 + 1.0 / (1.0 - gamma))).abs() < 1e-6);
        assert!((a[(0, 0)] - 2.0).abs() < 1e-9);
        let want = (1.0 / (1.0 - gamma)) / (2.0 + 1.0 / (1.0 - gamma));
        assert!((m.theta()[1] - want).abs() < 1e-6);
    }
}
