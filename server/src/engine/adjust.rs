//! Returns: corrections of rewards already applied (`POST /v1/events/{id}/adjust`).
//!
//! A reward, once applied, is learned and counted; a return turns yesterday's purchase reward of
//! 1 into 0. An adjustment names the event (and, for multi-slot decisions, the action), the new
//! reward (`value`) or a change (`delta`), and optionally an idempotency key. Under the
//! campaign's join lock, like a reward, it is
//! 1. checked: the event exists (404), its slot has an applied reward (409), the request is not a
//!    repeat (answered `duplicate`), the campaign's return window (counted from the decision) is
//!    open (410), the new reward lies in `reward_range` (400 naming `value` or `delta`);
//! 2. logged: one atomic batch of a new log entry ([`LogEntry::Adjustment`]) and the slot's new
//!    settled state (`S` key: current value and the keys of the adjustments applied), through
//!    [`LogStore::commit_adjustment`](crate::store::LogStore::commit_adjustment);
//! 3. learned ([`Policy::adjust`](tailor_policies::Policy::adjust): the old reward replaced by
//!    the new one in every configured policy) and counted (counters, report aggregates);
//! 4. acknowledged after the group commit that made it durable.
//!
//! Recovery replays adjustment entries past the snapshot through the same learn-and-count path
//! as live ones ([`Engine::learn_adjustment`]), so each is applied exactly once.
//!
//! [`LogEntry::Adjustment`]: crate::store::LogEntry::Adjustment

use std::collections::HashMap;

use tailor_policies::Arm;
use tailor_wire::{AdjustRequest, AdjustResponse, AdjustStatus};

use super::{now_ms, CampaignRuntime, Engine};
use crate::campaign::{CampaignKind, RewardAggregation};
use crate::error::EngineError;
use crate::store::{
    AdjustmentEntry, AdjustmentRecord, EventRecord, LoggedAction, SettledSlot, Store,
};

/// Most adjustments one slot may take (each keeps its 8-byte idempotency key).
pub const MAX_ADJUSTMENTS_PER_SLOT: usize = 64;

/// What an adjustment sets.
#[derive(Debug, Clone, Copy)]
enum Target {
    Value(f64),
    Delta(f64),
}

fn check_adjust_request(req: &AdjustRequest) -> Result<Target, EngineError> {
    let target = match (req.value, req.delta) {
        (Some(v), None) => Target::Value(v),
        (None, Some(d)) => Target::Delta(d),
        (Some(_), Some(_)) => {
            return Err(EngineError::invalid(
                "delta",
                "send either value (the new reward) or delta (a change), not both",
            ))
        }
        (None, None) => {
            return Err(EngineError::invalid(
                "value",
                "required: the slot's new reward (or send delta, a change to it)",
            ))
        }
    };
    match target {
        Target::Value(v) if !v.is_finite() => {
            return Err(EngineError::invalid("value", "must be a finite number"))
        }
        Target::Delta(d) if !d.is_finite() => {
            return Err(EngineError::invalid("delta", "must be a finite number"))
        }
        _ => {}
    }
    if let Some(id) = &req.adjustment_id {
        if id.is_empty() || id.len() > 256 {
            return Err(EngineError::invalid(
                "adjustment_id",
                "must be 1-256 characters",
            ));
        }
    }
    if let Some(a) = &req.action_id {
        if a.is_empty() || a.len() > 256 {
            return Err(EngineError::invalid(
                "action_id",
                "must be 1-256 characters",
            ));
        }
    }
    Ok(target)
}

/// The idempotency key of an adjustment: its id, or else what it sets (a repeat of the same
/// value, or of the same delta, is a duplicate).
fn adjust_key(req: &AdjustRequest, target: Target) -> u64 {
    use xxhash_rust::xxh3::xxh3_64_with_seed;
    match (&req.adjustment_id, target) {
        (Some(id), _) => xxh3_64_with_seed(id.as_bytes(), 11),
        (None, Target::Value(v)) => xxh3_64_with_seed(&v.to_bits().to_be_bytes(), 12),
        (None, Target::Delta(d)) => xxh3_64_with_seed(&d.to_bits().to_be_bytes(), 13),
    }
}

