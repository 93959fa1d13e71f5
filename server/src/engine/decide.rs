//! The decide path: validate, featurize, choose, log.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;
use std::cell::RefCell;

use tailor_policies::features::VectorScratch;
use tailor_policies::{Arm, Choice, SparseVec};
use tailor_wire::{ChosenAction, DecideRequest, DecideResponse, SendTimeRequest, SendTimeResponse};

use super::parse::ItemsRequest;
use super::{featurize, now_ms, CampaignRuntime, Engine};
use crate::campaign::{CampaignKind, CampaignStatus};
use crate::error::EngineError;
use crate::store::{
    Audience, DecisionRecord, EventRecord, LoggedAction, PinnedSlots, MAX_LOGGED_REQUEST,
};

/// What a preview asks of the items path ([`Engine::preview_items`]).
struct PreviewAsk {
    seed: Option<u64>,
}

/// Distinct audience values a campaign's reports tell apart; later values count as
/// [`OTHER_AUDIENCE`].
pub const MAX_AUDIENCES: usize = 20;
/// The audience of decisions past the first [`MAX_AUDIENCES`] values.
pub const OTHER_AUDIENCE: &str = "other";
/// The audience of decisions whose context lacks the field.
pub const NO_AUDIENCE: &str = "(none)";

/// The audience a context value names: strings as they are (at most 64 bytes, cut at a
/// character boundary), numbers and booleans as written; other values name none.
fn audience_value(v: &serde_json::Value) -> Option<String> {
    let mut s = match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    if s.len() > 64 {
        let mut cut = 64;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    Some(s)
}

/// Largest number of candidates in one decision.
pub const MAX_CANDIDATES: usize = 10_000;
/// Longest accepted id (event, candidate, shopper).
const MAX_ID_LEN: usize = 256;

/// A parsed decide request and its raw body (kept for the decision log, and parsed again into
/// `Value`s only for campaigns with plugins). `request` is the parse of `raw`: build both with
/// [`DecideInput::parse`] or [`DecideInput::from_request`].
#[derive(Debug)]
pub struct DecideInput {
    pub request: ItemsRequest,
    pub raw: Vec<u8>,
    /// The decision is not learned from until [`Engine::activate`] (Personalizer's
    /// `deferActivation`): its rewards are ignored and its window closes without learning.
    pub defer: bool,
    /// Keep the raw request in the log whatever the campaign's `log_requests` says (the
    /// Personalizer surface: its evaluations and apprentice metrics read it).
    pub log_request: bool,
    /// The decision fills this slot of a Personalizer multi-slot event: its engine event id is
    /// [`slot_event_id`](super::slot_event_id)`(event_id, slot)`, which no single-slot id can
    /// equal.
    pub slot: Option<String>,
}

impl DecideInput {
    /// Parses a decide body straight into hashed features ([`ItemsRequest::parse`]); the body
    /// is kept.
    pub fn parse(raw: Vec<u8>) -> Result<Self, super::parse::MalformedBody> {
        Ok(Self {
            request: ItemsRequest::parse(&raw)?,
            raw,
            defer: false,
            log_request: false,
            slot: None,
        })
    }

    /// A request built in process (the Personalizer API), as the body it stands for.
    pub fn from_request(request: &DecideRequest) -> Result<Self, EngineError> {
        Self::parse(serde_json::to_vec(request).expect("JSON encoding of a decide request"))
            .map_err(|e| EngineError::Invalid {
                field: e.field,
                message: e.message,
            })
    }
}

thread_local! {
    /// The featurizer's buffers, reused by every decide on this worker thread.
    static SCRATCH: RefCell<VectorScratch> = RefCell::new(VectorScratch::default());
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

/// What [`check_items_request`] found acceptable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Checked {
    /// Slots to fill.
    pub k: usize,
    /// Order-independent hash of the candidate ids, never 0.
    pub candidate_set: u64,
}

/// The checks of an items decide request that need no campaign state: candidates (count, ids,
/// duplicates, attributes), `k`, `event_id` and `shopper_id`. The first failing candidate check
/// in request order is the one reported, id before duplicate before attributes.
pub(crate) fn check_items_request(req: &ItemsRequest) -> Result<Checked, EngineError> {
    let n = req.len();
    if n == 0 {
        return Err(EngineError::invalid("candidates", "must not be empty"));
    }
    if n > MAX_CANDIDATES {
        return Err(EngineError::invalid_owned(
            "candidates",
            format!("at most {MAX_CANDIDATES} candidates per decision"),
        ));
    }
    let k = req.k.unwrap_or(1);
    if k == 0 || k > n {
        return Err(EngineError::invalid_owned(
            "k",
            format!("must be between 1 and the number of candidates ({n})"),
        ));
    }
    if let Some(id) = &req.event_id {
        check_id("event_id", id)?;
    }
    if let Some(id) = &req.shopper_id {
        check_id("shopper_id", id)?;
    }
    // One hash per id serves both the candidate-set hash and finding repeats (sorted, so no
    // hash set is built).
    let mut hashed: Vec<(u64, u32)> = req
        .ids()
        .enumerate()
        .map(|(i, id)| (id_hash(id), i as u32))
        .collect();
    let candidate_set = hashed
        .iter()
        .fold(0u64, |acc, &(h, _)| acc.wrapping_add(h))
        .max(1);
    hashed.sort_unstable();
    // The first index whose id appeared before it.
    let mut first_repeat = usize::MAX;
    let mut run = 0;
    while run < hashed.len() {
        let mut end = run + 1;
        while end < hashed.len() && hashed[end].0 == hashed[run].0 {
            end += 1;
        }
        // Each id of the run is compared with the distinct ids seen in it so far: one, unless
        // two ids share a 64-bit hash, so a request of one id repeated stays linear.
        if end - run == 1 {
            run = end;
            continue;
        }
        let mut distinct = vec![hashed[run].1 as usize];
        for &(_, later) in &hashed[run + 1..end] {
            let later = later as usize;
            if distinct.iter().any(|&d| req.id(d) == req.id(later)) {
                first_repeat = first_repeat.min(later);
            } else {
                distinct.push(later);
            }
        }
        run = end;
    }
    for i in 0..n {
        let id = req.id(i);
        if !id_ok(id) {
            return Err(bad_id(&format!("candidates[{i}].id")));
        }
        if i == first_repeat {
            return Err(EngineError::invalid_owned(
                &format!("candidates[{i}].id"),
                format!("duplicate candidate id {id:?}"),
            ));
        }
        if !req.candidates[i].attributes_ok {
            return Err(EngineError::invalid(
                &format!("candidates[{i}].attributes"),
                "must be a JSON object",
            ));
        }
    }
    Ok(Checked { k, candidate_set })
}

/// A candidate id's share of the candidate-set hash.
fn id_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), 3)
}

