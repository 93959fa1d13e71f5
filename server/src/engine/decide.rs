//! The decide path: validate, featurize, choose, log.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;
use serde::Serialize;
use tailor_policies::{Arm, Choice, SparseVec};
use tailor_wire::{ChosenAction, DecideRequest, DecideResponse, SendTimeRequest, SendTimeResponse};

use super::{featurize, now_ms, CampaignRuntime, Engine};
use crate::campaign::{CampaignKind, CampaignStatus};
use crate::error::EngineError;
use crate::store::{DecisionRecord, EventRecord, LoggedAction, SlotState};

/// Largest number of candidates in one decision.
pub const MAX_CANDIDATES: usize = 10_000;
/// Longest accepted id (event, candidate, shopper).
const MAX_ID_LEN: usize = 256;

/// A parsed decide request and its raw body (kept for the decision log).
#[derive(Debug)]
pub struct DecideInput {
    pub request: DecideRequest,
    pub raw: Vec<u8>,
    /// The decision is not learned from until [`Engine::activate`] (Personalizer's
    /// `deferActivation`): its rewards are ignored and its window closes without learning.
    pub defer: bool,
    /// The decision fills this slot of a Personalizer multi-slot event: its engine event id is
    /// [`slot_event_id`](super::slot_event_id)`(event_id, slot)`, which no single-slot id can
    /// equal.
    pub slot: Option<String>,
}

/// What a decide call carries: an item request or a send-time request.
#[derive(Debug)]
pub enum DecideCall {
    Items(DecideInput),
    SendTime(SendTimeRequest),
}

impl From<DecideInput> for DecideCall {
    fn from(i: DecideInput) -> Self {
        Self::Items(i)
    }
}

impl From<SendTimeRequest> for DecideCall {
    fn from(r: SendTimeRequest) -> Self {
        Self::SendTime(r)
    }
}

/// The answer of a decide, shaped by the campaign's kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Decision {
    Items(DecideResponse),
    SendTime(SendTimeResponse),
}

impl Decision {
    pub fn into_items(self) -> Option<DecideResponse> {
        match self {
            Self::Items(r) => Some(r),
            Self::SendTime(_) => None,
        }
    }

    pub fn into_send_time(self) -> Option<SendTimeResponse> {
        match self {
            Self::SendTime(r) => Some(r),
            Self::Items(_) => None,
        }
    }
}

/// The policy name reported when a paused campaign serves the order candidates were sent in.
pub(super) const BASELINE: &str = "baseline";

pub(super) fn check_id(field: &str, id: &str) -> Result<(), EngineError> {
    if id_ok(id) {
        Ok(())
    } else {
        Err(bad_id(field))
    }
}

fn id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control)
}

fn bad_id(field: &str) -> EngineError {
    EngineError::invalid_owned(
        field,
        format!("must be 1-{MAX_ID_LEN} characters with no control characters"),
    )
}

/// The checks of an items decide request that need no campaign state: candidates (count, ids,
/// duplicates, attributes), `k`, `event_id` and `shopper_id`. Returns `k`.
pub(crate) fn check_items_request(req: &DecideRequest) -> Result<usize, EngineError> {
    if req.candidates.is_empty() {
        return Err(EngineError::invalid("candidates", "must not be empty"));
    }
    if req.candidates.len() > MAX_CANDIDATES {
        return Err(EngineError::invalid_owned(
            "candidates",
            format!("at most {MAX_CANDIDATES} candidates per decision"),
        ));
    }
    let k = req.k.unwrap_or(1);
    if k == 0 || k > req.candidates.len() {
        return Err(EngineError::invalid_owned(
            "k",
            format!(
                "must be between 1 and the number of candidates ({})",
                req.candidates.len()
            ),
        ));
    }
    if let Some(id) = &req.event_id {
        check_id("event_id", id)?;
    }
    if let Some(id) = &req.shopper_id {
        check_id("shopper_id", id)?;
    }
    let mut seen = HashSet::with_capacity(req.candidates.len());
    for (i, c) in req.candidates.iter().enumerate() {
        if !id_ok(&c.id) {
            return Err(bad_id(&format!("candidates[{i}].id")));
        }
        if !seen.insert(c.id.as_str()) {
            return Err(EngineError::invalid_owned(
                &format!("candidates[{i}].id"),
                format!("duplicate candidate id {:?}", c.id),
            ));
        }
        if !(c.attributes.is_null() || c.attributes.is_object()) {
            return Err(EngineError::invalid(
                &format!("candidates[{i}].attributes"),
                "must be a JSON object",
            ));
        }
    }
    Ok(k)
}

/// Reconstruct the join state of a decision from its log record (crash recovery).
pub(super) fn event_for(d: &DecisionRecord) -> EventRecord {
    EventRecord {
        event_id: d.event_id.clone(),
        campaign: d.campaign.clone(),
        decision_seq: d.seq,
        at_ms: d.at_ms,
        deadline_ms: d.deadline_ms,
        policy: d.policy.clone(),
        holdout: d.holdout,
        slots: vec![SlotState::default(); d.actions.len()],
        actions: d.actions.clone(),
        closed: false,
        candidate_set: 0,
    }
}

