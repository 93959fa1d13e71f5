//! What a retail run reports: per policy the mean reward, the expected regret against the
//! oracle, the lift over uniform choice, and the reference rows of policies that know the true
//! probabilities.

use std::fmt::Write as _;

use serde::Serialize;
use tailor_policies::PolicyConfig;

use super::{Contender, Round, Setup};

/// Per-round outcomes of one policy: the true probability of what it served, and the reward.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub expected: Vec<f64>,
    pub reward: Vec<f64>,
}

impl Trace {
    pub fn with_capacity(rounds: usize) -> Self {
        Trace {
            expected: Vec::with_capacity(rounds),
            reward: Vec::with_capacity(rounds),
        }
    }

    /// Record that candidate `j` of `round` was served; returns its reward.
    pub fn serve(&mut self, round: &Round, j: usize) -> f64 {
        let reward = round.reward(j);
        self.expected.push(round.probabilities[j]);
        self.reward.push(reward);
        reward
    }
}

/// One policy's results.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyResult {
    pub name: String,
    pub config: PolicyConfig,
    /// Mean observed reward (click rate).
    pub mean_reward: f64,
    /// Mean true click probability of what was served (the noise-free version of the above).
    pub expected_reward: f64,
    /// Σ (oracle's true probability − served true probability): expected cumulative regret.
    pub regret: f64,
    /// `mean_reward / uniform − 1`, where uniform is the exact expected reward of serving a
    /// uniformly random candidate on the same shoppers.
    pub lift_over_uniform: f64,
    /// Mean observed reward before the taste shift (all rounds without a shift).
    pub mean_reward_before_shift: f64,
    /// Mean observed reward after the taste shift (null without a shift).
    pub mean_reward_after_shift: Option<f64>,
    /// Mean observed reward over the last quarter of the run (after learning settles).
    pub mean_reward_last_quarter: f64,
}

/// A reference row: what a policy that knows the true probabilities would get.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    pub name: &'static str,
    pub mean_reward: f64,
    pub mean_reward_before_shift: f64,
    pub mean_reward_after_shift: Option<f64>,
    pub mean_reward_last_quarter: f64,
}