impl Engine {
    /// Correct the applied reward of `event_id` in `campaign`. Returns once the adjustment is
    /// durable.
    pub async fn adjust(
        &self,
        campaign: &str,
        event_id: &str,
        req: AdjustRequest,
    ) -> Result<AdjustResponse, EngineError> {
        let response = self.adjust_at(campaign, event_id, &req, now_ms())?;
        // A duplicate may race the original's flush; acknowledge it only once durable too.
        self.commit.wait().await?;
        Ok(response)
    }

    /// [`Engine::adjust`] at the clock `now` (ms), without waiting for durability.
    pub(crate) fn adjust_at(
        &self,
        campaign: &str,
        event_id: &str,
        req: &AdjustRequest,
        now: u64,
    ) -> Result<AdjustResponse, EngineError> {
        let target = check_adjust_request(req)?;
        let rt = self.campaign(campaign)?;
        if rt.config.kind != CampaignKind::Items {
            return Err(EngineError::invalid(
                "campaign",
                "adjustments (returns) are for items campaigns",
            ));
        }
        let response = self.with_live(rt, |rt| self.adjust_one(rt, event_id, req, target, now))?;
        let status = match response.status {
            AdjustStatus::Accepted => "accepted",
            AdjustStatus::Duplicate => "duplicate",
        };
        metrics::counter!("tailor_adjustments_total", "campaign" => campaign.to_string(), "status" => status)
            .increment(1);
        Ok(response)
    }

    /// One adjustment; the caller holds the campaign's join lock.
    fn adjust_one(
        &self,
        rt: &CampaignRuntime,
        event_id: &str,
        req: &AdjustRequest,
        target: Target,
        now: u64,
    ) -> Result<AdjustResponse, EngineError> {
        let campaign = rt.config.id.as_str();
        let event =
            self.store
                .event(campaign, event_id)?
                .ok_or_else(|| EngineError::EventNotFound {
                    id: event_id.to_string(),
                })?;
        // Explicit entries, or what the join state or its marker says each slot settled at.
        let settled = self.store.settled(campaign, event_id)?;
        let slot = match &req.action_id {
            None => 0,
            Some(a) => {
                let served = event.actions.iter().position(|x| &x.id == a);
                let rewarded = settled.iter().find(|(_, s)| &s.action == a);
                match (served, rewarded) {
                    (_, Some((slot, _))) => *slot,
                    (Some(slot), None) => slot as u32,
                    (None, None) if !event.is_pruned() => {
                        return Err(EngineError::invalid_owned(
                            "action_id",
                            format!("{a:?} was not served in event {event_id:?}"),
                        ))
                    }
                    (None, None) => {
                        return Err(EngineError::NoReward {
                            id: event_id.to_string(),
                            detail: format!(" for action {a:?}"),
                        })
                    }
                }
            }
        };
        let Some(current) = settled
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, s)| s.clone())
        else {
            let detail = if event.deferred {
                " (the decision was deferred and never activated)".to_string()
            } else if !event.closed && rt.config.reward_aggregation == RewardAggregation::Sum {
                " yet (summed rewards are applied when the reward window closes)".to_string()
            } else {
                " yet".to_string()
            };
            return Err(EngineError::NoReward {
                id: event_id.to_string(),
                detail,
            });
        };
        let key = adjust_key(req, target);
        if current.adjustments.contains(&key) {
            return Ok(AdjustResponse {
                event_id: event_id.to_string(),
                status: AdjustStatus::Duplicate,
                action_id: current.action,
                previous: current.value,
                value: current.value,
            });
        }
        if now > event.at_ms.saturating_add(rt.config.return_window_ms()) {
            return Err(EngineError::ReturnWindowClosed {
                id: event_id.to_string(),
            });
        }
        let value = match target {
            Target::Value(v) => rt.config.admit_reward("value", v)?,
            Target::Delta(d) => rt.config.admit_reward("delta", current.value + d)?,
        };
        if current.adjustments.len() >= MAX_ADJUSTMENTS_PER_SLOT {
            return Err(EngineError::invalid_owned(
                "adjustment_id",
                format!("a slot takes at most {MAX_ADJUSTMENTS_PER_SLOT} adjustments"),
            ));
        }
        let outcome_before: f64 = settled.iter().map(|(_, s)| s.value).sum();
        let action = self.served_action(&event, slot, &current.action)?;
        let record = AdjustmentRecord {
            seq: self.next_seq(),
            campaign: campaign.to_string(),
            entry: AdjustmentEntry {
                event_id: event_id.to_string(),
                decision_seq: event.decision_seq,
                at_ms: now,
                slot,
                action: current.action.clone(),
                previous: current.value,
                value,
                outcome_before,
                decision_at_ms: event.at_ms,
                holdout: event.holdout,
                policy: event.policy.clone(),
                key,
            },
            action,
        };
        let mut adjustments = current.adjustments;
        adjustments.push(key);
        let state = SettledSlot {
            action: current.action.clone(),
            value,
            adjustments,
        };
        self.store.commit_adjustment(&record, &state)?;
        self.learn_adjustment(rt, &record);
        Ok(AdjustResponse {
            event_id: event_id.to_string(),
            status: AdjustStatus::Accepted,
            action_id: current.action,
            previous: record.entry.previous,
            value,
        })
    }

    /// The served action of `slot` with its vector: from the decision's log entry, or the join
    /// state's kept vectors, or (the log was deleted) the id alone with an empty vector.
    fn served_action(
        &self,
        event: &EventRecord,
        slot: u32,
        id: &str,
    ) -> Result<LoggedAction, EngineError> {
        let s = slot as usize;
        let found = match self.store.decision(&event.campaign, event.decision_seq)? {
            Some(d) => d.actions.into_iter().nth(s),
            None => event.kept_action(s),
        };
        Ok(found
            .filter(|a| a.id == id)
            .unwrap_or_else(|| LoggedAction {
                id: id.to_string(),
                probability: 1.0,
                x: Default::default(),
            }))
    }

    /// Hand an adjustment to the campaign's learners (when it learns) and count it: the live
    /// path and recovery's replay alike.
    pub(super) fn learn_adjustment(&self, rt: &CampaignRuntime, a: &AdjustmentRecord) {
        let e = &a.entry;
        if rt.config.learns() {
            let arm = Arm {
                id: &a.action.id,
                x: &a.action.x,
            };
            for (_, p) in &mut rt.learner.write().policies {
                p.adjust(arm, e.previous, e.value);
            }
        }
        let mut books = rt.books.lock();
        if let Some(c) = books.counters.get_mut(&e.action) {
            c.reward_sum += e.value - e.previous;
        }
        books.reports.on_adjust(e);
        books.audiences.on_adjust(e);
        books.reward_seq = books.reward_seq.max(a.seq);
    }
}

