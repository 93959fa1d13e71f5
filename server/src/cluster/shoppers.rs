//! Cluster mode: deleting a send-time shopper is an event of the stream, so it reaches every
//! replica, in stream order — a decision or reward of that shopper applied after it starts
//! afresh — and every snapshot taken after it.

use super::event::Event;
use super::Outcome;
use crate::engine::Engine;
use crate::error::EngineError;

impl Engine {
    /// [`Engine::delete_shopper`]; in cluster mode published to the stream and answered once
    /// applied here (the count is this replica's).
    pub async fn delete_shopper_replicated(&self, shopper: &str) -> Result<usize, EngineError> {
        let Some(cluster) = self.cluster() else {
            return self.delete_shopper(shopper);
        };
        // The engine's id rule (checked again where it applies): nothing unusable is published.
        if shopper.is_empty() || shopper.len() > 256 || shopper.chars().any(char::is_control) {
            return self.delete_shopper(shopper);
        }
        cluster.require_connected("the deletion")?;
        let event = Event::ShopperDeleted {
            shopper: shopper.to_string(),
        };
        let subject = format!("{}.shopper", cluster.settings().subject_prefix);
        match cluster.publish_and_apply(subject, &event).await? {
            Some(Outcome::Count(result)) => result,
            _ => Ok(0),
        }
    }
}
