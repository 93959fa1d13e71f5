//! Reports for marketers, computed from the decision and reward logs (so they survive restarts
//! and always agree with what was logged): per-action results with posterior intervals,
//! incremental lift of personalized traffic over the holdout, hidden gems, category affinity,
//! and reward over time per serving policy.
//!
//! Unit of analysis: a decision's outcome is the sum of the rewards applied to its slots (an
//! explicit reward, the default reward when the window closed, or a summed one). A decision whose
//! window is still open and has no reward yet counts as 0: reports are "as of now".
//!
//! Cost: the engine keeps per-campaign aggregates as decisions and rewards are applied
//! (`report_book.rs`), so per-action, hidden-gems, lift and per-policy reports read counters;
//! the folds here over the logs remain the reference (they build the aggregates of a store that
//! has none, serve category affinity, which needs the logged requests, and time buckets that are
//! not a whole number of hours). See docs/reports.md.

use std::collections::{BTreeMap, HashMap, HashSet};
use tailor_policies::propensity::ln_gamma;

use serde::Serialize;
use serde_json::Value;
use tailor_policies::RewardRange;

use super::report_book::Moments;
use crate::error::EngineError;
use crate::ope::log::ByEvent;
use crate::store::Store;

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// One logged decision with its joined outcomes.
#[derive(Debug, Clone)]
pub struct Row {
    pub at_ms: u64,
    pub holdout: bool,
    pub policy: String,
    /// Served action ids, by slot.
    pub actions: Vec<String>,
    /// Applied reward per slot (0 when none yet).
    pub values: Vec<f64>,
    /// Shopper history categories from the context (affinity only).
    pub history: Vec<String>,
    /// Category of each served action (affinity only).
    pub categories: Vec<Option<String>>,
}

impl Row {
    fn outcome(&self) -> f64 {
        self.values.iter().sum()
    }
}

/// Everything a report reads for one campaign, in memory (tests; the server folds instead, see
/// [`fold`]).
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub rows: Vec<Row>,
    /// Every applied reward value lies in [0, 1] (Beta posteriors apply).
    pub binary: bool,
}

impl Dataset {
    fn fold<F: RowFold>(&self, mut f: F) -> F::Out {
        for r in &self.rows {
            f.add(r);
        }
        f.finish(self.binary)
    }
}

/// A report computed one decision at a time.
pub trait RowFold {
    type Out;
    fn add(&mut self, row: &Row);
    /// `binary`: every applied reward value of the campaign lies in [0, 1].
    fn finish(self, binary: bool) -> Self::Out;
}

/// Compute a report over a campaign's decisions and rewards, reading the decision log one record
/// at a time: memory is the compact reward index (32 bytes per reward) and the report's own
/// accumulators, not the log. `history_path` (dotted, in the context) and item categories are
/// only extracted when given, since that parses each logged request. Reward values are read
/// through the campaign's `range`.
pub fn fold<F: RowFold>(
    store: &dyn Store,
    campaign: &str,
    range: RewardRange,
    history_path: Option<&str>,
    mut f: F,
) -> Result<F::Out, EngineError> {
    // Logged values are read through the campaign's range: a log written before reward ranges
    // existed may hold any finite value, and clamping keeps every sum finite.
    let rewards = ByEvent::build_summed(
        campaign,
        store.rewards(campaign).map(|r| {
            r.map(|mut r| {
                r.value = range.clamp(r.value);
                r
            })
        }),
    )?;
    // Adjustments (returns) replace the reward of the slot they name.
    let (adjusted, adjusted_binary) = super::adjust::adjusted_values(store, campaign, u64::MAX)?;
    for d in store.decisions(campaign, 0) {
        let d = d?;
        if d.campaign != campaign {
            continue;
        }
        let values: Vec<f64> = (0..d.actions.len())
            .map(|i| {
                u32::try_from(i)
                    .ok()
                    .and_then(|slot| {
                        adjusted
                            .get(&d.event_id, slot)
                            .or_else(|| rewards.get(&d.event_id, slot))
                    })
                    .unwrap_or(0.0)
            })
            .collect();
        let actions: Vec<String> = d.actions.iter().map(|a| a.id.clone()).collect();
        let (history, categories) = match history_path {
            Some(path) if !d.request.is_empty() => {
                let req: Value = serde_json::from_slice(&d.request).unwrap_or(Value::Null);
                (history_of(&req, path), categories_of(&req, &actions))
            }
            _ => (Vec::new(), vec![None; actions.len()]),
        };
        f.add(&Row {
            at_ms: d.at_ms,
            holdout: d.holdout,
            policy: d.policy,
            actions,
            values,
            history,
            categories,
        });
    }
    Ok(f.finish(rewards.binary() && adjusted_binary))
}

