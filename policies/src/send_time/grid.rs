//! Thompson sampling over send slots through the distribution of the maximum.
//!
//! Drawing one Beta value per slot and serving the argmax is Thompson sampling; its propensity
//! `P_i = ∫ Π_{j≠i} F_j dF_i` needs every slot's CDF wherever slot `i` can land, which for 168
//! distinct posteriors costs hundreds of microseconds with exact CDFs. This module makes the same
//! choice from CDFs tabulated on a grid, so that the draw and its propensity come from the same
//! numbers:
//!
//! * **Grid.** Points `u_k = -12 + k/16`, `k = 0..305`, in `u = logit(x)` (rates from 6e-6 to
//!   0.999), where every Beta density is bounded and log-concave.
//! * **CDFs.** `F(u_k) = 1 − T(u_k)`: the upper tail `T` starts from the exact incomplete beta at
//!   a top point above which it is negligible, and grows by the integral of the density in `u`,
//!   `g(u) = x^α (1−x)^β / B(α, β)`, over each grid cell down from there (trapezoid with the
//!   Euler–Maclaurin `h²` and `h⁴` end corrections, derivatives in closed form, and sub-steps
//!   where the density is narrow). Error against the exact incomplete beta < 1e-7 (test
//!   `grid_cdf_matches_exact`).
//! * **Priors are shared.** A slot the shopper never touched has the population (segment)
//!   posterior: its `ln F` row and the rows' sum are a [`PriorTable`], built once per population
//!   snapshot. A decision integrates only the slots the shopper touched, and only over the range
//!   where the maximum can fall: from a top point above which it has mass < 1e-6 (plus 1e-7 per
//!   touched slot) down to the first point below which it has mass < 1e-7.
//! * **The draw.** `M(u) = Π_j F_j(u)` is the CDF of the largest of the independent draws.
//!   One uniform picks the cell `[u_c, u_{c+1}]` holding the maximum (probability
//!   `M(u_{c+1}) − M(u_c)`); a second picks the slot that attains it with probability
//!   `Δ ln F_j / Δ ln M` over that cell — exact when the slots' `ln F` move in proportion within
//!   the cell, off by O(h²) otherwise. Below the range slots share by `α` (the limit of their
//!   `Δ ln F` as x → 0); above its top by `−ln F_j(top)`.
//! * **The propensity** of the served slot is the same sum over cells,
//!   `Σ_c ΔM_c · Δ ln F_i,c / Δ ln M_c`: exactly the probability of the procedure that sampled
//!   it, so the probabilities of all eligible slots sum to 1. Against exact quadrature of
//!   continuous Thompson sampling they agree within 2e-3 + 2% (test
//!   `close_to_continuous_thompson`), and draws follow them (`draws_follow_their_propensities`).
//!
//! No I/O, no clock; plain scalar code (timings in `docs/send-time.md`).

use std::sync::OnceLock;

use rand::Rng;

use super::{Hierarchy, ShopperCounts, SlotChoice, MAX_SLOTS};
#[cfg(test)]
use crate::propensity::beta_cdf;
use crate::propensity::{inc_beta, ln_beta, MIN_PROPENSITY};

/// Lowest grid point in `u = logit(x)`.
const GRID_LO: f64 = -12.0;
/// Grid step in `u`.
const STEP: f64 = 1.0 / 16.0;
/// Grid points: `u` from -12 to 7.
pub const GRID_POINTS: usize = 305;
/// A prior table row starts integrating where its upper tail is below 1e-12.
const TABLE_TAIL: f64 = 1e-12;
/// A touched slot's upper tail above the decision's range is below 1e-7.
const RANGE_TAIL: f64 = 1e-7;
/// The range's lowest point: the maximum has mass below e^this (1e-7) there.
const LN_BELOW: f64 = -16.1;
/// The range ends where the untouched slots' `ln Π F` is this close to 0.
const LN_ABOVE: f64 = -1e-6;
/// Smallest CDF value kept (its log is about -690).
const TINY: f64 = 1e-300;
/// An integration step spans at most a third of the density's curvature scale in `u`,
/// `1/√((α+β)·x(1−x))`: cells where `(α+β)·x(1−x)` exceeds this are split into sub-steps.
const MAX_CURVATURE: f64 = 1.0 / (9.0 * STEP * STEP);
/// Most grid points one integration step spans.
const MAX_STRIDE: usize = 16;
/// Most grid points one integration step of a touched slot spans in a decision.
const MAX_TOUCHED_STRIDE: usize = 8;

