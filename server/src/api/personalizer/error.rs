//! Errors of the Personalizer-compatible surface, in Personalizer's body shape:
//! `{"error": {"code": "BadRequest", "message": "...", "target": "field", "innerError": {"code":
//! "invalid_field"}}}`. The status and both codes come from the one map (`api::status`): the
//! status is the native one (one documented difference), `code` is Azure's name for it, and
//! `innerError.code` carries Tailor's own code (docs/errors.md) for support. `target` names the
//! field as the caller sent it (`actions[2].id`, `eventId`), never Tailor's internal name
//! ([`target_of`]).

use serde::Serialize;

use crate::api::error::{ApiError, TransportError};
use crate::error::EngineError;

/// An error on its way out of a `/personalizer/...` route (rendered by `api::status`).
#[derive(Debug)]
pub struct PzError {
    error: ApiError,
    target: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Detail<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    inner_error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
}

impl PzError {
    /// A feature Personalizer had that Tailor does not offer (501).
    pub fn not_implemented(what: &str) -> Self {
        TransportError::NotImplemented {
            what: what.to_string(),
        }
        .into()
    }

    /// 404 for a route the Personalizer API never had.
    pub fn no_route() -> Self {
        Self::not_found("no such Personalizer operation".into())
    }

    /// 405 for a Personalizer path called with a method it does not answer; `allow` lists the
    /// methods it does (`GET, PUT`), sent back in the `Allow` header.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        TransportError::MethodNotAllowed { allow }.into()
    }

    /// An engine error raised for a decision whose candidates are the request's `actions`
    /// picked by `actions`: candidate `i` is `actions[actions[i]]` (some were excluded or moved).
    pub fn for_actions(e: EngineError, actions: &[usize]) -> Self {
        let target = e.field().map(|f| target_of(f, Some(actions)));
        let mut out = Self::from(e);
        out.target = target;
        out
    }

    /// 404 for an event or resource the caller's learning loop does not have.
    pub fn not_found(message: String) -> Self {
        TransportError::NotFound { message }.into()
    }

    /// The error, for `api::status` to classify.
    pub(crate) fn error(&self) -> &ApiError {
        &self.error
    }

    /// Personalizer's body, with `code` Azure's name for the status and `inner` Tailor's code.
    pub(crate) fn body<'a>(&'a self, code: &'a str, inner: &'a str) -> Body<'a> {
        Body {
            error: Detail {
                code,
                message: self.error.to_string(),
                target: self.target.as_deref(),
                inner_error: Inner { code: inner },
            },
        }
    }
}

/// A field path of Tailor's decide request (what the engine names in errors) as the
/// Personalizer request called it: `candidates[i]...` is `actions[j]...` (`j = actions[i]` when
/// the candidates are a selection of the actions, else `i`), `context...` is
/// `contextFeatures...`, `event_id` is `eventId`. Anything else is already the caller's name.
pub fn target_of(field: &str, actions: Option<&[usize]>) -> String {
    if field == "event_id" {
        return "eventId".into();
    }
    if let Some(rest) = field.strip_prefix("context") {
        if rest.is_empty() || rest.starts_with(['.', '[']) {
            return format!("contextFeatures{rest}");
        }
    }
    if let Some(rest) = field.strip_prefix("candidates") {
        if rest.is_empty() {
            return "actions".into();
        }
        if let Some((index, tail)) = rest
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .and_then(|(i, tail)| Some((i.parse::<usize>().ok()?, tail)))
        {
            let j = actions.map_or(Some(index), |m| m.get(index).copied());
            if let Some(j) = j {
                return format!("actions[{j}]{tail}");
            }
            return "actions".into();
        }
    }
    field.to_string()
}

impl std::fmt::Display for PzError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl From<ApiError> for PzError {
    fn from(error: ApiError) -> Self {
        let target = error.field().map(|f| target_of(f, None));
        Self { error, target }
    }
}

impl From<EngineError> for PzError {
    fn from(e: EngineError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<TransportError> for PzError {
    fn from(e: TransportError) -> Self {
        ApiError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_use_the_personalizer_names() {
        for (tailor, personalizer) in [
            ("event_id", "eventId"),
            ("context", "contextFeatures"),
            ("context.user.age", "contextFeatures.user.age"),
            ("candidates", "actions"),
            ("candidates[2].id", "actions[2].id"),
            ("candidates[0].features.ns.x", "actions[0].features.ns.x"),
            // Already Personalizer's names (serde paths of the camelCase wire types).
            ("actions[1].id", "actions[1].id"),
            ("excludedActions", "excludedActions"),
            ("slots[0].baselineAction", "slots[0].baselineAction"),
            ("contextual", "contextual"),
            ("body", "body"),
        ] {
            assert_eq!(target_of(tailor, None), personalizer, "{tailor}");
        }
        // Candidates that are a selection of the actions: candidate 1 is action 3.
        let picked = [0, 3, 4];
        assert_eq!(
            target_of("candidates[1].id", Some(&picked)),
            "actions[3].id"
        );
        assert_eq!(
            target_of("candidates[2].features.a", Some(&picked)),
            "actions[4].features.a"
        );
        assert_eq!(target_of("candidates[9].id", Some(&picked)), "actions");
        assert_eq!(target_of("event_id", Some(&picked)), "eventId");
    }

    #[test]
    fn engine_errors_carry_the_mapped_target() {
        use actix_web::ResponseError;

        let e = PzError::from(EngineError::invalid("event_id", "too long"));
        assert_eq!(e.target.as_deref(), Some("eventId"));
        let e = PzError::for_actions(
            EngineError::invalid("candidates[1].id", "duplicate"),
            &[0, 2],
        );
        assert_eq!(e.target.as_deref(), Some("actions[2].id"));
        assert_eq!(e.status_code().as_u16(), 400);
        let e = PzError::method_not_allowed("POST");
        assert_eq!(e.status_code().as_u16(), 405);
        let r = e.error_response();
        assert_eq!(r.headers().get("allow").unwrap(), "POST");
    }
}