fn history_of(req: &Value, path: &str) -> Vec<String> {
    let mut v = &req["context"];
    for part in path.split('.') {
        v = &v[part];
    }
    let mut out: Vec<String> = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    out.sort();
    out.dedup();
    out
}

fn categories_of(req: &Value, actions: &[String]) -> Vec<Option<String>> {
    let empty = Vec::new();
    let candidates = req["candidates"].as_array().unwrap_or(&empty);
    actions
        .iter()
        .map(|id| {
            let c = candidates.iter().find(|c| c["id"].as_str() == Some(id))?;
            c["features"]["category"]
                .as_str()
                .or_else(|| c["attributes"]["category"].as_str())
                .map(str::to_string)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Estimate with a 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

/// Regularized incomplete beta I_x(a, b) (shared with the policies' propensity code).
pub fn beta_cdf(x: f64, a: f64, b: f64) -> f64 {
    tailor_policies::propensity::beta_cdf(x, a, b)
}

/// Quantile of Beta(a, b): Newton steps on the CDF, kept inside a bracketing interval that
/// each step narrows (bisection when a step would leave it). Converges in a handful of CDF
/// evaluations where plain bisection took 60; the per-action report computes two per action.
pub fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    let lnb = ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b);
    let mut x = (a / (a + b)).clamp(1e-12, 1.0 - 1e-12);
    for _ in 0..200 {
        let f = beta_cdf(x, a, b) - p;
        if f < 0.0 {
            lo = x;
        } else {
            hi = x;
        }
        let pdf = ((a - 1.0) * x.ln() + (b - 1.0) * (-x).ln_1p() - lnb).exp();
        let newton = x - f / pdf;
        let next = if pdf.is_finite() && pdf > 0.0 && newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
        if (next - x).abs() <= 1e-15 * x.max(1e-300) || hi - lo <= 1e-17 {
            return next;
        }
        x = next;
    }
    x
}

/// Two-sided p-value of a z statistic.
pub fn p_value(z: f64) -> f64 {
    tailor_policies::propensity::erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0)
}

/// Mean and sample variance.
fn wilson(successes: f64, n: f64) -> Interval {
    if n <= 0.0 {
        return Interval {
            estimate: 0.0,
            low: 0.0,
            high: 1.0,
        };
    }
    let p = successes / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Interval {
        estimate: p,
        low: (center - half).max(0.0),
        high: (center + half).min(1.0),
    }
}

// ---------------------------------------------------------------------------------------------
// Per action

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActionReport {
    pub id: String,
    pub exposures: u64,
    /// Exposures with a positive reward.
    pub rewarded: u64,
    pub reward_sum: f64,
    /// reward_sum / exposures.
    pub reward_rate: f64,
    pub exposure_share: f64,
    /// Posterior mean of the reward rate with a 95% credible interval: Beta(1 + sum,
    /// 1 + exposures - sum) for rewards in [0, 1], else a normal approximation.
    pub posterior: Interval,
}

/// Sums over one action's exposures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    pub exposures: u64,
    pub rewarded: u64,
    pub sum: f64,
    pub sum_sq: f64,
}

/// Per-action results: a [`RowFold`].
#[derive(Debug, Default)]
pub struct ActionsFold {
    t: BTreeMap<String, Tally>,
    total: u64,
}

impl RowFold for ActionsFold {
    type Out = Vec<ActionReport>;

    fn add(&mut self, row: &Row) {
        for (id, v) in row.actions.iter().zip(&row.values) {
            let e = match self.t.get_mut(id.as_str()) {
                Some(e) => e,
                None => self.t.entry(id.clone()).or_default(),
            };
            e.exposures += 1;
            e.rewarded += u64::from(*v > 0.0);
            e.sum += v;
            e.sum_sq += v * v;
            self.total += 1;
        }
    }

    fn finish(self, binary: bool) -> Vec<ActionReport> {
        action_reports(self.t, self.total, binary)
    }
}

