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
        let mut settled = self.store.settled(campaign, event_id)?;
        if settled.is_empty() {
            // Rewards applied before settled slots were kept: the open join state knows them.
            settled = legacy_settled(&event);
        }
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
        books.reward_seq = books.reward_seq.max(a.seq);
    }
}

/// The applied rewards of an open join state, for rewards applied before settled slots existed.
fn legacy_settled(event: &EventRecord) -> Vec<(u32, SettledSlot)> {
    (event.slots.iter().zip(&event.actions).enumerate())
        .filter(|(_, (s, _))| s.applied)
        .map(|(i, (s, a))| {
            (
                i as u32,
                SettledSlot {
                    action: a.id.clone(),
                    value: s.value,
                    adjustments: Vec::new(),
                },
            )
        })
        .collect()
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
