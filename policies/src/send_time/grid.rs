//! Thompson sampling over send slots through the distribution of the maximum.
//!
//! Drawing one Beta value per slot and serving the argmax is Thompson sampling; its propensity
//! `P_i = ∫ Π_{j≠i} F_j dF_i` needs every slot's CDF wherever slot `i` can land, which for 168
//! distinct posteriors costs hundreds of microseconds with exact CDFs. This module makes the same
//! choice from tabulated CDFs instead, so that the draw and its propensity come from the same
//! numbers:
//!
//! * **Grid.** Points `u_k = -12 + k/16`, `k = 0..305`, in `u = logit(x)` (rates from 6e-6 to
//!   0.999). Every Beta density is bounded and log-concave in `u`.
//! * **CDFs.** `F(u_k)` is integrated down from the top of the density in `u`,
//!   `g(u) = x^α (1−x)^β / B(α, β)`, by Euler–Maclaurin-corrected trapezoids (terms up to `h⁴`,
//!   derivatives in closed form), in steps of a third of the density's width with quintic
//!   Hermite fill between steps, and sub-steps for narrow posteriors. Where the density above
//!   the top point is not negligible (rates near 1) the exact incomplete beta supplies that
//!   tail. Error against the exact incomplete beta < 1e-7 (worst seen 7e-8; test
//!   `grid_cdf_matches_exact`).
//! * **Priors are shared.** A slot the shopper never touched has the population (segment)
//!   posterior: its `ln F` rows and their sum are a [`PriorTable`], built once per population
//!   snapshot. A decision only integrates the slots the shopper touched, only over the range
//!   where the maximum can fall: it has mass < 1e-7 below the range and < 1e-6 above it (plus
//!   1e-7 per touched slot), which the draw shares out by the slots' limiting shares there.
//! * **Touched slots, coarsely and together.** A wide touched posterior (most of them: a few
//!   trials on top of the prior) is integrated to every 8th point only, where `ln F` and its
//!   first two derivatives are kept; their sum over the touched slots is interpolated once per
//!   point by quintic Hermite — linear in its data, so it equals the sum of each slot's own
//!   interpolant, which is what sampling and the propensity read for that slot. CDF error
//!   < 1e-5 (worst seen 6.3e-6; test `coarse_knots_match_exact`). The wide slots are integrated
//!   together, one node at a time across all of them, down from the range's top (the tail above
//!   it by integration by parts), so the loops vectorize; `exp`, `ln` and `ln B` are the
//!   branch-free batched versions of [`crate::vmath`]. Narrow ones (tens of trials on one slot)
//!   are integrated at every point, also together: in groups by the points their own step spans
//!   (1, 2 or 3, the points inside a step by quintic Hermite), CDF error < 2e-7 (worst seen
//!   1.1e-7; test `narrow_groups_match_exact`).
//! * **The draw.** `M(u) = Π_j F_j(u)` is the CDF of the largest of the independent draws.
//!   One uniform picks the cell `[u_c, u_{c+1}]` holding the maximum (probability
//!   `M(u_{c+1}) − M(u_c)`); a second picks the slot that attains it with probability
//!   `Δ ln F_j / Δ ln M` over that cell — exact when the slots' `ln F` move in proportion
//!   within the cell, and off by O(h²) otherwise. Below the range (mass < 1e-7) slots share by
//!   `α`; above its top point by `−ln F_j(top)`.
//! * **The propensity** of the served slot is the same sum over cells,
//!   `Σ_c ΔM_c · Δ ln F_i,c / Δ ln M_c`: exactly the probability of the procedure that
//!   sampled it, so the probabilities of all eligible slots sum to 1. Against exact quadrature of
//!   continuous Thompson sampling they agree within 2.5e-4 over 168 weekly slots (test
//!   `close_to_continuous_thompson`, tolerance 2e-3 + 2%).
//!
//! No I/O, no clock, no allocation beyond a few vectors per decision. The decision's loops are
//! compiled twice, for the baseline target and for AVX2 + FMA, and the `multiversion` crate picks
//! one at run time (Rust never fuses floating-point operations on its own, so both give the same
//! numbers; the feature `baseline-only` builds the baseline alone, and `scripts/test` runs this
//! module's tests that way too). A decision over 168 slots costs about 12k instructions for a
//! new shopper plus 1.6–2.8k per wide touched slot and 4–9k per narrow one (callgrind; timings
//! in `docs/send-time.md`).

use std::ops::Range;
use std::sync::OnceLock;

#[cfg(not(feature = "baseline-only"))]
use multiversion::multiversion;
use rand::Rng;

use super::{Hierarchy, ShopperCounts, SlotChoice, MAX_SLOTS};
use crate::propensity::{beta_cdf, ln_beta, MIN_PROPENSITY};
use crate::vmath;

/// Lowest grid point in `u = logit(x)`.
const GRID_LO: f64 = -12.0;
/// Grid step in `u`.
const STEP: f64 = 1.0 / 16.0;
/// Grid points: `u` from -12 to 7.
pub const GRID_POINTS: usize = 305;
/// A prior table row starts integrating where its upper tail is below e^this (1e-12).
const LN_TAIL_EPS: f64 = -27.631_021_115_928_547;
/// A touched slot's upper tail above the computed range is at most e^this (1e-7).
const LN_RANGE_TAIL: f64 = -16.118_095_650_958_32;
/// `ln` of the largest mass of the maximum that may lie below the computed range (1e-7); there
/// slots share it by `α`, the limit of their `Δ ln F` as x → 0.
const LN_BELOW: f64 = -16.1;
/// The range ends where the untouched slots' `ln Π F` is this close to 0: the maximum has
/// mass < 1e-6 above it (plus at most e^[`LN_RANGE_TAIL`] per touched slot), shared there in
/// proportion to the slots' tails, their limit as their tails shrink.
const LN_ABOVE: f64 = -1e-6;
/// Smallest CDF value kept (its log is about -690).
const TINY: f64 = 1e-300;
/// Grid points per coarse step (half a unit of `u`): wide touched slots are evaluated only there.
const COARSE: usize = 8;
/// Touched posteriors whose integration step ([`Shape::per_step`]) spans at least this many grid
/// points are "wide": their `ln F` is interpolated from the coarse points with CDF error < 1e-5 (test
/// `coarse_knots_match_exact`); narrower ones are integrated at every point.
const WIDE_STEPS: f64 = 4.0;
/// Wide posteriors whose [`Shape::per_step`] is at least this take one integration step per
/// coarse interval, the others two (CDF error < 1e-5 either way, test
/// `coarse_knots_match_exact`).
const FULL_STRIDE_STEPS: f64 = 4.5;
/// Most grid points one integration step of a wide posterior spans.
const MAX_STRIDE: usize = 16;
/// Lanes the groups of touched slots are padded to (whole vectors of four doubles), so that no
/// loop over a group ends in a remainder of single values.
const LANES: usize = 4;
/// Narrow touched slots are integrated in groups taking 1, 2 and 3 grid points per step.
const FINE_GROUPS: usize = 3;
/// How many touched slots (highest means) bound the maximum from below.
const BOUNDING: usize = 4;

/// `x`, `ln x` and `ln(1 − x)` at every grid point.
struct Nodes {
    x: Vec<f64>,
    lx: Vec<f64>,
    l1x: Vec<f64>,
}

fn nodes() -> &'static Nodes {
    static NODES: OnceLock<Nodes> = OnceLock::new();
    NODES.get_or_init(|| {
        // ln(1 + e^t) without overflow.
        let softplus = |t: f64| {
            if t > 0.0 {
                t + (-t).exp().ln_1p()
            } else {
                t.exp().ln_1p()
            }
        };
        let u = (0..GRID_POINTS).map(|k| GRID_LO + k as f64 * STEP);
        Nodes {
            x: u.clone().map(|u| 1.0 / (1.0 + (-u).exp())).collect(),
            lx: u.clone().map(|u| -softplus(-u)).collect(),
            l1x: u.map(softplus).map(|s| -s).collect(),
        }
    })
}

/// One Beta posterior on the grid.
#[derive(Debug, Clone, Copy)]
struct Shape {
    a: f64,
    b: f64,
    lnb: f64,
    /// A grid point above which the upper tail is negligible (see [`Shape::settle`]).
    top: usize,
    /// Mass above `top` (zero unless `top` is the grid's last point).
    tail: f64,
}

/// Density, and its first and third `u`-derivatives, at one point.
type Terms = (f64, f64, f64);

/// `ln F` and its first two `u`-derivatives at one point.
type Knot = [f64; 3];

/// ∫ g over one step of width `h` in `u` from the density terms at its ends (Euler–Maclaurin:
/// trapezoid with the `h²` and `h⁴` end corrections), never negative.
fn cell_integral(h: f64, lower: Terms, upper: Terms) -> f64 {
    em_cell(em_weights(h), lower, upper)
}

