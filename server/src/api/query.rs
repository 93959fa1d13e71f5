//! Query strings parsed like bodies: a bad parameter is a 400 in the usual JSON error shape that
//! names it (`{"error": {"code": "invalid_field", "field": "limit", ...}}`), never actix's plain
//! text.
//!
//! Handlers take [`Query<T>`] instead of `web::Query<T>`. For any `web::Query` that remains (or is
//! added later), [`config`] installs an error handler with the same JSON shape; it names the
//! parameter when serde's message does (unknown or missing parameters) and says `query` otherwise.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use super::body::missing_field;
use super::error::ApiError;
use crate::error::EngineError;

/// A query-string extractor whose errors name the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T> Query<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Query<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(parse(req.query_string()).map(Query).map_err(ApiError::from))
    }
}

/// Parse `a=1&b=x` into `T`, naming the first offending parameter.
pub fn parse<T: DeserializeOwned>(query: &str) -> Result<T, EngineError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let field = if path.is_empty() || path == "." || path == "?" {
            named_in(&message).unwrap_or_else(|| "query".to_string())
        } else {
            path
        };
        EngineError::Invalid { field, message }
    })
}

/// `unknown field `x`` and `missing field `x`` name the parameter in the message.
fn named_in(message: &str) -> Option<String> {
    missing_field(message).or_else(|| {
        let rest = message.strip_prefix("unknown field `")?;
        Some(rest.split('`').next()?.to_string())
    })
}

/// The JSON error shape for `web::Query` extraction failures anywhere in the app.
pub fn config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        let message = match &err {
            actix_web::error::QueryPayloadError::Deserialize(e) => e.to_string(),
            other => other.to_string(),
        };
        let field = named_in(&message).unwrap_or_else(|| "query".to_string());
        ApiError::from(EngineError::Invalid { field, message }).into()
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Q {
        limit: Option<usize>,
        share: Option<f64>,
        campaign: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Required {
        from_ms: u64,
    }

    fn field_of<T: DeserializeOwned + std::fmt::Debug>(q: &str) -> String {
        match parse::<T>(q).unwrap_err() {
            EngineError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_and_names_parameters() {
        let q: Q = parse("limit=5&campaign=home%20page").unwrap();
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.campaign.as_deref(), Some("home page"));
        let q: Q = parse("").unwrap();
        assert_eq!(q.limit, None);
        assert_eq!(field_of::<Q>("limit=abc"), "limit");
        assert_eq!(field_of::<Q>("campaign=x&limit=-1"), "limit");
        assert_eq!(field_of::<Q>("share=lots"), "share");
        assert_eq!(field_of::<Q>("bogus=1"), "bogus");
        assert_eq!(field_of::<Required>(""), "from_ms");
    }
}
