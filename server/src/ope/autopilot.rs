//! The autopilot: a policy optimization ([`super::optimize`]) over each enabled campaign's recent
//! log, on the campaign's schedule, that switches the campaign to the winner when its interval
//! clears the serving setting's.
//!
//! * [`spawn`] starts one task that looks every [`TICK`] for a campaign whose run is due and
//!   runs them one after another: at most one autopilot optimization in the server, and it
//!   takes one of the [`optimize::MAX_RUNNING`] places manual optimizations use (all taken: it
//!   waits for the next tick).
//! * [`guard`] is why a due run does not optimize at all (status, cool-down, too few decisions,
//!   a holdout change inside the window); [`decide`] is what a finished optimization leads to.
//! * A switch goes through [`Engine::update_campaign_if`] with the config fingerprint the
//!   optimization started from (a marketer's edit in the meantime wins: the run reads
//!   `conflict`), and is audited as `autopilot.switch` by the key `autopilot`, with the
//!   estimates and intervals of the serving setting and the winner.
//! * Each run (switched or not, and why) is kept, newest first, in one document per campaign
//!   in the evaluations tree ([`STATE_ID`], skipped by the evaluation listings); the
//!   optimization of a run is stored as an ordinary evaluation, kept while its run is.
//!
//! Cluster mode: the autopilot does not run (every replica would optimize the same log; the
//! switch would have to go through the stream). docs/optimization.md#autopilot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::optimize::{self, CandidateResult, Setting};
use super::{Evaluation, EvaluationRequest};
use crate::audit::{AuditEntry, AuditLog, Change};
use crate::campaign::{AutopilotSettings, CampaignConfig, CampaignStatus};
use crate::engine::{now_ms, Engine};
use crate::error::EngineError;
use crate::store::StoreError;

/// How often the task looks for due runs.
pub const TICK: Duration = Duration::from_secs(1);
/// Runs kept per campaign (their optimizations with them).
pub const MAX_RUNS: usize = 20;
/// The key an autopilot audit entry names.
pub const ACTOR: &str = "autopilot";
/// Id of the runs document in the evaluations tree: `:` is refused in every evaluation id a
/// client can name, so it never meets one.
const STATE_ID: &str = "autopilot:state";
/// Most audit entries one holdout check reads (newest first, back to the window's start).
const MAX_AUDIT_SCAN: usize = 100_000;

/// What a run led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The winner was applied.
    Switched,
    /// The optimization ran; nothing cleared the serving setting (or too few decisions).
    Kept,
    /// A guard stopped the run before it optimized.
    Skipped,
    /// The campaign changed while the optimization ran: the edit wins, nothing was applied.
    Conflict,
    /// The optimization failed.
    Failed,
}

/// One run of the autopilot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub at_ms: u64,
    pub outcome: Outcome,
    /// Why, in a sentence.
    pub reason: String,
    /// The stored optimization (`GET .../evaluations/{id}`), while kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<String>,
    /// The window read: decisions at or after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ms: Option<u64>,
    /// Decisions that entered the estimates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisions: Option<u64>,
    /// The serving setting and its estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<CandidateResult>,
    /// The winner (switched) or the best candidate by estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<CandidateResult>,
    pub elapsed_ms: u64,
}

/// The runs document of a campaign.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    /// Format version; first, so the document is told apart by its first bytes.
    autopilot_state: u32,
    last_run_ms: u64,
    #[serde(default)]
    last_switch_ms: Option<u64>,
    /// Newest first, at most [`MAX_RUNS`].
    runs: Vec<Run>,
}

/// Whether a document of the evaluations tree is the autopilot's runs document.
pub fn is_state_doc(json: &[u8]) -> bool {
    json.starts_with(br#"{"autopilot_state""#)
}

/// Each campaign's runs, read from the store once per process; only this module writes them.
static STATES: Mutex<Option<HashMap<String, State>>> = parking_lot::const_mutex(None);

fn load(engine: &Engine, campaign: &str) -> Result<State, EngineError> {
    if let Some(s) = STATES.lock().get_or_insert_with(HashMap::new).get(campaign) {
        return Ok(s.clone());
    }
    let mut state = State::default();
    for json in engine.evaluations(campaign)? {
        if is_state_doc(&json) {
            state = serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt {
                what: "autopilot runs",
                message: e.to_string(),
            })?;
        }
    }
    STATES
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(campaign.to_string(), state.clone());
    Ok(state)
}

