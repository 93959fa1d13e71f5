//! Campaign configuration: what an admin sends, validated into something the engine can run.

use serde::{Deserialize, Serialize};
use tailor_policies::{FeaturizerConfig, PolicyConfig, RewardRange};

use crate::error::EngineError;
pub use crate::merchandising::Merchandising;

mod autopilot;
mod variety;
pub use autopilot::AutopilotSettings;
pub use variety::{
    parse_duration_ms, parse_time, Promotion, PromotionWindow, ResetAt, VarietySettings,
    MAX_PROMOTIONS,
};

/// A decision point: what it ranks, how it learns, how rewards join.
///
/// Deserialized through [`CampaignConfigWire`] so that the defaults of `policy` and
/// `featurizer` can depend on what else was sent (docs/learning.md): an `items` campaign sent
/// without a policy gets [`default_items_policy`] (`sparse_linucb`), and one whose policy is
/// `sparse_linucb` (sent or defaulted) without a featurizer gets [`default_sparse_featurizer`];
/// everything else keeps the featurizer's own defaults (dimension 64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, from = "CampaignConfigWire")]
pub struct CampaignConfig {
    /// Unique id, `[A-Za-z0-9_.-]{1,64}`.
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub kind: CampaignKind,
    /// The serving policy, tagged by `type`: `sparse_linucb`, `thompson`, `gaussian_thompson`,
    /// `linucb`, `linucb_disjoint`, `linear_thompson`, `epsilon_greedy`, `uniform` or `fixed`,
    /// with its parameters (e.g. `{"type": "thompson", "prior_alpha": 1, "prior_beta": 1}`).
    /// Omitted, an `items` campaign gets `{"type": "sparse_linucb", "alpha": 0.1}`, which learns
    /// from the context (docs/learning.md). Send-time campaigns serve with their own hierarchical
    /// model (`send_time`) and may omit it; it then defaults to per-slot Thompson sampling, which
    /// learns the global per-slot rates alongside.
    #[schema(value_type = Object)]
    #[serde(default = "default_policy")]
    pub policy: PolicyConfig,
    /// Policies that learn from every reward without serving; switching to one is warm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub shadow_policies: Vec<PolicyConfig>,
    /// The hashed feature space. Omitted: dimension 65536 with context x action interactions
    /// when the policy is `sparse_linucb`, else dimension 64 (the dense policies keep
    /// dimension² state and take at most 4096).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub featurizer: FeaturizerConfig,
    /// How long after a decision rewards are accepted.
    #[serde(default = "default_wait")]
    pub reward_wait_seconds: f64,
    /// How long after a decision its applied rewards may still be adjusted (returns:
    /// `POST /v1/events/{id}/adjust`); default 30 days, at most 365 days, at least the reward
    /// window.
    #[serde(default = "default_return_window")]
    pub return_window_seconds: f64,
    /// Reward applied to a slot that got none within the window (inside `reward_range`).
    #[serde(default)]
    pub default_reward: f64,
    /// `[low, high]`: the rewards this campaign learns from (default `[0, 1]`). Both bounds
    /// finite, at most 1e9 in magnitude, low < high. Each reward, each `sum` total and the default
    /// reward stay inside it (docs/security/rewards.md).
    #[serde(default)]
    #[schema(value_type = Vec<f64>, example = json!([0.0, 1.0]))]
    pub reward_range: RewardRange,
    /// What a reward outside `reward_range` gets: `refuse` (400 naming `value`, nothing recorded;
    /// the default) or `clip` (moved to the nearest bound and learned from).
    #[serde(default)]
    pub reward_out_of_range: OutOfRange,
    #[serde(default)]
    pub reward_aggregation: RewardAggregation,
    #[serde(default)]
    pub status: CampaignStatus,
    /// Share of decisions (0 to 1) served uniformly at random on top of the policy's own
    /// exploration; the logged propensity is the exact mixture `(1 - e)·p + e/n`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exploration: f64,
    /// Share of shoppers (by `shopper_id`, 0 to 0.5) who always get the control order
    /// (candidates as sent); their decisions are marked `holdout`. See `engine/holdout.rs`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub holdout: f64,
    /// Salt of the holdout assignment; generated at creation and kept across updates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub holdout_salt: String,
    /// Keep each decision's raw request (context and candidates, at most 256 KiB) in its log
    /// entry: off-policy evaluation of other policies and candidates, and the log export, need
    /// it. Off by default: the log then holds what learning, joins and reports need, a few
    /// hundred bytes per decision (docs/event-log.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_requests: bool,
    /// Items campaigns: a top-level context field (e.g. `"segment"`) whose value cuts the
    /// reports by audience (`GET .../reports/audiences`, docs/reports.md). At most
    /// [`crate::engine::MAX_AUDIENCES`] values are told apart; later ones count as `"other"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience_field: Option<String>,
    /// Ordered plugin chain (see docs/plugins.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginRef>,
    /// Settings of the Personalizer-compatible API that have no Tailor meaning, kept as sent so
    /// its GETs return what its PUTs set (see docs/migrating-from-personalizer.md). Kept across
    /// updates that leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personalizer: Option<serde_json::Value>,
    /// Send-time campaigns: the slot grid (`"hour_of_day"`, `"hour_of_week"` or a list of
    /// windows). Required for `kind: send_time`, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<SlotGrid>,
    /// Send-time campaigns: learning and scheduling settings (docs/send-time.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub send_time: Option<SendTimeSettings>,
    /// Items campaigns: pins and boosts with time windows (docs/merchandising.md).
    #[serde(default, skip_serializing_if = "Merchandising::is_empty")]
    pub merchandising: Merchandising,
    // -- Variety, wall-clock forgetting, promotions (issue 22 items 3, 6; docs/variety.md).
    /// Items campaigns: limit how many slots of one answer share a value of a candidate
    /// attribute, and/or prefer values the answer does not hold yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variety: Option<VarietySettings>,
    /// Items campaigns: forget learned evidence with this half-life in wall-clock time (`"7d"`,
    /// `"36h"`, `"90m"`, `"2w"`), from the rewards' own times. Policies that forget per reward
    /// (their own `half_life`) or keep per-arm models (`linucb_disjoint`, `epsilon_greedy` with
    /// the mean estimator) are refused with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_life: Option<String>,
    /// Items campaigns: time windows that raise exploration over some items and/or reset what
    /// was learned about them when they start and end (at most 32).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotions: Vec<Promotion>,
    /// Items campaigns: run a policy optimization over the recent log on a schedule and switch
    /// to a setting whose interval clears the serving one's (docs/optimization.md#autopilot).
    /// Off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub autopilot: Option<AutopilotSettings>,
}

