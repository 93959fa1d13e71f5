//! `/personalizer/...`: a drop-in replacement for the retired Azure AI Personalizer REST API
//! (docs/migrating-from-personalizer.md). Paths are served both as `/personalizer/v1.0/...` (and
//! `v1.1-preview.N`) and as `/personalizer/...?api-version=2022-09-01-preview`.
//!
//! The key in `Ocp-Apim-Subscription-Key` selects the learning loop: it must be scoped to one
//! campaign (`api/auth.rs`). Every rank becomes an `Engine::decide` and every reward an
//! `Engine::reward*`; this module only translates bodies and errors.

mod admin;
pub mod duration;
pub mod error;
pub mod time;
pub mod vw;
pub mod wire;

use std::collections::{HashMap, HashSet};

use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, HttpMessage, HttpRequest, HttpResponse, Responder};
use serde_json::{Map, Value};
use tailor_wire::{Candidate, ChosenAction, DecideRequest, RewardRequest};

use super::auth::{Access, Authorized, Routes};
use super::error::ApiError;
use super::{body, path, status, AppState};
use crate::campaign::CampaignKind;
use crate::engine::{featurize, DecideInput};
use crate::error::EngineError;
use crate::keys::{Principal, Role};
use error::PzError;
use wire::*;

/// Personalizer's limit on the actions of one rank ("Action count should be between 1 and 50").
pub const MAX_ACTIONS: usize = 50;

/// Personalizer's limit on the slots of one multi-slot rank.
pub const MAX_SLOTS: usize = 50;

/// Personalizer's limit on an event, action or slot id, in characters (`maxLength: 256`).
pub const MAX_ID_CHARS: usize = 256;

/// Tailor's own limit on an engine event id, in bytes (a multi-slot slot is the engine event
/// `{eventId}` U+001F `{slotId}`, `engine::slot_event_id`).
const MAX_ENGINE_ID_BYTES: usize = 256;

/// The version segment of the versioned path forms.
const VERSION: &str = "{version:v1\\.(?:0|1-preview\\.[0-9]+)}";

/// Register `handler` for `method` on `path` (below `/personalizer`), both unversioned and
/// versioned, for a key of the request's learning loop of at least `role`.
fn both<F, Args>(r: &mut Routes, method: Method, path: &str, role: Role, handler: F)
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let access = Access::Loop { role };
    r.add(method.clone(), path, access, handler.clone());
    r.add(method, &format!("/{VERSION}{path}"), access, handler);
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/personalizer")
            .configure(|c| {
                let r = &mut Routes::new(c);
                let post = Method::POST;
                both(r, post.clone(), "/rank", Role::Decide, rank);
                both(
                    r,
                    post.clone(),
                    "/events/{eventId}/reward",
                    Role::Decide,
                    reward,
                );
                both(
                    r,
                    post.clone(),
                    "/events/{eventId}/activate",
                    Role::Decide,
                    activate,
                );
                both(r, post.clone(), "/multislot/rank", Role::Decide, rank_multi);
                both(
                    r,
                    post.clone(),
                    "/multislot/events/{eventId}/reward",
                    Role::Decide,
                    reward_multi,
                );
                both(
                    r,
                    post,
                    "/multislot/events/{eventId}/activate",
                    Role::Decide,
                    activate_multi,
                );
                admin::configure(r);
                // After every real route: the other methods on these paths are 405s.
                for path in [
                    "/rank",
                    "/events/{eventId}/reward",
                    "/events/{eventId}/activate",
                    "/multislot/rank",
                    "/multislot/events/{eventId}/reward",
                    "/multislot/events/{eventId}/activate",
                ] {
                    wrong_method(r, path, "POST");
                }
                admin::wrong_methods(r);
            })
            .default_service(web::to(no_route)),
    );
}

/// Answer 405 with `Allow: {allow}` for any method on `path` that no route registered before
/// this call answers (resources match in registration order).
fn wrong_method(r: &mut Routes, path: &str, allow: &'static str) {
    let answer = move || async move { Err::<HttpResponse, _>(PzError::method_not_allowed(allow)) };
    // Open: it only tells which methods the path takes, as /openapi.json does.
    r.any(path, Access::Public, answer);
    r.any(&format!("/{VERSION}{path}"), Access::Public, answer);
}

