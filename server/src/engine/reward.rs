//! The reward path: join by event id, apply or hold per the campaign's aggregation, and close
//! reward windows (default rewards) exactly once.

use std::sync::Arc;

use tailor_wire::{RewardRequest, RewardResponse, RewardStatus};

use super::{now_ms, CampaignRuntime, Engine};
use crate::campaign::RewardAggregation;
use crate::error::EngineError;
use crate::store::{EventRecord, LoggedAction, RewardKind, RewardRecord, StoreError};

/// A reward's idempotency key in its slot's join state.
pub(crate) fn reward_key(req: &RewardRequest) -> u64 {
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

/// Separates a Personalizer multi-slot event id from a slot id in the engine event id of one
/// slot. A control character: no event id a client sends can hold one (`check_id`), so a slot's
/// engine event never collides with a single-slot event, whatever the ids.
pub const SLOT_SEPARATOR: char = '\u{1f}';

/// The engine event id of `slot` of the multi-slot event `event_id`.
pub fn slot_event_id(event_id: &str, slot: &str) -> String {
    format!("{event_id}{SLOT_SEPARATOR}{slot}")
}

impl Engine {
    /// The live campaigns (in id order) holding a decision with this event id. Bounded by the
    /// number of campaigns: one point lookup each.
    pub fn campaigns_with_event(&self, event_id: &str) -> Result<Vec<String>, EngineError> {
        let mut ids: Vec<String> = self
            .campaigns()
            .iter()
            .map(|rt| rt.config.id.clone())
            .collect();
        ids.sort();
        let mut found = Vec::new();
        for c in ids {
            if self.store.has_event(&c, event_id)? {
                found.push(c);
            }
        }
        Ok(found)
    }

    /// The engine event id of one slot of a Personalizer multi-slot event, if that slot was
    /// decided. Events decided before the store moved to schema 2 used `{eventId}/{slotId}`.
    pub fn slot_event(
        &self,
        campaign: &str,
        event_id: &str,
        slot: &str,
    ) -> Result<Option<String>, EngineError> {
        let id = slot_event_id(event_id, slot);
        if self.store.event(campaign, &id)?.is_some() {
            return Ok(Some(id));
        }
        let legacy = format!("{event_id}/{slot}");
        let cutoff = self.store.legacy_decision_seq();
        Ok(self
            .store
            .event(campaign, &legacy)?
            .filter(|e| e.decision_seq <= cutoff)
            .map(|_| legacy))
    }

    /// Join a reward to the decision `event_id` of `campaign`. Returns once the reward is
    /// durable.
    pub async fn reward(
        &self,
        campaign: &str,
        event_id: &str,
        req: RewardRequest,
    ) -> Result<RewardResponse, EngineError> {
        if let Some(cluster) = self.cluster() {
            return cluster.reward(self, campaign, event_id, req).await;
        }
        let status = self.join_one(campaign, event_id, &req, now_ms())?;
        // A duplicate may race the original's flush; acknowledge it only once durable too.
        self.commit.wait().await?;
        Ok(RewardResponse {
            event_id: event_id.to_string(),
            status,
        })
    }

    /// Join many rewards, each `(campaign, event id, reward)`, with one durability wait. Each
    /// item succeeds or fails on its own.
    pub async fn reward_batch(
        &self,
        items: Vec<(String, String, RewardRequest)>,
    ) -> Result<Vec<Result<RewardResponse, EngineError>>, EngineError> {
        if let Some(cluster) = self.cluster() {
            return Ok(cluster.reward_batch(self, items).await);
        }
        let mut learned: Vec<Arc<CampaignRuntime>> = Vec::new();
        let results: Vec<_> = items
            .into_iter()
            .map(|(campaign, event_id, req)| {
                let (status, rt) = self.join_unwarmed(&campaign, &event_id, &req, now_ms())?;
                if !learned.iter().any(|l| Arc::ptr_eq(l, &rt)) {
                    learned.push(rt);
                }
                Ok(RewardResponse { event_id, status })
            })
            .collect();
        // Each changed arm's posterior table is rebuilt once for the batch, not per reward.
        for rt in learned {
            rt.learner.write().warm();
        }
        self.commit.wait().await?;
        Ok(results)
    }

    /// Join one reward received at `now` (ms; in cluster mode the stream time of its message)
    /// under its campaign's join lock; nothing waits for durability.
    pub(crate) fn join_one(
        &self,
        campaign: &str,
        event_id: &str,
        req: &RewardRequest,
        now: u64,
    ) -> Result<RewardStatus, EngineError> {
        let (status, rt) = self.join_unwarmed(campaign, event_id, req, now)?;
        rt.learner.write().warm();
        Ok(status)
    }

    /// [`join_one`](Self::join_one) leaving the posterior tables the reward changed to the
    /// caller's [`Learner::warm`](super::runtime::Learner::warm); returns the campaign it
    /// joined in.
    fn join_unwarmed(
        &self,
        campaign: &str,
        event_id: &str,
        req: &RewardRequest,
        now: u64,
    ) -> Result<(RewardStatus, Arc<CampaignRuntime>), EngineError> {
        check_reward_request(req)?;
        let rt = self.campaign(campaign)?;
        let (status, rt) = self.with_live(rt, |rt| {
            Ok((self.join(rt, event_id, req, now)?, rt.clone()))
        })?;
        metrics::counter!("tailor_rewards_total", "campaign" => campaign.to_string(), "status" => status_label(status))
            .increment(1);
        Ok((status, rt))
    }

    /// Join one reward; the caller holds the campaign's join lock.
    fn join(
        &self,
        rt: &CampaignRuntime,
        event_id: &str,
        req: &RewardRequest,
        now: u64,
    ) -> Result<RewardStatus, EngineError> {
        let not_found = || EngineError::EventNotFound {
            id: event_id.to_string(),
        };
        let (mut event, logged) = self
            .store
            .event_with_actions(&rt.config.id, event_id)?
            .ok_or_else(not_found)?;
        // A deferred decision that was never activated is not learned from.
        if event.deferred {
            return Ok(RewardStatus::Ignored);
        }
        // Checked against the config the reward joins under, before anything is written.
        let value = rt.config.admit_reward("value", req.value)?;
        if event.is_pruned() {
            // Pruned at its deadline: only late rewards reach it.
            return Err(EngineError::RewardWindowClosed {
                id: event_id.to_string(),
            });
        }
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
            return Ok(RewardStatus::Duplicate);
        }
        if now > event.deadline_ms {
            return Err(EngineError::RewardWindowClosed {
                id: event_id.to_string(),
            });
        }
        if event.closed {
            return Ok(RewardStatus::Ignored);
        }
        let mut applied = Vec::new();
        match rt.config.reward_aggregation {
            RewardAggregation::Earliest => {
                if !state.reward_ids.is_empty() || state.applied {
                    return Ok(RewardStatus::Ignored);
                }
                state.reward_ids.push(key);
                state.value = value;
                state.applied = true;
                applied.push((slot, RewardKind::Explicit, value));
            }
            RewardAggregation::Sum => {
                state.reward_ids.push(key);
                // The total a slot learns stays in the range too: many in-range rewards
                // to one event must not add up to what one out-of-range reward could not.
                state.value = rt.config.reward_range.clamp(state.value + value);
            }
        }
        // Closed once every slot is applied; the window's entry stays until its deadline, when
        // the sweeper prunes the join state.
        event.closed = event.slots.iter().all(|s| s.applied);
        self.apply(rt, &event, &event, logged, &applied, now, false)?;
        Ok(RewardStatus::Accepted)
    }

    /// Log the rewards `applied` ((slot, kind, value)) of `event` with its new join state
    /// `state` in one batch, then hand them to the learners. `logged`: the decision's served
    /// actions when the caller already read them. The caller holds the campaign's join lock,
    /// so the campaign's rewards are numbered, logged and learned in one order.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        rt: &CampaignRuntime,
        event: &EventRecord,
        state: &EventRecord,
        logged: Option<Vec<LoggedAction>>,
        applied: &[(usize, RewardKind, f64)],
        at_ms: u64,
        close: bool,
    ) -> Result<(), EngineError> {
        let mut records = Vec::with_capacity(applied.len());
        if !applied.is_empty() {
            // The vectors are in the decision's log entry, or in the join state when the log was
            // deleted while the window was open.
            let logged = match logged {
                Some(actions) => actions,
                None => match self.store.decision(&event.campaign, event.decision_seq)? {
                    Some(d) => d.actions,
                    None => (0..event.actions.len())
                        .map_while(|slot| event.kept_action(slot))
                        .collect::<Vec<_>>(),
                },
            };
            if logged.is_empty() {
                // A crash kept the join state but not the decision's frame (it was answered
                // but not yet durable): nothing can be learned from it. Its rewards get what an
                // unknown event gets; its window closes with nothing learned.
                if !close {
                    return Err(EngineError::EventNotFound {
                        id: event.event_id.clone(),
                    });
                }
                tracing::warn!(campaign = %event.campaign, event = %event.event_id,
                    "closing the window of a decision lost in a crash; nothing learned");
                self.store.commit_rewards(state, &[], close)?;
                return Ok(());
            }
            for &(slot, kind, value) in applied {
                let action = logged
                    .get(slot)
                    .cloned()
                    .ok_or_else(|| StoreError::Corrupt {
                        what: "event",
                        message: format!(
                            "event {:?} of campaign {:?} names decision {} that is not in the log",
                            event.event_id, event.campaign, event.decision_seq
                        ),
                    })?;
                records.push(RewardRecord {
                    seq: self.next_seq(),
                    event_id: event.event_id.clone(),
                    campaign: event.campaign.clone(),
                    at_ms,
                    kind,
                    slot: slot as u32,
                    action,
                    value,
                    holdout: event.holdout,
                    policy: event.policy.clone(),
                });
            }
        }
        self.store.commit_rewards(state, &records, close)?;
        for r in &records {
            self.learn(rt, r)?;
        }
        Ok(())
    }

    /// Hand an applied reward to the campaign's learners (when it learns) and count it.
    pub(super) fn learn(&self, rt: &CampaignRuntime, r: &RewardRecord) -> Result<(), EngineError> {
        if rt.config.learns() {
            rt.learner.write().learn(r);
            self.learn_send_time(rt, r)?;
        }
        rt.books.lock().count_reward(r);
        Ok(())
    }

    /// Activate a deferred decision: from now on its rewards join and learn as usual. Returns
    /// once durable; false when the decision was not deferred (a no-op).
    pub async fn activate(&self, campaign: &str, event_id: &str) -> Result<bool, EngineError> {
        let was =
            self.activate_one(campaign, event_id)?
                .ok_or_else(|| EngineError::EventNotFound {
                    id: event_id.to_string(),
                })?;
        self.commit.wait().await?;
        Ok(was)
    }

    /// Clear the deferral of one event under its campaign's join lock: `None` when there is no
    /// such event, else whether it was deferred.
    pub(crate) fn activate_one(
        &self,
        campaign: &str,
        event_id: &str,
    ) -> Result<Option<bool>, EngineError> {
        self.with_live(self.campaign(campaign)?, |rt| {
            let Some(mut event) = self.store.event(&rt.config.id, event_id)? else {
                return Ok(None);
            };
            if !event.deferred {
                return Ok(Some(false));
            }
            event.deferred = false;
            self.store.put_event(&event)?;
            Ok(Some(true))
        })
    }

    /// Activate every deferred slot of the Personalizer multi-slot event `event_id` of
    /// `campaign`. Returns how many were activated, once durable.
    pub async fn activate_slots(
        &self,
        campaign: &str,
        event_id: &str,
    ) -> Result<usize, EngineError> {
        let mut ids = self
            .store
            .deferred_with_prefix(campaign, &slot_event_id(event_id, ""))?;
        // Slots decided before schema 2 were `{eventId}/{slotId}`: only those of that era, so a
        // newer single-slot event `{eventId}/x` is never taken for a slot.
        let cutoff = self.store.legacy_decision_seq();
        if cutoff > 0 {
            for id in self
                .store
                .deferred_with_prefix(campaign, &format!("{event_id}/"))?
            {
                if self
                    .store
                    .event(campaign, &id)?
                    .is_some_and(|e| e.decision_seq <= cutoff)
                {
                    ids.push(id);
                }
            }
        }
        let mut activated = 0;
        for id in &ids {
            if self.activate_one(campaign, id)? == Some(true) {
                activated += 1;
            }
        }
        self.commit.wait().await?;
        Ok(activated)
    }

    /// Close every reward window that ended by `now`: apply summed or default rewards, once,
    /// and prune the join state to its marker.
    pub fn sweep(&self, now: u64) -> Result<usize, EngineError> {
        let mut closed = 0;
        loop {
            let due = self.store.due_events(now, 512)?;
            if due.is_empty() {
                return Ok(closed);
            }
            for (campaign, event_id) in &due {
                if !self.close_window(campaign, event_id, now)? {
                    // Its campaign (and so its join state) is gone: without this the sweep
                    // would meet it forever.
                    self.store.drop_orphan_pending(campaign, event_id, now)?;
                }
                closed += 1;
            }
            let mut campaigns: Vec<&str> = due.iter().map(|(c, _)| c.as_str()).collect();
            campaigns.sort_unstable();
            campaigns.dedup();
            for c in campaigns {
                if let Ok(rt) = self.campaign(c) {
                    rt.learner.write().warm();
                }
            }
        }
    }

    fn close_window(&self, campaign: &str, event_id: &str, now: u64) -> Result<bool, EngineError> {
        let Ok(rt) = self.campaign(campaign) else {
            return Ok(false);
        };
        self.with_live(rt, |rt| {
            let Some((event, logged)) = self.store.event_with_actions(&rt.config.id, event_id)?
            else {
                return Ok(false);
            };
            let mut applied = Vec::new();
            // A deferred decision never activated closes with nothing learned.
            if !event.deferred {
                for (slot, s) in event.slots.iter().enumerate() {
                    if s.applied {
                        continue;
                    }
                    // Both through the current range: it may have changed since the rewards
                    // joined.
                    let range = rt.config.reward_range;
                    applied.push(if s.reward_ids.is_empty() {
                        (
                            slot,
                            RewardKind::Default,
                            range.clamp(rt.config.default_reward),
                        )
                    } else {
                        (slot, RewardKind::Sum, range.clamp(s.value))
                    });
                }
            }
            // A join state holding its vectors (the log was deleted while the window was
            // open) keeps them and its actions: its rewards join to them, not to a frame.
            let frame_gone = !event.vectors.is_empty();
            let pruned = EventRecord {
                actions: if frame_gone {
                    event.actions.clone()
                } else {
                    Vec::new()
                },
                slots: Vec::new(),
                vectors: if frame_gone {
                    event.vectors.clone()
                } else {
                    Vec::new()
                },
                closed: true,
                deferred: false,
                ..event.clone()
            };
            self.apply(rt, &event, &pruned, logged, &applied, now, true)?;
            Ok(true)
        })
    }
}

fn status_label(s: RewardStatus) -> &'static str {
    match s {
        RewardStatus::Accepted => "accepted",
        RewardStatus::Duplicate => "duplicate",
        RewardStatus::Ignored => "ignored",
    }
}
