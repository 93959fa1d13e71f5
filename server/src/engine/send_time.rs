//! Send-time campaigns: choose when to send a message to one shopper.
//!
//! A decision validates the request (shopper, IANA time zone, earliest instant), runs the
//! campaign's plugin chain over the slots as candidates (attributes `local_hour`,
//! `local_minute`, `weekday`, so `quiet-hours` removes slots), checks the frequency cap, samples
//! one slot by hierarchical Thompson sampling (`tailor_policies::send_time`), and logs the
//! decision like an item decision (decision log, event join state, pending window), with the
//! reward window starting at `send_at`. Rewards join through the ordinary reward path; learning
//! from them updates the population (global and segment, in memory, snapshotted with the
//! campaign) and the shopper's own counts (tree `shoppers`, each record carrying the last reward
//! sequence number it includes, so recovery replays exactly what is missing).
//!
//! Privacy: the decision log and the send events carry a random per-(shopper, campaign) token,
//! never the shopper id; `DELETE /admin/v1/shoppers/{id}` removes the shopper's states, their
//! tokens and the send events carrying them. Send-time decisions never log the raw request.
//!
//! Time zones: slot occurrences are computed in the shopper's zone with the bundled tz
//! database. A local time that does not exist that day (spring forward) is skipped to the next
//! day the slot exists; a local time that happens twice (fall back) is sent at its first
//! occurrence.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{civil, Timestamp};
use parking_lot::{Mutex, RwLock};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tailor_policies::send_time::grid::{PriorTable, SlotMax};
use tailor_policies::send_time::{self as st, Hierarchy, PopulationCounts, MAX_SLOTS};
use tailor_wire::{Candidate, DecideRequest, SendSlot, SendTimeRequest, SendTimeResponse};

use super::{now_ms, CampaignRuntime, Engine};
use crate::campaign::{CampaignConfig, CampaignStatus, SendTimeSettings, SlotSpec};
use crate::error::EngineError;
use crate::store::{
    DecisionRecord, LoggedAction, RewardRecord, SendEventRecord, ShopperRecord, StoreError,
};

/// The policy name of send-time decisions.
pub const POLICY: &str = "send_time";
/// Most distinct segments with their own counts; further segments use the global prior.
pub const MAX_SEGMENTS: usize = 256;
/// Name of the population entry in campaign snapshots.
pub(super) const SNAPSHOT_ENTRY: &str = "send_time.population";
const STRIPES: usize = 64;
const DAY_MS: f64 = 86_400_000.0;
/// A background task rebuilds the prior tables this often when the population has learned
/// since they were built (about 1–2 ms per table at 168 slots): decisions see the population's
/// learning within a second, and never build a table themselves.
pub const PRIOR_REFRESH_MS: u64 = 1_000;
/// Most prior tables (global plus segments) kept per campaign; about 410 KB each at 168 slots.
const MAX_PRIOR_TABLES: usize = 32;

/// The prior tables decisions draw from, all built from one population version. Replaced
/// whole by [`SendTimeRuntime::refresh_priors`]; a decision clones the `Arc` and reads it.
struct Priors {
    version: u64,
    global: Arc<PriorTable>,
    /// Segments with their own counts that decisions asked for, with the last time one did
    /// (ms; the least recently used goes first when more than [`MAX_PRIOR_TABLES`] are wanted).
    segments: HashMap<String, (Arc<PriorTable>, AtomicU64)>,
}

/// Learned population counts of a send-time campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Population {
    pub global: PopulationCounts,
    pub segments: BTreeMap<String, PopulationCounts>,
    /// Bumped by every update: prior tables built at an older version are refreshed.
    #[serde(skip)]
    pub version: u64,
}

impl Population {
    fn new(slots: usize) -> Self {
        Self {
            global: PopulationCounts::new(slots),
            segments: BTreeMap::new(),
            version: 0,
        }
    }

    fn learn(&mut self, h: &Hierarchy, segment: Option<&str>, slot: usize, value: f64, at: u64) {
        let slots = self.global.trials.len();
        self.version += 1;
        self.global.update(h, slot, value, at);
        if let Some(s) = segment {
            if !self.segments.contains_key(s) && self.segments.len() >= MAX_SEGMENTS {
                return;
            }
            self.segments
                .entry(s.to_string())
                .or_insert_with(|| PopulationCounts::new(slots))
                .update(h, slot, value, at);
        }
    }
}

/// The send-time part of a campaign runtime.
pub(crate) struct SendTimeRuntime {
    pub specs: Vec<SlotSpec>,
    pub settings: SendTimeSettings,
    pub hierarchy: Hierarchy,
    pub population: RwLock<Population>,
    /// The latest prior tables, see [`PRIOR_REFRESH_MS`].
    priors: RwLock<Arc<Priors>>,
    /// Segments with their own counts that have no table yet: the next refresh builds them.
    wanted: Mutex<BTreeSet<String>>,
    /// Serializes refreshes.
    refreshing: Mutex<()>,
    /// Serialize read-modify-write of one shopper's record (decide vs learn vs delete).
    stripes: Vec<Mutex<()>>,
    /// The slots as plugin candidates, built once.
    candidates: Vec<Candidate>,
}

impl SendTimeRuntime {
    pub(super) fn new(config: &CampaignConfig) -> Result<Option<Self>, EngineError> {
        let Some(grid) = &config.slots else {
            return Ok(None);
        };
        let specs = grid.specs()?;
        let settings = config.send_time_settings();
        let hierarchy = Hierarchy {
            prior_strength: settings.prior_strength,
            half_life_ms: (settings.half_life_days > 0.0)
                .then_some(settings.half_life_days * DAY_MS),
            max_shopper_slots: settings.max_shopper_slots,
        };
        let candidates = specs
            .iter()
            .map(|s| Candidate {
                id: s.id.clone(),
                features: Value::Null,
                attributes: serde_json::json!({
                    "local_hour": s.hour,
                    "local_minute": s.minute,
                    "weekday": s.weekday().map(SlotSpec::weekday_name),
                }),
            })
            .collect();
        let population = Population::new(specs.len());
        let priors = Priors::global_only(&hierarchy, &population);
        Ok(Some(Self {
            population: RwLock::new(population),
            priors: RwLock::new(Arc::new(priors)),
            wanted: Mutex::new(BTreeSet::new()),
            refreshing: Mutex::new(()),
            specs,
            settings,
            hierarchy,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            candidates,
        }))
    }

