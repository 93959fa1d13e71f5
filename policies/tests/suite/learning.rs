//! Simulated learning: 10 arms, one converting at 30%, the rest at 2%; after 3000 rounds the
//! best arm should dominate the last 500.

use rand::Rng;

use super::{arms, build, id_vectors, rng};

fn best_arm_share(json: &str, seed: u64) -> f64 {
    let (ids, xs) = id_vectors(10, 64);
    let a = arms(&ids, &xs);
    let mut p = build(json, 64);
    let mut r = rng(seed);
    let mut best = 0;
    for round in 0..3000 {
        let c = p.choose(&a, 1, true, &mut r).unwrap()[0];
        assert!(c.probability > 0.0 && c.probability <= 1.0);
        let rate = if c.index == 7 { 0.30 } else { 0.02 };
        let reward = if r.gen::<f64>() < rate { 1.0 } else { 0.0 };
        p.update(a[c.index], reward, c.probability);
        if round >= 2500 && c.index == 7 {
            best += 1;
        }
    }
    f64::from(best) / 500.0
}

#[test]
fn thompson_learns() {
    let s = best_arm_share(r#"{"type":"thompson"}"#, 1);
    assert!(s > 0.85, "{s}");
}

#[test]
fn linucb_learns_from_ids_alone() {
    let s = best_arm_share(r#"{"type":"linucb","alpha":0.5}"#, 2);
    assert!(s > 0.8, "{s}");
}

#[test]
fn linucb_disjoint_learns() {
    let s = best_arm_share(r#"{"type":"linucb_disjoint","alpha":0.5}"#, 3);
    assert!(s > 0.8, "{s}");
}

#[test]
fn linear_thompson_learns() {
    let s = best_arm_share(r#"{"type":"linear_thompson","scale":0.3}"#, 4);
    assert!(s > 0.8, "{s}");
}

#[test]
fn gaussian_thompson_learns() {
    let s = best_arm_share(
        r#"{"type":"gaussian_thompson","prior_mean":0.5,"prior_scale":0.25}"#,
        5,
    );
    assert!(s > 0.8, "{s}");
}

#[test]
fn epsilon_greedy_learns() {
    let s = best_arm_share(r#"{"type":"epsilon_greedy","epsilon":0.1}"#, 6);
    assert!(s > 0.8, "{s}");
}

#[test]
fn forgetting_follows_a_change() {
    // The best arm moves from 7 to 2 halfway; with a half-life Thompson follows.
    let (ids, xs) = id_vectors(10, 64);
    let a = arms(&ids, &xs);
    let mut p = build(r#"{"type":"thompson","half_life":300}"#, 64);
    let mut r = rng(9);
    let mut late = 0;
    for round in 0..4000 {
        let c = p.choose(&a, 1, true, &mut r).unwrap()[0];
        let good = if round < 2000 { 7 } else { 2 };
        let rate = if c.index == good { 0.30 } else { 0.02 };
        let reward = if r.gen::<f64>() < rate { 1.0 } else { 0.0 };
        p.update(a[c.index], reward, c.probability);
        if round >= 3500 && c.index == 2 {
            late += 1;
        }
    }
    assert!(late > 350, "{late}");
}
