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

/// Flags without a value that change nothing here.
const HARMLESS_FLAGS: &[&str] = &[
    "--cb_explore_adf",
    "--dsjson",
    "--save_resume",
    "--preserve_performance_counters",
];

/// Parse `arguments` against the campaign's current featurizer (kept unless `-b` or `-q`
/// say otherwise).
pub fn parse(arguments: &str, current: &FeaturizerConfig) -> Result<Mapped, EngineError> {
    let mut epsilon = VW_DEFAULT_EPSILON;
    let mut interactions = false;
    let mut dimension = current.dimension;
    let mut tokens = arguments.split_whitespace().peekable();
    let mut saw_adf = false;
    while let Some(t) = tokens.next() {
        let mut value = |name: &str| -> Result<String, EngineError> {
            tokens
                .next()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("{name} needs a value")))
        };
        match t {
            "--cb_explore_adf" => saw_adf = true,
            _ if HARMLESS_FLAGS.contains(&t) => {}
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
            ("--epsilon 0.1", "--cb_explore_adf"),
        ] {
            let e = parse(args, &f).unwrap_err();
            assert_eq!(e.field(), Some("arguments"));
            assert!(e.to_string().contains(needle), "{args}: {e}");
        }
    }
}