    fn stripe(&self, shopper: &str) -> &Mutex<()> {
        &self.stripes[(xxhash_rust::xxh3::xxh3_64(shopper.as_bytes()) % STRIPES as u64) as usize]
    }

    fn retention_ms(&self) -> u64 {
        (self.settings.retention_days * DAY_MS) as u64
    }

    /// Restore population counts from a snapshot entry, if they fit this grid, and build their
    /// prior tables (the global one and up to [`MAX_PRIOR_TABLES`]` - 1` segments').
    pub(super) fn restore(&self, bytes: &[u8]) {
        match postcard::from_bytes::<Population>(bytes) {
            Ok(p) if p.global.trials.len() == self.specs.len() => {
                {
                    let mut pop = self.population.write();
                    *pop = Population {
                        version: pop.version + 1,
                        ..p
                    };
                    self.wanted.lock().extend(pop.segments.keys().cloned());
                }
                self.refresh_priors(0);
            }
            Ok(_) => tracing::info!("slot grid changed since snapshot; population starts fresh"),
            Err(e) => tracing::warn!(error = %e, "send-time population unreadable; starting fresh"),
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(&*self.population.read()).expect("postcard encoding of a population")
    }

    /// Carry learned population counts over from a runtime with the same grid, and its prior
    /// tables if the prior strength is the same. Otherwise the global table is rebuilt now and
    /// the segments' by the next refresh.
    pub(super) fn carry_from(&self, old: &SendTimeRuntime) {
        if old.specs != self.specs {
            return;
        }
        let pop = old.population.read().clone();
        let old_priors = old.priors.read().clone();
        let priors = if old.hierarchy.prior_strength == self.hierarchy.prior_strength {
            old_priors
        } else {
            self.wanted
                .lock()
                .extend(old_priors.segments.keys().cloned());
            Arc::new(Priors::global_only(&self.hierarchy, &pop))
        };
        *self.population.write() = pop;
        *self.priors.write() = priors;
    }

    /// The slot with the best posterior mean, from the population as it is now.
    fn greedy(
        &self,
        segment: Option<&str>,
        shopper: Option<&st::ShopperCounts>,
        eligible: &[usize],
        now: u64,
    ) -> st::SlotChoice {
        let mut means = Vec::with_capacity(self.specs.len());
        {
            let pop = self.population.read();
            let seg = segment.and_then(|s| pop.segments.get(s));
            st::prior_means(&self.hierarchy, &pop.global, seg, &mut means);
        }
        let mut params = Vec::with_capacity(means.len());
        st::posteriors(&self.hierarchy, &means, shopper, now, &mut params);
        st::greedy(&params, eligible).expect("eligible is not empty")
    }

    /// The latest prior table of `segment`: the global one for a segment without its own
    /// counts, or whose table the next refresh is to build. Never builds a table.
    pub(crate) fn prior_table(&self, segment: Option<&str>, now: u64) -> Arc<PriorTable> {
        let priors = self.priors.read().clone();
        if let Some(s) = segment {
            if let Some((table, used)) = priors.segments.get(s) {
                used.fetch_max(now, Ordering::Relaxed);
                return table.clone();
            }
            if self.population.read().segments.contains_key(s) {
                self.wanted.lock().insert(s.to_string());
            }
        }
        priors.global.clone()
    }

    /// Rebuild the prior tables if the population has learned since they were built, or a
    /// segment wants one (called by the background task, and at restore); decisions keep using
    /// the previous tables meanwhile. Keeps the global table and those of the
    /// [`MAX_PRIOR_TABLES`]` - 1` segments asked for most recently.
    pub(crate) fn refresh_priors(&self, now: u64) {
        let _one_at_a_time = self.refreshing.lock();
        let current = self.priors.read().clone();
        let wanted = std::mem::take(&mut *self.wanted.lock());
        let pop = self.population.read();
        let mut asked: HashMap<String, u64> = current
            .segments
            .iter()
            .map(|(s, (_, used))| (s.clone(), used.load(Ordering::Relaxed)))
            .collect();
        for s in wanted {
            let used = asked.entry(s).or_default();
            *used = (*used).max(now);
        }
        let mut keep: Vec<(u64, String)> = asked
            .into_iter()
            .filter(|(s, _)| pop.segments.contains_key(s))
            .map(|(s, used)| (used, s))
            .collect();
        keep.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        keep.truncate(MAX_PRIOR_TABLES - 1);
        let unchanged = pop.version == current.version;
        if unchanged && keep.iter().all(|(_, s)| current.segments.contains_key(s)) {
            return;
        }
        let reuse = unchanged.then_some(&*current);
        // The means under the population lock, the tables (the costly part) after it.
        let means = |seg: Option<&PopulationCounts>| {
            let mut means = Vec::with_capacity(self.specs.len());
            st::prior_means(&self.hierarchy, &pop.global, seg, &mut means);
            means
        };
        let todo: Vec<(u64, String, Option<Vec<f64>>)> = keep
            .into_iter()
            .map(|(used, s)| {
                let fresh = reuse.is_some_and(|c| c.segments.contains_key(&s));
                let m = (!fresh).then(|| means(pop.segments.get(&s)));
                (used, s, m)
            })
            .collect();
        let version = pop.version;
        let global = (!unchanged).then(|| means(None));
        drop(pop);
        let h = &self.hierarchy;
        let global = global.map_or_else(
            || current.global.clone(),
            |m| Arc::new(PriorTable::new(h, &m)),
        );
        let segments = todo
            .into_iter()
            .map(|(used, s, m)| {
                let table = match m {
                    Some(m) => Arc::new(PriorTable::new(h, &m)),
                    None => current.segments[&s].0.clone(),
                };
                (s, (table, AtomicU64::new(used)))
            })
            .collect();
        *self.priors.write() = Arc::new(Priors {
            version,
            global,
            segments,
        });
    }
}

impl Priors {
    /// The global table of `pop`, with no segment tables.
    fn global_only(h: &Hierarchy, pop: &Population) -> Self {
        let mut means = Vec::new();
        st::prior_means(h, &pop.global, None, &mut means);
        Self {
            version: pop.version,
            global: Arc::new(PriorTable::new(h, &means)),
            segments: HashMap::new(),
        }
    }
}

/// The IANA zone named `name`, or a 400 naming `timezone`.
pub fn parse_timezone(name: &str) -> Result<TimeZone, EngineError> {
    if name.is_empty() || name.len() > 64 {
        return Err(EngineError::invalid(
            "timezone",
            "must be an IANA time zone name such as Europe/Paris",
        ));
    }
    TimeZone::get(name).map_err(|_| {
        EngineError::invalid_owned(
            "timezone",
            format!("unknown time zone {name:?}: use an IANA name such as America/New_York"),
        )
    })
}

/// The first instant at or after `not_before` when `spec` occurs in `tz`. A local time that
/// does not exist that day (DST gap) is skipped; one that occurs twice (DST fold) resolves to
/// the first occurrence.
pub fn next_occurrence(spec: &SlotSpec, tz: &TimeZone, not_before: Timestamp) -> Option<Timestamp> {
    let mut date = not_before.to_zoned(tz.clone()).date();
    // A week plus a skipped day covers every slot.
    for _ in 0..16 {
        let weekday = date.weekday().to_monday_zero_offset() as u8;
        if spec.days & (1 << weekday) != 0 {
            let dt = date.at(spec.hour as i8, spec.minute as i8, 0, 0);
            let at = match tz.to_ambiguous_timestamp(dt).offset() {
                AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
                AmbiguousOffset::Gap { .. } => None,
                AmbiguousOffset::Fold { before, .. } => before.to_timestamp(dt).ok(),
            };
            if let Some(at) = at.filter(|t| *t >= not_before) {
                return Some(at);
            }
        }
        date = date.tomorrow().ok()?;
    }
    None
}

fn rfc3339(ms: u64) -> String {
    Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn slot_of(spec: &SlotSpec, index: usize, at: Timestamp, tz: &TimeZone) -> SendSlot {
    let z = at.to_zoned(tz.clone());
    let weekday = z.weekday().to_monday_zero_offset() as u8;
    SendSlot {
        id: spec.id.clone(),
        index: index as u32,
        local_hour: z.hour() as u8,
        local_minute: z.minute() as u8,
        weekday: SlotSpec::weekday_name(weekday).to_string(),
        local_time: civil_rfc3339(&z),
    }
}

fn civil_rfc3339(z: &jiff::Zoned) -> String {
    let dt: civil::DateTime = z.datetime();
    let off = z.offset().seconds();
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.unsigned_abs();
    format!(
        "{}{sign}{:02}:{:02}",
        dt.strftime("%Y-%m-%dT%H:%M:%S"),
        off / 3600,
        (off % 3600) / 60
    )
}

fn segment_of(settings: &SendTimeSettings, context: &Value) -> Option<String> {
    match context.get(&settings.segment_attribute) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Some(s.clone()),
        _ => None,
    }
}

/// What [`Engine::plan_send`] decided (built once per decision and consumed at once, so the
/// size difference of its variants costs nothing).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum SendPlan {
    /// The recorded answer of a retried event id.
    Replayed(SendTimeResponse),
    /// A new decision: the answer, and what logging it writes.
    New {
        response: SendTimeResponse,
        shopper: String,
        send_event: SendEventRecord,
        decision: DecisionRecord,
    },
}

