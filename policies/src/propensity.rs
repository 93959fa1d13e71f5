//! Honest propensities for sampling policies.
//!
//! A Thompson-style policy draws one value per candidate from independent posteriors and serves
//! the argmax. The probability that candidate `i` wins is
//!
//! ```text
//! P_i = ∫ f_i(x) · Π_{j≠i} F_j(x) dx
//! ```
//!
//! with `f_i` the density of `i`'s draw and `F_j` the CDFs of the others. [`max_probability`]
//! evaluates it by Gauss–Legendre quadrature over the chosen candidate's distribution only:
//!
//! 1. The range starts as the chosen distribution's effective support (mean ± 9 standard
//!    deviations, clipped; Student-t draws are integrated in `θ = atan(t/√ν)`, where their
//!    density is bounded). Its lower end is raised to the highest lower end of the others (below
//!    it some `F_j ≈ 0`), then by 6 bisection steps to where `G = Π F_j` exceeds 1e-13. Others
//!    whose support ends below the range have `F_j ≈ 1` there and are skipped.
//! 2. Candidates with identical posteriors (early on most share the prior) are grouped and the
//!    shared CDF is raised to the group's size, so the cost scales with distinct posteriors. When
//!    every other candidate shares the chosen one's posterior the answer is exactly `1/n`.
//! 3. The range is split where `G` reaches 1 (above every other support). Each part is cut into
//!    panels at most 10 spreads wide (standard deviations of the chosen draw in the integration
//!    variable; below that split also of the narrowest other, where `G` rises), at most 4, and
//!    each panel gets 16-point Gauss–Legendre: one rule over a normal's whole ±9 sd support
//!    misses 3e-3 of its mass. The product is abandoned as soon as it is negligible.
//!
//! Beta CDFs come from a per-posterior table (65 knots over the support, cubic Hermite with the
//! exact density as slope; built once per update, error < 2e-4, test `tables_match_exact`),
//! otherwise exact (continued fraction) when `min(α, β) < 10` and Paulson's cube-root normal
//! approximation above (error < 7e-4, test `paulson_is_close_to_exact`). Tables are skipped for
//! parameters in (1, 2) or below 1 (unbounded slope) and under forgetting (posteriors change
//! with the clock). Student-t CDFs (Gaussian Thompson) use the exact incomplete beta.
//!
//! Measured error: against a 4000-interval Simpson reference with exact CDFs
//! (`quadrature_error_against_fine_reference`: 100 arms at a uniform prior, wide vs narrow,
//! narrow vs wide, 60 assorted posteriors) the absolute error is at most 5.6e-7; two normals
//! match the closed form `Φ(Δ/√(σ₀²+σ₁²))` within 1e-6 (`normals_match_closed_form`, down to a
//! 20:1 width ratio). Against 10^6 Monte Carlo draws (`thompson_propensity_matches_monte_carlo`,
//! `gaussian_propensity_matches_monte_carlo`, tests/suite/propensities.rs) every arm agrees
//! within 5 Monte Carlo standard errors + 1e-3, and empirical choice frequencies pass a χ² test
//! against the reported propensities. Priors with `α < 1` or `β < 1` have unbounded densities at
//! 0 or 1 and can be off by about 1e-2. Results are floored at [`MIN_PROPENSITY`] because a
//! served candidate had a positive chance.
//!
//! Cost: one decision evaluates 16 CDFs per panel (one to eight panels, plus about 8 to place
//! the range) per distinct competing posterior (table lookups in the common case); see
//! `benches/benches/policies.rs`.

use std::cell::Cell;
use std::sync::OnceLock;

/// Smallest propensity ever reported: a served candidate had a positive chance, and a zero would
/// make inverse-propensity estimates infinite.
pub const MIN_PROPENSITY: f64 = 1e-9;

const GL_POINTS: usize = 16;
/// Below this the product of the other candidates' CDFs is treated as zero.
const NEGLIGIBLE: f64 = 1e-13;
const BISECTIONS: usize = 6;
const SUPPORT_SDS: f64 = 9.0;
/// Widest panel, in spreads: 16-point Gauss–Legendre integrates a normal density over ±5
/// standard deviations to 1e-7, over ±7 to 8e-5, but over ±9 only to 3e-3.
const PANEL_SDS: f64 = 10.0;
/// Most panels one stretch of the range is cut into.
const MAX_PANELS: usize = 4;

