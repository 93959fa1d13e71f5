//! `quiet-hours`: no sends while the shopper is asleep.
//!
//! For `send_time` campaigns, each candidate is a send slot carrying the shopper's local hour of
//! that slot (`local_hour`, 0..=23). A slot whose hour falls in the quiet window `[start, end)` is
//! excluded (reason `inside_quiet_hours`). The window may wrap midnight (21 → 8 means 21:00 to
//! 07:59). A shopper may carry their own window in the context (`quiet_start` / `quiet_end`),
//! which wins over the config.
//!
//! Config: `{"start": 21, "end": 8, "hour_attribute": "local_hour",
//!           "context_start_attribute": "quiet_start", "context_end_attribute": "quiet_end"}`
//! (`start == end` means no quiet hours.)

use serde::Deserialize;
use tailor_plugin::{export_plugin, Constraint, Request, Verdicts};

/// Reason code: the slot is inside the quiet window.
pub const QUIET: u32 = 1;

/// The validated config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuietHours {
    start: u32,
    end: u32,
    hour_attribute: String,
    context_start_attribute: String,
    context_end_attribute: String,
}

impl Default for QuietHours {
    fn default() -> Self {
        QuietHours {
            start: 21,
            end: 8,
            hour_attribute: "local_hour".into(),
            context_start_attribute: "quiet_start".into(),
            context_end_attribute: "quiet_end".into(),
        }
    }
}

/// Whether `hour` is inside `[start, end)` on a 24-hour clock.
pub fn is_quiet(hour: u32, start: u32, end: u32) -> bool {
    match start.cmp(&end) {
        std::cmp::Ordering::Equal => false,
        std::cmp::Ordering::Less => (start..end).contains(&hour),
        std::cmp::Ordering::Greater => hour >= start || hour < end,
    }
}

fn valid_hour(h: f64) -> Option<u32> {
    (h.is_finite() && (0.0..24.0).contains(&h)).then(|| h.floor() as u32)
}

impl Constraint for QuietHours {
    const REASONS: &'static [&'static str] = &["inside_quiet_hours"];

    fn from_config(config: &serde_json::Value) -> Result<Self, String> {
        let cfg: QuietHours = if config.is_null() {
            QuietHours::default()
        } else {
            serde_json::from_value(config.clone()).map_err(|e| format!("quiet-hours: {e}"))?
        };
        for (field, v) in [("start", cfg.start), ("end", cfg.end)] {
            if v > 23 {
                return Err(format!(
                    "quiet-hours: `{field}` must be an hour in 0..=23, got {v}"
                ));
            }
        }
        Ok(cfg)
    }

    fn evaluate(&self, request: &Request<'_>, out: &mut Verdicts<'_>) -> Result<(), String> {
        let ctx = request.context();
        // A shopper's own window wins, but only when both ends are valid hours.
        let (start, end) = match (
            ctx.number(&self.context_start_attribute)
                .and_then(valid_hour),
            ctx.number(&self.context_end_attribute).and_then(valid_hour),
        ) {
            (Some(s), Some(e)) => (s, e),
            _ => (self.start, self.end),
        };
        if request.is_empty() {
            return Ok(());
        }
        let Some(hours) = request.candidates().numbers(&self.hour_attribute) else {
            return Err(format!(
                "quiet-hours: candidates carry no numeric `{}` attribute",
                self.hour_attribute
            ));
        };
        for i in 0..request.len() {
            if let Some(h) = hours.get(i).and_then(valid_hour) {
                if is_quiet(h, start, end) {
                    out.exclude(i, QUIET);
                }
            }
        }
        Ok(())
    }
}

export_plugin!(constraint: QuietHours);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tailor_plugin::{testing, RequestBuilder};

    #[test]
    fn window_wraps_midnight() {
        assert!(is_quiet(22, 21, 8) && is_quiet(0, 21, 8) && is_quiet(7, 21, 8));
        assert!(!is_quiet(8, 21, 8) && !is_quiet(20, 21, 8));
        assert!(is_quiet(13, 12, 14) && !is_quiet(14, 12, 14));
        assert!(!is_quiet(3, 5, 5));
    }

    #[test]
    fn shopper_window_wins() {
        let p = QuietHours::from_config(&json!({"start": 21, "end": 8})).unwrap();
        let slots: Vec<_> = (0..24).map(|h| json!({"local_hour": h})).collect();
        let ids: Vec<String> = (0..24).map(|h| format!("h{h}")).collect();
        let ctx = json!({"quiet_start": 12, "quiet_end": 14});
        let mut b = RequestBuilder::new(&ctx);
        for (id, s) in ids.iter().zip(&slots) {
            b.candidate(id, s);
        }
        let r = testing::run_constraint(&p, &b.build()).unwrap();
        let excluded: Vec<usize> = (0..24).filter(|h| !r.eligible[*h]).collect();
        assert_eq!(excluded, [12, 13]);
    }

    #[test]
    fn bad_config() {
        let e = QuietHours::from_config(&json!({"start": 25})).unwrap_err();
        assert!(e.contains("`start`"), "{e}");
    }
}