pub fn actions(data: &Dataset) -> Vec<ActionReport> {
    data.fold(ActionsFold::default())
}

/// Per-action results from per-action sums (the incremental aggregates).
pub(crate) fn actions_of(t: BTreeMap<String, Tally>, binary: bool) -> Vec<ActionReport> {
    let total = t.values().map(|t| t.exposures).sum();
    action_reports(t, total, binary)
}

fn action_reports(t: BTreeMap<String, Tally>, total: u64, binary: bool) -> Vec<ActionReport> {
    let mut out: Vec<ActionReport> = t
        .into_iter()
        .map(|(id, t)| {
            let n = t.exposures as f64;
            let posterior = if binary {
                let (a, b) = (1.0 + t.sum, 1.0 + (n - t.sum).max(0.0));
                Interval {
                    estimate: a / (a + b),
                    low: beta_quantile(0.025, a, b),
                    high: beta_quantile(0.975, a, b),
                }
            } else {
                let mean = t.sum / n;
                let var = if n > 1.0 {
                    ((t.sum_sq - n * mean * mean) / (n - 1.0)).max(0.0)
                } else {
                    0.0
                };
                let half = Z95 * (var / n).sqrt();
                Interval {
                    estimate: mean,
                    low: mean - half,
                    high: mean + half,
                }
            };
            ActionReport {
                id,
                exposures: t.exposures,
                rewarded: t.rewarded,
                reward_sum: t.sum,
                reward_rate: t.sum / n,
                exposure_share: n / total.max(1) as f64,
                posterior,
            }
        })
        .collect();
    out.sort_by(|a, b| b.exposures.cmp(&a.exposures).then(a.id.cmp(&b.id)));
    out
}

// ---------------------------------------------------------------------------------------------
// Hidden gems

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GemsReport {
    /// Median posterior mean over the campaign's actions.
    pub campaign_median: f64,
    /// Largest exposure share that counts as "rarely shown".
    pub max_share: f64,
    pub gems: Vec<ActionReport>,
}

/// Rarely shown (exposure share below `max_share`, default half of an even share) but whose
/// posterior lower bound is above the campaign's median posterior mean.
/// Hidden gems: a [`RowFold`] over the per-action results.
#[derive(Debug, Default)]
pub struct GemsFold {
    pub actions: ActionsFold,
    pub max_share: Option<f64>,
}

impl RowFold for GemsFold {
    type Out = GemsReport;

    fn add(&mut self, row: &Row) {
        self.actions.add(row);
    }

    fn finish(self, binary: bool) -> GemsReport {
        gems_of(self.actions.finish(binary), self.max_share)
    }
}

pub fn hidden_gems(data: &Dataset, max_share: Option<f64>) -> GemsReport {
    gems_of(actions(data), max_share)
}

/// Hidden gems among per-action results.
pub(crate) fn gems_from(all: Vec<ActionReport>, max_share: Option<f64>) -> GemsReport {
    gems_of(all, max_share)
}

fn gems_of(all: Vec<ActionReport>, max_share: Option<f64>) -> GemsReport {
    let mut means: Vec<f64> = all.iter().map(|a| a.posterior.estimate).collect();
    means.sort_by(f64::total_cmp);
    let median = match means.len() {
        0 => 0.0,
        n if n % 2 == 1 => means[n / 2],
        n => 0.5 * (means[n / 2 - 1] + means[n / 2]),
    };
    let max_share = max_share.unwrap_or(0.5 / all.len().max(1) as f64);
    let mut gems: Vec<ActionReport> = all
        .into_iter()
        .filter(|a| a.exposure_share < max_share && a.posterior.low > median)
        .collect();
    gems.sort_by(|a, b| b.posterior.low.total_cmp(&a.posterior.low));
    GemsReport {
        campaign_median: median,
        max_share,
        gems,
    }
}

