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
//! evaluates it by adaptive Gauss–Kronrod quadrature over the chosen candidate's distribution;
//! the method and its measured error are in `docs/propensities.md`. In short:
//!
//! 1. Every distribution has an effective support holding all but [`TAIL`] of its mass on each
//!    side (Beta: mean − (9 + 16/√β)·sd to mean + (9 + 16/√α)·sd, wide enough for the
//!    exponential tail of Beta(1, large); test `supports_hold_all_but_the_tail`).
//! 2. The others are sorted by the upper end of their support, highest first. At a node `x` the
//!    product `G(x) = Π F_j(x)` stops at the first other whose support ends below `x` (all the
//!    rest are 1 there) and is abandoned once negligible.
//! 3. Above the highest other support `G = 1`: that stretch is the chosen candidate's survival
//!    `1 − F_i`, one CDF evaluation. Below it the range starts where `G` stops being negligible
//!    (found by bisection), is cut into panels at most [`PANEL_SDS`] spreads of the chosen
//!    distribution wide, and each panel gets the 15-point Gauss–Kronrod rule; a panel whose
//!    embedded 7-point Gauss result differs by more than [`PANEL_TOL`] is halved (at most
//!    [`MAX_PANELS`] panels), which places nodes where a narrow other makes `G` rise sharply.
//! 4. Candidates with identical posteriors are grouped (the shared CDF raised to the group's
//!    size); when every other candidate shares the chosen one's posterior the answer is `1/n`.
//!
//! CDFs of the others come from per-posterior tables where the policy keeps them (built once per
//! update, not persisted): quintic Hermite interpolation on 65 knots over the effective support,
//! with the exact density and its slope at each knot ([`BetaTable`], and [`StudentTable`] in
//! `u = t/√(ν+t²)`, where the Student-t CDF is a polynomial for even ν). Their error is below
//! 4e-6 (tests `tables_match_exact`, `student_tables_match_exact`). Without a table (forgetting,
//! where posteriors change with the clock, and shapes whose density is not smooth at an end of
//! its support) the Beta CDF is exact (continued fraction) below `min(α, β) = 10` and Paulson's
//! cube-root normal approximation above (error < 7e-4); the Student-t CDF is exact.
//!
//! Results are floored at [`MIN_PROPENSITY`] because a served candidate had a positive chance.

use std::cell::Cell;

/// Smallest propensity ever reported: a served candidate had a positive chance, and a zero would
/// make inverse-propensity estimates infinite.
pub const MIN_PROPENSITY: f64 = 1e-9;

/// Mass an effective support may leave out on each side.
pub(crate) const TAIL: f64 = 1e-10;
/// Below this the product of the other candidates' CDFs is treated as zero: the integrand left
/// out is at most this times the chosen density, so the integral loses at most this much.
const NEGLIGIBLE: f64 = 1e-9;
/// In the product an other candidate's tabulated CDF is taken as 0 below its `PRODUCT_TAIL`
/// quantile and as 1 above its `1 − PRODUCT_TAIL` quantile (a tighter range than its support,
/// which holds all but [`TAIL`]). The first costs at most `PRODUCT_TAIL` in all (the product is
/// below it there), the second at most `PRODUCT_TAIL` per other candidate (≤ 1e-6 for 100).
pub(crate) const PRODUCT_TAIL: f64 = 1e-8;
const BISECTIONS: usize = 6;
/// Widest first cut of the range, in spreads of the chosen distribution.
const PANEL_SDS: f64 = 12.0;
/// A panel is accepted when its Kronrod and Gauss results differ by at most this much. At 1e-4
/// a linear Thompson case summed to 1 − 1.7e-4 (kept in `proptest-regressions/`); at 1e-5 every
/// measured scenario errs by at most 3.6e-6 (docs/propensities.md).
const PANEL_TOL: f64 = 1e-5;
/// Most panels one integral is cut into.
const MAX_PANELS: usize = 16;
/// Standard deviations of a Student-t draw's support when no table sets it (the tails of a
/// small-ν t are wider; see [`StudentMarginal::new`]).
const SUPPORT_SDS: f64 = 9.0;