/// A fresh record's token; never 0.
fn new_token() -> u64 {
    rand::random::<u64>().max(1)
}

/// The checks of a send-time decide request that need no campaign state; returns its time zone
/// and `earliest`.
pub(crate) fn check_send_time_request(
    req: &SendTimeRequest,
) -> Result<(TimeZone, Option<Timestamp>), EngineError> {
    super::decide::check_id("shopper_id", &req.shopper_id)?;
    if let Some(id) = &req.event_id {
        super::decide::check_id("event_id", id)?;
    }
    let tz = parse_timezone(&req.timezone)?;
    if !(req.context.is_null() || req.context.is_object()) {
        return Err(EngineError::invalid("context", "must be a JSON object"));
    }
    let earliest = match &req.earliest {
        None => None,
        Some(s) => Some(s.parse::<Timestamp>().map_err(|_| {
            EngineError::invalid(
                "earliest",
                "must be an RFC 3339 instant with an offset, e.g. 2026-03-08T09:00:00Z",
            )
        })?),
    };
    Ok((tz, earliest))
}

/// Every [`PRIOR_REFRESH_MS`], rebuild the stale prior tables of every send-time campaign on a
/// blocking thread (the first time at once).
pub(super) fn spawn_prior_refresh(engine: Arc<Engine>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(PRIOR_REFRESH_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let e = engine.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || e.refresh_prior_tables()).await {
                tracing::error!(error = %e, "prior table refresh panicked");
            }
        }
    });
}

impl Engine {
    /// Rebuild the prior tables of every send-time campaign whose population has learned since
    /// they were built (the background task's work; see [`PRIOR_REFRESH_MS`]).
    pub fn refresh_prior_tables(&self) {
        let now = now_ms();
        for rt in self.campaigns() {
            if let Some(s) = &rt.send_time {
                s.refresh_priors(now);
            }
        }
    }

    /// The send-time decide path (called from [`Engine::decide`]).
    pub(super) fn schedule(
        &self,
        rt: Arc<CampaignRuntime>,
        req: SendTimeRequest,
    ) -> Result<SendTimeResponse, EngineError> {
        match self.plan_send(rt.clone(), req, true)? {
            SendPlan::Replayed(response) => Ok(response),
            SendPlan::New {
                response,
                send_event,
                decision,
                ..
            } => {
                // The send event first: a decision in the log always has it (recovery relies
                // on it).
                self.store
                    .put_send_event(&rt.config.id, &decision.event_id, &send_event)?;
                self.log_decision(rt, decision, false)?;
                Ok(response)
            }
        }
    }