/// `x`, `ln x` and `ln(1 − x)` at every grid point.
struct Nodes {
    x: Vec<f64>,
    lx: Vec<f64>,
    l1x: Vec<f64>,
}

fn nodes() -> &'static Nodes {
    static NODES: OnceLock<Nodes> = OnceLock::new();
    NODES.get_or_init(|| {
        let u = || (0..GRID_POINTS).map(|k| GRID_LO + k as f64 * STEP);
        Nodes {
            x: u().map(|u| 1.0 / (1.0 + (-u).exp())).collect(),
            lx: u().map(|u| -softplus(-u)).collect(),
            l1x: u().map(|u| -softplus(u)).collect(),
        }
    })
}

/// ln(1 + e^t) without overflow.
fn softplus(t: f64) -> f64 {
    if t > 0.0 {
        t + (-t).exp().ln_1p()
    } else {
        t.exp().ln_1p()
    }
}

/// Density, and its first and third `u`-derivatives, at one point.
type Terms = (f64, f64, f64);

/// ∫ g over a step of width `h` in `u` from the density terms at its ends (trapezoid with the
/// Euler–Maclaurin `h²` and `h⁴` end corrections), never negative.
fn cell_integral(h: f64, lower: Terms, upper: Terms) -> f64 {
    let cell = h / 2.0 * (lower.0 + upper.0) - h * h / 12.0 * (upper.1 - lower.1)
        + h.powi(4) / 720.0 * (upper.2 - lower.2);
    cell.max(0.0)
}

/// One Beta posterior on the grid.
#[derive(Debug, Clone, Copy)]
struct Shape {
    a: f64,
    b: f64,
    lnb: f64,
    /// The point [`Shape::cdf_into`] integrates down from (its upper tail is exact there).
    top: usize,
    /// Grid points per integration step of [`Shape::cdf_into`].
    stride: usize,
}

impl Shape {
    /// Beta(a, b), integrated from the lowest point at or above `at_least` where its upper tail
    /// is below 1e-12.
    fn new(a: f64, b: f64, at_least: usize) -> Self {
        let mut s = Self::unsettled(a, b);
        s.top = s.top_from(at_least, TABLE_TAIL.ln());
        s
    }

    /// Beta(a, b) with steps of a third of its narrowest curvature scale, at x = 1/2 or at the
    /// mode (`√(1/α + 1/β)`), whichever is smaller: CDF error < 1e-7.
    fn unsettled(a: f64, b: f64) -> Self {
        let width = (1.0 / a + 1.0 / b).sqrt().min(2.0 / (a + b).sqrt());
        Self {
            a,
            b,
            lnb: ln_beta(a, b),
            top: GRID_POINTS - 1,
            stride: (width / STEP / 3.0).floor().clamp(1.0, MAX_STRIDE as f64) as usize,
        }
    }

    /// Beta(a, b) as a decision's touched slot: steps of a third of its curvature scale at the
    /// mode, at most [`MAX_TOUCHED_STRIDE`] points (CDF error about 1e-5 for the widest).
    fn touched(a: f64, b: f64) -> Self {
        let width = (1.0 / a + 1.0 / b).sqrt();
        let stride = (width / STEP / 3.0).floor();
        Self {
            stride: stride.clamp(1.0, MAX_TOUCHED_STRIDE as f64) as usize,
            ..Self::unsettled(a, b)
        }
    }

    /// The lowest point at or above `at_least` where the upper tail is below `e^ln_eps` (the
    /// last point if none is). Above the mode `ln g` is concave and falling in `u`, so the tail
    /// beyond `u` is at most `g(u) / |φ'(u)|`, which keeps falling; below the mode the test fails.
    fn top_from(&self, at_least: usize, ln_eps: f64) -> usize {
        let settled = |k: usize| {
            let slope = self.slope(k);
            slope < 0.0 && self.ln_density(k) - (-slope).ln() <= ln_eps
        };
        if at_least < GRID_POINTS && settled(at_least) {
            return at_least;
        }
        first_point(at_least, settled)
    }

