//! Authentication and authorization, declared with each route.
//!
//! Every route is registered through [`Routes`], which takes the route's [`Access`] next to its
//! path, method and handler, and wraps that one resource in the check. The check runs after the
//! router matched, so it sees exactly the route (and the percent-decoded path parameters) the
//! handler will see: there is no second routing table that a path spelling could slip past.
//! It fails closed twice over: a route registered without a declaration has no check, and its
//! handler cannot reach the server state, because the only extractor of that state
//! ([`Authorized`]) refuses a request no declaration let through.
//!
//! | access | who |
//! |---|---|
//! | [`Access::Public`] | anyone: `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/docs`, `/ui` |
//! | [`Access::Key`] `{ role, scope }` | a key of at least `role` (`decide` < `viewer` < `editor`); a campaign-scoped key only where `scope` lets it |
//! | [`Access::Loop`] `{ role }` | the Personalizer surface: a key scoped to one campaign (its learning loop) of at least `role` |
//!
//! The key comes in `Authorization: Bearer KEY` (or `Ocp-Apim-Subscription-Key`, for the
//! Personalizer-compatible surface). 401 when it is missing, unknown or revoked, 403 when the
//! role or scope does not allow the request; on `/personalizer/...` in Personalizer's error shape.
//! Changes (routes that need an editor) that no handler audited itself are audited here with the
//! caller's key id, so no change escapes the audit log.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::{from_fn, Next};
use actix_web::{guard, web, FromRequest, Handler, HttpMessage, HttpRequest, Responder};

use super::error::{ApiError, TransportError};
use super::AppState;
use crate::audit::Change;
use crate::keys::{Principal, Role};

/// How a campaign-scoped key is confined on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The route's campaign is the (percent-decoded) path parameter of this name; a scoped key
    /// reaches only its own.
    Path(&'static str),
    /// The handler confines a scoped key itself: listings are filtered to its campaign, a reward
    /// is checked against its event's campaign.
    Handler,
    /// Server-wide (keys, plugins, shoppers, new campaigns): a scoped key is refused.
    Server,
}

/// What a route needs, declared where it is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key.
    Public,
    /// A key of at least `role`, confined by `scope` when it is scoped to a campaign.
    Key { role: Role, scope: Scope },
    /// The Personalizer-compatible surface: a key scoped to one campaign (the learning loop the
    /// request is about) of at least `role`. Errors in Personalizer's shape.
    Loop { role: Role },
}

impl Access {
    /// Decide and reward, any key; a scoped key only the campaign of path parameter `param`.
    pub const fn decide(scope: Scope) -> Self {
        Access::Key {
            role: Role::Decide,
            scope,
        }
    }

    /// Read the admin API.
    pub const fn viewer(scope: Scope) -> Self {
        Access::Key {
            role: Role::Viewer,
            scope,
        }
    }

    /// Change something through the admin API.
    pub const fn editor(scope: Scope) -> Self {
        Access::Key {
            role: Role::Editor,
            scope,
        }
    }

    /// A change: audited when the handler did not audit it itself.
    fn is_change(self) -> bool {
        matches!(
            self,
            Access::Key {
                role: Role::Editor,
                ..
            } | Access::Loop { role: Role::Editor }
        )
    }
}

/// `r.get(path, access, handler)` and the like: [`Routes::add`] with the method named.
macro_rules! method_shorthands {
    ($($name:ident => $method:ident),*) => {$(
        pub fn $name<F, Args>(&mut self, path: &str, access: Access, handler: F) -> &mut Self
        where
            F: Handler<Args>,
            Args: FromRequest + 'static,
            F::Output: Responder + 'static,
        {
            self.add(Method::$method, path, access, handler)
        }
    )*};
}

/// Registers routes, each with its [`Access`]. The only way routes are added to the app.
pub struct Routes<'a> {
    cfg: &'a mut web::ServiceConfig,
}

impl<'a> Routes<'a> {
    pub fn new(cfg: &'a mut web::ServiceConfig) -> Self {
        Self { cfg }
    }

    /// Register `handler` for `method` on `path`, reachable only as `access` allows.
    pub fn add<F, Args>(
        &mut self,
        method: Method,
        path: &str,
        access: Access,
        handler: F,
    ) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.register(Some(method), path, access, handler)
    }

    /// Register `handler` for every method on `path` (the handler answers by method itself).
    pub fn any<F, Args>(&mut self, path: &str, access: Access, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.register(None, path, access, handler)
    }

    /// One resource: `path` (guarded by `method` when given), wrapped in the check of `access`.
    fn register<F, Args>(
        &mut self,
        method: Option<Method>,
        path: &str,
        access: Access,
        handler: F,
    ) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let mut resource = web::resource(path);
        let route = match method {
            Some(method) => {
                resource = resource.guard(guard::Method(method.clone()));
                web::method(method)
            }
            None => web::route(),
        };
        self.cfg.service(
            resource
                .wrap(from_fn(move |req: ServiceRequest, next: Next<BoxBody>| {
                    authorize(access, req, next)
                }))
                .route(route.to(handler)),
        );
        self
    }

    method_shorthands!(get => GET, post => POST, put => PUT, delete => DELETE);
}

