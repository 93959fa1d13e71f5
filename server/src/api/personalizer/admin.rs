//! The Personalizer administration calls: service and policy configuration, the model, logs,
//! evaluations (mapped onto Tailor's off-policy evaluation) and feature importances (501).
//! Settings without a Tailor meaning are kept in the campaign's `personalizer` field so GETs
//! return what PUTs set.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::error::PzError;
use super::wire::PolicySettings;
use super::{both, campaign_of, duration, time, vw, wrong_method};
use crate::api::auth::{self, Authorized, Routes};
use crate::api::body;
use crate::api::status;
use crate::api::AppState;
use crate::audit::Change;
use crate::campaign::{CampaignConfig, CampaignStatus, RewardAggregation};
use crate::engine::now_ms;
use crate::error::EngineError;
use crate::keys::Role as KeyRole;
use crate::ope::{self, optimize, CandidateSpec, EvaluationRequest, Mode, Role};

/// Largest model file accepted by `PUT model`.
const MODEL_LIMIT: usize = 256 << 20;

pub fn configure(r: &mut Routes) {
    use KeyRole::{Editor, Viewer};
    both(
        r,
        Method::GET,
        "/configurations/service",
        Viewer,
        get_service,
    );
    both(
        r,
        Method::PUT,
        "/configurations/service",
        Editor,
        put_service,
    );
    both(r, Method::GET, "/configurations/policy", Viewer, get_policy);
    both(r, Method::PUT, "/configurations/policy", Editor, put_policy);
    both(
        r,
        Method::DELETE,
        "/configurations/policy",
        Editor,
        reset_policy,
    );
    both(
        r,
        Method::POST,
        "/configurations/applyFromEvaluation",
        Editor,
        apply_from_evaluation,
    );
    both(r, Method::GET, "/model", Viewer, export_model);
    both(r, Method::PUT, "/model", Editor, import_model);
    both(r, Method::DELETE, "/model", Editor, reset_model);
    both(
        r,
        Method::GET,
        "/model/properties",
        Viewer,
        model_properties,
    );
    both(r, Method::DELETE, "/logs", Editor, delete_logs);
    both(r, Method::GET, "/logs/properties", Viewer, log_properties);
    both(r, Method::GET, "/evaluations", Viewer, list_evaluations);
    both(
        r,
        Method::GET,
        "/evaluations/{evaluationId}",
        Viewer,
        get_evaluation,
    );
    both(
        r,
        Method::PUT,
        "/evaluations/{evaluationId}",
        Editor,
        create_evaluation,
    );
    both(
        r,
        Method::DELETE,
        "/evaluations/{evaluationId}",
        Editor,
        delete_evaluation,
    );
    // Not implemented (501) whatever the method; a viewer may learn that.
    for path in ["/featureImportances", "/featureImportances/{id}"] {
        for method in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
            both(r, method, path, Viewer, feature_importances);
        }
    }
}

/// The 405 answers of the paths above, registered after every real route.
pub fn wrong_methods(c: &mut Routes) {
    for (path, allow) in [
        ("/configurations/service", "GET, PUT"),
        ("/configurations/policy", "GET, PUT, DELETE"),
        ("/configurations/applyFromEvaluation", "POST"),
        ("/model", "GET, PUT, DELETE"),
        ("/model/properties", "GET"),
        ("/logs", "DELETE"),
        ("/logs/properties", "GET"),
        ("/evaluations", "GET"),
        ("/evaluations/{evaluationId}", "GET, PUT, DELETE"),
    ] {
        wrong_method(c, path, allow);
    }
}

async fn feature_importances() -> Result<HttpResponse, PzError> {
    Err(PzError::not_implemented("featureImportances"))
}

/// Body of `applyFromEvaluation` (Azure's `PolicyReferenceContract`).
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyReference {
    evaluation_id: String,
    /// A policy of the evaluation's results (default: its optimal policy).
    #[serde(default)]
    policy_name: Option<String>,
}

