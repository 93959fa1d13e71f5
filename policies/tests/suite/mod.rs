mod boosts;
mod config;
mod learning;
mod propensities;
mod props;

use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;
use tailor_policies::{Arm, FeaturizerConfig, Policy, PolicyConfig, SparseFeatures, SparseVec};

pub fn rng(seed: u64) -> Pcg64Mcg {
    Pcg64Mcg::seed_from_u64(seed)
}

/// `n` candidates `arm-0..` hashed with no features other than the id (and bias).
pub fn id_vectors(n: usize, dimension: usize) -> (Vec<String>, Vec<SparseVec>) {
    let f = FeaturizerConfig {
        dimension,
        interactions: false,
        context_features: false,
    }
    .build()
    .unwrap();
    let ids: Vec<String> = (0..n).map(|i| format!("arm-{i}")).collect();
    let empty = SparseFeatures::new();
    let xs = ids.iter().map(|id| f.vector(&empty, id, &empty)).collect();
    (ids, xs)
}

pub fn arms<'a>(ids: &'a [String], xs: &'a [SparseVec]) -> Vec<Arm<'a>> {
    ids.iter().zip(xs).map(|(id, x)| Arm { id, x }).collect()
}

pub fn build(json: &str, dimension: usize) -> Policy {
    let c: PolicyConfig = serde_json::from_str(json).unwrap();
    c.build(dimension).unwrap()
}

/// One configuration of every policy type.
pub const ALL: &[&str] = &[
    r#"{"type":"thompson"}"#,
    r#"{"type":"gaussian_thompson"}"#,
    r#"{"type":"linucb"}"#,
    r#"{"type":"linucb_disjoint"}"#,
    r#"{"type":"linear_thompson"}"#,
    r#"{"type":"epsilon_greedy","epsilon":0.2}"#,
    r#"{"type":"epsilon_greedy","epsilon":0.1,"estimator":"ridge"}"#,
    r#"{"type":"uniform"}"#,
    r#"{"type":"fixed"}"#,
    r#"{"type":"thompson","half_life":50}"#,
    r#"{"type":"linucb","half_life":50}"#,
    r#"{"type":"sparse_linucb"}"#,
    r#"{"type":"sparse_linucb","alpha":0.5,"half_life":50}"#,
];