    /// Choose when to send: the recorded answer of a retried event id, or a new decision with
    /// its send event. With `claim` (single-node) the shopper's frequency cap is claimed (their
    /// record written) under their lock, atomically with the choice; without (cluster mode)
    /// nothing is written: every replica claims it when it applies the decision
    /// ([`Engine::commit_send_time`]).
    pub(crate) fn plan_send(
        &self,
        rt: Arc<CampaignRuntime>,
        req: SendTimeRequest,
        claim: bool,
    ) -> Result<SendPlan, EngineError> {
        let sendt = rt
            .send_time
            .as_ref()
            .expect("send_time campaigns have a send-time runtime");
        let (tz, earliest) = check_send_time_request(&req)?;
        if let Some(id) = &req.event_id {
            if let Some(existing) = self.store.event(&rt.config.id, id)? {
                let existing = self.recorded(existing)?;
                let Some(ev) = self.store.send_event(&rt.config.id, id)? else {
                    return Err(EngineError::invalid(
                        "event_id",
                        "already used by a decision whose shopper data was deleted",
                    ));
                };
                let index = ev.slot as usize;
                let at = Timestamp::from_millisecond(ev.send_at_ms as i64)
                    .map_err(|e| EngineError::invalid_owned("event_id", e.to_string()))?;
                let tz = TimeZone::get(&ev.timezone).unwrap_or(TimeZone::UTC);
                return Ok(SendPlan::Replayed(SendTimeResponse {
                    event_id: existing.event_id.clone(),
                    slot: slot_of(&sendt.specs[index], index, at, &tz),
                    send_at: at.to_string(),
                    probability: existing.actions.first().map_or(1.0, |a| a.probability),
                    policy: existing.policy.clone(),
                    replayed: true,
                }));
            }
        }

        let now = now_ms();
        let lead_ms = (sendt.settings.min_lead_minutes * 60_000.0).round() as i64;
        let start_ms = earliest
            .map(|t| t.as_millisecond())
            .unwrap_or(0)
            .max(now as i64)
            .saturating_add(lead_ms);
        let not_before = Timestamp::from_millisecond(start_ms)
            .map_err(|_| EngineError::invalid("earliest", "is out of range"))?;
        let segment = segment_of(&sendt.settings, &req.context);

        // Plugins see the slots as candidates; constraints remove slots before sampling.
        let chain = rt.chain.read().clone();
        let (eligible, removed) = if chain.is_empty() {
            ((0..sendt.specs.len()).collect::<Vec<_>>(), Vec::new())
        } else {
            let request = DecideRequest {
                context: req.context.clone(),
                candidates: sendt.candidates.clone(),
                shopper_id: Some(req.shopper_id.clone()),
                ..DecideRequest::default()
            };
            let stage = crate::plugins::run_stage(&chain, &rt.config.id, &request)
                .map_err(|refusal| EngineError::Unavailable { message: refusal.0 })?;
            if let Some(why) = stage.fallback {
                // A send must never ignore a constraint (quiet hours): no baseline fallback.
                return Err(EngineError::Unavailable { message: why });
            }
            (stage.eligible, stage.removed)
        };
        if eligible.is_empty() {
            return Err(EngineError::invalid(
                "slots",
                "every slot was removed by the campaign's plugins",
            ));
        }

        let event_id = req
            .event_id
            .clone()
            .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
        let seed = xxhash_rust::xxh3::xxh3_64_with_seed(event_id.as_bytes(), rt.salt);
        let explore = req.explore.unwrap_or(true);

        // The latest prior table, read before the shopper's lock (never built here).
        let paused = rt.config.status == CampaignStatus::Paused;
        let table = (explore && !paused).then(|| sendt.prior_table(segment.as_deref(), now));

        // Choose and claim the frequency cap under the shopper's lock.
        let (index, probability, send_at, token, policy) = {
            let _guard = sendt.stripe(&req.shopper_id).lock();
            let mut record = self
                .store
                .shopper(&req.shopper_id, &rt.config.id)?
                .filter(|r| r.last_seen_ms.saturating_add(sendt.retention_ms()) >= now);
            let cap_ms = (sendt.settings.frequency_cap_hours * 3_600_000.0).round() as u64;
            if let Some(r) = &record {
                if cap_ms > 0 && r.last_send_ms > 0 {
                    let next = r.last_send_ms.saturating_add(cap_ms);
                    if (start_ms as u64) < next {
                        return Err(EngineError::FrequencyCapped {
                            next_allowed: rfc3339(next),
                        });
                    }
                }
            }
            let (index, probability, policy) = if paused {
                // Paused: the first eligible slot, deterministically, still logged.
                (eligible[0], 1.0, super::decide::BASELINE.to_string())
            } else {
                let mut rng = Pcg64Mcg::seed_from_u64(seed);
                let counts = record.as_ref().map(|r| &r.counts);
                let choice = if let Some(table) = &table {
                    choose(
                        &sendt.hierarchy,
                        table,
                        counts,
                        &eligible,
                        rt.config.exploration,
                        now,
                        &mut rng,
                    )
                } else {
                    // No propensity to compute: the live population, not the cached table.
                    sendt.greedy(segment.as_deref(), counts, &eligible, now)
                };
                (choice.slot, choice.probability, POLICY.to_string())
            };
            let spec = &sendt.specs[index];
            let send_at = next_occurrence(spec, &tz, not_before).ok_or_else(|| {
                EngineError::invalid("earliest", "no occurrence of the chosen slot follows it")
            })?;
            let send_at_ms = send_at.as_millisecond().max(0) as u64;
            let rec = record.get_or_insert_with(|| ShopperRecord {
                token: new_token(),
                last_send_ms: 0,
                last_seen_ms: now,
                last_reward_seq: 0,
                counts: Default::default(),
            });
            rec.last_send_ms = rec.last_send_ms.max(send_at_ms);
            rec.last_seen_ms = now;
            let token = rec.token;
            if claim {
                self.store
                    .put_shopper(&req.shopper_id, &rt.config.id, rec)?;
            }
            (index, probability, send_at, token, policy)
        };

        let spec = &sendt.specs[index];
        let send_at_ms = send_at.as_millisecond().max(0) as u64;
        let actions = vec![LoggedAction {
            id: spec.id.clone(),
            probability,
            x: Default::default(),
        }];
        // Opens and clicks can only follow the send: the attribution window starts there.
        let deadline_ms = send_at_ms.max(now) + rt.config.reward_wait_ms();
        let decision = DecisionRecord {
            seq: 0,
            event_id: event_id.clone(),
            campaign: rt.config.id.clone(),
            at_ms: now,
            deadline_ms,
            policy: policy.clone(),
            seed,
            holdout: false,
            explore,
            actions,
            candidates: eligible.len() as u32,
            // Never the raw body: it names the shopper.
            request: Vec::new(),
            removed,
            candidate_set: 0,
            pinned: Default::default(),
            audience: Default::default(),
        };
        let send_event = SendEventRecord {
            token,
            segment,
            slot: index as u16,
            send_at_ms,
            timezone: req.timezone.clone(),
        };
        Ok(SendPlan::New {
            response: SendTimeResponse {
                event_id,
                slot: slot_of(spec, index, send_at, &tz),
                send_at: send_at.to_string(),
                probability,
                policy,
                replayed: false,
            },
            shopper: req.shopper_id,
            send_event,
            decision,
        })
    }