/// Apply a policy found by a policy-optimization evaluation: its policy, feature space and
/// exploration become the campaign's (audited). 204, as Azure answers.
async fn apply_from_evaluation(
    state: Authorized,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let raw = body::read(payload, state.body_limit).await?;
    let body: PolicyReference = body::parse(&raw)?;
    crate::campaign::validate_id("evaluationId", &body.evaluation_id)?;
    let ev = ope::list(&state.engine, &campaign)?
        .into_iter()
        .find(|e| e.id == body.evaluation_id)
        .ok_or_else(|| {
            PzError::not_found(format!(
                "evaluation {:?} does not exist",
                body.evaluation_id
            ))
        })?;
    crate::api::ope_api::apply_evaluation(
        &state,
        &req,
        &ev,
        body.policy_name.as_deref(),
        "personalizer.applyFromEvaluation",
    )
    .await?;
    Ok(status::no_content())
}

/// The campaign's stored Personalizer settings (an object).
fn stored(config: &CampaignConfig) -> Map<String, Value> {
    match &config.personalizer {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    }
}

fn stored_obj(config: &CampaignConfig, key: &str) -> Map<String, Value> {
    match stored(config).get(key) {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    }
}

/// Apply `change` to the campaign through the control room's audited path.
async fn update(
    state: &AppState,
    req: &HttpRequest,
    campaign: &str,
    action: &str,
    change: impl FnOnce(&mut CampaignConfig) -> Result<(), EngineError>,
) -> Result<CampaignConfig, PzError> {
    Ok(crate::api::control_api::change_campaign(state, req, campaign, action, change).await?)
}

fn set_stored(config: &mut CampaignConfig, key: &str, value: Value) {
    let mut m = stored(config);
    m.insert(key.to_string(), value);
    config.personalizer = Some(Value::Object(m));
}

fn learning_mode(status: CampaignStatus) -> &'static str {
    match status {
        CampaignStatus::Active => "Online",
        CampaignStatus::Paused => "Apprentice",
        CampaignStatus::LoggingOnly => "LoggingOnly",
    }
}

fn blocking(e: actix_web::error::BlockingError) -> PzError {
    EngineError::Unavailable {
        message: format!("worker failed: {e}"),
    }
    .into()
}

/// The service configuration as Personalizer reports it: what was set, with the fields Tailor
/// runs on read from the live campaign.
async fn service_view(state: &AppState, config: &CampaignConfig) -> Result<Value, PzError> {
    let mut out = Map::new();
    out.insert("modelExportFrequency".into(), json!("PT1M"));
    out.insert("logRetentionDays".into(), json!(-1));
    out.insert("modelRetrainDays".into(), json!(0));
    out.insert("isAutoOptimizationEnabled".into(), json!(false));
    out.insert("logMirrorEnabled".into(), json!(false));
    for (k, v) in stored_obj(config, "service") {
        out.insert(k, v);
    }
    let wait = match out.get("rewardWaitTime").and_then(Value::as_str) {
        Some(s)
            if duration::parse(s)
                .is_some_and(|v| (v - config.reward_wait_seconds).abs() < 1e-3) =>
        {
            s.to_string()
        }
        _ => duration::format(config.reward_wait_seconds),
    };
    out.insert("rewardWaitTime".into(), json!(wait));
    out.insert("defaultReward".into(), json!(config.default_reward));
    out.insert(
        "rewardAggregation".into(),
        json!(match config.reward_aggregation {
            RewardAggregation::Earliest => "earliest",
            RewardAggregation::Sum => "sum",
        }),
    );
    out.insert("explorationPercentage".into(), json!(config.exploration));
    out.insert("learningMode".into(), json!(learning_mode(config.status)));
    if config.status == CampaignStatus::Paused {
        out.insert(
            "latestApprenticeModeMetrics".into(),
            apprentice_metrics(state, &config.id).await?,
        );
    }
    Ok(Value::Object(out))
}

