//! A fixed number of in-process decides from the request bytes on one of issue 18's target
//! shapes (the `decide_from_bytes` bench's path: parse, validate, featurize, choose, log), for
//! instruction counts that machine noise does not move:
//!
//! ```text
//! cargo build --release -p tailor-benches --bin decide_count
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/decide_count --shape linucb_d32 --decides 2000
//! callgrind_annotate --inclusive=yes /tmp/cg.out | head -40
//! ```
//!
//! Run it twice with different `--decides` and divide the difference of the totals by the
//! difference of the counts: instructions per decide, set-up excluded.

use std::time::Instant;

use clap::Parser;
use tailor_benches::{create_target_campaigns, engine, target_shapes};
use tailor_server::engine::DecideInput;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    /// `thompson` (100 ids, 8 numeric context features) or `linucb_d32` (100 candidates with
    /// features and attributes, LinUCB over 32 dimensions).
    #[arg(long, default_value = "linucb_d32")]
    shape: String,
    /// Decides to run after 200 warm-up decides.
    #[arg(long, default_value_t = 2_000)]
    decides: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (name, raw) = target_shapes()
        .into_iter()
        .find(|(n, _)| *n == args.shape)
        .ok_or_else(|| anyhow::anyhow!("unknown shape {:?}", args.shape))?;
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let engine = engine(dir.path(), &rt);
    create_target_campaigns(&engine);
    let decide = || -> anyhow::Result<()> {
        engine.decide_items(name, DecideInput::parse(raw.clone())?)?;
        Ok(())
    };
    for _ in 0..200 {
        decide()?;
    }
    let started = Instant::now();
    for _ in 0..args.decides {
        decide()?;
    }
    let took = started.elapsed();
    println!(
        "{name}: {} decides, {:.1} µs each",
        args.decides,
        took.as_secs_f64() * 1e6 / args.decides.max(1) as f64
    );
    Ok(())
}
