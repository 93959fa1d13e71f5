//! A campaign's ordered plugin chain.

use std::sync::Arc;

use serde::Serialize;
use tailor_plugin::OwnedRequest;

use super::library::Library;
use super::{AttachedPlugin, Extracted, PluginError, PluginHost, PluginKind};
use crate::campaign::{OnFailure, PluginRef};

struct Step {
    on_failure: OnFailure,
    /// A step whose plugin could not be attached (at startup: plugin missing or its config no
    /// longer accepted) fails every run, so the campaign falls back instead of silently serving
    /// without its rule.
    plugin: Result<AttachedPlugin, (String, PluginError)>,
}

impl Step {
    fn name(&self) -> &str {
        match &self.plugin {
            Ok(p) => p.name(),
            Err((name, _)) => name,
        }
    }
}

/// The attached plugins of one campaign, in chain order.
pub struct PluginChain {
    steps: Vec<Step>,
    generation: u64,
}

impl std::fmt::Debug for PluginChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(Step::name))
            .finish()
    }
}

/// A candidate removed by a constraint (the first constraint that removed it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Removal {
    /// Index of the candidate in the request.
    pub candidate: usize,
    /// The constraint that removed it.
    pub plugin: &'static str,
    /// The plugin's reason code name.
    pub reason: &'static str,
    /// The reason code (index into the plugin's reason table, 1-based; 0 = unspecified).
    pub code: u32,
}

/// A candidate whose score a constraint multiplied (`Verdicts::scale`) by something other than 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scaling {
    /// Index of the candidate in the request.
    pub candidate: usize,
    /// The constraint.
    pub plugin: &'static str,
    /// Its factor (finite, ≥ 0; other values are ignored and not listed).
    pub factor: f64,
}

/// A feature extractor that failed and was skipped.
#[derive(Debug, Clone)]
pub struct ExtractorSkip {
    /// The extractor.
    pub plugin: &'static str,
    /// Why.
    pub error: PluginError,
}

/// A constraint that failed: the decision must fall back to the campaign's safe choice.
#[derive(Debug, Clone)]
pub struct ChainFailure {
    /// The constraint.
    pub plugin: String,
    /// What the campaign configured for this plugin.
    pub on_failure: OnFailure,
    /// Why.
    pub error: PluginError,
}

/// What running a chain over one request produced.
#[derive(Debug, Clone, Default)]
pub struct ChainOutcome {
    /// Eligible after every constraint (all `true` when the chain has no constraint).
    pub eligible: Vec<bool>,
    /// Product of the constraints' score multipliers (factors that are not finite and ≥ 0 are
    /// ignored).
    pub multiplier: Vec<f64>,
    /// Each constraint's factors other than 1, in chain order.
    pub scaled: Vec<Scaling>,
    /// Which plugin removed which candidate, and why.
    pub removed: Vec<Removal>,
    /// Features per extractor, in chain order.
    pub features: Vec<(&'static str, Extracted)>,
    /// Extractors that failed and were skipped.
    pub skipped: Vec<ExtractorSkip>,
    /// The first constraint that failed; the chain stopped there.
    pub failure: Option<ChainFailure>,
}

impl ChainOutcome {
    /// Number of eligible candidates.
    pub fn eligible_count(&self) -> usize {
        self.eligible.iter().filter(|e| **e).count()
    }
}

impl PluginChain {
    /// A chain with no plugins.
    pub fn empty() -> Self {
        PluginChain {
            steps: Vec::new(),
            generation: 0,
        }
    }

    /// Attaches every plugin of `specs` (validating each config). The first failure is
    /// returned; its message is meant for the admin (a 400 naming the plugin).
    pub fn attach(host: &PluginHost, specs: &[PluginRef]) -> Result<Self, PluginError> {
        Self::attach_indexed(host, specs).map_err(|(_, e)| e)
    }