/// How the learned model would have done in Apprentice mode: a replay of the decision log
/// (docs/evaluation.md) with the serving policy's agreement with the baseline that was served.
async fn apprentice_metrics(state: &AppState, campaign: &str) -> Result<Value, PzError> {
    let engine = state.engine.clone();
    let id = campaign.to_string();
    let ev = web::block(move || {
        let rt = engine.campaign(&id)?;
        ope::evaluate_campaign(&engine, &rt, EvaluationRequest::default())
    })
    .await
    .map_err(blocking)??;
    let serving = ev
        .policies
        .iter()
        .find(|p| p.role == Role::Serving)
        .and_then(|p| p.estimate.as_ref());
    let events = ev.used;
    let sum = ev.logging.as_ref().map_or(0.0, |l| l.total.value) * events as f64;
    let (imitated, imitated_sum) = match serving {
        Some(e) => (
            (e.agreement * events as f64).round() as u64,
            e.dr.value * events as f64,
        ),
        None => (0, 0.0),
    };
    let now = time::format_ms(now_ms());
    let batch = json!({
        "numberOfEvents": events,
        "numberOfImitatedEvents": imitated,
        "sumOfRewards": sum,
        "sumOfImitatedRewards": imitated_sum,
    });
    Ok(json!({
        "numberOfEvents": events,
        "numberOfImitatedEvents": imitated,
        "sumOfRewards": sum,
        "sumOfImitatedRewards": imitated_sum,
        "startTime": time::format_ms(ev.from_ms.unwrap_or(0)),
        "lastProcessedEventTime": now,
        "lastBatchMetrics": batch,
    }))
}

async fn get_service(state: Authorized, req: HttpRequest) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let config = state.engine.campaign(&campaign)?.config.clone();
    Ok(status::ok(service_view(&state, &config).await?))
}

fn number(obj: &Map<String, Value>, field: &str) -> Result<Option<f64>, EngineError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| EngineError::invalid(field, "must be a number")),
    }
}

fn text<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, EngineError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(EngineError::invalid(field, "must be a string")),
    }
}

/// Map a service configuration onto the campaign (validating every field first).
fn apply_service(config: &mut CampaignConfig, obj: &Map<String, Value>) -> Result<(), EngineError> {
    if let Some(s) = text(obj, "rewardWaitTime")? {
        let secs = duration::parse(s).ok_or_else(|| {
            EngineError::invalid(
                "rewardWaitTime",
                "must be an ISO-8601 duration such as PT10M",
            )
        })?;
        if !(secs > 0.0 && secs <= 30.0 * 86_400.0) {
            return Err(EngineError::invalid(
                "rewardWaitTime",
                "must be above 0 and at most 30 days",
            ));
        }
        config.reward_wait_seconds = secs;
    }
    if let Some(v) = number(obj, "defaultReward")? {
        let range = config.reward_range;
        if !range.contains(v) {
            return Err(EngineError::invalid_owned(
                "defaultReward",
                format!(
                    "must lie inside the campaign's reward_range [{}, {}] (docs/security/rewards.md)",
                    range.lo, range.hi
                ),
            ));
        }
        config.default_reward = v;
    }
    if let Some(s) = text(obj, "rewardAggregation")? {
        config.reward_aggregation = match s.to_ascii_lowercase().as_str() {
            "earliest" => RewardAggregation::Earliest,
            "sum" => RewardAggregation::Sum,
            _ => {
                return Err(EngineError::invalid(
                    "rewardAggregation",
                    "must be \"earliest\" or \"sum\"",
                ))
            }
        };
    }
    if let Some(v) = number(obj, "explorationPercentage")? {
        if !(0.0..=1.0).contains(&v) {
            return Err(EngineError::invalid(
                "explorationPercentage",
                "must be a share between 0 and 1 (0.2 is 20%)",
            ));
        }
        config.exploration = v;
    }
    if let Some(s) = text(obj, "learningMode")? {
        config.status = match s.to_ascii_lowercase().as_str() {
            "online" => CampaignStatus::Active,
            "apprentice" => CampaignStatus::Paused,
            "loggingonly" => CampaignStatus::LoggingOnly,
            _ => {
                return Err(EngineError::invalid(
                    "learningMode",
                    "must be \"Online\", \"Apprentice\" or \"LoggingOnly\"",
                ))
            }
        };
    }
    for field in ["modelExportFrequency", "autoOptimizationFrequency"] {
        if let Some(s) = text(obj, field)? {
            if duration::parse(s).is_none() {
                return Err(EngineError::invalid(
                    field,
                    "must be an ISO-8601 duration such as PT5M",
                ));
            }
        }
    }
    for field in ["logRetentionDays", "modelRetrainDays"] {
        match obj.get(field) {
            None | Some(Value::Null) => {}
            Some(v) if v.as_i64().is_some_and(|n| n >= -1) => {}
            Some(_) => return Err(EngineError::invalid(field, "must be a whole number >= -1")),
        }
    }
    for field in ["isAutoOptimizationEnabled", "logMirrorEnabled"] {
        match obj.get(field) {
            None | Some(Value::Null | Value::Bool(_)) => {}
            Some(_) => return Err(EngineError::invalid(field, "must be true or false")),
        }
    }
    let mut kept = obj.clone();
    // Computed on read, never stored.
    kept.remove("latestApprenticeModeMetrics");
    kept.insert(
        "lastConfigurationEditDate".into(),
        json!(time::format_ms(now_ms())),
    );
    set_stored(config, "service", Value::Object(kept));
    Ok(())
}

