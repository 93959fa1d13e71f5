//! Policy benches: `choose` (one slot, exploring) and `update` per policy, swept over the number
//! of candidates and the feature dimension, plus the featurizer.
//!
//! Candidates carry realistic hashed vectors: an id, three item features and, with interactions,
//! five context features crossed with them. Every policy is warmed with 2000 seeded rewards first
//! so its state is not the trivial prior (for Thompson this is the expensive case for the
//! propensity: many distinct posteriors).
//!
//! Run: `cargo bench -p tailor-benches --bench policies -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use tailor_policies::{Arm, FeaturizerConfig, Policy, PolicyConfig, SparseFeatures, SparseVec};

const POLICIES: &[(&str, bool)] = &[
    // (config, uses the feature vector)
    (r#"{"type":"thompson"}"#, false),
    (r#"{"type":"gaussian_thompson"}"#, false),
    (r#"{"type":"linucb"}"#, true),
    (r#"{"type":"linear_thompson"}"#, true),
    (r#"{"type":"linucb_disjoint"}"#, true),
    (r#"{"type":"epsilon_greedy","epsilon":0.1}"#, false),
    (r#"{"type":"uniform"}"#, false),
];

const ARMS: &[usize] = &[10, 100, 1000];
const DIMS: &[usize] = &[8, 32, 64];

fn context() -> SparseFeatures {
    let mut c = SparseFeatures::new();
    c.push_categorical("user", "segment", "gold");
    c.push_categorical("user", "device", "mobile");
    c.push_numeric("user", "visits", 3.0);
    c.push_set("user", "affinity", ["shoes", "outdoor"]);
    c
}

fn candidates(n: usize, dimension: usize) -> (Vec<String>, Vec<SparseVec>) {
    let f = FeaturizerConfig {
        dimension,
        interactions: true,
        context_features: false,
    }
    .build()
    .expect("valid featurizer");
    let ctx = context();
    let ids: Vec<String> = (0..n).map(|i| format!("sku-{i}")).collect();
    let xs = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut a = SparseFeatures::new();
            a.push_categorical("item", "brand", &format!("brand-{}", i % 17));
            a.push_categorical("item", "category", &format!("cat-{}", i % 5));
            a.push_numeric("item", "price", 5.0 + (i % 40) as f64);
            f.vector(&ctx, id, &a)
        })
        .collect();
    (ids, xs)
}

fn warmed(json: &str, dimension: usize, arms: &[Arm<'_>]) -> Policy {
    let config: PolicyConfig = serde_json::from_str(json).expect("valid config");
    let mut p = config.build(dimension).expect("valid policy");
    let mut rng = Pcg64Mcg::seed_from_u64(1);
    for _ in 0..2000 {
        let i = rng.gen_range(0..arms.len());
        let r = if rng.gen::<f64>() < 0.05 + 0.2 * (i % 3) as f64 / 3.0 {
            1.0
        } else {
            0.0
        };
        p.update(arms[i], r, 0.5);
    }
    p
}

fn name(json: &str) -> String {
    let c: PolicyConfig = serde_json::from_str(json).expect("valid config");
    c.kind().to_owned()
}

fn bench_choose(c: &mut Criterion) {
    let mut group = c.benchmark_group("choose");
    for &(json, linear) in POLICIES {
        let dims: &[usize] = if linear { DIMS } else { &[32] };
        for &d in dims {
            for &n in ARMS {
                if json.contains("disjoint") && n * d * d > 1000 * 32 * 32 {
                    // Per-arm d² state: the largest sweeps only measure memory traffic.
                    continue;
                }
                let (ids, xs) = candidates(n, d);
                let arms: Vec<Arm<'_>> = ids.iter().zip(&xs).map(|(id, x)| Arm { id, x }).collect();
                let p = warmed(json, d, &arms);
                let mut rng = Pcg64Mcg::seed_from_u64(2);
                group.throughput(Throughput::Elements(n as u64));
                group.bench_with_input(
                    BenchmarkId::new(format!("{}/d{d}", name(json)), n),
                    &arms,
                    |b, arms| b.iter(|| black_box(p.choose(arms, 1, true, &mut rng))),
                );
            }
        }
    }
    // LinUCB when candidates carry only their id (three nonzeros): the sparse quadratic form.
    for &d in DIMS {
        for &n in ARMS {
            let f = FeaturizerConfig {
                dimension: d,
                interactions: false,
                context_features: false,
            }
            .build()
            .expect("valid featurizer");
            let empty = SparseFeatures::new();
            let ids: Vec<String> = (0..n).map(|i| format!("sku-{i}")).collect();
            let xs: Vec<SparseVec> = ids.iter().map(|id| f.vector(&empty, id, &empty)).collect();
            let arms: Vec<Arm<'_>> = ids.iter().zip(&xs).map(|(id, x)| Arm { id, x }).collect();
            let p = warmed(r#"{"type":"linucb"}"#, d, &arms);
            let mut rng = Pcg64Mcg::seed_from_u64(2);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("linucb-ids/d{d}"), n),
                &arms,
                |b, arms| b.iter(|| black_box(p.choose(arms, 1, true, &mut rng))),
            );
        }
    }
    // The cold start: every arm at the shared prior (the grouped fast path).
    for &n in ARMS {
        let (ids, xs) = candidates(n, 32);
        let arms: Vec<Arm<'_>> = ids.iter().zip(&xs).map(|(id, x)| Arm { id, x }).collect();
        let p = PolicyConfig::default().build(32).expect("valid policy");
        let mut rng = Pcg64Mcg::seed_from_u64(3);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new("thompson-cold/d32", n),
            &arms,
            |b, arms| b.iter(|| black_box(p.choose(arms, 1, true, &mut rng))),
        );
        // Greedy serving: no draws, no propensity integral.
        let (ids, xs) = candidates(n, 32);
        let arms: Vec<Arm<'_>> = ids.iter().zip(&xs).map(|(id, x)| Arm { id, x }).collect();
        let p = warmed(r#"{"type":"thompson"}"#, 32, &arms);
        group.bench_with_input(
            BenchmarkId::new("thompson-greedy/d32", n),
            &arms,
            |b, arms| b.iter(|| black_box(p.choose(arms, 1, false, &mut rng))),
        );
    }
    group.finish();
}

/// Thompson-style choose + propensity over 100 candidates whose posteriors are all distinct and
/// span tiny to large counts (2 to ~25,000 rewards per arm, success rates 3–7 %): every other
/// candidate is its own group in the propensity integral, the most expensive shape.
fn bench_propensity(c: &mut Criterion) {
    let mut group = c.benchmark_group("propensity");
    let n = 100;
    let (ids, xs) = candidates(n, 32);
    let arms: Vec<Arm<'_>> = ids.iter().zip(&xs).map(|(id, x)| Arm { id, x }).collect();
    let counts = |i: usize| (2.0 * 1.1f64.powi(i as i32)).round() as usize;
    let rate = |i: usize| 0.03 + 0.04 * ((i * 37) % 100) as f64 / 100.0;
    let mut thompson = PolicyConfig::default().build(32).expect("valid policy");
    let mut gaussian: Policy =
        serde_json::from_str::<PolicyConfig>(r#"{"type":"gaussian_thompson"}"#)
            .expect("valid config")
            .build(32)
            .expect("valid policy");
    let mut rng = Pcg64Mcg::seed_from_u64(4);
    for (i, arm) in arms.iter().enumerate() {
        let total = counts(i);
        let ones = (rate(i) * total as f64).round() as usize;
        for k in 0..total {
            thompson.update(*arm, if k < ones { 1.0 } else { 0.0 }, 0.5);
            let revenue = if rng.gen::<f64>() < rate(i) {
                20.0 + 10.0 * rng.gen::<f64>()
            } else {
                0.0
            };
            gaussian.update(*arm, revenue, 0.5);
        }
    }
    group.throughput(Throughput::Elements(n as u64));
    for (label, p) in [("thompson", &thompson), ("gaussian_thompson", &gaussian)] {
        let mut rng = Pcg64Mcg::seed_from_u64(5);
        group.bench_with_input(
            BenchmarkId::new(format!("{label}-distinct"), n),
            &arms,
            |b, arms| b.iter(|| black_box(p.choose(arms, 1, true, &mut rng))),
        );
    }
    group.finish();
}

fn bench_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("update");
    group.throughput(Throughput::Elements(1));
    for &(json, linear) in POLICIES {
        if json.contains("uniform") {
            continue;
        }
        let dims: &[usize] = if linear { DIMS } else { &[32] };
        for &d in dims {
            let n = 100;
            let (ids, xs) = candidates(n, d);
            let arms: Vec<Arm<'_>> = ids.iter().zip(&xs).map(|(id, x)| Arm { id, x }).collect();
            let mut p = warmed(json, d, &arms);
            let mut i = 0;
            group.bench_function(BenchmarkId::new(name(json), format!("d{d}")), |b| {
                b.iter(|| {
                    i = (i + 1) % n;
                    p.update(arms[i], (i % 2) as f64, 0.5);
                })
            });
        }
    }
    group.finish();
}

fn bench_featurizer(c: &mut Criterion) {
    let mut group = c.benchmark_group("featurize");
    group.throughput(Throughput::Elements(1));
    let ctx = context();
    let mut a = SparseFeatures::new();
    a.push_categorical("item", "brand", "acme");
    a.push_categorical("item", "category", "shoes");
    a.push_numeric("item", "price", 49.0);
    for &d in DIMS {
        let f = FeaturizerConfig {
            dimension: d,
            ..FeaturizerConfig::default()
        }
        .build()
        .expect("valid featurizer");
        group.bench_function(BenchmarkId::new("vector", format!("d{d}")), |b| {
            b.iter(|| black_box(f.vector(&ctx, "sku-42", &a)))
        });
    }
    group.finish();
}

/// Large hashed spaces (issue 20): `sparse_linucb` at 2^12, 2^16 and 2^18 dimensions against
/// `linucb` at 64 and 1024, same request shape (100 candidates, 36 nonzeros each): `choose`
/// (one slot, exploring), `update`, and a decision followed by its update.
///
/// Run: `cargo bench -p tailor-benches --bench policies -- wide/`
fn bench_wide(c: &mut Criterion) {
    let mut group = c.benchmark_group("wide");
    let cases: &[(&str, &str, usize)] = &[
        ("linucb", r#"{"type":"linucb","alpha":0.2}"#, 64),
        ("linucb", r#"{"type":"linucb","alpha":0.2}"#, 1024),
        ("sparse_linucb", r#"{"type":"sparse_linucb"}"#, 1 << 12),
        ("sparse_linucb", r#"{"type":"sparse_linucb"}"#, 1 << 16),
        ("sparse_linucb", r#"{"type":"sparse_linucb"}"#, 1 << 18),
    ];
    let n = 100;
    for &(kind, json, d) in cases {
        let (ids, xs) = candidates(n, d);
        let arms: Vec<Arm<'_>> = ids.iter().zip(&xs).map(|(id, x)| Arm { id, x }).collect();
        let mut p = warmed(json, d, &arms);
        let mut rng = Pcg64Mcg::seed_from_u64(2);
        group.bench_function(BenchmarkId::new(format!("choose/{kind}"), d), |b| {
            b.iter(|| black_box(p.choose(&arms, 1, true, &mut rng)))
        });
        let mut i = 0;
        group.bench_function(BenchmarkId::new(format!("update/{kind}"), d), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                p.update(arms[i], (i % 2) as f64, 0.5);
            })
        });
        group.bench_function(BenchmarkId::new(format!("choose+update/{kind}"), d), |b| {
            b.iter(|| {
                let c = p.choose(&arms, 1, true, &mut rng).expect("candidates")[0];
                let r = if c.index.is_multiple_of(3) { 1.0 } else { 0.0 };
                p.update(arms[c.index], r, c.probability);
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_choose,
    bench_propensity,
    bench_update,
    bench_featurizer,
    bench_wide
);
criterion_main!(benches);