fn default_policy() -> PolicyConfig {
    PolicyConfig::Thompson {
        prior_alpha: 1.0,
        prior_beta: 1.0,
        half_life: None,
    }
}

/// The policy of an `items` campaign created without one: the shared diagonal-covariance
/// LinUCB, which learns from the context at any catalog size (docs/learning.md for the bake-off
/// behind the choice).
pub fn default_items_policy() -> PolicyConfig {
    PolicyConfig::SparseLinUcb {
        alpha: tailor_policies::policy::DEFAULT_SPARSE_ALPHA,
        lambda: 1.0,
        half_life: None,
    }
}

/// Dimension of the featurizer a `sparse_linucb` campaign gets when it sends none.
pub const DEFAULT_SPARSE_DIMENSION: usize = 1 << 16;

/// The featurizer of a `sparse_linucb` campaign sent without one: 2^16 hashed dimensions (1 MiB
/// of model in memory) with context x action interactions.
pub fn default_sparse_featurizer() -> FeaturizerConfig {
    FeaturizerConfig {
        dimension: DEFAULT_SPARSE_DIMENSION,
        interactions: true,
        context_features: false,
    }
}

/// [`CampaignConfig`] as sent: the same fields with `policy` and `featurizer` optional, so their
/// defaults can depend on `kind` and on each other.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignConfigWire {
    #[serde(default)]
    id: String,
    #[serde(default)]
    kind: CampaignKind,
    #[serde(default)]
    policy: Option<PolicyConfig>,
    #[serde(default)]
    shadow_policies: Vec<PolicyConfig>,
    #[serde(default)]
    featurizer: Option<FeaturizerConfig>,
    #[serde(default = "default_wait")]
    reward_wait_seconds: f64,
    #[serde(default = "default_return_window")]
    return_window_seconds: f64,
    #[serde(default)]
    default_reward: f64,
    #[serde(default)]
    reward_range: RewardRange,
    #[serde(default)]
    reward_out_of_range: OutOfRange,
    #[serde(default)]
    reward_aggregation: RewardAggregation,
    #[serde(default)]
    status: CampaignStatus,
    #[serde(default)]
    exploration: f64,
    #[serde(default)]
    holdout: f64,
    #[serde(default)]
    holdout_salt: String,
    #[serde(default)]
    log_requests: bool,
    #[serde(default)]
    audience_field: Option<String>,
    #[serde(default)]
    plugins: Vec<PluginRef>,
    #[serde(default)]
    personalizer: Option<serde_json::Value>,
    #[serde(default)]
    slots: Option<SlotGrid>,
    #[serde(default)]
    send_time: Option<SendTimeSettings>,
    #[serde(default)]
    merchandising: Merchandising,
    // -- Variety, wall-clock forgetting, promotions (docs/variety.md).
    #[serde(default)]
    variety: Option<VarietySettings>,
    #[serde(default)]
    half_life: Option<String>,
    #[serde(default)]
    promotions: Vec<Promotion>,
    #[serde(default)]
    autopilot: Option<AutopilotSettings>,
}

