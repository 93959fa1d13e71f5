//! What [`Client::decide`](crate::Client::decide) returns: a model decision or a marked fallback.

use std::time::Duration;

use crate::wire::{DecideRequest, DecideResponse};

/// The actions to show, and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Action ids to show, in slot order.
    pub actions: Vec<String>,
    /// [`DecisionSource::Model`] when the server decided; otherwise why the fallback was used.
    pub source: DecisionSource,
    /// The server's full answer (event id, probabilities, policy, holdout); `None` for a fallback.
    pub response: Option<DecideResponse>,
}

/// Who chose the actions of a [`Decision`].
#[derive(Debug, Clone, PartialEq)]
pub enum DecisionSource {
    /// The campaign's policy chose them; the decision is logged and can be rewarded.
    Model,
    /// The client chose them (the caller's default, or the first candidates). The server has no
    /// record of it: there is nothing to reward, and it must not be reported as a model decision.
    Fallback(FallbackReason),
}

/// Why a [`Decision`] is a fallback.
#[derive(Debug, Clone, PartialEq)]
pub enum FallbackReason {
    /// No answer within the decide budget.
    Timeout { budget: Duration },
    /// The request did not get through (connection refused or reset, DNS, ...).
    Unreachable { message: String },
    /// The server answered 5xx, 408 or 429.
    ServerError { status: u16, code: Option<String> },
    /// The server answered 2xx with a body that is not a decide response.
    InvalidResponse { message: String },
}

impl std::fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FallbackReason::Timeout { budget } => write!(f, "no answer within {budget:?}"),
            FallbackReason::Unreachable { message } => write!(f, "unreachable: {message}"),
            FallbackReason::ServerError { status, code } => match code {
                Some(c) => write!(f, "server error {status} {c}"),
                None => write!(f, "server error {status}"),
            },
            FallbackReason::InvalidResponse { message } => write!(f, "invalid response: {message}"),
        }
    }
}

impl Decision {
    /// A model decision from the server's answer.
    pub fn from_response(response: DecideResponse) -> Self {
        Self {
            actions: response.actions.iter().map(|a| a.id.clone()).collect(),
            source: DecisionSource::Model,
            response: Some(response),
        }
    }

    /// A fallback: `defaults` when given, otherwise the first `k` candidates of the request
    /// (`k` from the request, default 1).
    pub fn fallback(request: &DecideRequest, defaults: &[String], reason: FallbackReason) -> Self {
        let actions = if defaults.is_empty() {
            request
                .candidates
                .iter()
                .take(request.k.unwrap_or(1).max(1))
                .map(|c| c.id.clone())
                .collect()
        } else {
            defaults.to_vec()
        };
        Self {
            actions,
            source: DecisionSource::Fallback(reason),
            response: None,
        }
    }

    /// True when the client chose the actions, not the model.
    pub fn is_fallback(&self) -> bool {
        matches!(self.source, DecisionSource::Fallback(_))
    }

    /// The first (or only) action to show.
    pub fn action(&self) -> Option<&str> {
        self.actions.first().map(String::as_str)
    }

    /// The event id to reward; `None` for a fallback, which the server never saw.
    pub fn event_id(&self) -> Option<&str> {
        self.response.as_ref().map(|r| r.event_id.as_str())
    }

    /// The fallback reason, if this is a fallback.
    pub fn fallback_reason(&self) -> Option<&FallbackReason> {
        match &self.source {
            DecisionSource::Model => None,
            DecisionSource::Fallback(r) => Some(r),
        }
    }
}

/// Per-call settings of a decide; unset fields use the client's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecideOptions {
    /// Wall-clock budget for the whole call, connection included.
    pub budget: Option<Duration>,
    /// Actions to show when falling back; empty means the first `k` candidates.
    pub default_actions: Vec<String>,
}

impl DecideOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the time budget of this call.
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Set the actions to show when falling back.
    pub fn default_actions<I, S>(mut self, actions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.default_actions = actions.into_iter().map(Into::into).collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Candidate;

    fn request(k: Option<usize>) -> DecideRequest {
        DecideRequest {
            candidates: ["a", "b", "c"].into_iter().map(Candidate::new).collect(),
            k,
            ..DecideRequest::default()
        }
    }

    #[test]
    fn fallback_takes_the_first_k_candidates_or_the_defaults() {
        let reason = FallbackReason::Timeout {
            budget: Duration::from_millis(5),
        };
        let d = Decision::fallback(&request(None), &[], reason.clone());
        assert_eq!(d.actions, ["a"]);
        assert!(d.is_fallback());
        assert_eq!(d.event_id(), None);
        let d = Decision::fallback(&request(Some(2)), &[], reason.clone());
        assert_eq!(d.actions, ["a", "b"]);
        let d = Decision::fallback(&request(Some(2)), &["z".to_string()], reason);
        assert_eq!(d.actions, ["z"]);
    }
}
