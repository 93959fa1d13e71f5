//! Reading and parsing request bodies with a size limit and field-level JSON errors.

use actix_web::web;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::EngineError;

/// Read the whole body, refusing more than `limit` bytes.
pub async fn read(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, EngineError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| EngineError::Malformed {
            field: "body".into(),
            message: format!("could not read the body: {e}"),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(EngineError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parse JSON, naming the path of the first offending field (e.g. `candidates[2].id`).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, EngineError> {
    if body.is_empty() {
        return Err(EngineError::Malformed {
            field: "body".into(),
            message: "a JSON body is required".into(),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." || path == "?" || path.is_empty() {
            missing_field(&inner.to_string()).unwrap_or_else(|| "body".to_string())
        } else {
            match missing_field(&inner.to_string()) {
                Some(f) => format!("{path}.{f}"),
                None => path,
            }
        };
        EngineError::Malformed {
            field,
            message: inner.to_string(),
        }
    })?;
    de.end().map_err(|e| EngineError::Malformed {
        field: "body".into(),
        message: e.to_string(),
    })?;
    Ok(value)
}

/// serde reports a missing field at its parent's path; name the field itself.
pub(crate) fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailor_wire::DecideRequest;

    fn field_of(body: &str) -> String {
        match parse::<DecideRequest>(body.as_bytes()).unwrap_err() {
            EngineError::Malformed { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_fields() {
        assert_eq!(field_of(r#"{"context": {}}"#), "candidates");
        assert_eq!(
            field_of(r#"{"candidates": [{"id": 3}]}"#),
            "candidates[0].id"
        );
        assert_eq!(
            field_of(r#"{"candidates": [{"features": {}}]}"#),
            "candidates[0].id"
        );
        assert_eq!(field_of(r#"{"candidates": [], "k": "x"}"#), "k");
        assert_eq!(field_of(r#"{"candidates": [], "bogus": 1}"#), "bogus");
        assert_eq!(field_of("{"), "body");
        assert_eq!(field_of(""), "body");
    }
}