impl From<CampaignConfigWire> for CampaignConfig {
    fn from(w: CampaignConfigWire) -> Self {
        let policy = w.policy.unwrap_or_else(|| match w.kind {
            CampaignKind::Items => default_items_policy(),
            CampaignKind::SendTime => default_policy(),
        });
        let featurizer = w.featurizer.unwrap_or_else(|| match policy {
            PolicyConfig::SparseLinUcb { .. } => default_sparse_featurizer(),
            _ => FeaturizerConfig::default(),
        });
        CampaignConfig {
            id: w.id,
            kind: w.kind,
            policy,
            shadow_policies: w.shadow_policies,
            featurizer,
            reward_wait_seconds: w.reward_wait_seconds,
            return_window_seconds: w.return_window_seconds,
            default_reward: w.default_reward,
            reward_range: w.reward_range,
            reward_out_of_range: w.reward_out_of_range,
            reward_aggregation: w.reward_aggregation,
            status: w.status,
            exploration: w.exploration,
            holdout: w.holdout,
            holdout_salt: w.holdout_salt,
            log_requests: w.log_requests,
            audience_field: w.audience_field,
            plugins: w.plugins,
            personalizer: w.personalizer,
            slots: w.slots,
            send_time: w.send_time,
            merchandising: w.merchandising,
            // -- Variety, wall-clock forgetting, promotions.
            variety: w.variety,
            half_life: w.half_life,
            promotions: w.promotions,
            autopilot: w.autopilot,
        }
    }
}

/// The slots a send-time campaign chooses among, in the shopper's local time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SlotGrid {
    Named(NamedGrid),
    /// Custom windows (at most 168).
    Windows(Vec<SlotWindow>),
}

/// The built-in grids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NamedGrid {
    /// 24 slots: the top of each local hour, any day.
    HourOfDay,
    /// 168 slots: each local hour of each weekday (Monday 00:00 is slot 0).
    HourOfWeek,
}

