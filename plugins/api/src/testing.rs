//! Run a plugin in-process, without a host, for unit tests.
//!
//! ```ignore
//! let ctx = json!({"discount_affinity": 0.2});
//! let items = [json!({"markdown_count": 3})];
//! let mut b = RequestBuilder::new(&ctx);
//! b.candidate("sku-1", &items[0]);
//! let req = b.build();
//! let out = testing::run_constraint(&MarkdownGuard::from_config(&json!({}))?, &req)?;
//! assert!(!out.eligible[0]);
//! ```

use crate::{Constraint, FeatureExtractor, Features, OwnedRequest, Verdicts};

/// What a constraint decided, per candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstraintResult {
    /// Eligible or not.
    pub eligible: Vec<bool>,
    /// Score multiplier.
    pub multiplier: Vec<f64>,
    /// Reason name for excluded candidates (`None` when eligible or the code is unknown).
    pub reason: Vec<Option<&'static str>>,
}

/// What a feature extractor emitted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtractedFeatures {
    /// Request-level features, in emission order.
    pub context: Vec<(String, f64)>,
    /// Per-candidate features, in emission order.
    pub candidates: Vec<Vec<(String, f64)>>,
}

impl ExtractedFeatures {
    /// The last value emitted for context feature `name`.
    pub fn context_value(&self, name: &str) -> Option<f64> {
        self.context
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// Runs `plugin` over `request` exactly as the host would (minus the FFI).
pub fn run_constraint<T: Constraint>(
    plugin: &T,
    request: &OwnedRequest<'_>,
) -> Result<ConstraintResult, String> {
    let n = request.len();
    let mut eligible = vec![1u8; n];
    let mut multiplier = vec![1.0; n];
    let mut reason = vec![0u32; n];
    let mut v = Verdicts {
        eligible: &mut eligible,
        multiplier: &mut multiplier,
        reason: &mut reason,
    };
    plugin.evaluate(&request.request(), &mut v)?;
    Ok(ConstraintResult {
        eligible: eligible.iter().map(|e| *e != 0).collect(),
        multiplier,
        reason: reason
            .iter()
            .map(|r| match *r {
                0 => None,
                code => T::REASONS.get(code as usize - 1).copied(),
            })
            .collect(),
    })
}

/// Runs `plugin` over `request` exactly as the host would (minus the FFI).
pub fn run_extractor<T: FeatureExtractor>(
    plugin: &T,
    request: &OwnedRequest<'_>,
) -> Result<ExtractedFeatures, String> {
    let mut out = ExtractedFeatures {
        context: Vec::new(),
        candidates: vec![Vec::new(); request.len()],
    };
    let mut emit = |row: u32, name: &str, value: f64| {
        if row == crate::abi::CONTEXT_ROW {
            out.context.push((name.to_owned(), value));
        } else {
            out.candidates[row as usize].push((name.to_owned(), value));
        }
    };
    let mut f = Features {
        rows: request.len(),
        emit: &mut emit,
    };
    plugin.extract(&request.request(), &mut f)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::RequestBuilder;

    #[test]
    fn builder_flattens_and_types_columns() {
        let ctx = json!({"shopper": {"tier": "gold", "affinity": 0.5}, "vip": true, "bought": ["a", "b", 3]});
        let items = [
            json!({"inventory": 3, "category": "shoes", "tags": ["x"]}),
            json!({"inventory": "lots", "extra": null}),
            json!({"category": "hats", "inventory": 7.5, "nested": {"deep": {"v": 1}}}),
        ];
        let mut b = RequestBuilder::new(&ctx);
        for (i, it) in items.iter().enumerate() {
            b.candidate(["a", "b", "c"][i], it);
        }
        let owned = b.build();
        let req = owned.request();
        assert_eq!(req.len(), 3);
        assert_eq!(req.candidate_id(2), "c");
        let ctx = req.context();
        assert_eq!(ctx.string("shopper.tier"), Some("gold"));
        assert_eq!(ctx.number("shopper.affinity"), Some(0.5));
        assert_eq!(ctx.number("vip"), Some(1.0));
        let bought: Vec<_> = ctx.set("bought").unwrap().iter().collect();
        assert_eq!(bought, ["a", "b"]);
        assert_eq!(ctx.number("missing"), None);
        assert_eq!(ctx.string("vip"), None, "kind mismatch is absent");

        let cols = req.candidates();
        let names: Vec<_> = cols.names().collect();
        assert_eq!(names, ["category", "inventory", "nested.deep.v", "tags"]);
        let inv = cols.numbers("inventory").unwrap();
        assert_eq!(
            (inv.get(0), inv.get(1), inv.get(2)),
            (Some(3.0), None, Some(7.5))
        );
        let cat = cols.strings("category").unwrap();
        assert_eq!(
            (cat.get(0), cat.get(1), cat.get(2)),
            (Some("shoes"), None, Some("hats"))
        );
        let tags = cols.sets("tags").unwrap();
        assert!(tags.get(0).unwrap().contains("x"));
        assert!(tags.get(1).is_none() && tags.get(2).is_none());
        assert_eq!(cols.numbers("nested.deep.v").unwrap().get(2), Some(1.0));
    }

    #[test]
    fn empty_request_is_fine() {
        let ctx = json!(null);
        let owned = RequestBuilder::new(&ctx).build();
        let req = owned.request();
        assert!(req.is_empty());
        assert_eq!(req.candidates().names().count(), 0);
        assert_eq!(req.context().number("x"), None);
    }
}