impl Reference {
    fn new(name: &'static str, per_round: &[f64], shift_at: Option<usize>) -> Self {
        let split = shift_at.unwrap_or(per_round.len());
        Reference {
            name,
            mean_reward: mean(per_round),
            mean_reward_before_shift: mean(&per_round[..split]),
            mean_reward_after_shift: shift_at.map(|s| mean(&per_round[s..])),
            mean_reward_last_quarter: mean(&per_round[per_round.len() * 3 / 4..]),
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub seed: u64,
    pub rounds: usize,
    pub products: usize,
    pub candidates: usize,
    pub shift_at: Option<usize>,
    /// Mean true probability of the best candidate of each round.
    pub oracle_mean_reward: f64,
    /// Mean true probability of a uniformly random candidate.
    pub uniform_mean_reward: f64,
    /// Reference rows without learning or noise (true probabilities): `oracle` serves each
    /// shopper's best candidate, `best_context_free` the candidate with the best click rate over
    /// all shoppers of the phase (the ceiling of context-free policies such as `thompson`).
    pub references: Vec<Reference>,
    pub policies: Vec<PolicyResult>,
}

pub(super) fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

impl Report {
    /// The report of `traces`, the outcomes of `contenders` (in order) on `setup`'s rounds;
    /// `mode` says how they were played.
    pub fn new(
        mode: &'static str,
        setup: &Setup,
        contenders: &[Contender],
        traces: &[Trace],
    ) -> Report {
        let (rounds, shift_at) = (&setup.rounds[..], setup.shift_at);
        let oracle: Vec<f64> = rounds.iter().map(Round::best).collect();
        let uniform = mean(
            &rounds
                .iter()
                .map(|r| mean(&r.probabilities))
                .collect::<Vec<_>>(),
        );
        let split = shift_at.unwrap_or(rounds.len());
        let mut context_free = context_free_oracle(&rounds[..split]);
        context_free.extend(context_free_oracle(&rounds[split..]));
        let policies = contenders
            .iter()
            .zip(traces)
            .map(|(c, t)| {
                let mean_reward = mean(&t.reward);
                PolicyResult {
                    name: c.name.clone(),
                    config: c.policy.clone(),
                    mean_reward,
                    expected_reward: mean(&t.expected),
                    regret: oracle.iter().zip(&t.expected).map(|(o, e)| o - e).sum(),
                    lift_over_uniform: if uniform > 0.0 {
                        mean_reward / uniform - 1.0
                    } else {
                        0.0
                    },
                    mean_reward_before_shift: mean(&t.reward[..split]),
                    mean_reward_after_shift: shift_at.map(|s| mean(&t.reward[s..])),
                    mean_reward_last_quarter: mean(&t.reward[t.reward.len() * 3 / 4..]),
                }
            })
            .collect();
        Report {
            mode,
            seed: setup.seed,
            rounds: rounds.len(),
            products: setup.world.products.len(),
            candidates: setup.candidates,
            shift_at,
            oracle_mean_reward: mean(&oracle),
            uniform_mean_reward: uniform,
            references: vec![
                Reference::new("oracle", &oracle, shift_at),
                Reference::new("best_context_free", &context_free, shift_at),
            ],
            policies,
        }
    }
}

/// The true probability of the candidate with the best click rate averaged over all shoppers of
/// `rounds` (one taste phase), per round: what the best context-free policy would get.
fn context_free_oracle(rounds: &[Round]) -> Vec<f64> {
    let n = rounds
        .iter()
        .flat_map(|r| r.candidates.iter().copied())
        .max()
        .map_or(0, |m| m + 1);
    let mut sum = vec![0.0f64; n];
    let mut count = vec![0.0f64; n];
    for r in rounds {
        for (&p, &q) in r.candidates.iter().zip(&r.probabilities) {
            sum[p] += q;
            count[p] += 1.0;
        }
    }
    let avg: Vec<f64> = sum
        .iter()
        .zip(&count)
        .map(|(s, c)| s / c.max(1.0))
        .collect();
    rounds
        .iter()
        .map(|r| {
            let best = (0..r.candidates.len())
                .max_by(|&a, &b| avg[r.candidates[a]].total_cmp(&avg[r.candidates[b]]))
                .unwrap_or(0);
            r.probabilities[best]
        })
        .collect()
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} rounds, {} products, {} candidates per decision, seed {}, {}{}",
            self.rounds,
            self.products,
            self.candidates,
            self.seed,
            self.mode.replace('_', " "),
            match self.shift_at {
                Some(s) => format!(", taste shift at round {s}"),
                None => String::new(),
            }
        );
        let _ = writeln!(
            out,
            "oracle mean reward {:.4}, uniform {:.4}",
            self.oracle_mean_reward, self.uniform_mean_reward
        );
        let shift = self.shift_at.is_some();
        let _ = write!(
            out,
            "{:<22} {:>11} {:>10} {:>10}",
            "policy", "mean reward", "regret", "lift"
        );
        if shift {
            let _ = write!(out, " {:>13} {:>12}", "before shift", "after shift");
        }
        let _ = writeln!(out, " {:>12}", "last quarter");
        for r in &self.references {
            let _ = write!(
                out,
                "{:<22} {:>11.4} {:>10} {:>10}",
                format!("({})", r.name),
                r.mean_reward,
                "",
                ""
            );
            if shift {
                let _ = write!(
                    out,
                    " {:>13.4} {:>12.4}",
                    r.mean_reward_before_shift,
                    r.mean_reward_after_shift.unwrap_or(f64::NAN)
                );
            }
            let _ = writeln!(out, " {:>12.4}", r.mean_reward_last_quarter);
        }
        for p in &self.policies {
            let _ = write!(
                out,
                "{:<22} {:>11.4} {:>10.1} {:>+9.1}%",
                p.name,
                p.mean_reward,
                p.regret,
                100.0 * p.lift_over_uniform
            );
            if shift {
                let _ = write!(
                    out,
                    " {:>13.4} {:>12.4}",
                    p.mean_reward_before_shift,
                    p.mean_reward_after_shift.unwrap_or(f64::NAN)
                );
            }
            let _ = writeln!(out, " {:>12.4}", p.mean_reward_last_quarter);
        }
        out
    }
}
