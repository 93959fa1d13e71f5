//! Property tests: probabilities are valid and first-slot distributions sum to one.

use proptest::prelude::*;

use super::{arms, build, id_vectors, rng, ALL};

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn probabilities_are_valid_and_distributions_sum_to_one(
        which in 0..ALL.len(),
        n in 1usize..12,
        k in 1usize..5,
        exploration in prop_oneof![Just(0.0), 0.0..1.0f64],
        explore in any::<bool>(),
        updates in prop::collection::vec((0usize..12, 0.0..1.0f64), 0..60),
        seed in any::<u64>(),
    ) {
        let (ids, xs) = id_vectors(n, 16);
        let a = arms(&ids, &xs);
        let mut p = build(ALL[which], 16);
        for (i, r) in updates {
            p.update(a[i % n], r, 0.5);
        }
        let c = p.choose_with_exploration(&a, k, explore, exploration, &mut rng(seed)).unwrap();
        prop_assert_eq!(c.len(), k.min(n));
        for ch in &c {
            prop_assert!(ch.probability > 0.0 && ch.probability <= 1.0, "{:?}", ch);
        }
        let dist = p.first_slot_distribution(&a, explore, exploration).unwrap();
        let total: f64 = dist.iter().sum();
        // Normal and Student marginals integrate to 1e-6; Beta densities with a parameter in
        // (1, 2) have unbounded slope at an end and tabulated CDFs err by up to 2e-4.
        let tolerance = if ALL[which].contains("linear_thompson")
            || ALL[which].contains("gaussian_thompson")
        {
            1e-4
        } else {
            5e-3
        };
        prop_assert!((total - 1.0).abs() < tolerance, "{} sums to {}", ALL[which], total);
        prop_assert!((dist[c[0].index] - c[0].probability).abs() < 1e-9
            || c[0].probability == tailor_policies::propensity::MIN_PROPENSITY);
    }
}
