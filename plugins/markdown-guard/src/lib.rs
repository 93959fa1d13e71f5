//! `markdown-guard`: merchandising's markdown rules as a Tailor constraint.
//!
//! - An item marked down more than `max_markdowns` times is never shown (reason
//!   `too_many_markdowns`): repeated markdowns signal a product the brand doesn't want pushed.
//! - An item marked down at least once is shown only to shoppers whose discount affinity is at
//!   least `min_discount_affinity` (reason `markdown_needs_discount_affinity`); a shopper with no
//!   known affinity counts as 0.
//!
//! Candidate attribute: `markdown_count` (number; absent = never marked down). Context attribute:
//! `discount_affinity` (number in 0..=1). Both names are configurable.
//!
//! Config (all optional):
//! `{"max_markdowns": 1, "min_discount_affinity": 0.5,
//!   "markdown_attribute": "markdown_count", "affinity_attribute": "discount_affinity"}`

use serde::Deserialize;
use tailor_plugin::{export_plugin, Constraint, Request, Verdicts};

/// Reason code: marked down more than `max_markdowns` times.
pub const TOO_MANY_MARKDOWNS: u32 = 1;
/// Reason code: marked down, and the shopper's discount affinity is below the threshold.
pub const NEEDS_DISCOUNT_AFFINITY: u32 = 2;

/// The validated config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MarkdownGuard {
    max_markdowns: u32,
    min_discount_affinity: f64,
    markdown_attribute: String,
    affinity_attribute: String,
}

impl Default for MarkdownGuard {
    fn default() -> Self {
        MarkdownGuard {
            max_markdowns: 1,
            min_discount_affinity: 0.5,
            markdown_attribute: "markdown_count".into(),
            affinity_attribute: "discount_affinity".into(),
        }
    }
}

impl Constraint for MarkdownGuard {
    const REASONS: &'static [&'static str] =
        &["too_many_markdowns", "markdown_needs_discount_affinity"];

    fn from_config(config: &serde_json::Value) -> Result<Self, String> {
        let cfg: MarkdownGuard = if config.is_null() {
            MarkdownGuard::default()
        } else {
            serde_json::from_value(config.clone()).map_err(|e| format!("markdown-guard: {e}"))?
        };
        if !(0.0..=1.0).contains(&cfg.min_discount_affinity) {
            return Err(format!(
                "markdown-guard: `min_discount_affinity` must be within 0..=1, got {}",
                cfg.min_discount_affinity
            ));
        }
        Ok(cfg)
    }

    fn evaluate(&self, request: &Request<'_>, out: &mut Verdicts<'_>) -> Result<(), String> {
        let Some(markdowns) = request.candidates().numbers(&self.markdown_attribute) else {
            return Ok(()); // nothing in this request is known to be marked down
        };
        let affinity = request
            .context()
            .number(&self.affinity_attribute)
            .unwrap_or(0.0);
        let affine = affinity >= self.min_discount_affinity;
        for i in 0..request.len() {
            let count = markdowns.get(i).unwrap_or(0.0);
            if count > f64::from(self.max_markdowns) {
                out.exclude(i, TOO_MANY_MARKDOWNS);
            } else if count >= 1.0 && !affine {
                out.exclude(i, NEEDS_DISCOUNT_AFFINITY);
            }
        }
        Ok(())
    }
}

export_plugin!(constraint: MarkdownGuard);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tailor_plugin::{testing, RequestBuilder};

    #[test]
    fn rules() {
        let g =
            MarkdownGuard::from_config(&json!({"max_markdowns": 2, "min_discount_affinity": 0.6}))
                .unwrap();
        let items = [
            json!({"markdown_count": 0}),
            json!({"markdown_count": 1}),
            json!({"markdown_count": 3}),
            json!({}),
        ];
        for (affinity, expect) in [
            (0.9, [true, true, false, true]),
            (0.1, [true, false, false, true]),
        ] {
            let ctx = json!({"discount_affinity": affinity});
            let mut b = RequestBuilder::new(&ctx);
            for (i, it) in items.iter().enumerate() {
                b.candidate(["a", "b", "c", "d"][i], it);
            }
            let r = testing::run_constraint(&g, &b.build()).unwrap();
            assert_eq!(r.eligible, expect);
            assert_eq!(r.reason[2], Some("too_many_markdowns"));
        }
    }

    #[test]
    fn bad_config_names_the_field() {
        let e = MarkdownGuard::from_config(&json!({"max_markdown": 2})).unwrap_err();
        assert!(e.contains("max_markdown"), "{e}");
        let e = MarkdownGuard::from_config(&json!({"min_discount_affinity": 3})).unwrap_err();
        assert!(e.contains("min_discount_affinity"), "{e}");
    }
}