// ---------------------------------------------------------------------------------------------
// Lift

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Arm {
    pub decisions: u64,
    pub reward_sum: f64,
    /// Mean outcome per decision, with a 95% interval.
    pub rate: Interval,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Lift {
    pub personalized: Arm,
    pub holdout: Arm,
    /// personalized - holdout, 95% CI (normal approximation, unequal variances).
    pub absolute: Option<Interval>,
    /// (personalized - holdout) / holdout, 95% CI by the delta method.
    pub relative: Option<Interval>,
    /// Two-sided p-value of "no difference".
    pub p_value: Option<f64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LiftPoint {
    pub start_ms: u64,
    #[serde(flatten)]
    pub lift: Lift,
}

/// Decisions below which an audience's figures are flagged `small_sample`.
pub const SMALL_SAMPLE: u64 = 30;

/// The reports of one audience value (`GET .../reports/audiences`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AudienceReport {
    /// The value of the campaign's `audience_field`; `other` past the first 20 values,
    /// `(none)` when the context lacked the field.
    pub audience: String,
    pub decisions: u64,
    pub holdout_decisions: u64,
    /// Fewer than `small_sample_below` personalized or holdout decisions: the rates and the
    /// lift interval are too wide to act on.
    pub small_sample: bool,
    pub actions: Vec<ActionReport>,
    pub lift: LiftReport,
    pub policies: Vec<PolicySeries>,
}

/// Reports cut by audience.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AudiencesReport {
    /// The campaign's `audience_field` (none: the campaign has no audience reports).
    pub field: Option<String>,
    pub small_sample_below: u64,
    pub audiences: Vec<AudienceReport>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LiftReport {
    #[serde(flatten)]
    pub total: Lift,
    pub bucket_seconds: u64,
    pub series: Vec<LiftPoint>,
}

/// Running mean and variance (Welford) and sum of decision outcomes, added in
/// log order.
#[derive(Debug, Clone, Copy)]
struct ArmAcc {
    n: usize,
    mean: f64,
    m2: f64,
    sum: f64,
}

impl Default for ArmAcc {
    fn default() -> Self {
        // -0.0: the sum of no outcomes, as summing an empty iterator gives.
        Self {
            n: 0,
            mean: 0.0,
            m2: 0.0,
            sum: -0.0,
        }
    }
}

impl ArmAcc {
    /// From a count, sum and sum of squares (the incremental aggregates).
    fn from_moments(m: &Moments) -> Self {
        if m.n == 0 {
            return Self::default();
        }
        let n = m.n as f64;
        let mean = m.sum / n;
        Self {
            n: m.n as usize,
            mean,
            m2: (m.sum_sq - m.sum * mean).max(0.0),
            sum: 0.0 + m.sum,
        }
    }

    fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
        self.sum += x;
    }

    fn arm(&self) -> (Arm, f64) {
        let (n, mean) = (self.n, self.mean);
        let var = if n > 1 { self.m2 / (n - 1) as f64 } else { 0.0 };
        let half = if n > 0 {
            Z95 * (var / n as f64).sqrt()
        } else {
            0.0
        };
        (
            Arm {
                decisions: n as u64,
                reward_sum: self.sum,
                rate: Interval {
                    estimate: mean,
                    low: mean - half,
                    high: mean + half,
                },
            },
            var,
        )
    }
}

/// Personalized and holdout outcomes of one range.
#[derive(Debug, Clone, Copy, Default)]
struct LiftAcc {
    personalized: ArmAcc,
    holdout: ArmAcc,
}

impl LiftAcc {
    fn add(&mut self, r: &Row) {
        let x = r.outcome();
        if r.holdout {
            self.holdout.add(x);
        } else {
            self.personalized.add(x);
        }
    }
}

fn lift_of(acc: &LiftAcc) -> Lift {
    let (p, vp) = acc.personalized.arm();
    let (h, vh) = acc.holdout.arm();
    let (np, nh) = (p.decisions as f64, h.decisions as f64);
    let (mp, mh) = (p.rate.estimate, h.rate.estimate);
    let mut absolute = None;
    let mut relative = None;
    let mut p_val = None;
    if np >= 2.0 && nh >= 2.0 {
        let se = (vp / np + vh / nh).sqrt();
        let diff = mp - mh;
        absolute = Some(Interval {
            estimate: diff,
            low: diff - Z95 * se,
            high: diff + Z95 * se,
        });
        p_val = Some(if se > 0.0 {
            p_value(diff / se)
        } else if diff == 0.0 {
            1.0
        } else {
            0.0
        });
        if mh > 0.0 {
            let r = diff / mh;
            let se_r = (vp / np / (mh * mh) + mp * mp * vh / nh / mh.powi(4)).sqrt();
            relative = Some(Interval {
                estimate: r,
                low: r - Z95 * se_r,
                high: r + Z95 * se_r,
            });
        }
    }
    Lift {
        personalized: p,
        holdout: h,
        absolute,
        relative,
        p_value: p_val,
    }
}