/// A custom send window: a local start time, optionally only on some weekdays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotWindow {
    /// Slot id, `[A-Za-z0-9_.-]{1,64}`, unique in the grid.
    pub id: String,
    /// Local start time `HH:MM` (24-hour clock); sends go out at this time.
    pub start: String,
    /// Weekdays (`mon` … `sun`) the window exists on; empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
}

/// Learning and scheduling settings of a send-time campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendTimeSettings {
    /// Pseudo-trials a shopper's per-slot prior takes from their segment (and a segment's from
    /// the whole population): higher trusts the population longer.
    pub prior_strength: f64,
    /// `send_at` is at least this many minutes after the decision (or `earliest`).
    pub min_lead_minutes: f64,
    /// At most one send per shopper per this many hours (0: no cap).
    pub frequency_cap_hours: f64,
    /// Learned counts halve over this many days (0: never forget).
    pub half_life_days: f64,
    /// A shopper's state is dropped after this many days without a decision or reward.
    pub retention_days: f64,
    /// Most distinct slots one shopper's state keeps (1–168): a new slot beyond them replaces
    /// the one with the fewest opens (then the fewest decayed trials), which falls back to the
    /// segment's prior. A decision's cost grows with the slots kept.
    pub max_shopper_slots: usize,
    /// Context field naming the shopper's segment (string); absent means the whole population.
    pub segment_attribute: String,
}

impl Default for SendTimeSettings {
    fn default() -> Self {
        Self {
            prior_strength: 10.0,
            min_lead_minutes: 0.0,
            frequency_cap_hours: 0.0,
            half_life_days: 30.0,
            retention_days: 180.0,
            max_shopper_slots: DEFAULT_MAX_SHOPPER_SLOTS,
            segment_attribute: "segment".into(),
        }
    }
}

/// Default of [`SendTimeSettings::max_shopper_slots`] (see docs/send-time.md for the simulation
/// behind it).
pub const DEFAULT_MAX_SHOPPER_SLOTS: usize = 12;

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A validated slot of a grid: its id, local time of day, and the weekdays it exists on
/// (bit `d` set: weekday `d`, Monday = 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSpec {
    pub id: String,
    pub hour: u8,
    pub minute: u8,
    pub days: u8,
}

impl SlotSpec {
    /// The weekday (Monday = 0) when the slot exists on exactly one.
    pub fn weekday(&self) -> Option<u8> {
        (self.days.count_ones() == 1).then(|| self.days.trailing_zeros() as u8)
    }

    pub fn weekday_name(d: u8) -> &'static str {
        WEEKDAYS[d as usize % 7]
    }
}

fn parse_hhmm(s: &str) -> Option<(u8, u8)> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u8, u8) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((h, m))
}