/// The Euler–Maclaurin weights `(h/2, h²/12, h⁴/720)` of a step of width `h`.
#[inline(always)]
fn em_weights(h: f64) -> (f64, f64, f64) {
    (h / 2.0, h * h / 12.0, h.powi(4) / 720.0)
}

/// [`cell_integral`] with its weights computed once per step width.
#[inline(always)]
fn em_cell((w1, w2, w4): (f64, f64, f64), lower: Terms, upper: Terms) -> f64 {
    let cell = w1 * (lower.0 + upper.0) - w2 * (upper.1 - lower.1) + w4 * (upper.2 - lower.2);
    if cell > 0.0 {
        cell
    } else {
        0.0
    }
}

/// The density's first and third `u`-derivatives at `x` from its value `g`, for `α = a`,
/// `α + β = ab`.
#[inline(always)]
fn density_derivatives(a: f64, ab: f64, x: f64, g: f64) -> (f64, f64) {
    let p1 = a - ab * x;
    let p2 = -ab * (x * (1.0 - x));
    let p3 = p2 * (1.0 - 2.0 * x);
    (p1 * g, (p3 + 3.0 * p1 * p2 + p1 * p1 * p1) * g)
}

/// The upper tail far above the mode from the density `g`, its log-slope `φ' < 0` and
/// log-curvature `φ''` there, by integrating by parts: `g / (|φ'| + φ''/φ')`, relative error
/// O((φ''/φ'²)²).
#[inline(always)]
fn tail_by_parts(g: f64, slope: f64, curvature: f64) -> f64 {
    g / (-slope + curvature / slope)
}

impl Shape {
    /// A shape whose top is not settled yet (see [`Shape::settle`]).
    fn unsettled(a: f64, b: f64) -> Self {
        Self::with_ln_beta(a, b, ln_beta(a, b))
    }

    /// [`Shape::unsettled`] with `ln B(a, b)` already known.
    fn with_ln_beta(a: f64, b: f64, lnb: f64) -> Self {
        Self {
            a,
            b,
            lnb,
            top: GRID_POINTS - 1,
            tail: 0.0,
        }
    }

    /// A shape with its top settled at or above `at_least`.
    fn new(a: f64, b: f64, at_least: usize) -> Self {
        let mut s = Self::unsettled(a, b);
        s.settle(at_least, LN_TAIL_EPS);
        s
    }

    /// Lowest point at or above `at_least` where the upper tail is below `e^ln_eps`. Above the
    /// density's mode `ln g` is concave and falling in `u`, so the tail beyond `u` is at most
    /// `g(u) / |φ'(u)|`; below the mode that bound does not hold, so the predicate is monotone.
    fn settle(&mut self, at_least: usize, ln_eps: f64) {
        let ok = |k: usize| self.ln_tail_bound(k) <= ln_eps;
        let last = GRID_POINTS - 1;
        let lo = at_least.min(last);
        if ok(lo) {
            self.top = lo;
            return;
        }
        if !ok(last) {
            // Rates near 1: the exact tail above the top point, I_{1−x}(β, α).
            self.top = last;
            self.tail = beta_cdf(nodes().l1x[last].exp(), self.b, self.a);
            return;
        }
        self.top = bisect(lo, last, ok);
    }

    /// The upper tail above point `k` (at or above `top`): the exact tail kept for rates near
    /// 1, else [`tail_by_parts`] — far above the mode, where `top` is, a tiny error on a tiny
    /// tail.
    fn tail_above(&self, k: usize) -> f64 {
        let s = self.slope(k);
        if self.tail > 0.0 || s >= 0.0 {
            return self.tail;
        }
        let x = nodes().x[k];
        let curvature = -(self.a + self.b) * x * (1.0 - x);
        tail_by_parts(self.ln_density(k).exp(), s, curvature)
    }

    fn ln_density(&self, k: usize) -> f64 {
        let n = nodes();
        self.a * n.lx[k] + self.b * n.l1x[k] - self.lnb
    }

    /// d ln g / du at point `k`.
    fn slope(&self, k: usize) -> f64 {
        self.a - (self.a + self.b) * nodes().x[k]
    }

    /// Upper bound on ln(upper tail) at `k`, valid above the mode (+∞ below it).
    #[inline]
    fn ln_tail_bound(&self, k: usize) -> f64 {
        let s = self.slope(k);
        if s < 0.0 {
            self.ln_density(k) - vmath::ln(-s)
        } else {
            f64::INFINITY
        }
    }

    /// Upper bound on ln F at `k` (log-concavity below the mode: F ≤ g / φ'), at most 0.
    fn ln_cdf_bound(&self, k: usize) -> f64 {
        let s = self.slope(k);
        if s > 0.0 {
            (self.ln_density(k) - vmath::ln(s)).min(0.0)
        } else {
            0.0
        }
    }

    /// Density terms from x, ln x, ln(1 − x).
    fn terms(&self, x: f64, lx: f64, l1x: f64) -> Terms {
        let g = (self.a * lx + self.b * l1x - self.lnb).exp();
        let (g1, g3) = density_derivatives(self.a, self.a + self.b, x, g);
        (g, g1, g3)
    }

    fn terms_at_node(&self, k: usize) -> Terms {
        let n = nodes();
        self.terms(n.x[k], n.lx[k], n.l1x[k])
    }

    fn terms_at_u(&self, u: f64) -> Terms {
        let x = 1.0 / (1.0 + (-u).exp());
        self.terms(x, x.ln(), (-x).ln_1p())
    }

    /// Integration step in grid points that keeps the CDF within about 1e-7: a third of the
    /// density's curvature scale at its mode, √(1/α + 1/β).
    fn per_step(&self) -> f64 {
        (1.0 / self.a + 1.0 / self.b).sqrt() / STEP / 3.0
    }

    /// Grid points per integration step and sub-steps per grid point of [`Shape::cdf_into`]: a
    /// third of the curvature scale of `ln g`, `1/√((α+β)·x(1−x))`, which is smallest at
    /// x = 1/2 and largest at the mode; the steeper of the two keeps the tail above a skewed
    /// mode accurate.
    fn plan(&self) -> (usize, usize) {
        let width = (1.0 / self.a + 1.0 / self.b)
            .sqrt()
            .min(2.0 / (self.a + self.b).sqrt());
        let per_step = width / STEP / 3.0;
        let stride = per_step.floor().clamp(1.0, MAX_STRIDE as f64) as usize;
        let sub = (1.0 / per_step).ceil().clamp(1.0, 64.0) as usize;
        (stride, sub)
    }

    /// F at grid points `from..from + out.len()`, integrating the density down from `top` by
    /// Euler–Maclaurin steps of about a third of the density's width in `u` (its curvature
    /// scale √(1/α + 1/β)): wide posteriors take one density evaluation per several grid
    /// points and fill the points between by quintic Hermite interpolation of the tail (value,
    /// density, slope at both ends); narrow ones (hundreds of trials) take sub-steps.
    fn cdf_into(&self, from: usize, out: &mut [f64]) {
        let end = from + out.len();
        let above = self.tail_above(self.top);
        for k in self.top.max(from)..end {
            out[k - from] = 1.0 - above;
        }
        if self.top <= from {
            return;
        }
        let (stride, sub) = self.plan();
        if sub == 1 {
            return cdf_by_steps(self, from, stride, out);
        }
        let bases = HERMITE_BASES;
        let mut tail = self.tail_above(self.top);
        let mut upper = self.terms_at_node(self.top);
        let mut k1 = self.top;
        while k1 > from {
            let k0 = k1 - stride.min(k1);
            let lower = self.terms_at_node(k0);
            let h = (k1 - k0) as f64 * STEP;
            let cell = if sub > 1 {
                let hs = STEP / sub as f64;
                let u0 = GRID_LO + k0 as f64 * STEP;
                let mut acc = 0.0;
                let mut hi_terms = upper;
                for i in (1..sub).rev() {
                    let mid = self.terms_at_u(u0 + i as f64 * hs);
                    acc += cell_integral(hs, mid, hi_terms);
                    hi_terms = mid;
                }
                acc + cell_integral(hs, lower, hi_terms)
            } else {
                cell_integral(h, lower, upper)
            };
            let (t1, t0) = (tail, tail + cell);
            let basis = &bases[k1 - k0];
            for k in (k0 + 1).max(from)..k1.min(end) {
                let (lower, upper) = ((t0, lower.0, lower.1), (t1, upper.0, upper.1));
                out[k - from] = cdf_inside(&basis[k - k0], h, lower, upper);
            }
            if k0 < end && k0 >= from {
                out[k0 - from] = (1.0 - t0).max(0.0);
            }
            tail = t0;
            upper = lower;
            k1 = k0;
        }
    }
}

