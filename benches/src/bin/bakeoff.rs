//! The learning bake-off (docs/learning.md, issue 20): supervised multiclass streams played as
//! contextual bandits, in process (no HTTP), five seeds each.
//!
//! Each example is one decision: the context is the example's numeric features (`f0`, `f1`, …
//! in the top-level namespace, as the server featurizes `{"f0": 0.3, …}`), the candidates are the
//! classes (`c0`, `c1`, … each with a categorical `class` feature), and the reward is 1 when the
//! chosen class is the example's label, else 0. The score is the progressive reward (the mean
//! reward over the whole stream, learning as it goes), mean ± sd over the seeds, and the
//! in-process decisions per second (featurize, choose, update).
//!
//! Streams are seeded and synthetic with known structure (`linear`: label = argmax of a random
//! linear score; `clusters`: two Gaussian clusters per class, so boundaries are not linear), with
//! label noise: a share of labels replaced by a uniform class. `--csv FILE` adds a real dataset
//! (label in the first column, numeric features after, a header line), played in a seeded
//! shuffled order, repeated to `--examples`. `--dump DIR` writes every stream's seeds, in the
//! order played, as such CSVs (for running other learners on the very same examples).
//!
//! ```text
//! cargo run --release -p tailor-benches --bin bakeoff -- --examples 10000 --seeds 5
//! cargo run --release -p tailor-benches --bin bakeoff -- --policies sparse --streams linear
//! ```

use std::io::Write;
use std::time::Instant;

use clap::Parser;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_pcg::Pcg64Mcg;
use tailor_policies::{Arm, FeaturizerConfig, PolicyConfig, SparseFeatures, SparseVec};

#[derive(Debug, Parser)]
struct Args {
    /// Examples (decisions) per stream and seed.
    #[arg(long, default_value_t = 10_000)]
    examples: usize,
    /// Seeds per stream (0..seeds).
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// Only streams whose name contains this.
    #[arg(long, default_value = "")]
    streams: String,
    /// Only learners whose name contains this.
    #[arg(long, default_value = "")]
    policies: String,
    /// Real datasets (CSV: label first, numeric features after, one header line).
    #[arg(long)]
    csv: Vec<std::path::PathBuf>,
    /// Write each stream and seed, in the order played, as CSV into this directory and exit.
    #[arg(long)]
    dump: Option<std::path::PathBuf>,
}

/// A learner: the campaign settings it stands for.
struct Learner {
    name: String,
    policy: PolicyConfig,
    dimension: usize,
    /// The campaign's uniform `exploration` share on top of the policy.
    exploration: f64,
}