/// A one-dimensional distribution that [`max_probability`] can integrate over.
pub(crate) trait Marginal {
    /// Per-abscissa values shared by every distribution of this type (logs, roots).
    type Node;
    fn node(x: f64) -> Self::Node;
    fn x_of_node(node: &Self::Node) -> f64;
    fn pdf(&self, node: &Self::Node) -> f64;
    fn cdf(&self, node: &Self::Node) -> f64;
    /// An interval holding all but a negligible tail of the mass.
    fn support(&self) -> (f64, f64);
    /// The integration variable for `x`: quadrature runs in a variable where this distribution's
    /// density is smooth and bounded (identity unless overridden).
    fn s_of_x(&self, x: f64) -> f64 {
        x
    }
    /// `x` for integration variable `s`, and `dx/ds`.
    fn x_of_s(&self, s: f64) -> (f64, f64) {
        (s, 1.0)
    }
    /// The spread of this density in the integration variable (its standard deviation there, or
    /// a close stand-in): panels are cut at most [`PANEL_SDS`] of these wide.
    fn s_spread(&self) -> f64;
    /// The spread of this distribution in `x`: where an other candidate's CDF rises, panels are
    /// cut at most [`PANEL_SDS`] of these wide.
    fn x_spread(&self) -> f64 {
        self.s_spread()
    }
}

/// Probability that a draw from `chosen` exceeds draws from all of `others`, each `(dist, count)`
/// standing for `count` independent candidates with that distribution.
pub(crate) fn max_probability<M: Marginal>(chosen: &M, others: &[(M, u32)]) -> f64 {
    let (mut lo, hi) = chosen.support();
    for (m, _) in others {
        lo = lo.max(m.support().0);
    }
    if lo >= hi {
        return 0.0;
    }
    let active: Vec<(&M, u32, f64, f64)> = others
        .iter()
        .filter_map(|(m, c)| {
            let (mlo, mhi) = m.support();
            (mhi > lo).then_some((m, *c, mlo, mhi))
        })
        .collect();
    // G(x) = Π F_j(x)^c_j, multiplied directly (no logs) and abandoned once negligible: the
    // factors are ≤ 1, so the running product only shrinks.
    let g_at = |node: &M::Node| -> f64 {
        let x = M::x_of_node(node);
        let mut prod = 1.0;
        for &(m, c, mlo, mhi) in &active {
            if x >= mhi {
                continue;
            }
            if x <= mlo {
                return 0.0;
            }
            let f = m.cdf(node);
            prod *= if c == 1 { f } else { f.powi(c as i32) };
            if prod < NEGLIGIBLE {
                return 0.0;
            }
        }
        prod
    };
    let g = |x: f64| g_at(&M::node(x));
    if g(hi) < NEGLIGIBLE {
        return 0.0;
    }
    let (mut s_lo, s_hi) = (chosen.s_of_x(lo), chosen.s_of_x(hi));
    if g(lo) < NEGLIGIBLE {
        // G is increasing: move the lower end up to where it stops being negligible, so the
        // nodes sit where the integrand lives (e.g. x^99 for 100 arms at a uniform prior).
        let (mut a, mut b) = (s_lo, s_hi);
        for _ in 0..BISECTIONS {
            let mid = 0.5 * (a + b);
            if g(chosen.x_of_s(mid).0) < NEGLIGIBLE {
                a = mid;
            } else {
                b = mid;
            }
        }
        s_lo = a;
    }
    // Above the others' supports G = 1: integrate that stretch as its own panel so a sharp rise
    // of G (narrow posteriors of others inside a wide chosen one) gets all the nodes of the
    // first panel instead of being straddled by a few.
    let top = active.iter().map(|a| a.3).fold(lo, f64::max);
    let mut panels = [(s_lo, s_hi), (s_hi, s_hi)];
    if top < hi {
        let s_top = chosen.s_of_x(top).max(s_lo);
        panels = [(s_lo, s_top), (s_top, s_hi)];
    }
    // A stretch many spreads wide gets several panels: one 16-point rule over the whole ±9 sd
    // support of a normal misses 3e-3 of its mass. Below `top`, G rises as fast as the
    // narrowest other CDF does, so that spread counts there too.
    let x_lo = chosen.x_of_s(s_lo).0;
    let narrowest = active
        .iter()
        .map(|a| a.0.x_spread())
        .fold(f64::INFINITY, f64::min);
    let rise = (top.min(hi) - x_lo) / (PANEL_SDS * narrowest);
    let panel_width = PANEL_SDS * chosen.s_spread();
    let (xs, ws) = gauss_legendre();
    let mut total = 0.0;
    for (i, (a, b)) in panels.into_iter().enumerate() {
        if b <= a {
            continue;
        }
        let own = (b - a) / panel_width;
        let needed = if i == 0 { own.max(rise) } else { own };
        let cuts = needed.ceil().clamp(1.0, MAX_PANELS as f64);
        let half = 0.5 * (b - a) / cuts;
        for p in 0..cuts as usize {
            let mid = a + half * (2 * p + 1) as f64;
            for (&t, &w) in xs.iter().zip(ws) {
                let (x, jac) = chosen.x_of_s(mid + half * t);
                let node = M::node(x);
                let gx = if x >= top { 1.0 } else { g_at(&node) };
                if gx > 0.0 {
                    total += w * half * jac * chosen.pdf(&node) * gx;
                }
            }
        }
    }
    total.clamp(0.0, 1.0)
}

