//! Variety in slates, wall-clock forgetting and promotions on the engine's side (issue 22 items
//! 3 and 6; docs/variety.md). The settings are `campaign/variety.rs`; the math is in
//! `tailor_policies::policy` (`slate.rs`, `forgetting.rs`).
//!
//! * Decide: [`SlateInputs`] reads each eligible candidate's attribute value and the promotions
//!   running at the decision's time into [`SlateRules`]; the policy applies them inside its
//!   sequential draw, so every logged propensity is over the candidates still allowed.
//! * Learning: rewards are learned at their own logged time (`Learner::learn` passes it), so a
//!   replay rebuilds the same state. The clock of each policy (the time of its latest update) is
//!   kept in the snapshot under [`CLOCKS_ENTRY`], beside the encoded policies, whose layout is
//!   unchanged.
//! * Promotions: the background task calls [`Engine::promotion_tick`]; each boundary (a start or
//!   an end) that has passed is applied once: under the campaign's join lock the named items'
//!   posteriors move toward the prior, the boundary is marked in the learner, and a snapshot
//!   holding both is written before the lock is released; then the audit entry is appended.
//!   After a restart the marks come back with the snapshot, so nothing is applied twice; a crash
//!   before that snapshot loses the reset and its mark together, and the next tick applies it.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};
use tailor_policies::policy::SlateRules;
use tailor_wire::DecideRequest;

use super::{now_ms, snapshot_of, BooksPart, Engine, Learner};
use crate::audit::{AuditLog, Change};
use crate::campaign::{CampaignConfig, Promotion};
use crate::error::EngineError;

/// Snapshot entry holding each policy's wall-clock forgetting clock (`name → ms`).
pub(super) const CLOCKS_ENTRY: &str = "forgetting.clocks";
/// Snapshot entry holding the promotion boundaries already applied.
pub(super) const MARKS_ENTRY: &str = "promotions.applied";
/// The key an audit entry names as the one who applied a boundary.
const ENGINE_KEY: &str = "engine";

/// An attribute value as a group key: strings as they are, numbers and booleans as JSON text;
/// anything else has no value.
pub(crate) fn value_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Candidate `i`'s `attribute`: from its `attributes`, else its `features`.
fn attribute<'a>(request: &'a DecideRequest, i: usize, attribute: &str) -> Option<&'a Value> {
    let c = request.candidates.get(i)?;
    c.attributes
        .get(attribute)
        .or_else(|| c.features.get(attribute))
}

/// Whether deciding for this campaign reads candidate attributes (so the request's `Value`s
/// must be parsed).
pub(crate) fn reads_attributes(config: &CampaignConfig) -> bool {
    config.variety.is_some() || config.promotions.iter().any(|p| p.attribute.is_some())
}

/// The attributes [`attribute`] reads (from the features when the attributes lack them).
pub(crate) fn attribute_names(config: &CampaignConfig) -> Vec<&str> {
    let variety = config.variety.iter().map(|v| v.attribute.as_str());
    let promotions = config
        .promotions
        .iter()
        .filter_map(|p| p.attribute.as_deref());
    variety.chain(promotions).collect()
}

/// Whether a promotion covers candidate `i` with id `id`.
fn covers(p: &Promotion, request: Option<&DecideRequest>, i: usize, id: &str) -> bool {
    if p.whole_campaign() || p.items.iter().any(|x| x == id) {
        return true;
    }
    match (&p.attribute, &p.value, request) {
        (Some(a), Some(v), Some(r)) => {
            let key = attribute(r, i, a).and_then(value_key);
            key.is_some() && key == value_key(v)
        }
        _ => false,
    }
}

/// What one decision's slate is drawn under, owned (the policy borrows it as [`SlateRules`]).
#[derive(Debug, Default)]
pub(crate) struct SlateInputs {
    groups: Vec<Option<u32>>,
    promoted: Vec<bool>,
    max_per_value: usize,
    diversity: f64,
    promotion_exploration: f64,
    now_ms: Option<u64>,
}