async fn put_service(
    state: Authorized,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let raw = body::read(payload, state.body_limit).await?;
    let body: Value = body::parse(&raw)?;
    let Value::Object(obj) = body else {
        return Err(EngineError::invalid("body", "must be a JSON object").into());
    };
    let config = update(&state, &req, &campaign, "personalizer.service", |c| {
        apply_service(c, &obj)
    })
    .await?;
    Ok(status::ok(service_view(&state, &config).await?))
}

/// The policy as Personalizer reports it: what was set, while the campaign still runs the
/// configuration it mapped to; otherwise a description of what the campaign runs.
fn policy_view(config: &CampaignConfig) -> PolicySettings {
    let p = stored_obj(config, "policy");
    let mapped_same = p.get("mapped") == serde_json::to_value(&config.policy).ok().as_ref()
        && p.get("featurizer") == serde_json::to_value(&config.featurizer).ok().as_ref();
    match (p.get("name"), p.get("arguments")) {
        (Some(Value::String(name)), Some(Value::String(arguments))) if mapped_same => {
            PolicySettings {
                name: name.clone(),
                arguments: arguments.clone(),
            }
        }
        _ => PolicySettings {
            name: config.policy.kind().to_string(),
            arguments: vw::render(&config.policy, &config.featurizer),
        },
    }
}

async fn get_policy(state: Authorized, req: HttpRequest) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let config = state.engine.campaign(&campaign)?.config.clone();
    Ok(status::ok(policy_view(&config)))
}

/// Personalizer's limits on a policy's name and arguments (`maxLength` 256 and 1024).
const MAX_POLICY_NAME_CHARS: usize = 256;
const MAX_POLICY_ARGUMENTS_CHARS: usize = 1024;

fn apply_policy(config: &mut CampaignConfig, p: &PolicySettings) -> Result<(), EngineError> {
    for (field, value, max) in [
        ("name", &p.name, MAX_POLICY_NAME_CHARS),
        ("arguments", &p.arguments, MAX_POLICY_ARGUMENTS_CHARS),
    ] {
        if value.chars().count() > max {
            return Err(EngineError::invalid_owned(
                field,
                format!("must be at most {max} characters (Personalizer's limit)"),
            ));
        }
    }
    let mapped = vw::parse(&p.arguments, &config.featurizer)?;
    config.policy = mapped.policy;
    config.featurizer = mapped.featurizer;
    let record = json!({
        "name": p.name,
        "arguments": p.arguments,
        "mapped": serde_json::to_value(&config.policy).expect("policy config as JSON"),
        "featurizer": serde_json::to_value(&config.featurizer).expect("featurizer config as JSON"),
    });
    set_stored(config, "policy", record);
    Ok(())
}

/// Header of a policy answer listing the arguments accepted without effect (the note of
/// docs/migrating-from-personalizer.md), e.g. `--quiet --power_t 0`.
pub const IGNORED_ARGUMENTS: &str = "x-tailor-ignored-arguments";

/// The policy as set, with the note of what in its arguments had no effect.
fn policy_response(config: &CampaignConfig, arguments: &str) -> HttpResponse {
    let mut response = status::ok_builder();
    let ignored = vw::parse(arguments, &config.featurizer)
        .map(|m| m.ignored.join(" "))
        .unwrap_or_default();
    if !ignored.is_empty() {
        tracing::info!(campaign = %config.id, ignored = %ignored, "policy arguments accepted without effect");
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&ignored) {
            response.insert_header((IGNORED_ARGUMENTS, v));
        }
    }
    response.json(policy_view(config))
}

async fn put_policy(
    state: Authorized,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let raw = body::read(payload, state.body_limit).await?;
    let p: PolicySettings = body::parse(&raw)?;
    let config = update(&state, &req, &campaign, "personalizer.policy", |c| {
        apply_policy(c, &p)
    })
    .await?;
    Ok(policy_response(&config, &p.arguments))
}