/// Nodes and weights of Gauss–Legendre quadrature on [-1, 1], computed once (Newton on the
/// Legendre recurrence) rather than typed in.
fn gauss_legendre() -> (&'static [f64], &'static [f64]) {
    static NODES: OnceLock<(Vec<f64>, Vec<f64>)> = OnceLock::new();
    let (x, w) = NODES.get_or_init(|| {
        let n = GL_POINTS;
        let mut xs = vec![0.0; n];
        let mut ws = vec![0.0; n];
        for i in 0..n.div_ceil(2) {
            let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
            let mut pp;
            loop {
                let (mut p1, mut p2) = (1.0, 0.0);
                for j in 0..n {
                    let p3 = p2;
                    p2 = p1;
                    p1 = ((2 * j + 1) as f64 * z * p2 - j as f64 * p3) / (j + 1) as f64;
                }
                pp = n as f64 * (z * p1 - p2) / (z * z - 1.0);
                let z1 = z;
                z = z1 - p1 / pp;
                if (z - z1).abs() < 1e-15 {
                    break;
                }
            }
            xs[i] = -z;
            xs[n - 1 - i] = z;
            ws[i] = 2.0 / ((1.0 - z * z) * pp * pp);
            ws[n - 1 - i] = ws[i];
        }
        (xs, ws)
    });
    (x, w)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7; relative error ~1e-15).
pub(crate) fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Γ(x) = Γ(x + 1) / x keeps the series in its accurate range.
        return ln_gamma(x + 1.0) - x.ln();
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// ln B(a, b).
pub(crate) fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// Regularized incomplete beta I_x(a, b), given ln x, ln(1-x) and ln B(a, b).
pub(crate) fn inc_beta(a: f64, b: f64, x: f64, ln_x: f64, ln_1mx: f64, lnb: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (a * ln_x + b * ln_1mx - lnb).exp();
    // The continued fraction converges fast on the side of the mean it is evaluated on.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-13 {
            break;
        }
    }
    h
}

/// The CDF of Beta(a, b) at `x`: the regularized incomplete beta I_x(a, b).
pub fn beta_cdf(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    inc_beta(a, b, x, x.ln(), (1.0 - x).ln(), ln_beta(a, b))
}

/// Complementary error function (Chebyshev fit, fractional error < 1.2e-7 everywhere).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Standard normal CDF.
pub(crate) fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z * std::f64::consts::FRAC_1_SQRT_2)
}

/// Below this `min(α, β)` the Beta CDF is computed exactly.
const PAULSON_MIN: f64 = 10.0;

/// A Beta CDF tabulated on its effective support for cubic Hermite interpolation (values and
/// densities at 65 knots): a lookup costs a few flops instead of a continued fraction. Built
/// once per posterior change, off the decide path.
#[derive(Debug, Clone)]
pub(crate) struct BetaTable {
    lo: f64,
    hi: f64,
    inv_h: f64,
    /// `(F(x_k), h·f(x_k))` pairs.
    knots: Box<[(f64, f64)]>,
}

const TABLE_INTERVALS: usize = 64;