/// Record `run` (newest first), drop the runs (and their optimizations) beyond [`MAX_RUNS`].
fn record(engine: &Engine, campaign: &str, run: Run) -> Result<(), EngineError> {
    let mut state = load(engine, campaign)?;
    state.autopilot_state = 1;
    state.last_run_ms = now_ms();
    if run.outcome == Outcome::Switched {
        state.last_switch_ms = Some(run.at_ms);
    }
    state.runs.insert(0, run);
    for old in state.runs.split_off(MAX_RUNS.min(state.runs.len())) {
        if let Some(ev) = old.evaluation {
            engine.delete_evaluation(campaign, &ev)?;
        }
    }
    if engine.campaign(campaign).is_err() {
        return Ok(()); // deleted while the run ran
    }
    let json = serde_json::to_vec(&state).expect("autopilot runs as JSON");
    engine.put_evaluation(campaign, STATE_ID, &json)?;
    STATES
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(campaign.to_string(), state);
    Ok(())
}

/// A holdout share change found in the audit trail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoldoutChange {
    pub at_ms: u64,
    pub before: f64,
    pub after: f64,
}

/// The latest change of `campaign`'s holdout share at or after `from_ms`, from the audit trail
/// (every admin surface audits the whole config before and after).
fn holdout_change(
    engine: &Engine,
    campaign: &str,
    from_ms: u64,
) -> Result<Option<HoldoutChange>, EngineError> {
    let share = |v: &Value| v.get("holdout").and_then(Value::as_f64).unwrap_or(0.0);
    let is_config = |v: &Value| v.get("id").is_some() && v.get("policy").is_some();
    for json in engine.store().audit_rev().take(MAX_AUDIT_SCAN) {
        let e: AuditEntry = serde_json::from_slice(&json?).map_err(|e| StoreError::Corrupt {
            what: "audit entry",
            message: e.to_string(),
        })?;
        if e.at_ms < from_ms {
            break;
        }
        if e.campaign.as_deref() != Some(campaign) || !is_config(&e.before) {
            continue;
        }
        if is_config(&e.after) && share(&e.before) != share(&e.after) {
            return Ok(Some(HoldoutChange {
                at_ms: e.at_ms,
                before: share(&e.before),
                after: share(&e.after),
            }));
        }
    }
    Ok(None)
}

fn utc(ms: u64) -> String {
    crate::api::personalizer::time::format_ms(ms)
}

/// Why a due run must not optimize, if it must not: `logging_only` (never switched: it serves
/// the baseline and learns nothing) or paused (the marketer stopped serving), the cool-down
/// after the last switch, fewer decisions logged than `min_decisions`, a holdout share change
/// inside the window (the window would mix two experiments: lift against the holdout could not
/// tell the switch's effect from the share's).
pub fn guard(
    config: &CampaignConfig,
    settings: &AutopilotSettings,
    last_switch_ms: Option<u64>,
    decisions: u64,
    holdout: Option<HoldoutChange>,
    now: u64,
) -> Result<Option<String>, EngineError> {
    match config.status {
        CampaignStatus::LoggingOnly => {
            return Ok(Some(
                "the campaign is logging_only: it serves the baseline and learns nothing, so the autopilot never switches it".into(),
            ))
        }
        CampaignStatus::Paused => {
            return Ok(Some(
                "the campaign is paused: the autopilot waits until it serves again".into(),
            ))
        }
        CampaignStatus::Active => {}
    }
    if let Some(at) = last_switch_ms {
        let until = at.saturating_add(settings.cooldown_ms()?);
        if now < until {
            return Ok(Some(format!(
                "cool-down after the switch at {}: no other switch before {}",
                utc(at),
                utc(until)
            )));
        }
    }
    if decisions < settings.min_decisions {
        return Ok(Some(format!(
            "{decisions} decisions logged so far, fewer than min_decisions ({})",
            settings.min_decisions
        )));
    }
    if let Some(h) = holdout {
        return Ok(Some(format!(
            "the holdout share changed from {} to {} at {}, inside the window: the autopilot waits until the window starts after it",
            h.before,
            h.after,
            utc(h.at_ms)
        )));
    }
    Ok(None)
}

fn interval_text(c: &CandidateResult) -> String {
    match &c.value {
        Some(v) => format!("{:.4} [{:.4}, {:.4}]", v.value, v.low, v.high),
        None => "no estimate".into(),
    }
}