fn learners() -> Vec<Learner> {
    let p = |json: &str| serde_json::from_str::<PolicyConfig>(json).expect("valid policy");
    let mut out = vec![
        Learner {
            name: "thompson (old default)".into(),
            policy: p(r#"{"type":"thompson"}"#),
            dimension: 64,
            exploration: 0.0,
        },
        Learner {
            name: "linucb a=1 d=64".into(),
            policy: p(r#"{"type":"linucb","alpha":1}"#),
            dimension: 64,
            exploration: 0.0,
        },
        Learner {
            name: "linucb a=0.2 d=256".into(),
            policy: p(r#"{"type":"linucb","alpha":0.2}"#),
            dimension: 256,
            exploration: 0.0,
        },
        Learner {
            name: "eps_greedy ridge e=0.05 d=256".into(),
            policy: p(r#"{"type":"epsilon_greedy","epsilon":0.05,"estimator":"ridge"}"#),
            dimension: 256,
            exploration: 0.0,
        },
    ];
    for alpha in [0.0, 0.05, 0.1, 0.2, 0.5, 1.0] {
        out.push(Learner {
            name: format!("sparse_linucb a={alpha} d=2^16"),
            policy: p(&format!(r#"{{"type":"sparse_linucb","alpha":{alpha}}}"#)),
            dimension: 1 << 16,
            exploration: 0.0,
        });
    }
    for lambda in [0.1, 10.0] {
        out.push(Learner {
            name: format!("sparse_linucb a=0.2 l={lambda} d=2^16"),
            policy: p(&format!(
                r#"{{"type":"sparse_linucb","alpha":0.2,"lambda":{lambda}}}"#
            )),
            dimension: 1 << 16,
            exploration: 0.0,
        });
    }
    for bits in [12, 18] {
        out.push(Learner {
            name: format!("sparse_linucb a=0.2 d=2^{bits}"),
            policy: p(r#"{"type":"sparse_linucb","alpha":0.2}"#),
            dimension: 1 << bits,
            exploration: 0.0,
        });
    }
    out.push(Learner {
        name: "sparse_linucb a=0.2 d=2^16 +2% uniform".into(),
        policy: p(r#"{"type":"sparse_linucb","alpha":0.2}"#),
        dimension: 1 << 16,
        exploration: 0.02,
    });
    out
}

#[derive(Clone, Copy)]
enum Shape {
    Linear,
    Clusters,
}

struct StreamSpec {
    name: String,
    shape: Shape,
    classes: usize,
    features: usize,
    noise: f64,
}

fn specs() -> Vec<StreamSpec> {
    let s = |shape, classes, features, noise: f64| StreamSpec {
        name: format!(
            "{}-k{classes}-p{features}-n{}",
            match shape {
                Shape::Linear => "linear",
                Shape::Clusters => "clusters",
            },
            (noise * 100.0).round()
        ),
        shape,
        classes,
        features,
        noise,
    };
    vec![
        s(Shape::Linear, 3, 5, 0.0),
        s(Shape::Linear, 5, 10, 0.1),
        s(Shape::Linear, 10, 20, 0.1),
        s(Shape::Linear, 20, 50, 0.2),
        s(Shape::Clusters, 3, 5, 0.0),
        s(Shape::Clusters, 5, 10, 0.1),
        s(Shape::Clusters, 10, 20, 0.1),
    ]
}

/// A stream's examples: features, observed label, and the noiseless label (the oracle's pick).
struct Stream {
    name: String,
    classes: usize,
    xs: Vec<Vec<f64>>,
    labels: Vec<usize>,
    /// The best fixed rule's reward (the noiseless label's hit rate), when known.
    oracle: Option<f64>,
}

fn synthetic(spec: &StreamSpec, n: usize, seed: u64) -> Stream {
    let mut rng = Pcg64Mcg::seed_from_u64(0xba4e_0ff0 ^ seed.wrapping_mul(0x9e37_79b9));
    let (k, p) = (spec.classes, spec.features);
    let normal = |rng: &mut Pcg64Mcg| rng.sample::<f64, _>(StandardNormal);
    // Linear: one weight vector per class. Clusters: two centers per class.
    let centers: Vec<Vec<f64>> = (0..k * 2)
        .map(|_| (0..p).map(|_| normal(&mut rng)).collect())
        .collect();
    let (mut xs, mut labels, mut hits) = (Vec::with_capacity(n), Vec::with_capacity(n), 0usize);
    for _ in 0..n {
        let (x, truth) = match spec.shape {
            Shape::Linear => {
                let x: Vec<f64> = (0..p).map(|_| normal(&mut rng)).collect();
                let truth = (0..k)
                    .map(|c| centers[c].iter().zip(&x).map(|(w, v)| w * v).sum::<f64>())
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(c, _)| c)
                    .expect("k >= 1");
                (x, truth)
            }
            Shape::Clusters => {
                let c = rng.gen_range(0..k * 2);
                let x = centers[c]
                    .iter()
                    .map(|m| m + 0.6 * normal(&mut rng))
                    .collect();
                (x, c / 2)
            }
        };
        let label = if rng.gen::<f64>() < spec.noise {
            rng.gen_range(0..k)
        } else {
            truth
        };
        hits += usize::from(label == truth);
        xs.push(x);
        labels.push(label);
    }
    Stream {
        name: spec.name.clone(),
        classes: k,
        xs,
        labels,
        oracle: Some(hits as f64 / n as f64),
    }
}

fn from_csv(path: &std::path::Path, n: usize, seed: u64) -> anyhow::Result<Stream> {
    let text = std::fs::read_to_string(path)?;
    let mut rows: Vec<(Vec<f64>, String)> = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut cells = line.split(',');
        let label = cells.next().unwrap_or_default().trim().to_string();
        let x = cells
            .map(|c| c.trim().parse::<f64>())
            .collect::<Result<Vec<_>, _>>()?;
        rows.push((x, label));
    }
    anyhow::ensure!(!rows.is_empty(), "{}: no rows", path.display());
    let mut names: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
    names.sort();
    names.dedup();
    // Standardize each column (as a user would send scaled features).
    let p = rows[0].0.len();
    for j in 0..p {
        let m = rows.iter().map(|r| r.0[j]).sum::<f64>() / rows.len() as f64;
        let v = rows.iter().map(|r| (r.0[j] - m).powi(2)).sum::<f64>() / rows.len() as f64;
        let sd = if v > 0.0 { v.sqrt() } else { 1.0 };
        rows.iter_mut().for_each(|r| r.0[j] = (r.0[j] - m) / sd);
    }
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let mut order: Vec<usize> = Vec::with_capacity(n);
    while order.len() < n {
        let mut pass: Vec<usize> = (0..rows.len()).collect();
        pass.shuffle(&mut rng);
        order.extend(pass);
    }
    order.truncate(n);
    Ok(Stream {
        name: path
            .file_stem()
            .map_or("csv".into(), |s| s.to_string_lossy().into_owned()),
        classes: names.len(),
        xs: order.iter().map(|&i| rows[i].0.clone()).collect(),
        labels: order
            .iter()
            .map(|&i| names.binary_search(&rows[i].1).expect("label listed"))
            .collect(),
        oracle: None,
    })
}

/// Progressive reward and decisions per second of one learner on one stream.
fn play(learner: &Learner, stream: &Stream, seed: u64) -> (f64, f64) {
    let featurizer = FeaturizerConfig {
        dimension: learner.dimension,
        interactions: true,
        context_features: false,
    }
    .build()
    .expect("valid featurizer");
    let mut policy = learner
        .policy
        .build(learner.dimension)
        .expect("valid policy");
    let p = stream.xs[0].len();
    let names: Vec<String> = (0..p).map(|j| format!("f{j}")).collect();
    let ids: Vec<String> = (0..stream.classes).map(|c| format!("c{c}")).collect();
    let actions: Vec<SparseFeatures> = ids
        .iter()
        .map(|id| {
            let mut a = SparseFeatures::new();
            a.push_categorical("", "class", id);
            a
        })
        .collect();
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x5eed);
    let mut total = 0.0;
    let started = Instant::now();
    for (x, &label) in stream.xs.iter().zip(&stream.labels) {
        let mut ctx = SparseFeatures::new();
        for (name, &v) in names.iter().zip(x) {
            ctx.push_numeric("", name, v);
        }
        let vectors: Vec<SparseVec> = ids
            .iter()
            .zip(&actions)
            .map(|(id, a)| featurizer.vector(&ctx, id, a))
            .collect();
        let arms: Vec<Arm<'_>> = ids
            .iter()
            .zip(&vectors)
            .map(|(id, x)| Arm { id, x })
            .collect();
        let choice = policy
            .choose_with_exploration(&arms, 1, true, learner.exploration, &mut rng)
            .expect("candidates")[0];
        let reward = if choice.index == label { 1.0 } else { 0.0 };
        total += reward;
        policy.update(arms[choice.index], reward, choice.probability);
    }
    let secs = started.elapsed().as_secs_f64();
    (
        total / stream.xs.len() as f64,
        stream.xs.len() as f64 / secs,
    )
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64;
    (m, var.sqrt())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let specs: Vec<StreamSpec> = specs()
        .into_iter()
        .filter(|s| s.name.contains(&args.streams))
        .collect();
    let learners: Vec<Learner> = learners()
        .into_iter()
        .filter(|l| l.name.contains(&args.policies))
        .collect();
    println!(
        "bake-off: {} examples per stream and seed, {} seeds; progressive reward mean ± sd, decisions/s (in process)",
        args.examples, args.seeds
    );
    type Maker<'a> = Box<dyn Fn(u64) -> anyhow::Result<Stream> + 'a>;
    let mut makers: Vec<(String, Maker<'_>)> = Vec::new();
    for spec in &specs {
        let n = args.examples;
        makers.push((
            spec.name.clone(),
            Box::new(move |seed| Ok(synthetic(spec, n, seed))),
        ));
    }
    for path in &args.csv {
        let n = args.examples;
        makers.push((
            path.display().to_string(),
            Box::new(move |seed| from_csv(path, n, seed)),
        ));
    }
    if let Some(dir) = &args.dump {
        std::fs::create_dir_all(dir)?;
        for (_, make) in &makers {
            for seed in 0..args.seeds {
                let s = make(seed)?;
                let mut f = std::io::BufWriter::new(std::fs::File::create(
                    dir.join(format!("{}-s{seed}.csv", s.name)),
                )?);
                let header: Vec<String> = (0..s.xs[0].len()).map(|j| format!("f{j}")).collect();
                writeln!(f, "label,{}", header.join(","))?;
                for (x, l) in s.xs.iter().zip(&s.labels) {
                    let cells: Vec<String> = x.iter().map(|v| format!("{v:.6}")).collect();
                    writeln!(f, "c{l},{}", cells.join(","))?;
                }
            }
        }
        return Ok(());
    }
    for (name, make) in &makers {
        let streams: Vec<Stream> = (0..args.seeds).map(make).collect::<Result<_, _>>()?;
        let oracle: Vec<f64> = streams.iter().filter_map(|s| s.oracle).collect();
        println!(
            "\n## {} ({} classes, {} features){}",
            streams[0].name,
            streams[0].classes,
            streams[0].xs[0].len(),
            if oracle.is_empty() {
                String::new()
            } else {
                format!("; oracle {:.3}", mean_sd(&oracle).0)
            }
        );
        let _ = name;
        println!("| learner | progressive reward | decisions/s |");
        println!("|---|---|---|");
        for learner in &learners {
            let runs: Vec<(f64, f64)> = streams
                .iter()
                .enumerate()
                .map(|(seed, s)| play(learner, s, seed as u64))
                .collect();
            let (m, sd) = mean_sd(&runs.iter().map(|r| r.0).collect::<Vec<_>>());
            let rate = mean_sd(&runs.iter().map(|r| r.1).collect::<Vec<_>>()).0;
            println!("| {} | {m:.3} ± {sd:.3} | {rate:.0} |", learner.name);
            std::io::stdout().flush()?;
        }
    }
    Ok(())
}