/// [`Shape::cdf_into`] for posteriors whose steps span whole grid points (all but the narrowest),
/// with the same formulas (the densities through the batched `exp`, within a few ulp of the
/// standard library's), computed across all the steps at once so that the loops
/// vectorize: the densities at every step end (one batched `exp`), every step's integral, their
/// running sum down from the top, and the points inside the steps by quintic Hermite. `out`
/// already holds the points at and above the top.
#[cfg_attr(
    not(feature = "baseline-only"),
    multiversion(targets("x86_64+avx2+fma"))
)]
fn cdf_by_steps(shape: &Shape, from: usize, stride: usize, out: &mut [f64]) {
    let top = shape.top;
    let nd = nodes();
    // Step ends top = n_0 > n_1 > … > n_m, the last at or below `from` (0 at the lowest).
    let m = (top - from).div_ceil(stride);
    let mut buf = vec![0.0; 4 * (m + 1)];
    let (g, rest) = buf.split_at_mut(m + 1);
    let (d1, rest) = rest.split_at_mut(m + 1);
    let (d3, tail) = rest.split_at_mut(m + 1);
    let (a, b, ab, lnb) = (shape.a, shape.b, shape.a + shape.b, shape.lnb);
    for (i, g) in g.iter_mut().enumerate() {
        let k = top.saturating_sub(i * stride);
        *g = a * nd.lx[k] + b * nd.l1x[k] - lnb;
    }
    vmath::exp_in_place(g);
    for (i, ((d1, d3), &g)) in d1.iter_mut().zip(d3.iter_mut()).zip(&*g).enumerate() {
        let k = top.saturating_sub(i * stride);
        (*d1, *d3) = density_derivatives(a, ab, nd.x[k], g);
    }
    // Step `i` (from n_{i+1} up to n_i) into `tail[i + 1]`; the last may be shorter.
    let w = em_weights(stride as f64 * STEP);
    for i in 0..m {
        tail[i + 1] = em_cell(w, (g[i + 1], d1[i + 1], d3[i + 1]), (g[i], d1[i], d3[i]));
    }
    let last_steps = top.saturating_sub((m - 1) * stride) - top.saturating_sub(m * stride);
    if last_steps != stride {
        let i = m - 1;
        tail[m] = cell_integral(
            last_steps as f64 * STEP,
            (g[m], d1[m], d3[m]),
            (g[i], d1[i], d3[i]),
        );
    }
    tail[0] = shape.tail_above(top);
    for i in 1..=m {
        tail[i] += tail[i - 1];
    }
    let end = from + out.len();
    for (i, &t) in tail.iter().enumerate().skip(1) {
        let k = top.saturating_sub(i * stride);
        if k >= from && k < end {
            out[k - from] = (1.0 - t).max(0.0);
        }
    }
    // Points inside the steps ([`cdf_inside`]). The steps wholly inside
    // `from..end` (all but the last, and any reaching above `end`) position by position
    // across them; the others one point at a time.
    let h = stride as f64 * STEP;
    let inside = top.saturating_sub(end).div_ceil(stride).min(m - 1)..m - 1;
    for j in 1..stride {
        let w = &HERMITE_BASES[stride][j];
        for i in inside.clone() {
            let (lower, upper) = ((tail[i + 1], g[i + 1], d1[i + 1]), (tail[i], g[i], d1[i]));
            out[top - (i + 1) * stride + j - from] = cdf_inside(w, h, lower, upper);
        }
    }
    for i in (0..inside.start).chain(m - 1..m) {
        let (k0, k1) = (top.saturating_sub((i + 1) * stride), top - i * stride);
        let h = (k1 - k0) as f64 * STEP;
        let basis = &HERMITE_BASES[k1 - k0];
        let (lower, upper) = ((tail[i + 1], g[i + 1], d1[i + 1]), (tail[i], g[i], d1[i]));
        for k in (k0 + 1).max(from)..k1.min(end) {
            out[k - from] = cdf_inside(&basis[k - k0], h, lower, upper);
        }
    }
}

/// F at a point inside an integration step of width `h` in `u`, by quintic Hermite of the tail
/// T = 1 − F (T' = −g, T'' = −g', scaled to t ∈ [0, 1]; basis weights `w` of
/// [`hermite_basis`]) from `(T, g, g')` at the step's lower and upper ends, the tail clamped to
/// the step's ends.
#[inline(always)]
fn cdf_inside(w: &[f64; 6], h: f64, lower: (f64, f64, f64), upper: (f64, f64, f64)) -> f64 {
    let ((t0, g0, s0), (t1, g1, s1)) = (lower, upper);
    let t = w[0] * t0 - h * (w[1] * g0 + w[4] * g1) - h * h * (w[2] * s0 + w[3] * s1) + w[5] * t1;
    // (`max` then `min`, not `clamp`: clamp's check that t1 ≤ t0 is a branch that keeps the
    // loops over lanes scalar.)
    1.0 - t.max(t1).min(t0)
}

/// [`hermite_basis`] for every step count up to the largest stride, computed at compile time.
static HERMITE_BASES: [[[f64; 6]; MAX_STRIDE + 1]; MAX_STRIDE + 1] = {
    let mut all = [[[0.0; 6]; MAX_STRIDE + 1]; MAX_STRIDE + 1];
    let mut steps = 0;
    while steps <= MAX_STRIDE {
        all[steps] = hermite_basis(steps);
        steps += 1;
    }
    all
};

/// Quintic Hermite basis weights at `t = i / steps`, `i = 0..=steps`, in the order
/// (value 0, slope 0, curvature 0, curvature 1, slope 1, value 1).
const fn hermite_basis(steps: usize) -> [[f64; 6]; MAX_STRIDE + 1] {
    let mut w = [[0.0; 6]; MAX_STRIDE + 1];
    let denominator = if steps == 0 { 1.0 } else { steps as f64 };
    let mut i = 0;
    while i <= steps && i <= MAX_STRIDE {
        let t = i as f64 / denominator;
        let (t2, t3) = (t * t, t * t * t);
        let (t4, t5) = (t3 * t, t3 * t2);
        w[i] = [
            1.0 - 10.0 * t3 + 15.0 * t4 - 6.0 * t5,
            t - 6.0 * t3 + 8.0 * t4 - 3.0 * t5,
            0.5 * (t2 - 3.0 * t3 + 3.0 * t4 - t5),
            0.5 * (t3 - 2.0 * t4 + t5),
            -4.0 * t3 + 7.0 * t4 - 3.0 * t5,
            10.0 * t3 - 15.0 * t4 + 6.0 * t5,
        ];
        i += 1;
    }
    w
}

/// `ln F` of every slot's prior posterior on the grid, and their sum: what a shopper's untouched
/// slots share. Built once per population snapshot (about 168 × 305 density evaluations).
#[derive(Debug, Clone)]
pub struct PriorTable {
    params: Vec<(f64, f64)>,
    /// Σ α over all slots.
    alpha_total: f64,
    /// Row-major: slot `j`'s `ln F` at point `k` is `ln_cdf[j * GRID_POINTS + k]`.
    ln_cdf: Vec<f64>,
    /// The same, point-major (`by_point[k * slots + j]`): a draw reads every slot's increment
    /// over one cell from two contiguous rows.
    by_point: Vec<f64>,
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
        let mut ln_cdf = vec![0.0; params.len() * GRID_POINTS];
        let mut sum = vec![0.0; GRID_POINTS];
        for (row, &(a, b)) in ln_cdf.chunks_mut(GRID_POINTS).zip(&params) {
            Shape::new(a, b, 0).cdf_into(0, row);
            for l in row.iter_mut() {
                *l = l.max(TINY);
            }
            vmath::ln_in_place(row);
            for (l, s) in row.iter().zip(sum.iter_mut()) {
                *s += *l;
            }
        }
        let n = params.len();
        let mut by_point = vec![0.0; ln_cdf.len()];
        for (j, row) in ln_cdf.chunks_exact(GRID_POINTS).enumerate() {
            for (k, &l) in row.iter().enumerate() {
                by_point[k * n + j] = l;
            }
        }
        Self {
            alpha_total: params.iter().map(|p| p.0).sum(),
            params,
            ln_cdf,
            by_point,
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

    fn row(&self, slot: usize) -> &[f64] {
        &self.ln_cdf[slot * GRID_POINTS..(slot + 1) * GRID_POINTS]
    }
}

/// A slot the shopper touched: its posterior, and where its `ln F` over the range is kept.
struct Live {
    shape: Shape,
    /// Wide posteriors keep `ln F` at the coarse points (slot `offset` of `knots`), narrow ones
    /// at every point (slot `offset` of `fine`).
    wide: bool,
    /// Wide and taking one integration step per coarse interval ([`FULL_STRIDE_STEPS`]).
    full_steps: bool,
    /// Narrow: the group of `fine` it is in (its integration step spans `group + 1` points).
    group: u8,
    offset: usize,
}

/// `ln F` and its first two `u`-derivatives at the coarse points for the wide touched slots, in
/// rows by coarse point (see [`Knots::at`]).
struct Knots {
    /// Slots.
    n: usize,
    /// Values per section of a row: `n` rounded up to whole vectors (the extra lanes repeat
    /// the last slot and are never read).
    lanes: usize,
    /// Coarse points (rows).
    rows: usize,
    /// One row per coarse point, the last point first (the order they are integrated in): `n`
    /// values of `ln F`, then `n` of `d ln F/du`, then `n` of `d² ln F/du²`.
    v: Vec<f64>,
}

impl Knots {
    /// Offset of coarse point `c`'s row.
    fn row_start(&self, c: usize) -> usize {
        (self.rows - 1 - c) * 3 * self.lanes
    }

