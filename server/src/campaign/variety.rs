//! Campaign settings for variety in slates, forgetting in wall-clock time and promotions
//! (issue 22, items 3 and 6; docs/variety.md). The engine side is `engine/promotions.rs`.

use serde::{Deserialize, Serialize};
use tailor_policies::PolicyConfig;

use super::validate_id;
use crate::error::EngineError;

/// How varied a slate must be: at most `max_per_value` slots per value of the candidates'
/// `attribute`, and a share of slots drawn among values the slate does not hold yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VarietySettings {
    /// The candidate attribute that names a value (e.g. `category`, `brand`), read from each
    /// candidate's `attributes`, else its `features`. Strings, numbers and booleans are values;
    /// a candidate without one is never limited.
    pub attribute: String,
    /// At most this many slots of one answer share a value (1 to 100; 0 or absent: no limit).
    /// An answer holds fewer than `k` slots when the limit leaves no candidate.
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub max_per_value: usize,
    /// Share of slots (0 to 1) the policy fills among candidates whose value the answer does not
    /// hold yet (1: every value once before any repeats). Propensities stay exact.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub diversity: f64,
}

/// When a promotion resets the posteriors of what it names toward the prior.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResetAt {
    #[default]
    None,
    Start,
    End,
    Both,
}

impl ResetAt {
    pub fn at_start(self) -> bool {
        matches!(self, ResetAt::Start | ResetAt::Both)
    }
    pub fn at_end(self) -> bool {
        matches!(self, ResetAt::End | ResetAt::Both)
    }
}

/// A time window over some items (or the whole campaign) that raises exploration while it runs
/// and/or resets what was learned about them when it starts and ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    /// `[A-Za-z0-9_.-]{1,64}`, unique in the campaign.
    pub id: String,
    /// RFC 3339 time the promotion starts (e.g. `2026-06-01T00:00:00Z`).
    pub starts_at: String,
    /// RFC 3339 time it ends, after `starts_at`.
    pub ends_at: String,
    /// Candidate ids it covers (at most 1000).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
    /// Candidates whose `attributes` (else `features`) field `attribute` equals `value` are
    /// covered too (exploration only: the engine learns no attributes, so it cannot reset by
    /// them). Neither items nor attribute: the whole campaign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub value: Option<serde_json::Value>,
    /// While it runs, this share of slots (0 to 1) is served uniformly among the covered
    /// candidates, on top of the campaign's `exploration`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exploration: f64,
    /// Reset the covered items' posteriors toward the prior at `start`, `end` or `both`
    /// (default `none`), once per boundary, by the engine's background task (audited).
    #[serde(default)]
    pub reset: ResetAt,
    /// Share of learned evidence a reset keeps (0 to 1; 0, the default: back to the prior).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reset_keep: f64,
}

/// Most promotions one campaign holds.
pub const MAX_PROMOTIONS: usize = 32;
/// Most items one promotion names.
pub const MAX_PROMOTION_ITEMS: usize = 1_000;

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_zero_usize(v: &usize) -> bool {
    *v == 0
}

/// Milliseconds since the epoch of an RFC 3339 time.
pub fn parse_time(field: &str, s: &str) -> Result<u64, EngineError> {
    let t: jiff::Timestamp = s.parse().map_err(|_| {
        EngineError::invalid(
            field,
            "must be an RFC 3339 time with an offset, e.g. 2026-06-01T00:00:00Z",
        )
    })?;
    u64::try_from(t.as_millisecond())
        .map_err(|_| EngineError::invalid(field, "must be after 1970-01-01T00:00:00Z"))
}

/// Shortest and longest wall-clock half-life accepted.
const MIN_HALF_LIFE_MS: f64 = 60_000.0;
const MAX_HALF_LIFE_MS: f64 = 3_650.0 * 86_400_000.0;

/// A duration such as `90m`, `36h`, `7d` or `2w` (also `s` and `ms`) in milliseconds.
pub fn parse_duration_ms(field: &str, s: &str) -> Result<f64, EngineError> {
    let bad = || {
        EngineError::invalid(
            field,
            "must be a duration like \"90m\", \"36h\", \"7d\" or \"2w\" (units ms, s, m, h, d, w), between 1 minute and 3650 days",
        )
    };
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().map_err(|_| bad())?;
    let unit_ms = match unit.trim() {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        "w" => 7.0 * 86_400_000.0,
        _ => return Err(bad()),
    };
    let ms = n * unit_ms;
    if ms.is_finite() && (MIN_HALF_LIFE_MS..=MAX_HALF_LIFE_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(bad())
    }
}

/// A promotion with its window in ms, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PromotionWindow {
    pub starts_ms: u64,
    pub ends_ms: u64,
}

impl Promotion {
    pub fn window(&self, i: usize) -> Result<PromotionWindow, EngineError> {
        let starts_ms = parse_time(&format!("promotions[{i}].starts_at"), &self.starts_at)?;
        let ends_ms = parse_time(&format!("promotions[{i}].ends_at"), &self.ends_at)?;
        if ends_ms <= starts_ms {
            return Err(EngineError::invalid(
                &format!("promotions[{i}].ends_at"),
                "must be after starts_at",
            ));
        }
        Ok(PromotionWindow { starts_ms, ends_ms })
    }

