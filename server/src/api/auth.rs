//! Authentication and authorization of every request, as one middleware.
//!
//! | path | needs |
//! |---|---|
//! | `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/ui...` | nothing |
//! | `/v1/...` | any key (a campaign-scoped key only its campaign) |
//! | `/personalizer/...` rank, reward, activate | a key scoped to one campaign (the learning loop), any role |
//! | other `GET /personalizer/...` | a scoped `viewer` or `editor` key |
//! | other methods on `/personalizer/...` | a scoped `editor` key |
//! | `GET /admin/...` | `viewer` or `editor` |
//! | other methods on `/admin/...` | `editor` |
//! | `/admin/v1/keys...`, `/admin/v1/plugins...` and other server-wide areas | an unscoped admin key of the role above |
//!
//! The key comes in `Authorization: Bearer KEY` (or `Ocp-Apim-Subscription-Key`, for the
//! Personalizer-compatible surface). 401 when it is missing or unknown or revoked, 403 when the
//! role or scope does not allow the request; on `/personalizer/...` in Personalizer's error shape. Admin changes that no handler audited themselves are
//! audited here (route, method, key), so no change escapes the audit log.

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use super::error::ApiError;
use super::AppState;
use crate::audit::Change;
use crate::error::EngineError;
use crate::keys::{Principal, Role};

/// What a route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Need {
    Open,
    /// Decide and reward; `campaign` when the path names one.
    Decide {
        campaign: Option<String>,
    },
    Admin {
        write: bool,
        campaign: Option<String>,
        /// Key management and other server-wide areas a scoped key cannot reach.
        global: bool,
    },
    /// The Personalizer-compatible surface: a key scoped to one campaign, of at least `role`.
    Personalizer {
        role: Role,
    },
}

fn need(method: &Method, path: &str) -> Need {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["v1", "campaigns", c, ..] => Need::Decide {
            campaign: Some((*c).to_string()),
        },
        ["v1", ..] => Need::Decide { campaign: None },
        ["personalizer", rest @ ..] => {
            // Drop the version segment of the `/personalizer/v1.0/...` forms.
            let rest = match rest {
                [v, tail @ ..] if v.starts_with("v1.") => tail,
                _ => rest,
            };
            let decide = *method == Method::POST
                && matches!(
                    rest,
                    ["rank"]
                        | ["multislot", "rank"]
                        | ["events", _, "reward" | "activate"]
                        | ["multislot", "events", _, "reward" | "activate"]
                );
            let role = if decide {
                Role::Decide
            } else if matches!(*method, Method::GET | Method::HEAD) {
                Role::Viewer
            } else {
                Role::Editor
            };
            Need::Personalizer { role }
        }
        ["admin", rest @ ..] => {
            let write = !matches!(*method, Method::GET | Method::HEAD);
            let campaign = match rest {
                ["v1", "campaigns", c, ..] => Some((*c).to_string()),
                _ => None,
            };
            // A scoped key may list campaigns and read the audit log (both filtered to its
            // campaign by the handlers); everything else without a campaign is server-wide.
            let scoped_listing = matches!(
                rest,
                ["v1", "campaigns"] | ["v1", "audit"] | ["v1", "whoami"]
            );
            let global = campaign.is_none() && (write || !scoped_listing);
            Need::Admin {
                write,
                campaign,
                global,
            }
        }
        _ => Need::Open,
    }
}