    /// Cluster mode: apply a send-time decision from the stream — claim the shopper's frequency
    /// cap (their record, created with the decider's token when they have none), write the send
    /// event (with the token of the shopper's record) and log the decision. The same on every
    /// replica, in stream order.
    pub(crate) fn commit_send_time(
        &self,
        rt: Arc<CampaignRuntime>,
        shopper: &str,
        mut send_event: SendEventRecord,
        decision: DecisionRecord,
    ) -> Result<(), EngineError> {
        let Some(sendt) = rt.send_time.as_ref() else {
            return Err(EngineError::invalid(
                "campaign",
                "is not a send_time campaign",
            ));
        };
        let now = decision.at_ms;
        {
            let _guard = sendt.stripe(shopper).lock();
            let mut record = self
                .store
                .shopper(shopper, &rt.config.id)?
                .filter(|r| r.last_seen_ms.saturating_add(sendt.retention_ms()) >= now);
            let rec = record.get_or_insert_with(|| ShopperRecord {
                token: send_event.token,
                last_send_ms: 0,
                last_seen_ms: now,
                last_reward_seq: 0,
                counts: Default::default(),
            });
            rec.last_send_ms = rec.last_send_ms.max(send_event.send_at_ms);
            rec.last_seen_ms = rec.last_seen_ms.max(now);
            send_event.token = rec.token;
            self.store.put_shopper(shopper, &rt.config.id, rec)?;
        }
        self.store
            .put_send_event(&rt.config.id, &decision.event_id, &send_event)?;
        self.log_decision(rt, decision, false)?;
        Ok(())
    }

    /// Learn one applied reward of a send-time campaign: population counts, and the shopper's
    /// own counts unless their record already includes it (replay) or is gone (deleted).
    /// Called under the campaign's books lock.
    pub(super) fn learn_send_time(
        &self,
        rt: &CampaignRuntime,
        r: &RewardRecord,
    ) -> Result<(), StoreError> {
        let Some(sendt) = &rt.send_time else {
            return Ok(());
        };
        let Some(ev) = self.store.send_event(&r.campaign, &r.event_id)? else {
            return Ok(());
        };
        let slot = ev.slot as usize;
        if slot >= sendt.specs.len() {
            return Ok(());
        }
        sendt.population.write().learn(
            &sendt.hierarchy,
            ev.segment.as_deref(),
            slot,
            r.value,
            r.at_ms,
        );
        let Some((shopper, campaign)) = self.store.shopper_of_token(ev.token)? else {
            return Ok(());
        };
        let _guard = sendt.stripe(&shopper).lock();
        if let Some(mut rec) = self.store.shopper(&shopper, &campaign)? {
            if rec.token == ev.token && rec.last_reward_seq < r.seq {
                rec.counts.update(&sendt.hierarchy, slot, r.value, r.at_ms);
                rec.last_reward_seq = r.seq;
                rec.last_seen_ms = rec.last_seen_ms.max(r.at_ms);
                self.store.put_shopper(&shopper, &campaign, &rec)?;
            }
        }
        Ok(())
    }

    /// Drop shopper states past their campaign's retention, or of campaigns that are gone.
    pub fn purge_shoppers(&self, now: u64) -> Result<usize, EngineError> {
        let mut stale = Vec::new();
        for item in self.store.all_shopper_states() {
            let (shopper, campaign, rec) = item?;
            let keep = self.campaign(&campaign).ok().is_some_and(|rt| {
                rt.send_time
                    .as_ref()
                    .is_some_and(|s| rec.last_seen_ms.saturating_add(s.retention_ms()) >= now)
            });
            if !keep {
                stale.push((shopper, campaign));
            }
        }
        for (shopper, campaign) in &stale {
            self.store.remove_shopper_state(shopper, campaign)?;
        }
        Ok(stale.len())
    }

    /// What is stored about a shopper, per campaign; `ShopperNotFound` when nothing is.
    pub fn shopper(&self, shopper: &str) -> Result<Value, EngineError> {
        super::decide::check_id("shopper_id", shopper)?;
        let states = self.store.shopper_states(shopper)?;
        if states.is_empty() {
            return Err(EngineError::ShopperNotFound {
                id: shopper.to_string(),
            });
        }
        let now = now_ms();
        let campaigns: Vec<Value> = states
            .iter()
            .map(|(campaign, rec)| {
                let h = self
                    .campaign(campaign)
                    .ok()
                    .and_then(|rt| rt.send_time.as_ref().map(|s| s.hierarchy))
                    .unwrap_or(Hierarchy {
                        prior_strength: 1.0,
                        half_life_ms: None,
                        max_shopper_slots: MAX_SLOTS,
                    });
                serde_json::json!({
                    "campaign": campaign,
                    "last_send_at": rfc3339(rec.last_send_ms),
                    "last_seen_at": rfc3339(rec.last_seen_ms),
                    "slots_learned": rec.counts.slots.len(),
                    "trials": rec.counts.trials(&h, now),
                    "state_bytes": postcard::to_stdvec(rec).map(|b| b.len()).unwrap_or(0),
                })
            })
            .collect();
        Ok(serde_json::json!({ "shopper_id": shopper, "campaigns": campaigns }))
    }

