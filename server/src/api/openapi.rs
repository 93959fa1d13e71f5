//! `/openapi.json` (the OpenAPI 3.1 document of every `/v1` and `/admin/v1` route) and `/docs`
//! (a small page embedded in the binary that renders it; no CDN, no build step).
//!
//! The document is generated at compile time by `utoipa` from the `#[utoipa::path]` annotations on
//! the handlers and `ToSchema` on the wire types (`tailor-wire`'s `openapi` feature, so SDK users do
//! not compile utoipa). The envelopes below (`{"campaigns": [...]}` and the like) are the shapes
//! the handlers build with `json!`; they exist for the document only.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

pub use crate::audit::AuditEntry;
pub use crate::campaign::CampaignConfig;
pub use crate::engine::reports::{
    ActionReport, AffinityReport, AudienceReport, AudiencesReport, GemsReport, LiftReport,
    PolicySeries,
};
pub use crate::keys::{KeyInfo, Role};
pub use tailor_wire::{
    AdjustRequest, AdjustResponse, CampaignStats, DecideRequest, DecideResponse, ErrorBody,
    RewardBatchRequest, RewardBatchResponse, RewardRequest, RewardResponse,
};

use super::auth::{Access, Routes};
use super::status;
use super::{
    adjust_api, admin_api, audit_api, autopilot_api, cluster_api, control_api, decide_api,
    keys_api, ope_api, ops_api, plugins_api, preview_api, reports_api, send_time_api, shoppers_api,
    validate_api,
};

/// `GET /admin/v1/campaigns`.
#[derive(Serialize, ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignConfig>,
}

/// `GET /admin/v1/audit`.
#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}

/// `GET /admin/v1/keys`.
#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// `POST /admin/v1/keys`: the key's record and, this once, its secret.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub info: KeyInfo,
    /// `tlr_<id>_<secret>`; only its SHA-256 is stored.
    pub key: String,
}

/// `GET /admin/v1/whoami`.
#[derive(Serialize, ToSchema)]
pub struct Whoami {
    pub key_id: String,
    pub role: Role,
    pub campaign: Option<String>,
}

/// `GET .../reports/actions`.
#[derive(Serialize, ToSchema)]
pub struct ActionsReport {
    pub actions: Vec<ActionReport>,
}

/// `GET .../reports/policies`.
#[derive(Serialize, ToSchema)]
pub struct PoliciesReport {
    pub bucket_seconds: u64,
    pub policies: Vec<PolicySeries>,
}

/// Every route sends `Authorization: Bearer KEY` unless marked otherwise.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`tlr_<id>_<secret>` or the bootstrap key). Roles: decide \
                         (/v1), viewer (GET /admin), editor (all of /admin).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The answers the transport layer can give on any route before or around its handler
/// (docs/security/transport.md), added to every operation but health and metrics that does not
/// already declare that status for a reason of its own.
struct TransportResponses;

impl Modify for TransportResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let answers = [
            (
                "408",
                "The body did not arrive in time (`body_timeout`); the connection is closed",
            ),
            (
                "429",
                "Over the key's or the campaign's rate limit (`rate_limited`); see `Retry-After`",
            ),
            ("503", "Overloaded (`overloaded`); see `Retry-After`"),
        ];
        for (path, item) in openapi.paths.paths.iter_mut() {
            // Health and metrics are never shed and take no key or body.
            if ["/healthz", "/readyz", "/metrics"].contains(&path.as_str()) {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                for (status, description) in answers {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(description)
                                .content(
                                    "application/json",
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                                        .build(),
                                )
                                .build()
                                .into()
                        });
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tailor",
        description = "Self-hosted personalization: decide and reward (`/v1`), and the admin API \
                       (`/admin/v1`) for campaigns, controls, keys, audit, reports and off-policy \
                       evaluation. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`."
    ),
    paths(
        decide_api::decide,
        decide_api::reward,
        decide_api::reward_in_campaign,
        decide_api::reward_batch,
        adjust_api::adjust,
        adjust_api::adjust_in_campaign,
        admin_api::create,
        admin_api::list,
        admin_api::get,
        admin_api::update,
        admin_api::delete,
        admin_api::stats,
        validate_api::validate,
        preview_api::preview,
        preview_api::explain,
        cluster_api::digest,
        control_api::pause,
        control_api::resume,
        control_api::holdout,
        control_api::policy,
        keys_api::whoami,
        keys_api::create,
        keys_api::list,
        keys_api::revoke,
        audit_api::list,
        reports_api::actions,
        reports_api::lift,
        reports_api::audiences,
        reports_api::gems,
        reports_api::affinity,
        reports_api::policies,
        reports_api::policy_values,
        ope_api::create,
        ope_api::list,
        ope_api::get,
        ope_api::apply,
        ope_api::shadow,
        ope_api::export,
        autopilot_api::get,
        send_time_api::best_slots,
        send_time_api::concentration,
        send_time_api::slot_rates,
        shoppers_api::get,
        shoppers_api::delete,
        plugins_api::list,
        plugins_api::reload,
        ops_api::healthz,
        ops_api::readyz,
        ops_api::metrics,
    ),
    modifiers(&BearerAuth, &TransportResponses),
    security(("bearer" = [])),
    tags(
        (name = "decide", description = "Storefront calls: decide and reward"),
        (name = "campaigns", description = "Campaign configs and counters"),
        (name = "controls", description = "Pause, resume, holdout, serving-policy toggle (audited)"),
        (name = "keys", description = "API keys and roles"),
        (name = "audit", description = "The append-only audit log"),
        (name = "reports", description = "What the dashboard shows, from the logs"),
        (name = "evaluation", description = "Off-policy evaluation and log export"),
        (name = "plugins", description = "The native plugin host"),
        (name = "shoppers", description = "Per-shopper data: inspect and erase (privacy)"),
        (name = "ops", description = "Health and metrics (no key)"),
    )
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    })
}

const DOCS_HTML: &str = include_str!("../../ui/docs.html");

pub fn configure(r: &mut Routes) {
    r.get("/openapi.json", Access::Public, spec)
        .get("/docs", Access::Public, docs);
}

async fn spec() -> HttpResponse {
    status::ok_builder()
        .content_type("application/json")
        .body(document())
}

async fn docs() -> HttpResponse {
    status::ok_builder()
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-cache"))
        .body(DOCS_HTML)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_is_valid_json_with_bearer_security() {
        let v: serde_json::Value = serde_json::from_str(document()).unwrap();
        assert_eq!(
            v["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let ids: Vec<&str> = v["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|p| p.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "operation ids are unique: {ids:?}");
    }

    /// The campaign schema documents the reward bounds (issue 17).
    #[test]
    fn campaign_schema_has_the_reward_range_fields() {
        let v: serde_json::Value = serde_json::from_str(document()).unwrap();
        let schemas = &v["components"]["schemas"];
        let props = &schemas["CampaignConfig"]["properties"];
        assert_eq!(props["reward_range"]["type"], "array", "{props}");
        assert_eq!(props["reward_range"]["items"]["type"], "number", "{props}");
        let out = serde_json::to_string(&props["reward_out_of_range"]).unwrap();
        let target = if out.contains("$ref") {
            serde_json::to_string(&schemas["OutOfRange"]).unwrap()
        } else {
            out
        };
        assert!(
            target.contains("refuse") && target.contains("clip"),
            "{target}"
        );
    }
}