    fn ln_density(&self, k: usize) -> f64 {
        let n = nodes();
        self.a * n.lx[k] + self.b * n.l1x[k] - self.lnb
    }

    /// d ln g / du at point `k`.
    fn slope(&self, k: usize) -> f64 {
        self.a - (self.a + self.b) * nodes().x[k]
    }

    /// The upper tail above point `k`. Far above the mode (tail below 1e-7) by parts,
    /// `g / (|φ'| + φ''/φ')`, relative error O((φ''/φ'²)²); else the exact incomplete beta
    /// `I_{1−x}(β, α)`.
    fn tail_above(&self, k: usize) -> f64 {
        let n = nodes();
        let slope = self.slope(k);
        let ln_g = self.ln_density(k);
        if slope < 0.0 && ln_g - (-slope).ln() <= RANGE_TAIL.ln() {
            let curvature = -(self.a + self.b) * n.x[k] * (1.0 - n.x[k]);
            return ln_g.exp() / (-slope + curvature / slope);
        }
        inc_beta(self.b, self.a, n.l1x[k].exp(), n.l1x[k], n.lx[k], self.lnb)
    }

    /// An upper bound on `ln F` at `k` (below the mode `F ≤ g / φ'` by log-concavity), at most 0.
    fn ln_cdf_bound(&self, k: usize) -> f64 {
        let slope = self.slope(k);
        if slope > 0.0 {
            (self.ln_density(k) - slope.ln()).min(0.0)
        } else {
            0.0
        }
    }

    /// Density terms from x, ln x, ln(1 − x).
    fn terms(&self, x: f64, lx: f64, l1x: f64) -> Terms {
        let (a, ab) = (self.a, self.a + self.b);
        let g = (a * lx + self.b * l1x - self.lnb).exp();
        let p1 = a - ab * x;
        let p2 = -ab * (x * (1.0 - x));
        let p3 = p2 * (1.0 - 2.0 * x);
        (g, p1 * g, (p3 + 3.0 * p1 * p2 + p1 * p1 * p1) * g)
    }

    fn terms_at(&self, k: usize) -> Terms {
        let n = nodes();
        self.terms(n.x[k], n.lx[k], n.l1x[k])
    }

    /// ∫ g over the cell from point `k` to `k + 1`, given the terms at its ends.
    fn cell(&self, k: usize, lower: Terms, upper: Terms) -> f64 {
        let x = &nodes().x;
        // x(1 − x) is largest at the cell's end nearest 1/2.
        let q = if x[k + 1] <= 0.5 {
            x[k + 1] * (1.0 - x[k + 1])
        } else if x[k] >= 0.5 {
            x[k] * (1.0 - x[k])
        } else {
            0.25
        };
        let curvature = (self.a + self.b) * q;
        if curvature <= MAX_CURVATURE {
            return cell_integral(STEP, lower, upper);
        }
        let sub = (curvature / MAX_CURVATURE).sqrt().ceil().min(64.0) as usize;
        let h = STEP / sub as f64;
        let u0 = GRID_LO + k as f64 * STEP;
        let mut sum = 0.0;
        let mut above = upper;
        for i in (1..sub).rev() {
            let x = 1.0 / (1.0 + (-(u0 + i as f64 * h)).exp());
            let mid = self.terms(x, x.ln(), (-x).ln_1p());
            sum += cell_integral(h, mid, above);
            above = mid;
        }
        sum + cell_integral(h, lower, above)
    }