impl BetaTable {
    /// None when the density or its slope is unbounded at an end (`a` or `b` below 1 or
    /// strictly between 1 and 2), where cubic interpolation would be poor; those stay on the
    /// direct computation.
    pub(crate) fn new(a: f64, b: f64) -> Option<Self> {
        let smooth = |p: f64| p == 1.0 || p >= 2.0;
        if !smooth(a) || !smooth(b) {
            return None;
        }
        let exact = BetaMarginal::exact(a, b);
        let (lo, hi) = exact.support();
        let h = (hi - lo) / TABLE_INTERVALS as f64;
        if h <= 0.0 || !h.is_finite() {
            return None;
        }
        // Two exact CDFs at the ends; in between, the density integrated interval by interval
        // with 3-point Gauss–Legendre (exact to degree 5): ~250 cheap density evaluations
        // instead of 65 continued fractions, which keeps `update` fast.
        let pdf = |x: f64| exact.pdf(&BetaMarginal::node(x));
        const GL3: [(f64, f64); 3] = [
            (-0.774_596_669_241_483_4, 5.0 / 9.0),
            (0.0, 8.0 / 9.0),
            (0.774_596_669_241_483_4, 5.0 / 9.0),
        ];
        let f_lo = exact.cdf(&BetaMarginal::node(lo));
        let f_hi = exact.cdf(&BetaMarginal::node(hi));
        let mut knots: Vec<(f64, f64)> = Vec::with_capacity(TABLE_INTERVALS + 1);
        let mut f = f_lo;
        knots.push((f, h * pdf(lo)));
        for k in 0..TABLE_INTERVALS {
            let mid = lo + h * (k as f64 + 0.5);
            f += 0.5
                * h
                * GL3
                    .iter()
                    .map(|&(t, w)| w * pdf(mid + 0.5 * h * t))
                    .sum::<f64>();
            knots.push((f, h * pdf(lo + h * (k + 1) as f64)));
        }
        // Spread the (tiny) accumulated drift so the last knot is the exact F(hi).
        let drift = f_hi - f;
        for (k, knot) in knots.iter_mut().enumerate() {
            knot.0 = (knot.0 + drift * k as f64 / TABLE_INTERVALS as f64).clamp(0.0, 1.0);
        }
        let knots = knots.into_boxed_slice();
        Some(Self {
            lo,
            hi,
            inv_h: 1.0 / h,
            knots,
        })
    }

    fn cdf(&self, x: f64) -> f64 {
        if x <= self.lo {
            return self.knots[0].0;
        }
        if x >= self.hi {
            return self.knots[TABLE_INTERVALS].0;
        }
        let t = (x - self.lo) * self.inv_h;
        let k = (t as usize).min(TABLE_INTERVALS - 1);
        let u = t - k as f64;
        let ((f0, d0), (f1, d1)) = (self.knots[k], self.knots[k + 1]);
        let (u2, u3) = (u * u, u * u * u);
        let v = (2.0 * u3 - 3.0 * u2 + 1.0) * f0
            + (u3 - 2.0 * u2 + u) * d0
            + (-2.0 * u3 + 3.0 * u2) * f1
            + (u3 - u2) * d1;
        v.clamp(0.0, 1.0)
    }
}

/// A Beta(α, β) posterior draw.
#[derive(Debug, Clone)]
pub(crate) struct BetaMarginal<'a> {
    a: f64,
    b: f64,
    lnb: f64,
    lo: f64,
    hi: f64,
    cdf: BetaCdf<'a>,
}

#[derive(Debug, Clone)]
enum BetaCdf<'a> {
    Exact,
    /// Paulson constants `(cbrt(b/a), 1-2/(9ν2), 1-2/(9ν1), 2/(9ν1), 2/(9ν2))`.
    Paulson([f64; 5]),
    Table(&'a BetaTable),
}

/// Abscissa values shared by every Beta at one point.
pub(crate) struct BetaNode {
    x: f64,
    /// `(ln x, ln(1-x))` and `cbrt(x/(1-x))`, computed on first use: table lookups need
    /// neither.
    logs: Cell<Option<(f64, f64)>>,
    cbrt_odds: Cell<Option<f64>>,
}

impl BetaNode {
    fn logs(&self) -> (f64, f64) {
        if let Some(l) = self.logs.get() {
            return l;
        }
        let l = (self.x.ln(), (-self.x).ln_1p());
        self.logs.set(Some(l));
        l
    }