/// The winner of `ev`, or the best candidate by estimate (reliable ones first).
fn best_of(ev: &Evaluation) -> Option<CandidateResult> {
    let opt = ev.optimization.as_ref()?;
    if let Some(w) = &opt.winner {
        return opt
            .candidates
            .iter()
            .find(|c| &c.setting.name == w)
            .cloned();
    }
    let value = |c: &CandidateResult| c.value.as_ref().map_or(f64::NEG_INFINITY, |v| v.value);
    opt.candidates
        .iter()
        .filter(|c| c.value.is_some())
        .max_by(|a, b| {
            (a.reliable, value(a))
                .partial_cmp(&(b.reliable, value(b)))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .cloned()
}

/// What a finished optimization leads to: the setting to switch to, or why not.
pub fn decide<'a>(
    ev: &'a Evaluation,
    plan: &optimize::Plan,
    min_decisions: u64,
) -> Result<&'a Setting, String> {
    let Some(opt) = &ev.optimization else {
        return Err("the optimization left no result".into());
    };
    if ev.used < min_decisions {
        return Err(format!(
            "{} decisions of the window entered the estimates (rewarded or closed, with their request), fewer than min_decisions ({min_decisions})",
            ev.used
        ));
    }
    let Some(winner) = &opt.winner else {
        if opt.serving.value.is_none() {
            let why = ev
                .policies
                .iter()
                .find(|p| p.name == opt.serving.setting.name)
                .and_then(|p| p.refused.as_ref())
                .map(|r| serde_json::to_string(r).unwrap_or_default())
                .unwrap_or_else(|| "no estimate".into());
            return Err(format!(
                "the serving setting has no estimate ({why}): nothing can be compared"
            ));
        }
        return Err(match best_of(ev) {
            Some(b) => format!(
                "no candidate's interval clears the serving one's: best {} {}{} vs serving {}",
                b.setting.name,
                interval_text(&b),
                if b.reliable { "" } else { " (unreliable)" },
                interval_text(&opt.serving)
            ),
            None => "no candidate has an estimate".into(),
        });
    };
    let setting = opt
        .candidates
        .iter()
        .map(|c| &c.setting)
        .find(|s| &s.name == winner)
        .ok_or_else(|| format!("the winner {winner:?} is not a candidate"))?;
    // Never a setting outside the grid the marketer allowed.
    if !plan.settings.contains(setting) {
        return Err(format!(
            "the winner {winner:?} is outside the autopilot's grid"
        ));
    }
    Ok(setting)
}

/// A setting with its estimate, as the audit entry of a switch shows it.
fn evidence(c: &CandidateResult) -> Value {
    json!({
        "name": c.setting.name,
        "policy": c.setting.policy,
        "featurizer": c.setting.featurizer,
        "exploration": c.setting.exploration,
        "estimate": c.value,
        "reliable": c.reliable,
    })
}