    /// Like [`PluginChain::attach`], also returning the index of the failing spec.
    pub fn attach_indexed(
        host: &PluginHost,
        specs: &[PluginRef],
    ) -> Result<Self, (usize, PluginError)> {
        let generation = host.generation();
        let steps = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                Ok(Step {
                    on_failure: spec.on_failure,
                    plugin: Ok(host.attach(&spec.name, &spec.config).map_err(|e| (i, e))?),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PluginChain { steps, generation })
    }

    /// Attaches what can be attached; a step that cannot fails every run (see `Step`). Used
    /// when campaigns are loaded at startup and re-attached after a reload, where refusing
    /// the campaign is not an option.
    pub fn attach_lenient(host: &PluginHost, specs: &[PluginRef]) -> Self {
        let generation = host.generation();
        let steps = specs
            .iter()
            .map(|spec| Step {
                on_failure: spec.on_failure,
                plugin: host.attach(&spec.name, &spec.config).map_err(|e| {
                    tracing::error!(plugin = %spec.name, error = %e, "plugin not attached; decisions will fall back");
                    (spec.name.clone(), e)
                }),
            })
            .collect();
        PluginChain { steps, generation }
    }

    /// True when the chain has no plugins.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Names of the plugins, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.steps.iter().map(Step::name)
    }

    /// Whether the chain was attached at the host's current generation (otherwise a reload
    /// made a newer version current for some name, and the campaign should re-attach).
    pub fn is_current(&self, host: &PluginHost) -> bool {
        self.generation == host.generation()
    }

    /// The libraries this chain uses (for tests and diagnostics).
    #[allow(dead_code)]
    pub(super) fn libraries(&self) -> impl Iterator<Item = &Arc<Library>> {
        self.steps
            .iter()
            .filter_map(|s| s.plugin.as_ref().ok().map(AttachedPlugin::library))
    }

    /// Runs every plugin over `request`. Constraints combine (a candidate is eligible only if
    /// every constraint keeps it); a failing constraint stops the chain and is reported in
    /// [`ChainOutcome::failure`]; a failing extractor is skipped.
    pub fn run(&self, request: &OwnedRequest<'_>) -> ChainOutcome {
        let n = request.len();
        let mut out = ChainOutcome {
            eligible: vec![true; n],
            multiplier: vec![1.0; n],
            ..ChainOutcome::default()
        };
        for step in &self.steps {
            let p = match &step.plugin {
                Ok(p) => p,
                Err((name, error)) => {
                    out.failure = Some(ChainFailure {
                        plugin: name.clone(),
                        on_failure: step.on_failure,
                        error: error.clone(),
                    });
                    return out;
                }
            };
            match p.kind() {
                PluginKind::Constraint => match p.constrain(request) {
                    Ok(v) => {
                        for i in 0..n {
                            if !v.eligible[i] && out.eligible[i] {
                                out.eligible[i] = false;
                                out.removed.push(Removal {
                                    candidate: i,
                                    plugin: p.name(),
                                    reason: v.reason[i].unwrap_or("unspecified"),
                                    code: v.code[i],
                                });
                            }
                            let f = v.multiplier[i];
                            if f != 1.0 && f.is_finite() && f >= 0.0 {
                                out.multiplier[i] *= f;
                                out.scaled.push(Scaling {
                                    candidate: i,
                                    plugin: p.name(),
                                    factor: f,
                                });
                            }
                        }
                    }
                    Err(error) => {
                        out.failure = Some(ChainFailure {
                            plugin: p.name().to_owned(),
                            on_failure: step.on_failure,
                            error,
                        });
                        return out;
                    }
                },
                PluginKind::FeatureExtractor => match p.extract(request) {
                    Ok(f) => out.features.push((p.name(), f)),
                    Err(error) => out.skipped.push(ExtractorSkip {
                        plugin: p.name(),
                        error,
                    }),
                },
            }
        }
        out
    }
}