async fn reset_policy(state: Authorized, req: HttpRequest) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let p = PolicySettings {
        name: "default".into(),
        arguments: vw::DEFAULT_ARGUMENTS.into(),
    };
    let config = update(&state, &req, &campaign, "personalizer.policy.reset", |c| {
        apply_policy(c, &p)
    })
    .await?;
    Ok(policy_response(&config, &p.arguments))
}

async fn export_model(state: Authorized, req: HttpRequest) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let bytes = state.engine.export_model(&campaign)?;
    Ok(status::ok_builder()
        .content_type("application/octet-stream")
        .body(bytes))
}

async fn import_model(
    state: Authorized,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let raw = body::read(payload, MODEL_LIMIT).await?;
    let names = state
        .engine
        .import_model_replicated(&campaign, raw.to_vec())
        .await?;
    update(&state, &req, &campaign, "personalizer.model.import", |c| {
        set_stored(c, "modelCreated", json!(time::format_ms(now_ms())));
        Ok(())
    })
    .await?;
    tracing::info!(campaign = %campaign, policies = ?names, "model imported");
    Ok(status::no_content())
}

async fn reset_model(state: Authorized, req: HttpRequest) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    state.engine.reset_model_replicated(&campaign).await?;
    update(&state, &req, &campaign, "personalizer.model.reset", |c| {
        set_stored(c, "modelCreated", json!(time::format_ms(now_ms())));
        Ok(())
    })
    .await?;
    Ok(status::no_content())
}

async fn model_properties(state: Authorized, req: HttpRequest) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let config = state.engine.campaign(&campaign)?.config.clone();
    // The model learns online, reward by reward: it was last modified just now.
    let now = time::format_ms(now_ms());
    let created = stored(&config)
        .get("modelCreated")
        .cloned()
        .unwrap_or_else(|| json!(now));
    Ok(status::ok(
        json!({"creationTime": created, "lastModifiedTime": now}),
    ))
}

async fn delete_logs(state: Authorized, req: HttpRequest) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let (d, r) = state.engine.delete_logs_replicated(&campaign).await?;
    auth::audit(
        &state,
        &req,
        Change {
            action: "personalizer.logs.delete".into(),
            campaign: Some(campaign.clone()),
            target: None,
            before: json!({"decisions": d, "rewards": r}),
            after: Value::Null,
        },
    )
    .await?;
    tracing::info!(campaign = %campaign, decisions = d, rewards = r, "logs deleted");
    Ok(status::no_content())
}

async fn log_properties(state: Authorized, req: HttpRequest) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let engine = state.engine.clone();
    let range = web::block(move || engine.log_time_range(&campaign))
        .await
        .map_err(blocking)??;
    let body = match range {
        Some((from, to)) => {
            json!({"dateRange": {"from": time::format_ms(from), "to": time::format_ms(to)}})
        }
        None => json!({"dateRange": {}}),
    };
    Ok(status::ok(body))
}

fn evaluation_id(req: &HttpRequest) -> Result<String, PzError> {
    let id = req.match_info().get("evaluationId").unwrap_or_default();
    crate::campaign::validate_id("evaluationId", id)?;
    Ok(id.to_string())
}