async fn no_route() -> Result<HttpResponse, PzError> {
    Err(PzError::no_route())
}

/// The campaign the request's key is scoped to (the auth middleware refuses unscoped keys).
fn campaign_of(req: &HttpRequest) -> Result<String, PzError> {
    req.extensions()
        .get::<Principal>()
        .and_then(|p| p.campaign.clone())
        .ok_or_else(|| {
            ApiError::forbidden("Personalizer calls need a key scoped to one campaign").into()
        })
}

/// The path's event id, fully percent-decoded (`api/path.rs`).
fn event_id_of(req: &HttpRequest) -> Result<String, PzError> {
    Ok(path::segment(req, "eventId")?)
}

/// Personalizer's feature lists (`[{"a": 1}, {"ns": {"b": "x"}}]`) as one Tailor features object:
/// the objects' keys are merged (nested objects merge too; a later scalar wins).
pub fn merge_features(field: &str, items: Option<&[Value]>) -> Result<Value, EngineError> {
    let mut out = Map::new();
    for (i, item) in items.unwrap_or_default().iter().enumerate() {
        match item {
            Value::Object(m) => merge_into(&mut out, m),
            Value::Null => {}
            _ => {
                return Err(EngineError::invalid_owned(
                    &format!("{field}[{i}]"),
                    "each feature entry must be a JSON object".into(),
                ))
            }
        }
    }
    Ok(if out.is_empty() {
        Value::Null
    } else {
        Value::Object(out)
    })
}

fn merge_into(out: &mut Map<String, Value>, m: &Map<String, Value>) {
    for (k, v) in m {
        match (out.get_mut(k), v) {
            (Some(Value::Object(existing)), Value::Object(new)) => merge_into(existing, new),
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
}

/// An id within Personalizer's documented length.
fn check_id_length(field: &str, id: &str) -> Result<(), EngineError> {
    let chars = id.chars().count();
    if chars > MAX_ID_CHARS {
        return Err(EngineError::invalid_owned(
            field,
            format!("must be at most {MAX_ID_CHARS} characters (Personalizer's limit); this one has {chars}"),
        ));
    }
    Ok(())
}

/// Personalizer's limits on a rank's actions and event id, checked before anything is decided.
fn check_rank(actions: &[RankableAction], event_id: Option<&str>) -> Result<(), EngineError> {
    if actions.len() > MAX_ACTIONS {
        return Err(EngineError::invalid_owned(
            "actions",
            format!(
                "action count should be between 1 and {MAX_ACTIONS} (Personalizer's limit); {} were sent",
                actions.len()
            ),
        ));
    }
    for (i, a) in actions.iter().enumerate() {
        check_id_length(&format!("actions[{i}].id"), &a.id)?;
    }
    if let Some(id) = event_id {
        check_id_length("eventId", id)?;
    }
    Ok(())
}

fn candidates_of(actions: &[RankableAction]) -> Result<Vec<Candidate>, EngineError> {
    if actions.is_empty() {
        return Err(EngineError::invalid("actions", "must not be empty"));
    }
    actions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            Ok(Candidate {
                id: a.id.clone(),
                features: merge_features(&format!("actions[{i}].features"), a.features.as_deref())?,
                attributes: Value::Null,
            })
        })
        .collect()
}

/// One decision through the engine; the decide body is logged as Tailor's own (so off-policy
/// evaluation and log export read it like any other decision).
async fn decide(
    state: &AppState,
    campaign: &str,
    request: DecideRequest,
    defer: bool,
    slot: Option<String>,
) -> Result<tailor_wire::DecideResponse, EngineError> {
    if state.engine.campaign(campaign)?.config.kind != CampaignKind::Items {
        return Err(EngineError::invalid(
            "campaign",
            "is a send_time campaign; the Personalizer API ranks items",
        ));
    }
    let mut input = DecideInput::from_request(&request)?;
    input.defer = defer;
    input.log_request = true;
    input.slot = slot;
    state.engine.decide_items_replicated(campaign, input).await
}