/// Lift over the holdout, in total and per time bucket: a [`RowFold`].
#[derive(Debug)]
pub struct LiftFold {
    bucket_seconds: u64,
    total: LiftAcc,
    buckets: BTreeMap<u64, LiftAcc>,
}

impl LiftFold {
    pub fn new(bucket_seconds: u64) -> Self {
        Self {
            bucket_seconds,
            total: LiftAcc::default(),
            buckets: BTreeMap::new(),
        }
    }
}

impl RowFold for LiftFold {
    type Out = LiftReport;

    fn add(&mut self, r: &Row) {
        let bucket_ms = self.bucket_seconds.max(1) * 1000;
        self.total.add(r);
        self.buckets
            .entry(r.at_ms / bucket_ms * bucket_ms)
            .or_default()
            .add(r);
    }

    fn finish(self, _binary: bool) -> LiftReport {
        LiftReport {
            total: lift_of(&self.total),
            bucket_seconds: self.bucket_seconds,
            series: self
                .buckets
                .iter()
                .map(|(&start_ms, acc)| LiftPoint {
                    start_ms,
                    lift: lift_of(acc),
                })
                .collect(),
        }
    }
}

pub fn lift(data: &Dataset, bucket_seconds: u64) -> LiftReport {
    data.fold(LiftFold::new(bucket_seconds))
}