/// The latest adjusted value of each (event, slot) among `campaign`'s adjustments with seq at
/// most `up_to`, and whether every one lies in [0, 1]: what the reports' folds lay over the
/// rewards.
pub(crate) fn adjusted_values(
    store: &dyn Store,
    campaign: &str,
    up_to: u64,
) -> Result<(AdjustedValues, bool), EngineError> {
    let mut out = AdjustedValues::default();
    let mut binary = true;
    for a in store.adjustments(campaign) {
        let a = a?;
        if a.seq > up_to {
            break;
        }
        binary &= (0.0..=1.0).contains(&a.entry.value);
        let slots = out.0.entry(a.entry.event_id).or_default();
        match slots.iter_mut().find(|(s, _)| *s == a.entry.slot) {
            Some(s) => s.1 = a.entry.value,
            None => slots.push((a.entry.slot, a.entry.value)),
        }
    }
    Ok((out, binary))
}

/// Event id → (slot, adjusted value).
#[derive(Debug, Default)]
pub(crate) struct AdjustedValues(HashMap<String, Vec<(u32, f64)>>);

impl AdjustedValues {
    /// The adjusted value of `slot` of `event_id`, if it was adjusted.
    pub(crate) fn get(&self, event_id: &str, slot: u32) -> Option<f64> {
        self.0
            .get(event_id)?
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{json, Value};
    use tailor_wire::{DecideRequest, RewardRequest};

    use super::*;
    use crate::campaign::CampaignConfig;
    use crate::engine::{reports, DecideInput};
    use crate::store::SledStore;

    fn close(a: &Value, b: &Value, path: &str) {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                    "{path}: {x} vs {y}"
                );
            }
            (Value::Array(x), Value::Array(y)) => {
                assert_eq!(x.len(), y.len(), "{path}");
                for (i, (x, y)) in x.iter().zip(y).enumerate() {
                    close(x, y, &format!("{path}[{i}]"));
                }
            }
            (Value::Object(x), Value::Object(y)) => {
                assert_eq!(x.len(), y.len(), "{path}");
                for (k, v) in x {
                    close(v, &y[k], &format!("{path}.{k}"));
                }
            }
            _ => assert_eq!(a, b, "{path}"),
        }
    }

    /// The incremental per-action and lift reports equal the fold over the logs.
    fn reports_match_the_fold(engine: &Engine, campaign: &str) -> Value {
        let range = engine.campaign(campaign).unwrap().config.reward_range;
        let store = engine.store().as_ref();
        let actions = serde_json::to_value(engine.actions_report(campaign).unwrap()).unwrap();
        let folded = reports::fold(
            store,
            campaign,
            range,
            None,
            reports::ActionsFold::default(),
        );
        close(
            &actions,
            &serde_json::to_value(folded.unwrap()).unwrap(),
            "actions",
        );
        let lift = serde_json::to_value(engine.lift_report(campaign, 3_600).unwrap()).unwrap();
        let folded = reports::fold(store, campaign, range, None, reports::LiftFold::new(3_600));
        close(
            &lift,
            &serde_json::to_value(folded.unwrap()).unwrap(),
            "lift",
        );
        actions
    }

    fn decide(engine: &Engine, campaign: &str, id: &str, k: usize) -> Vec<String> {
        let request = DecideRequest {
            candidates: ["a", "b", "c"]
                .iter()
                .map(|id| serde_json::from_value(json!({ "id": id })).unwrap())
                .collect(),
            event_id: Some(id.into()),
            k: Some(k),
            ..Default::default()
        };
        let d = engine
            .decide_items(campaign, DecideInput::from_request(&request).unwrap())
            .unwrap();
        d.actions.into_iter().map(|a| a.id).collect()
    }

    async fn reward(engine: &Engine, campaign: &str, id: &str, action: &str, value: f64) {
        let req = RewardRequest {
            value,
            action_id: Some(action.into()),
            reward_id: None,
            campaign: None,
        };
        engine.reward(campaign, id, req).await.unwrap();
    }

    fn adjust(value: Option<f64>, delta: Option<f64>, id: Option<&str>) -> AdjustRequest {
        AdjustRequest {
            value,
            delta,
            adjustment_id: id.map(str::to_string),
            ..Default::default()
        }
    }

    fn posterior(engine: &Engine, campaign: &str, action: &str) -> (f64, f64) {
        let rt = engine.campaign(campaign).unwrap();
        let learner = rt.learner.read();
        learner.policies[0].1.beta_posterior(action).unwrap()
    }

    /// Issue 22 item 4: a return corrects learning and reports once, repeats are duplicates,
    /// every refusal names its reason, and a restart (replay past the snapshot, or a snapshot
    /// holding the adjustment) applies it exactly once.
    #[tokio::test]
    async fn an_adjustment_applies_once_to_learning_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20, 100).unwrap());
        let mut engine = Engine::open(store.clone(), Default::default()).unwrap();
        for c in [
            json!({"id": "shop", "policy": {"type": "thompson"}}),
            json!({"id": "summed", "policy": {"type": "thompson"},
                   "reward_aggregation": "sum", "reward_range": [0.0, 5.0]}),
        ] {
            let c: CampaignConfig = serde_json::from_value(c).unwrap();
            engine.create_campaign(c).unwrap();
        }
        let served = decide(&engine, "shop", "e1", 2);
        let (first, second) = (served[0].clone(), served[1].clone());
        reward(&engine, "shop", "e1", &first, 1.0).await;
        reward(&engine, "shop", "e1", &second, 1.0).await;
        decide(&engine, "shop", "e2", 1);
        let learned = posterior(&engine, "shop", &first);
        reports_match_the_fold(&engine, "shop");

        // The return: 1 becomes 0, once.
        let r = engine
            .adjust("shop", "e1", adjust(Some(0.0), None, Some("ret-1")))
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.previous, r.value),
            (AdjustStatus::Accepted, 1.0, 0.0)
        );
        assert_eq!(r.action_id, first);
        let returned = posterior(&engine, "shop", &first);
        assert_eq!(returned, (learned.0 - 1.0, learned.1 + 1.0));
        let again = engine
            .adjust("shop", "e1", adjust(Some(0.0), None, Some("ret-1")))
            .await
            .unwrap();
        assert_eq!(again.status, AdjustStatus::Duplicate);
        assert_eq!(posterior(&engine, "shop", &first), returned);
        let actions = reports_match_the_fold(&engine, "shop");
        let row = |id: &str| {
            actions
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["id"] == id)
                .cloned()
                .unwrap()
        };
        assert_eq!(row(&first)["reward_sum"], 0.0, "{actions}");
        assert_eq!(row(&second)["reward_sum"], 1.0, "{actions}");

        // Refusals.
        let err = |e: EngineError| match e {
            EngineError::Invalid { field, .. } => format!("400 {field}"),
            EngineError::EventNotFound { .. } => "404".into(),
            EngineError::NoReward { .. } => "409".into(),
            EngineError::ReturnWindowClosed { .. } => "410".into(),
            other => format!("{other}"),
        };
        let now = now_ms();
        let cases = [
            ("nope", adjust(Some(0.0), None, None), now, "404"),
            ("e2", adjust(Some(0.0), None, None), now, "409"),
            ("e1", adjust(Some(2.0), None, Some("x")), now, "400 value"),
            ("e1", adjust(None, Some(-1.0), Some("y")), now, "400 delta"),
            ("e1", adjust(Some(1.0), Some(1.0), None), now, "400 delta"),
            ("e1", adjust(None, None, None), now, "400 value"),
            ("e1", adjust(Some(f64::NAN), None, None), now, "400 value"),
            (
                "e1",
                adjust(Some(1.0), None, Some("")),
                now,
                "400 adjustment_id",
            ),
            (
                "e1",
                adjust(Some(1.0), None, Some("late")),
                now + 31 * 86_400_000,
                "410",
            ),
        ];
        for (event, req, at, want) in cases {
            let got = engine.adjust_at("shop", event, &req, at).unwrap_err();
            assert_eq!(err(got), want, "{event} {req:?}");
        }
        // A repeat stays a duplicate after the window closed (a retry is answered, not refused).
        let late = engine.adjust_at(
            "shop",
            "e1",
            &adjust(Some(0.0), None, Some("ret-1")),
            now + 40 * 86_400_000,
        );
        assert_eq!(late.unwrap().status, AdjustStatus::Duplicate);

        // Summed rewards are adjustable once the window applied them.
        let s = decide(&engine, "summed", "s1", 1);
        reward(&engine, "summed", "s1", &s[0], 2.0).await;
        let early = engine.adjust_at("summed", "s1", &adjust(None, Some(-1.0), None), now);
        assert_eq!(err(early.unwrap_err()), "409");
        engine.sweep(u64::MAX).unwrap();
        let r = engine
            .adjust("summed", "s1", adjust(None, Some(-1.5), None))
            .await
            .unwrap();
        assert_eq!((r.previous, r.value), (2.0, 0.5));
        reports_match_the_fold(&engine, "summed");

        // A restart replays the adjustment past the snapshot once; a snapshot that holds it
        // is not corrected again.
        // (The sweep above also closed e2's window with its default reward.)
        let before = reports_match_the_fold(&engine, "shop");
        let returned = posterior(&engine, "shop", &first);
        drop(engine);
        engine = Engine::open(store.clone(), Default::default()).unwrap();
        assert_eq!(posterior(&engine, "shop", &first), returned);
        close(
            &reports_match_the_fold(&engine, "shop"),
            &before,
            "replayed",
        );
        engine.snapshot_all().unwrap();
        engine
            .adjust("shop", "e1", adjust(None, Some(1.0), Some("exchange")))
            .await
            .unwrap();
        engine.snapshot_all().unwrap();
        drop(engine);
        engine = Engine::open(store.clone(), Default::default()).unwrap();
        assert_eq!(
            posterior(&engine, "shop", &first),
            (returned.0 + 1.0, returned.1 - 1.0)
        );
        let actions = reports_match_the_fold(&engine, "shop");
        let total: f64 = (actions.as_array().unwrap().iter())
            .map(|a| a["reward_sum"].as_f64().unwrap())
            .sum();
        assert_eq!(total, 2.0, "{actions}");
        assert_eq!(store.adjustments("shop").count(), 2);
    }
}
