//! Personalizer's learning settings (a Vowpal Wabbit argument string) mapped onto Tailor's
//! policy and featurizer configuration. What has a meaning here is mapped; what cannot be
//! honoured is refused with a message naming the argument.

use tailor_policies::{Estimator, FeaturizerConfig, PolicyConfig};

use crate::error::EngineError;

/// The arguments Personalizer's "reset policy" restores.
pub const DEFAULT_ARGUMENTS: &str =
    "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::";

/// VW's own default exploration rate for `--cb_explore_adf`.
const VW_DEFAULT_EPSILON: f64 = 0.05;

/// The Tailor configuration an argument string maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub policy: PolicyConfig,
    pub featurizer: FeaturizerConfig,
    /// Arguments accepted without effect here (output, input-source and solver settings), as
    /// given (`--quiet`, `--power_t 0`): the note a caller gets back.
    pub ignored: Vec<String>,
}

fn bad(message: String) -> EngineError {
    EngineError::invalid_owned("arguments", message)
}

/// Exploration algorithms VW has and Tailor does not.
const OTHER_EXPLORATION: &[&str] = &[
    "--bag",
    "--cover",
    "--softmax",
    "--first",
    "--regcb",
    "--regcbopt",
    "--squarecb",
    "--synthcover",
    "--rnd",
    "--large_action_space",
];

/// Optimizer settings of VW's online gradient descent. Tailor's ridge estimator solves the
/// regression exactly, so these have nothing to tune; they are accepted (Personalizer's
/// defaults send them) and kept in the stored argument string.
const SOLVER_ONLY: &[&str] = &["--power_t", "-l", "--learning_rate", "--initial_t"];

/// Flags without a value that do not change what is learned: VW's input format and source,
/// console output, model-file bookkeeping, and hold-out (which only affects VW's multi-pass
/// progress reports; Personalizer learned in one online pass).
const HARMLESS_FLAGS: &[&str] = &[
    "--dsjson",
    "--save_resume",
    "--preserve_performance_counters",
    "--quiet",
    "--no_stdin",
    "--holdout_off",
    "--onethread",
];

/// Arguments with a value that do not change what is learned: progress-report interval, and the
/// random seed (Tailor seeds each decision's exploration from its event id, as Personalizer
/// did).
const HARMLESS_WITH_VALUE: &[&str] = &["--progress", "-P", "--random_seed"];

/// Arguments Tailor cannot honour, with the reason.
const CANNOT_HONOUR: &[(&str, &str)] = &[
    (
        "-t",
        "test-only mode stops learning; use learningMode Apprentice or LoggingOnly",
    ),
    (
        "--testonly",
        "test-only mode stops learning; use learningMode Apprentice or LoggingOnly",
    ),
    (
        "-i",
        "models are imported with PUT model, not read from a file",
    ),
    (
        "--initial_regressor",
        "models are imported with PUT model, not read from a file",
    ),
    (
        "-f",
        "models are exported with GET model, not written to a file",
    ),
    (
        "--final_regressor",
        "models are exported with GET model, not written to a file",
    ),
    (
        "--readable_model",
        "models are exported with GET model, not written to a file",
    ),
    (
        "-d",
        "Tailor learns from rank and reward calls, not from a data file",
    ),
    (
        "--data",
        "Tailor learns from rank and reward calls, not from a data file",
    ),
    (
        "-c",
        "Tailor learns online in one pass; there is no cache file",
    ),
    (
        "--cache",
        "Tailor learns online in one pass; there is no cache file",
    ),
    ("--passes", "Tailor learns online in one pass"),
    ("--noconstant", "Tailor's regression always has a constant"),
    (
        "--l1",
        "Tailor's ridge regression has its own (L2) regularization",
    ),
    (
        "--l2",
        "Tailor's ridge regression has its own (L2) regularization",
    ),
];

