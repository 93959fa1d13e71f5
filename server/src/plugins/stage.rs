//! The plugin stage of a decision: what the engine calls between validating a decide request and
//! featurizing it.

use serde_json::Value;
use tailor_wire::DecideRequest;

use super::{request_view, PluginChain, PluginError, PluginHost};
use crate::campaign::{OnFailure, PluginRef};
use crate::error::EngineError;

/// Attaches a campaign's chain on create / update; a plugin that is not loaded or rejects its
/// config is a 400 naming `plugins[i].name` / `plugins[i].config` and carrying the plugin's
/// message.
pub fn attach_campaign_chain(
    host: &PluginHost,
    specs: &[PluginRef],
) -> Result<PluginChain, EngineError> {
    PluginChain::attach_indexed(host, specs).map_err(|(i, e)| {
        let field = match e {
            PluginError::UnknownPlugin { .. } => format!("plugins[{i}].name"),
            PluginError::Config { .. } => format!("plugins[{i}].config"),
            _ => format!("plugins[{i}]"),
        };
        EngineError::Invalid {
            field,
            message: e.to_string(),
        }
    })
}

/// What a campaign's plugin chain decided for one request, in the shape the engine needs.
#[derive(Debug, Clone, Default)]
pub struct PluginStage {
    /// Indexes of the candidates the policy may choose from, in request order.
    pub eligible: Vec<usize>,
    /// Set when a constraint failed and its campaign entry says `baseline`: serve the eligible
    /// candidates (as far as the chain got) in the order sent instead of sampling. The text
    /// says which plugin failed and why.
    pub fallback: Option<String>,
    /// For the decision log: (plugin, candidate id, reason code).
    pub removed: Vec<(String, String, u32)>,
    /// The reason name of each entry of `removed` (for explanations).
    pub reasons: Vec<&'static str>,
    /// Per candidate (request order), the product of the constraints' score multipliers; empty
    /// when every one is 1. The decide path applies them as demotions / promotions
    /// (docs/merchandising.md).
    pub multiplier: Vec<f64>,
    /// (plugin, candidate index, factor) for every multiplier other than 1.
    pub scaled: Vec<(&'static str, usize, f64)>,
    /// The request context with extractor features merged in under each extractor's name;
    /// `None` when no extractor added a context feature.
    pub context: Option<Value>,
    /// Candidate features with extractor features merged in; empty when no extractor added a
    /// candidate feature.
    pub features: Vec<Value>,
}

/// Why a decision was refused (`on_failure: refuse`): the message for the 503.
#[derive(Debug, Clone)]
pub struct Refusal(pub String);

/// Runs `chain` over `request`. Builds the columnar view once and hands it to every plugin.
pub fn run_stage(
    chain: &PluginChain,
    campaign: &str,
    request: &DecideRequest,
) -> Result<PluginStage, Refusal> {
    let n = request.candidates.len();
    if chain.is_empty() {
        return Ok(PluginStage {
            eligible: (0..n).collect(),
            ..PluginStage::default()
        });
    }
    let view = request_view(
        &request.context,
        request
            .candidates
            .iter()
            .map(|c| (c.id.as_str(), &c.attributes)),
    );
    let outcome = chain.run(&view);
    drop(view);

    let mut stage = PluginStage {
        eligible: (0..n).filter(|i| outcome.eligible[*i]).collect(),
        removed: outcome
            .removed
            .iter()
            .map(|r| {
                metrics::counter!("tailor_plugin_removed_total", "campaign" => campaign.to_owned(), "plugin" => r.plugin)
                    .increment(1);
                (
                    r.plugin.to_owned(),
                    request.candidates[r.candidate].id.clone(),
                    r.code,
                )
            })
            .collect(),
        reasons: outcome.removed.iter().map(|r| r.reason).collect(),
        scaled: outcome
            .scaled
            .iter()
            .map(|s| (s.plugin, s.candidate, s.factor))
            .collect(),
        ..PluginStage::default()
    };
    if !outcome.scaled.is_empty() {
        stage.multiplier = outcome.multiplier.clone();
    }
    for skip in &outcome.skipped {
        metrics::counter!("tailor_plugin_skipped_total", "campaign" => campaign.to_owned(), "plugin" => skip.plugin)
            .increment(1);
    }
    if let Some(f) = &outcome.failure {
        let action = match f.on_failure {
            OnFailure::Baseline => "baseline",
            OnFailure::Refuse => "refuse",
        };
        metrics::counter!("tailor_plugin_fallbacks_total", "campaign" => campaign.to_owned(), "plugin" => f.plugin.clone(), "action" => action)
            .increment(1);
        let message = format!("campaign {campaign:?}: {}", f.error);
        match f.on_failure {
            OnFailure::Refuse => return Err(Refusal(message)),
            OnFailure::Baseline => stage.fallback = Some(message),
        }
    }

    // Extractor features join the request's own features under the extractor's name. A
    // features value that is neither null nor an object is left alone so the featurizer still
    // rejects it with its usual message.
    let mergeable = |v: &Value| v.is_null() || v.is_object();
    let any_context = outcome.features.iter().any(|(_, f)| !f.context.is_empty());
    let any_candidate = outcome
        .features
        .iter()
        .any(|(_, f)| !f.candidates.is_empty());
    if any_context && mergeable(&request.context) {
        let mut ctx = request.context.clone();
        for (name, f) in &outcome.features {
            f.merge_into(name, &mut ctx, &mut []);
        }
        stage.context = Some(ctx);
    }
    if any_candidate {
        let mut features: Vec<Value> = request
            .candidates
            .iter()
            .map(|c| c.features.clone())
            .collect();
        let mut refs: Vec<&mut Value> = features.iter_mut().collect();
        let mut scratch = Value::Null;
        for (name, f) in &outcome.features {
            let only_candidates = super::Extracted {
                names: f.names.clone(),
                context: Vec::new(),
                candidates: f
                    .candidates
                    .iter()
                    .filter(|(c, _, _)| mergeable(&request.candidates[*c as usize].features))
                    .copied()
                    .collect(),
            };
            only_candidates.merge_into(name, &mut scratch, &mut refs);
        }
        stage.features = features;
    }
    Ok(stage)
}