    /// Remove everything stored about a shopper in every campaign. Idempotent: returns the
    /// number of campaign states removed (0 on a repeat).
    pub fn delete_shopper(&self, shopper: &str) -> Result<usize, EngineError> {
        super::decide::check_id("shopper_id", shopper)?;
        let runtimes = self.campaigns();
        // Hold the shopper's lock in every send-time campaign so no decide or reward writes the
        // record back while it goes.
        let guards: Vec<_> = runtimes
            .iter()
            .filter_map(|rt| rt.send_time.as_ref().map(|s| s.stripe(shopper).lock()))
            .collect();
        let n = self.store.delete_shopper(shopper)?;
        drop(guards);
        Ok(n)
    }
}

/// Reports of a send-time campaign.
impl Engine {
    fn send_time_runtime(&self, campaign: &str) -> Result<Arc<CampaignRuntime>, EngineError> {
        let rt = self.campaign(campaign)?;
        if rt.send_time.is_none() {
            return Err(EngineError::invalid_owned(
                "campaign",
                format!("campaign {campaign:?} is not a send_time campaign"),
            ));
        }
        Ok(rt)
    }

    /// The `top` slots by learned rate for the whole population and for each segment (the
    /// segment's rates shrunk toward the population's with the campaign's prior strength).
    pub fn report_best_slots(&self, campaign: &str, top: usize) -> Result<Value, EngineError> {
        let rt = self.send_time_runtime(campaign)?;
        let sendt = rt.send_time.as_ref().expect("checked");
        let pop = sendt.population.read();
        let h = &sendt.hierarchy;
        let rank = |seg: Option<&PopulationCounts>| -> Vec<Value> {
            let mut means = Vec::new();
            st::prior_means(h, &pop.global, seg, &mut means);
            let counts = seg.unwrap_or(&pop.global);
            let mut order: Vec<usize> = (0..means.len()).collect();
            order.sort_by(|&a, &b| means[b].total_cmp(&means[a]).then(a.cmp(&b)));
            order
                .into_iter()
                .take(top)
                .map(|j| {
                    serde_json::json!({
                        "slot": sendt.specs[j].id,
                        "index": j,
                        "rate": means[j],
                        "trials": counts.trials[j],
                        "successes": counts.successes[j],
                    })
                })
                .collect()
        };
        let mut segments = vec![serde_json::json!({
            "segment": Value::Null,
            "trials": pop.global.trials.iter().sum::<f64>(),
            "best": rank(None),
        })];
        for (name, counts) in &pop.segments {
            segments.push(serde_json::json!({
                "segment": name,
                "trials": counts.trials.iter().sum::<f64>(),
                "best": rank(Some(counts)),
            }));
        }
        Ok(serde_json::json!({ "campaign": campaign, "segments": segments }))
    }

    /// How concentrated shoppers' learned preferences are: for each shopper with at least
    /// `min_trials` (decayed) trials, the normalized entropy of their per-slot posterior means
    /// (1 = no preference, lower = concentrated), and whether their best slot differs from the
    /// population's.
    pub fn report_concentration(
        &self,
        campaign: &str,
        min_trials: f64,
    ) -> Result<Value, EngineError> {
        let rt = self.send_time_runtime(campaign)?;
        let sendt = rt.send_time.as_ref().expect("checked");
        let h = sendt.hierarchy;
        let now = now_ms();
        let mut prior = Vec::new();
        st::prior_means(&h, &sendt.population.read().global, None, &mut prior);
        let argmax = |v: &[f64]| {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                .map_or(0, |(j, _)| j)
        };
        let population_best = argmax(&prior);
        let n = prior.len() as f64;
        let (mut shoppers, mut entropy_sum, mut differ, mut total) = (0u64, 0.0, 0u64, 0u64);
        let mut params = Vec::new();
        let mut best_counts = vec![0u64; prior.len()];
        for item in self.store.all_shopper_states() {
            let (_, c, rec) = item?;
            if c != campaign {
                continue;
            }
            total += 1;
            if rec.counts.trials(&h, now) < min_trials {
                continue;
            }
            st::posteriors(&h, &prior, Some(&rec.counts), now, &mut params);
            let means: Vec<f64> = params.iter().map(|(a, b)| a / (a + b)).collect();
            let sum: f64 = means.iter().sum();
            let entropy: f64 = means
                .iter()
                .map(|m| m / sum)
                .filter(|p| *p > 0.0)
                .map(|p| -p * p.ln())
                .sum();
            entropy_sum += if n > 1.0 { entropy / n.ln() } else { 0.0 };
            let best = argmax(&means);
            best_counts[best] += 1;
            if best != population_best {
                differ += 1;
            }
            shoppers += 1;
        }
        let share = |k: u64| {
            if shoppers > 0 {
                k as f64 / shoppers as f64
            } else {
                0.0
            }
        };
        let mut top: Vec<(usize, u64)> = best_counts
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, k)| *k > 0)
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(serde_json::json!({
            "campaign": campaign,
            "shoppers_with_state": total,
            "shoppers_reported": shoppers,
            "min_trials": min_trials,
            "mean_normalized_entropy": if shoppers > 0 { entropy_sum / shoppers as f64 } else { 1.0 },
            "population_best_slot": sendt.specs[population_best].id,
            "share_best_differs_from_population": share(differ),
            "best_slot_shares": top.into_iter().take(10).map(|(j, k)| serde_json::json!({
                "slot": sendt.specs[j].id, "share": share(k)
            })).collect::<Vec<_>>(),
        }))
    }

    /// Per slot: decisions served, rewards applied, their mean (the reward rate), and the
    /// learned (decayed) population counts.
    pub fn report_slot_rates(&self, campaign: &str) -> Result<Value, EngineError> {
        let rt = self.send_time_runtime(campaign)?;
        let sendt = rt.send_time.as_ref().expect("checked");
        let books = rt.books.lock().counters.clone();
        let pop = sendt.population.read();
        let slots: Vec<Value> = sendt
            .specs
            .iter()
            .enumerate()
            .map(|(j, spec)| {
                let c = books.get(&spec.id).cloned().unwrap_or_default();
                serde_json::json!({
                    "slot": spec.id,
                    "index": j,
                    "local_hour": spec.hour,
                    "sends": c.exposures,
                    "rewards": c.rewards,
                    "reward_rate": if c.rewards > 0 { c.reward_sum / c.rewards as f64 } else { 0.0 },
                    "learned_trials": pop.global.trials[j],
                    "learned_rate": pop.global.rate(j),
                })
            })
            .collect();
        Ok(serde_json::json!({ "campaign": campaign, "slots": slots }))
    }
}