/// Parse `arguments` against the campaign's current featurizer (kept unless `-b` or `-q`
/// say otherwise).
pub fn parse(arguments: &str, current: &FeaturizerConfig) -> Result<Mapped, EngineError> {
    let mut epsilon = VW_DEFAULT_EPSILON;
    let mut interactions = false;
    // The ridge estimator keeps dimension² state: a campaign on the larger `sparse_linucb`
    // space (the default, docs/learning.md) keeps its features hashed into 4096 dimensions.
    let mut dimension = current
        .dimension
        .min(tailor_policies::policy::MAX_DENSE_DIMENSION);
    let mut tokens = arguments.split_whitespace().peekable();
    let mut saw_adf = false;
    let mut ignored = Vec::new();
    while let Some(t) = tokens.next() {
        if let Some((_, why)) = CANNOT_HONOUR.iter().find(|(name, _)| *name == t) {
            return Err(bad(format!("{t}: not available ({why})")));
        }
        let mut value = |name: &str| -> Result<String, EngineError> {
            tokens
                .next()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("{name} needs a value")))
        };
        match t {
            "--cb_explore_adf" => saw_adf = true,
            _ if HARMLESS_FLAGS.contains(&t) => ignored.push(t.to_string()),
            _ if HARMLESS_WITH_VALUE.contains(&t) => {
                let v = value(t)?;
                ignored.push(format!("{t} {v}"));
            }
            "--loss_function" => {
                let v = value(t)?;
                if v != "squared" {
                    return Err(bad(format!(
                        "--loss_function {v}: Tailor's reward regression uses squared loss"
                    )));
                }
            }
            "--epsilon" => {
                let v = value(t)?;
                epsilon = v
                    .parse::<f64>()
                    .ok()
                    .filter(|e| e.is_finite() && (0.0..=1.0).contains(e))
                    .ok_or_else(|| bad(format!("--epsilon {v}: must be a number between 0 and 1")))?;
            }
            "-q" | "--quadratic" | "--interactions" => {
                let v = value(t)?;
                if t == "--interactions" && v.chars().count() > 2 {
                    return Err(bad(format!(
                        "--interactions {v}: only pairwise (context x action) interactions are available"
                    )));
                }
                interactions = true;
            }
            _ if t.starts_with("-q") && t.len() > 2 => interactions = true,
            "--cubic" => {
                return Err(bad(
                    "--cubic: only pairwise (context x action) interactions are available".into(),
                ))
            }
            "--cb_type" => {
                let v = value(t)?;
                match v.as_str() {
                    "mtr" | "dm" => {}
                    other => {
                        return Err(bad(format!(
                            "--cb_type {other}: Tailor learns a reward regression (mtr/dm); ips and dr are available only as off-policy estimators"
                        )))
                    }
                }
            }
            "-b" | "--bit_precision" => {
                let v = value(t)?;
                let bits: u32 = v
                    .parse()
                    .ok()
                    .filter(|b| (1..=12).contains(b))
                    .ok_or_else(|| {
                        bad(format!(
                            "{t} {v}: Tailor's hashed vectors have at most 4096 dimensions (-b 12)"
                        ))
                    })?;
                dimension = 1usize << bits;
            }
            _ if SOLVER_ONLY.contains(&t) => {
                let v = value(t)?;
                if v.parse::<f64>().is_err() {
                    return Err(bad(format!("{t} {v}: must be a number")));
                }
                ignored.push(format!("{t} {v}"));
            }
            _ if OTHER_EXPLORATION.contains(&t) => {
                return Err(bad(format!(
                    "{t}: this exploration algorithm is not available; Tailor honours --epsilon (epsilon-greedy)"
                )))
            }
            _ if t.starts_with('-') => {
                return Err(bad(format!("{t}: unknown or unsupported argument")))
            }
            other => return Err(bad(format!("{other:?}: expected an argument starting with -"))),
        }
    }
    if !saw_adf {
        return Err(bad(
            "--cb_explore_adf is required (Personalizer's action-dependent-features mode)".into(),
        ));
    }
    Ok(Mapped {
        policy: PolicyConfig::EpsilonGreedy {
            epsilon,
            estimator: Estimator::Ridge,
            lambda: 1.0,
            half_life: None,
        },
        featurizer: FeaturizerConfig {
            dimension,
            interactions,
            context_features: current.context_features,
        },
        ignored,
    })
}

