//! The reward path: join by event id, apply or hold per the campaign's aggregation, and close
//! reward windows (default rewards) exactly once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tailor_sdk::wire::{RewardRequest, RewardResponse, RewardStatus};

use super::{now_ms, CampaignRuntime, Engine};
use crate::campaign::RewardAggregation;
use crate::error::EngineError;
use crate::store::{EventRecord, RewardKind, RewardRecord};

fn reward_key(req: &RewardRequest) -> u64 {
    match &req.reward_id {
        Some(id) => xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), 1),
        // Without an idempotency key, an identical value is taken as a repeat.
        None => xxhash_rust::xxh3::xxh3_64_with_seed(&req.value.to_bits().to_be_bytes(), 2),
    }
}

/// The checks of a reward request that need no stored state.
pub(crate) fn check_reward_request(req: &RewardRequest) -> Result<(), EngineError> {
    if !req.value.is_finite() {
        return Err(EngineError::invalid("value", "must be a finite number"));
    }
    if let Some(id) = &req.reward_id {
        if id.is_empty() || id.len() > 256 {
            return Err(EngineError::invalid(
                "reward_id",
                "must be 1-256 characters",
            ));
        }
    }
    Ok(())
}

/// Result of joining one reward, before durability.
enum Joined {
    Status(RewardStatus),
}

impl Engine {
    /// Join a reward to its decision. Returns once the reward is durable.
    pub async fn reward(
        &self,
        event_id: &str,
        req: RewardRequest,
    ) -> Result<RewardResponse, EngineError> {
        let status = self.join_one(event_id, &req)?;
        // A duplicate may race the original's flush; acknowledge it only once durable too.
        self.commit.wait().await?;
        Ok(RewardResponse {
            event_id: event_id.to_string(),
            status,
        })
    }

    /// Join many rewards with one durability wait. Each item succeeds or fails on its own.
    pub async fn reward_batch(
        &self,
        items: Vec<(String, RewardRequest)>,
    ) -> Result<Vec<Result<RewardResponse, EngineError>>, EngineError> {
        let results: Vec<_> = items
            .into_iter()
            .map(|(event_id, req)| {
                self.join_one(&event_id, &req)
                    .map(|status| RewardResponse { event_id, status })
            })
            .collect();
        self.commit.wait().await?;
        Ok(results)
    }

    fn join_one(&self, event_id: &str, req: &RewardRequest) -> Result<RewardStatus, EngineError> {
        check_reward_request(req)?;
        let Some(event) = self.store.event(event_id)? else {
            return Err(EngineError::EventNotFound {
                id: event_id.to_string(),
            });
        };
        let rt = self.campaign(&event.campaign)?;
        // A deferred decision that was never activated is not learned from.
        if self.store.is_deferred(event_id)? {
            metrics::counter!("tailor_rewards_total", "campaign" => event.campaign, "status" => "ignored")
                .increment(1);
            return Ok(RewardStatus::Ignored);
        }
        let Joined::Status(status) = self.join(rt, event_id, req)?;
        metrics::counter!("tailor_rewards_total", "campaign" => event.campaign, "status" => status_label(status))
            .increment(1);
        Ok(status)
    }

    fn join(
        &self,
        mut rt: Arc<CampaignRuntime>,
        event_id: &str,
        req: &RewardRequest,
    ) -> Result<Joined, EngineError> {
        loop {
            let mut books = rt.books.lock();
            if rt.retired.load(Ordering::Acquire) {
                drop(books);
                rt = self.campaign(&rt.config.id)?;
                continue;
            }
            // Re-read under the campaign's lock: rewards of one campaign join one at a time.
            let Some(mut event) = self.store.event(event_id)? else {
                return Err(EngineError::EventNotFound {
                    id: event_id.to_string(),
                });
            };
            let slot = match &req.action_id {
                None => 0,
                Some(a) => event
                    .actions
                    .iter()
                    .position(|x| &x.id == a)
                    .ok_or_else(|| {
                        EngineError::invalid_owned(
                            "action_id",
                            format!("{a:?} was not served in event {event_id:?}"),
                        )
                    })?,
            };
            let key = reward_key(req);
            let state = &mut event.slots[slot];
            if state.reward_ids.contains(&key) {
                return Ok(Joined::Status(RewardStatus::Duplicate));
            }
            let now = now_ms();
            if now > event.deadline_ms || event.closed {
                if now > event.deadline_ms {
                    return Err(EngineError::RewardWindowClosed {
                        id: event_id.to_string(),
                    });
                }
                return Ok(Joined::Status(RewardStatus::Ignored));
            }
            let mut records = Vec::new();
            match rt.config.reward_aggregation {
                RewardAggregation::Earliest => {
                    if !state.reward_ids.is_empty() || state.applied {
                        return Ok(Joined::Status(RewardStatus::Ignored));
                    }
                    state.reward_ids.push(key);
                    state.value = req.value;
                    state.applied = true;
                    records.push(self.record(
                        &event,
                        slot,
                        RewardKind::Explicit,
                        req.value,
                        now,
                    )?);
                }
                RewardAggregation::Sum => {
                    state.reward_ids.push(key);
                    state.value += req.value;
                }
            }
            let close = event.slots.iter().all(|s| s.applied);
            event.closed = close;
            self.store.commit_rewards(&event, &records, close)?;
            let mut learner = rt.learner.write();
            for r in &records {
                if rt.config.learns() {
                    learner.learn(r);
                    self.learn_send_time(&rt, r)?;
                }
                books.count_reward(r);
            }
            return Ok(Joined::Status(RewardStatus::Accepted));
        }
    }