impl SlotGrid {
    /// The slots, validated; errors name the field (`slots[2].start`).
    pub fn specs(&self) -> Result<Vec<SlotSpec>, EngineError> {
        match self {
            SlotGrid::Named(NamedGrid::HourOfDay) => Ok((0..24u8)
                .map(|h| SlotSpec {
                    id: format!("h{h:02}"),
                    hour: h,
                    minute: 0,
                    days: 0x7f,
                })
                .collect()),
            SlotGrid::Named(NamedGrid::HourOfWeek) => Ok((0..168u16)
                .map(|i| SlotSpec {
                    id: format!("{}-h{:02}", WEEKDAYS[(i / 24) as usize], i % 24),
                    hour: (i % 24) as u8,
                    minute: 0,
                    days: 1 << (i / 24),
                })
                .collect()),
            SlotGrid::Windows(ws) => {
                if ws.is_empty() || ws.len() > tailor_policies::send_time::MAX_SLOTS {
                    return Err(EngineError::invalid(
                        "slots",
                        "a list of 1 to 168 windows, or \"hour_of_day\" / \"hour_of_week\"",
                    ));
                }
                let mut out: Vec<SlotSpec> = Vec::with_capacity(ws.len());
                for (i, w) in ws.iter().enumerate() {
                    validate_id("slots", &w.id).map_err(|_| {
                        EngineError::invalid(
                            &format!("slots[{i}].id"),
                            "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_' or '.'",
                        )
                    })?;
                    if out.iter().any(|s| s.id == w.id) {
                        return Err(EngineError::invalid_owned(
                            &format!("slots[{i}].id"),
                            format!("duplicate slot id {:?}", w.id),
                        ));
                    }
                    let (hour, minute) = parse_hhmm(&w.start).ok_or_else(|| {
                        EngineError::invalid(
                            &format!("slots[{i}].start"),
                            "must be a local time HH:MM (00:00 to 23:59)",
                        )
                    })?;
                    let mut days = 0u8;
                    for (k, d) in w.days.iter().enumerate() {
                        let Some(bit) = WEEKDAYS.iter().position(|x| x.eq_ignore_ascii_case(d))
                        else {
                            return Err(EngineError::invalid(
                                &format!("slots[{i}].days[{k}]"),
                                "must be one of mon, tue, wed, thu, fri, sat, sun",
                            ));
                        };
                        days |= 1 << bit;
                    }
                    out.push(SlotSpec {
                        id: w.id.clone(),
                        hour,
                        minute,
                        days: if days == 0 { 0x7f } else { days },
                    });
                }
                Ok(out)
            }
        }
    }
}

impl SendTimeSettings {
    fn validate(&self) -> Result<(), EngineError> {
        let check = |field: &str, v: f64, lo: f64, hi: f64, what: &str| {
            if v.is_finite() && v >= lo && v <= hi {
                Ok(())
            } else {
                Err(EngineError::invalid(&format!("send_time.{field}"), what))
            }
        };
        if !(self.prior_strength.is_finite()
            && self.prior_strength > 0.0
            && self.prior_strength <= 1e6)
        {
            return Err(EngineError::invalid(
                "send_time.prior_strength",
                "must be a number above 0 and at most 1000000",
            ));
        }
        check(
            "min_lead_minutes",
            self.min_lead_minutes,
            0.0,
            10_080.0,
            "must be between 0 and 10080 minutes (a week)",
        )?;
        check(
            "frequency_cap_hours",
            self.frequency_cap_hours,
            0.0,
            8_760.0,
            "must be between 0 and 8760 hours (a year)",
        )?;
        check(
            "half_life_days",
            self.half_life_days,
            0.0,
            3_650.0,
            "must be between 0 (never forget) and 3650 days",
        )?;
        if !(self.retention_days.is_finite()
            && self.retention_days >= 1.0
            && self.retention_days <= 3_650.0)
        {
            return Err(EngineError::invalid(
                "send_time.retention_days",
                "must be between 1 and 3650 days",
            ));
        }
        if !(1..=tailor_policies::send_time::MAX_SLOTS).contains(&self.max_shopper_slots) {
            return Err(EngineError::invalid(
                "send_time.max_shopper_slots",
                "must be between 1 and 168",
            ));
        }
        if self.segment_attribute.is_empty() || self.segment_attribute.len() > 64 {
            return Err(EngineError::invalid(
                "send_time.segment_attribute",
                "must be 1-64 characters",
            ));
        }
        Ok(())
    }
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn default_wait() -> f64 {
    600.0
}

/// The default return window: 30 days.
pub const DEFAULT_RETURN_WINDOW_SECONDS: f64 = 30.0 * 86_400.0;
/// The longest return window: 365 days.
pub const MAX_RETURN_WINDOW_SECONDS: f64 = 365.0 * 86_400.0;

fn default_return_window() -> f64 {
    DEFAULT_RETURN_WINDOW_SECONDS
}

/// What a campaign decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignKind {
    /// Rank products (one or several slots).
    #[default]
    Items,
    /// Choose a send slot for a message.
    SendTime,
}

