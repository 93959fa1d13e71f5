//! Decision previews and explanations (issue 22): what the items path would answer and why,
//! built from the same ranking a decide runs ([`Engine::preview_items`] shares
//! `rank_or_preview` with the decide), and what a logged decision's entry says about it
//! ([`Engine::explain_decision`]). Neither logs, learns or counts anything.

use serde::Serialize;
use tailor_policies::{Arm, Choice, SparseVec};

use super::merch::{Adjustment, OpenRules, Plan};
use super::parse::ItemsRequest;
use super::{CampaignRuntime, Engine};
use crate::campaign::CampaignStatus;
use crate::error::EngineError;
use crate::merchandising::open_at;
use crate::plugins::{PluginHost, PluginStage};

/// `POST /admin/v1/campaigns/{id}/preview`: the answer a decide would give now, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Preview {
    pub campaign: String,
    /// The body's `event_id`, when it sent one (its seed is the one a decide with it would use).
    pub event_id: Option<String>,
    /// The decision seed (a decimal string: it is a 64-bit integer). `?seed=` with this value
    /// reproduces the answer while the campaign's learned state is unchanged.
    pub seed: String,
    /// The policy that ranked (`baseline` for holdout shoppers, a paused campaign or a plugin
    /// fallback).
    pub policy: String,
    /// The serving policy's state version: the number of rewards it has learned from.
    pub policy_version: u64,
    pub status: CampaignStatus,
    /// The shopper is in the holdout (control order).
    pub holdout: bool,
    pub explore: bool,
    /// The campaign's uniform exploration share.
    pub exploration: f64,
    /// Set when a constraint plugin failed and the baseline order is served: which and why.
    pub fallback: Option<String>,
    /// The answer, top slot first.
    pub slots: Vec<PreviewSlot>,
    /// Every candidate of the request: served ones by slot, then the other eligible ones by
    /// their chance of the top slot, then the removed ones.
    pub candidates: Vec<PreviewCandidate>,
    /// Every configured pin and what it did to this request.
    pub pins: Vec<PinOutcome>,
    /// Every configured boost and the candidates it matched.
    pub boosts: Vec<BoostOutcome>,
    /// Always true: nothing was logged, learned, counted or remembered for the shopper.
    pub dry_run: bool,
}

/// One slot of a preview or of a logged decision.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PreviewSlot {
    /// 0-based.
    pub slot: u32,
    pub id: String,
    /// Probability of serving this candidate in this slot given the slots above (1 for a pin
    /// and for the baseline order).
    pub probability: f64,
    /// Served by a pin: probability 1, left out of off-policy evaluation's weights.
    pub pinned: bool,
    /// In words.
    pub why: String,
}

/// One candidate of a preview.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PreviewCandidate {
    pub id: String,
    /// Not removed by a constraint plugin.
    pub eligible: bool,
    /// The slot it is served in, if any.
    pub slot: Option<u32>,
    pub pinned: bool,
    /// Chance of the top slot (eligible candidates; 1 for a pin in the top slot).
    pub first_slot_probability: Option<f64>,
    /// The serving policy's point estimate of its reward, where the policy has one.
    pub mean: Option<f64>,
    /// The spread (standard deviation) of that estimate, where the policy keeps one.
    pub uncertainty: Option<f64>,
    /// The deterministic score the policy ranks by (LinUCB's bound), where it has one.
    pub score: Option<f64>,
    /// Combined promotion / demotion factor applied to its score or sampling weight (1: none).
    pub factor: f64,
    /// The factors that make up `factor`.
    pub adjustments: Vec<AdjustmentWords>,
    /// Set when a constraint plugin removed it.
    pub removed: Option<RemovalWords>,
}

/// A factor applied to one candidate.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdjustmentWords {
    /// `boost` (a merchandising rule) or `plugin` (a constraint's multiplier).
    pub source: String,
    /// The boost's index in `merchandising.boosts`.
    pub rule: Option<usize>,
    /// The constraint plugin.
    pub plugin: Option<String>,
    pub factor: f64,
    pub why: String,
}