/// Lift from (personalized, holdout) moments in total and per bucket start (the incremental
/// aggregates).
pub(crate) fn lift_from_moments(
    bucket_seconds: u64,
    total: &(Moments, Moments),
    series: impl Iterator<Item = (u64, (Moments, Moments))>,
) -> LiftReport {
    let acc = |(p, h): &(Moments, Moments)| LiftAcc {
        personalized: ArmAcc::from_moments(p),
        holdout: ArmAcc::from_moments(h),
    };
    LiftReport {
        total: lift_of(&acc(total)),
        bucket_seconds,
        series: series
            .map(|(start_ms, m)| LiftPoint {
                start_ms,
                lift: lift_of(&acc(&m)),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Reward over time per policy

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolicyPoint {
    pub start_ms: u64,
    pub decisions: u64,
    pub reward_sum: f64,
    pub rate: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolicySeries {
    pub policy: String,
    pub decisions: u64,
    pub rate: f64,
    pub series: Vec<PolicyPoint>,
}

/// Per serving policy as logged (`baseline` for holdout, paused and fallback decisions).
/// Reward over time per serving policy: a [`RowFold`].
#[derive(Debug)]
pub struct PoliciesFold {
    bucket_seconds: u64,
    m: BTreeMap<String, BTreeMap<u64, (u64, f64)>>,
}

impl PoliciesFold {
    pub fn new(bucket_seconds: u64) -> Self {
        Self {
            bucket_seconds,
            m: BTreeMap::new(),
        }
    }
}

impl RowFold for PoliciesFold {
    type Out = Vec<PolicySeries>;

    fn add(&mut self, r: &Row) {
        let bucket_ms = self.bucket_seconds.max(1) * 1000;
        let per_policy = match self.m.get_mut(r.policy.as_str()) {
            Some(p) => p,
            None => self.m.entry(r.policy.clone()).or_default(),
        };
        let e = per_policy
            .entry(r.at_ms / bucket_ms * bucket_ms)
            .or_default();
        e.0 += 1;
        e.1 += r.outcome();
    }

    fn finish(self, _binary: bool) -> Vec<PolicySeries> {
        policy_series(self.m)
    }
}

pub fn policies(data: &Dataset, bucket_seconds: u64) -> Vec<PolicySeries> {
    data.fold(PoliciesFold::new(bucket_seconds))
}

pub(crate) fn policy_series(m: BTreeMap<String, BTreeMap<u64, (u64, f64)>>) -> Vec<PolicySeries> {
    m.into_iter()
        .map(|(policy, b)| {
            let decisions: u64 = b.values().map(|v| v.0).sum();
            let sum: f64 = b.values().map(|v| v.1).sum();
            PolicySeries {
                policy,
                decisions,
                rate: sum / decisions.max(1) as f64,
                series: b
                    .into_iter()
                    .map(|(start_ms, (n, s))| PolicyPoint {
                        start_ms,
                        decisions: n,
                        reward_sum: s,
                        rate: s / n.max(1) as f64,
                    })
                    .collect(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Category affinity

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AffinityRow {
    /// A category in the shopper's history.
    pub bought: String,
    /// The category of the item shown.
    pub shown: String,
    pub exposures: u64,
    pub responses: u64,
    /// Response rate of shoppers with `bought` in their history to items of `shown`, 95% Wilson.
    pub rate: Interval,
    /// Response rate of every shopper to items of `shown`.
    pub baseline_rate: f64,
    /// rate / baseline_rate.
    pub lift: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AffinityReport {
    pub history_path: String,
    pub min_exposures: u64,
    pub pairs: Vec<AffinityRow>,
}

/// How likely shoppers who bought X respond (reward > 0) to items of category Y, with lift over
/// all shoppers shown Y; pairs with fewer than `min_exposures` are left out. Highest lift first.
/// Category affinity: a [`RowFold`]. Memory grows with the distinct (history category, shown
/// category) pairs, not with the log.
#[derive(Debug)]
pub struct AffinityFold {
    history_path: String,
    min_exposures: u64,
    pair: HashMap<(String, String), (u64, u64)>,
    shown: HashMap<String, (u64, u64)>,
}

impl AffinityFold {
    pub fn new(history_path: &str, min_exposures: u64) -> Self {
        Self {
            history_path: history_path.to_string(),
            min_exposures,
            pair: HashMap::new(),
            shown: HashMap::new(),
        }
    }
}

impl RowFold for AffinityFold {
    type Out = AffinityReport;

    fn add(&mut self, r: &Row) {
        let history: HashSet<&str> = r.history.iter().map(String::as_str).collect();
        for (cat, v) in r.categories.iter().zip(&r.values) {
            let Some(y) = cat.as_deref() else { continue };
            let hit = u64::from(*v > 0.0);
            let e = match self.shown.get_mut(y) {
                Some(e) => e,
                None => self.shown.entry(y.to_string()).or_default(),
            };
            e.0 += 1;
            e.1 += hit;
            for x in &history {
                let e = self
                    .pair
                    .entry(((*x).to_string(), y.to_string()))
                    .or_default();
                e.0 += 1;
                e.1 += hit;
            }
        }
    }

    fn finish(self, _binary: bool) -> AffinityReport {
        affinity_report(self)
    }
}

pub fn affinity(data: &Dataset, history_path: &str, min_exposures: u64) -> AffinityReport {
    data.fold(AffinityFold::new(history_path, min_exposures))
}

fn affinity_report(f: AffinityFold) -> AffinityReport {
    let AffinityFold {
        history_path,
        min_exposures,
        pair,
        shown,
    } = f;
    let mut pairs: Vec<AffinityRow> = pair
        .into_iter()
        .filter(|(_, (n, _))| *n >= min_exposures)
        .map(|((x, y), (n, s))| {
            let (ny, sy) = shown[&y];
            let base = sy as f64 / ny.max(1) as f64;
            let rate = wilson(s as f64, n as f64);
            AffinityRow {
                bought: x,
                shown: y,
                exposures: n,
                responses: s,
                baseline_rate: base,
                lift: if base > 0.0 {
                    rate.estimate / base
                } else {
                    0.0
                },
                rate,
            }
        })
        .collect();
    pairs.sort_by(|a, b| {
        b.lift
            .total_cmp(&a.lift)
            .then(a.bought.cmp(&b.bought))
            .then(a.shown.cmp(&b.shown))
    });
    AffinityReport {
        history_path,
        min_exposures,
        pairs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_quantiles_match_known_values() {
        // Beta(1, 1) is uniform.
        assert!((beta_quantile(0.025, 1.0, 1.0) - 0.025).abs() < 1e-9);
        // Beta(2, 2): CDF 3x^2 - 2x^3; at 0.5 it is 0.5.
        assert!((beta_cdf(0.5, 2.0, 2.0) - 0.5).abs() < 1e-12);
        assert!((beta_cdf(0.2, 2.0, 2.0) - (3.0 * 0.04 - 2.0 * 0.008)).abs() < 1e-12);
        // Beta(11, 91): 97.5% quantile ~ 0.1727 (reference value from scipy).
        let q = beta_quantile(0.975, 11.0, 91.0);
        assert!((q - 0.1727).abs() < 2e-3, "{q}");
        // Newton steps land where 60 bisections did (the previous method), from tiny to large
        // posteriors and in the tails.
        let bisect = |p: f64, a: f64, b: f64| {
            let (mut lo, mut hi) = (0.0, 1.0);
            for _ in 0..60 {
                let mid = 0.5 * (lo + hi);
                if beta_cdf(mid, a, b) < p {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            0.5 * (lo + hi)
        };
        for (a, b) in [
            (1.0, 1.0),
            (1.0, 1001.0),
            (2.5, 1.0),
            (11.0, 91.0),
            (131.0, 871.0),
            (5_001.0, 95_001.0),
            (900_001.0, 100_001.0),
            (1.0, 1_000_001.0),
        ] {
            for p in [0.001, 0.025, 0.5, 0.975, 0.999] {
                let (q, r) = (beta_quantile(p, a, b), bisect(p, a, b));
                assert!((q - r).abs() < 1e-12, "Beta({a}, {b}) at {p}: {q} vs {r}");
            }
        }
    }

    #[test]
    fn p_values() {
        assert!((p_value(1.959_964) - 0.05).abs() < 1e-5);
        assert!((p_value(0.0) - 1.0).abs() < 1e-6);
        assert!(p_value(5.0) < 1e-5);
    }

    fn row(holdout: bool, v: f64) -> Row {
        Row {
            at_ms: 0,
            holdout,
            policy: if holdout { "baseline" } else { "thompson" }.into(),
            actions: vec!["a".into()],
            values: vec![v],
            history: vec![],
            categories: vec![None],
        }
    }

    #[test]
    fn lift_detects_a_difference_and_not_a_null() {
        let mut rows = Vec::new();
        for i in 0..2_000 {
            rows.push(row(false, if i % 5 == 0 { 1.0 } else { 0.0 })); // 20 %
            rows.push(row(true, if i % 10 == 0 { 1.0 } else { 0.0 })); // 10 %
        }
        let l = lift(&Dataset { rows, binary: true }, 86_400).total;
        let a = l.absolute.unwrap();
        assert!((a.estimate - 0.1).abs() < 1e-9 && a.low > 0.0);
        assert!((l.relative.unwrap().estimate - 1.0).abs() < 1e-9);
        assert!(l.p_value.unwrap() < 1e-6);
        let mut rows = Vec::new();
        for i in 0..2_000 {
            rows.push(row(false, if i % 10 == 0 { 1.0 } else { 0.0 }));
            rows.push(row(true, if i % 10 == 0 { 1.0 } else { 0.0 }));
        }
        let l = lift(&Dataset { rows, binary: true }, 86_400).total;
        let a = l.absolute.unwrap();
        assert!(a.low < 0.0 && a.high > 0.0);
    }

    #[test]
    fn folded_sums_and_spreads_match_the_outcomes() {
        let rows: Vec<Row> = (0..1_000)
            .map(|i| row(false, (i % 7) as f64 * 0.1))
            .collect();
        let data = Dataset {
            rows: rows.clone(),
            binary: true,
        };
        let l = lift(&data, 86_400).total;
        // The outcomes summed in log order, bit for bit; an arm without decisions has the sum of
        // nothing, -0.0, as summing an empty iterator gives.
        let sum: f64 = rows.iter().map(Row::outcome).sum();
        assert_eq!(l.personalized.reward_sum.to_bits(), sum.to_bits());
        assert_eq!(l.holdout.reward_sum.to_bits(), (-0.0f64).to_bits());
        assert_eq!(l.holdout.decisions, 0);
        // Welford agrees with the two-pass mean and variance.
        let n = rows.len() as f64;
        let mean = sum / n;
        let var = rows
            .iter()
            .map(|r| (r.outcome() - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        let rate = l.personalized.rate;
        assert!((rate.estimate - mean).abs() < 1e-12);
        assert!(((rate.high - rate.low) / 2.0 - Z95 * (var / n).sqrt()).abs() < 1e-12);
        // Per-action and per-policy folds see every exposure.
        let a = actions(&data);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].exposures, 1_000);
        let p = policies(&data, 86_400);
        assert_eq!(p[0].decisions, 1_000);
        assert_eq!(p[0].series[0].reward_sum.to_bits(), sum.to_bits());
    }
}
