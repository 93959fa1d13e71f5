//! Request JSON to [`SparseFeatures`]: nested objects are namespaces, strings are categorical,
//! numbers numeric, booleans categorical, arrays of strings are sets.

use serde_json::Value;
use tailor_policies::SparseFeatures;

use crate::error::EngineError;

/// Walk a features object. `field` names it in errors (e.g. `candidates[3].features`).
pub fn features(field: &str, value: &Value) -> Result<SparseFeatures, EngineError> {
    features_at(|| field.to_string(), value)
}

/// [`features`] with the field name built only when there is an error (hot path).
pub fn features_at(
    field: impl Fn() -> String,
    value: &Value,
) -> Result<SparseFeatures, EngineError> {
    let mut out = SparseFeatures::default();
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                if let Err(e) = push(&mut out, "", k, v, 0) {
                    return Err(prefix(e, &field()));
                }
            }
        }
        _ => {
            return Err(EngineError::invalid(
                &field(),
                "must be a JSON object of features",
            ))
        }
    }
    Ok(out)
}

/// Errors inside are built with an empty field prefix; put the real one in front.
fn prefix(e: EngineError, field: &str) -> EngineError {
    match e {
        EngineError::Invalid {
            field: inner,
            message,
        } => EngineError::Invalid {
            field: format!("{field}{inner}"),
            message,
        },
        other => other,
    }
}

/// The path of `key` below the features object (`.a.b.key`), for errors.
fn path(namespace: &str, key: &str) -> String {
    if namespace.is_empty() {
        format!(".{key}")
    } else {
        format!(".{namespace}.{key}")
    }
}

/// How many levels deep namespaces may nest: deep enough for real payloads (Personalizer
/// accepted contexts nested past 4 levels), while the bound keeps the recursive walk's stack
/// small. serde_json's parser refuses 128 levels before this walk ever sees them.
pub const MAX_DEPTH: usize = 32;

fn push(
    out: &mut SparseFeatures,
    namespace: &str,
    key: &str,
    value: &Value,
    depth: usize,
) -> Result<(), EngineError> {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push_categorical(namespace, key, if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => out.push_numeric(namespace, key, f),
            _ => {
                return Err(EngineError::invalid_owned(
                    &path(namespace, key),
                    "must be a finite number".into(),
                ))
            }
        },
        Value::String(s) => out.push_categorical(namespace, key, s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => out.push_categorical(namespace, key, s),
                    Value::Number(n) => match n.as_f64() {
                        Some(f) if f.is_finite() => {
                            out.push_numeric(namespace, &format!("{key}[{i}]"), f)
                        }
                        _ => {
                            return Err(EngineError::invalid_owned(
                                &format!("{}[{i}]", path(namespace, key)),
                                "must be a finite number".into(),
                            ))
                        }
                    },
                    Value::Bool(b) => {
                        out.push_categorical(namespace, key, if *b { "true" } else { "false" })
                    }
                    _ => {
                        return Err(EngineError::invalid_owned(
                            &format!("{}[{i}]", path(namespace, key)),
                            "arrays may hold strings, numbers or booleans only".into(),
                        ))
                    }
                }
            }
        }
        Value::Object(map) => {
            if depth >= MAX_DEPTH {
                return Err(EngineError::invalid_owned(
                    &path(namespace, key),
                    format!("namespaces nest at most {MAX_DEPTH} deep"),
                ));
            }
            let ns = if namespace.is_empty() {
                key.to_string()
            } else {
                format!("{namespace}.{key}")
            };
            for (k, v) in map {
                push(out, &ns, k, v, depth + 1)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn namespaces_and_types() {
        let f = features(
            "context",
            &json!({"device": "mobile", "price": 9.5, "shopper": {"segment": "a", "tags": ["x", "y"]}, "vip": true}),
        )
        .unwrap();
        assert_eq!(f.entries.len(), 6);
    }

    #[test]
    fn rejects_non_objects_and_deep_nesting() {
        let e = features("candidates[0].features", &json!([1, 2])).unwrap_err();
        assert_eq!(e.field(), Some("candidates[0].features"));
        // Five levels, as Personalizer callers send, are namespaces like any other.
        let five = json!({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}});
        assert_eq!(features("context", &five).unwrap().entries.len(), 1);
        // MAX_DEPTH namespace levels below the features object pass; one more is refused,
        // naming the whole path.
        let nested = |levels: usize| {
            let mut v = json!(1);
            for _ in 0..=levels {
                v = json!({ "n": v });
            }
            v
        };
        assert_eq!(
            features("context", &nested(MAX_DEPTH))
                .unwrap()
                .entries
                .len(),
            1
        );
        let e = features("context", &nested(MAX_DEPTH + 1)).unwrap_err();
        assert!(e.to_string().contains("nest"), "{e}");
        let expected = format!("context{}", ".n".repeat(MAX_DEPTH + 1));
        assert_eq!(e.field(), Some(expected.as_str()));
        let e = features("context", &json!({"a": [{"x": 1}]})).unwrap_err();
        assert_eq!(e.field(), Some("context.a[0]"));
    }
}