    fn cbrt_odds(&self) -> f64 {
        if let Some(c) = self.cbrt_odds.get() {
            return c;
        }
        let c = (self.x / (1.0 - self.x)).cbrt();
        self.cbrt_odds.set(Some(c));
        c
    }
}

fn beta_support(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let mean = a / s;
    let sd = (a * b / (s * s * (s + 1.0))).sqrt();
    (
        (mean - SUPPORT_SDS * sd).max(0.0),
        (mean + SUPPORT_SDS * sd).min(1.0),
    )
}

impl<'a> BetaMarginal<'a> {
    /// The CDF exact or, when `min(a, b)` is large, by Paulson's approximation.
    pub(crate) fn new(a: f64, b: f64) -> Self {
        if a.min(b) < PAULSON_MIN {
            return Self::exact(a, b);
        }
        let (n1, n2) = (2.0 * a, 2.0 * b);
        let (lo, hi) = beta_support(a, b);
        Self {
            a,
            b,
            lnb: ln_beta(a, b),
            lo,
            hi,
            cdf: BetaCdf::Paulson([
                (b / a).cbrt(),
                1.0 - 2.0 / (9.0 * n2),
                1.0 - 2.0 / (9.0 * n1),
                2.0 / (9.0 * n1),
                2.0 / (9.0 * n2),
            ]),
        }
    }

    fn exact(a: f64, b: f64) -> Self {
        let (lo, hi) = beta_support(a, b);
        Self {
            a,
            b,
            lnb: ln_beta(a, b),
            lo,
            hi,
            cdf: BetaCdf::Exact,
        }
    }

    /// A CDF read from `table` (built for the same `a`, `b`); no density (not for the chosen arm).
    pub(crate) fn tabulated(a: f64, b: f64, table: &'a BetaTable) -> Self {
        Self {
            a,
            b,
            lnb: f64::NAN,
            lo: table.lo,
            hi: table.hi,
            cdf: BetaCdf::Table(table),
        }
    }

    #[cfg(test)]
    fn cdf_at(&self, x: f64) -> f64 {
        self.cdf(&Self::node(x))
    }
}

impl Marginal for BetaMarginal<'_> {
    type Node = BetaNode;

    fn node(x: f64) -> BetaNode {
        let x = x.clamp(0.0, 1.0);
        BetaNode {
            x,
            logs: Cell::new(None),
            cbrt_odds: Cell::new(None),
        }
    }

    fn x_of_node(n: &BetaNode) -> f64 {
        n.x
    }

    fn pdf(&self, n: &BetaNode) -> f64 {
        if n.x <= 0.0 || n.x >= 1.0 {
            // The density's limit at an end: finite only for a = 1 (at 0) or b = 1 (at 1).
            return if (n.x <= 0.0 && self.a == 1.0) || (n.x >= 1.0 && self.b == 1.0) {
                (-self.lnb).exp()
            } else {
                0.0
            };
        }
        let (ln_x, ln_1mx) = n.logs();
        ((self.a - 1.0) * ln_x + (self.b - 1.0) * ln_1mx - self.lnb).exp()
    }

    fn cdf(&self, n: &BetaNode) -> f64 {
        if n.x <= 0.0 {
            return 0.0;
        }
        if n.x >= 1.0 {
            return 1.0;
        }
        match &self.cdf {
            BetaCdf::Table(t) => t.cdf(n.x),
            BetaCdf::Paulson([r, a2, a1, c1, c2]) => {
                let f3 = r * n.cbrt_odds();
                let z = (a2 * f3 - a1) / (c1 + c2 * f3 * f3).sqrt();
                normal_cdf(z)
            }
            BetaCdf::Exact => {
                let (ln_x, ln_1mx) = n.logs();
                inc_beta(self.a, self.b, n.x, ln_x, ln_1mx, self.lnb)
            }
        }
    }

    fn support(&self) -> (f64, f64) {
        (self.lo, self.hi)
    }

    fn s_spread(&self) -> f64 {
        let s = self.a + self.b;
        (self.a * self.b / (s * s * (s + 1.0))).sqrt()
    }
}

/// A location-scale Student-t draw (the marginal of a Normal-Inverse-Gamma mean), or a normal
/// when `dof` is infinite.
#[derive(Debug, Clone)]
pub(crate) struct StudentMarginal {
    loc: f64,
    scale: f64,
    dof: f64,
    ln_norm: f64,
    lnb: f64,
    lo: f64,
    hi: f64,
}

