//! Merchandising factors (issue 22): boosted choices report the probabilities they were made
//! with, for every policy type, and a boost promotes while a bury demotes.

use rand::Rng;
use tailor_policies::Policy;

use super::{arms, build, id_vectors, rng, ALL};

/// Six arms, every policy type trained on the same rewards (arm 2 best, arm 4 worst).
fn trained(json: &str) -> (Policy, Vec<String>, Vec<tailor_policies::SparseVec>) {
    let (ids, xs) = id_vectors(6, 32);
    let a = arms(&ids, &xs);
    let mut p = build(json, 32);
    let mut r = rng(4);
    for step in 0..300 {
        let i = step % 6;
        let rate = [0.3, 0.4, 0.6, 0.35, 0.1, 0.3][i];
        let reward = if r.gen::<f64>() < rate { 1.0 } else { 0.0 };
        p.update(a[i], reward, 1.0);
    }
    (p, ids, xs)
}

const BOOSTS: [f64; 6] = [3.0, 0.5, 1.0, 1.0, 4.0, 0.2];

/// For every policy: the boosted first-slot distribution sums to 1, each choice reports the
/// probability of that distribution, and the choices follow it (χ² over 20,000 seeded draws).
#[test]
fn boosted_choices_report_their_probabilities_for_every_policy() {
    for json in ALL {
        let (p, ids, xs) = trained(json);
        let a = arms(&ids, &xs);
        let dist = p
            .first_slot_distribution_boosted(&a, true, 0.1, &BOOSTS)
            .unwrap();
        let sum: f64 = dist.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{json}: sums to {sum}: {dist:?}");
        let n = 20_000;
        let mut counts = [0u32; 6];
        let mut r = rng(9);
        for _ in 0..n {
            let c = p.choose_boosted(&a, 1, true, 0.1, &BOOSTS, &mut r).unwrap()[0];
            assert!(
                (c.probability - dist[c.index].max(1e-9)).abs() < 1e-9,
                "{json}: {} vs {}",
                c.probability,
                dist[c.index]
            );
            counts[c.index] += 1;
        }
        let chi2: f64 = counts
            .iter()
            .zip(&dist)
            .filter(|(_, &pr)| pr > 1e-6)
            .map(|(&o, &pr)| {
                let e = pr * f64::from(n);
                (f64::from(o) - e).powi(2) / e
            })
            .sum();
        // At most 5 degrees of freedom: P(χ² > 20.5) = 0.001.
        assert!(chi2 < 20.5, "{json}: chi2 {chi2}: {counts:?} vs {dist:?}");
    }
}

/// Slates: every slot's probability is the boosted probability over what the slots above left.
#[test]
fn boosted_slates_report_conditional_probabilities() {
    for json in ALL {
        let (p, ids, xs) = trained(json);
        let a = arms(&ids, &xs);
        let mut r = rng(12);
        for _ in 0..50 {
            let slate = p
                .choose_boosted(&a, 3, true, 0.05, &BOOSTS, &mut r)
                .unwrap();
            assert_eq!(slate.len(), 3);
            let mut left: Vec<usize> = (0..6).collect();
            for c in &slate {
                let sub: Vec<_> = left.iter().map(|&i| a[i]).collect();
                let b: Vec<f64> = left.iter().map(|&i| BOOSTS[i]).collect();
                let d = p
                    .first_slot_distribution_boosted(&sub, true, 0.05, &b)
                    .unwrap();
                let at = left.iter().position(|&i| i == c.index).unwrap();
                assert!(
                    (c.probability - d[at].max(1e-9)).abs() < 1e-9,
                    "{json}: slot probability {} vs {}",
                    c.probability,
                    d[at]
                );
                left.remove(at);
            }
        }
    }
}

/// A boost raises an arm's chance of the first slot, a bury lowers it (every policy that ranks
/// by its knowledge or a uniform draw); factors of 1 change nothing (draw for draw without a
/// uniform share, whose weighted draw reads the generator differently).
#[test]
fn boosts_promote_buries_demote_and_ones_change_nothing() {
    for json in ALL {
        let (p, ids, xs) = trained(json);
        let a = arms(&ids, &xs);
        let plain = p.first_slot_distribution(&a, true, 0.1).unwrap();
        let ones = p
            .first_slot_distribution_boosted(&a, true, 0.1, &[1.0; 6])
            .unwrap();
        for (x, y) in plain.iter().zip(&ones) {
            assert!((x - y).abs() < 1e-9, "{json}: {plain:?} vs {ones:?}");
        }
        let mut b = [1.0; 6];
        b[4] = 10.0; // the worst arm, boosted
        b[2] = 0.1; // the best arm, buried
        let boosted = p
            .first_slot_distribution_boosted(&a, true, 0.1, &b)
            .unwrap();
        assert!(
            boosted[4] >= plain[4],
            "{json}: boost {plain:?} -> {boosted:?}"
        );
        assert!(
            boosted[2] <= plain[2],
            "{json}: bury {plain:?} -> {boosted:?}"
        );
        let (mut r1, mut r2) = (rng(5), rng(5));
        for _ in 0..20 {
            let x = p
                .choose_with_exploration(&a, 2, true, 0.0, &mut r1)
                .unwrap();
            let y = p
                .choose_boosted(&a, 2, true, 0.0, &[1.0; 6], &mut r2)
                .unwrap();
            if !json.contains("uniform") && !json.contains("epsilon") {
                assert_eq!(
                    x.iter().map(|c| c.index).collect::<Vec<_>>(),
                    y.iter().map(|c| c.index).collect::<Vec<_>>(),
                    "{json}"
                );
            }
        }
    }
}

#[test]
fn bad_factors_are_refused() {
    let (p, ids, xs) = trained(r#"{"type":"thompson"}"#);
    let a = arms(&ids, &xs);
    let mut r = rng(1);
    assert!(p
        .choose_boosted(&a, 1, true, 0.0, &[1.0; 5], &mut r)
        .is_err());
    let mut b = [1.0; 6];
    b[3] = 0.0;
    assert!(p.choose_boosted(&a, 1, true, 0.0, &b, &mut r).is_err());
    b[3] = f64::NAN;
    assert!(p.choose_boosted(&a, 1, true, 0.0, &b, &mut r).is_err());
}

/// `explain` reports the posterior mean and spread of a Beta arm, and LinUCB's bound.
#[test]
fn explain_reports_mean_spread_and_score() {
    let (p, ids, xs) = trained(r#"{"type":"thompson"}"#);
    let a = arms(&ids, &xs);
    let (al, be) = p.beta_posterior(&ids[2]).unwrap();
    let e = p.explain(a[2], true).unwrap();
    assert!((e.mean - al / (al + be)).abs() < 1e-12);
    assert!(e.sd.unwrap() > 0.0 && e.score.is_none());
    let (p, ids, xs) = trained(r#"{"type":"linucb","alpha":1.0}"#);
    let a = arms(&ids, &xs);
    let e = p.explain(a[2], true).unwrap();
    assert!((e.score.unwrap() - (e.mean + e.sd.unwrap())).abs() < 1e-9);
    assert!((e.mean - p.estimate(a[2]).unwrap()).abs() < 1e-12);
    let (p, ids, xs) = trained(r#"{"type":"uniform"}"#);
    assert!(p.explain(arms(&ids, &xs)[0], true).is_none());
}