    /// Slot `i`'s knot at coarse point `c`: rows run from the last coarse point down, each with
    /// `lanes` values of `ln F`, then of `d ln F/du`, then of `d² ln F/du²`.
    fn at(&self, c: usize, i: usize) -> Knot {
        let j = self.row_start(c) + i;
        [
            self.v[j],
            self.v[j + self.lanes],
            self.v[j + 2 * self.lanes],
        ]
    }

    /// `(ln F, d ln F/du, d² ln F/du²)` of every slot at coarse point `c`.
    fn row(&self, c: usize) -> (&[f64], &[f64], &[f64]) {
        let row = &self.v[self.row_start(c)..][..3 * self.lanes];
        let (l, rest) = row.split_at(self.lanes);
        let (d1, d2) = rest.split_at(self.lanes);
        (&l[..self.n], &d1[..self.n], &d2[..self.n])
    }
}

/// `F` of the narrow touched slots at every point of the range, in rows by point. (Their
/// logarithms are taken of each row's product, and of single values where the draw and the
/// propensity read them.)
struct Fine {
    /// Slots.
    n: usize,
    /// Values per row: `n` rounded up to whole vectors, or 1 for a group of one (the extra lanes
    /// are never read).
    lanes: usize,
    /// The range's first point (row 0).
    lo: usize,
    v: Vec<f64>,
}

impl Fine {
    /// Slot `i`'s `ln F` at point `k`.
    fn ln_at(&self, k: usize, i: usize) -> f64 {
        vmath::ln(self.v[(k - self.lo) * self.lanes + i].max(TINY))
    }
}

const UNTOUCHED: u8 = u8::MAX;

/// The distribution of the best slot for one shopper: build once per decision, then
/// [`sample`](Self::sample) and [`probability`](Self::probability).
pub struct SlotMax<'a> {
    table: &'a PriorTable,
    eligible: &'a [usize],
    /// Index into `live` of each slot, or [`UNTOUCHED`].
    live_of: [u8; MAX_SLOTS],
    live: Vec<Live>,
    /// The slot of each `live` entry.
    touched: Vec<usize>,
    /// Coarse points: `lo`, `lo + COARSE`, …, and `hi`.
    coarse: Vec<usize>,
    /// `(ln F, d ln F/du, d² ln F/du²)` of wide touched slots at the coarse points.
    knots: Knots,
    /// `F` of narrow touched slots at points `lo..=hi`, by the points their integration steps
    /// span (1, 2, 3).
    fine: [Fine; FINE_GROUPS],
    lo: usize,
    hi: usize,
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
        build(table, h, shopper, now_ms, eligible)
    }

    /// ln F of `slot` at grid point `k` (in `lo..=hi`).
    fn ln_cdf(&self, slot: usize, k: usize) -> f64 {
        match self.live_of[slot] {
            UNTOUCHED => self.table.ln_cdf[slot * GRID_POINTS + k],
            i => {
                let l = &self.live[i as usize];
                if l.wide {
                    let knots = &self.knots;
                    interpolate(&self.coarse, k, |c| knots.at(c, l.offset))
                } else {
                    self.fine[l.group as usize].ln_at(k, l.offset)
                }
            }
        }
    }

    /// `Δ ln F_slot` of a touched slot over cell `c` (from point `c` to `c + 1`); `c == hi` is
    /// the cell from the top point to x = 1.
    fn touched_increment(&self, slot: usize, c: usize) -> f64 {
        let l = &self.live[self.live_of[slot] as usize];
        if c == self.hi {
            -self.ln_cdf(slot, c)
        } else if l.wide {
            let knots = &self.knots;
            interpolate_step(&self.coarse, c, |k| knots.at(k, l.offset))
        } else {
            self.ln_cdf(slot, c + 1) - self.ln_cdf(slot, c)
        }
    }

    /// Probability mass of the maximum in cell `c`.
    fn cell_mass(&self, c: usize) -> f64 {
        let i = c - self.lo;
        let upper = if c == self.hi { 1.0 } else { self.m[i + 1] };
        (upper - self.m[i]).max(0.0)
    }

    fn alpha(&self, slot: usize) -> f64 {
        match self.live_of[slot] {
            UNTOUCHED => self.table.params[slot].0,
            i => self.live[i as usize].shape.a,
        }
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
        let i = self.m.partition_point(|&m| m <= u) - 1;
        let c = self.lo + i;
        // Every slot's increment over the cell as if untouched, from two contiguous rows of the
        // point-major table; then the touched slots' own.
        let n = self.table.slots();
        let at = |k: usize| &self.table.by_point[k * n..(k + 1) * n];
        let mut steps = [0.0; MAX_SLOTS];
        let steps = &mut steps[..n];
        if c == self.hi {
            for (s, &l) in steps.iter_mut().zip(at(c)) {
                *s = -l;
            }
        } else {
            for ((s, &l0), &l1) in steps.iter_mut().zip(at(c)).zip(at(c + 1)) {
                *s = l1 - l0;
            }
        }
        let wide = self.wide_steps(c);
        for (l, &j) in self.live.iter().zip(&self.touched) {
            steps[j] = if l.wide && !wide.is_empty() {
                wide[l.offset]
            } else {
                self.touched_increment(j, c)
            };
        }
        if self.eligible.len() < n {
            return pick(self.eligible, |j| steps[j].max(0.0), v);
        }
        // Every slot eligible: the weights are the array itself, by slot.
        for s in steps.iter_mut() {
            *s = s.max(0.0);
        }
        pick_index(steps, v).unwrap_or(0)
    }

    /// `Δ ln F` over cell `c` (below `hi`) of every wide touched slot, by slot offset: one
    /// Hermite difference each, computed across the slots together (as `interpolate_step`).
    fn wide_steps(&self, c: usize) -> Vec<f64> {
        let knots = &self.knots;
        if knots.n == 0 || c >= self.hi {
            return Vec::new();
        }
        let coarse = &self.coarse;
        let cc = ((c - coarse[0]) / COARSE).min(coarse.len() - 2);
        let (k0, k1) = (coarse[cc], coarse[cc + 1]);
        let bases = &HERMITE_BASES[k1 - k0];
        let (w0, w1) = (&bases[c - k0], &bases[c + 1 - k0]);
        let w: [f64; 6] = std::array::from_fn(|i| w1[i] - w0[i]);
        let h = (k1 - k0) as f64 * STEP;
        let (p0, p1, p2) = knots.row(cc);
        let (q0, q1, q2) = knots.row(cc + 1);
        let p = p0.iter().zip(p1).zip(p2);
        let q = q0.iter().zip(q1).zip(q2);
        p.zip(q)
            .map(|(((p0, p1), p2), ((q0, q1), q2))| {
                w[0] * p0
                    + h * (w[1] * p1 + w[4] * q1)
                    + h * h * (w[2] * p2 + w[3] * q2)
                    + w[5] * q0
            })
            .collect()
    }

    /// Probability that [`sample`](Self::sample) returns `slot` (floored at
    /// [`MIN_PROPENSITY`] for eligible slots; 0 for others).
    pub fn probability(&self, slot: usize) -> f64 {
        if !self.eligible.contains(&slot) {
            return 0.0;
        }
        if self.eligible.len() == 1 {
            return 1.0;
        }
        let mut p = self.m[0] * self.alpha(slot) / self.alpha_sum;
        // The increments `sample` draws by, from this slot's `ln F` over the range.
        let ln_f: Vec<f64> = match self.live_of[slot] {
            UNTOUCHED => self.table.row(slot)[self.lo..=self.hi].to_vec(),
            i if self.live[i as usize].wide => {
                let l = &self.live[i as usize];
                let knots = &self.knots;
                let mut v = vec![0.0; self.hi - self.lo + 1];
                add_interpolated(&self.coarse, |c| knots.at(c, l.offset), &mut v);
                v
            }
            _ => (self.lo..=self.hi).map(|k| self.ln_cdf(slot, k)).collect(),
        };
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

/// [`SlotMax::new`], compiled also for AVX2 and picked at run time (its loops run over slots and
/// grid points and vectorize).
#[cfg_attr(
    not(feature = "baseline-only"),
    multiversion(targets("x86_64+avx2+fma"))
)]
fn build<'a>(
    table: &'a PriorTable,
    h: &Hierarchy,
    shopper: Option<&ShopperCounts>,
    now_ms: u64,
    eligible: &'a [usize],
) -> SlotMax<'a> {
    let slots = table.slots();
    // (Marked only when some slot is not eligible: usually all are.)
    let all_eligible = eligible.len() == slots;
    let mut is_eligible = [all_eligible; MAX_SLOTS];
    if !all_eligible {
        for &j in eligible {
            is_eligible[j] = true;
        }
    }
    let mut live_of = [UNTOUCHED; MAX_SLOTS];
    let mut live = Vec::with_capacity(shopper.map_or(0, |s| s.slots.len()));
    // The slot of each `live` entry.
    let mut touched = Vec::with_capacity(live.capacity());
    if let Some(s) = shopper {
        let (mut a, mut b) = (
            Vec::with_capacity(s.slots.len()),
            Vec::with_capacity(s.slots.len()),
        );
        for (j, succ, n) in s.decayed(h, now_ms) {
            if j < slots && is_eligible[j] && live_of[j] == UNTOUCHED {
                live_of[j] = touched.len() as u8;
                touched.push(j);
                let (a0, b0) = table.params[j];
                a.push((a0 + succ).max(1e-3));
                b.push((b0 + (n - succ).max(0.0)).max(1e-3));
            }
        }
        let mut lnb = vec![0.0; a.len()];
        vmath::ln_beta_into(&a, &b, &mut lnb);
        live.extend(a.iter().zip(&b).zip(&lnb).map(|((&a, &b), &lnb)| {
            let shape = Shape::with_ln_beta(a, b, lnb);
            let per_step = shape.per_step();
            Live {
                wide: per_step >= WIDE_STEPS,
                full_steps: per_step >= FULL_STRIDE_STEPS,
                group: 0,
                shape,
                offset: 0,
            }
        }));
    }
    // Slots whose prior rows leave the table's sum: ineligible ones and touched ones. Sum
    // whichever side is shorter.
    let n_untouched = eligible.len() - live.len();
    let subtract = slots - n_untouched <= n_untouched;
    let other_rows: Vec<usize> = if subtract && eligible.len() == slots {
        Vec::new()
    } else if subtract {
        (0..slots)
            .filter(|&j| !is_eligible[j] || live_of[j] != UNTOUCHED)
            .collect()
    } else {
        eligible
            .iter()
            .copied()
            .filter(|&j| live_of[j] == UNTOUCHED)
            .collect()
    };
    let rows: &[usize] = if subtract && eligible.len() == slots {
        &touched
    } else {
        &other_rows
    };
    let base_at = |k: usize| -> f64 {
        let sum: f64 = rows
            .iter()
            .map(|&j| table.ln_cdf[j * GRID_POINTS + k])
            .sum();
        if subtract {
            table.sum[k] - sum
        } else {
            sum
        }
    };

    // The range: below `lo` the maximum has mass < 1e-7 (bounded by the untouched product
    // and the lower-tail bounds of the touched slots with the highest means); above `hi`
    // it has mass < 1e-6, shared there in proportion to the slots' tails.
    // The BOUNDING highest means, kept sorted in one pass.
    let mut by_mean: Vec<(f64, &Shape)> = Vec::with_capacity(BOUNDING + 1);
    for l in &live {
        let mean = l.shape.a / (l.shape.a + l.shape.b);
        if by_mean.len() < BOUNDING || mean > by_mean[BOUNDING - 1].0 {
            let at = by_mean.partition_point(|(m, _)| *m >= mean);
            by_mean.insert(at, (mean, &l.shape));
            by_mean.truncate(BOUNDING);
        }
    }
    let bound = |k: usize| base_at(k) + by_mean.iter().map(|(_, s)| s.ln_cdf_bound(k)).sum::<f64>();
    // Searched from where the whole table's sum (one load a point) puts them.
    let lo_guess = first_point(|k| table.sum[k] > LN_BELOW);
    let lo = first_point_from(lo_guess, |k| bound(k) > LN_BELOW).saturating_sub(1);
    let hi_guess = first_point(|k| table.sum[k] >= LN_ABOVE);
    let mut hi = first_point_from(hi_guess, |k| base_at(k) >= LN_ABOVE).max(lo + 1);
    // Settle the touched slots there: most already are (one vectorized check across them,
    // `ln g − ln(−φ') ≤ ln ε` above the mode); the others search upwards.
    let settled: Vec<bool> = {
        let n = nodes();
        let (x, lx, l1x) = (n.x[hi], n.lx[hi], n.l1x[hi]);
        let mut minus_slope: Vec<f64> = live
            .iter()
            .map(|l| (l.shape.a + l.shape.b) * x - l.shape.a)
            .collect();
        let positive: Vec<bool> = minus_slope.iter().map(|&s| s > 0.0).collect();
        for s in &mut minus_slope {
            *s = s.max(TINY);
        }
        vmath::ln_in_place(&mut minus_slope);
        live.iter()
            .zip(&minus_slope)
            .zip(&positive)
            .map(|((l, &ln_s), &positive)| {
                let ln_g = l.shape.a * lx + l.shape.b * l1x - l.shape.lnb;
                positive && ln_g - ln_s <= LN_RANGE_TAIL
            })
            .collect()
    };
    for (l, settled) in live.iter_mut().zip(settled) {
        if settled {
            l.shape.top = hi;
        } else {
            l.shape.settle(hi, LN_RANGE_TAIL);
        }
        hi = hi.max(l.shape.top);
    }
    let hi = hi.min(GRID_POINTS - 1);
    let len = hi - lo + 1;

    let mut ln_m = if subtract {
        table.sum[lo..=hi].to_vec()
    } else {
        vec![0.0; len]
    };
    for &j in rows.iter() {
        let row = &table.row(j)[lo..=hi];
        if subtract {
            ln_m.iter_mut().zip(row).for_each(|(v, l)| *v -= l);
        } else {
            ln_m.iter_mut().zip(row).for_each(|(v, l)| *v += l);
        }
    }
    // Touched slots: wide ones through `ln F` at coarse points, summed and interpolated
    // once (quintic Hermite is linear in its data, so the sum of the slots' interpolants is
    // the interpolant of the sum); narrow ones point by point.
    let mut coarse: Vec<usize> = (lo..hi).step_by(COARSE).collect();
    coarse.push(hi);
    let nc = coarse.len();
    let mut narrow: [Vec<Shape>; FINE_GROUPS] = Default::default();
    // Wide slots, those taking full steps first, integrated together.
    let mut wide = Vec::with_capacity(live.len());
    let mut half = Vec::new();
    for l in &mut live {
        if l.wide {
            if l.full_steps {
                l.offset = wide.len();
                wide.push(l.shape);
            } else {
                l.offset = half.len();
                half.push(l.shape);
            }
        } else {
            // Grouped by the points their own step spans: 1, 2, or 3 and more.
            l.group = (l.shape.plan().0.min(FINE_GROUPS) - 1) as u8;
            let group = &mut narrow[l.group as usize];
            l.offset = group.len();
            group.push(l.shape);
        }
    }
    let full = wide.len();
    for l in live.iter_mut().filter(|l| l.wide && !l.full_steps) {
        l.offset += full;
    }
    wide.extend(half);
    let knots = knots_of_group(&wide, full, &coarse);
    if knots.n > 0 {
        // Σ over the wide slots at each coarse point, then interpolated once per point.
        let mut sum = vec![[0.0; 3]; nc];
        for (c, s) in sum.iter_mut().enumerate() {
            let (ln_f, d1, d2) = knots.row(c);
            *s = [vmath::sum(ln_f), vmath::sum(d1), vmath::sum(d2)];
        }
        add_interpolated(&coarse, |c| sum[c], &mut ln_m);
    }
    let fine: [Fine; FINE_GROUPS] =
        std::array::from_fn(|i| fine_of_group(&narrow[i], lo, hi, i + 1));
    if fine.iter().any(|f| f.n > 0) {
        let mut product = vec![1.0; len];
        for f in fine.iter().filter(|f| f.n > 0) {
            for (p, row) in product.iter_mut().zip(f.v.chunks_exact(f.lanes)) {
                for x in &row[..f.n] {
                    *p *= x;
                }
            }
        }
        for p in &mut product {
            *p = p.max(TINY);
        }
        vmath::ln_in_place(&mut product);
        for (lm, p) in ln_m.iter_mut().zip(&product) {
            *lm += p;
        }
    }
    let mut m = ln_m.clone();
    vmath::exp_in_place(&mut m);
    let alpha_sum = if eligible.len() == slots {
        let touched_delta: f64 = live
            .iter()
            .zip(&touched)
            .map(|(l, &j)| l.shape.a - table.params[j].0)
            .sum();
        table.alpha_total + touched_delta
    } else {
        eligible
            .iter()
            .map(|&j| match live_of[j] {
                UNTOUCHED => table.params[j].0,
                i => live[i as usize].shape.a,
            })
            .sum()
    };
    SlotMax {
        table,
        eligible,
        live_of,
        live,
        touched,
        coarse,
        knots,
        fine,
        lo,
        hi,
        ln_m,
        m,
        alpha_sum,
    }
}