/// A stored evaluation (Tailor's document, with the Personalizer request beside it) in
/// Personalizer's shape.
fn evaluation_view(doc: &Value, with_content: bool) -> Value {
    let mut ev: ope::Evaluation = match serde_json::from_value(doc.clone()) {
        Ok(ev) => ev,
        Err(_) => return Value::Null,
    };
    optimize::settle(&mut ev);
    let meta = doc.get("personalizer").cloned().unwrap_or(Value::Null);
    let start = meta["startTime"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| time::format_ms(ev.from_ms.unwrap_or(0)));
    let end = meta["endTime"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| time::format_ms(ev.to_ms.unwrap_or(ev.created_ms)));
    let created = time::format_ms(ev.created_ms);
    let mut out = json!({
        "id": ev.id,
        "name": meta["name"].as_str().unwrap_or(&ev.id),
        "startTime": start,
        "endTime": end,
        "creationTime": created,
        "evaluationType": "Manual",
        "status": match ev.status {
            ope::Status::Running => "Running",
            ope::Status::Succeeded => "Succeeded",
            ope::Status::Failed => "Failed",
        },
        "jobId": ev.id,
    });
    if let (Some(opt), ope::Status::Succeeded) = (&ev.optimization, ev.status) {
        // Personalizer names the optimization's pick; without a winner it is the policy running.
        out["optimalPolicy"] = json!(opt.winner.as_deref().unwrap_or(&opt.serving.setting.name));
    }
    if with_content {
        let arguments: Vec<(String, String)> = meta["policies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_string(),
                    p["arguments"].as_str()?.to_string(),
                ))
            })
            .collect();
        let mut best: Option<(f64, String)> = None;
        let value: Vec<Value> = ev
            .policies
            .iter()
            .map(|p| {
                let source = match p.role {
                    Role::Serving => "Online",
                    Role::Baseline => "Baseline",
                    Role::Shadow => "Custom",
                    Role::Candidate if p.config.kind() == "uniform" => "Random",
                    Role::Candidate => "OfflineExperimentation",
                };
                let source = if p.name == "uniform" { "Random" } else { source };
                // An optimization's candidates carry their own feature space.
                let featurizer = ev
                    .optimization
                    .as_ref()
                    .and_then(|o| {
                        std::iter::once(&o.serving)
                            .chain(&o.candidates)
                            .find(|c| c.setting.name == p.name)
                    })
                    .map(|c| c.setting.featurizer.clone())
                    .unwrap_or_default();
                let args = arguments
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .map(|(_, a)| a.clone())
                    .unwrap_or_else(|| vw::render(&p.config, &featurizer));
                let summary = match &p.estimate {
                    Some(e) => {
                        if best.as_ref().is_none_or(|(v, _)| e.dr.value > *v) {
                            best = Some((e.dr.value, p.name.clone()));
                        }
                        json!({"expectedReward": e.dr.value, "confidenceInterval": [e.dr.low, e.dr.high]})
                    }
                    None => json!({}),
                };
                json!({
                    "name": p.name,
                    "arguments": args,
                    "policySource": source,
                    "slotId": "",
                    "summary": summary,
                    "timeseries": {"data": []},
                })
            })
            .collect();
        out["content"] = json!({
            "startTime": start,
            "endTime": end,
            "intervalInMinutes": 0,
            "value": value,
        });
        out["description"] = json!(format!(
            "off-policy evaluation (doubly robust) over {} of {} decisions",
            ev.used, ev.decisions
        ));
        if let (Some((_, name)), None) = (best, &ev.optimization) {
            out["optimalPolicy"] = json!(name);
        }
        out["tailor"] = doc.clone();
    }
    out
}

fn stored_evaluations(state: &AppState, campaign: &str) -> Result<Vec<Value>, EngineError> {
    state.engine.campaign(campaign)?;
    let mut docs = Vec::new();
    for json in state.engine.evaluations(campaign)? {
        if let Ok(v) = serde_json::from_slice::<Value>(&json) {
            docs.push(v);
        }
    }
    docs.sort_by(|a, b| b["created_ms"].as_u64().cmp(&a["created_ms"].as_u64()));
    Ok(docs)
}

async fn list_evaluations(state: Authorized, req: HttpRequest) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let value: Vec<Value> = stored_evaluations(&state, &campaign)?
        .iter()
        .map(|d| evaluation_view(d, false))
        .filter(|v| !v.is_null())
        .collect();
    Ok(status::ok(json!({ "value": value })))
}

async fn get_evaluation(state: Authorized, req: HttpRequest) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let id = evaluation_id(&req)?;
    stored_evaluations(&state, &campaign)?
        .iter()
        .find(|d| d["id"] == id.as_str())
        .map(|d| status::ok(evaluation_view(d, true)))
        .ok_or_else(|| PzError::not_found(format!("evaluation {id:?} does not exist")))
}

async fn delete_evaluation(state: Authorized, req: HttpRequest) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let id = evaluation_id(&req)?;
    state.engine.campaign(&campaign)?;
    if !state.engine.delete_evaluation(&campaign, &id)? {
        return Err(PzError::not_found(format!(
            "evaluation {id:?} does not exist"
        )));
    }
    Ok(status::no_content())
}

fn time_field(obj: &Value, field: &str) -> Result<Option<u64>, EngineError> {
    match &obj[field] {
        Value::Null => Ok(None),
        Value::String(s) => time::parse_ms(s)
            .map(Some)
            .ok_or_else(|| EngineError::invalid(field, "must be an ISO-8601 date and time")),
        _ => Err(EngineError::invalid(
            field,
            "must be an ISO-8601 date and time",
        )),
    }
}

