//! Test-only constraint that misbehaves on request, to prove the host contains it.
//!
//! Context `{"mode": "panic"}` panics inside `evaluate`, `{"mode": "error"}` returns an error,
//! anything else excludes candidates whose `bad` attribute is true. Config
//! `{"panic_on_attach": true}` panics inside `from_config`; `{"reject": "msg"}` returns `msg`.

use tailor_plugin::{export_plugin, Constraint, Request, Verdicts};

/// The plugin.
#[derive(Debug)]
pub struct Panicky;

impl Constraint for Panicky {
    const REASONS: &'static [&'static str] = &["marked_bad"];

    fn from_config(config: &serde_json::Value) -> Result<Self, String> {
        if config["panic_on_attach"] == true {
            panic!("panicky: asked to panic on attach");
        }
        if let Some(msg) = config["reject"].as_str() {
            return Err(msg.to_owned());
        }
        Ok(Panicky)
    }

    fn evaluate(&self, request: &Request<'_>, out: &mut Verdicts<'_>) -> Result<(), String> {
        match request.context().string("mode") {
            Some("panic") => panic!("panicky: asked to panic"),
            Some("error") => return Err("panicky: asked to fail".into()),
            _ => {}
        }
        if let Some(bad) = request.candidates().numbers("bad") {
            for i in 0..request.len() {
                if bad.get(i) == Some(1.0) {
                    out.exclude(i, 1);
                }
            }
        }
        Ok(())
    }
}

export_plugin!(constraint: Panicky, name: "panicky", version: "0.0.1");