/// One due run of `campaign`, blocking: guards, the optimization, the switch. Returns the run
/// and the audit entry of a switch. `None`: every optimization place is taken (try again at
/// the next tick).
fn run_once(
    engine: &Engine,
    campaign: &str,
    settings: &AutopilotSettings,
) -> Result<Option<(Run, Option<Change>)>, EngineError> {
    let started = Instant::now();
    let now = now_ms();
    let rt = engine.campaign(campaign)?;
    let config = rt.config.clone();
    let decisions = rt.books.lock().decisions;
    drop(rt);
    let from_ms = now.saturating_sub(settings.window_ms()?);
    let state = load(engine, campaign)?;
    let skipped = |reason: String| Run {
        at_ms: now,
        outcome: Outcome::Skipped,
        reason,
        evaluation: None,
        from_ms: Some(from_ms),
        decisions: None,
        serving: None,
        best: None,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    // The cheap guards first; the audit trail is read only when they pass.
    if let Some(reason) = guard(
        &config,
        settings,
        state.last_switch_ms,
        decisions,
        None,
        now,
    )? {
        return Ok(Some((skipped(reason), None)));
    }
    let holdout = holdout_change(engine, campaign, from_ms)?;
    if let Some(reason) = guard(&config, settings, None, decisions, holdout, now)? {
        return Ok(Some((skipped(reason), None)));
    }
    let grid = settings.grid.clone().unwrap_or_default();
    let plan = match optimize::plan(&config, &grid) {
        Ok(p) => p,
        Err(e) => return Ok(Some((skipped(format!("autopilot.{e}")), None))),
    };
    let id = format!(
        "ev-{}",
        engine.store().next_seq().map_err(EngineError::from)?
    );
    let _registration = match optimize::register(campaign, &id) {
        Ok(r) => r,
        Err(_) => return Ok(None),
    };
    let request = EvaluationRequest {
        from_ms: Some(from_ms),
        optimize: true,
        grid: Some(grid),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(plan.grid.max_seconds);
    let mut ev = match optimize::run(engine, &config, &request, &plan, deadline) {
        Ok(ev) => ev,
        Err(e) => {
            return Ok(Some((
                Run {
                    outcome: Outcome::Failed,
                    ..skipped(format!("the optimization failed: {e}"))
                },
                None,
            )))
        }
    };
    ev.id = id.clone();
    ev.created_ms = now;
    let mut extra = serde_json::Map::new();
    extra.insert("autopilot".into(), Value::Bool(true));
    optimize::store_doc(engine, &ev, &extra)?;
    let opt = ev.optimization.clone().expect("an optimization's result");
    let mut run = Run {
        at_ms: now,
        outcome: Outcome::Kept,
        reason: String::new(),
        evaluation: Some(id.clone()),
        from_ms: Some(from_ms),
        decisions: Some(ev.used),
        serving: Some(opt.serving.clone()),
        best: best_of(&ev),
        elapsed_ms: 0,
    };
    let setting = match decide(&ev, &plan, settings.min_decisions) {
        Ok(s) => s.clone(),
        Err(reason) => {
            run.reason = reason;
            run.elapsed_ms = started.elapsed().as_millis() as u64;
            return Ok(Some((run, None)));
        }
    };
    let mut next = config.clone();
    next.policy = setting.policy.clone();
    next.featurizer = setting.featurizer.clone();
    next.exploration = setting.exploration;
    let switched = engine.update_campaign_if(next, |current| {
        if optimize::fingerprint(&current.config) == opt.config_fingerprint {
            Ok(())
        } else {
            Err(EngineError::Conflict {
                field: "campaign".into(),
                message: "changed while the optimization ran".into(),
            })
        }
    });
    run.elapsed_ms = started.elapsed().as_millis() as u64;
    let winner = run.best.clone().expect("the winner is the best");
    match switched {
        Ok(_) => {
            run.outcome = Outcome::Switched;
            run.reason = format!(
                "{} {} clears serving {} (low end above the serving high end, over {} decisions)",
                setting.name,
                interval_text(&winner),
                interval_text(&opt.serving),
                ev.used
            );
            let mut before = evidence(&opt.serving);
            before["name"] = json!("serving");
            let mut after = evidence(&winner);
            after["evaluation"] = json!(id);
            after["from_ms"] = json!(from_ms);
            after["decisions"] = json!(ev.used);
            let change = Change {
                action: "autopilot.switch".into(),
                campaign: Some(campaign.to_string()),
                target: Some(id),
                before,
                after,
            };
            Ok(Some((run, Some(change))))
        }
        Err(EngineError::Conflict { .. }) => {
            run.outcome = Outcome::Conflict;
            run.reason = format!(
                "{} cleared the serving setting, but the campaign changed while the optimization ran: the edit wins, nothing was applied",
                setting.name
            );
            Ok(Some((run, None)))
        }
        Err(e) => {
            run.outcome = Outcome::Failed;
            run.reason = format!("applying {} failed: {e}", setting.name);
            Ok(Some((run, None)))
        }
    }
}

/// Whether `campaign`'s run is due at `now`.
fn due(engine: &Engine, campaign: &str, settings: &AutopilotSettings, now: u64) -> bool {
    let Ok(every) = settings.every_ms() else {
        return false;
    };
    match load(engine, campaign) {
        Ok(s) => s.last_run_ms == 0 || now >= s.last_run_ms.saturating_add(every),
        Err(e) => {
            tracing::error!(campaign, error = %e, "autopilot runs unreadable");
            false
        }
    }
}

/// Start the autopilot task (single-node mode only). Runs until the process ends.
pub fn spawn(engine: Arc<Engine>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if engine.cluster().is_some() {
                continue;
            }
            let enabled: Vec<(String, AutopilotSettings)> = engine
                .campaigns()
                .iter()
                .filter_map(|rt| {
                    let a = rt.config.autopilot.as_ref().filter(|a| a.enabled)?;
                    Some((rt.config.id.clone(), a.clone()))
                })
                .collect();
            for (campaign, settings) in enabled {
                if !due(&engine, &campaign, &settings, now_ms()) {
                    continue;
                }
                let e = engine.clone();
                let c = campaign.clone();
                // Replaying the log is CPU-bound: off the async workers, one run at a time.
                let done = tokio::task::spawn_blocking(move || run_once(&e, &c, &settings)).await;
                let (run, change) = match done {
                    Ok(Ok(Some(r))) => r,
                    Ok(Ok(None)) => continue,
                    Ok(Err(EngineError::CampaignNotFound { .. })) => continue,
                    Ok(Err(e)) => {
                        tracing::error!(campaign, error = %e, "autopilot run failed");
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(campaign, error = %e, "autopilot run panicked");
                        continue;
                    }
                };
                if let Some(change) = change {
                    let audit = AuditLog::new(engine.store().clone());
                    if let Err(e) = audit.append(ACTOR, change).await {
                        tracing::error!(campaign, error = %e, "autopilot switch not audited");
                    }
                }
                tracing::info!(campaign, outcome = ?run.outcome, reason = %run.reason, "autopilot run");
                if let Err(e) = record(&engine, &campaign, run) {
                    tracing::error!(campaign, error = %e, "autopilot run not recorded");
                }
            }
        }
    });
}