/// One send-time choice for a shopper from the population's prior table: Thompson sampling
/// over `eligible`, mixed with uniform exploration at rate `exploration` (`(1 - e)·p + e/n`).
/// Greedy decisions (`"explore": false`) do not come here: see `SendTimeRuntime::greedy`.
pub fn choose<R: Rng + ?Sized>(
    h: &Hierarchy,
    table: &PriorTable,
    shopper: Option<&st::ShopperCounts>,
    eligible: &[usize],
    exploration: f64,
    now: u64,
    rng: &mut R,
) -> st::SlotChoice {
    if eligible.len() == 1 {
        return st::SlotChoice {
            slot: eligible[0],
            probability: 1.0,
        };
    }
    let max = SlotMax::new(table, h, shopper, now, eligible);
    let slot = if exploration > 0.0 && rng.gen::<f64>() < exploration {
        eligible[rng.gen_range(0..eligible.len())]
    } else {
        max.sample(rng)
    };
    let mut probability = max.probability(slot);
    if exploration > 0.0 {
        probability = (1.0 - exploration) * probability + exploration / eligible.len() as f64;
    }
    st::SlotChoice { slot, probability }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(hour: u8, minute: u8) -> SlotSpec {
        SlotSpec {
            id: format!("h{hour}"),
            hour,
            minute,
            days: 0x7f,
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn unknown_zone_names_timezone() {
        let e = parse_timezone("Mars/Olympus_Mons").unwrap_err();
        assert_eq!(e.field(), Some("timezone"));
        assert!(parse_timezone("").is_err());
        assert!(parse_timezone("Europe/Paris").is_ok());
    }

    #[test]
    fn next_occurrence_in_zone() {
        let ny = parse_timezone("America/New_York").unwrap();
        // 2026-06-01 12:00 UTC is 08:00 EDT: 09:00 local is later the same day.
        let t = next_occurrence(&spec(9, 0), &ny, ts("2026-06-01T12:00:00Z")).unwrap();
        assert_eq!(t.to_string(), "2026-06-01T13:00:00Z");
        // 07:00 local already passed: tomorrow.
        let t = next_occurrence(&spec(7, 0), &ny, ts("2026-06-01T12:00:00Z")).unwrap();
        assert_eq!(t.to_string(), "2026-06-02T11:00:00Z");
        // Exactly at the slot counts.
        let t = next_occurrence(&spec(8, 0), &ny, ts("2026-06-01T12:00:00Z")).unwrap();
        assert_eq!(t.to_string(), "2026-06-01T12:00:00Z");
        // Half-hour zone.
        let kol = parse_timezone("Asia/Kolkata").unwrap();
        let t = next_occurrence(&spec(9, 30), &kol, ts("2026-06-01T00:00:00Z")).unwrap();
        assert_eq!(t.to_string(), "2026-06-01T04:00:00Z");
    }

    #[test]
    fn spring_forward_gap_is_skipped_to_next_day() {
        let ny = parse_timezone("America/New_York").unwrap();
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
        let t = next_occurrence(&spec(2, 30), &ny, ts("2026-03-08T05:00:00Z")).unwrap();
        assert_eq!(t.to_string(), "2026-03-09T06:30:00Z"); // 02:30 EDT on the 9th
        let z = t.to_zoned(ny.clone());
        assert_eq!((z.hour(), z.minute()), (2, 30));
        // 03:00 exists on the 8th (EDT).
        let t = next_occurrence(&spec(3, 0), &ny, ts("2026-03-08T05:00:00Z")).unwrap();
        assert_eq!(t.to_string(), "2026-03-08T07:00:00Z");
    }

    #[test]
    fn fall_back_fold_takes_first_occurrence() {
        let ny = parse_timezone("America/New_York").unwrap();
        // 2026-11-01: 01:00-01:59 happens twice (EDT, then EST). First is 05:30 UTC.
        let t = next_occurrence(&spec(1, 30), &ny, ts("2026-11-01T04:00:00Z")).unwrap();
        assert_eq!(t.to_string(), "2026-11-01T05:30:00Z");
        // After the first occurrence has passed, the second (same local time) is not used: the
        // next send is the next day's.
        let t = next_occurrence(&spec(1, 30), &ny, ts("2026-11-01T05:31:00Z")).unwrap();
        assert_eq!(t.to_string(), "2026-11-02T06:30:00Z");
    }

    #[tokio::test]
    async fn retention_drops_stale_shoppers_and_those_of_deleted_campaigns() {
        use crate::store::{SledStore, Store};
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20, 100).unwrap());
        let engine = Engine::open(store.clone(), Default::default()).unwrap();
        let config: CampaignConfig = serde_json::from_value(serde_json::json!({
            "id": "c", "kind": "send_time", "slots": "hour_of_day",
            "send_time": {"retention_days": 2}
        }))
        .unwrap();
        engine.create_campaign(config).unwrap();
        let req = |s: &str| SendTimeRequest {
            shopper_id: s.into(),
            timezone: "UTC".into(),
            ..Default::default()
        };
        engine.decide_send_time("c", req("s1")).unwrap();
        assert!(store.shopper("s1", "c").unwrap().is_some());
        let now = now_ms();
        assert_eq!(engine.purge_shoppers(now + 86_400_000).unwrap(), 0);
        assert_eq!(engine.purge_shoppers(now + 3 * 86_400_000).unwrap(), 1);
        assert!(store.shopper("s1", "c").unwrap().is_none());
        engine.decide_send_time("c", req("s2")).unwrap();
        engine.delete_campaign("c").unwrap();
        assert_eq!(engine.purge_shoppers(now_ms()).unwrap(), 1);
        assert_eq!(store.all_shopper_states().count(), 0);
    }

    /// The prior means a table for `segment` must have been built from, as its `(α, β)`.
    fn expected_priors(sendt: &SendTimeRuntime, segment: Option<&str>) -> Vec<(f64, f64)> {
        let pop = sendt.population.read();
        let mut means = Vec::new();
        let seg = segment.map(|s| &pop.segments[s]);
        st::prior_means(&sendt.hierarchy, &pop.global, seg, &mut means);
        let k = sendt.hierarchy.prior_strength;
        means.iter().map(|m| (k * m, k * (1.0 - m))).collect()
    }

    fn priors_of(table: &PriorTable) -> Vec<(f64, f64)> {
        (0..table.slots()).map(|j| table.prior(j)).collect()
    }

    #[tokio::test]
    async fn prior_tables_are_built_off_the_request_path() {
        use crate::store::{SledStore, Store};
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20, 100).unwrap());
        let engine = Engine::open(store.clone(), Default::default()).unwrap();
        let config: CampaignConfig = serde_json::from_value(serde_json::json!({
            "id": "c", "kind": "send_time", "slots": "hour_of_day"
        }))
        .unwrap();
        let rt = engine.create_campaign(config).unwrap();
        let sendt = rt.send_time.as_ref().unwrap();
        // A fresh campaign has its global table before any decision.
        let fresh = sendt.prior_table(None, 0);
        assert_eq!(priors_of(&fresh), expected_priors(sendt, None));
        // The population learns: the global evening slot and a segment's morning slot.
        for i in 0..200 {
            let mut pop = sendt.population.write();
            pop.learn(&sendt.hierarchy, None, 20, (i % 2) as f64, 1_000);
            pop.learn(&sendt.hierarchy, Some("vip"), 8, 1.0, 1_000);
        }
        let req = SendTimeRequest {
            shopper_id: "s1".into(),
            timezone: "UTC".into(),
            context: serde_json::json!({"segment": "vip"}),
            ..Default::default()
        };
        engine.decide_send_time("c", req.clone()).unwrap();
        // The decision rebuilt nothing: the same table, and the segment's waits for a refresh.
        assert!(Arc::ptr_eq(&sendt.prior_table(None, 0), &fresh));
        assert!(Arc::ptr_eq(&sendt.prior_table(Some("vip"), 0), &fresh));
        assert!(sendt.wanted.lock().contains("vip"));
        engine.refresh_prior_tables();
        let global = sendt.prior_table(None, 0);
        assert!(!Arc::ptr_eq(&global, &fresh));
        assert_eq!(priors_of(&global), expected_priors(sendt, None));
        let vip = sendt.prior_table(Some("vip"), 0);
        assert_eq!(priors_of(&vip), expected_priors(sendt, Some("vip")));
        assert_ne!(priors_of(&vip), priors_of(&global));
        assert!(sendt.wanted.lock().is_empty());
        // Nothing learned since: a refresh keeps the tables.
        engine.refresh_prior_tables();
        assert!(Arc::ptr_eq(&sendt.prior_table(Some("vip"), 0), &vip));
        // A segment without counts of its own uses the global table and is not queued.
        assert!(Arc::ptr_eq(&sendt.prior_table(Some("new"), 0), &global));
        assert!(sendt.wanted.lock().is_empty());

        // A restart (a second engine on the same store) has both tables before any decision.
        engine.snapshot_all().unwrap();
        let reopened = Engine::open(store.clone(), Default::default()).unwrap();
        let rt2 = reopened.campaign("c").unwrap();
        let sendt2 = rt2.send_time.as_ref().unwrap();
        let global2 = sendt2.prior_table(None, 0);
        assert_eq!(priors_of(&global2), priors_of(&global));
        let vip2 = sendt2.prior_table(Some("vip"), 0);
        assert!(!Arc::ptr_eq(&vip2, &global2));
        assert_eq!(priors_of(&vip2), priors_of(&vip));
        assert!(sendt2.wanted.lock().is_empty());
        reopened.decide_send_time("c", req).unwrap();
    }

    #[test]
    fn only_the_most_recently_asked_segments_keep_tables() {
        let config: CampaignConfig = serde_json::from_value(serde_json::json!({
            "id": "c", "kind": "send_time", "slots": "hour_of_day"
        }))
        .unwrap();
        let sendt = SendTimeRuntime::new(&config).unwrap().unwrap();
        let names: Vec<String> = (0..MAX_PRIOR_TABLES + 3)
            .map(|i| format!("s{i:02}"))
            .collect();
        for name in &names {
            let mut pop = sendt.population.write();
            pop.learn(&sendt.hierarchy, Some(name), 3, 1.0, 1_000);
        }
        // Asked in turn, a refresh between each: the first ones go once there are too many.
        for (t, name) in names.iter().enumerate() {
            sendt.prior_table(Some(name), t as u64);
            sendt.refresh_priors(t as u64);
        }
        let priors = sendt.priors.read().clone();
        assert_eq!(priors.segments.len(), MAX_PRIOR_TABLES - 1);
        assert!(names[..4].iter().all(|n| !priors.segments.contains_key(n)));
        assert!(names[4..].iter().all(|n| priors.segments.contains_key(n)));
        // Asking again brings one back, in place of the least recently asked.
        let t = names.len() as u64;
        sendt.prior_table(Some(&names[0]), t);
        sendt.refresh_priors(t);
        let priors = sendt.priors.read().clone();
        assert!(priors.segments.contains_key(&names[0]));
        assert!(!priors.segments.contains_key(&names[4]));
    }

    #[test]
    fn weekly_slots_land_on_their_weekday() {
        let paris = parse_timezone("Europe/Paris").unwrap();
        let tue18 = SlotSpec {
            id: "tue-h18".into(),
            hour: 18,
            minute: 0,
            days: 1 << 1,
        };
        // 2026-06-03 is a Wednesday: next Tuesday is the 9th, 18:00 CEST = 16:00 UTC.
        let t = next_occurrence(&tue18, &paris, ts("2026-06-03T10:00:00Z")).unwrap();
        assert_eq!(t.to_string(), "2026-06-09T16:00:00Z");
        let s = slot_of(&tue18, 42, t, &paris);
        assert_eq!(s.weekday, "tue");
        assert_eq!(s.local_time, "2026-06-09T18:00:00+02:00");
    }
}
