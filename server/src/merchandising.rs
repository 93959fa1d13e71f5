//! Merchandising rules of a campaign (issue 22): pins (item X in slot N) and boosts (items whose
//! attribute has a value, promoted or demoted by a factor), each with an optional time window.
//! This module is the configuration and its validation; `engine/merch.rs` applies the rules to a
//! decision. Semantics and propensity rules: docs/merchandising.md.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::EngineError;

/// Smallest boost factor (a bury to 1 %).
pub const MIN_FACTOR: f64 = 0.01;
/// Largest boost factor.
pub const MAX_FACTOR: f64 = 100.0;
/// Highest slot a pin may name (0-based), so at most this many + 1 slots.
pub const MAX_PIN_SLOT: u32 = 99;
/// Most pins, and most boosts, per campaign.
pub const MAX_RULES: usize = 200;
/// Longest item id, attribute name or string value.
const MAX_TEXT: usize = 256;

/// A campaign's merchandising rules (`merchandising` in its config).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Merchandising {
    /// Items served in a fixed slot while their window is open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<Pin>,
    /// Items promoted (`factor > 1`) or demoted (`factor < 1`) by an attribute value while their
    /// window is open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boosts: Vec<Boost>,
}

/// Pin `item` to `slot` (0 = the top slot). Served there with probability 1 whenever the window
/// is open, the item is among the candidates, no constraint plugin removed it and the request
/// asks for more than `slot` slots; skipped otherwise (the preview says why).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// The candidate id to pin.
    pub item: String,
    /// 0-based slot, at most 99.
    pub slot: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub starts_at: Option<At>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ends_at: Option<At>,
    /// Free text for people (why, who asked); at most 256 characters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// Multiply the policy's score (or sampling weight) of every candidate whose
/// `attributes.<attribute>` equals `value` (or is an array holding it) by `factor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Boost {
    /// Attribute name; nested objects with dots (`brand.name`).
    pub attribute: String,
    /// A string, number or boolean.
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    /// 0.01 to 100: above 1 promotes, below 1 demotes ("bury").
    pub factor: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub starts_at: Option<At>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ends_at: Option<At>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// An instant, RFC 3339 on the wire (`2026-12-24T00:00:00Z`), milliseconds since the epoch
/// inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct At(pub i64);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::Timestamp::from_millisecond(self.0) {
            Ok(t) => write!(f, "{t}"),
            Err(_) => write!(f, "{}ms", self.0),
        }
    }
}

impl Serialize for At {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for At {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let t: jiff::Timestamp = text.parse().map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not an RFC 3339 instant such as 2026-12-24T00:00:00Z ({e})"
            ))
        })?;
        Ok(At(t.as_millisecond()))
    }
}

/// Whether a window `[starts_at, ends_at)` is open at `now_ms` (an absent end is open).
pub fn open_at(starts_at: Option<At>, ends_at: Option<At>, now_ms: i64) -> bool {
    starts_at.is_none_or(|s| s.0 <= now_ms) && ends_at.is_none_or(|e| now_ms < e.0)
}

fn windows_overlap(a: (Option<At>, Option<At>), b: (Option<At>, Option<At>)) -> bool {
    let start = |s: Option<At>| s.map_or(i64::MIN, |s| s.0);
    let end = |e: Option<At>| e.map_or(i64::MAX, |e| e.0);
    start(a.0) < end(b.1) && start(b.0) < end(a.1)
}

fn check_window(
    field: &str,
    starts_at: Option<At>,
    ends_at: Option<At>,
) -> Result<(), EngineError> {
    if let (Some(s), Some(e)) = (starts_at, ends_at) {
        if s >= e {
            return Err(EngineError::invalid_owned(
                &format!("{field}.ends_at"),
                format!("must be after starts_at ({s})"),
            ));
        }
    }
    Ok(())
}

fn check_text(field: &str, v: &str, empty_ok: bool) -> Result<(), EngineError> {
    if (!empty_ok && v.is_empty()) || v.len() > MAX_TEXT || v.chars().any(char::is_control) {
        return Err(EngineError::invalid_owned(
            field,
            format!(
                "must be {}-{MAX_TEXT} characters with no control characters",
                u8::from(!empty_ok)
            ),
        ));
    }
    Ok(())
}