/// Marks a request that passed its route's declared access; what [`Authorized`] looks for.
#[derive(Debug, Clone, Copy)]
struct Granted;

/// Marks a request whose handler wrote its own audit entry.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// The server state, for handlers. Extracting it fails closed (403) unless the route's declared
/// [`Access`] let the request through, so a handler registered without a declaration cannot act.
pub struct Authorized(web::Data<AppState>);

impl std::ops::Deref for Authorized {
    type Target = web::Data<AppState>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(if req.extensions().get::<Granted>().is_none() {
            tracing::error!(path = %req.path(), "a route without an access declaration was called; refused");
            Err(ApiError::forbidden(
                "this route declares no access and is refused",
            ))
        } else {
            Ok(Authorized(
                req.app_data::<web::Data<AppState>>()
                    .expect("AppState is registered")
                    .clone(),
            ))
        })
    }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .ok_or_else(|| ApiError::unauthorized("an API key is required")),
        )
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

fn forbidden(message: String) -> TransportError {
    TransportError::Forbidden { message }
}

fn scoped_elsewhere(p: &Principal) -> TransportError {
    forbidden(format!(
        "key {:?} is scoped to campaign {:?}",
        p.key_id,
        p.campaign.as_deref().unwrap_or_default()
    ))
}

/// Whether `p` may make a request that needs `access`, on campaign `campaign` (the decoded
/// path parameter that `Scope::Path` names, when the route has one).
fn check(p: &Principal, access: Access, campaign: Option<&str>) -> Result<(), TransportError> {
    match access {
        Access::Public => Ok(()),
        Access::Loop { role } => {
            if p.campaign.is_none() {
                return Err(forbidden(format!(
                    "key {:?} is not scoped to a campaign; a Personalizer key selects its learning loop: create one with POST /admin/v1/keys {{\"role\": \"editor\", \"campaign\": \"<campaign id>\"}}",
                    p.key_id
                )));
            }
            if p.role < role {
                return Err(forbidden(format!(
                    "key {:?} is a {} key; this call needs a {} key",
                    p.key_id,
                    p.role.as_str(),
                    if role == Role::Editor {
                        "editor"
                    } else {
                        "viewer or editor"
                    }
                )));
            }
            Ok(())
        }
        Access::Key { role, scope } => {
            if p.role < role {
                return Err(forbidden(match (p.role, role) {
                    (Role::Decide, _) => format!(
                        "key {:?} is a decide key; the admin API needs a viewer or editor key",
                        p.key_id
                    ),
                    _ => format!(
                        "key {:?} is a viewer key; changes need an editor key",
                        p.key_id
                    ),
                }));
            }
            let Some(own) = &p.campaign else {
                return Ok(());
            };
            match scope {
                Scope::Handler => Ok(()),
                Scope::Server => Err(scoped_elsewhere(p)),
                Scope::Path(_) => match campaign {
                    Some(c) if c == own => Ok(()),
                    _ => Err(scoped_elsewhere(p)),
                },
            }
        }
    }
}