async fn rank(
    state: Authorized,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let raw = body::read(payload, state.body_limit).await?;
    let r: RankRequest = body::parse(&raw)?;
    check_rank(&r.actions, r.event_id.as_deref())?;
    let all = candidates_of(&r.actions)?;
    let excluded: HashSet<&str> = r
        .excluded_actions
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let context = merge_features("contextFeatures", r.context_features.as_deref())?;
    // The action each candidate is, so errors name `actions[j]` as sent.
    let picked: Vec<usize> = (0..all.len())
        .filter(|&i| !excluded.contains(all[i].id.as_str()))
        .collect();
    let candidates: Vec<Candidate> = picked.iter().map(|&i| all[i].clone()).collect();
    if candidates.is_empty() {
        return Err(EngineError::invalid("excludedActions", "every action is excluded").into());
    }
    let response = decide(
        &state,
        &campaign,
        DecideRequest {
            context,
            candidates,
            event_id: r.event_id,
            k: Some(1),
            shopper_id: None,
            explore: None,
            distribution: true,
        },
        r.defer_activation.unwrap_or(false),
        None,
    )
    .await
    .map_err(|e| PzError::for_actions(e, &picked))?;
    let chosen = &response.actions[0];
    let ranking = ranking_of(
        &r.actions,
        &excluded,
        chosen,
        response.distribution.as_deref(),
    );
    Ok(status::created(RankResponse {
        event_id: response.event_id,
        reward_action_id: chosen.id.clone(),
        ranking,
    }))
}

/// Personalizer's ranking: the served action first with its logged propensity, then the other
/// eligible actions by their probability of having been served (the policy's first-slot
/// distribution; ties and a replayed decision, which has none, keep the order sent, sharing the
/// rest evenly), then the excluded actions at 0.
fn ranking_of(
    actions: &[RankableAction],
    excluded: &HashSet<&str>,
    chosen: &ChosenAction,
    distribution: Option<&[ChosenAction]>,
) -> Vec<RankedAction> {
    let eligible = actions
        .iter()
        .filter(|a| a.id != chosen.id && !excluded.contains(a.id.as_str()));
    let mut rest: Vec<RankedAction> = match distribution {
        Some(d) => {
            let p: HashMap<&str, f64> = d.iter().map(|a| (a.id.as_str(), a.probability)).collect();
            eligible
                .map(|a| RankedAction {
                    id: a.id.clone(),
                    probability: p.get(a.id.as_str()).copied().unwrap_or(0.0),
                })
                .collect()
        }
        None => {
            let others = eligible.clone().count();
            let share = if others > 0 {
                ((1.0 - chosen.probability) / others as f64).max(0.0)
            } else {
                0.0
            };
            eligible
                .map(|a| RankedAction {
                    id: a.id.clone(),
                    probability: share,
                })
                .collect()
        }
    };
    // Stable: equal probabilities keep the order the actions were sent in.
    rest.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    let mut ranking = Vec::with_capacity(actions.len());
    ranking.push(RankedAction {
        id: chosen.id.clone(),
        probability: chosen.probability,
    });
    ranking.extend(rest);
    ranking.extend(
        actions
            .iter()
            .filter(|a| a.id != chosen.id && excluded.contains(a.id.as_str()))
            .map(|a| RankedAction {
                id: a.id.clone(),
                probability: 0.0,
            }),
    );
    ranking
}