impl Merchandising {
    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty() && self.boosts.is_empty()
    }

    /// Checks ranges, texts, windows, and that no two pins with overlapping windows share a
    /// slot or an item. Fields are named `merchandising.pins[i].slot` and the like.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.pins.len() > MAX_RULES {
            return Err(EngineError::invalid_owned(
                "merchandising.pins",
                format!("at most {MAX_RULES} pins"),
            ));
        }
        if self.boosts.len() > MAX_RULES {
            return Err(EngineError::invalid_owned(
                "merchandising.boosts",
                format!("at most {MAX_RULES} boosts"),
            ));
        }
        for (i, p) in self.pins.iter().enumerate() {
            let field = format!("merchandising.pins[{i}]");
            check_text(&format!("{field}.item"), &p.item, false)?;
            check_text(&format!("{field}.note"), &p.note, true)?;
            if p.slot > MAX_PIN_SLOT {
                return Err(EngineError::invalid_owned(
                    &format!("{field}.slot"),
                    format!("must be a 0-based slot from 0 to {MAX_PIN_SLOT}"),
                ));
            }
            check_window(&field, p.starts_at, p.ends_at)?;
            for (j, q) in self.pins[..i].iter().enumerate() {
                if !windows_overlap((p.starts_at, p.ends_at), (q.starts_at, q.ends_at)) {
                    continue;
                }
                if q.slot == p.slot {
                    return Err(EngineError::invalid_owned(
                        &format!("{field}.slot"),
                        format!(
                            "slot {} is already pinned by pins[{j}] in an overlapping window",
                            p.slot
                        ),
                    ));
                }
                if q.item == p.item {
                    return Err(EngineError::invalid_owned(
                        &format!("{field}.item"),
                        format!(
                            "{:?} is already pinned by pins[{j}] in an overlapping window",
                            p.item
                        ),
                    ));
                }
            }
        }
        for (i, b) in self.boosts.iter().enumerate() {
            let field = format!("merchandising.boosts[{i}]");
            check_text(&format!("{field}.attribute"), &b.attribute, false)?;
            check_text(&format!("{field}.note"), &b.note, true)?;
            match &b.value {
                serde_json::Value::String(s) => check_text(&format!("{field}.value"), s, true)?,
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {}
                _ => {
                    return Err(EngineError::invalid(
                        &format!("{field}.value"),
                        "must be a string, a number or a boolean",
                    ))
                }
            }
            if !(b.factor.is_finite() && (MIN_FACTOR..=MAX_FACTOR).contains(&b.factor)) {
                return Err(EngineError::invalid_owned(
                    &format!("{field}.factor"),
                    format!(
                        "must be between {MIN_FACTOR} and {MAX_FACTOR} (above 1 promotes, below 1 demotes)"
                    ),
                ));
            }
            check_window(&field, b.starts_at, b.ends_at)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Merchandising {
        serde_json::from_value(v).expect("merchandising")
    }

    fn field_of(m: &Merchandising) -> String {
        m.validate()
            .unwrap_err()
            .field()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn windows_parse_round_trip_and_open() {
        let m = parse(json!({"pins": [{"item": "a", "slot": 1,
            "starts_at": "2026-12-24T00:00:00Z", "ends_at": "2026-12-26T00:00:00+01:00"}]}));
        m.validate().unwrap();
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(back["pins"][0]["starts_at"], "2026-12-24T00:00:00Z");
        assert_eq!(back["pins"][0]["ends_at"], "2026-12-25T23:00:00Z");
        let p = &m.pins[0];
        let start = p.starts_at.unwrap().0;
        assert!(!open_at(p.starts_at, p.ends_at, start - 1));
        assert!(open_at(p.starts_at, p.ends_at, start));
        assert!(!open_at(p.starts_at, p.ends_at, p.ends_at.unwrap().0));
        assert!(open_at(None, None, 0));
        let bad: Result<Merchandising, _> = serde_json::from_value(
            json!({"pins": [{"item": "a", "slot": 0, "starts_at": "soon"}]}),
        );
        assert!(bad.unwrap_err().to_string().contains("RFC 3339"));
    }

    #[test]
    fn validation_names_the_field() {
        let pins = |v| parse(json!({ "pins": v }));
        assert_eq!(
            field_of(&pins(json!([{"item": "a", "slot": 100}]))),
            "merchandising.pins[0].slot"
        );
        assert_eq!(
            field_of(&pins(json!([{"item": "", "slot": 0}]))),
            "merchandising.pins[0].item"
        );
        assert_eq!(
            field_of(&pins(json!([{"item": "a", "slot": 0,
                "starts_at": "2026-01-02T00:00:00Z", "ends_at": "2026-01-01T00:00:00Z"}]))),
            "merchandising.pins[0].ends_at"
        );
        // Same slot: refused when the windows overlap, accepted when they follow each other.
        assert_eq!(
            field_of(&pins(
                json!([{"item": "a", "slot": 0}, {"item": "b", "slot": 0}])
            )),
            "merchandising.pins[1].slot"
        );
        assert_eq!(
            field_of(&pins(
                json!([{"item": "a", "slot": 0}, {"item": "a", "slot": 1}])
            )),
            "merchandising.pins[1].item"
        );
        pins(json!([
            {"item": "a", "slot": 0, "ends_at": "2026-01-01T00:00:00Z"},
            {"item": "b", "slot": 0, "starts_at": "2026-01-01T00:00:00Z"}
        ]))
        .validate()
        .unwrap();
        let boosts = |v| parse(json!({ "boosts": v }));
        for factor in [0.0, 0.001, 101.0, -2.0] {
            assert_eq!(
                field_of(&boosts(
                    json!([{"attribute": "category", "value": "x", "factor": factor}])
                )),
                "merchandising.boosts[0].factor"
            );
        }
        assert_eq!(
            field_of(&boosts(
                json!([{"attribute": "category", "value": [1], "factor": 2}])
            )),
            "merchandising.boosts[0].value"
        );
        assert_eq!(
            field_of(&boosts(
                json!([{"attribute": "", "value": "x", "factor": 2}])
            )),
            "merchandising.boosts[0].attribute"
        );
        boosts(json!([{"attribute": "on_sale", "value": true, "factor": 0.01}]))
            .validate()
            .unwrap();
    }
}