/// How several rewards for one slot combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RewardAggregation {
    /// The first reward counts and is learned from at once; later ones are ignored.
    #[default]
    Earliest,
    /// Rewards add up until the window closes; the total is learned from then.
    Sum,
}

/// What a reward outside the campaign's `reward_range` gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutOfRange {
    /// 400 naming the field and the range; nothing is recorded.
    #[default]
    Refuse,
    /// Moved to the nearest bound, then joined and learned from as usual.
    Clip,
}

/// Whether the campaign's policy serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    #[default]
    Active,
    /// Serves the baseline order (candidates as sent) and keeps logging and learning.
    Paused,
    /// Serves the baseline order and logs decisions and rewards, but does not learn
    /// (Personalizer's `LoggingOnly` learning mode).
    LoggingOnly,
}

/// One plugin in a campaign's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    pub name: String,
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// What a decision does when a constraint plugin fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Serve the candidates in the order sent.
    #[default]
    Baseline,
    /// Answer 503.
    Refuse,
}

/// Largest reward window accepted (30 days).
const MAX_WAIT_SECONDS: f64 = 30.0 * 86_400.0;

pub(crate) fn validate_id(field: &'static str, id: &str) -> Result<(), EngineError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::invalid(
            field,
            "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_' or '.'",
        ))
    }
}