/// A candidate a constraint plugin removed, with its reason code in words.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RemovalWords {
    pub id: String,
    pub plugin: String,
    /// The plugin's reason code (1-based; 0 = unspecified).
    pub code: u32,
    /// The reason's name in the plugin's table (`unknown` when the plugin no longer lists it).
    pub reason: String,
    pub message: String,
}

/// What one configured pin did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PinOutcome {
    /// Index in `merchandising.pins`.
    pub rule: usize,
    pub item: String,
    pub slot: u32,
    /// The window is open now.
    pub open: bool,
    /// The item was served in the slot.
    pub applied: bool,
    pub why: String,
}

/// What one configured boost did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BoostOutcome {
    /// Index in `merchandising.boosts`.
    pub rule: usize,
    pub attribute: String,
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    pub factor: f64,
    pub open: bool,
    /// Eligible candidates it matched.
    pub matched: Vec<String>,
}

/// `GET /admin/v1/campaigns/{id}/decisions/{event_id}/explain`: a logged decision, from its log
/// entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    pub campaign: String,
    pub event_id: String,
    /// Its position in the campaign's log: the policy state it was ranked with had learned every
    /// reward logged before it that had joined by then.
    pub seq: u64,
    /// When it was decided (RFC 3339).
    pub at: String,
    pub policy: String,
    /// The decision seed (decimal string). A preview of the logged request with `?seed=` this
    /// reproduces the decision while the learned state is the same.
    pub seed: String,
    pub holdout: bool,
    pub explore: bool,
    /// Candidates left after constraint plugins.
    pub eligible_candidates: u32,
    /// What was served, top slot first.
    pub slots: Vec<PreviewSlot>,
    /// Candidates constraint plugins removed, with reasons in words.
    pub removed: Vec<RemovalWords>,
    /// The raw request is in the log (`log_requests`), so the decision can be previewed again.
    pub request_logged: bool,
    /// The logged request (context and candidates) when it is in the log.
    #[schema(value_type = Option<Object>)]
    pub request: Option<serde_json::Value>,
}

/// A reason code in words, from the plugin's current reason table.
fn removal_words(
    host: &PluginHost,
    plugin: &str,
    id: &str,
    code: u32,
    known: Option<&str>,
) -> RemovalWords {
    let reason = known.map(str::to_owned).or_else(|| {
        let info = host.info(plugin)?;
        info.reasons.get((code as usize).checked_sub(1)?).cloned()
    });
    let reason = reason.unwrap_or_else(|| {
        if code == 0 {
            "unspecified".into()
        } else {
            "unknown".into()
        }
    });
    RemovalWords {
        id: id.to_owned(),
        plugin: plugin.to_owned(),
        code,
        message: format!(
            "removed by constraint plugin {plugin:?}: {} (reason {code})",
            reason.replace('_', " ")
        ),
        reason,
    }
}

fn slot_why(policy: &str, pinned: bool, probability: f64) -> String {
    if pinned {
        "pinned by a merchandising rule: served with probability 1, left out of off-policy evaluation".into()
    } else if policy == super::decide::BASELINE {
        "baseline order (holdout shopper, paused campaign or plugin fallback): the candidates as sent, promoted ones first".into()
    } else {
        format!(
            "chosen by {policy} with probability {probability:.4} among the candidates the slots above and the pins left"
        )
    }
}

/// Everything the items path computed for one request, for [`build`].
pub(super) struct Ranking<'a> {
    pub rt: &'a CampaignRuntime,
    pub req: &'a ItemsRequest,
    pub stage: &'a PluginStage,
    pub rules: &'a OpenRules<'a>,
    pub plan: &'a Plan,
    /// Over eligible positions.
    pub choices: &'a [Choice],
    pub pinned: &'a [u32],
    /// Chance of the top slot per eligible position.
    pub first: &'a [f64],
    pub vectors: &'a [SparseVec],
    pub policy: &'a str,
    pub seed: u64,
    pub holdout: bool,
    pub explore: bool,
}