/// `ln F` and its first two `u`-derivatives at the `coarse` points for every shape of a group
/// of wide posteriors (each settled at or below the last coarse point). The first `full` take
/// one integration step per coarse interval, the others two (half steps; see
/// [`FULL_STRIDE_STEPS`]). The shapes are integrated together, one node at a time down from the
/// last coarse point, so the loops run across shapes and vectorize; the tail above the start is
/// the exact one for rates near 1, else `g / (|φ'| + φ''/φ')` (integration by parts, tiny
/// there).
#[cfg_attr(
    not(feature = "baseline-only"),
    multiversion(targets("x86_64+avx2+fma"))
)]
fn knots_of_group(shapes: &[Shape], full: usize, coarse: &[usize]) -> Knots {
    let real = shapes.len();
    let nc = coarse.len();
    let Some(&last) = shapes.last() else {
        return Knots {
            n: 0,
            lanes: 0,
            rows: nc,
            v: Vec::new(),
        };
    };
    // Whole vectors of four lanes, the extra ones repeating the last shape (in its group), so
    // that no loop ends in a scalar remainder.
    let (padded, mut scratch) = lanes(shapes, last);
    let n = padded.len();
    let full = if full == real { n } else { full };
    let shapes = &padded[..];
    let nd = nodes();
    // The rows are pushed as they are integrated (no zeroing).
    let mut v = Vec::with_capacity(3 * n * nc);
    let (a, ab, lnb, tail, g, up0, up1, up3, lo1, lo3) = rows(&mut scratch, n);
    // (Loops over zipped slices, without indexing, so that they vectorize; helpers are inlined
    // functions, not closures, so that they are compiled for the multiversioned target.)
    let params = (a, ab, lnb);
    let step = em_step;
    // F, g and g' at the next coarse point (down from the last), for `finish`.
    #[inline(always)]
    fn record(tail: &[f64], g: &[f64], d1: &[f64], v: &mut Vec<f64>) {
        v.extend(tail.iter().map(|t| 1.0 - t));
        v.extend_from_slice(g);
        v.extend_from_slice(d1);
    }
    let top = coarse[nc - 1];
    terms_at(nd, params, top, 0..n, up0, up1, up3);
    start_tails(shapes, nd.x[top], up0, ab, tail);
    record(tail, up0, up1, &mut v);
    let half = COARSE / 2;
    let mut k1 = top;
    for c in (0..nc - 1).rev() {
        let k0 = coarse[c];
        // The half-step shapes first stop midway when the interval is longer than a half step.
        let mut k_half = k1;
        if k1 - k0 > half && full < n {
            let mid = k1 - half;
            terms_at(nd, params, mid, full..n, g, lo1, lo3);
            step(half, full..n, tail, [up0, up1, up3], g, lo1, lo3);
            k_half = mid;
        }
        terms_at(nd, params, k0, 0..n, g, lo1, lo3);
        step(k1 - k0, 0..full, tail, [up0, up1, up3], g, lo1, lo3);
        step(k_half - k0, full..n, tail, [up0, up1, up3], g, lo1, lo3);
        record(tail, up0, up1, &mut v);
        k1 = k0;
    }
    for (r, row) in v.chunks_mut(3 * n).enumerate() {
        finish(row, g, shapes, coarse[nc - 1 - r]);
    }
    Knots {
        n: real,
        lanes: n,
        rows: nc,
        v,
    }
}