impl CampaignConfig {
    /// Check everything serde cannot, naming the field.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_id("id", &self.id)?;
        if !self.reward_wait_seconds.is_finite()
            || self.reward_wait_seconds <= 0.0
            || self.reward_wait_seconds > MAX_WAIT_SECONDS
        {
            return Err(EngineError::invalid(
                "reward_wait_seconds",
                "must be a number of seconds above 0 and at most 2592000 (30 days)",
            ));
        }
        if !(self.return_window_seconds.is_finite()
            && self.return_window_seconds >= self.reward_wait_seconds
            && self.return_window_seconds <= MAX_RETURN_WINDOW_SECONDS)
        {
            return Err(EngineError::invalid(
                "return_window_seconds",
                "must be a number of seconds at least reward_wait_seconds and at most 31536000 (365 days)",
            ));
        }
        if !(self.exploration.is_finite() && (0.0..=1.0).contains(&self.exploration)) {
            return Err(EngineError::invalid(
                "exploration",
                "must be a share between 0 and 1",
            ));
        }
        if !(self.holdout.is_finite() && (0.0..=0.5).contains(&self.holdout)) {
            return Err(EngineError::invalid(
                "holdout",
                "must be a share between 0 and 0.5",
            ));
        }
        if self.holdout_salt.len() > 64 {
            return Err(EngineError::invalid(
                "holdout_salt",
                "at most 64 characters",
            ));
        }
        if let Err(tailor_policies::PolicyError::InvalidConfig { message, .. }) =
            self.reward_range.validate()
        {
            return Err(EngineError::invalid_owned("reward_range", message));
        }
        if !self.reward_range.contains(self.default_reward) {
            return Err(EngineError::invalid_owned(
                "default_reward",
                format!(
                    "must be a number inside reward_range [{}, {}], got {}",
                    self.reward_range.lo, self.reward_range.hi, self.default_reward
                ),
            ));
        }
        let featurizer = self
            .featurizer
            .build()
            .map_err(|e| EngineError::policy("featurizer", e))?;
        self.policy
            .build(featurizer.dimension())
            .map_err(|e| EngineError::policy("policy", e))?;
        let mut names = vec![self.policy.kind()];
        for (i, p) in self.shadow_policies.iter().enumerate() {
            p.build(featurizer.dimension())
                .map_err(|e| EngineError::policy("shadow_policies", e))?;
            if names.contains(&p.kind()) {
                return Err(EngineError::invalid_owned(
                    "shadow_policies",
                    format!(
                        "entry {i}: a policy of type {:?} is already configured; each type may appear once",
                        p.kind()
                    ),
                ));
            }
            names.push(p.kind());
        }
        self.merchandising.validate()?;
        for p in &self.plugins {
            if p.name.is_empty() {
                return Err(EngineError::invalid("plugins", "every entry needs a name"));
            }
        }
        variety::validate(
            self.kind == CampaignKind::Items,
            self.variety.as_ref(),
            self.half_life.as_deref(),
            &self.promotions,
            &mut self.all_policies(),
        )?;
        if let Some(f) = &self.audience_field {
            if f.is_empty()
                || f.len() > 64
                || !f
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(EngineError::invalid(
                    "audience_field",
                    "a context field name of 1 to 64 characters from [A-Za-z0-9_.-]",
                ));
            }
            if self.kind != CampaignKind::Items {
                return Err(EngineError::invalid(
                    "audience_field",
                    "only items campaigns have audience reports",
                ));
            }
        }
        // A slate drawn under variety limits, promotions or a wall-clock half-life applies no
        // factors (engine/decide.rs): refuse the boosts that would silently do nothing.
        if !self.merchandising.boosts.is_empty()
            && (self.variety.is_some() || self.half_life.is_some() || !self.promotions.is_empty())
        {
            return Err(EngineError::invalid(
                "merchandising.boosts",
                "boosts cannot be combined with variety, half_life or promotions yet",
            ));
        }
        match self.kind {
            CampaignKind::Items => {
                if self.slots.is_some() {
                    return Err(EngineError::invalid(
                        "slots",
                        "only send_time campaigns have slots",
                    ));
                }
                if self.send_time.is_some() {
                    return Err(EngineError::invalid(
                        "send_time",
                        "only send_time campaigns have send_time settings",
                    ));
                }
            }
            CampaignKind::SendTime => {
                if !self.merchandising.is_empty() {
                    return Err(EngineError::invalid(
                        "merchandising",
                        "only items campaigns have pins and boosts",
                    ));
                }
                let Some(grid) = &self.slots else {
                    return Err(EngineError::invalid(
                        "slots",
                        "required for send_time campaigns: \"hour_of_day\", \"hour_of_week\" or a list of windows",
                    ));
                };
                grid.specs()?;
                self.send_time_settings().validate()?;
                if self.holdout != 0.0 {
                    return Err(EngineError::invalid(
                        "holdout",
                        "send_time campaigns have no holdout (must be 0)",
                    ));
                }
            }
        }
        if let Some(a) = &self.autopilot {
            a.validate(self)?;
        }
        Ok(())
    }

    /// Every configured policy as (name, config), serving first.
    pub fn all_policies(&self) -> impl Iterator<Item = &PolicyConfig> {
        std::iter::once(&self.policy).chain(self.shadow_policies.iter())
    }

    /// Whether rewards update the policies (every status but `logging_only`).
    pub fn learns(&self) -> bool {
        self.status != CampaignStatus::LoggingOnly
    }

    /// The send-time settings, defaults filled in.
    pub fn send_time_settings(&self) -> SendTimeSettings {
        self.send_time.clone().unwrap_or_default()
    }

    /// The value a reward sent as `value` joins with: itself inside `reward_range`; outside, an
    /// error naming `field` and the range (`refuse`) or the nearest bound (`clip`). Never
    /// accepts a non-finite value.
    pub fn admit_reward(&self, field: &str, value: f64) -> Result<f64, EngineError> {
        if !value.is_finite() {
            return Err(EngineError::invalid(field, "must be a finite number"));
        }
        let range = self.reward_range;
        if range.contains(value) {
            return Ok(value);
        }
        match self.reward_out_of_range {
            OutOfRange::Clip => Ok(range.clamp(value)),
            OutOfRange::Refuse => Err(EngineError::invalid_owned(
                field,
                format!(
                    "{value} is outside campaign {:?}'s reward_range [{}, {}] (the campaign refuses out-of-range rewards; see reward_out_of_range)",
                    self.id, range.lo, range.hi
                ),
            )),
        }
    }

    /// The return window in milliseconds.
    pub fn return_window_ms(&self) -> u64 {
        (self.return_window_seconds * 1000.0).round() as u64
    }

    /// The wall-clock half-life in ms, when `half_life` is set (validated).
    pub fn half_life_ms(&self) -> Option<f64> {
        let h = self.half_life.as_deref()?;
        parse_duration_ms("half_life", h).ok()
    }

    pub fn reward_wait_ms(&self) -> u64 {
        (self.reward_wait_seconds * 1000.0).round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> CampaignConfig {
        serde_json::from_value(v).expect("campaign config")
    }

    #[test]
    fn items_without_a_policy_learn_from_context_in_a_large_space() {
        let c = parse(json!({"id": "c", "kind": "items"}));
        assert_eq!(c.policy, default_items_policy());
        assert_eq!(c.policy.kind(), "sparse_linucb");
        assert_eq!(c.featurizer, default_sparse_featurizer());
        assert_eq!(c.featurizer.dimension, 1 << 16);
        assert!(c.featurizer.interactions);
        assert_eq!(c.exploration, 0.0);
        c.validate().expect("the default is valid");
        // Stored and read back (the campaigns tree keeps the JSON): nothing changes.
        assert_eq!(parse(serde_json::to_value(&c).unwrap()), c);
    }

    #[test]
    fn explicit_settings_keep_their_own_defaults() {
        // A dense policy sent without a featurizer keeps dimension 64.
        let c = parse(json!({"id": "c", "policy": {"type": "linucb"}}));
        assert_eq!(c.featurizer, FeaturizerConfig::default());
        c.validate().unwrap();
        // sparse_linucb sent without a featurizer gets the large one.
        let c = parse(json!({"id": "c", "policy": {"type": "sparse_linucb", "alpha": 0.5}}));
        assert_eq!(c.featurizer.dimension, DEFAULT_SPARSE_DIMENSION);
        // A featurizer sent without a policy is kept as sent.
        let c = parse(json!({"id": "c", "featurizer": {"dimension": 512}}));
        assert_eq!(c.policy.kind(), "sparse_linucb");
        assert_eq!(c.featurizer.dimension, 512);
        // Send-time campaigns keep per-slot Thompson.
        let c = parse(json!({"id": "m", "kind": "send_time", "slots": "hour_of_day"}));
        assert_eq!(c.policy, default_policy());
        assert_eq!(c.featurizer, FeaturizerConfig::default());
        // Unknown fields are still refused.
        assert!(serde_json::from_value::<CampaignConfig>(json!({"id": "c", "polcy": {}})).is_err());
    }

    #[test]
    fn dense_policies_on_a_large_space_are_refused_naming_the_field() {
        let c = parse(json!({
            "id": "c", "policy": {"type": "linucb"}, "featurizer": {"dimension": 65536}
        }));
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("policy.dimension") && err.contains("4096"),
            "{err}"
        );
        let c = parse(json!({"id": "c", "shadow_policies": [{"type": "linear_thompson"}]}));
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("shadow_policies.dimension"), "{err}");
        for (policy, field) in [
            (
                json!({"type": "sparse_linucb", "alpha": -0.1}),
                "policy.alpha",
            ),
            (
                json!({"type": "sparse_linucb", "alpha": 11}),
                "policy.alpha",
            ),
            (
                json!({"type": "sparse_linucb", "lambda": 0}),
                "policy.lambda",
            ),
            (
                json!({"type": "sparse_linucb", "lambda": 1e5}),
                "policy.lambda",
            ),
            (
                json!({"type": "sparse_linucb", "half_life": 0.5}),
                "policy.half_life",
            ),
        ] {
            let err = parse(json!({"id": "c", "policy": policy}))
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{policy}: {err}");
        }
        let c = parse(json!({"id": "c", "featurizer": {"dimension": 262145}}));
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("featurizer.dimension"));
    }
}