impl SlateInputs {
    /// The rules for the eligible candidates (`eligible[j]` is the request index of arm `j`);
    /// `values` must be the request's `Value`s when [`reads_attributes`].
    pub(crate) fn build(
        config: &CampaignConfig,
        values: Option<&DecideRequest>,
        eligible: &[usize],
        id: impl Fn(usize) -> String,
    ) -> Self {
        let now = now_ms();
        let mut out = SlateInputs {
            now_ms: config.half_life.as_ref().map(|_| now),
            ..Default::default()
        };
        if let (Some(v), Some(request)) = (&config.variety, values) {
            let mut index: HashMap<String, u32> = HashMap::new();
            out.groups = eligible
                .iter()
                .map(|&i| {
                    let key = attribute(request, i, &v.attribute).and_then(value_key)?;
                    let next = index.len() as u32;
                    Some(*index.entry(key).or_insert(next))
                })
                .collect();
            out.max_per_value = v.max_per_value;
            out.diversity = v.diversity;
        }
        let running: Vec<&Promotion> = config
            .promotions
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                p.exploration > 0.0
                    && p.window(*i)
                        .is_ok_and(|w| w.starts_ms <= now && now < w.ends_ms)
            })
            .map(|(_, p)| p)
            .collect();
        if !running.is_empty() {
            out.promotion_exploration = running.iter().map(|p| p.exploration).fold(0.0, f64::max);
            out.promoted = eligible
                .iter()
                .map(|&i| {
                    let id = id(i);
                    running.iter().any(|p| covers(p, values, i, &id))
                })
                .collect();
        }
        out
    }

    /// Nothing to apply: the plain draw serves the same.
    pub(crate) fn is_plain(&self) -> bool {
        self.groups.is_empty() && self.promoted.is_empty() && self.now_ms.is_none()
    }

    pub(crate) fn rules(&self) -> SlateRules<'_> {
        SlateRules {
            groups: &self.groups,
            max_per_value: self.max_per_value,
            diversity: self.diversity,
            promoted: &self.promoted,
            promotion_exploration: self.promotion_exploration,
            now_ms: self.now_ms,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wall-clock forgetting: the learner's clocks around build, snapshot and restore.

/// Put the campaign's wall-clock half-life on every policy of a freshly built (or carried)
/// learner. A policy that learned on another clock starts ageing now.
pub(super) fn prepare(config: &CampaignConfig, learner: &mut Learner) {
    let half_life = config.half_life_ms();
    for (_, p) in &mut learner.policies {
        let was = p.time_half_life().is_some();
        // Validated with the config: the policy kinds accept a wall-clock half-life.
        if p.set_time_half_life(half_life).is_ok() && half_life.is_some() && !was {
            p.restamp(now_ms());
        }
    }
}

/// The snapshot entries beside the policies: their clocks and the applied boundaries.
pub(super) fn snapshot_entries(learner: &Learner) -> Vec<(String, Vec<u8>)> {
    let clocks: Vec<(String, u64)> = learner
        .policies
        .iter()
        .filter_map(|(n, p)| Some((n.clone(), p.time_clock()?)))
        .collect();
    let mut out = Vec::new();
    if !clocks.is_empty() {
        out.push((
            CLOCKS_ENTRY.to_string(),
            serde_json::to_vec(&clocks).expect("JSON encoding of clocks"),
        ));
    }
    if !learner.marks.is_empty() {
        out.push((
            MARKS_ENTRY.to_string(),
            serde_json::to_vec(&learner.marks).expect("JSON encoding of marks"),
        ));
    }
    out
}

/// After the policies were loaded from a snapshot: their wall-clock setting and clocks back,
/// and the applied boundaries.
pub(super) fn restore(
    config: &CampaignConfig,
    learner: &mut Learner,
    entries: &[(String, Vec<u8>)],
) {
    let find = |name: &str| entries.iter().find(|(n, _)| n == name).map(|(_, b)| b);
    let clocks: Vec<(String, u64)> = find(CLOCKS_ENTRY)
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
    let half_life = config.half_life_ms();
    for (name, p) in &mut learner.policies {
        if p.set_time_half_life(half_life).is_err() || half_life.is_none() {
            continue;
        }
        match clocks.iter().find(|(n, _)| n == name) {
            Some(&(_, clock)) => p.set_time_clock(clock),
            // Learned without a wall clock (or by an older version): starts ageing now.
            None => p.restamp(now_ms()),
        }
    }
    learner.marks = find(MARKS_ENTRY)
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
}

// ---------------------------------------------------------------------------------------------
// Promotion boundaries.

/// The mark of one boundary: the promotion's id, its window and which end.
fn mark(p: &Promotion, starts_ms: u64, ends_ms: u64, end: bool) -> String {
    format!(
        "{}@{starts_ms}-{ends_ms}:{}",
        p.id,
        if end { "end" } else { "start" }
    )
}

/// Whether a tick has anything to do for this campaign: a boundary passed and not applied, or a
/// mark of a promotion no longer configured.
fn due(config: &CampaignConfig, learner: &Learner, now: u64) -> bool {
    let mut current = 0;
    for (i, p) in config.promotions.iter().enumerate() {
        let Ok(w) = p.window(i) else { continue };
        for (end, at) in [(false, w.starts_ms), (true, w.ends_ms)] {
            let key = mark(p, w.starts_ms, w.ends_ms, end);
            if learner.marks.contains(&key) {
                current += 1;
            } else if now >= at {
                return true;
            }
        }
    }
    current != learner.marks.len()
}

/// The boundaries applied by one tick, to be audited ([`PromotionsApplied::audit`]).
#[must_use = "audit the boundaries applied"]
pub(crate) struct PromotionsApplied(Vec<Applied>);

/// A boundary applied by one tick, for the audit.
struct Applied {
    campaign: String,
    promotion: String,
    end: bool,
    at_ms: u64,
    reset: bool,
    keep: f64,
    items: Vec<String>,
    moved: Vec<(String, usize)>,
}

impl Engine {
    /// Apply every promotion boundary that has passed by `now` and was not applied yet, then
    /// audit each. Returns how many were applied.
    pub async fn promotion_tick(&self, now: u64) -> Result<usize, EngineError> {
        let applied = self.apply_promotions(now)?;
        let n = applied.0.len();
        applied.audit(self.store.clone()).await?;
        Ok(n)
    }

    /// Apply every promotion boundary that has passed by `now` and was not applied yet; the
    /// audit entries are left to the caller (cluster mode applies boundaries on stream time,
    /// inside the applier, and audits off it).
    pub(crate) fn apply_promotions(&self, now: u64) -> Result<PromotionsApplied, EngineError> {
        let mut applied = Vec::new();
        // Cluster mode calls this for every applied event: only campaigns with promotions are
        // looked at (none: no allocation), in id order.
        let mut with_promotions: Vec<_> = self
            .campaigns
            .read()
            .values()
            .filter(|rt| !rt.config.promotions.is_empty())
            .cloned()
            .collect();
        with_promotions.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        for rt in with_promotions {
            if !due(&rt.config, &rt.learner.read(), now) {
                continue;
            }
            let done = self.with_live(rt, |rt| {
                let books = rt.books.lock();
                let mut learner = rt.learner.write();
                let mut done = Vec::new();
                let mut current = BTreeSet::new();
                for (i, p) in rt.config.promotions.iter().enumerate() {
                    let Ok(w) = p.window(i) else { continue };
                    let (start, end) = (
                        mark(p, w.starts_ms, w.ends_ms, false),
                        mark(p, w.starts_ms, w.ends_ms, true),
                    );
                    current.insert(start.clone());
                    current.insert(end.clone());
                    for (key, at, is_end, resets) in [
                        (start, w.starts_ms, false, p.reset.at_start()),
                        (end, w.ends_ms, true, p.reset.at_end()),
                    ] {
                        if now < at || learner.marks.contains(&key) {
                            continue;
                        }
                        // A window that passed entirely unseen applies its end only.
                        let skipped = !is_end && now >= w.ends_ms;
                        let mut moved = Vec::new();
                        if resets && !skipped && rt.config.learns() {
                            let ids = (!p.items.is_empty()).then_some(p.items.as_slice());
                            for (name, policy) in &mut learner.policies {
                                moved.push((
                                    name.clone(),
                                    policy.forget_toward_prior(ids, p.reset_keep),
                                ));
                            }
                        }
                        learner.marks.insert(key);
                        if !skipped {
                            done.push(Applied {
                                campaign: rt.config.id.clone(),
                                promotion: p.id.clone(),
                                end: is_end,
                                at_ms: at,
                                reset: resets && rt.config.learns(),
                                keep: p.reset_keep,
                                items: p.items.clone(),
                                moved,
                            });
                        }
                    }
                }
                // Marks of promotions no longer configured are dropped.
                let before = learner.marks.len();
                learner.marks.retain(|m| current.contains(m));
                if !done.is_empty() || learner.marks.len() != before {
                    // The reset and its mark are durable together before anything else learns.
                    self.store.put_snapshot(
                        &rt.config.id,
                        &snapshot_of(BooksPart::of(&books), &learner, rt.send_time.as_ref()),
                    )?;
                }
                Ok(done)
            })?;
            applied.extend(done);
        }
        Ok(PromotionsApplied(applied))
    }
}

impl PromotionsApplied {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Append an audit entry per boundary (to `store`'s audit tree: in cluster mode each
    /// replica records the boundaries it applied).
    pub(crate) async fn audit(
        self,
        store: std::sync::Arc<dyn crate::store::Store>,
    ) -> Result<(), EngineError> {
        let audit = AuditLog::new(store);
        for a in &self.0 {
            tracing::info!(campaign = %a.campaign, promotion = %a.promotion, end = a.end, reset = a.reset, "promotion boundary applied");
            audit
                .append(
                    ENGINE_KEY,
                    Change {
                        action: if a.end {
                            "promotion.end".into()
                        } else {
                            "promotion.start".into()
                        },
                        campaign: Some(a.campaign.clone()),
                        target: Some(a.promotion.clone()),
                        before: Value::Null,
                        after: json!({
                            "boundary_at_ms": a.at_ms,
                            "reset": a.reset,
                            "reset_keep": a.keep,
                            "items": a.items,
                            "moved": a.moved.iter().map(|(n, k)| json!({"policy": n, "states": k})).collect::<Vec<_>>(),
                        }),
                    },
                )
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::{Rng, SeedableRng};
    use rand_pcg::Pcg64Mcg;
    use serde_json::json;
    use tailor_wire::{DecideRequest, RewardRequest};

    use crate::campaign::CampaignConfig;
    use crate::engine::{DecideInput, Engine};
    use crate::store::{SledStore, Store};

    /// The serving policy's encoded state and wall clock.
    fn state(engine: &Engine) -> (Vec<u8>, Option<u64>) {
        let rt = engine.campaign("timed").unwrap();
        let learner = rt.learner.read();
        let p = &learner.policies[0].1;
        (postcard::to_stdvec(p).unwrap(), p.time_clock())
    }

    async fn traffic(engine: &Engine, tag: &str, rng: &mut Pcg64Mcg) {
        for i in 0..60 {
            let request = DecideRequest {
                candidates: ["a", "b", "c", "d"]
                    .iter()
                    .map(|id| serde_json::from_value(json!({ "id": id })).unwrap())
                    .collect(),
                event_id: Some(format!("{tag}-{i}")),
                k: Some(2),
                ..Default::default()
            };
            let d = engine
                .decide_items("timed", DecideInput::from_request(&request).unwrap())
                .unwrap();
            for a in &d.actions {
                let value = f64::from(u8::from(rng.gen_bool(0.3)));
                engine
                    .reward(
                        "timed",
                        &d.event_id,
                        RewardRequest {
                            value,
                            action_id: Some(a.id.clone()),
                            reward_id: None,
                            campaign: None,
                        },
                    )
                    .await
                    .unwrap();
            }
        }
    }

    /// Issue 22 item 6: under a wall-clock half-life, a restart that replays the log (past the
    /// snapshot, or all of it) rebuilds exactly the learned state and clock the live engine had.
    #[tokio::test]
    async fn wall_clock_forgetting_replays_to_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20, 100).unwrap());
        let mut engine = Engine::open(store.clone(), Default::default()).unwrap();
        let config: CampaignConfig = serde_json::from_value(json!({
            "id": "timed", "policy": {"type": "thompson"}, "half_life": "1h"
        }))
        .unwrap();
        engine.create_campaign(config).unwrap();
        let mut rng = Pcg64Mcg::seed_from_u64(6);
        traffic(&engine, "one", &mut rng).await;
        let live = state(&engine);
        assert!(live.1.is_some_and(|c| c > 0));
        // No snapshot since creation: the whole log is replayed.
        engine = Engine::open(store.clone(), Default::default()).unwrap();
        assert_eq!(state(&engine), live);
        // A snapshot (holding the clock), more traffic, a restart replaying past it.
        engine.snapshot_all().unwrap();
        traffic(&engine, "two", &mut rng).await;
        let live = state(&engine);
        engine = Engine::open(store.clone(), Default::default()).unwrap();
        assert_eq!(state(&engine), live);
    }
}
