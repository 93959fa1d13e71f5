//! The `autopilot` section of a campaign config: a policy optimization over the campaign's recent
//! log on a schedule, switching to the winner when its interval clears the serving setting's
//! (the task is `ope/autopilot.rs`; docs/optimization.md#autopilot).

use serde::{Deserialize, Serialize};

use super::{CampaignConfig, CampaignKind};
use crate::error::EngineError;
use crate::ope::optimize::{self, GridSpec};
use tailor_policies::PolicyConfig;

/// `every` when not given.
pub const DEFAULT_EVERY: &str = "6h";
/// `window` when not given.
pub const DEFAULT_WINDOW: &str = "7d";
/// `cooldown` when not given.
pub const DEFAULT_COOLDOWN: &str = "24h";
/// `min_decisions` when not given.
pub const DEFAULT_MIN_DECISIONS: u64 = 1_000;
/// Largest `min_decisions`.
pub const MAX_MIN_DECISIONS: u64 = 1_000_000_000;

const SECOND_MS: u64 = 1_000;
const DAY_MS: u64 = 86_400_000;

/// Off by default. Every field but `enabled` has a default (docs/optimization.md#autopilot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutopilotSettings {
    #[serde(default)]
    pub enabled: bool,
    /// How often the optimization runs (`"6h"`; 1 second to 30 days).
    #[serde(default = "default_every")]
    pub every: String,
    /// The log it reads: decisions of this last stretch of time (`"7d"`; 1 minute to 365 days).
    #[serde(default = "default_window")]
    pub window: String,
    /// Fewer decisions than this in the window (with a known reward and their request): no
    /// switch (1 to 10^9).
    #[serde(default = "default_min_decisions")]
    pub min_decisions: u64,
    /// After a switch, no other switch for this long (`"24h"`; 0 seconds to 365 days).
    #[serde(default = "default_cooldown")]
    pub cooldown: String,
    /// The settings it may switch to (the optimization's `grid`; omitted: its default grid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<GridSpec>,
}

impl Default for AutopilotSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            every: default_every(),
            window: default_window(),
            min_decisions: DEFAULT_MIN_DECISIONS,
            cooldown: default_cooldown(),
            grid: None,
        }
    }
}

fn default_every() -> String {
    DEFAULT_EVERY.into()
}
fn default_window() -> String {
    DEFAULT_WINDOW.into()
}
fn default_cooldown() -> String {
    DEFAULT_COOLDOWN.into()
}
fn default_min_decisions() -> u64 {
    DEFAULT_MIN_DECISIONS
}