/// An argument string describing a configuration (for campaigns configured natively).
pub fn render(policy: &PolicyConfig, featurizer: &FeaturizerConfig) -> String {
    let mut out = String::from("--cb_explore_adf");
    if let PolicyConfig::EpsilonGreedy { epsilon, .. } = policy {
        out.push_str(&format!(" --epsilon {epsilon}"));
    }
    if featurizer.interactions {
        out.push_str(" -q ::");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_default_arguments() {
        let m = parse(DEFAULT_ARGUMENTS, &FeaturizerConfig::default()).unwrap();
        assert!(
            matches!(m.policy, PolicyConfig::EpsilonGreedy { epsilon, estimator: Estimator::Ridge, .. } if epsilon == 0.2)
        );
        assert!(m.featurizer.interactions);
        let m = parse("--cb_explore_adf -b 10", &FeaturizerConfig::default()).unwrap();
        assert_eq!(m.featurizer.dimension, 1024);
        assert!(!m.featurizer.interactions);
        // A campaign on the default sparse space keeps a dimension the ridge estimator takes.
        let large = crate::campaign::default_sparse_featurizer();
        let m = parse(DEFAULT_ARGUMENTS, &large).unwrap();
        assert_eq!(m.featurizer.dimension, 4096);
        m.policy.build(m.featurizer.dimension).unwrap();
    }

    #[test]
    fn refuses_what_cannot_be_honoured() {
        let f = FeaturizerConfig::default();
        for (args, needle) in [
            ("--cb_explore_adf --bag 5", "--bag"),
            ("--cb_explore_adf --epsilon 2", "--epsilon"),
            ("--cb_explore_adf --cb_type ips", "ips"),
            ("--cb_explore_adf -b 20", "4096"),
            ("--cb_explore_adf --frobnicate", "unknown"),
            ("--cb_explore_adf -t", "Apprentice"),
            ("--cb_explore_adf -f model.vw", "GET model"),
            ("--cb_explore_adf --passes 3", "one pass"),
            ("--cb_explore_adf --loss_function logistic", "squared"),
            ("--cb_explore_adf --l2 0.1", "regularization"),
            ("--cb_explore_adf --progress", "needs a value"),
            ("--epsilon 0.1", "--cb_explore_adf"),
        ] {
            let e = parse(args, &f).unwrap_err();
            assert_eq!(e.field(), Some("arguments"));
            assert!(e.to_string().contains(needle), "{args}: {e}");
        }
    }

    #[test]
    fn accepts_and_reports_what_changes_nothing() {
        let f = FeaturizerConfig::default();
        let m = parse(
            "--cb_explore_adf --quiet --epsilon 0.1 --no_stdin --holdout_off --progress 10 \
             --random_seed 7 --save_resume --power_t 0 --loss_function squared -q ::",
            &f,
        )
        .unwrap();
        assert_eq!(
            m.ignored,
            [
                "--quiet",
                "--no_stdin",
                "--holdout_off",
                "--progress 10",
                "--random_seed 7",
                "--save_resume",
                "--power_t 0",
            ]
        );
        // The learning settings are what they would be without them.
        let plain = parse("--cb_explore_adf --epsilon 0.1 -q ::", &f).unwrap();
        assert_eq!(m.policy, plain.policy);
        assert_eq!(m.featurizer, plain.featurizer);
        assert!(plain.ignored.is_empty());
    }
}