/// The join state of a freshly logged decision.
pub(super) fn event_for(d: &DecisionRecord) -> EventRecord {
    EventRecord::of_decision(d)
}

/// What the items path ([`Engine::choose_items`]) produced.
#[derive(Debug)]
pub(crate) enum Ranked {
    /// A retried event id: the recorded decision.
    Recorded(DecideResponse),
    /// A new decision, not yet logged (a decide logs it; cluster mode publishes it first).
    New {
        decision: DecisionRecord,
        defer: bool,
        /// The first slot's distribution, when the request asked for it.
        distribution: Option<Vec<ChosenAction>>,
    },
    /// A preview: nothing logged, learned or counted.
    Previewed(Box<super::preview::Preview>),
}

/// The answer to a new decision, before it is logged (cluster mode answers once it is in the
/// stream).
pub(crate) fn response_of_decision(
    d: &DecisionRecord,
    distribution: Option<Vec<ChosenAction>>,
) -> DecideResponse {
    DecideResponse {
        distribution,
        ..response_of(&event_for(d), false)
    }
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
    /// Rank items for one request of an `items` campaign and log the decision.
    pub fn decide_items(
        &self,
        campaign: &str,
        input: DecideInput,
    ) -> Result<DecideResponse, EngineError> {
        let rt = self.campaign(campaign)?;
        if rt.config.kind != CampaignKind::Items {
            return Err(EngineError::invalid_owned(
                "body",
                format!(
                    "campaign {campaign:?} is a send_time campaign: send shopper_id and timezone"
                ),
            ));
        }
        self.rank(rt, input)
    }

    /// Choose when to send for one request of a `send_time` campaign and log the decision.
    pub fn decide_send_time(
        &self,
        campaign: &str,
        request: SendTimeRequest,
    ) -> Result<SendTimeResponse, EngineError> {
        let rt = self.campaign(campaign)?;
        if rt.config.kind != CampaignKind::SendTime {
            return Err(EngineError::invalid_owned(
                "body",
                format!("campaign {campaign:?} ranks items: send candidates"),
            ));
        }
        self.schedule(rt, request)
    }

    /// Choose action(s) for one item request and log the decision.
    fn rank(
        &self,
        rt: Arc<CampaignRuntime>,
        input: DecideInput,
    ) -> Result<DecideResponse, EngineError> {
        match self.rank_or_preview(rt.clone(), input, None)? {
            Ranked::Recorded(response) => Ok(response),
            Ranked::New {
                decision,
                defer,
                distribution,
            } => {
                let event = self.log_decision(rt, decision, defer)?;
                Ok(DecideResponse {
                    distribution,
                    ..response_of(&event, false)
                })
            }
            Ranked::Previewed(_) => unreachable!("a decide is not a preview"),
        }
    }

    /// Choose action(s) for one item request without logging: the decision to log (by
    /// [`Engine::log_decision`], here or, in cluster mode, by every replica applying it from the
    /// stream), or the recorded answer to a retried event id.
    pub(crate) fn choose_items(
        &self,
        rt: Arc<CampaignRuntime>,
        input: DecideInput,
    ) -> Result<Ranked, EngineError> {
        self.rank_or_preview(rt, input, None)
    }

    /// The recorded decision of a retried event id, if this campaign holds it: the same
    /// candidates get it back (`replayed`), others are an [`EngineError::EventIdConflict`].
    pub(crate) fn replayed_decision(
        &self,
        campaign: &str,
        event_id: &str,
        candidate_set: u64,
    ) -> Result<Option<DecideResponse>, EngineError> {
        let Some(existing) = self.store.event(campaign, event_id)? else {
            return Ok(None);
        };
        if existing.candidate_set != 0 && existing.candidate_set != candidate_set {
            let id = event_id
                .split(super::SLOT_SEPARATOR)
                .next()
                .unwrap_or(event_id);
            return Err(EngineError::EventIdConflict { id: id.to_string() });
        }
        Ok(Some(response_of(&self.recorded(existing)?, true)))
    }

    /// Answer an items request as [`Engine::decide_items`] would, without logging, learning,
    /// counting or replaying anything: the preview of `POST .../preview`. `seed` replaces the
    /// decision seed (else it is derived from the body's `event_id` as a decide derives it, or
    /// drawn).
    pub fn preview_items(
        &self,
        campaign: &str,
        input: DecideInput,
        seed: Option<u64>,
    ) -> Result<super::preview::Preview, EngineError> {
        let rt = self.campaign(campaign)?;
        if rt.config.kind != CampaignKind::Items {
            return Err(EngineError::invalid_owned(
                "body",
                format!("campaign {campaign:?} is a send_time campaign: only items campaigns have a preview"),
            ));
        }
        match self.rank_or_preview(rt, input, Some(PreviewAsk { seed }))? {
            Ranked::Previewed(p) => Ok(*p),
            Ranked::Recorded(_) | Ranked::New { .. } => unreachable!("a preview logs nothing"),
        }
    }

    /// The one items path: a decide (`preview` None) or a preview of one.
    fn rank_or_preview(
        &self,
        rt: Arc<CampaignRuntime>,
        input: DecideInput,
        preview: Option<PreviewAsk>,
    ) -> Result<Ranked, EngineError> {
        let campaign = rt.config.id.as_str();
        let req = &input.request;

        // Validate everything before anything is written.
        let Checked { k, candidate_set } = check_items_request(req)?;
        if let Some(slot) = &input.slot {
            if slot.is_empty() || slot.len() > MAX_ID_LEN {
                return Err(bad_id("slot"));
            }
        }
        let event_id = match (&req.event_id, &input.slot) {
            (Some(id), Some(slot)) => Some(super::slot_event_id(id, slot)),
            (Some(id), None) => Some(id.clone()),
            (None, _) => None,
        };
        // A retried request with a known event id gets the recorded decision back, before any
        // plugin or featurizing work is spent on it; the same id over other candidates is a
        // different decision, and says so rather than serving an action not offered.
        if let (Some(id), None) = (&event_id, &preview) {
            if let Some(response) = self.replayed_decision(campaign, id, candidate_set)? {
                return Ok(Ranked::Recorded(response));
            }
        }

        // Plugins run before the policy samples: constraints fix the eligible set (so logged
        // propensities are over it), extractors add features (docs/plugins.md). They read
        // `Value`s, built from the body only for a campaign with plugins (and for a features
        // object that repeats a key, which a `Value` resolves to its last value).
        let chain = rt.chain.read().clone();
        // Merchandising rules open now; boosts read the candidates' attributes, as do variety
        // limits and promotions.
        let now = now_ms();
        let rules = super::merch::OpenRules::at(&rt.config.merchandising, now);
        // Boosts, variety limits, promotions and the audience field read a few parts as
        // `Value`s: those are read from where the parse found them, not from the whole body.
        let reads_attributes = super::promotions::reads_attributes(&rt.config);
        let values = if !chain.is_empty() || req.repeats_keys() {
            Some(ItemsRequest::values(&input.raw)?)
        } else if !rules.boosts.is_empty() || reads_attributes || rt.config.audience_field.is_some()
        {
            let wants = super::parse::Wants {
                context_field: rt.config.audience_field.as_deref(),
                attributes: !rules.boosts.is_empty() || reads_attributes,
                feature_keys: super::promotions::attribute_names(&rt.config),
            };
            Some(req.read_values(&input.raw, &wants)?)
        } else {
            None
        };
        let stage = match &values {
            Some(values) if !chain.is_empty() => {
                crate::plugins::run_stage(&chain, &rt.config.id, values)
                    .map_err(|refusal| EngineError::Unavailable { message: refusal.0 })?
            }
            _ => crate::plugins::PluginStage {
                eligible: (0..req.len()).collect(),
                ..Default::default()
            },
        };
        if stage.eligible.is_empty() {
            return Err(EngineError::invalid(
                "candidates",
                "every candidate was removed by the campaign's plugins",
            ));
        }
        let k = k.min(stage.eligible.len());
        // Features merged by extractors, or of an object that repeats a key, come from the
        // `Value` walk; the rest were hashed while parsing.
        let context_value = match (&stage.context, &values) {
            (Some(merged), _) => Some(merged),
            (None, Some(v)) if req.context_status.repeated_key => Some(&v.context),
            _ => None,
        };
        let context_walked = match context_value {
            Some(v) => Some(featurize::features("context", v)?.entries),
            None => {
                if let Some(e) = req.context_error() {
                    return Err(e);
                }
                None
            }
        };
        let context = context_walked.as_deref().unwrap_or(req.context());
        // Every candidate's features are checked; vectors are only built for all candidates when
        // the serving policy reads them, else only for the served actions (shadow learners).
        let mut walked: Vec<Option<Vec<(u64, u64, f64)>>> = Vec::new();
        for i in 0..req.len() {
            let value = match (stage.features.get(i), &values) {
                (Some(merged), _) => Some(merged),
                (None, Some(v)) if req.candidates[i].status.repeated_key => {
                    Some(&v.candidates[i].features)
                }
                _ => None,
            };
            match value {
                Some(v) => {
                    let f = featurize::features_at(|| format!("candidates[{i}].features"), v)?;
                    walked.resize(req.len(), None);
                    walked[i] = Some(f.entries);
                }
                None => {
                    if let Some(e) = req.features_error(i) {
                        return Err(e);
                    }
                }
            }
        }
        let action_features = |i: usize| -> &[(u64, u64, f64)] {
            match walked.get(i) {
                Some(Some(f)) => f,
                _ => req.features(i),
            }
        };
        let serving_reads_x = rt.config.policy.uses_features();
        let any_reads_x = rt.config.all_policies().any(|p| p.uses_features());
        let context_keys = if any_reads_x {
            rt.featurizer.context_keys(context)
        } else {
            Default::default()
        };
        let vector = |i: usize| {
            SCRATCH.with(|scratch| {
                rt.featurizer.vector_with(
                    &context_keys,
                    req.id(i),
                    action_features(i),
                    &mut scratch.borrow_mut(),
                )
            })
        };
        let vectors: Vec<SparseVec> = if serving_reads_x {
            (0..req.len()).map(vector).collect()
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
        let seed = match &preview {
            Some(PreviewAsk { seed: Some(seed) }) => *seed,
            _ => xxhash_rust::xxh3::xxh3_64_with_seed(event_id.as_bytes(), rt.salt),
        };
        let explore = req.explore.unwrap_or(true);

        if let Some(why) = &stage.fallback {
            tracing::warn!(campaign, reason = %why, "plugin failed; serving the baseline order");
        }
        // Holdout shoppers always get the control order (baseline), and are marked as such.
        let holdout = super::holdout::in_holdout(&rt.config, req.shopper_id.as_deref());
        // Pins take their slots; the policy (or the baseline order) fills the others from the
        // candidates not pinned, with the plugins' multipliers and open boosts as factors
        // (engine/merch.rs). Without rules or multipliers this is the plain policy choice.
        let plan = super::merch::plan(&rules, req, values.as_ref(), &stage, k, preview.is_some());
        let free = plan.free(stage.eligible.len());
        let slots = plan.policy_slots(k);
        // Variety limits, running promotions and the wall clock (docs/variety.md), over the
        // candidates the policy chooses among. With any of them the slate is drawn under
        // these rules, and factors (plugin multipliers; boosts are refused with them) are not
        // applied. Pinned slots do not count toward a variety limit.
        let free_requests: Vec<usize> = free.iter().map(|&pos| stage.eligible[pos]).collect();
        let slate = super::promotions::SlateInputs::build(
            &rt.config,
            values.as_ref(),
            &free_requests,
            |i| req.id(i).to_string(),
        );
        let slate_rules = slate.rules();
        let want_first = req.distribution || preview.is_some();
        // `first`: each free candidate's probability of the first slot, when asked for.
        let (policy, chosen, first) = if holdout
            || rt.config.status != CampaignStatus::Active
            || stage.fallback.is_some()
        {
            let order = plan.baseline_order(&free);
            let chosen: Vec<Choice> = if slate.is_plain() {
                order
                    .iter()
                    .take(slots)
                    .map(|&index| Choice {
                        index,
                        probability: 1.0,
                    })
                    .collect()
            } else {
                // The order sent, skipping what a variety limit excludes.
                tailor_policies::policy::ordered_slate(free.len(), slots, &slate_rules)
            };
            let first = want_first.then(|| {
                let mut p = vec![0.0; free.len()];
                if let Some(&top) = order.first() {
                    p[top] = 1.0;
                }
                p
            });
            (BASELINE.to_string(), chosen, first)
        } else {
            let arms: Vec<Arm<'_>> = free
                .iter()
                .map(|&pos| {
                    let i = stage.eligible[pos];
                    Arm {
                        id: req.id(i),
                        x: vectors.get(i).unwrap_or(&empty),
                    }
                })
                .collect();
            let factors = plan.factors_of(&free);
            let exploration = rt.config.exploration;
            let mut rng = Pcg64Mcg::seed_from_u64(seed);
            let learner = rt.learner.read();
            let (name, policy) = learner.serving();
            let chosen = match (&factors, arms.is_empty()) {
                (_, true) => Ok(Vec::new()),
                (_, false) if !slate.is_plain() => {
                    policy.choose_slate(&arms, slots, explore, exploration, &slate_rules, &mut rng)
                }
                (None, false) => {
                    policy.choose_with_exploration(&arms, slots, explore, exploration, &mut rng)
                }
                (Some(f), false) => {
                    policy.choose_boosted(&arms, slots, explore, exploration, f, &mut rng)
                }
            }
            .map_err(|e| EngineError::policy("policy", e))?;
            let first = if want_first && !arms.is_empty() {
                Some(
                    match &factors {
                        _ if !slate.is_plain() => policy.first_slot_distribution_with(
                            &arms,
                            explore,
                            exploration,
                            &slate_rules,
                        ),
                        None => policy.first_slot_distribution(&arms, explore, exploration),
                        Some(f) => {
                            policy.first_slot_distribution_boosted(&arms, explore, exploration, f)
                        }
                    }
                    .map_err(|e| EngineError::policy("policy", e))?,
                )
            } else {
                want_first.then(Vec::new)
            };
            (name.to_string(), chosen, first)
        };
        let (choices, pinned) = plan.assemble(k, &free, &chosen);
        // Over the eligible candidates: a pin in the top slot takes it for sure.
        let first: Option<Vec<f64>> = first.map(|p| {
            let mut d = vec![0.0; stage.eligible.len()];
            match plan.pins.iter().find(|(slot, _)| *slot == 0) {
                Some(&(_, pos)) => d[pos] = 1.0,
                None => {
                    for (j, &pos) in free.iter().enumerate() {
                        d[pos] = p[j];
                    }
                }
            }
            d
        });
        if let Some(PreviewAsk { .. }) = preview {
            return Ok(Ranked::Previewed(Box::new(super::preview::build(
                super::preview::Ranking {
                    rt: &rt,
                    req,
                    stage: &stage,
                    rules: &rules,
                    plan: &plan,
                    choices: &choices,
                    pinned: &pinned,
                    first: first.as_deref().unwrap_or_default(),
                    vectors: &vectors,
                    policy: &policy,
                    seed,
                    holdout,
                    explore,
                },
                self.plugins(),
            ))));
        }
        let distribution = first.filter(|_| req.distribution).map(|p| {
            stage
                .eligible
                .iter()
                .zip(p)
                .map(|(&i, probability)| ChosenAction {
                    id: req.id(i).to_string(),
                    probability,
                })
                .collect()
        });

        let at_ms = now_ms();
        let actions: Vec<LoggedAction> = choices
            .iter()
            .map(|c| {
                let i = stage.eligible[c.index];
                let x = match vectors.get(i) {
                    Some(x) => x.clone(),
                    None if any_reads_x => vector(i),
                    None => SparseVec::default(),
                };
                LoggedAction {
                    id: req.id(i).to_string(),
                    probability: c.probability,
                    x,
                }
            })
            .collect();
        let deadline_ms = at_ms + rt.config.reward_wait_ms();
        let request = if (rt.config.log_requests || input.log_request)
            && self.settings.log_candidates
            && input.raw.len() <= MAX_LOGGED_REQUEST
        {
            input.raw
        } else {
            Vec::new()
        };
        let decision = DecisionRecord {
            seq: 0,
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
            request,
            removed: stage.removed,
            candidate_set,
            pinned: PinnedSlots(pinned),
            audience: Audience(rt.config.audience_field.as_deref().map(|field| {
                values
                    .as_ref()
                    .and_then(|v| v.context.get(field))
                    .and_then(audience_value)
                    .unwrap_or_else(|| NO_AUDIENCE.to_string())
            })),
        };
        Ok(Ranked::New {
            decision,
            defer: input.defer,
            distribution,
        })
    }

    /// The join state of a logged event with its served actions: a pruned one (its window
    /// closed) gets them back from its log entry.
    pub(super) fn recorded(&self, event: EventRecord) -> Result<EventRecord, EngineError> {
        if !event.is_pruned() {
            return Ok(event);
        }
        let Some(d) = self.store.decision(&event.campaign, event.decision_seq)? else {
            return Ok(event);
        };
        Ok(EventRecord {
            event_id: event.event_id,
            campaign: event.campaign,
            ..event_for(&d)
        })
    }

    /// Number a decision, count its exposures on the live runtime and append it to the
    /// campaign's log (a memory copy) under the books lock, so a campaign's log is in sequence
    /// order; then write its join state and open window in one batch. The one place decisions
    /// are logged (items and send time). `decision.seq` is assigned here.
    pub(crate) fn log_decision(
        &self,
        mut rt: Arc<CampaignRuntime>,
        mut decision: DecisionRecord,
        deferred: bool,
    ) -> Result<EventRecord, EngineError> {
        loop {
            let mut books = rt.books.lock();
            if rt.retired.load(Ordering::Acquire) {
                drop(books);
                rt = self.campaign(&rt.config.id)?;
                continue;
            }
            decision.seq = self.next_seq();
            self.store.append_decision(&decision)?;
            books.count_decision(
                decision.seq,
                &super::report_book::DecisionFacts::of(&decision),
                decision.actions.iter().map(|a| a.id.as_str()),
            );
            break;
        }
        let event = EventRecord {
            deferred,
            ..event_for(&decision)
        };
        self.store.index_decision(&event)?;
        metrics::counter!("tailor_decisions_total", "campaign" => decision.campaign.clone())
            .increment(1);
        Ok(event)
    }
}