fn bearer(req: &ServiceRequest) -> Option<String> {
    let h = req.headers();
    if let Some(v) = h
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))?;
        return Some(token.trim().to_string());
    }
    h.get("ocp-apim-subscription-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

fn forbidden(message: String) -> ApiError {
    ApiError(EngineError::Forbidden { message })
}

fn check(p: &Principal, need: &Need) -> Result<(), ApiError> {
    let scope_ok = |campaign: &Option<String>| match (&p.campaign, campaign) {
        (None, _) => true,
        (Some(s), Some(c)) => s == c,
        (Some(_), None) => false,
    };
    match need {
        Need::Open => Ok(()),
        Need::Personalizer { role } => {
            if p.campaign.is_none() {
                return Err(forbidden(format!(
                    "key {:?} is not scoped to a campaign; a Personalizer key selects its learning loop: create one with POST /admin/v1/keys {{\"role\": \"editor\", \"campaign\": \"<campaign id>\"}}",
                    p.key_id
                )));
            }
            if p.role < *role {
                return Err(forbidden(format!(
                    "key {:?} is a {} key; this call needs a {} key",
                    p.key_id,
                    p.role.as_str(),
                    if *role == Role::Editor {
                        "editor"
                    } else {
                        "viewer or editor"
                    }
                )));
            }
            Ok(())
        }
        Need::Decide { campaign } => {
            if campaign.is_some() && !scope_ok(campaign) {
                return Err(forbidden(format!(
                    "key {:?} is scoped to campaign {:?}",
                    p.key_id,
                    p.campaign.as_deref().unwrap_or_default()
                )));
            }
            Ok(())
        }
        Need::Admin {
            write,
            campaign,
            global,
        } => {
            if p.role == Role::Decide {
                return Err(forbidden(format!(
                    "key {:?} is a decide key; the admin API needs a viewer or editor key",
                    p.key_id
                )));
            }
            if *write && p.role != Role::Editor {
                return Err(forbidden(format!(
                    "key {:?} is a viewer key; changes need an editor key",
                    p.key_id
                )));
            }
            if p.campaign.is_some() && (*global || (campaign.is_some() && !scope_ok(campaign))) {
                return Err(forbidden(format!(
                    "key {:?} is scoped to campaign {:?}",
                    p.key_id,
                    p.campaign.as_deref().unwrap_or_default()
                )));
            }
            Ok(())
        }
    }
}

/// Marks a request whose handler wrote its own audit entry.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// The middleware: authenticate, authorize, and audit unaudited admin changes.
pub async fn authorize(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let need = need(req.method(), req.path());
    if need == Need::Open {
        return next.call(req).await;
    }
    let personalizer = matches!(need, Need::Personalizer { .. });
    let fail = |e: EngineError| -> actix_web::Error {
        if personalizer {
            super::personalizer::error::PzError::from(e).into()
        } else {
            ApiError(e).into()
        }
    };
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered")
        .clone();
    let Some(token) = bearer(&req) else {
        return Err(fail(EngineError::Unauthorized {
            message: if personalizer {
                "an API key is required: send `Ocp-Apim-Subscription-Key: KEY`".into()
            } else {
                "an API key is required: send `Authorization: Bearer KEY`".into()
            },
        }));
    };
    let Some(principal) = state.keys.authenticate(&token) else {
        return Err(fail(EngineError::Unauthorized {
            message: "the API key is unknown or revoked".into(),
        }));
    };
    check(&principal, &need).map_err(|e| fail(e.0))?;
    // >>> transport (issue 17): per-key and per-campaign rate limits, 429 + Retry-After
    // (server/src/limits.rs, docs/security/transport.md). The campaign is the one the request
    // reaches: from the path, or the key's scope on /personalizer.
    state
        .transport
        .rate_limits
        .check_request(
            &state.engine,
            &principal.key_id,
            match &need {
                Need::Decide { campaign } | Need::Admin { campaign, .. } => campaign.as_deref(),
                Need::Personalizer { .. } => principal.campaign.as_deref(),
                Need::Open => None,
            },
        )
        .map_err(fail)?;
    // <<< transport
    let admin_write = matches!(need, Need::Admin { write: true, .. })
        || matches!(need, Need::Personalizer { role: Role::Editor });
    let campaign = match &need {
        Need::Admin { campaign, .. } => campaign.clone(),
        Need::Personalizer { .. } => principal.campaign.clone(),
        _ => None,
    };
    let route = format!("{} {}", req.method(), req.path());
    req.extensions_mut().insert(principal.clone());
    let res = next.call(req).await?;
    if admin_write
        && res.status().is_success()
        && res.request().extensions().get::<Audited>().is_none()
    {
        let change = Change {
            action: "admin.request".into(),
            campaign,
            target: Some(route),
            before: serde_json::Value::Null,
            after: serde_json::Value::Null,
        };
        if let Err(e) = state.audit.append(&principal.key_id, change).await {
            tracing::error!(error = %e, "appending to the audit log failed");
        }
    }
    Ok(res)
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(req.extensions().get::<Principal>().cloned().ok_or_else(|| {
            ApiError(EngineError::Unauthorized {
                message: "an API key is required".into(),
            })
        }))
    }
}

