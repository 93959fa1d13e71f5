//! `exp`, `ln` and `ln B` over slices, written so the compiler vectorizes the loops (two lanes
//! on the baseline x86-64 target, more where the build enables wider units).
//!
//! The send-time grid spends most of a decision in these: a shopper's touched slots each need
//! a dozen densities and CDF logarithms, and a call into the C library costs about 60
//! instructions apiece, one value at a time (`wide`'s four-lane versions were no cheaper on the
//! baseline target, measured with callgrind). These are branch-free polynomials: `exp` by
//! Cody–Waite reduction and a degree-12 Taylor polynomial, `ln` by fdlibm's reduction to
//! `[√½, √2)` and its minimax polynomial. Both agree with the standard library's to within
//! 1e-15 relative (a few ulp) over the ranges used (test `agree_with_std`).

use std::f64::consts::LOG2_E;

/// `ln 2` split so that `n · LN2_HI` is exact for `|n| < 2^11`.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);

/// `x ← eˣ` for every element; below −708 the result is 0, above 709 it is `e^709`.
#[inline]
pub fn exp_in_place(xs: &mut [f64]) {
    for x in xs {
        *x = exp(*x);
    }
}

/// `x ← ln x` for every element; inputs are positive and normal (at least 2.2e-308).
#[inline]
pub fn ln_in_place(xs: &mut [f64]) {
    for x in xs {
        *x = ln(*x);
    }
}

/// Σ of the values in four interleaved partial sums, so that the additions vectorize (the
/// order differs from a left-to-right sum by rounding only).
#[inline(always)]
pub fn sum(xs: &[f64]) -> f64 {
    let mut acc = [0.0; 4];
    let mut chunks = xs.chunks_exact(4);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    let rest: f64 = chunks.remainder().iter().sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + rest
}

/// `out[i] ← ln B(a[i], b[i])` for positive `a`, `b` (slices of equal length).
#[inline(always)]
pub fn ln_beta_into(a: &[f64], b: &[f64], out: &mut [f64]) {
    debug_assert!(a.len() == b.len() && b.len() == out.len());
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = ln_gamma_parts(a) + ln_gamma_parts(b) - ln_gamma_parts(a + b);
    }
    // The logarithms of the three Lanczos parts, batched.
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o += ln(lanczos_product(a) * lanczos_product(b) / lanczos_product(a + b));
    }
}

/// e^x, branch-free (one value of [`exp_in_place`]).
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    /// 1.5 · 2^52: adding it rounds to an integer held in the low mantissa bits.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    let clamped = x.clamp(-708.0, 709.0);
    let t = clamped * LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    // e^r for |r| ≤ ln2/2: Taylor to r^12 (remainder < 2e-16 relative), Estrin-style.
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let p01 = 1.0 + r;
    let p23 = 1.0 / 2.0 + r * (1.0 / 6.0);
    let p45 = 1.0 / 24.0 + r * (1.0 / 120.0);
    let p67 = 1.0 / 720.0 + r * (1.0 / 5_040.0);
    let p89 = 1.0 / 40_320.0 + r * (1.0 / 362_880.0);
    let p1011 = 1.0 / 3_628_800.0 + r * (1.0 / 39_916_800.0);
    let p12 = 1.0 / 479_001_600.0;
    let p03 = p01 + r2 * p23;
    let p47 = p45 + r2 * p67;
    let p811 = p89 + r2 * p1011;
    let p = p03 + r4 * p47 + r8 * (p811 + r4 * p12);
    // 2^n: n + 1023 into the exponent field.
    let n_bits = t.to_bits().wrapping_sub(SHIFT.to_bits());
    let scale = f64::from_bits(n_bits.wrapping_add(1023) << 52);
    if x < -708.0 {
        0.0
    } else {
        p * scale
    }
}

/// ln x for positive normal x, branch-free (fdlibm's `log` without its special cases; one
/// value of [`ln_in_place`]).
#[inline(always)]
pub fn ln(x: f64) -> f64 {
    const SQRT_HALF_BITS: u64 = 0x3fe6_a09e_667f_3bcd;
    const MANTISSA: u64 = (1 << 52) - 1;
    // fdlibm's coefficients, as published.
    #[allow(clippy::excessive_precision)]
    const LG: [f64; 7] = [
        6.666_666_666_666_735_130e-1,
        3.999_999_999_940_941_908e-1,
        2.857_142_874_366_239_149e-1,
        2.222_219_843_214_978_396e-1,
        1.818_357_216_161_805_012e-1,
        1.531_383_769_920_937_332e-1,
        1.479_819_860_511_658_591e-1,
    ];
    // x = 2^k · m with m in [√½, √2).
    let shifted = x
        .to_bits()
        .wrapping_sub(SQRT_HALF_BITS)
        .wrapping_add(1023 << 52);
    // k + 1023 (0..2046) to f64 exactly, through the mantissa of 2^52.
    let k = f64::from_bits((shifted >> 52) | 0x4330_0000_0000_0000)
        - (4_503_599_627_370_496.0 + 1023.0);
    let m = f64::from_bits((shifted & MANTISSA).wrapping_add(SQRT_HALF_BITS));
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG[1] + w * (LG[3] + w * LG[5]));
    let t2 = z * (LG[0] + w * (LG[2] + w * (LG[4] + w * LG[6])));
    let hfsq = 0.5 * f * f;
    k * LN2_HI - ((hfsq - (s * (hfsq + t1 + t2) + k * LN2_LO)) - f)
}