/// `GET /admin/v1/campaigns/{id}/autopilot`: the settings, whether it runs, when next, the
/// cool-down, and the last runs, newest first.
pub fn report(engine: &Engine, campaign: &str) -> Result<Value, EngineError> {
    let config = engine.campaign(campaign)?.config.clone();
    let state = load(engine, campaign)?;
    let settings = config.autopilot.clone();
    let enabled = settings.as_ref().is_some_and(|a| a.enabled);
    let cluster = engine.cluster().is_some();
    let every = settings.as_ref().and_then(|a| a.every_ms().ok());
    let cooldown = settings.as_ref().and_then(|a| a.cooldown_ms().ok());
    let next_run_ms = (enabled && !cluster).then(|| match (state.last_run_ms, every) {
        (0, _) | (_, None) => now_ms(),
        (last, Some(e)) => last.saturating_add(e),
    });
    let cooldown_until_ms = match (state.last_switch_ms, cooldown) {
        (Some(at), Some(c)) if at.saturating_add(c) > now_ms() => Some(at.saturating_add(c)),
        _ => None,
    };
    Ok(json!({
        "campaign": campaign,
        "enabled": enabled,
        "running": enabled && !cluster,
        "note": if cluster { Some("cluster mode: the autopilot runs only in single-node mode") } else { None },
        "settings": settings.unwrap_or_default(),
        "serving": optimize::settings_of(&config),
        "last_run_ms": (state.last_run_ms != 0).then_some(state.last_run_ms),
        "next_run_ms": next_run_ms,
        "last_switch_ms": state.last_switch_ms,
        "cooldown_until_ms": cooldown_until_ms,
        "runs": state.runs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: Value) -> CampaignConfig {
        let c: CampaignConfig = serde_json::from_value(json).unwrap();
        c.validate().unwrap();
        c
    }

    #[test]
    fn guards_name_the_reason() {
        let settings = AutopilotSettings {
            enabled: true,
            min_decisions: 100,
            cooldown: "1h".into(),
            ..Default::default()
        };
        let c = config(json!({"id": "c", "log_requests": true}));
        let now = 10 * 3_600_000;
        let g = |c: &CampaignConfig, last: Option<u64>, n: u64, h: Option<HoldoutChange>| {
            guard(c, &settings, last, n, h, now).unwrap()
        };
        assert_eq!(g(&c, None, 100, None), None);
        let mut logging = c.clone();
        logging.status = CampaignStatus::LoggingOnly;
        assert!(g(&logging, None, 1000, None)
            .unwrap()
            .contains("logging_only"));
        let mut paused = c.clone();
        paused.status = CampaignStatus::Paused;
        assert!(g(&paused, None, 1000, None).unwrap().contains("paused"));
        assert!(g(&c, Some(now - 1_000), 1000, None)
            .unwrap()
            .contains("cool-down"));
        assert_eq!(g(&c, Some(now - 3_600_000), 1000, None), None);
        assert!(g(&c, None, 99, None).unwrap().contains("min_decisions"));
        let h = HoldoutChange {
            at_ms: now - 5,
            before: 0.1,
            after: 0.2,
        };
        assert!(g(&c, None, 1000, Some(h)).unwrap().contains("holdout"));
    }

    #[test]
    fn the_state_document_is_told_apart_from_evaluations() {
        let s = State {
            autopilot_state: 1,
            ..Default::default()
        };
        assert!(is_state_doc(&serde_json::to_vec(&s).unwrap()));
        assert!(!is_state_doc(br#"{"id":"ev-1","status":"succeeded"}"#));
    }
}