/// The preview of one ranking.
pub(super) fn build(r: Ranking<'_>, host: &PluginHost) -> Preview {
    let config = &r.rt.config;
    let req = r.req;
    let stage = r.stage;
    let learner = r.rt.learner.read();
    let (_, serving) = learner.serving();
    let empty = SparseVec::default();
    let slots: Vec<PreviewSlot> = r
        .choices
        .iter()
        .enumerate()
        .map(|(slot, c)| {
            let pinned = r.pinned.contains(&(slot as u32));
            PreviewSlot {
                slot: slot as u32,
                id: req.id(stage.eligible[c.index]).to_owned(),
                probability: c.probability,
                pinned,
                why: slot_why(r.policy, pinned, c.probability),
            }
        })
        .collect();
    let removed: Vec<RemovalWords> = stage
        .removed
        .iter()
        .enumerate()
        .map(|(j, (plugin, id, code))| {
            removal_words(host, plugin, id, *code, stage.reasons.get(j).copied())
        })
        .collect();
    let mut candidates: Vec<PreviewCandidate> = (0..req.len())
        .map(|i| {
            let id = req.id(i).to_owned();
            let Ok(pos) = stage.eligible.binary_search(&i) else {
                return PreviewCandidate {
                    removed: removed.iter().find(|w| w.id == id).cloned(),
                    id,
                    eligible: false,
                    slot: None,
                    pinned: false,
                    first_slot_probability: None,
                    mean: None,
                    uncertainty: None,
                    score: None,
                    factor: 1.0,
                    adjustments: Vec::new(),
                };
            };
            let slot = r.choices.iter().position(|c| c.index == pos);
            let scores = serving.explain(
                Arm {
                    id: &id,
                    x: r.vectors.get(i).unwrap_or(&empty),
                },
                r.explore,
            );
            let adjustments = r
                .plan
                .adjustments
                .get(pos)
                .map(|a| {
                    a.iter()
                        .map(|a| match a {
                            Adjustment::Boost { rule, factor } => {
                                let b = &config.merchandising.boosts[*rule];
                                AdjustmentWords {
                                    source: "boost".into(),
                                    rule: Some(*rule),
                                    plugin: None,
                                    factor: *factor,
                                    why: format!(
                                        "{} {} = {} (boost rule {rule})",
                                        if *factor >= 1.0 {
                                            "promoted:"
                                        } else {
                                            "demoted:"
                                        },
                                        b.attribute,
                                        b.value
                                    ),
                                }
                            }
                            Adjustment::Plugin { plugin, factor } => AdjustmentWords {
                                source: "plugin".into(),
                                rule: None,
                                plugin: Some((*plugin).to_owned()),
                                factor: *factor,
                                why: format!(
                                    "{} by constraint plugin {plugin:?}",
                                    if *factor >= 1.0 {
                                        "promoted"
                                    } else {
                                        "demoted"
                                    }
                                ),
                            },
                        })
                        .collect()
                })
                .unwrap_or_default();
            PreviewCandidate {
                id,
                eligible: true,
                slot: slot.map(|s| s as u32),
                pinned: slot.is_some_and(|s| r.pinned.contains(&(s as u32))),
                first_slot_probability: r.first.get(pos).copied(),
                mean: scores.map(|s| s.mean),
                uncertainty: scores.and_then(|s| s.sd),
                score: scores.and_then(|s| s.score),
                factor: r.plan.factors.get(pos).copied().unwrap_or(1.0),
                adjustments,
                removed: None,
            }
        })
        .collect();
    // Served by slot, then eligible by chance of the top slot, then removed (stable).
    let key = |c: &PreviewCandidate| match (c.slot, c.eligible) {
        (Some(s), _) => (0, s as f64),
        (None, true) => (1, -c.first_slot_probability.unwrap_or(0.0)),
        (None, false) => (2, 0.0),
    };
    candidates.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    });

    let now = super::now_ms() as i64;
    let pins = config
        .merchandising
        .pins
        .iter()
        .enumerate()
        .map(|(rule, p)| {
            let open = open_at(p.starts_at, p.ends_at, now);
            let applied_slot = r.pinned.iter().find(|&&s| {
                r.choices
                    .get(s as usize)
                    .is_some_and(|c| req.id(stage.eligible[c.index]) == p.item)
            });
            let why = match (open, applied_slot) {
                (false, _) => "not applied: its window is not open now".to_owned(),
                (true, Some(s)) => format!("applied: served in slot {s} with probability 1"),
                (true, None) => r
                    .plan
                    .skipped
                    .iter()
                    .find(|(i, _)| *i == rule)
                    .map(|(_, why)| why.words())
                    .unwrap_or_else(|| "skipped".into()),
            };
            PinOutcome {
                rule,
                item: p.item.clone(),
                slot: p.slot,
                open,
                applied: open && applied_slot.is_some(),
                why,
            }
        })
        .collect();
    let boosts = config
        .merchandising
        .boosts
        .iter()
        .enumerate()
        .map(|(rule, b)| {
            let open = r.rules.boosts.iter().any(|(i, _)| *i == rule);
            let matched = r
                .plan
                .adjustments
                .iter()
                .enumerate()
                .filter(|(_, a)| {
                    a.iter()
                        .any(|a| matches!(a, Adjustment::Boost { rule: x, .. } if *x == rule))
                })
                .map(|(pos, _)| req.id(stage.eligible[pos]).to_owned())
                .collect();
            BoostOutcome {
                rule,
                attribute: b.attribute.clone(),
                value: b.value.clone(),
                factor: b.factor,
                open,
                matched,
            }
        })
        .collect();
    Preview {
        campaign: config.id.clone(),
        event_id: req.event_id.clone(),
        seed: r.seed.to_string(),
        policy: r.policy.to_owned(),
        policy_version: serving.rewards_seen(),
        status: config.status,
        holdout: r.holdout,
        explore: r.explore,
        exploration: config.exploration,
        fallback: stage.fallback.clone(),
        slots,
        candidates,
        pins,
        boosts,
        dry_run: true,
    }
}