/// Lanczos approximation (g = 7, nine terms), as in `propensity::ln_gamma`: for `y ≥ 1/2`,
/// `ln Γ(y) = ½ ln 2π + (y − ½) ln t − t + ln A(y)` with `t = y + 6.5`; below 1/2,
/// `Γ(x) = Γ(x + 1) / x`. Split into the part without logarithms ([`ln_gamma_parts`]) and the
/// argument of the one logarithm the two cases need together ([`lanczos_product`]), so that
/// [`ln_beta_into`] takes three Γs' logarithms as one.
pub(crate) const LANCZOS: [f64; 9] = [
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

/// `y` the Lanczos series is evaluated at: `x`, or `x + 1` below 1/2.
#[inline(always)]
fn lanczos_arg(x: f64) -> f64 {
    if x < 0.5 {
        x + 1.0
    } else {
        x
    }
}

/// `½ ln 2π + (y − ½) ln t − t` at `y = lanczos_arg(x)`.
#[inline(always)]
fn ln_gamma_parts(x: f64) -> f64 {
    let y = lanczos_arg(x);
    let t = y + 6.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (y - 0.5) * ln(t) - t
}

/// `A(y) / x` below 1/2 (Γ(x) = Γ(x + 1) / x), else `A(y)`, where
/// `A(y) = c₀ + Σᵢ cᵢ / (y − 1 + i)`: summed over the common denominator `D = Πᵢ (y − 1 + i)`
/// (prefix and suffix products give each `D / (y − 1 + i)`), so that one division remains.
#[inline(always)]
fn lanczos_product(x: f64) -> f64 {
    let y = lanczos_arg(x);
    let z = y - 1.0;
    let mut prefix = [1.0; 9];
    for i in 1..9 {
        prefix[i] = prefix[i - 1] * (z + i as f64);
    }
    let mut numerator = 0.0;
    let mut suffix = 1.0;
    for i in (1..9).rev() {
        numerator += LANCZOS[i] * prefix[i - 1] * suffix;
        suffix *= z + i as f64;
    }
    let a = LANCZOS[0] + numerator / prefix[8];
    if x < 0.5 {
        a / x
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propensity::{ln_beta, ln_gamma};

    #[test]
    fn split_ln2_adds_up() {
        assert_eq!(LN2_HI + LN2_LO, std::f64::consts::LN_2);
        assert_eq!(LN2_HI.to_bits() & 0x7ff, 0, "n · LN2_HI must be exact");
    }

    #[test]
    fn agree_with_std() {
        let xs: Vec<f64> = (0..20_000).map(|i| -708.0 + i as f64 * 0.070_853).collect();
        let mut e = xs.clone();
        exp_in_place(&mut e);
        for (x, e) in xs.iter().zip(&e) {
            let want = x.exp();
            assert!(
                (e - want).abs() <= 1e-15 * want,
                "exp({x}) = {e}, want {want}"
            );
        }
        let mut under = [-709.0, -745.0, -1e300, 0.0];
        exp_in_place(&mut under);
        assert_eq!(under, [0.0, 0.0, 0.0, 1.0]);

        let ys: Vec<f64> = (0..20_000)
            .map(|i| 1e-300 * 1.035_f64.powi(i))
            .take_while(|y| y.is_finite())
            .chain([
                1.0,
                1.0 - 1e-13,
                1.0 + 1e-13,
                0.5,
                2.0,
                f64::MIN_POSITIVE,
                f64::MAX,
            ])
            .collect();
        let mut l = ys.clone();
        ln_in_place(&mut l);
        for (y, l) in ys.iter().zip(&l) {
            let want = y.ln();
            assert!(
                (l - want).abs() <= 1e-15 * want.abs(),
                "ln({y}) = {l}, want {want}"
            );
        }
    }

    #[test]
    fn sum_adds_every_value() {
        for n in 0..11 {
            let xs: Vec<f64> = (0..n).map(|i| (i * i) as f64 + 0.5).collect();
            assert_eq!(sum(&xs), xs.iter().sum::<f64>(), "{n} values");
        }
    }

    #[test]
    fn ln_beta_matches_scalar() {
        let pairs: Vec<(f64, f64)> = [1e-3, 0.05, 0.4999, 0.5, 1.0, 1.7, 9.5, 120.0, 5e4]
            .iter()
            .flat_map(|&a| [1e-3, 0.3, 1.0, 8.5, 300.0].map(move |b| (a, b)))
            .collect();
        let (a, b): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
        let mut out = vec![0.0; a.len()];
        ln_beta_into(&a, &b, &mut out);
        for ((a, b), got) in pairs.iter().zip(&out) {
            let want = ln_beta(*a, *b);
            // Both round the large terms ln Γ(a), ln Γ(b), ln Γ(a + b) of the difference.
            let scale = ln_gamma(*a).abs() + ln_gamma(*b).abs() + ln_gamma(a + b).abs();
            assert!(
                (got - want).abs() <= 1e-12 + 1e-15 * scale,
                "ln B({a}, {b}) = {got}, want {want}"
            );
        }
    }
}