    /// Whether the promotion covers every candidate (names no items and no attribute).
    pub fn whole_campaign(&self) -> bool {
        self.items.is_empty() && self.attribute.is_none()
    }
}

fn share(field: &str, v: f64) -> Result<(), EngineError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(EngineError::invalid(
            field,
            "must be a share between 0 and 1",
        ))
    }
}

/// Validates the variety, `half_life` and `promotions` settings of an `items` campaign
/// (`items`: whether the campaign ranks items; the settings are refused otherwise).
pub(super) fn validate(
    items: bool,
    variety: Option<&VarietySettings>,
    half_life: Option<&str>,
    promotions: &[Promotion],
    policies: &mut dyn Iterator<Item = &PolicyConfig>,
) -> Result<(), EngineError> {
    if let Some(v) = variety {
        if !items {
            return Err(EngineError::invalid(
                "variety",
                "only items campaigns fill slates",
            ));
        }
        if v.attribute.is_empty() || v.attribute.len() > 64 {
            return Err(EngineError::invalid(
                "variety.attribute",
                "must be 1-64 characters",
            ));
        }
        if v.max_per_value > 100 {
            return Err(EngineError::invalid(
                "variety.max_per_value",
                "must be between 1 and 100 (0: no limit)",
            ));
        }
        share("variety.diversity", v.diversity)?;
    }
    if let Some(h) = half_life {
        if !items {
            return Err(EngineError::invalid(
                "half_life",
                "send_time campaigns forget with send_time.half_life_days",
            ));
        }
        parse_duration_ms("half_life", h)?;
        for p in policies {
            p.check_time_half_life().map_err(|e| match e {
                tailor_policies::PolicyError::InvalidConfig { message, .. } => {
                    EngineError::invalid_owned("half_life", message)
                }
                other => EngineError::invalid_owned("half_life", other.to_string()),
            })?;
        }
    }
    if !promotions.is_empty() && !items {
        return Err(EngineError::invalid(
            "promotions",
            "only items campaigns have promotions",
        ));
    }
    if promotions.len() > MAX_PROMOTIONS {
        return Err(EngineError::invalid_owned(
            "promotions",
            format!("at most {MAX_PROMOTIONS} promotions per campaign"),
        ));
    }
    for (i, p) in promotions.iter().enumerate() {
        let field = |f: &str| format!("promotions[{i}].{f}");
        validate_id("promotions", &p.id).map_err(|_| {
            EngineError::invalid(
                &field("id"),
                "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_' or '.'",
            )
        })?;
        if promotions[..i].iter().any(|q| q.id == p.id) {
            return Err(EngineError::invalid_owned(
                &field("id"),
                format!("duplicate promotion id {:?}", p.id),
            ));
        }
        p.window(i)?;
        if p.items.len() > MAX_PROMOTION_ITEMS {
            return Err(EngineError::invalid_owned(
                &field("items"),
                format!("at most {MAX_PROMOTION_ITEMS} items"),
            ));
        }
        for (j, id) in p.items.iter().enumerate() {
            if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
                return Err(EngineError::invalid(
                    &format!("promotions[{i}].items[{j}]"),
                    "must be 1-256 characters with no control characters",
                ));
            }
        }
        match (&p.attribute, &p.value) {
            (Some(a), Some(v)) => {
                if a.is_empty() || a.len() > 64 {
                    return Err(EngineError::invalid(
                        &field("attribute"),
                        "must be 1-64 characters",
                    ));
                }
                if super::super::engine::promotions::value_key(v).is_none() {
                    return Err(EngineError::invalid(
                        &field("value"),
                        "must be a string, number or boolean",
                    ));
                }
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(EngineError::invalid(
                    &field("value"),
                    "required with attribute",
                ))
            }
            (None, Some(_)) => {
                return Err(EngineError::invalid(
                    &field("attribute"),
                    "required with value",
                ))
            }
        }
        share(&field("exploration"), p.exploration)?;
        share(&field("reset_keep"), p.reset_keep)?;
        if p.reset != ResetAt::None && p.items.is_empty() && p.attribute.is_some() {
            return Err(EngineError::invalid(
                &field("reset"),
                "a reset needs items (or neither items nor attribute: the whole campaign); the engine cannot tell which learned items carry an attribute",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_range() {
        assert_eq!(parse_duration_ms("h", "90m").unwrap(), 5_400_000.0);
        assert_eq!(parse_duration_ms("h", "36h").unwrap(), 129_600_000.0);
        assert_eq!(parse_duration_ms("h", "7d").unwrap(), 604_800_000.0);
        assert_eq!(parse_duration_ms("h", "1.5d").unwrap(), 129_600_000.0);
        assert_eq!(parse_duration_ms("h", "2w").unwrap(), 1_209_600_000.0);
        for bad in ["", "7", "d", "7y", "30s", "-1d", "4000d", "1e3h", "NaNd"] {
            let e = parse_duration_ms("half_life", bad).unwrap_err().to_string();
            assert!(e.starts_with("half_life:"), "{bad}: {e}");
        }
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(
            parse_time("t", "2026-06-01T00:00:00Z").unwrap(),
            1_780_272_000_000
        );
        assert!(parse_time("t", "2026-06-01").is_err());
        assert!(parse_time("t", "1960-01-01T00:00:00Z").is_err());
    }
}
