//! The `kill -9` loop by hand (issue 17): starts the real `tailor` binary, streams decides and
//! rewards into it, kills it without warning at random moments, restarts it, and checks that
//! every acknowledged reward is counted exactly once (tests/e2e/killloop.rs has the details; CI
//! runs the same loop for 4 cycles).
//!
//! ```text
//! cargo run -p tailor-tests --bin killloop -- --cycles 200 [--seed 17] [--workers 4]
//!     [--min-run-ms 50] [--max-run-ms 700] [--keep DIR]
//! ```
//!
//! Exits 1 when a reward was lost or doubled. Run it from a debug build (the harness builds and
//! starts `target/debug/tailor`).

#[allow(dead_code)] // the harness's helpers the loop does not use
#[path = "../../e2e/harness.rs"]
mod harness;
#[path = "../../e2e/killloop.rs"]
mod killloop;

use std::time::Instant;

fn usage() -> ! {
    eprintln!(
        "usage: killloop [--cycles N] [--seed N] [--workers N] [--min-run-ms N] [--max-run-ms N] \
         [--keep DIR]"
    );
    std::process::exit(2)
}

fn main() {
    let mut opts = killloop::Options {
        cycles: 200,
        verbose: true,
        ..killloop::Options::default()
    };
    let mut keep = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        let number = || value.parse::<u64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--cycles" => opts.cycles = number() as u32,
            "--seed" => opts.seed = number(),
            "--workers" => opts.workers = number() as usize,
            "--min-run-ms" => opts.min_run_ms = number(),
            "--max-run-ms" => opts.max_run_ms = number(),
            "--keep" => keep = Some(std::path::PathBuf::from(&value)),
            _ => usage(),
        }
    }
    let temp = tempfile::tempdir().expect("a temporary directory");
    let dir = keep.unwrap_or_else(|| temp.path().to_path_buf());
    let started = Instant::now();
    let report = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(killloop::run(&dir, &opts));
    println!("{report:#?}");
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    if report.lost > 0 || report.doubled > 0 {
        eprintln!("FAILED: acknowledged rewards were lost or doubled");
        std::process::exit(1);
    }
}