/// Append a change made by the request's key to the audit log (durably) and mark the request
/// audited.
pub async fn audit(state: &AppState, req: &HttpRequest, change: Change) -> Result<(), EngineError> {
    let key_id = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.key_id.clone())
        .unwrap_or_else(|| "unknown".into());
    state.audit.append(&key_id, change).await?;
    req.extensions_mut().insert(Audited);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, campaign: Option<&str>) -> Principal {
        Principal {
            key_id: "k".into(),
            role,
            campaign: campaign.map(str::to_string),
        }
    }

    #[test]
    fn routes_and_roles() {
        assert_eq!(need(&Method::GET, "/healthz"), Need::Open);
        assert_eq!(need(&Method::GET, "/ui"), Need::Open);
        let decide = need(&Method::POST, "/v1/campaigns/home/decide");
        let reward = need(&Method::POST, "/v1/events/e1/reward");
        let list = need(&Method::GET, "/admin/v1/campaigns");
        let create = need(&Method::POST, "/admin/v1/campaigns");
        let read = need(&Method::GET, "/admin/v1/campaigns/home");
        let write = need(&Method::PUT, "/admin/v1/campaigns/home");
        let keys = need(&Method::GET, "/admin/v1/keys");
        let plugins = need(&Method::GET, "/admin/v1/plugins");

        let decide_key = p(Role::Decide, None);
        assert!(check(&decide_key, &decide).is_ok());
        assert!(check(&decide_key, &reward).is_ok());
        assert!(check(&decide_key, &read).is_err());

        let viewer = p(Role::Viewer, None);
        assert!(check(&viewer, &read).is_ok());
        assert!(check(&viewer, &keys).is_ok());
        assert!(check(&viewer, &write).is_err());

        let scoped = p(Role::Editor, Some("home"));
        assert!(check(&scoped, &write).is_ok());
        assert!(check(&scoped, &list).is_ok());
        assert!(check(&scoped, &create).is_err());
        assert!(check(&scoped, &keys).is_err());
        assert!(check(&scoped, &plugins).is_err());
        assert!(check(&scoped, &need(&Method::PUT, "/admin/v1/campaigns/other")).is_err());
        let scoped_decide = p(Role::Decide, Some("home"));
        assert!(check(&scoped_decide, &decide).is_ok());
        assert!(check(
            &scoped_decide,
            &need(&Method::POST, "/v1/campaigns/other/decide")
        )
        .is_err());

        // Personalizer: a scoped key; rank/reward with any role, reads viewer, writes editor.
        let rank = need(&Method::POST, "/personalizer/v1.0/rank");
        let multi = need(&Method::POST, "/personalizer/multislot/events/e/activate");
        let read = need(&Method::GET, "/personalizer/v1.0/configurations/service");
        let write = need(&Method::PUT, "/personalizer/configurations/policy");
        assert!(check(&scoped_decide, &rank).is_ok());
        assert!(check(&scoped_decide, &multi).is_ok());
        assert!(check(&scoped_decide, &read).is_err());
        assert!(check(&p(Role::Viewer, Some("home")), &read).is_ok());
        assert!(check(&p(Role::Viewer, Some("home")), &write).is_err());
        assert!(check(&scoped, &write).is_ok());
        let unscoped = check(&p(Role::Editor, None), &rank).unwrap_err();
        assert!(unscoped.to_string().contains("not scoped"), "{unscoped}");
    }
}