async fn create_evaluation(
    state: Authorized,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let id = evaluation_id(&req)?;
    let raw = body::read(payload, state.body_limit).await?;
    let body: Value = body::parse(&raw)?;
    if !body.is_object() {
        return Err(EngineError::invalid("body", "must be a JSON object").into());
    }
    let name = match &body["name"] {
        Value::String(s) => s.clone(),
        Value::Null => id.clone(),
        _ => return Err(EngineError::invalid("name", "must be a string").into()),
    };
    let from_ms = time_field(&body, "startTime")?;
    let to_ms = time_field(&body, "endTime")?;
    if let (Some(from), Some(to)) = (from_ms, to_ms) {
        if to < from {
            return Err(EngineError::invalid(
                "endTime",
                "must not be before startTime (Personalizer's InvalidEvaluationContract)",
            )
            .into());
        }
    }
    let config = state.engine.campaign(&campaign)?.config.clone();
    let featurizer = config.featurizer.clone();
    let optimizing = ["enableOfflineExperimentation", "enablePolicyOptimization"]
        .iter()
        .any(|f| body[*f] == Value::Bool(true));
    let mut searched = Vec::new();
    let mut candidates = Vec::new();
    let mut kept_policies = Vec::new();
    let mut featurizers = Vec::new();
    for (i, p) in body["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let settings: PolicySettings = serde_json::from_value(p.clone())
            .map_err(|e| EngineError::invalid_owned(&format!("policies[{i}]"), e.to_string()))?;
        let mapped = vw::parse(&settings.arguments, &featurizer).map_err(|e| {
            EngineError::invalid_owned(&format!("policies[{i}].arguments"), e.to_string())
        })?;
        kept_policies.push(json!({"name": settings.name, "arguments": settings.arguments}));
        candidates.push(CandidateSpec {
            name: Some(settings.name),
            policy: Some(mapped.policy),
            exploration: 0.0,
        });
        featurizers.push(mapped.featurizer);
    }
    if optimizing {
        // The listed policies are searched beside the grid, each with its own feature space.
        for (c, f) in candidates.into_iter().zip(featurizers) {
            searched.push(optimize::Setting {
                name: c.name.unwrap_or_default(),
                policy: c.policy.unwrap_or_default(),
                featurizer: f,
                exploration: config.exploration,
            });
        }
        let request = EvaluationRequest {
            from_ms,
            to_ms,
            mode: Mode::Replay,
            optimize: true,
            ..Default::default()
        };
        let mut extra = Map::new();
        extra.insert(
            "personalizer".into(),
            json!({
                "name": name,
                "startTime": body["startTime"],
                "endTime": body["endTime"],
                "policies": kept_policies,
                "enableOfflineExperimentation": true,
            }),
        );
        let engine = state.engine.clone();
        let (c, i) = (campaign.clone(), id.clone());
        let running =
            web::block(move || optimize::start(&engine, &c, &i, request, extra, searched))
                .await
                .map_err(blocking)??;
        let mut doc = serde_json::to_value(&running).expect("evaluation as JSON");
        doc["personalizer"] = json!({"name": name});
        return Ok(status::ok(evaluation_view(&doc, true)));
    }
    let request = EvaluationRequest {
        from_ms,
        to_ms,
        mode: Mode::Replay,
        candidates,
        ..Default::default()
    };
    let engine = state.engine.clone();
    let c = campaign.clone();
    let mut ev = web::block(move || {
        let rt = engine.campaign(&c)?;
        ope::evaluate_campaign(&engine, &rt, request)
    })
    .await
    .map_err(blocking)??;
    ev.id = id.clone();
    ev.created_ms = now_ms();
    let mut doc = serde_json::to_value(&ev).expect("evaluation as JSON");
    doc["personalizer"] = json!({
        "name": name,
        "startTime": body["startTime"],
        "endTime": body["endTime"],
        "policies": kept_policies,
        "enablePolicyOptimization": body["enablePolicyOptimization"],
    });
    let bytes = serde_json::to_vec(&doc).expect("evaluation as JSON");
    state.engine.put_evaluation(&campaign, &id, &bytes)?;
    Ok(status::ok(evaluation_view(&doc, true)))
}