impl StudentMarginal {
    pub(crate) fn new(loc: f64, scale: f64, dof: f64) -> Self {
        let scale = scale.max(1e-300);
        let (ln_norm, lnb, width) = if dof.is_finite() {
            let lnb = ln_beta(0.5 * dof, 0.5);
            // t tails are heavy: widen the range so the tail beyond it stays below ~1e-6.
            let q = if dof > 2.0 {
                SUPPORT_SDS.max(1e3_f64.powf(2.0 / dof) * 3.0).min(1e4)
            } else {
                1e4
            };
            (-(0.5 * dof.ln() + lnb + scale.ln()), lnb, q)
        } else {
            (
                -(0.5 * (2.0 * std::f64::consts::PI).ln() + scale.ln()),
                0.0,
                SUPPORT_SDS,
            )
        };
        Self {
            loc,
            scale,
            dof,
            ln_norm,
            lnb,
            lo: loc - width * scale,
            hi: loc + width * scale,
        }
    }

    #[cfg(test)]
    fn cdf_at(&self, x: f64) -> f64 {
        self.cdf(&x)
    }
}

impl Marginal for StudentMarginal {
    type Node = f64;

    fn node(x: f64) -> f64 {
        x
    }

    fn x_of_node(x: &f64) -> f64 {
        *x
    }

    fn pdf(&self, x: &f64) -> f64 {
        let t = (x - self.loc) / self.scale;
        if self.dof.is_finite() {
            (self.ln_norm - 0.5 * (self.dof + 1.0) * (t * t / self.dof).ln_1p()).exp()
        } else {
            (self.ln_norm - 0.5 * t * t).exp()
        }
    }

    fn cdf(&self, x: &f64) -> f64 {
        let t = (x - self.loc) / self.scale;
        if !self.dof.is_finite() {
            return normal_cdf(t);
        }
        let v = self.dof;
        let xb = v / (v + t * t);
        let tail = 0.5
            * inc_beta(
                0.5 * v,
                0.5,
                xb,
                xb.ln(),
                (t * t / (v + t * t)).ln(),
                self.lnb,
            );
        if t > 0.0 {
            1.0 - tail
        } else {
            tail
        }
    }

    fn support(&self) -> (f64, f64) {
        (self.lo, self.hi)
    }

    // t = sqrt(ν)·tan(θ) turns the heavy-tailed density into cos^(ν-1)(θ): bounded and smooth,
    // so a few nodes cover tails that a uniform grid in x would miss.
    fn s_of_x(&self, x: f64) -> f64 {
        if self.dof.is_finite() {
            ((x - self.loc) / (self.scale * self.dof.sqrt())).atan()
        } else {
            x
        }
    }

    // In θ the density is cos^(ν-1)(θ) ≈ exp(-(ν-1)θ²/2) near the centre: spread 1/√(ν-1),
    // capped at the whole range (π) for ν near or below 1.
    fn s_spread(&self) -> f64 {
        if self.dof.is_finite() {
            (self.dof - 1.0)
                .max(0.1)
                .sqrt()
                .recip()
                .min(std::f64::consts::PI)
        } else {
            self.scale
        }
    }

    fn x_spread(&self) -> f64 {
        self.scale
    }

    fn x_of_s(&self, s: f64) -> (f64, f64) {
        if self.dof.is_finite() {
            let k = self.scale * self.dof.sqrt();
            let c = s.cos();
            (self.loc + k * s.tan(), k / (c * c))
        } else {
            (s, 1.0)
        }
    }
}