    fn record(
        &self,
        event: &EventRecord,
        slot: usize,
        kind: RewardKind,
        value: f64,
        at_ms: u64,
    ) -> Result<RewardRecord, EngineError> {
        Ok(RewardRecord {
            seq: self.store.next_seq()?,
            event_id: event.event_id.clone(),
            campaign: event.campaign.clone(),
            at_ms,
            kind,
            slot: slot as u32,
            action: event.actions[slot].clone(),
            value,
            holdout: event.holdout,
            policy: event.policy.clone(),
        })
    }

    /// Activate a deferred decision: from now on its rewards join and learn as usual. Returns
    /// once durable; false when the decision was not deferred (a no-op).
    pub async fn activate(&self, event_id: &str) -> Result<bool, EngineError> {
        if self.store.event(event_id)?.is_none() {
            return Err(EngineError::EventNotFound {
                id: event_id.to_string(),
            });
        }
        let was = self.store.activate(event_id)?;
        self.commit.wait().await?;
        Ok(was)
    }

    /// Activate every deferred decision whose event id starts with `prefix` (the slots of a
    /// Personalizer multi-slot event). Returns how many were activated, once durable.
    pub async fn activate_prefix(
        &self,
        campaign: &str,
        prefix: &str,
    ) -> Result<usize, EngineError> {
        let mut n = 0;
        for id in self.store.deferred_with_prefix(prefix)? {
            if self
                .store
                .event(&id)?
                .is_some_and(|e| e.campaign == campaign)
            {
                self.store.activate(&id)?;
                n += 1;
            }
        }
        self.commit.wait().await?;
        Ok(n)
    }

    /// Close every reward window that ended by `now`: apply summed or default rewards, once.
    pub fn sweep(&self, now: u64) -> Result<usize, EngineError> {
        let mut closed = 0;
        loop {
            let due = self.store.due_events(now, 512)?;
            if due.is_empty() {
                return Ok(closed);
            }
            for event_id in &due {
                self.close_window(event_id)?;
                closed += 1;
            }
        }
    }

    fn close_window(&self, event_id: &str) -> Result<(), EngineError> {
        let Some(event) = self.store.event(event_id)? else {
            return Ok(());
        };
        let Ok(mut rt) = self.campaign(&event.campaign) else {
            // The campaign is gone: just drop the pending entry.
            let mut event = event;
            event.closed = true;
            self.store.commit_rewards(&event, &[], true)?;
            return Ok(());
        };
        loop {
            let mut books = rt.books.lock();
            if rt.retired.load(Ordering::Acquire) {
                drop(books);
                rt = self.campaign(&event.campaign)?;
                continue;
            }
            let Some(mut event) = self.store.event(event_id)? else {
                return Ok(());
            };
            if self.store.is_deferred(event_id)? {
                // Never activated: the window closes with nothing learned.
                event.closed = true;
                self.store.commit_rewards(&event, &[], true)?;
                self.store.activate(event_id)?;
                return Ok(());
            }
            let now = now_ms();
            let mut records = Vec::new();
            for slot in 0..event.slots.len() {
                if event.slots[slot].applied {
                    continue;
                }
                let (kind, value) = if event.slots[slot].reward_ids.is_empty() {
                    (RewardKind::Default, rt.config.default_reward)
                } else {
                    (RewardKind::Sum, event.slots[slot].value)
                };
                records.push(self.record(&event, slot, kind, value, now)?);
                let s = &mut event.slots[slot];
                s.applied = true;
                s.value = value;
            }
            event.closed = true;
            self.store.commit_rewards(&event, &records, true)?;
            let mut learner = rt.learner.write();
            for r in &records {
                if rt.config.learns() {
                    learner.learn(r);
                    self.learn_send_time(&rt, r)?;
                }
                books.count_reward(r);
            }
            return Ok(());
        }
    }
}

fn status_label(s: RewardStatus) -> &'static str {
    match s {
        RewardStatus::Accepted => "accepted",
        RewardStatus::Duplicate => "duplicate",
        RewardStatus::Ignored => "ignored",
    }
}
