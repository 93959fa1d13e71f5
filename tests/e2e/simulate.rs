//! Issue 3 (policies, verified by simulation): `tailor simulate` runs the policies against the
//! synthetic retail world, and the results order the way docs/simulation.md reports.

use std::process::Command;

use serde_json::Value;

use crate::harness::tailor_bin;

fn simulate(args: &[&str]) -> Value {
    let out = Command::new(tailor_bin())
        .arg("simulate")
        .args(args)
        .arg("--json")
        .output()
        .expect("running tailor simulate");
    assert!(
        out.status.success(),
        "tailor simulate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tailor simulate printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn policy<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["policies"]
        .as_array()
        .expect("policies array")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

fn num(p: &Value, field: &str) -> f64 {
    p[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {p}"))
}

/// The default world (seed 7), short and in a smaller dimension so a debug build plays it in
/// seconds: Thompson and LinUCB clearly beat uniform, and LinUCB beats context-free Thompson.
#[test]
fn contextual_policies_beat_context_free_ones() {
    let report = simulate(&[
        "--in-process",
        "--rounds",
        "3000",
        "--dimension",
        "64",
        "--policies",
        "uniform,thompson,linucb",
    ]);
    let uniform = policy(&report, "uniform");
    let thompson = policy(&report, "thompson");
    let linucb = policy(&report, "linucb");
    // Uniform's lift is against its own exact expectation: only coin-flip noise.
    assert!(num(uniform, "lift_over_uniform").abs() < 0.15, "{uniform}");
    for p in [thompson, linucb] {
        assert!(num(p, "lift_over_uniform") > 0.5, "{p} vs {uniform}");
        assert!(
            num(p, "regret") < 0.7 * num(uniform, "regret"),
            "{p} vs {uniform}"
        );
    }
    assert!(
        num(linucb, "mean_reward") > 1.1 * num(thompson, "mean_reward"),
        "LinUCB {linucb} should beat context-free Thompson {thompson}"
    );
    assert!(num(linucb, "regret") < 0.85 * num(thompson, "regret"));
    let oracle = num(&report, "oracle_mean_reward");
    for p in report["policies"].as_array().unwrap() {
        assert!(num(p, "expected_reward") <= oracle, "{p} beats the oracle");
    }
}

/// With the taste shift, Thompson with forgetting recovers where plain Thompson keeps serving
/// last season's favourites.
#[test]
fn forgetting_recovers_after_the_taste_shift() {
    let report = simulate(&[
        "--in-process",
        "--rounds",
        "12000",
        "--shift",
        "--half-life",
        "2000",
        "--policies",
        "uniform,thompson,thompson_forgetting",
    ]);
    assert_eq!(report["shift_at"], 6000);
    let uniform = policy(&report, "uniform");
    let thompson = policy(&report, "thompson");
    let forgetting = policy(&report, "thompson_forgetting");
    assert!(
        num(forgetting, "lift_over_uniform") > 0.5,
        "{forgetting} vs {uniform}"
    );
    assert!(
        num(forgetting, "mean_reward_after_shift")
            > 1.05 * num(thompson, "mean_reward_after_shift"),
        "forgetting {forgetting} should recover after the shift better than {thompson}"
    );
    assert!(
        num(forgetting, "mean_reward_last_quarter")
            > 1.1 * num(thompson, "mean_reward_last_quarter"),
        "forgetting {forgetting} vs {thompson} in the last quarter"
    );
}

/// The same seed gives the same numbers (in process, everything is seeded).
#[test]
fn simulation_is_reproducible_from_its_seed() {
    let args = [
        "--in-process",
        "--seed",
        "5",
        "--rounds",
        "500",
        "--policies",
        "thompson,epsilon_greedy",
    ];
    assert_eq!(simulate(&args), simulate(&args));
}

/// Over HTTP against a server started in process: every policy serves from its own campaign.
#[test]
fn simulation_runs_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("reward.svg");
    let report = simulate(&[
        "--seed",
        "3",
        "--rounds",
        "300",
        "--dimension",
        "32",
        "--policies",
        "uniform,thompson,linucb",
        "--chart",
        chart.to_str().unwrap(),
    ]);
    assert_eq!(report["mode"], "http");
    assert_eq!(report["rounds"], 300);
    for name in ["uniform", "thompson", "linucb"] {
        let p = policy(&report, name);
        let m = num(p, "mean_reward");
        assert!((0.0..=1.0).contains(&m), "{p}");
        assert!(num(p, "regret") >= 0.0, "{p}");
    }
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 4);
}
