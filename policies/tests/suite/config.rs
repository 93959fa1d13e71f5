use rand::Rng;
use tailor_policies::{Policy, PolicyConfig, PolicyError};

use super::{arms, build, id_vectors, rng, ALL};

#[test]
fn wire_shapes_parse() {
    let c: PolicyConfig =
        serde_json::from_str(r#"{"type":"thompson","prior_alpha":1,"prior_beta":1}"#).unwrap();
    assert_eq!(c.kind(), "thompson");
    let c: PolicyConfig =
        serde_json::from_str(r#"{"type":"linucb","alpha":1.0,"lambda":1.0}"#).unwrap();
    assert_eq!(c.kind(), "linucb");
    for json in ALL {
        let c: PolicyConfig = serde_json::from_str(json).unwrap();
        let back: PolicyConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(c, back);
        assert!(json.contains(c.kind()));
    }
    assert!(serde_json::from_str::<PolicyConfig>(r#"{"type":"thompson","alfa":2}"#).is_err());
    assert!(serde_json::from_str::<PolicyConfig>(r#"{"type":"nope"}"#).is_err());
}

#[test]
fn invalid_fields_are_named() {
    let cases = [
        (r#"{"type":"thompson","prior_alpha":0}"#, "prior_alpha"),
        (r#"{"type":"thompson","prior_beta":-1}"#, "prior_beta"),
        (r#"{"type":"thompson","half_life":0.5}"#, "half_life"),
        (r#"{"type":"linucb","alpha":0}"#, "alpha"),
        (r#"{"type":"linucb","lambda":-2}"#, "lambda"),
        (r#"{"type":"linucb_disjoint","lambda":0}"#, "lambda"),
        (r#"{"type":"linear_thompson","scale":0}"#, "scale"),
        (r#"{"type":"epsilon_greedy","epsilon":1.5}"#, "epsilon"),
        (r#"{"type":"sparse_linucb","alpha":-1}"#, "alpha"),
        (r#"{"type":"sparse_linucb","alpha":10.5}"#, "alpha"),
        (r#"{"type":"sparse_linucb","lambda":0}"#, "lambda"),
        (r#"{"type":"sparse_linucb","lambda":1e5}"#, "lambda"),
        (r#"{"type":"sparse_linucb","half_life":0}"#, "half_life"),
        (
            r#"{"type":"gaussian_thompson","prior_scale":0}"#,
            "prior_scale",
        ),
        (
            r#"{"type":"gaussian_thompson","prior_count":-1}"#,
            "prior_count",
        ),
    ];
    for (json, field) in cases {
        let c: PolicyConfig = serde_json::from_str(json).unwrap();
        match c.build(8) {
            Err(PolicyError::InvalidConfig { field: f, .. }) => assert_eq!(f, field, "{json}"),
            other => panic!("{json}: {other:?}"),
        }
    }
    let c = PolicyConfig::LinUcb {
        alpha: f64::NAN,
        lambda: 1.0,
        half_life: None,
    };
    assert!(matches!(
        c.build(8),
        Err(PolicyError::InvalidConfig { field: "alpha", .. })
    ));
    assert!(matches!(
        PolicyConfig::default().build(0),
        Err(PolicyError::InvalidConfig {
            field: "dimension",
            ..
        })
    ));
}

#[test]
fn empty_candidates_and_bad_exploration_are_errors() {
    let p = PolicyConfig::default().build(8).unwrap();
    assert_eq!(
        p.choose(&[], 1, true, &mut rng(1)),
        Err(PolicyError::NoCandidates)
    );
    let (ids, xs) = id_vectors(3, 8);
    let a = arms(&ids, &xs);
    assert!(matches!(
        p.choose_with_exploration(&a, 1, true, 1.5, &mut rng(1)),
        Err(PolicyError::InvalidConfig {
            field: "exploration",
            ..
        })
    ));
}

#[test]
fn postcard_round_trip_keeps_state_and_decisions() {
    let (ids, xs) = id_vectors(12, 16);
    let a = arms(&ids, &xs);
    for json in ALL {
        let mut p = build(json, 16);
        let mut r = rng(3);
        for t in 0..200 {
            let i = t % a.len();
            let reward = if r.gen::<f64>() < 0.1 * (i % 3) as f64 {
                1.0
            } else {
                0.0
            };
            p.update(a[i], reward, 0.5);
        }
        let bytes = postcard::to_allocvec(&p).unwrap();
        let q: Policy = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(q.config(), p.config(), "{json}");
        assert_eq!(q.rewards_seen(), p.rewards_seen());
        let x = p.choose(&a, 3, true, &mut rng(9)).unwrap();
        let y = q.choose(&a, 3, true, &mut rng(9)).unwrap();
        assert_eq!(x, y, "{json}");
        for arm in &a {
            assert_eq!(p.estimate(*arm), q.estimate(*arm));
        }
    }
}

#[test]
fn slots_are_distinct_and_capped() {
    let (ids, xs) = id_vectors(5, 16);
    let a = arms(&ids, &xs);
    for json in ALL {
        let p = build(json, 16);
        let c = p.choose(&a, 10, true, &mut rng(4)).unwrap();
        assert_eq!(c.len(), 5, "{json}");
        let mut idx: Vec<usize> = c.iter().map(|c| c.index).collect();
        idx.sort_unstable();
        assert_eq!(idx, vec![0, 1, 2, 3, 4]);
        // The last slot has one candidate left.
        assert_eq!(c[4].probability, 1.0);
    }
}

#[test]
fn fixed_serves_the_given_order() {
    let (ids, xs) = id_vectors(4, 8);
    let a = arms(&ids, &xs);
    let p = build(r#"{"type":"fixed"}"#, 8);
    let c = p.choose(&a, 3, true, &mut rng(1)).unwrap();
    assert_eq!(
        c.iter()
            .map(|c| (c.index, c.probability))
            .collect::<Vec<_>>(),
        vec![(0, 1.0), (1, 1.0), (2, 1.0)]
    );
    // Mixed with 20% uniform exploration: the exact mixture.
    let c = p
        .choose_with_exploration(&a, 1, true, 0.2, &mut rng(1))
        .unwrap();
    let want = if c[0].index == 0 { 0.8 + 0.05 } else { 0.05 };
    assert!((c[0].probability - want).abs() < 1e-12);
}

#[test]
fn greedy_serving_is_deterministic_with_split_ties() {
    let (ids, xs) = id_vectors(4, 64);
    let a = arms(&ids, &xs);
    let mut p = build(r#"{"type":"thompson"}"#, 64);
    // No data: all four tie on the posterior mean.
    let c = p.choose(&a, 1, false, &mut rng(1)).unwrap();
    assert!((c[0].probability - 0.25).abs() < 1e-12);
    p.update(a[2], 1.0, 1.0);
    for seed in 0..5 {
        let c = p.choose(&a, 2, false, &mut rng(seed)).unwrap();
        assert_eq!(c[0].index, 2);
        assert_eq!(c[0].probability, 1.0);
        assert!((c[1].probability - 1.0 / 3.0).abs() < 1e-12);
    }
    // Exploration is ignored when not exploring.
    let c = p
        .choose_with_exploration(&a, 1, false, 0.5, &mut rng(1))
        .unwrap();
    assert_eq!((c[0].index, c[0].probability), (2, 1.0));
}

#[test]
fn exploration_mixture_is_exact_for_linucb() {
    let (ids, xs) = id_vectors(5, 64);
    let a = arms(&ids, &xs);
    let mut p = build(r#"{"type":"linucb","alpha":0.1}"#, 64);
    for _ in 0..20 {
        p.update(a[1], 1.0, 1.0);
    }
    let mut seen_other = false;
    for seed in 0..50 {
        let c = p
            .choose_with_exploration(&a, 1, true, 0.3, &mut rng(seed))
            .unwrap();
        let want = if c[0].index == 1 {
            0.7 + 0.3 / 5.0
        } else {
            0.3 / 5.0
        };
        assert!((c[0].probability - want).abs() < 1e-12);
        seen_other |= c[0].index != 1;
    }
    assert!(seen_other);
}