impl Engine {
    /// Explains the logged decision `event_id` of `campaign` from its log entry; `EventNotFound`
    /// when no such decision is logged (or its entry was deleted).
    pub fn explain_decision(
        &self,
        campaign: &str,
        event_id: &str,
    ) -> Result<Explanation, EngineError> {
        self.campaign(campaign)?;
        let not_found = || EngineError::EventNotFound {
            id: event_id.to_owned(),
        };
        let event = self
            .store
            .event(campaign, event_id)?
            .ok_or_else(not_found)?;
        let d = self
            .store
            .decision(campaign, event.decision_seq)?
            .ok_or_else(not_found)?;
        let host = self.plugins();
        let slots = d
            .actions
            .iter()
            .enumerate()
            .map(|(slot, a)| {
                let pinned = d.pinned.contains(slot);
                PreviewSlot {
                    slot: slot as u32,
                    id: a.id.clone(),
                    probability: a.probability,
                    pinned,
                    why: slot_why(&d.policy, pinned, a.probability),
                }
            })
            .collect();
        let removed = d
            .removed
            .iter()
            .map(|(plugin, id, code)| removal_words(host, plugin, id, *code, None))
            .collect();
        let request = (!d.request.is_empty())
            .then(|| serde_json::from_slice(&d.request).ok())
            .flatten();
        Ok(Explanation {
            campaign: campaign.to_owned(),
            event_id: d.event_id.clone(),
            seq: event.decision_seq,
            at: jiff::Timestamp::from_millisecond(d.at_ms as i64)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            policy: d.policy.clone(),
            seed: d.seed.to_string(),
            holdout: d.holdout,
            explore: d.explore,
            eligible_candidates: d.candidates,
            slots,
            removed,
            request_logged: request.is_some(),
            request,
        })
    }
}
