//! Campaign configuration: what an admin sends, validated into something the engine can run.

use serde::{Deserialize, Serialize};
use tailor_policies::{FeaturizerConfig, PolicyConfig};

use crate::error::EngineError;

/// A decision point: what it ranks, how it learns, how rewards join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// Unique id, `[A-Za-z0-9_.-]{1,64}`.
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub kind: CampaignKind,
    /// The serving policy, tagged by `type`: `thompson`, `gaussian_thompson`, `linucb`,
    /// `linucb_disjoint`, `linear_thompson`, `epsilon_greedy`, `uniform` or `fixed`, with its
    /// parameters (e.g. `{"type": "thompson", "prior_alpha": 1, "prior_beta": 1}`).
    #[schema(value_type = Object)]
    pub policy: PolicyConfig,
    /// Policies that learn from every reward without serving; switching to one is warm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub shadow_policies: Vec<PolicyConfig>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub featurizer: FeaturizerConfig,
    /// How long after a decision rewards are accepted.
    #[serde(default = "default_wait")]
    pub reward_wait_seconds: f64,
    /// Reward applied to a slot that got none within the window.
    #[serde(default)]
    pub default_reward: f64,
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
    /// Ordered plugin chain (see docs/plugins.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginRef>,
    /// Settings of the Personalizer-compatible API that have no Tailor meaning, kept as sent so
    /// its GETs return what its PUTs set (see docs/migrating-from-personalizer.md). Kept across
    /// updates that leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personalizer: Option<serde_json::Value>,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn default_wait() -> f64 {
    600.0
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
        if !self.default_reward.is_finite() {
            return Err(EngineError::invalid("default_reward", "must be finite"));
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
        for p in &self.plugins {
            if p.name.is_empty() {
                return Err(EngineError::invalid("plugins", "every entry needs a name"));
            }
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

    pub fn reward_wait_ms(&self) -> u64 {
        (self.reward_wait_seconds * 1000.0).round() as u64
    }
}