/// `F` at every grid point `lo..=hi` of narrow touched posteriors (each settled at or below
/// `hi`). They are integrated together, `stride` grid points per step down from `hi` (the tail
/// above it as in [`knots_of_group`]; the points inside a step by quintic Hermite of the tail,
/// as in [`Shape::cdf_into`]), so the loops run across shapes and vectorize; the few too
/// narrow for one step per point (hundreds of trials) are then redone one at a time with
/// sub-steps ([`Shape::cdf_into`]).
#[cfg_attr(
    not(feature = "baseline-only"),
    multiversion(targets("x86_64+avx2+fma"))
)]
fn fine_of_group(shapes: &[Shape], lo: usize, hi: usize, stride: usize) -> Fine {
    let real = shapes.len();
    let len = hi - lo + 1;
    let last = match shapes {
        [] => {
            return Fine {
                n: 0,
                lanes: 0,
                lo,
                v: Vec::new(),
            }
        }
        // One alone costs less without the padding.
        [one] => {
            let mut v = vec![0.0; len];
            one.cdf_into(lo, &mut v);
            return Fine {
                n: 1,
                lanes: 1,
                lo,
                v,
            };
        }
        [.., last] => *last,
    };
    let (padded, mut scratch) = lanes(shapes, last);
    let n = padded.len();
    let shapes = &padded[..];
    let nd = nodes();
    let mut v = vec![0.0; len * n];
    let (a, ab, lnb, tail, g, up0, up1, up3, lo1, lo3) = rows(&mut scratch, n);
    let params = (a, ab, lnb);
    terms_at(nd, params, hi, 0..n, up0, up1, up3);
    start_tails(shapes, nd.x[hi], up0, ab, tail);
    #[inline(always)]
    fn write(row: &mut [f64], tail: &[f64]) {
        for (f, t) in row.iter_mut().zip(tail) {
            *f = (1.0 - t).max(0.0);
        }
    }
    write(&mut v[(hi - lo) * n..], tail);
    // The upper end's tail, density and slope, kept for the points inside a step.
    let mut before = vec![0.0; 3 * n];
    let mut k1 = hi;
    while k1 > lo {
        let k0 = k1 - stride.min(k1 - lo);
        let steps = k1 - k0;
        terms_at(nd, params, k0, 0..n, g, lo1, lo3);
        if steps > 1 {
            before[..n].copy_from_slice(tail);
            before[n..2 * n].copy_from_slice(up0);
            before[2 * n..].copy_from_slice(up1);
        }
        em_step(steps, 0..n, tail, [up0, up1, up3], g, lo1, lo3);
        // The points inside ([`cdf_inside`]).
        let h = steps as f64 * STEP;
        for k in k0 + 1..k1 {
            let w = &HERMITE_BASES[steps][k - k0];
            let (t1, rest) = before.split_at(n);
            let (g1, d1) = rest.split_at(n);
            let row = &mut v[(k - lo) * n..][..n];
            let ends = tail.iter().zip(&*up0).zip(&*up1);
            let upper = t1.iter().zip(g1).zip(d1);
            for ((f, ((&t0, &g0), &s0)), ((&t1, &g1), &s1)) in row.iter_mut().zip(ends).zip(upper) {
                *f = cdf_inside(w, h, (t0, g0, s0), (t1, g1, s1)).max(0.0);
            }
        }
        write(&mut v[(k0 - lo) * n..], tail);
        k1 = k0;
    }
    let mut column = Vec::new();
    for (i, s) in shapes[..real].iter().enumerate() {
        if s.plan().1 > 1 {
            column.resize(len, 0.0);
            s.cdf_into(lo, &mut column);
            for (row, &f) in v.chunks_exact_mut(n).zip(&column) {
                row[i] = f;
            }
        }
    }
    Fine {
        n: real,
        lanes: n,
        lo,
        v,
    }
}

/// A group's shapes padded to whole vectors of [`LANES`] (the extra lanes repeat `last`, so that
/// no loop ends in a scalar remainder), and the scratch of their integration (see [`rows`]).
#[inline(always)]
fn lanes(shapes: &[Shape], last: Shape) -> (Vec<Shape>, Vec<f64>) {
    let n = shapes.len().next_multiple_of(LANES);
    let mut padded = Vec::with_capacity(n);
    padded.extend_from_slice(shapes);
    padded.resize(n, last);
    let mut scratch: Vec<f64> = padded.iter().map(|s| s.a).collect();
    scratch.extend(padded.iter().map(|s| s.a + s.b));
    scratch.extend(padded.iter().map(|s| s.lnb));
    scratch.resize(10 * n, 0.0);
    (padded, scratch)
}