#[cfg(test)]
thread_local! {
    /// Products and CDF evaluations in them (test statistics).
    pub(crate) static COUNTS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// A one-dimensional distribution that [`max_probability`] can integrate over.
pub(crate) trait Marginal {
    /// Per-abscissa values shared by every distribution of this type (logs, roots).
    type Node;
    fn node(x: f64) -> Self::Node;
    fn x_of_node(node: &Self::Node) -> f64;
    fn pdf(&self, node: &Self::Node) -> f64;
    fn cdf(&self, node: &Self::Node) -> f64;
    /// `1 − F(x)`, as accurate as this distribution can make it (it is used once per integral,
    /// for the chosen distribution's mass above every other support).
    fn survival(&self, node: &Self::Node) -> f64 {
        1.0 - self.cdf(node)
    }
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
    /// a close stand-in): the range is first cut into panels at most [`PANEL_SDS`] of these wide.
    fn s_spread(&self) -> f64;
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
    // Highest upper end first: at `x` the product stops at the first support ending below `x`.
    let mut active: Vec<(&M, i32, f64, f64)> = others
        .iter()
        .filter_map(|(m, c)| {
            let (mlo, mhi) = m.support();
            (mhi > lo).then_some((m, *c as i32, mlo, mhi))
        })
        .collect();
    active.sort_unstable_by(|a, b| b.3.total_cmp(&a.3));
    // G(x) = Π F_j(x)^c_j, multiplied directly (no logs) and abandoned once negligible: the
    // factors are ≤ 1, so the running product only shrinks.
    let g_at = |node: &M::Node| -> f64 {
        #[cfg(test)]
        COUNTS.with(|c| c.set((c.get().0 + 1, c.get().1)));
        let x = M::x_of_node(node);
        let mut prod = 1.0;
        for &(m, c, mlo, mhi) in &active {
            if x >= mhi {
                break;
            }
            if x <= mlo {
                return 0.0;
            }
            #[cfg(test)]
            COUNTS.with(|c| c.set((c.get().0, c.get().1 + 1)));
            let f = m.cdf(node);
            prod *= if c == 1 { f } else { f.powi(c) };
            if prod < NEGLIGIBLE {
                return 0.0;
            }
        }
        prod
    };
    let g = |x: f64| g_at(&M::node(x));
    // Above every other support G = 1: that stretch is the chosen distribution's survival.
    let top = active.first().map_or(lo, |a| a.3).max(lo);
    let end = top.min(hi);
    let mut total = if top < hi {
        chosen.survival(&M::node(top)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    if end > lo && g(end) >= NEGLIGIBLE {
        let (mut s_lo, s_end) = (chosen.s_of_x(lo), chosen.s_of_x(end));
        if g(lo) < NEGLIGIBLE {
            // G is increasing: move the lower end up to where it stops being negligible, so the
            // nodes sit where the integrand lives (e.g. x^99 for 100 arms at a uniform prior).
            let (mut a, mut b) = (s_lo, s_end);
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
        let integrand = |s: f64| {
            let (x, jac) = chosen.x_of_s(s);
            let node = M::node(x);
            let gx = g_at(&node);
            if gx > 0.0 {
                jac * chosen.pdf(&node) * gx
            } else {
                0.0
            }
        };
        total += adaptive_kronrod(integrand, s_lo, s_end, chosen.s_spread());
    }
    total.clamp(0.0, 1.0)
}

/// `∫_a^b f`: first cut into panels at most [`PANEL_SDS`] `spread`s wide, then every panel whose
/// Gauss and Kronrod results disagree by more than [`PANEL_TOL`] halved, widest first, while
/// fewer than [`MAX_PANELS`] panels exist.
fn adaptive_kronrod(f: impl Fn(f64) -> f64, a: f64, b: f64, spread: f64) -> f64 {
    if b <= a {
        return 0.0;
    }
    let first = ((b - a) / (PANEL_SDS * spread))
        .ceil()
        .clamp(1.0, (MAX_PANELS / 2) as f64) as usize;
    let width = (b - a) / first as f64;
    // (a, b, kronrod, |kronrod - gauss|)
    let mut panels: Vec<(f64, f64, f64, f64)> = Vec::with_capacity(MAX_PANELS);
    for p in 0..first {
        let (pa, pb) = (a + width * p as f64, a + width * (p + 1) as f64);
        let (k, e) = kronrod15(&f, pa, pb);
        panels.push((pa, pb, k, e));
    }
    while panels.len() < MAX_PANELS {
        // Halve the panel with the largest error estimate.
        let (worst, &(pa, pb, _, e)) = panels
            .iter()
            .enumerate()
            .max_by(|x, y| x.1 .3.total_cmp(&y.1 .3))
            .expect("at least one panel");
        if e <= PANEL_TOL {
            break;
        }
        let mid = 0.5 * (pa + pb);
        let (k1, e1) = kronrod15(&f, pa, mid);
        let (k2, e2) = kronrod15(&f, mid, pb);
        panels[worst] = (pa, mid, k1, e1);
        panels.push((mid, pb, k2, e2));
    }
    panels.iter().map(|p| p.2).sum()
}

/// Nodes of the 15-point Kronrod rule on [-1, 1] (non-negative half; the odd entries and the
/// last, 0, are the 7-point Gauss nodes), as in QUADPACK's `qk15`.
const XGK: [f64; 8] = [
    0.991_455_371_120_812_6,
    0.949_107_912_342_758_5,
    0.864_864_423_359_769_1,
    0.741_531_185_599_394_4,
    0.586_087_235_467_691_1,
    0.405_845_151_377_397_2,
    0.207_784_955_007_898_5,
    0.0,
];
const WGK: [f64; 8] = [
    0.022_935_322_010_529_22,
    0.063_092_092_629_978_55,
    0.104_790_010_322_250_2,
    0.140_653_259_715_525_9,
    0.169_004_726_639_267_9,
    0.190_350_578_064_785_4,
    0.204_432_940_075_298_9,
    0.209_482_141_084_727_8,
];
/// Weights of the 7-point Gauss rule at `XGK[1]`, `XGK[3]`, `XGK[5]` and 0.
const WG: [f64; 4] = [
    0.129_484_966_168_869_7,
    0.279_705_391_489_276_7,
    0.381_830_050_505_118_9,
    0.417_959_183_673_469_4,
];

/// The 15-point Kronrod estimate of `∫_a^b f` and its difference from the embedded 7-point
/// Gauss estimate.
fn kronrod15(f: &impl Fn(f64) -> f64, a: f64, b: f64) -> (f64, f64) {
    let (c, h) = (0.5 * (a + b), 0.5 * (b - a));
    let fc = f(c);
    let mut k = WGK[7] * fc;
    let mut g = WG[3] * fc;
    for j in 0..7 {
        let (f1, f2) = (f(c - h * XGK[j]), f(c + h * XGK[j]));
        k += WGK[j] * (f1 + f2);
        if j % 2 == 1 {
            g += WG[j / 2] * (f1 + f2);
        }
    }
    (k * h, ((k - g) * h).abs())
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7; relative error ~1e-15).
pub fn ln_gamma(x: f64) -> f64 {
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

/// Below this `min(α, β)` an untabulated Beta CDF is computed exactly.
const PAULSON_MIN: f64 = 10.0;

const TABLE_INTERVALS: usize = 64;

/// Five-point Gauss–Legendre on [-1, 1] (exact to degree 9): integrates a density over one table
/// interval when the table is built.
const GL5: [(f64, f64); 5] = [
    (-0.906_179_845_938_664, 0.236_926_885_056_189_1),
    (-0.538_469_310_105_683_1, 0.478_628_670_499_366_5),
    (0.0, 0.568_888_888_888_888_9),
    (0.538_469_310_105_683_1, 0.478_628_670_499_366_5),
    (0.906_179_845_938_664, 0.236_926_885_056_189_1),
];

/// A CDF tabulated for quintic Hermite interpolation from its value, slope and curvature at 65
/// uniform knots of a variable `v` over `[lo, hi]`, kept as each interval's polynomial in the
/// interval's own `u ∈ [0, 1]`: a lookup is one multiply-add chain.
#[derive(Debug, Clone)]
pub(crate) struct Quintic {
    lo: f64,
    hi: f64,
    inv_h: f64,
    /// `F` at `lo` and at `hi`.
    ends: (f64, f64),
    /// Coefficients of `u⁰ … u⁵` on each interval.
    coefs: Box<[[f64; 6]]>,
}

impl Quintic {
    /// Tabulates the CDF whose density and its slope at `v` are `dens(v)`, given the exact CDF
    /// at both ends: knot values are the lower end's plus the density integrated interval by
    /// interval (5-point Gauss–Legendre), the tiny drift spread so the last knot is exact.
    fn build(lo: f64, hi: f64, f_lo: f64, f_hi: f64, dens: impl Fn(f64) -> (f64, f64)) -> Self {
        let h = (hi - lo) / TABLE_INTERVALS as f64;
        let mut knots: Vec<[f64; 3]> = Vec::with_capacity(TABLE_INTERVALS + 1);
        let mut f = f_lo;
        let knot = |v: f64, f: f64| {
            let (d, d1) = dens(v);
            [f, h * d, h * h * d1]
        };
        knots.push(knot(lo, f));
        for k in 0..TABLE_INTERVALS {
            let mid = lo + h * (k as f64 + 0.5);
            f += 0.5
                * h
                * GL5
                    .iter()
                    .map(|&(t, w)| w * dens(mid + 0.5 * h * t).0)
                    .sum::<f64>();
            let v = if k + 1 == TABLE_INTERVALS {
                hi
            } else {
                lo + h * (k + 1) as f64
            };
            knots.push(knot(v, f));
        }
        let drift = f_hi - f;
        for (k, knot) in knots.iter_mut().enumerate() {
            knot[0] += drift * k as f64 / TABLE_INTERVALS as f64;
        }
        let coefs = knots
            .windows(2)
            .map(|w| {
                let ([p0, d0, s0], [p1, d1, s1]) = (w[0], w[1]);
                let dp = p1 - p0;
                [
                    p0,
                    d0,
                    0.5 * s0,
                    10.0 * dp - 6.0 * d0 - 4.0 * d1 - 1.5 * s0 + 0.5 * s1,
                    -15.0 * dp + 8.0 * d0 + 7.0 * d1 + 1.5 * s0 - s1,
                    6.0 * dp - 3.0 * (d0 + d1) - 0.5 * (s0 - s1),
                ]
            })
            .collect();
        Self {
            lo,
            hi,
            inv_h: 1.0 / h,
            ends: (knots[0][0], knots[TABLE_INTERVALS][0]),
            coefs,
        }
    }

    /// The `v` where the tabulated CDF reaches `p` (the knot interval, then bisection).
    fn quantile(&self, p: f64) -> f64 {
        let h = 1.0 / self.inv_h;
        let k = self.coefs.iter().skip(1).position(|c| c[0] >= p);
        let k = match k {
            _ if self.ends.0 >= p => return self.lo,
            Some(k) => k + 1,
            None if self.ends.1 >= p => TABLE_INTERVALS,
            None => return self.hi,
        };
        let (mut a, mut b) = (self.lo + h * (k - 1) as f64, self.lo + h * k as f64);
        for _ in 0..30 {
            let mid = 0.5 * (a + b);
            if self.eval(mid) < p {
                a = mid;
            } else {
                b = mid;
            }
        }
        b.min(self.hi)
    }

    #[inline]
    fn eval(&self, v: f64) -> f64 {
        if v <= self.lo {
            return self.ends.0;
        }
        if v >= self.hi {
            return self.ends.1;
        }
        let t = (v - self.lo) * self.inv_h;
        let k = (t as usize).min(TABLE_INTERVALS - 1);
        let u = t - k as f64;
        let [c0, c1, c2, c3, c4, c5] = self.coefs[k];
        (c0 + u * (c1 + u * (c2 + u * (c3 + u * (c4 + u * c5))))).clamp(0.0, 1.0)
    }
}

/// A Beta CDF tabulated on its effective support. Built once per posterior change, off the
/// decide path (about 400 density evaluations).
#[derive(Debug, Clone)]
pub(crate) struct BetaTable(Quintic, (f64, f64));

impl BetaTable {
    /// None where the density or its first two derivatives are unbounded at an end of the
    /// support that reaches 0 or 1 (there quintic interpolation would be poor): `α` below 1, or
    /// strictly between 1 and 2 or 2 and 3 when the support reaches 0; the same for `β` at 1.
    pub(crate) fn new(a: f64, b: f64) -> Option<Self> {
        let smooth = |p: f64| p == 1.0 || p == 2.0 || p >= 3.0;
        let (lo, hi) = beta_support(a, b);
        if !(a > 0.0 && b > 0.0) || (lo <= 0.0 && !smooth(a)) || (hi >= 1.0 && !smooth(b)) {
            return None;
        }
        if hi <= lo
            || hi.is_nan()
            || lo.is_nan()
            || !((hi - lo) / TABLE_INTERVALS as f64).is_normal()
        {
            return None;
        }
        let lnb = ln_beta(a, b);
        let dens = |x: f64| beta_density_and_slope(a, b, lnb, x);
        let q = Quintic::build(
            lo,
            hi,
            beta_cdf_with(a, b, lnb, lo),
            beta_cdf_with(a, b, lnb, hi),
            dens,
        );
        // The support formula is generous (Beta(1, 20) reaches 1, its 1 − 1e-8 quantile is
        // 0.60): as another candidate this arm counts in the product only between its
        // PRODUCT_TAIL quantiles, read from the table.
        let tight = (q.quantile(PRODUCT_TAIL), q.quantile(1.0 - PRODUCT_TAIL));
        Some(Self(q, tight))
    }

    #[inline]
    fn cdf(&self, x: f64) -> f64 {
        self.0.eval(x)
    }
}

/// The Beta(a, b) density and its derivative at `x` in [0, 1], including the limits at the ends
/// (finite for `a` or `b` in {1, 2} or ≥ 3, the shapes [`BetaTable`] tabulates up to an end).
fn beta_density_and_slope(a: f64, b: f64, lnb: f64, x: f64) -> (f64, f64) {
    let at_end = |p: f64, q: f64| -> (f64, f64) {
        // The end where the exponent of x is p - 1 (x = 0 for p = a): f = x^(p-1)·(…)/B.
        let c = (-lnb).exp();
        if p == 1.0 {
            (c, -(q - 1.0) * c)
        } else if p == 2.0 {
            (0.0, c)
        } else {
            (0.0, 0.0)
        }
    };
    if x <= 0.0 {
        return at_end(a, b);
    }
    if x >= 1.0 {
        let (f, d) = at_end(b, a);
        return (f, -d);
    }
    let (lx, l1x) = (x.ln(), (-x).ln_1p());
    let f = ((a - 1.0) * lx + (b - 1.0) * l1x - lnb).exp();
    (f, f * ((a - 1.0) / x - (b - 1.0) / (1.0 - x)))
}

fn beta_cdf_with(a: f64, b: f64, lnb: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    inc_beta(a, b, x, x.ln(), (-x).ln_1p(), lnb)
}

/// The standardized Student-t CDF with `ν` degrees of freedom, tabulated in
/// `u = t/√(ν + t²)` ∈ (-1, 1), where `dF/du = (1 − u²)^((ν−2)/2) / B(ν/2, 1/2)`: linear for
/// ν = 2, a polynomial for every even ν and smooth inside the support otherwise. Built once per
/// posterior change.
#[derive(Debug, Clone)]
pub(crate) struct StudentTable {
    dof: f64,
    table: Quintic,
    /// Where the t CDF leaves all but [`TAIL`] below (and, by symmetry, above).
    t_max: f64,
    /// Where it leaves [`PRODUCT_TAIL`] (from the table): the range another candidate counts in
    /// the product.
    t_cut: f64,
}

impl StudentTable {
    /// None for ν below 4 other than exactly 2: there `d²F/du²` is unbounded toward the ends.
    pub(crate) fn new(dof: f64) -> Option<Self> {
        if !(dof == 2.0 || (dof >= 4.0 && dof.is_finite())) {
            return None;
        }
        let lnb = ln_beta(0.5 * dof, 0.5);
        // Tail of the t at u: ½·I_{1−u²}(ν/2, 1/2). Bisect for where it falls to TAIL.
        let tail = |u: f64| {
            let y = (1.0 - u * u).max(0.0);
            if y <= 0.0 {
                return 0.0;
            }
            0.5 * inc_beta(0.5 * dof, 0.5, y, y.ln(), (-y).ln_1p(), lnb)
        };
        let (mut a, mut b) = (0.0_f64, 1.0_f64);
        for _ in 0..48 {
            let mid = 0.5 * (a + b);
            if tail(mid) > TAIL {
                a = mid;
            } else {
                b = mid;
            }
        }
        let u_max = b;
        if !(u_max > 0.0 && u_max < 1.0) {
            return None;
        }
        let inv_b = (-lnb).exp();
        let e = 0.5 * (dof - 2.0);
        let dens = |u: f64| {
            let y = 1.0 - u * u;
            if dof == 2.0 {
                (inv_b, 0.0)
            } else {
                let f = y.powf(e) * inv_b;
                (f, -2.0 * e * u * f / y)
            }
        };
        let t_lo = tail(u_max);
        let table = Quintic::build(-u_max, u_max, t_lo, 1.0 - t_lo, dens);
        let u_cut = -table.quantile(PRODUCT_TAIL);
        let t_of = |u: f64| u * dof.sqrt() / (1.0 - u * u).sqrt();
        Some(Self {
            dof,
            table,
            t_max: t_of(u_max),
            t_cut: t_of(u_cut.clamp(0.0, u_max)),
        })
    }

    #[inline]
    fn cdf(&self, t: f64) -> f64 {
        self.table.eval(t / (self.dof + t * t).sqrt())
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

/// The effective support of Beta(a, b): all but about [`TAIL`] of the mass on each side. A small
/// `a` gives a long right tail (Beta(1, b) tends to an exponential, whose mean + 9 sd still
/// leaves 5e-5 above), hence `9 + 16/√a` standard deviations there; likewise `b` on the left.
pub(crate) fn beta_support(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let mean = a / s;
    let sd = (a * b / (s * s * (s + 1.0))).sqrt();
    (
        (mean - (9.0 + 16.0 / b.sqrt()) * sd).max(0.0),
        (mean + (9.0 + 16.0 / a.sqrt()) * sd).min(1.0),
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

    pub(crate) fn exact(a: f64, b: f64) -> Self {
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
            lo: table.1 .0,
            hi: table.1 .1,
            cdf: BetaCdf::Table(table),
        }
    }

    /// The chosen candidate's distribution: exact density, and the CDF (used once, for the mass
    /// above the others) from `table` when there is one, exact otherwise.
    pub(crate) fn chosen(a: f64, b: f64, table: Option<&'a BetaTable>) -> Self {
        let mut m = Self::exact(a, b);
        if let Some(t) = table {
            m.cdf = BetaCdf::Table(t);
        }
        m
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

    #[inline]
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

    fn survival(&self, n: &BetaNode) -> f64 {
        match &self.cdf {
            BetaCdf::Table(t) => 1.0 - t.cdf(n.x),
            _ if n.x <= 0.0 => 1.0,
            _ if n.x >= 1.0 => 0.0,
            _ => {
                // Exact: I_{1-x}(b, a).
                let (ln_x, ln_1mx) = n.logs();
                inc_beta(self.b, self.a, 1.0 - n.x, ln_1mx, ln_x, self.lnb)
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
pub(crate) struct StudentMarginal<'a> {
    loc: f64,
    scale: f64,
    inv_scale: f64,
    dof: f64,
    ln_norm: f64,
    lnb: f64,
    lo: f64,
    hi: f64,
    table: Option<&'a StudentTable>,
}

impl<'a> StudentMarginal<'a> {
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
            inv_scale: 1.0 / scale,
            dof,
            ln_norm,
            lnb,
            lo: loc - width * scale,
            hi: loc + width * scale,
            table: None,
        }
    }

    /// CDF (and support) from `table`, built for the same degrees of freedom.
    /// No density (not for the chosen arm): building one costs an `ln B` per candidate.
    pub(crate) fn tabulated(loc: f64, scale: f64, dof: f64, table: &'a StudentTable) -> Self {
        let scale = scale.max(1e-300);
        Self {
            loc,
            scale,
            inv_scale: 1.0 / scale,
            dof,
            ln_norm: f64::NAN,
            lnb: f64::NAN,
            lo: loc - table.t_cut * scale,
            hi: loc + table.t_cut * scale,
            table: Some(table),
        }
    }

    /// The chosen candidate's distribution: exact density, CDF from `table` when there is one.
    pub(crate) fn chosen(loc: f64, scale: f64, dof: f64, table: Option<&'a StudentTable>) -> Self {
        let mut m = Self::new(loc, scale, dof);
        if let Some(t) = table {
            m.lo = loc - t.t_max * m.scale;
            m.hi = loc + t.t_max * m.scale;
            m.table = Some(t);
        }
        m
    }

    #[cfg(test)]
    fn cdf_at(&self, x: f64) -> f64 {
        self.cdf(&x)
    }
}

impl Marginal for StudentMarginal<'_> {
    type Node = f64;

    fn node(x: f64) -> f64 {
        x
    }

    fn x_of_node(x: &f64) -> f64 {
        *x
    }

    fn pdf(&self, x: &f64) -> f64 {
        let t = (x - self.loc) * self.inv_scale;
        if self.dof.is_finite() {
            (self.ln_norm - 0.5 * (self.dof + 1.0) * (t * t / self.dof).ln_1p()).exp()
        } else {
            (self.ln_norm - 0.5 * t * t).exp()
        }
    }

    #[inline]
    fn cdf(&self, x: &f64) -> f64 {
        let t = (x - self.loc) * self.inv_scale;
        if let Some(table) = self.table {
            return table.cdf(t);
        }
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

/// A draw `X` passed through the merchandising lift `y = g_m(X)` (`X·m` where `X ≥ 0`, `X/m`
/// where `X < 0`): strictly increasing for `m > 0`, so `P(max)` of lifted draws is the same
/// integral over the lifted distributions, `F'(y) = F(g⁻¹(y))` and `f'(y) = f(g⁻¹(y))/g'`.
/// Boosts (`m > 1`) raise a draw and buries (`m < 1`) lower it whatever its sign.
pub(crate) struct Lifted<M> {
    pub(crate) inner: M,
    pub(crate) m: f64,
}

impl<M> Lifted<M> {
    fn unlift(&self, y: f64) -> f64 {
        if y >= 0.0 {
            y / self.m
        } else {
            y * self.m
        }
    }

    /// `dy/dx` at `x`.
    fn slope(&self, x: f64) -> f64 {
        if x >= 0.0 {
            self.m
        } else {
            1.0 / self.m
        }
    }
}

impl<M: Marginal> Marginal for Lifted<M> {
    type Node = f64;

    fn node(y: f64) -> f64 {
        y
    }

    fn x_of_node(y: &f64) -> f64 {
        *y
    }

    fn pdf(&self, y: &f64) -> f64 {
        let x = self.unlift(*y);
        self.inner.pdf(&M::node(x)) / self.slope(x)
    }

    fn cdf(&self, y: &f64) -> f64 {
        self.inner.cdf(&M::node(self.unlift(*y)))
    }

    fn survival(&self, y: &f64) -> f64 {
        self.inner.survival(&M::node(self.unlift(*y)))
    }

    fn support(&self) -> (f64, f64) {
        let (lo, hi) = self.inner.support();
        (lift(lo, self.m), lift(hi, self.m))
    }

    fn s_of_x(&self, y: f64) -> f64 {
        self.inner.s_of_x(self.unlift(y))
    }

    fn x_of_s(&self, s: f64) -> (f64, f64) {
        let (x, jac) = self.inner.x_of_s(s);
        (lift(x, self.m), jac * self.slope(x))
    }

    fn s_spread(&self) -> f64 {
        self.inner.s_spread()
    }
}

/// The merchandising lift of a score or draw `v` by a factor `m > 0`: `v·m` for `v ≥ 0`, `v/m`
/// below 0, so a boost raises and a bury lowers any value and the order of unlifted values
/// with equal factors is kept.
pub fn lift(v: f64, m: f64) -> f64 {
    if v >= 0.0 {
        v * m
    } else {
        v / m
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
        let mut built = 0;
        for &a in &[1.0, 2.0, 2.5, 3.0, 7.0, 20.0, 150.0, 5000.0] {
            for &b in &[1.0, 2.0, 9.0, 50.0, 400.0, 20000.0, 100_000.0] {
                let Some(t) = BetaTable::new(a, b) else {
                    continue;
                };
                built += 1;
                let exact = BetaMarginal::exact(a, b);
                let (lo, hi) = exact.support();
                for i in 0..=1000 {
                    let x = lo + (hi - lo) * i as f64 / 1000.0;
                    worst = worst.max((t.cdf(x) - exact.cdf_at(x)).abs());
                }
            }
        }
        eprintln!("beta tables: worst CDF error {worst:e}");
        // Beta(2.5, b) is refused where its support reaches 0 (every b but 1 here).
        assert_eq!(built, 49);
        // The worst is in the first interval of Beta(3, 400), whose density rises as x² and
        // falls as e^(-400x) there; away from the steep ends errors are below 1e-7.
        assert!(worst < 5e-6, "worst {worst}");
        assert!(BetaTable::new(0.5, 3.0).is_none());
        assert!(BetaTable::new(1.5, 3.0).is_none());
        assert!(BetaTable::new(2.5, 3.0).is_none());
        assert!(BetaTable::new(2.5, 300.0).is_none());
        assert!(BetaTable::new(25.5, 300.0).is_some());
    }

    #[test]
    fn student_tables_match_exact() {
        let mut worst = 0.0_f64;
        for &dof in &[2.0, 4.0, 5.0, 7.5, 12.0, 41.0, 300.0, 20000.0] {
            let t = StudentTable::new(dof).unwrap();
            let exact = StudentMarginal::new(0.0, 1.0, dof);
            for i in 0..=2000 {
                let x = t.t_max * (i as f64 / 1000.0 - 1.0);
                worst = worst.max((t.cdf(x) - exact.cdf_at(x)).abs());
            }
            // Beyond the table the tails are below TAIL.
            assert!(exact.cdf_at(-t.t_max) <= 1.01 * TAIL, "dof {dof}");
            assert!(exact.cdf_at(-0.9 * t.t_max) > TAIL, "dof {dof}");
        }
        eprintln!("student tables: worst CDF error {worst:e}");
        // The worst is in the far tail of ν = 5 (odd ν: (1 − u²)^1.5 toward the ends).
        assert!(worst < 2e-6, "worst {worst}");
        assert!(StudentTable::new(3.0).is_none());
        assert!(StudentTable::new(1.0).is_none());
    }

    #[test]
    fn supports_hold_all_but_the_tail() {
        for &a in &[0.5, 1.0, 2.0, 3.0, 10.0, 100.0, 5000.0] {
            for &b in &[0.5, 1.0, 2.0, 5.0, 80.0, 1000.0, 100_000.0] {
                let (lo, hi) = beta_support(a, b);
                let lnb = ln_beta(a, b);
                let below = beta_cdf_with(a, b, lnb, lo);
                let above = if hi >= 1.0 {
                    0.0
                } else {
                    inc_beta(b, a, 1.0 - hi, (-hi).ln_1p(), hi.ln(), lnb)
                };
                assert!(
                    below <= TAIL && above <= TAIL,
                    "Beta({a}, {b}): {below:e} {above:e}"
                );
            }
        }
    }

    #[test]
    fn kronrod_integrates_polynomials() {
        // 15-point Kronrod is exact to degree 22, its 7-point Gauss to degree 13.
        for deg in 0..=22 {
            let (k, e) = kronrod15(&|x: f64| x.powi(deg), 0.0, 2.0);
            let want = 2f64.powi(deg + 1) / f64::from(deg + 1);
            assert!(
                (k - want).abs() < 1e-12 * want,
                "degree {deg}: {k} vs {want}"
            );
            if deg <= 13 {
                assert!(e < 1e-11 * want, "degree {deg}: gauss off by {e}");
            }
        }
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

/// Accuracy of [`max_probability`] against a slow reference, over posterior shapes that matter.
#[cfg(test)]
mod accuracy {
    use super::*;

    /// Exact CDF-only distributions for the reference.
    #[derive(Clone, Copy, Debug)]
    pub(super) enum Exact {
        Beta(f64, f64),
        /// location, scale, degrees of freedom
        Student(f64, f64, f64),
    }

    impl Exact {
        fn cdf(&self, x: f64) -> f64 {
            match *self {
                Exact::Beta(a, b) => beta_cdf(x, a, b),
                Exact::Student(l, s, v) => StudentMarginal::new(l, s, v).cdf_at(x),
            }
        }

        /// The quantile at `p` by 200 bisection steps (in x for a Beta, in θ = atan(t/√ν) for a t).
        fn quantile(&self, p: f64) -> f64 {
            let (mut a, mut b, to_x): (f64, f64, Box<dyn Fn(f64) -> f64>) = match *self {
                Exact::Beta(..) => (0.0, 1.0, Box::new(|s| s)),
                Exact::Student(l, sc, v) => (
                    -std::f64::consts::FRAC_PI_2,
                    std::f64::consts::FRAC_PI_2,
                    Box::new(move |s: f64| l + sc * v.sqrt() * s.tan()),
                ),
            };
            for _ in 0..200 {
                let mid = 0.5 * (a + b);
                if mid <= a || mid >= b {
                    break;
                }
                if self.cdf(to_x(mid)) < p {
                    a = mid;
                } else {
                    b = mid;
                }
            }
            to_x(0.5 * (a + b))
        }
    }

    /// `P(X_i > max_j X_j) = ∫_0^1 G(Q_i(p)) dp`, the product of the others' exact CDFs at the
    /// chosen distribution's exact quantiles: composite 8-point Gauss–Legendre on `panels` equal
    /// panels of `p`. Needs no support, density or table of the chosen distribution.
    pub(super) fn reference(chosen: Exact, others: &[Exact], panels: usize) -> f64 {
        const X8: [f64; 4] = [
            0.183_434_642_495_649_8,
            0.525_532_409_916_329,
            0.796_666_477_413_626_7,
            0.960_289_856_497_536_3,
        ];
        const W8: [f64; 4] = [
            0.362_683_783_378_362,
            0.313_706_645_877_887_3,
            0.222_381_034_453_374_5,
            0.101_228_536_290_376_3,
        ];
        let g = |p: f64| {
            let x = chosen.quantile(p);
            let mut prod = 1.0;
            for o in others {
                prod *= o.cdf(x);
                if prod < 1e-18 {
                    return 0.0;
                }
            }
            prod
        };
        let h = 1.0 / panels as f64;
        let mut total = 0.0;
        for k in 0..panels {
            let c = h * (k as f64 + 0.5);
            for (t, w) in X8.iter().zip(W8) {
                total += w * 0.5 * h * (g(c - 0.5 * h * t) + g(c + 0.5 * h * t));
            }
        }
        total
    }

    /// What the policies compute: others from tables where a table can be built, the chosen
    /// one's density exact and its tail from its table.
    pub(super) fn fast(chosen: Exact, others: &[Exact]) -> f64 {
        match chosen {
            Exact::Beta(a, b) => {
                let tabs: Vec<(f64, f64, Option<BetaTable>)> = others
                    .iter()
                    .map(|o| match *o {
                        Exact::Beta(a, b) => (a, b, BetaTable::new(a, b)),
                        Exact::Student(..) => unreachable!(),
                    })
                    .collect();
                let items: Vec<((u64, u64), Option<&BetaTable>)> = tabs
                    .iter()
                    .map(|(a, b, t)| ((a.to_bits(), b.to_bits()), t.as_ref()))
                    .collect();
                let ms = group(items, |(a, b), t| {
                    let (a, b) = (f64::from_bits(a), f64::from_bits(b));
                    match t {
                        Some(t) => BetaMarginal::tabulated(a, b, t),
                        None => BetaMarginal::new(a, b),
                    }
                });
                let own = BetaTable::new(a, b);
                max_probability(&BetaMarginal::chosen(a, b, own.as_ref()), &ms)
            }
            Exact::Student(l, s, v) => {
                let tabs: Vec<(f64, f64, f64, Option<StudentTable>)> = others
                    .iter()
                    .map(|o| match *o {
                        Exact::Student(l, s, v) => (l, s, v, StudentTable::new(v)),
                        Exact::Beta(..) => unreachable!(),
                    })
                    .collect();
                let ms: Vec<(StudentMarginal, u32)> = tabs
                    .iter()
                    .map(|(l, s, v, t)| {
                        let m = match t {
                            Some(t) => StudentMarginal::tabulated(*l, *s, *v, t),
                            None => StudentMarginal::new(*l, *s, *v),
                        };
                        (m, 1)
                    })
                    .collect();
                let own = StudentTable::new(v);
                max_probability(&StudentMarginal::chosen(l, s, v, own.as_ref()), &ms)
            }
        }
    }

    /// Posterior sets: tiny counts, skewed, large counts, many near-equal arms, mixtures.
    pub(super) fn scenarios() -> Vec<(&'static str, Vec<Exact>)> {
        use Exact::{Beta as B, Student as T};
        let mut out: Vec<(&'static str, Vec<Exact>)> = Vec::new();
        out.push((
            "tiny counts",
            vec![
                B(1.0, 1.0),
                B(2.0, 1.0),
                B(1.0, 2.0),
                B(2.0, 3.0),
                B(1.0, 4.0),
                B(3.0, 2.0),
            ],
        ));
        out.push((
            "skewed",
            vec![
                B(1.0, 20.0),
                B(2.0, 50.0),
                B(1.0, 200.0),
                B(20.0, 1.0),
                B(3.0, 900.0),
                B(1.0, 3.0),
            ],
        ));
        out.push((
            "large counts",
            vec![
                B(5000.0, 100_000.0),
                B(5100.0, 100_000.0),
                B(4000.0, 80_000.0),
                B(250.0, 5000.0),
                B(60.0, 1100.0),
                B(1.0, 1.0),
                B(2.0, 30.0),
            ],
        ));
        out.push((
            "99 identical skewed",
            std::iter::once(B(4.0, 380.0))
                .chain(std::iter::repeat_n(B(3.0, 400.0), 99))
                .collect(),
        ));
        out.push((
            "100 near-equal",
            (0..100)
                .map(|i| B(50.0 + (i % 3) as f64, 950.0 - (i % 5) as f64))
                .collect(),
        ));
        out.push((
            "100 distinct (the bench)",
            (0..100)
                .map(|i| {
                    let n = (2.0 * 1.1f64.powi(i)).round();
                    let ones = ((0.03 + 0.04 * ((i * 37) % 100) as f64 / 100.0) * n).round();
                    B(1.0 + ones, 1.0 + n - ones)
                })
                .collect(),
        ));
        out.push(("~20 rewards per arm (the choose bench)", twenty_per_arm()));
        out.push((
            "narrow others, wide new arm",
            std::iter::once(B(1.0, 1.0))
                .chain(std::iter::once(B(1.0, 20.0)))
                .chain((0..40).map(|i| B(300.0 + 7.0 * i as f64, 6000.0)))
                .collect(),
        ));
        out.push((
            "student mixed",
            vec![
                T(10.0, 3.0, 2.0),
                T(11.0, 1.0, 6.0),
                T(9.0, 0.3, 40.0),
                T(10.5, 0.05, 2000.0),
                T(12.0, 2.0, 4.0),
            ],
        ));
        out.push((
            "100 student distinct",
            (0..100)
                .map(|i| {
                    let n = (2.0 * 1.1f64.powi(i)).round();
                    let mean = 1.0 + 0.4 * ((i * 37) % 100) as f64 / 100.0;
                    T(mean, 8.0 / (n + 1.0).sqrt(), 2.0 + n)
                })
                .collect(),
        ));
        out
    }

    /// The posteriors of `benches/policies.rs`'s `choose/thompson/d32/100`: 2,000 seeded rewards
    /// over 100 arms at success rates 5–18 %, on the Beta(1, 1) prior (many Beta(1–4, ~18)
    /// posteriors, several shared).
    pub(super) fn twenty_per_arm() -> Vec<Exact> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(1);
        let mut counts = [(1.0, 1.0); 100];
        for _ in 0..2000 {
            let i = rng.gen_range(0..100);
            if rng.gen::<f64>() < 0.05 + 0.2 * (i % 3) as f64 / 3.0 {
                counts[i].0 += 1.0;
            } else {
                counts[i].1 += 1.0;
            }
        }
        counts.iter().map(|&(a, b)| Exact::Beta(a, b)).collect()
    }

    /// Worst absolute error of the policies' propensities against the reference over `chosen`
    /// indices of every scenario (all of them when `every`; else the 6 most likely and 3 more).
    pub(super) fn worst_error(panels: usize, every: bool) -> Vec<(&'static str, f64, f64)> {
        let mut out = Vec::new();
        for (name, arms) in scenarios() {
            let n = arms.len();
            let others = |i: usize| -> Vec<Exact> {
                arms.iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, a)| *a)
                    .collect()
            };
            let fast_all: Vec<f64> = (0..n).map(|i| fast(arms[i], &others(i))).collect();
            let mut picks: Vec<usize> = (0..n).collect();
            if !every && n > 9 {
                picks.sort_by(|&x, &y| fast_all[y].total_cmp(&fast_all[x]));
                picks.truncate(6);
                picks.extend([n / 3, n / 2, n - 1]);
            }
            let mut worst = 0.0_f64;
            for &i in &picks {
                let want = reference(arms[i], &others(i), panels);
                worst = worst.max((fast_all[i] - want).abs());
            }
            let sum: f64 = fast_all.iter().sum();
            out.push((name, worst, (sum - 1.0).abs()));
        }
        out
    }

    #[test]
    fn propensities_match_the_reference() {
        for (name, worst, sum) in worst_error(400, false) {
            eprintln!("{name}: worst error {worst:.2e}, |sum - 1| {sum:.2e}");
            assert!(worst < 1e-4, "{name}: {worst:e}");
            assert!(sum < 1e-4, "{name}: sum off by {sum:e}");
        }
    }

    /// Time per propensity of the two 100-arm Beta shapes, tables built beforehand, weighted by
    /// each arm's chance of being the one served (what a choose pays on average): `cargo test
    /// --release -p tailor-policies --lib accuracy::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing() {
        for (name, arms) in scenarios() {
            if arms.len() < 100 || matches!(arms[0], Exact::Student(..)) {
                continue;
            }
            let params: Vec<(f64, f64)> = arms
                .iter()
                .map(|a| match *a {
                    Exact::Beta(a, b) => (a, b),
                    Exact::Student(..) => unreachable!(),
                })
                .collect();
            let tables: Vec<Option<BetaTable>> =
                params.iter().map(|&(a, b)| BetaTable::new(a, b)).collect();
            let one = |i: usize| {
                let items: Vec<((u64, u64), Option<&BetaTable>)> = (0..params.len())
                    .filter(|&j| j != i)
                    .map(|j| {
                        let (a, b) = params[j];
                        ((a.to_bits(), b.to_bits()), tables[j].as_ref())
                    })
                    .collect();
                let others = group(items, |(a, b), t| {
                    let (a, b) = (f64::from_bits(a), f64::from_bits(b));
                    match t {
                        Some(t) => BetaMarginal::tabulated(a, b, t),
                        None => BetaMarginal::new(a, b),
                    }
                });
                let (a, b) = params[i];
                max_probability(&BetaMarginal::chosen(a, b, tables[i].as_ref()), &others)
            };
            let reps = 50;
            let (mut time, mut products, mut cdfs, mut sum) = (0.0, 0.0, 0.0, 0.0);
            for i in 0..params.len() {
                let p = one(i);
                sum += p;
                COUNTS.with(|c| c.set((0, 0)));
                let t0 = std::time::Instant::now();
                for _ in 0..reps {
                    std::hint::black_box(one(std::hint::black_box(i)));
                }
                let per = t0.elapsed().as_secs_f64() / reps as f64;
                let (g, c) = COUNTS.with(|c| c.get());
                time += p * per;
                products += p * g as f64 / reps as f64;
                cdfs += p * c as f64 / reps as f64;
            }
            eprintln!(
                "{name}: {:.1} µs per propensity, {products:.0} products, {cdfs:.0} CDFs (sum {sum:.6})",
                time * 1e6,
            );
        }
    }

    /// The documented figures: `cargo test --release -p tailor-policies --lib
    /// accuracy::report -- --ignored --nocapture` (a minute or two).
    #[test]
    #[ignore]
    fn report() {
        let coarse = worst_error(1000, true);
        let fine = worst_error(2000, false);
        for ((name, w1, s), (_, w2, _)) in coarse.iter().zip(&fine) {
            eprintln!(
                "{name}: worst error {w1:.2e} (1000 panels), {w2:.2e} (2000), |sum - 1| {s:.2e}"
            );
        }
    }
}