    /// F at grid points `from..from + out.len()`, integrated down from `top` in steps of
    /// `stride` points (cells of one point take sub-steps where the density is narrow, see
    /// [`Shape::cell`]); the points inside a step by quintic Hermite interpolation of the tail
    /// `T` from `(T, T' = −g, T'' = −g')` at the step's ends.
    fn cdf_into(&self, from: usize, out: &mut [f64]) {
        let end = from + out.len();
        let mut tail = self.tail_above(self.top);
        for k in self.top.max(from)..end {
            out[k - from] = 1.0 - tail;
        }
        let stride = self.stride;
        let mut weights = [[0.0; 6]; MAX_STRIDE];
        for (i, w) in weights[..stride].iter_mut().enumerate() {
            *w = hermite(i as f64 / stride as f64);
        }
        let mut upper = self.terms_at(self.top);
        let mut k1 = self.top;
        while k1 > from {
            let k0 = k1 - stride.min(k1);
            let lower = self.terms_at(k0);
            let h = (k1 - k0) as f64 * STEP;
            let below = tail
                + if k1 - k0 == 1 {
                    self.cell(k0, lower, upper)
                } else {
                    cell_integral(h, lower, upper)
                };
            for k in (k0 + 1).max(from)..k1.min(end) {
                // (The last step, cut short at point 0, computes its own weights.)
                let w = match k1 - k0 == stride {
                    true => weights[k - k0],
                    false => hermite((k - k0) as f64 / (k1 - k0) as f64),
                };
                let t = w[0] * below
                    - h * (w[1] * lower.0 + w[4] * upper.0)
                    - h * h * (w[2] * lower.1 + w[3] * upper.1)
                    + w[5] * tail;
                out[k - from] = 1.0 - t.clamp(tail, below);
            }
            if k0 >= from && k0 < end {
                out[k0 - from] = (1.0 - below).max(0.0);
            }
            (tail, upper, k1) = (below, lower, k0);
        }
    }
}

/// Quintic Hermite basis weights at `t ∈ [0, 1]`, in the order (value at 0, slope at 0,
/// curvature at 0, curvature at 1, slope at 1, value at 1).
fn hermite(t: f64) -> [f64; 6] {
    let (t2, t3) = (t * t, t * t * t);
    let (t4, t5) = (t3 * t, t3 * t2);
    [
        1.0 - 10.0 * t3 + 15.0 * t4 - 6.0 * t5,
        t - 6.0 * t3 + 8.0 * t4 - 3.0 * t5,
        0.5 * (t2 - 3.0 * t3 + 3.0 * t4 - t5),
        0.5 * (t3 - 2.0 * t4 + t5),
        -4.0 * t3 + 7.0 * t4 - 3.0 * t5,
        10.0 * t3 - 15.0 * t4 + 6.0 * t5,
    ]
}

