//! Propensities against closed forms, Monte Carlo and empirical frequencies.

use rand::Rng;
use rand_distr::{Beta, Distribution, StudentT};
use tailor_policies::Policy;

use super::{arms, build, id_vectors, rng};

/// A Thompson policy whose six arms have deliberately mixed posteriors: prior, small counts,
/// a large count (Paulson path), fractional rewards.
fn mixed_thompson() -> (Policy, Vec<String>, Vec<tailor_policies::SparseVec>) {
    let (ids, xs) = id_vectors(6, 32);
    let a = arms(&ids, &xs);
    let mut p = build(r#"{"type":"thompson"}"#, 32);
    let feed = |i: usize, ones: usize, zeros: usize, p: &mut Policy| {
        for _ in 0..ones {
            p.update(a[i], 1.0, 1.0);
        }
        for _ in 0..zeros {
            p.update(a[i], 0.0, 1.0);
        }
    };
    feed(0, 3, 10, &mut p);
    feed(1, 30, 70, &mut p);
    feed(3, 1, 1, &mut p);
    feed(4, 80, 220, &mut p);
    for _ in 0..40 {
        p.update(a[5], 0.55, 1.0);
    }
    (p, ids, xs)
}

#[test]
fn beta_posterior_closed_form() {
    let (ids, xs) = id_vectors(2, 8);
    let a = arms(&ids, &xs);
    let mut p = build(r#"{"type":"thompson","prior_alpha":1,"prior_beta":1}"#, 8);
    // Rewards outside [0, 1] are clamped.
    for r in [1.0, 0.0, 1.0, 1.0, 0.5, 2.0, -1.0] {
        p.update(a[0], r, 1.0);
    }
    assert_eq!(p.beta_posterior("arm-0"), Some((5.5, 3.5)));
    assert_eq!(p.beta_posterior("arm-1"), Some((1.0, 1.0)));
    p.update(a[0], f64::NAN, 1.0);
    assert_eq!(p.beta_posterior("arm-0"), Some((5.5, 3.5)));
}

#[test]
fn beta_forgetting_decays_toward_the_prior() {
    let (ids, xs) = id_vectors(2, 8);
    let a = arms(&ids, &xs);
    let mut p = build(
        r#"{"type":"thompson","prior_alpha":2,"prior_beta":3,"half_life":10}"#,
        8,
    );
    for _ in 0..10 {
        p.update(a[0], 1.0, 1.0);
    }
    let g: f64 = 0.5f64.powf(0.1);
    let want: f64 = (0..10).map(|k| g.powi(k)).sum();
    let (al, be) = p.beta_posterior("arm-0").unwrap();
    assert!((al - (2.0 + want)).abs() < 1e-9, "{al}");
    assert!((be - 3.0).abs() < 1e-12);
    // Ten rewards elsewhere halve arm 0's evidence.
    for _ in 0..10 {
        p.update(a[1], 0.0, 1.0);
    }
    let (al2, _) = p.beta_posterior("arm-0").unwrap();
    assert!((al2 - (2.0 + want / 2.0)).abs() < 1e-9, "{al2}");
}

#[test]
fn nig_posterior_closed_form() {
    let (ids, xs) = id_vectors(1, 8);
    let a = arms(&ids, &xs);
    let mut p = build(
        r#"{"type":"gaussian_thompson","prior_mean":1,"prior_count":2,"prior_shape":3,"prior_scale":4}"#,
        8,
    );
    let rs = [2.0, 5.0, -1.0, 3.5];
    for r in rs {
        p.update(a[0], r, 1.0);
    }
    // Batch formulas (Murphy 2007, eqs. 85-89).
    let n = rs.len() as f64;
    let mean = rs.iter().sum::<f64>() / n;
    let ss: f64 = rs.iter().map(|r| (r - mean).powi(2)).sum();
    let (m0, k0, a0, b0) = (1.0, 2.0, 3.0, 4.0);
    let kn = k0 + n;
    let want = (
        (k0 * m0 + n * mean) / kn,
        kn,
        a0 + n / 2.0,
        b0 + 0.5 * ss + k0 * n * (mean - m0).powi(2) / (2.0 * kn),
    );
    let got = p.normal_inverse_gamma_posterior("arm-0").unwrap();
    assert!((got.0 - want.0).abs() < 1e-12, "{got:?} {want:?}");
    assert!((got.1 - want.1).abs() < 1e-12);
    assert!((got.2 - want.2).abs() < 1e-12);
    assert!((got.3 - want.3).abs() < 1e-12, "{got:?} {want:?}");
    // By hand: mean 2.375, ss 19.6875, κ 6, μ 11.5/6, α 5, β 4 + 9.84375 + 15.125/12.
    assert!((got.0 - 11.5 / 6.0).abs() < 1e-12);
    assert!((got.3 - (4.0 + 9.843_75 + 15.125 / 12.0)).abs() < 1e-12);
}

#[test]
fn thompson_propensity_matches_monte_carlo() {
    let (p, ids, xs) = mixed_thompson();
    let a = arms(&ids, &xs);
    let exact = p.first_slot_distribution(&a, true, 0.0).unwrap();
    let params: Vec<(f64, f64)> = ids.iter().map(|id| p.beta_posterior(id).unwrap()).collect();
    let dists: Vec<Beta<f64>> = params
        .iter()
        .map(|&(a, b)| Beta::new(a, b).unwrap())
        .collect();
    let mut r = rng(11);
    let draws = 1_000_000;
    let mut wins = vec![0u32; a.len()];
    for _ in 0..draws {
        let mut best = (f64::NEG_INFINITY, 0);
        for (i, d) in dists.iter().enumerate() {
            let v = d.sample(&mut r);
            if v > best.0 {
                best = (v, i);
            }
        }
        wins[best.1] += 1;
    }
    for (i, (&w, &e)) in wins.iter().zip(&exact).enumerate() {
        let mc = f64::from(w) / f64::from(draws);
        // 5 standard errors of the Monte Carlo estimate, plus 1e-3 for the quadrature.
        let tol = 5.0 * (mc * (1.0 - mc) / f64::from(draws)).sqrt() + 1e-3;
        assert!((mc - e).abs() < tol, "arm {i}: mc {mc} vs {e}");
    }
    assert!((exact.iter().sum::<f64>() - 1.0).abs() < 2e-3);
}

#[test]
fn thompson_propensity_with_many_arms_matches_monte_carlo() {
    // 100 arms: 60 at the prior, 40 with assorted small posteriors.
    let (ids, xs) = id_vectors(100, 64);
    let a = arms(&ids, &xs);
    let mut p = build(r#"{"type":"thompson"}"#, 64);
    let mut r = rng(5);
    for (i, arm) in a.iter().enumerate().skip(60) {
        for _ in 0..(i % 7) * 5 {
            let reward = if r.gen::<f64>() < 0.05 + 0.01 * (i % 11) as f64 {
                1.0
            } else {
                0.0
            };
            p.update(*arm, reward, 1.0);
        }
    }
    let exact = p.first_slot_distribution(&a, true, 0.0).unwrap();
    assert!(
        (exact.iter().sum::<f64>() - 1.0).abs() < 3e-3,
        "{}",
        exact.iter().sum::<f64>()
    );
    let dists: Vec<Beta<f64>> = ids
        .iter()
        .map(|id| {
            let (al, be) = p.beta_posterior(id).unwrap();
            Beta::new(al, be).unwrap()
        })
        .collect();
    let draws = 100_000;
    let mut wins = vec![0u32; a.len()];
    for _ in 0..draws {
        let mut best = (f64::NEG_INFINITY, 0);
        for (i, d) in dists.iter().enumerate() {
            let v = d.sample(&mut r);
            if v > best.0 {
                best = (v, i);
            }
        }
        wins[best.1] += 1;
    }
    for (i, (&w, &e)) in wins.iter().zip(&exact).enumerate() {
        let mc = f64::from(w) / f64::from(draws);
        let tol = 5.0 * (mc.max(1e-4) / f64::from(draws)).sqrt() + 1e-3;
        assert!((mc - e).abs() < tol, "arm {i}: mc {mc} vs {e}");
    }
}

#[test]
fn gaussian_propensity_matches_monte_carlo() {
    let (ids, xs) = id_vectors(4, 32);
    let a = arms(&ids, &xs);
    let mut p = build(r#"{"type":"gaussian_thompson","prior_mean":10}"#, 32);
    let mut r = rng(8);
    for (i, arm) in a.iter().enumerate().take(3) {
        for _ in 0..(2 + 4 * i) {
            let reward: f64 = 8.0 + i as f64 + 3.0 * r.gen::<f64>();
            p.update(*arm, reward, 1.0);
        }
    }
    let exact = p.first_slot_distribution(&a, true, 0.0).unwrap();
    let marg: Vec<(f64, f64, StudentT<f64>)> = ids
        .iter()
        .map(|id| {
            let (m, k, al, be) = p.normal_inverse_gamma_posterior(id).unwrap();
            (m, (be / (al * k)).sqrt(), StudentT::new(2.0 * al).unwrap())
        })
        .collect();
    let draws = 1_000_000;
    let mut wins = vec![0u32; a.len()];
    for _ in 0..draws {
        let mut best = (f64::NEG_INFINITY, 0);
        for (i, (m, s, t)) in marg.iter().enumerate() {
            let v = m + s * t.sample(&mut r);
            if v > best.0 {
                best = (v, i);
            }
        }
        wins[best.1] += 1;
    }
    for (i, (&w, &e)) in wins.iter().zip(&exact).enumerate() {
        let mc = f64::from(w) / f64::from(draws);
        let tol = 5.0 * (mc * (1.0 - mc) / f64::from(draws)).sqrt() + 1e-3;
        assert!((mc - e).abs() < tol, "arm {i}: mc {mc} vs {e}");
    }
}

#[test]
fn thompson_choice_frequencies_match_reported_propensities() {
    let (p, ids, xs) = mixed_thompson();
    let a = arms(&ids, &xs);
    let dist = p.first_slot_distribution(&a, true, 0.0).unwrap();
    let n = 20_000;
    let mut counts = vec![0u32; a.len()];
    let mut r = rng(21);
    for _ in 0..n {
        let c = p.choose(&a, 1, true, &mut r).unwrap()[0];
        assert!((c.probability - dist[c.index]).abs() < 1e-12);
        counts[c.index] += 1;
    }
    let chi2: f64 = counts
        .iter()
        .zip(&dist)
        .map(|(&o, &pr)| {
            let e = pr * f64::from(n);
            (f64::from(o) - e).powi(2) / e
        })
        .sum();
    // 5 degrees of freedom: P(χ² > 20.5) = 0.001.
    assert!(chi2 < 20.5, "chi2 {chi2}: {counts:?} vs {dist:?}");
}

#[test]
fn exploration_mixture_is_exact_for_thompson() {
    let (p, ids, xs) = mixed_thompson();
    let a = arms(&ids, &xs);
    let base = p.first_slot_distribution(&a, true, 0.0).unwrap();
    let mixed = p.first_slot_distribution(&a, true, 0.25).unwrap();
    for (b, m) in base.iter().zip(&mixed) {
        assert!((m - (0.75 * b + 0.25 / 6.0)).abs() < 1e-12);
    }
    let mut r = rng(2);
    for _ in 0..200 {
        let c = p
            .choose_with_exploration(&a, 1, true, 0.25, &mut r)
            .unwrap()[0];
        assert!((c.probability - mixed[c.index]).abs() < 1e-12);
    }
}

/// Cases the property test once shrank to: `linear_thompson` first-slot distributions summed to
/// 0.9924 and 0.9947 when each propensity was one 16-point rule over a wide range.
#[test]
fn linear_thompson_distributions_sum_to_one() {
    let cases: [(usize, &[(usize, f64)]); 2] = [
        (
            2,
            &[
                (1, 0.0),
                (5, 0.0),
                (1, 0.0),
                (2, 0.0),
                (1, 0.0),
                (2, 0.0),
                (0, 0.0),
                (7, 0.0),
                (0, 0.492_759),
                (5, 0.053_523),
            ],
        ),
        (
            7,
            &[
                (4, 0.523_510),
                (10, 0.702_520),
                (10, 0.0),
                (4, 0.0),
                (2, 0.0),
                (8, 0.0),
                (0, 0.0),
                (0, 0.914_800),
                (0, 0.0),
                (8, 0.0),
                (3, 0.947_680),
                (0, 0.181_979),
            ],
        ),
    ];
    for (n, updates) in cases {
        let (ids, xs) = id_vectors(n, 16);
        let a = arms(&ids, &xs);
        let mut p = build(r#"{"type":"linear_thompson"}"#, 16);
        for &(i, r) in updates {
            p.update(a[i % n], r, 0.5);
        }
        let dist = p.first_slot_distribution(&a, true, 0.0).unwrap();
        let total: f64 = dist.iter().sum();
        assert!((total - 1.0).abs() < 1e-6, "{n} arms sum to {total}");
    }
}

/// Gaussian Thompson with per-arm Student-t tables (ν = 2 at the prior, 4 and up after rewards):
/// empirical choice frequencies follow the reported propensities.
#[test]
fn gaussian_choice_frequencies_match_reported_propensities() {
    let (ids, xs) = id_vectors(8, 16);
    let a = arms(&ids, &xs);
    let mut p = build(r#"{"type":"gaussian_thompson","prior_mean":5}"#, 16);
    let mut r = rng(31);
    for (i, arm) in a.iter().enumerate().take(7) {
        for _ in 0..(2 + 3 * i) {
            let reward: f64 = 4.0 + 0.3 * i as f64 + 2.0 * r.gen::<f64>();
            p.update(*arm, reward, 1.0);
        }
    }
    let dist = p.first_slot_distribution(&a, true, 0.0).unwrap();
    assert!((dist.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{dist:?}");
    let n = 20_000;
    let mut counts = vec![0u32; a.len()];
    for _ in 0..n {
        let c = p.choose(&a, 1, true, &mut r).unwrap()[0];
        assert!((c.probability - dist[c.index]).abs() < 1e-12);
        counts[c.index] += 1;
    }
    let chi2: f64 = counts
        .iter()
        .zip(&dist)
        .map(|(&o, &pr)| {
            let e = pr * f64::from(n);
            (f64::from(o) - e).powi(2) / e
        })
        .sum();
    // 7 degrees of freedom: P(χ² > 24.3) = 0.001.
    assert!(chi2 < 24.3, "chi2 {chi2}: {counts:?} vs {dist:?}");
}

/// Snapshots written before the Student-t tables (the per-arm Gaussian statistics were a tuple)
/// and before the quintic Beta tables decode unchanged, and the tables are rebuilt after loading:
/// the decoded policy reports the same posteriors and honest first-slot distributions.
#[test]
fn snapshots_from_before_the_tables_decode() {
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let ids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let (_, xs) = id_vectors(3, 8);
    let a = arms(&ids, &xs);
    let thompson: Policy = postcard::from_bytes(&hex(THOMPSON_BEFORE)).unwrap();
    let posts: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|id| thompson.beta_posterior(id).unwrap())
        .collect();
    assert_eq!(posts, [(4.0, 1.0), (1.0, 3.0), (2.0, 2.0)]);
    let gaussian: Policy = postcard::from_bytes(&hex(GAUSSIAN_BEFORE)).unwrap();
    let c = gaussian.normal_inverse_gamma_posterior("c").unwrap();
    assert_eq!(c, (1.0, 3.0, 2.0, 2.0));
    let b = gaussian.normal_inverse_gamma_posterior("b").unwrap();
    assert!((b.0 - 2.0 / 3.0).abs() < 1e-15 && b.1 == 3.0 && b.2 == 2.0);
    for (p, before) in [(&thompson, THOMPSON_BEFORE), (&gaussian, GAUSSIAN_BEFORE)] {
        p.check_state().unwrap();
        let dist = p.first_slot_distribution(&a, true, 0.0).unwrap();
        // Within the 1e-4 budget (measured: 1.7e-5 for these three small Gaussian posteriors).
        assert!((dist.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{dist:?}");
        // Re-encoding after the tables were built takes the same number of bytes (the arms'
        // map order may differ): the tables are not persisted.
        assert_eq!(postcard::to_stdvec(p).unwrap().len(), before.len() / 2);
    }
}

/// `{"type":"thompson"}` after rewards 1, 0, 0, 3.5, 0, 1, 2 to arms a, b, c, a, b, c, a (dimension
/// 8), postcard-encoded by the code before this change.
const THOMPSON_BEFORE: &str = "00000000000000f03f000000000000f03f000807000000000000f03f00000000000000f03f000000000000f03f03016200000000000000000000000000000040050163000000000000f03f000000000000f03f0601610000000000000840000000000000000007";
/// `{"type":"gaussian_thompson","prior_mean":2}` after the same rewards.
const GAUSSIAN_BEFORE: &str = "010000000000000040000000000000f03f000000000000f03f000000000000f03f000807000000000000f03f010000000000000040000000000000f03f000000000000f03f000000000000f03f0301620000000000000040000000000000000000000000000000000501630000000000000040000000000000e03f000000000000e03f06016100000000000008405555555555550140555555555555094007";

/// Rewards only queue their arms' tables; `warm` builds them. Whether a table was built by
/// `warm` after a batch of rewards or on demand by the next decide, the choices and their
/// reported probabilities are the same.
#[test]
fn warming_after_many_rewards_changes_no_choice_or_probability() {
    for json in [r#"{"type":"thompson"}"#, r#"{"type":"gaussian_thompson"}"#] {
        let (ids, xs) = id_vectors(8, 16);
        let a = arms(&ids, &xs);
        let mut cold = build(json, 16);
        let mut r = rng(5);
        for k in 0..600 {
            let i = r.gen_range(0..a.len());
            let v = if r.gen::<f64>() < 0.1 + 0.05 * i as f64 {
                1.0
            } else {
                0.0
            };
            cold.update_at(a[i], v, 0.5, 1_000 + k);
        }
        let mut warm = cold.clone();
        warm.warm();
        // Warming twice is the same as once (the queue is drained).
        warm.warm();
        let dist_cold = cold.first_slot_distribution(&a, true, 0.0).unwrap();
        let dist_warm = warm.first_slot_distribution(&a, true, 0.0).unwrap();
        for (c, w) in dist_cold.iter().zip(&dist_warm) {
            assert!((c - w).abs() < 1e-12, "{json}: {c} vs {w}");
        }
        assert!((dist_warm.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{json}");
        let (mut r1, mut r2) = (rng(9), rng(9));
        for _ in 0..200 {
            let c = cold.choose(&a, 2, true, &mut r1).unwrap();
            let w = warm.choose(&a, 2, true, &mut r2).unwrap();
            assert_eq!(c.len(), w.len());
            for (c, w) in c.iter().zip(&w) {
                assert_eq!(c.index, w.index, "{json}");
                assert!((c.probability - w.probability).abs() < 1e-12, "{json}");
            }
        }
    }
}
