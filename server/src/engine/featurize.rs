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
                if let Err(e) = push(&mut out, "", "", k, v, 0) {
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

const MAX_DEPTH: usize = 4;

fn push(
    out: &mut SparseFeatures,
    field: &str,
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
                    &format!("{field}.{key}"),
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
                                &format!("{field}.{key}[{i}]"),
                                "must be a finite number".into(),
                            ))
                        }
                    },
                    Value::Bool(b) => {
                        out.push_categorical(namespace, key, if *b { "true" } else { "false" })
                    }
                    _ => {
                        return Err(EngineError::invalid_owned(
                            &format!("{field}.{key}[{i}]"),
                            "arrays may hold strings, numbers or booleans only".into(),
                        ))
                    }
                }
            }
        }
        Value::Object(map) => {
            if depth >= MAX_DEPTH {
                return Err(EngineError::invalid_owned(
                    &format!("{field}.{key}"),
                    format!("namespaces nest at most {MAX_DEPTH} deep"),
                ));
            }
            let ns = if namespace.is_empty() {
                key.to_string()
            } else {
                format!("{namespace}.{key}")
            };
            for (k, v) in map {
                push(out, field, &ns, k, v, depth + 1)?;
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
        let e = features(
            "context",
            &json!({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("nest"), "{e}");
        let e = features("context", &json!({"a": [{"x": 1}]})).unwrap_err();
        assert_eq!(e.field(), Some("context.a[0]"));
    }
}