async fn rank_multi(
    state: Authorized,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let raw = body::read(payload, state.body_limit).await?;
    let r: MultiSlotRankRequest = body::parse(&raw)?;
    check_rank(&r.actions, r.event_id.as_deref())?;
    let all = candidates_of(&r.actions)?;
    let context = merge_features("contextFeatures", r.context_features.as_deref())?;
    if r.slots.is_empty() {
        return Err(EngineError::invalid("slots", "must not be empty").into());
    }
    if r.slots.len() > MAX_SLOTS {
        return Err(EngineError::invalid_owned(
            "slots",
            format!(
                "slot count should be between 1 and {MAX_SLOTS} (Personalizer's limit); {} were sent",
                r.slots.len()
            ),
        )
        .into());
    }
    let index: HashMap<&str, usize> = all
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    // Validate every slot before the first decision is logged.
    let mut slot_ids = HashSet::new();
    let mut baselines = HashSet::new();
    let mut slot_contexts = Vec::with_capacity(r.slots.len());
    for (i, s) in r.slots.iter().enumerate() {
        if s.id.is_empty() || !slot_ids.insert(s.id.as_str()) {
            return Err(EngineError::invalid_owned(
                &format!("slots[{i}].id"),
                format!("slot ids must be non-empty and unique ({:?})", s.id),
            )
            .into());
        }
        check_id_length(&format!("slots[{i}].id"), &s.id)?;
        // Each slot is the engine event `{eventId}` U+001F `{slotId}`, which must fit Tailor's
        // id limit (a generated event id has 32 characters).
        let event_bytes = r.event_id.as_ref().map_or(32, String::len);
        let bytes = event_bytes + 1 + s.id.len();
        if bytes > MAX_ENGINE_ID_BYTES {
            let field = match r.event_id {
                Some(_) => "eventId".to_string(),
                None => format!("slots[{i}].id"),
            };
            return Err(EngineError::invalid_owned(
                &field,
                format!(
                    "eventId, a separator and slot id {:?} are {bytes} bytes; Tailor keeps each slot as its own event named by all three, at most {MAX_ENGINE_ID_BYTES} bytes",
                    s.id
                ),
            )
            .into());
        }
        if !index.contains_key(s.baseline_action.as_str()) {
            return Err(EngineError::invalid_owned(
                &format!("slots[{i}].baselineAction"),
                format!("{:?} is not one of the actions", s.baseline_action),
            )
            .into());
        }
        if s.excluded_actions
            .iter()
            .flatten()
            .any(|a| *a == s.baseline_action)
        {
            return Err(EngineError::invalid(
                &format!("slots[{i}].baselineAction"),
                "must not be one of the slot's excludedActions",
            )
            .into());
        }
        if !baselines.insert(s.baseline_action.as_str()) {
            return Err(EngineError::invalid(
                &format!("slots[{i}].baselineAction"),
                "every slot needs its own baseline action",
            )
            .into());
        }
        let features = merge_features(&format!("slots[{i}].features"), s.features.as_deref())?;
        featurize::features(&format!("slots[{i}].features"), &features)?;
        // The slot's id and features join the context under the `slot` namespace, so the model
        // can learn what works where.
        let mut slot = match features {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        slot.insert("id".into(), Value::String(s.id.clone()));
        let mut ctx = match &context {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        ctx.insert("slot".into(), Value::Object(slot));
        slot_contexts.push(Value::Object(ctx));
    }
    let event_id = match r.event_id {
        Some(id) => id,
        None => format!("{:032x}", rand::random::<u128>()),
    };
    let defer = r.defer_activation.unwrap_or(false);
    let mut taken: HashSet<String> = HashSet::new();
    let mut slots = Vec::with_capacity(r.slots.len());
    for (s, ctx) in r.slots.iter().zip(slot_contexts) {
        let excluded: HashSet<&str> = s
            .excluded_actions
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        // The baseline first: it is what the Apprentice and LoggingOnly modes serve. `picked`
        // is the action each candidate is, so errors name `actions[j]` as sent.
        let baseline = index[s.baseline_action.as_str()];
        let picked: Vec<usize> = std::iter::once(baseline)
            .chain((0..all.len()).filter(|&i| i != baseline))
            .filter(|&i| {
                let id = all[i].id.as_str();
                !excluded.contains(id) && !taken.contains(id)
            })
            .collect();
        let candidates: Vec<Candidate> = picked.iter().map(|&i| all[i].clone()).collect();
        if candidates.is_empty() {
            return Err(EngineError::invalid_owned(
                "slots",
                format!("no action is left for slot {:?}", s.id),
            )
            .into());
        }
        let response = decide(
            &state,
            &campaign,
            DecideRequest {
                context: ctx,
                candidates,
                event_id: Some(event_id.clone()),
                k: Some(1),
                shopper_id: None,
                explore: None,
                distribution: false,
            },
            defer,
            // The engine event is `slot_event_id(event_id, slot)`, apart from single-slot ids.
            Some(s.id.clone()),
        )
        .await
        .map_err(|e| PzError::for_actions(e, &picked))?;
        let chosen = response.actions[0].id.clone();
        taken.insert(chosen.clone());
        slots.push(SlotResponse {
            id: s.id.clone(),
            reward_action_id: chosen,
        });
    }
    Ok(status::created(MultiSlotRankResponse { event_id, slots }))
}

/// The event must belong to the key's campaign; another loop's events do not exist for it.
async fn check_scope(state: &AppState, campaign: &str, event_id: &str) -> Result<(), PzError> {
    if state.engine.event_exists(campaign, event_id)? {
        return Ok(());
    }
    // In cluster mode the rank may have been answered by another replica a moment ago: look
    // again once this replica applied the stream up to now.
    if let Some(cluster) = state.engine.cluster() {
        cluster.catch_up().await?;
        if state.engine.event_exists(campaign, event_id)? {
            return Ok(());
        }
    }
    Err(PzError::not_found(format!("event {event_id:?} is unknown")))
}

/// [`Engine::slot_event`], with the same read barrier as [`check_scope`] in cluster mode.
async fn slot_event(
    state: &AppState,
    campaign: &str,
    event_id: &str,
    slot: &str,
) -> Result<Option<String>, PzError> {
    if let Some(id) = state.engine.slot_event(campaign, event_id, slot)? {
        return Ok(Some(id));
    }
    let Some(cluster) = state.engine.cluster() else {
        return Ok(None);
    };
    cluster.catch_up().await?;
    Ok(state.engine.slot_event(campaign, event_id, slot)?)
}

/// Personalizer counted every reward call (with `sum` aggregation two rewards of 1 make 2), so
/// each call gets its own idempotency key; Tailor's native API instead takes an equal value
/// without a key as a repeat.
fn each_reward() -> String {
    format!("pz-{:032x}", rand::random::<u128>())
}

/// A reward Personalizer would have accepted silently (late, repeated) is a 204 here too.
fn reward_outcome(r: Result<(), EngineError>) -> Result<(), PzError> {
    match r {
        Ok(()) | Err(EngineError::RewardWindowClosed { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn reward(
    state: Authorized,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let event_id = event_id_of(&req)?;
    let raw = body::read(payload, state.body_limit).await?;
    let r: wire::RewardRequest = body::parse(&raw)?;
    check_scope(&state, &campaign, &event_id).await?;
    let out = state
        .engine
        .reward(
            &campaign,
            &event_id,
            RewardRequest {
                value: r.value,
                action_id: None,
                reward_id: Some(each_reward()),
                campaign: None,
            },
        )
        .await
        .map(|_| ());
    reward_outcome(out)?;
    Ok(status::no_content())
}

async fn activate(state: Authorized, req: HttpRequest) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let event_id = event_id_of(&req)?;
    check_scope(&state, &campaign, &event_id).await?;
    state
        .engine
        .activate_replicated(&campaign, &event_id)
        .await?;
    Ok(status::no_content())
}

async fn reward_multi(
    state: Authorized,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let event_id = event_id_of(&req)?;
    let raw = body::read(payload, state.body_limit).await?;
    let r: MultiSlotRewardRequest = body::parse(&raw)?;
    // Every slot's value is checked before any joins: a refused one must not leave the others
    // half-written.
    let config = state.engine.campaign(&campaign)?.config.clone();
    for (i, s) in r.reward.iter().enumerate() {
        config.admit_reward(&format!("reward[{i}].value"), s.value)?;
    }
    let mut items = Vec::with_capacity(r.reward.len());
    for s in &r.reward {
        let Some(id) = slot_event(&state, &campaign, &event_id, &s.slot_id).await? else {
            return Err(PzError::not_found(format!(
                "event {event_id:?} has no slot {:?}",
                s.slot_id
            )));
        };
        items.push((
            campaign.clone(),
            id,
            RewardRequest {
                value: s.value,
                action_id: None,
                reward_id: Some(each_reward()),
                campaign: None,
            },
        ));
    }
    for outcome in state.engine.reward_batch(items).await? {
        reward_outcome(outcome.map(|_| ()))?;
    }
    Ok(status::no_content())
}

async fn activate_multi(state: Authorized, req: HttpRequest) -> Result<HttpResponse, PzError> {
    let campaign = campaign_of(&req)?;
    let event_id = event_id_of(&req)?;
    state
        .engine
        .activate_slots_replicated(&campaign, &event_id)
        .await?;
    Ok(status::no_content())
}