/// The scratch of [`lanes`] as rows of `n` values: the shapes' `α`, `α + β` and `ln B`, their
/// tails, and the density with its first and third derivatives at a step's lower end (`g`,
/// `lo1`, `lo3`) and upper end (`up0`, `up1`, `up3`), in that order.
type Rows<'a> = (
    &'a [f64],
    &'a [f64],
    &'a [f64],
    &'a mut [f64],
    &'a mut [f64],
    &'a mut [f64],
    &'a mut [f64],
    &'a mut [f64],
    &'a mut [f64],
    &'a mut [f64],
);

#[inline(always)]
fn rows(scratch: &mut [f64], n: usize) -> Rows<'_> {
    let (a, rest) = scratch.split_at_mut(n);
    let (ab, rest) = rest.split_at_mut(n);
    let (lnb, rest) = rest.split_at_mut(n);
    let (tail, rest) = rest.split_at_mut(n);
    let (g, rest) = rest.split_at_mut(n);
    let (up0, rest) = rest.split_at_mut(n);
    let (up1, rest) = rest.split_at_mut(n);
    let (up3, rest) = rest.split_at_mut(n);
    let (lo1, lo3) = rest.split_at_mut(n);
    (a, ab, lnb, tail, g, up0, up1, up3, lo1, lo3)
}

/// One Euler–Maclaurin step of width `steps` grid points for shapes `r`, from the terms in
/// `up*` (upper end) to those in `g`, `lo*` (lower end), which become the new upper end; the
/// step's integral is added to `tail`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn em_step(
    steps: usize,
    r: Range<usize>,
    tail: &mut [f64],
    up: [&mut [f64]; 3],
    g: &[f64],
    lo1: &[f64],
    lo3: &[f64],
) {
    let w = em_weights(steps as f64 * STEP);
    let [up0, up1, up3] = up;
    // (Indexed over slices cut to one length, which vectorizes; a zip of six did not.)
    let tail = &mut tail[r.clone()];
    let n = tail.len();
    let (u0, u1, u3) = (
        &mut up0[r.clone()],
        &mut up1[r.clone()],
        &mut up3[r.clone()],
    );
    let (u0, u1, u3) = (&mut u0[..n], &mut u1[..n], &mut u3[..n]);
    let (l0, l1, l3) = (&g[r.clone()][..n], &lo1[r.clone()][..n], &lo3[r][..n]);
    for i in 0..n {
        tail[i] += em_cell(w, (l0[i], l1[i], l3[i]), (u0[i], u1[i], u3[i]));
        (u0[i], u1[i], u3[i]) = (l0[i], l1[i], l3[i]);
    }
}

/// Each shape's upper tail above the point at `x`, from its density `g` there: the exact tail
/// kept for rates near 1, else integration by parts ([`tail_by_parts`]; tiny where the shapes
/// are settled).
#[inline(always)]
fn start_tails(shapes: &[Shape], x: f64, g: &[f64], ab: &[f64], tail: &mut [f64]) {
    for (((t, s), &g), &ab) in tail.iter_mut().zip(shapes).zip(g).zip(ab) {
        let slope = s.a - ab * x;
        let curvature = -ab * x * (1.0 - x);
        *t = if s.tail > 0.0 || slope >= 0.0 {
            s.tail
        } else {
            tail_by_parts(g, slope, curvature)
        };
    }
}

/// The density at node `k` and its first and third derivatives in `u` into `g`, `d1`, `d3`, for
/// the shapes `r` of `(α, α + β, ln B)`.
#[inline(always)]
fn terms_at(
    nd: &Nodes,
    (a, ab, lnb): (&[f64], &[f64], &[f64]),
    k: usize,
    r: Range<usize>,
    g: &mut [f64],
    d1: &mut [f64],
    d3: &mut [f64],
) {
    let (lx, l1x, x) = (nd.lx[k], nd.l1x[k], nd.x[k]);
    let (a, ab, lnb) = (&a[r.clone()], &ab[r.clone()], &lnb[r.clone()]);
    let g = &mut g[r.clone()];
    for ((g, (&a, &ab)), &lnb) in g.iter_mut().zip(a.iter().zip(ab)).zip(lnb) {
        *g = a * lx + (ab - a) * l1x - lnb;
    }
    vmath::exp_in_place(g);
    let lanes = d1[r.clone()].iter_mut().zip(d3[r].iter_mut()).zip(&*g);
    for (((d1, d3), &g), (&a, &ab)) in lanes.zip(a.iter().zip(ab)) {
        (*d1, *d3) = density_derivatives(a, ab, x, g);
    }
}

/// Turn the recorded `(F, g, g')` of every slot at coarse point `k0` (one row: `n` of each) into
/// `(ln F, g/F, g'/F − (g/F)²)`: the derivatives of `ln F`. Deep in the lower tail, where
/// `F = 1 − tail` has lost its digits (the maximum has mass < 1e-6 there), integrate by parts
/// instead: F ≈ g/φ' · (1 + φ''/φ'²). `f` is scratch of `n` values.
#[inline(always)]
fn finish(row: &mut [f64], f: &mut [f64], shapes: &[Shape], k0: usize) {
    let n = shapes.len();
    let (ln_f, rest) = row.split_at_mut(n);
    let (d1, d2) = rest.split_at_mut(n);
    f.copy_from_slice(ln_f);
    for l in ln_f.iter_mut() {
        *l = l.max(TINY);
    }
    vmath::ln_in_place(ln_f);
    for ((&f, g), g1) in f.iter().zip(d1.iter_mut()).zip(d2.iter_mut()) {
        let inv = 1.0 / f;
        let l1 = *g * inv;
        (*g, *g1) = (l1, *g1 * inv - l1 * l1);
    }
    // (Checked in one pass that vectorizes: the deep tail is rare.)
    if f.iter().fold(false, |deep, &f| deep | (f <= 1e-6)) {
        deep_tail([ln_f, d1, d2], f, shapes, k0);
    }
}

/// [`finish`] for knots deep in the lower tail (`F ≤ 1e-6`).
fn deep_tail([ln_f, d1, d2]: [&mut [f64]; 3], f: &[f64], shapes: &[Shape], k0: usize) {
    let x = nodes().x[k0];
    for (j, (&f, s)) in f.iter().zip(shapes).enumerate() {
        if f > 1e-6 {
            continue;
        }
        let slope = s.a - (s.a + s.b) * x;
        let curvature = -(s.a + s.b) * x * (1.0 - x);
        (d1[j], d2[j]) = if slope * slope > -4.0 * curvature {
            ln_f[j] = s.ln_density(k0) - slope.ln() + (curvature / (slope * slope)).ln_1p();
            (slope, curvature)
        } else {
            (0.0, 0.0)
        };
    }
}

/// `ln F` at grid point `k` from its values and first two `u`-derivatives at the coarse points
/// (`knot(c)` at `coarse[c] ≤ k ≤ coarse[c + 1]`), by quintic Hermite interpolation.
fn interpolate(coarse: &[usize], k: usize, knot: impl Fn(usize) -> Knot) -> f64 {
    let c = ((k - coarse[0]) / COARSE).min(coarse.len() - 2);
    let (k0, k1) = (coarse[c], coarse[c + 1]);
    let w = &HERMITE_BASES[k1 - k0][k - k0];
    let h = (k1 - k0) as f64 * STEP;
    let (p, q) = (knot(c), knot(c + 1));
    w[0] * p[0]
        + h * (w[1] * p[1] + w[4] * q[1])
        + h * h * (w[2] * p[2] + w[3] * q[2])
        + w[5] * q[0]
}

/// `ln F(k + 1) − ln F(k)` of the interpolant of [`interpolate`] (`k < coarse.last()`), by
/// the difference of the Hermite weights at the two points.
fn interpolate_step(coarse: &[usize], k: usize, knot: impl Fn(usize) -> Knot) -> f64 {
    let c = ((k - coarse[0]) / COARSE).min(coarse.len() - 2);
    let (k0, k1) = (coarse[c], coarse[c + 1]);
    let bases = &HERMITE_BASES[k1 - k0];
    let (w0, w1) = (&bases[k - k0], &bases[k + 1 - k0]);
    let w = |i: usize| w1[i] - w0[i];
    let h = (k1 - k0) as f64 * STEP;
    let (p, q) = (knot(c), knot(c + 1));
    w(0) * p[0]
        + h * (w(1) * p[1] + w(4) * q[1])
        + h * h * (w(2) * p[2] + w(3) * q[2])
        + w(5) * q[0]
}