/// A duration like `"30s"`, `"90m"`, `"6h"`, `"7d"`, `"2w"` in ms, between `min_ms` and `max_ms`.
fn duration_ms(field: &str, s: &str, min_ms: u64, max_ms: u64) -> Result<u64, EngineError> {
    let bad = || {
        EngineError::invalid_owned(
            field,
            format!(
                "must be a duration like \"30s\", \"90m\", \"6h\", \"7d\" or \"2w\" between {} and {}, got {s:?}",
                show(min_ms),
                show(max_ms)
            ),
        )
    };
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit_ms = match unit.trim() {
        "s" => SECOND_MS,
        "m" => 60 * SECOND_MS,
        "h" => 3_600 * SECOND_MS,
        "d" => DAY_MS,
        "w" => 7 * DAY_MS,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if (min_ms..=max_ms).contains(&ms) {
        Ok(ms)
    } else {
        Err(bad())
    }
}

fn show(ms: u64) -> String {
    match ms {
        0 => "0s".into(),
        m if m % DAY_MS == 0 => format!("{}d", m / DAY_MS),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m => format!("{}s", m / SECOND_MS),
    }
}

impl AutopilotSettings {
    /// `every` in ms.
    pub fn every_ms(&self) -> Result<u64, EngineError> {
        duration_ms("autopilot.every", &self.every, SECOND_MS, 30 * DAY_MS)
    }

    /// `window` in ms.
    pub fn window_ms(&self) -> Result<u64, EngineError> {
        duration_ms(
            "autopilot.window",
            &self.window,
            60 * SECOND_MS,
            365 * DAY_MS,
        )
    }

    /// `cooldown` in ms.
    pub fn cooldown_ms(&self) -> Result<u64, EngineError> {
        duration_ms("autopilot.cooldown", &self.cooldown, 0, 365 * DAY_MS)
    }

    /// Check every field against `campaign`, naming it (`autopilot.grid.alpha[1]`).
    pub(super) fn validate(&self, campaign: &CampaignConfig) -> Result<(), EngineError> {
        self.every_ms()?;
        self.window_ms()?;
        self.cooldown_ms()?;
        if !(1..=MAX_MIN_DECISIONS).contains(&self.min_decisions) {
            return Err(EngineError::invalid_owned(
                "autopilot.min_decisions",
                format!(
                    "must be between 1 and {MAX_MIN_DECISIONS}, got {}",
                    self.min_decisions
                ),
            ));
        }
        if campaign.kind != CampaignKind::Items {
            return Err(EngineError::invalid(
                "autopilot",
                "only items campaigns have an autopilot (send-time campaigns serve with their own model)",
            ));
        }
        if self.enabled && !campaign.log_requests {
            return Err(EngineError::invalid(
                "autopilot.enabled",
                "needs \"log_requests\": true (the optimization replays the logged requests)",
            ));
        }
        // The grid as the task will plan it, against a campaign serving a setting outside every
        // grid: whatever setting serves later (after a switch), the same grid stays valid.
        let mut probe = campaign.clone();
        probe.policy = PolicyConfig::Uniform {};
        optimize::plan(&probe, &self.grid.clone().unwrap_or_default()).map_err(|e| match e {
            EngineError::Invalid { field, message } => EngineError::Invalid {
                field: format!("autopilot.{field}"),
                message,
            },
            other => other,
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(autopilot: serde_json::Value) -> Option<String> {
        let c: CampaignConfig = serde_json::from_value(json!({
            "id": "c", "log_requests": true, "autopilot": autopilot,
        }))
        .unwrap();
        c.validate()
            .err()
            .and_then(|e| e.field().map(str::to_string))
    }

    #[test]
    fn defaults_are_off_and_valid() {
        let c: CampaignConfig =
            serde_json::from_value(json!({"id": "c", "autopilot": {}})).unwrap();
        c.validate().unwrap();
        let a = c.autopilot.unwrap();
        assert!(!a.enabled);
        assert_eq!(a.every_ms().unwrap(), 6 * 3_600_000);
        assert_eq!(a.window_ms().unwrap(), 7 * DAY_MS);
        assert_eq!(a.cooldown_ms().unwrap(), DAY_MS);
        assert_eq!(a.min_decisions, DEFAULT_MIN_DECISIONS);
    }

    #[test]
    fn every_field_is_range_checked_by_name() {
        assert_eq!(field(json!({"enabled": true})), None);
        assert_eq!(
            field(json!({"every": "0s"})).as_deref(),
            Some("autopilot.every")
        );
        assert_eq!(
            field(json!({"every": "31d"})).as_deref(),
            Some("autopilot.every")
        );
        assert_eq!(
            field(json!({"every": "6 hours"})).as_deref(),
            Some("autopilot.every")
        );
        assert_eq!(
            field(json!({"window": "30s"})).as_deref(),
            Some("autopilot.window")
        );
        assert_eq!(field(json!({"cooldown": "0s"})), None);
        assert_eq!(
            field(json!({"cooldown": "-1h"})).as_deref(),
            Some("autopilot.cooldown")
        );
        assert_eq!(
            field(json!({"min_decisions": 0})).as_deref(),
            Some("autopilot.min_decisions")
        );
        assert_eq!(
            field(json!({"grid": {"alpha": [0.1, -1]}})).as_deref(),
            Some("autopilot.grid.alpha[1]")
        );
        assert_eq!(
            field(json!({"grid": {"policies": ["linucb_disjoint"]}})).as_deref(),
            Some("autopilot.grid.policies[0]")
        );
        // A grid of one setting stays valid whichever setting serves.
        assert_eq!(
            field(
                json!({"grid": {"policies": ["sparse_linucb"], "alpha": [0.2], "dimension": [65536], "interactions": [true]}})
            ),
            None
        );
    }

    #[test]
    fn enabling_needs_logged_requests_and_an_items_campaign() {
        let c: CampaignConfig =
            serde_json::from_value(json!({"id": "c", "autopilot": {"enabled": true}})).unwrap();
        assert_eq!(c.validate().unwrap_err().field(), Some("autopilot.enabled"));
        let s: CampaignConfig = serde_json::from_value(json!({
            "id": "s", "kind": "send_time", "slots": "hour_of_day", "autopilot": {},
        }))
        .unwrap();
        assert_eq!(s.validate().unwrap_err().field(), Some("autopilot"));
    }
}