/// The first point at or above `from` where the monotone `pred` holds (the last point when
/// none does).
fn first_point(from: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (from.min(GRID_POINTS - 1), GRID_POINTS - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// `ln F` of every slot's prior posterior on the grid, and their sum: what a shopper's untouched
/// slots share. Built once per population snapshot (168 × 305 density evaluations).
#[derive(Debug, Clone)]
pub struct PriorTable {
    params: Vec<(f64, f64)>,
    /// Point-major: slot `j`'s `ln F` at point `k` is `ln_cdf[k * slots + j]` (a draw reads
    /// every slot's increment over one cell from two rows).
    ln_cdf: Vec<f64>,
    sum: Vec<f64>,
}

impl PriorTable {
    /// The table for prior means `m_j` (from [`super::prior_means`]) at strength `κ`.
    pub fn new(h: &Hierarchy, prior_means: &[f64]) -> Self {
        let k = h.prior_strength;
        let params: Vec<(f64, f64)> = prior_means
            .iter()
            .map(|&m| ((k * m).max(1e-3), (k * (1.0 - m)).max(1e-3)))
            .collect();
        let n = params.len();
        let mut ln_cdf = vec![0.0; n * GRID_POINTS];
        let mut sum = vec![0.0; GRID_POINTS];
        let mut row = vec![0.0; GRID_POINTS];
        for (j, &(a, b)) in params.iter().enumerate() {
            Shape::new(a, b, 0).cdf_into(0, &mut row);
            for (k, (f, s)) in row.iter().zip(sum.iter_mut()).enumerate() {
                let l = f.max(TINY).ln();
                ln_cdf[k * n + j] = l;
                *s += l;
            }
        }
        Self {
            params,
            ln_cdf,
            sum,
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.params.len()
    }

    /// Prior `(α, β)` of `slot`.
    pub fn prior(&self, slot: usize) -> (f64, f64) {
        self.params[slot]
    }

    /// Every slot's `ln F` at point `k`.
    fn at(&self, k: usize) -> &[f64] {
        let n = self.slots();
        &self.ln_cdf[k * n..(k + 1) * n]
    }
}

const UNTOUCHED: u8 = u8::MAX;

/// The distribution of the best slot for one shopper: build once per decision, then
/// [`sample`](Self::sample) and [`probability`](Self::probability).
pub struct SlotMax<'a> {
    table: &'a PriorTable,
    eligible: &'a [usize],
    is_eligible: [bool; MAX_SLOTS],
    /// Index into `touched` of each slot, or [`UNTOUCHED`].
    touched_of: [u8; MAX_SLOTS],
    /// The eligible slots the shopper touched, with their posteriors.
    touched: Vec<Shape>,
    /// The range: below `lo` the maximum has mass < 1e-7, above `hi` < 1e-6 plus 1e-7 per
    /// touched slot.
    lo: usize,
    hi: usize,
    /// F of touched slot `i` at point `k` in the range is `f[i * (hi - lo + 1) + k - lo]`.
    f: Vec<f64>,
    /// ln M and M at points `lo..=hi`.
    ln_m: Vec<f64>,
    m: Vec<f64>,
    alpha_sum: f64,
}

impl<'a> SlotMax<'a> {
    /// The maximum over `eligible` (indexes below `table.slots()`, no repeats, not empty) of one
    /// draw per slot from the shopper's posteriors at `now_ms`.
    pub fn new(
        table: &'a PriorTable,
        h: &Hierarchy,
        shopper: Option<&ShopperCounts>,
        now_ms: u64,
        eligible: &'a [usize],
    ) -> Self {
        let slots = table.slots();
        let mut is_eligible = [false; MAX_SLOTS];
        for &j in eligible {
            is_eligible[j] = true;
        }
        let mut touched_of = [UNTOUCHED; MAX_SLOTS];
        let mut touched = Vec::new();
        for (j, succ, n) in shopper.into_iter().flat_map(|s| s.decayed(h, now_ms)) {
            if j < slots && is_eligible[j] && touched_of[j] == UNTOUCHED {
                touched_of[j] = touched.len() as u8;
                let (a, b) = table.params[j];
                let a = (a + succ).max(1e-3);
                let b = (b + (n - succ).max(0.0)).max(1e-3);
                touched.push(Shape::touched(a, b));
            }
        }
        // ln Π F of the eligible untouched slots: the table's sum less the other rows.
        let others: Vec<usize> = (0..slots)
            .filter(|&j| !is_eligible[j] || touched_of[j] != UNTOUCHED)
            .collect();
        let base = |k: usize| {
            let at = table.at(k);
            table.sum[k] - others.iter().map(|&j| at[j]).sum::<f64>()
        };
        // The top: the untouched slots' product is within 1e-6 of 1, and every touched slot's
        // tail below 1e-7.
        let mut hi = first_point(0, |k| base(k) >= LN_ABOVE);
        for s in &touched {
            hi = hi.max(s.top_from(hi, RANGE_TAIL.ln()));
        }
        // The bottom: M is below 1e-7 there (bounded by the untouched slots' product and the
        // touched slots' bounds on F).
        let bound = |k: usize| base(k) + touched.iter().map(|s| s.ln_cdf_bound(k)).sum::<f64>();
        let lo = first_point(0, |k| base(k) > LN_BELOW).min(hi);
        let lo = first_point(lo, |k| bound(k) > LN_BELOW)
            .saturating_sub(1)
            .min(hi);
        // The touched slots' F over the range, integrated down from the top; ln M.
        let len = hi - lo + 1;
        let mut f = vec![0.0; touched.len() * len];
        for (s, row) in touched.iter_mut().zip(f.chunks_mut(len)) {
            s.top = hi;
            s.cdf_into(lo, row);
        }
        let mut ln_m: Vec<f64> = (lo..=hi).map(base).collect();
        if !touched.is_empty() {
            for (i, l) in ln_m.iter_mut().enumerate() {
                let product: f64 = f[i..].iter().step_by(len).product();
                *l += product.max(TINY).ln();
            }
        }
        let m = ln_m.iter().map(|l| l.exp()).collect();
        let alpha = |j: usize| match touched_of[j] {
            UNTOUCHED => table.params[j].0,
            i => touched[i as usize].a,
        };
        let alpha_sum = eligible.iter().map(|&j| alpha(j)).sum();
        SlotMax {
            table,
            eligible,
            is_eligible,
            touched_of,
            touched,
            lo,
            hi,
            f,
            ln_m,
            m,
            alpha_sum,
        }
    }

    /// ln F of `slot` at grid point `k` (in `lo..=hi`).
    fn ln_cdf(&self, slot: usize, k: usize) -> f64 {
        match self.touched_of[slot] {
            UNTOUCHED => self.table.at(k)[slot],
            i => {
                let len = self.hi - self.lo + 1;
                self.f[i as usize * len + k - self.lo].max(TINY).ln()
            }
        }
    }

    /// `Δ ln F` of `slot` over cell `c` (from point `c` to `c + 1`); `c == hi` is the cell from
    /// the top point to x = 1.
    fn increment(&self, slot: usize, c: usize) -> f64 {
        if c == self.hi {
            -self.ln_cdf(slot, c)
        } else {
            self.ln_cdf(slot, c + 1) - self.ln_cdf(slot, c)
        }
    }

    fn alpha(&self, slot: usize) -> f64 {
        match self.touched_of[slot] {
            UNTOUCHED => self.table.params[slot].0,
            i => self.touched[i as usize].a,
        }
    }

    /// Probability mass of the maximum in cell `c`.
    fn cell_mass(&self, c: usize) -> f64 {
        let i = c - self.lo;
        let upper = if c == self.hi { 1.0 } else { self.m[i + 1] };
        (upper - self.m[i]).max(0.0)
    }

    /// Draw the slot holding the maximum.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let u: f64 = rng.gen();
        let v: f64 = rng.gen();
        if u < self.m[0] {
            // Below the range (mass < 1e-7): shares by α, the limit of Δ ln F as x → 0.
            return pick(self.eligible, |j| self.alpha(j), v);
        }
        // The cell: the last point with M ≤ u (the cell above `hi` when u ≥ M(hi)).
        let c = self.lo + self.m.partition_point(|&m| m <= u) - 1;
        // Every slot's increment over the cell as if untouched (two rows of the table), then
        // the touched slots' own.
        let mut steps = [0.0; MAX_SLOTS];
        let at = self.table.at(c);
        if c == self.hi {
            for (s, &l) in steps.iter_mut().zip(at) {
                *s = -l;
            }
        } else {
            let above = self.table.at(c + 1);
            for ((s, &l0), &l1) in steps.iter_mut().zip(at).zip(above) {
                *s = l1 - l0;
            }
        }
        for (j, &i) in self.touched_of.iter().enumerate() {
            if i != UNTOUCHED {
                steps[j] = self.increment(j, c);
            }
        }
        pick(self.eligible, |j| steps[j].max(0.0), v)
    }

    /// Probability that [`sample`](Self::sample) returns `slot` (floored at
    /// [`MIN_PROPENSITY`] for eligible slots; 0 for others).
    pub fn probability(&self, slot: usize) -> f64 {
        if !self.is_eligible.get(slot).copied().unwrap_or(false) {
            return 0.0;
        }
        if self.eligible.len() == 1 {
            return 1.0;
        }
        let mut p = self.m[0] * self.alpha(slot) / self.alpha_sum;
        let ln_f: Vec<f64> = (self.lo..=self.hi).map(|k| self.ln_cdf(slot, k)).collect();
        for (i, c) in (self.lo..=self.hi).enumerate() {
            let mass = self.cell_mass(c);
            if mass > 0.0 {
                let (mine, all) = if c == self.hi {
                    (-ln_f[i], -self.ln_m[i])
                } else {
                    (ln_f[i + 1] - ln_f[i], self.ln_m[i + 1] - self.ln_m[i])
                };
                if all > 0.0 {
                    p += mass * (mine.max(0.0) / all).min(1.0);
                }
            }
        }
        p.clamp(MIN_PROPENSITY, 1.0)
    }
}

/// One of `items` with probability proportional to `weight`, `v` uniform in [0, 1).
fn pick(items: &[usize], weight: impl Fn(usize) -> f64, v: f64) -> usize {
    let mut weights = [0.0; MAX_SLOTS];
    let weights = &mut weights[..items.len()];
    for (w, &j) in weights.iter_mut().zip(items) {
        *w = weight(j);
    }
    let mut target = v * weights.iter().sum::<f64>();
    for (i, &w) in weights.iter().enumerate() {
        if target < w {
            return items[i];
        }
        target -= w;
    }
    // Rounding left a sliver: the last item with weight.
    weights
        .iter()
        .rposition(|&w| w > 0.0)
        .map_or(items[0], |i| items[i])
}

/// Thompson sampling over the `eligible` slots from a prior table and the shopper's counts.
/// `None` when nothing is eligible.
pub fn choose<R: Rng + ?Sized>(
    table: &PriorTable,
    h: &Hierarchy,
    shopper: Option<&ShopperCounts>,
    now_ms: u64,
    eligible: &[usize],
    rng: &mut R,
) -> Option<SlotChoice> {
    match eligible.len() {
        0 => None,
        1 => Some(SlotChoice {
            slot: eligible[0],
            probability: 1.0,
        }),
        _ => {
            let max = SlotMax::new(table, h, shopper, now_ms, eligible);
            let slot = max.sample(rng);
            Some(SlotChoice {
                slot,
                probability: max.probability(slot),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::send_time::{posteriors, win_probability};
    use rand::SeedableRng;
    use rand_pcg::Pcg64Mcg;

    const H: Hierarchy = Hierarchy {
        prior_strength: 10.0,
        half_life_ms: None,
        max_shopper_slots: MAX_SLOTS,
    };

    /// Prior means of a week of hours peaking in the evening.
    fn weekly_means() -> Vec<f64> {
        (0..168)
            .map(|j| {
                let hour = (j % 24) as f64;
                0.03 + 0.12 * (-(hour - 19.0).powi(2) / 8.0).exp() + 0.001 * (j / 24) as f64
            })
            .collect()
    }

    /// A shopper with `sends` sends spread over the slots, opening the evening ones.
    fn shopper(sends: usize, seed: u64) -> ShopperCounts {
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let mut s = ShopperCounts::default();
        for _ in 0..sends {
            let j = rng.gen_range(0..168);
            let rate = if (18..22).contains(&(j % 24)) {
                0.6
            } else {
                0.05
            };
            s.update(&H, j, if rng.gen::<f64>() < rate { 1.0 } else { 0.0 }, 0);
        }
        s
    }

    /// 200 sends on three evening slots (narrow posteriors) and a few elsewhere (wide ones).
    fn loyal_shopper() -> ShopperCounts {
        let mut s = shopper(10, 9);
        for i in 0..200 {
            let j = [19, 43, 115][i % 3];
            s.update(&H, j, if i % 5 < 2 { 1.0 } else { 0.0 }, 0);
        }
        s
    }

    #[test]
    fn grid_cdf_matches_exact() {
        let n = nodes();
        let mut worst: f64 = 0.0;
        for &(a, b) in &[
            (0.3, 9.7),
            (1.5, 15.0),
            (1e-3, 1e-3),
            (50.0, 450.0),
            (30.0, 9.0),
            (0.9, 0.1),
            (200.0, 5.0),
            (2.0, 2000.0),
            (9.99, 0.01),
            (400.0, 400.0),
            (5_000.0, 20.0),
        ] {
            let mut f = vec![0.0; GRID_POINTS];
            Shape::new(a, b, 0).cdf_into(0, &mut f);
            for (&x, &fk) in n.x.iter().zip(&f) {
                let exact = beta_cdf(x, a, b);
                let err = (fk - exact).abs();
                assert!(err < 1e-7, "Beta({a}, {b}) at x = {x}: {fk} vs {exact}");
                worst = worst.max(err);
            }
            // A window starting mid-grid gives the same values.
            let mut part = vec![0.0; 40];
            Shape::new(a, b, 0).cdf_into(150, &mut part);
            assert_eq!(&part[..], &f[150..190]);
        }
        eprintln!("worst grid CDF error {worst:e}");
    }

    fn check_distribution(table: &PriorTable, me: Option<&ShopperCounts>, eligible: &[usize]) {
        let max = SlotMax::new(table, &H, me, 0, eligible);
        let probs: Vec<f64> = eligible.iter().map(|&j| max.probability(j)).collect();
        let total: f64 = probs.iter().sum();
        assert!((total - 1.0).abs() < 1e-9, "probabilities sum to {total}");
        let mut rng = Pcg64Mcg::seed_from_u64(11);
        let n = 40_000;
        let mut hits = vec![0u32; table.slots()];
        for _ in 0..n {
            hits[max.sample(&mut rng)] += 1;
        }
        let mut chi2 = 0.0;
        let mut cells = 0;
        for (&j, &p) in eligible.iter().zip(&probs) {
            let expected = p * n as f64;
            if expected >= 5.0 {
                chi2 += (hits[j] as f64 - expected).powi(2) / expected;
                cells += 1;
            } else {
                assert!(hits[j] as f64 <= expected + 5.0 * expected.sqrt() + 3.0);
            }
        }
        // χ² with `cells - 1` degrees of freedom: mean df, sd √(2 df); 5 sd is far out.
        let df = cells.max(2) as f64 - 1.0;
        assert!(
            chi2 < df + 5.0 * (2.0 * df).sqrt(),
            "χ² {chi2} over {cells} cells"
        );
    }

    #[test]
    fn draws_follow_their_propensities() {
        let table = PriorTable::new(&H, &weekly_means());
        let all: Vec<usize> = (0..168).collect();
        check_distribution(&table, None, &all);
        let me = shopper(60, 1);
        check_distribution(&table, Some(&me), &all);
        // Quiet hours: 22:00–07:00 removed.
        let day: Vec<usize> = (0..168).filter(|j| (7..22).contains(&(j % 24))).collect();
        check_distribution(&table, Some(&me), &day);
        // Every slot touched.
        check_distribution(&table, Some(&shopper(1_000, 2)), &all);
        // Narrow posteriors (integrated at every point) beside wide ones.
        let loyal = loyal_shopper();
        check_distribution(&table, Some(&loyal), &all);
    }

    #[test]
    fn close_to_continuous_thompson() {
        let means = weekly_means();
        let table = PriorTable::new(&H, &means);
        let mut worst: f64 = 0.0;
        for (me, eligible) in [
            (None, (0..168).collect::<Vec<_>>()),
            (Some(shopper(60, 3)), (0..168).collect()),
            (Some(shopper(1_000, 4)), (0..168).collect()),
            (Some(loyal_shopper()), (0..168).collect()),
            (
                Some(shopper(40, 5)),
                (0..168).filter(|j| (7..22).contains(&(j % 24))).collect(),
            ),
        ] {
            let mut params = Vec::new();
            posteriors(&H, &means, me.as_ref(), 0, &mut params);
            let max = SlotMax::new(&table, &H, me.as_ref(), 0, &eligible);
            for &j in &eligible {
                let grid = max.probability(j);
                let exact = win_probability(&params, &eligible, j);
                worst = worst.max((grid - exact).abs());
                assert!(
                    (grid - exact).abs() < 2e-3 + 0.02 * exact,
                    "slot {j}: grid {grid} vs quadrature {exact}"
                );
            }
        }
        eprintln!("worst |grid − quadrature| {worst:e}");
    }

    #[test]
    fn rates_near_one_and_zero() {
        // One slot almost always opened, one almost never: the tail above the grid and the
        // range below it are both handled.
        let table = PriorTable::new(&H, &[0.9999, 0.5, 1e-6]);
        let all = [0, 1, 2];
        let max = SlotMax::new(&table, &H, None, 0, &all);
        let total: f64 = all.iter().map(|&j| max.probability(j)).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        // Against plain Thompson sampling: one Beta draw per slot, argmax.
        let mut rng = Pcg64Mcg::seed_from_u64(5);
        let n = 40_000;
        let mut hits = [0u32; 3];
        for _ in 0..n {
            let draws: Vec<f64> = all
                .iter()
                .map(|&j| {
                    let (a, b) = table.prior(j);
                    crate::policy::sample_beta(a, b, &mut rng)
                })
                .collect();
            let best = (0..3)
                .max_by(|&p, &q| draws[p].total_cmp(&draws[q]))
                .unwrap();
            hits[best] += 1;
        }
        for j in all {
            let (p, f) = (max.probability(j), hits[j] as f64 / n as f64);
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (p - f).abs() < 5.0 * se + 2e-3,
                "slot {j}: grid {p} vs draws {f}"
            );
        }
        check_distribution(&table, None, &all);
    }
}