/// Groups candidates with identical parameters `K` and builds one distribution per group with
/// `make` (given the key and the first item's payload `T`): early on most candidates share the
/// prior, so this is usually a handful.
pub(crate) fn group<K: Ord + Copy, T: Copy, M>(
    mut items: Vec<(K, T)>,
    make: impl Fn(K, T) -> M,
) -> Vec<(M, u32)> {
    items.sort_unstable_by_key(|p| p.0);
    let mut out: Vec<(K, T, u32)> = Vec::with_capacity(items.len());
    for (k, t) in items {
        match out.last_mut() {
            Some(last) if last.0 == k => last.2 += 1,
            _ => out.push((k, t, 1)),
        }
    }
    out.into_iter().map(|(k, t, c)| (make(k, t), c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut f = 1.0_f64;
        for n in 1..30 {
            assert!((ln_gamma(n as f64) - f.ln()).abs() < 1e-10, "n={n}");
            f *= n as f64;
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn beta_cdf_closed_forms() {
        // Beta(1, b): 1 - (1-x)^b; Beta(a, 1): x^a.
        for &x in &[0.01, 0.2, 0.5, 0.9] {
            let m = BetaMarginal::new(1.0, 7.0);
            assert!((m.cdf_at(x) - (1.0 - (1.0 - x).powi(7))).abs() < 1e-12);
            let m = BetaMarginal::new(3.5, 1.0);
            assert!((m.cdf_at(x) - x.powf(3.5)).abs() < 1e-12);
        }
    }

    #[test]
    fn paulson_is_close_to_exact() {
        let mut worst = 0.0_f64;
        for &a in &[10.0, 14.0, 30.0, 45.0, 100.0, 700.0, 5000.0] {
            for &b in &[10.0, 25.0, 80.0, 1000.0, 40000.0] {
                let approx = BetaMarginal::new(a, b);
                let lnb = ln_beta(a, b);
                let (lo, hi) = approx.support();
                for i in 0..=200 {
                    let x = lo + (hi - lo) * i as f64 / 200.0;
                    if x <= 0.0 || x >= 1.0 {
                        continue;
                    }
                    let exact = inc_beta(a, b, x, x.ln(), (-x).ln_1p(), lnb);
                    worst = worst.max((approx.cdf_at(x) - exact).abs());
                }
            }
        }
        assert!(worst < 7e-4, "worst {worst}");
    }

    #[test]
    fn tables_match_exact() {
        let mut worst = 0.0_f64;
        for &a in &[1.0, 2.0, 2.5, 3.0, 7.0, 20.0, 150.0] {
            for &b in &[1.0, 2.0, 9.0, 50.0, 400.0, 20000.0] {
                let t = BetaTable::new(a, b).unwrap();
                let exact = BetaMarginal::exact(a, b);
                let (lo, hi) = exact.support();
                for i in 0..=1000 {
                    let x = lo + (hi - lo) * i as f64 / 1000.0;
                    worst = worst.max((t.cdf(x) - exact.cdf_at(x)).abs());
                }
            }
        }
        assert!(worst < 2e-4, "worst {worst}");
        assert!(BetaTable::new(0.5, 3.0).is_none());
        assert!(BetaTable::new(1.5, 3.0).is_none());
    }

    #[test]
    fn normals_match_closed_form() {
        // P(X0 > X1) = Φ((m0 - m1) / √(s0² + s1²)) for independent normals. The first case is
        // the one a 16-point rule over the whole ±9 sd support got wrong by 1.2e-3; the others
        // make one posterior 20× narrower than the other, on either side.
        let cases = [
            (0.106_545, 0.463_739, 0.013_356, 0.387_992),
            (0.0, 1.0, 0.3, 0.05),
            (0.3, 0.05, 0.0, 1.0),
            (0.0, 0.01, 0.02, 0.2),
            (5.0, 2.0, -1.0, 0.1),
        ];
        for (m0, s0, m1, s1) in cases {
            let (a, b) = (
                StudentMarginal::new(m0, s0, f64::INFINITY),
                StudentMarginal::new(m1, s1, f64::INFINITY),
            );
            let exact = normal_cdf((m0 - m1) / s0.hypot(s1));
            let p0 = max_probability(&a, &[(b.clone(), 1)]);
            let p1 = max_probability(&b, &[(a, 1)]);
            assert!(
                (p0 - exact).abs() < 1e-6,
                "{m0} {s0} vs {m1} {s1}: {p0} vs {exact}"
            );
            assert!((p0 + p1 - 1.0).abs() < 1e-6, "{p0} + {p1}");
        }
    }

    #[test]
    fn student_cdf_is_symmetric_and_matches_cauchy() {
        let t = StudentMarginal::new(0.0, 1.0, 1.0);
        for &x in &[-3.0, -0.5, 0.7, 10.0] {
            let cauchy = 0.5 + f64::atan(x) / std::f64::consts::PI;
            assert!((t.cdf_at(x) - cauchy).abs() < 1e-10, "x={x}");
        }
        let t = StudentMarginal::new(2.0, 3.0, 7.0);
        assert!((t.cdf_at(2.0 + 1.3) + t.cdf_at(2.0 - 1.3) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn shared_prior_is_exact() {
        for n in [2u32, 10, 100, 1000] {
            let m = BetaMarginal::new(1.0, 1.0);
            let p = max_probability(&m, &[(BetaMarginal::new(1.0, 1.0), n - 1)]);
            let want = 1.0 / f64::from(n);
            assert!(
                (p - want).abs() < 1e-5 * want.max(0.01),
                "n={n}: {p} vs {want}"
            );
            let m = BetaMarginal::new(3.0, 40.0);
            let p = max_probability(&m, &[(BetaMarginal::new(3.0, 40.0), n - 1)]);
            assert!(
                (p - want).abs() < 2e-3 * want.max(0.01),
                "n={n}: {p} vs {want}"
            );
        }
    }

    /// Reference: composite Simpson with 4000 intervals over the chosen support, exact CDFs.
    fn reference(chosen: (f64, f64), others: &[((f64, f64), u32)]) -> f64 {
        let c = BetaMarginal::exact(chosen.0, chosen.1);
        let os: Vec<(BetaMarginal, u32)> = others
            .iter()
            .map(|&((a, b), n)| (BetaMarginal::exact(a, b), n))
            .collect();
        let (lo, hi) = c.support();
        let m = 4000;
        let h = (hi - lo) / m as f64;
        let f = |x: f64| {
            let node = BetaMarginal::node(x);
            os.iter().fold(c.pdf(&node), |acc, (o, n)| {
                acc * o.cdf(&node).powi(*n as i32)
            })
        };
        let mut sum = f(lo) + f(hi);
        for k in 1..m {
            sum += f(lo + h * k as f64) * if k % 2 == 1 { 4.0 } else { 2.0 };
        }
        sum * h / 3.0
    }

    #[test]
    fn quadrature_error_against_fine_reference() {
        let random: Vec<((f64, f64), u32)> = (0..60)
            .map(|i| ((1.0 + (i % 7) as f64, 10.0 + (i * 7 % 23) as f64), 1))
            .collect();
        type Groups = Vec<((f64, f64), u32)>;
        let cases: Vec<((f64, f64), Groups)> = vec![
            ((1.0, 1.0), vec![((1.0, 1.0), 99)]),
            ((3.0, 12.0), vec![((1.0, 1.0), 40), ((2.0, 30.0), 3)]),
            ((2.0, 3.0), vec![((300.0, 700.0), 5)]),
            ((300.0, 700.0), vec![((2.0, 8.0), 20), ((31.0, 70.0), 2)]),
            ((4.0, 15.0), random.clone()),
            ((7.0, 10.0), random),
        ];
        let mut worst = 0.0_f64;
        for (chosen, others) in &cases {
            let want = reference(*chosen, others);
            let tabs: Vec<Option<BetaTable>> = others
                .iter()
                .map(|&((a, b), _)| BetaTable::new(a, b))
                .collect();
            let ms: Vec<(BetaMarginal, u32)> = others
                .iter()
                .zip(&tabs)
                .map(|(&((a, b), n), t)| match t {
                    Some(t) => (BetaMarginal::tabulated(a, b, t), n),
                    None => (BetaMarginal::new(a, b), n),
                })
                .collect();
            let got = max_probability(&BetaMarginal::new(chosen.0, chosen.1), &ms);
            let err = (got - want).abs();
            assert!(err < 5e-5 + 1e-2 * want, "{chosen:?}: {got} vs {want}");
            worst = worst.max(err);
        }
        eprintln!("worst absolute quadrature error {worst:e}");
    }

    #[test]
    fn probabilities_sum_to_one_for_mixed_posteriors() {
        let params = [
            (1.0, 1.0),
            (2.0, 30.0),
            (12.0, 40.0),
            (300.0, 700.0),
            (50.0, 120.0),
            (0.5 + 4.0, 9.0),
        ];
        let total: f64 = (0..params.len())
            .map(|i| {
                let others: Vec<(BetaMarginal, u32)> = params
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, &(a, b))| (BetaMarginal::new(a, b), 1))
                    .collect();
                max_probability(&BetaMarginal::new(params[i].0, params[i].1), &others)
            })
            .sum();
        assert!((total - 1.0).abs() < 2e-3, "{total}");
    }
}