/// `out[k − coarse[0]] += interpolate(coarse, k, knot)` for every point of the coarse range,
/// one coarse interval at a time.
fn add_interpolated(coarse: &[usize], knot: impl Fn(usize) -> Knot, out: &mut [f64]) {
    let lo = coarse[0];
    for c in 0..coarse.len() - 1 {
        let (k0, k1) = (coarse[c], coarse[c + 1]);
        let h = (k1 - k0) as f64 * STEP;
        let (p, q) = (knot(c), knot(c + 1));
        // The interpolant's coefficients on the six basis functions.
        let coef = [p[0], h * p[1], h * h * p[2], h * h * q[2], h * q[1], q[0]];
        let last = if c + 2 == coarse.len() { k1 } else { k1 - 1 };
        let bases = &HERMITE_BASES[k1 - k0][..=last - k0];
        for (o, w) in out[k0 - lo..=last - lo].iter_mut().zip(bases) {
            *o += w.iter().zip(&coef).map(|(w, c)| w * c).sum::<f64>();
        }
    }
}

/// First grid point where the monotone predicate holds (`GRID_POINTS - 1` when none does).
fn first_point(pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, GRID_POINTS - 1);
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

/// [`first_point`] by galloping out from `guess`: a few probes when it is close.
fn first_point_from(guess: usize, pred: impl Fn(usize) -> bool) -> usize {
    let last = GRID_POINTS - 1;
    // Bracket (lo, hi]: pred(hi) holds (or hi is the last point), pred(lo) does not.
    let (mut lo, mut hi);
    if pred(guess) {
        hi = guess;
        let mut step = 1;
        loop {
            if hi == 0 {
                return 0;
            }
            let k = hi.saturating_sub(step);
            if pred(k) {
                hi = k;
                step *= 2;
            } else {
                lo = k;
                break;
            }
        }
    } else {
        lo = guess;
        let mut step = 1;
        loop {
            if lo == last {
                return last;
            }
            let k = (lo + step).min(last);
            if pred(k) {
                hi = k;
                break;
            }
            lo = k;
            step *= 2;
        }
    }
    bisect(lo, hi, pred)
}

/// The first point in `(lo, hi]` where the monotone `pred` holds, given it fails at `lo` and
/// holds at `hi`.
fn bisect(mut lo: usize, mut hi: usize, pred: impl Fn(usize) -> bool) -> usize {
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// One of `items` with probability proportional to `weight`, `v` uniform in [0, 1).
fn pick(items: &[usize], weight: impl Fn(usize) -> f64, v: f64) -> usize {
    let mut weights = [0.0; MAX_SLOTS];
    let weights = &mut weights[..items.len()];
    for (w, &j) in weights.iter_mut().zip(items) {
        *w = weight(j);
    }
    pick_index(weights, v).map_or(items[0], |i| items[i])
}

/// The index whose share of `weights` (non-negative) holds `v ∈ [0, 1)` of their sum; `None`
/// when they are all zero.
fn pick_index(weights: &[f64], v: f64) -> Option<usize> {
    let mut target = v * vmath::sum(weights);
    for (i, &w) in weights.iter().enumerate() {
        if target < w {
            return Some(i);
        }
        target -= w;
    }
    // Rounding left a sliver: the last index with weight.
    weights.iter().rposition(|&w| w > 0.0)
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
    fn narrow_and_wide_touched_slots() {
        let table = PriorTable::new(&H, &weekly_means());
        let all: Vec<usize> = (0..168).collect();
        let me = loyal_shopper();
        let max = SlotMax::new(&table, &H, Some(&me), 0, &all);
        let narrow = max.live.iter().filter(|l| !l.wide).count();
        assert!(narrow >= 3, "the three loyal slots are narrow: {narrow}");
        assert!(max.live.len() > narrow, "and some are wide");
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

    #[test]
    fn narrow_groups_match_exact() {
        let n = nodes();
        // Narrow posteriors as touched slots have them, one needing sub-steps (last).
        let shapes: Vec<Shape> = [
            (5.5, 45.0),
            (3.0, 60.0),
            (20.0, 30.0),
            (3.0, 9.0),
            (4.0, 8.0),
            (12.0, 150.0),
            (2.3, 15.7),
            (50.0, 450.0),
        ]
        .iter()
        .map(|&(a, b)| Shape::new(a, b, 0))
        .collect();
        assert!(shapes.iter().all(|s| s.per_step() < WIDE_STEPS));
        assert!(shapes.last().unwrap().plan().1 > 1, "one takes sub-steps");
        let hi = shapes.iter().map(|s| s.top).max().unwrap();
        let lo = 60;
        let mut worst: f64 = 0.0;
        for stride in 1..=FINE_GROUPS {
            // Each in the groups whose steps are no longer than its own, as `build` puts it.
            let fits: Vec<Shape> = shapes
                .iter()
                .filter(|s| s.plan().0 >= stride)
                .copied()
                .collect();
            assert!(fits.len() >= 2, "stride {stride}: {}", fits.len());
            for group in [&fits[..], &fits[..1], &fits[1..]] {
                let fine = fine_of_group(group, lo, hi, stride);
                assert_eq!(fine.n, group.len());
                for (i, s) in group.iter().enumerate() {
                    for k in lo..=hi {
                        let f = fine.v[(k - lo) * fine.lanes + i];
                        let exact = beta_cdf(n.x[k], s.a, s.b);
                        let err = (f - exact).abs();
                        assert!(
                            err < 2e-7,
                            "Beta({}, {}), stride {stride}, at x = {}: {f} vs {exact}",
                            s.a,
                            s.b,
                            n.x[k]
                        );
                        worst = worst.max(err);
                        let ln = fine.ln_at(k, i);
                        assert!((ln - f.max(TINY).ln()).abs() < 1e-12);
                    }
                }
            }
        }
        eprintln!("worst narrow-group CDF error {worst:e}");
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
    fn galloping_search_agrees() {
        for target in [0, 1, 7, 150, 303, 304] {
            for guess in [0, 1, 5, 149, 150, 151, 200, 304] {
                let pred = |k: usize| k >= target;
                assert_eq!(
                    first_point_from(guess, pred),
                    first_point(pred),
                    "{target} {guess}"
                );
            }
        }
        // Never true: the last point, as `first_point` answers.
        assert_eq!(first_point_from(10, |_| false), GRID_POINTS - 1);
    }

    #[test]
    fn log_thresholds() {
        assert_eq!(LN_TAIL_EPS, 1e-12_f64.ln());
        assert_eq!(LN_RANGE_TAIL, 1e-7_f64.ln());
    }

    #[test]
    fn coarse_knots_match_exact() {
        let n = nodes();
        let lo = 60;
        let params = [
            (0.3, 9.7),
            (0.3, 10.7),
            (1.3, 9.7),
            (1.5, 15.0),
            (1.0, 30.0),
            (8.0, 2.0),
            (2.2, 8.8),
            (0.05, 0.05),
        ];
        // Settled as in a decision: tails above the range below e^`LN_RANGE_TAIL`.
        let mut shapes: Vec<Shape> = params
            .iter()
            .map(|&(a, b)| Shape::unsettled(a, b))
            .collect();
        let mut hi = 200;
        for s in &mut shapes {
            s.settle(200, LN_RANGE_TAIL);
            hi = hi.max(s.top);
        }
        let mut coarse: Vec<usize> = (lo..hi).step_by(COARSE).collect();
        coarse.push(hi);
        let nc = coarse.len();
        // All shapes in one group taking half steps, as a decision groups them.
        let together = knots_of_group(&shapes, 0, &coarse);
        let mut worst: f64 = 0.0;
        for (i, (&(a, b), shape)) in params.iter().zip(&shapes).enumerate() {
            assert!(shape.per_step() >= WIDE_STEPS, "Beta({a}, {b}) is wide");
            let stride = if shape.per_step() >= FULL_STRIDE_STEPS {
                COARSE
            } else {
                COARSE / 2
            };
            let full = usize::from(stride == COARSE);
            let knots = knots_of_group(&[*shape], full, &coarse);
            if stride == COARSE / 2 {
                for c in 0..nc {
                    assert_eq!(knots.at(c, 0), together.at(c, i), "Beta({a}, {b}) alone");
                }
            }
            for k in lo..=hi {
                let exact = beta_cdf(n.x[k], a, b);
                let f = interpolate(&coarse, k, |c| knots.at(c, 0)).exp();
                let err = (f - exact).abs();
                assert!(
                    err < 1e-5,
                    "Beta({a}, {b}) at x = {}: {f} vs {exact}",
                    n.x[k]
                );
                worst = worst.max(err);
            }
        }
        assert!(Shape::new(3.0, 40.0, hi).per_step() < WIDE_STEPS);
        eprintln!("worst coarse-knot CDF error {worst:e}");
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
