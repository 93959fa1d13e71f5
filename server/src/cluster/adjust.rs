//! Cluster mode: a return (`POST .../adjust`) is an event of the stream, applied in stream order
//! on every replica at the publishing replica's clock, so every replica makes the same decision
//! (accepted, duplicate, 404, 409, 410) and learns the same correction.
//!
//! No JetStream message id: an adjustment's idempotency is decided by the engine from the
//! slot's settled state, which is the same on every replica, so a retry published again (on any
//! replica, at any time) is answered `duplicate` everywhere.

use tailor_wire::{AdjustRequest, AdjustResponse};

use super::event::Event;
use super::Outcome;
use crate::engine::{now_ms, Engine};
use crate::error::EngineError;

impl Engine {
    /// [`Engine::adjust`]; in cluster mode through the stream, answered once applied here.
    pub async fn adjust_replicated(
        &self,
        campaign: &str,
        event_id: &str,
        req: AdjustRequest,
    ) -> Result<AdjustResponse, EngineError> {
        let Some(cluster) = self.cluster() else {
            return self.adjust(campaign, event_id, req).await;
        };
        self.campaign(campaign)?;
        cluster.require_connected("the adjustment")?;
        let event = Event::Adjust {
            campaign: campaign.to_string(),
            event_id: event_id.to_string(),
            at_ms: now_ms(),
            value: req.value,
            delta: req.delta,
            action_id: req.action_id,
            adjustment_id: req.adjustment_id,
        };
        match cluster
            .publish_and_apply(cluster.subject(campaign), &event)
            .await?
        {
            Some(Outcome::Adjust(result)) => result,
            _ => Err(EngineError::Unavailable {
                message: "the adjustment is in the cluster log but its outcome was not kept here; retry it (a repeat is answered duplicate)".into(),
            }),
        }
    }
}