/// Order-independent hash of a request's candidate ids (unique within a request), never 0.
fn candidate_set(candidates: &[tailor_wire::Candidate]) -> u64 {
    let h = candidates.iter().fold(0u64, |acc, c| {
        acc.wrapping_add(xxhash_rust::xxh3::xxh3_64_with_seed(c.id.as_bytes(), 3))
    });
    h.max(1)
}

fn response_of(event: &EventRecord, replayed: bool) -> DecideResponse {
    DecideResponse {
        event_id: event.event_id.clone(),
        actions: event
            .actions
            .iter()
            .map(|a| ChosenAction {
                id: a.id.clone(),
                probability: a.probability,
            })
            .collect(),
        policy: event.policy.clone(),
        holdout: event.holdout,
        replayed,
        distribution: None,
    }
}

impl Engine {
    /// Decide for one request and log the decision: rank items, or choose a send slot,
    /// according to the campaign's kind.
    pub fn decide(
        &self,
        campaign: &str,
        input: impl Into<DecideCall>,
    ) -> Result<Decision, EngineError> {
        let rt = self.campaign(campaign)?;
        match (rt.config.kind, input.into()) {
            (CampaignKind::Items, DecideCall::Items(i)) => {
                self.decide_items(rt, i).map(Decision::Items)
            }
            (CampaignKind::SendTime, DecideCall::SendTime(r)) => {
                self.decide_send_time(rt, r).map(Decision::SendTime)
            }
            (CampaignKind::SendTime, DecideCall::Items(_)) => Err(EngineError::invalid_owned(
                "body",
                format!(
                    "campaign {campaign:?} is a send_time campaign: send shopper_id and timezone"
                ),
            )),
            (CampaignKind::Items, DecideCall::SendTime(_)) => Err(EngineError::invalid_owned(
                "body",
                format!("campaign {campaign:?} ranks items: send candidates"),
            )),
        }
    }