/// The value of path parameter `name`, fully percent-decoded (invalid UTF-8 replaced) as
/// `web::Path` decodes it for the handler, so the campaign checked is the campaign served.
fn path_param(req: &ServiceRequest, name: &str) -> Option<String> {
    let raw = req.match_info().get(name)?;
    Some(
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// The check every declared route runs: authenticate, authorize against the route's
/// declaration, and audit changes no handler audited.
async fn authorize(
    access: Access,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if access == Access::Public {
        req.extensions_mut().insert(Granted);
        return next.call(req).await;
    }
    let personalizer = matches!(access, Access::Loop { .. });
    let fail = |e: TransportError| -> actix_web::Error {
        if personalizer {
            super::personalizer::error::PzError::from(e).into()
        } else {
            ApiError::from(e).into()
        }
    };
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered")
        .clone();
    let Some(token) = bearer(&req) else {
        return Err(fail(TransportError::Unauthorized {
            message: if personalizer {
                "an API key is required: send `Ocp-Apim-Subscription-Key: KEY`".into()
            } else {
                "an API key is required: send `Authorization: Bearer KEY`".into()
            },
        }));
    };
    let Some(principal) = state.keys.authenticate(&token) else {
        return Err(fail(TransportError::Unauthorized {
            message: "the API key is unknown or revoked".into(),
        }));
    };
    let campaign = match access {
        Access::Key {
            scope: Scope::Path(name),
            ..
        } => path_param(&req, name),
        Access::Loop { .. } => principal.campaign.clone(),
        _ => None,
    };
    check(&principal, access, campaign.as_deref()).map_err(fail)?;
    // Per-key and per-campaign rate limits (`limits.rs`, docs/security/transport.md): 429 with
    // Retry-After. The campaign is the one the route reaches (its path parameter, or the loop).
    state
        .transport
        .rate_limits
        .check_request(&state.engine, &principal.key_id, campaign.as_deref())
        .map_err(fail)?;
    let route = format!("{} {}", req.method(), req.path());
    req.extensions_mut().insert(principal.clone());
    req.extensions_mut().insert(Granted);
    let res = next.call(req).await?;
    if access.is_change()
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

/// Append a change made by the request's key to the audit log (durably) and mark the request
/// audited. Only reachable from a handler behind a declared key access, so the key is known.
pub async fn audit(state: &AppState, req: &HttpRequest, change: Change) -> Result<(), ApiError> {
    let key_id = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.key_id.clone())
        .ok_or_else(|| ApiError::unauthorized("an API key is required"))?;
    state.audit.append(&key_id, change).await?;
    req.extensions_mut().insert(Audited);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Scope::{Handler, Path, Server};

    fn p(role: Role, campaign: Option<&str>) -> Principal {
        Principal {
            key_id: "k".into(),
            role,
            campaign: campaign.map(str::to_string),
        }
    }

    #[test]
    fn roles_and_scopes() {
        let decide = Access::decide(Path("campaign"));
        let reward = Access::decide(Handler);
        let list = Access::viewer(Handler);
        let create = Access::editor(Server);
        let read = Access::viewer(Path("id"));
        let write = Access::editor(Path("id"));
        let keys = Access::viewer(Server);

        let decide_key = p(Role::Decide, None);
        assert!(check(&decide_key, decide, Some("home")).is_ok());
        assert!(check(&decide_key, reward, None).is_ok());
        assert!(check(&decide_key, read, Some("home")).is_err());
        assert!(check(&decide_key, list, None).is_err());

        let viewer = p(Role::Viewer, None);
        assert!(check(&viewer, read, Some("home")).is_ok());
        assert!(check(&viewer, keys, None).is_ok());
        assert!(check(&viewer, write, Some("home")).is_err());
        assert!(check(&viewer, create, None).is_err());

        let scoped = p(Role::Editor, Some("home"));
        assert!(check(&scoped, write, Some("home")).is_ok());
        assert!(check(&scoped, list, None).is_ok());
        assert!(check(&scoped, create, None).is_err());
        assert!(check(&scoped, keys, None).is_err());
        assert!(check(&scoped, write, Some("other")).is_err());
        // A path parameter that could not be read never matches a scope.
        assert!(check(&scoped, write, None).is_err());

        let scoped_decide = p(Role::Decide, Some("home"));
        assert!(check(&scoped_decide, decide, Some("home")).is_ok());
        assert!(check(&scoped_decide, decide, Some("other")).is_err());
        assert!(check(&scoped_decide, reward, None).is_ok());

        // Personalizer: a scoped key; rank/reward with any role, reads viewer, writes editor.
        let rank = Access::Loop { role: Role::Decide };
        let pz_read = Access::Loop { role: Role::Viewer };
        let pz_write = Access::Loop { role: Role::Editor };
        assert!(check(&scoped_decide, rank, None).is_ok());
        assert!(check(&scoped_decide, pz_read, None).is_err());
        assert!(check(&p(Role::Viewer, Some("home")), pz_read, None).is_ok());
        assert!(check(&p(Role::Viewer, Some("home")), pz_write, None).is_err());
        assert!(check(&scoped, pz_write, None).is_ok());
        let unscoped = check(&p(Role::Editor, None), rank, None).unwrap_err();
        assert!(unscoped.to_string().contains("not scoped"), "{unscoped}");
    }

    #[test]
    fn changes_are_the_editor_routes() {
        assert!(Access::editor(Server).is_change());
        assert!(Access::Loop { role: Role::Editor }.is_change());
        assert!(!Access::viewer(Server).is_change());
        assert!(!Access::decide(Handler).is_change());
        assert!(!Access::Public.is_change());
    }

    /// No handler reaches the server state except through `Authorized`, which only a declared
    /// route grants (issue 17: the route table is the only authorization table).
    #[test]
    fn handlers_take_the_state_only_through_authorized() {
        let api = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut offenders = Vec::new();
        let mut stack = vec![api];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("api dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.file_name().is_some_and(|n| n == "auth.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("source");
                for (i, line) in text.lines().enumerate() {
                    let registers = line.contains(".route(\"") || line.contains("cfg.route(");
                    // A parameter of that type is a handler taking the state directly.
                    if line.contains(": web::Data<AppState>") || registers {
                        offenders.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "undeclared state access or route registration:\n{}",
            offenders.join("\n")
        );
    }
}