    /// Choose action(s) for one item request and log the decision.
    fn decide_items(
        &self,
        rt: Arc<CampaignRuntime>,
        input: DecideInput,
    ) -> Result<DecideResponse, EngineError> {
        let campaign = rt.config.id.as_str();
        let req = &input.request;

        // Validate everything before anything is written.
        let k = check_items_request(req)?;
        if let Some(slot) = &input.slot {
            if slot.is_empty() || slot.len() > MAX_ID_LEN {
                return Err(bad_id("slot"));
            }
        }
        let candidate_set = candidate_set(&req.candidates);
        let event_id = match (&req.event_id, &input.slot) {
            (Some(id), Some(slot)) => Some(super::slot_event_id(id, slot)),
            (Some(id), None) => Some(id.clone()),
            (None, _) => None,
        };
        // A retried request with a known event id gets the recorded decision back, before any
        // plugin or featurizing work is spent on it; the same id over other candidates is a
        // different decision, and says so rather than serving an action not offered.
        if let Some(id) = &event_id {
            if let Some(existing) = self.store.event(campaign, id)? {
                if existing.candidate_set != 0 && existing.candidate_set != candidate_set {
                    return Err(EngineError::EventIdConflict {
                        id: req.event_id.clone().unwrap_or_default(),
                    });
                }
                return Ok(response_of(&existing, true));
            }
        }

        // Plugins run before the policy samples: constraints fix the eligible set (so logged
        // propensities are over it), extractors add features (docs/plugins.md).
        let chain = rt.chain.read().clone();
        let stage = crate::plugins::run_stage(&chain, &rt.config.id, req)
            .map_err(|refusal| EngineError::Unavailable { message: refusal.0 })?;
        if stage.eligible.is_empty() {
            return Err(EngineError::invalid(
                "candidates",
                "every candidate was removed by the campaign's plugins",
            ));
        }
        let k = k.min(stage.eligible.len());
        let context =
            featurize::features("context", stage.context.as_ref().unwrap_or(&req.context))?;
        // Every candidate's features are checked; vectors are only built for all candidates when
        // the serving policy reads them, else only for the served actions (shadow learners).
        let mut action_features = Vec::with_capacity(req.candidates.len());
        for (i, c) in req.candidates.iter().enumerate() {
            let raw = stage.features.get(i).unwrap_or(&c.features);
            action_features.push(featurize::features_at(
                || format!("candidates[{i}].features"),
                raw,
            )?);
        }
        let serving_reads_x = rt.config.policy.uses_features();
        let vectors: Vec<SparseVec> = if serving_reads_x {
            req.candidates
                .iter()
                .zip(&action_features)
                .map(|(c, f)| rt.featurizer.vector(&context, &c.id, f))
                .collect()
        } else {
            Vec::new()
        };
        let empty = SparseVec::default();

        let event_id = event_id.unwrap_or_else(|| {
            let id = format!("{:032x}", rand::random::<u128>());
            match &input.slot {
                Some(slot) => super::slot_event_id(&id, slot),
                None => id,
            }
        });
        let seed = xxhash_rust::xxh3::xxh3_64_with_seed(event_id.as_bytes(), rt.salt);
        let explore = req.explore.unwrap_or(true);

        if let Some(why) = &stage.fallback {
            tracing::warn!(campaign, reason = %why, "plugin failed; serving the baseline order");
        }
        // Holdout shoppers always get the control order (baseline), and are marked as such.
        let holdout = super::holdout::in_holdout(&rt.config, req.shopper_id.as_deref());
        // `first`: each eligible candidate's probability of the first slot, when asked for.
        let (policy, choices, first) =
            if holdout || rt.config.status != CampaignStatus::Active || stage.fallback.is_some() {
                let choices = (0..k)
                    .map(|index| Choice {
                        index,
                        probability: 1.0,
                    })
                    .collect();
                let first = req.distribution.then(|| {
                    (0..stage.eligible.len())
                        .map(|i| if i == 0 { 1.0 } else { 0.0 })
                        .collect()
                });
                (BASELINE.to_string(), choices, first)
            } else {
                let arms: Vec<Arm<'_>> = stage
                    .eligible
                    .iter()
                    .map(|&i| Arm {
                        id: &req.candidates[i].id,
                        x: vectors.get(i).unwrap_or(&empty),
                    })
                    .collect();
                let mut rng = Pcg64Mcg::seed_from_u64(seed);
                let learner = rt.learner.read();
                let (name, policy) = learner.serving();
                let choices = policy
                    .choose_with_exploration(&arms, k, explore, rt.config.exploration, &mut rng)
                    .map_err(|e| EngineError::policy("policy", e))?;
                let first = if req.distribution {
                    Some(
                        policy
                            .first_slot_distribution(&arms, explore, rt.config.exploration)
                            .map_err(|e| EngineError::policy("policy", e))?,
                    )
                } else {
                    None
                };
                (name.to_string(), choices, first)
            };
        let distribution = first.map(|p| {
            stage
                .eligible
                .iter()
                .zip(p)
                .map(|(&i, probability)| ChosenAction {
                    id: req.candidates[i].id.clone(),
                    probability,
                })
                .collect()
        });

        let at_ms = now_ms();
        let any_reads_x = rt.config.all_policies().any(|p| p.uses_features());
        let actions: Vec<LoggedAction> = choices
            .iter()
            .map(|c| {
                let i = stage.eligible[c.index];
                let x = match vectors.get(i) {
                    Some(x) => x.clone(),
                    None if any_reads_x => {
                        rt.featurizer
                            .vector(&context, &req.candidates[i].id, &action_features[i])
                    }
                    None => SparseVec::default(),
                };
                LoggedAction {
                    id: req.candidates[i].id.clone(),
                    probability: c.probability,
                    x,
                }
            })
            .collect();
        let deadline_ms = at_ms + rt.config.reward_wait_ms();
        let facts = super::report_book::DecisionFacts {
            event_id: &event_id,
            at_ms,
            deadline_ms,
            holdout,
            policy: &policy,
        };
        let seq = self.count_decision(rt.clone(), &facts, &actions)?;
        let decision = DecisionRecord {
            seq,
            event_id,
            campaign: campaign.to_string(),
            at_ms,
            deadline_ms,
            policy,
            seed,
            holdout,
            explore,
            actions,
            candidates: stage.eligible.len() as u32,
            request: if self.settings.log_candidates {
                input.raw
            } else {
                Vec::new()
            },
            removed: stage.removed,
        };
        let event = EventRecord {
            candidate_set,
            ..event_for(&decision)
        };
        if input.defer {
            // Before the decision: a crash in between leaves only a harmless orphan mark.
            self.store.defer(campaign, &decision.event_id)?;
        }
        self.store.log_decision(&decision, &event)?;
        metrics::counter!("tailor_decisions_total", "campaign" => decision.campaign.clone())
            .increment(1);
        Ok(DecideResponse {
            distribution,
            ..response_of(&event, false)
        })
    }

    /// Take a decision sequence number and count the exposures, on the live runtime.
    pub(super) fn count_decision(
        &self,
        mut rt: Arc<CampaignRuntime>,
        facts: &super::report_book::DecisionFacts<'_>,
        actions: &[LoggedAction],
    ) -> Result<u64, EngineError> {
        loop {
            let mut books = rt.books.lock();
            if rt.retired.load(Ordering::Acquire) {
                drop(books);
                rt = self.campaign(&rt.config.id)?;
                continue;
            }
            let seq = self.store.next_seq()?;
            books.count_decision(seq, facts, actions.iter().map(|a| a.id.as_str()));
            return Ok(seq);
        }
    }
}
