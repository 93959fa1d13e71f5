//! Cluster mode: activating a deferred decision (the Personalizer surface's `activate`) is an
//! event of the stream, applied in stream order on every replica — after the decision, whichever
//! replica answered it — so a reward of an activated event learns on every replica.

use super::event::Event;
use super::Outcome;
use crate::engine::{slot_event_id, Engine};
use crate::error::EngineError;

impl Engine {
    /// [`Engine::activate`]; in cluster mode through the stream, answered once applied here.
    pub async fn activate_replicated(
        &self,
        campaign: &str,
        event_id: &str,
    ) -> Result<bool, EngineError> {
        match self.cluster() {
            None => self.activate(campaign, event_id).await,
            Some(_) => Ok(self.publish_activation(campaign, event_id, false).await? > 0),
        }
    }

    /// [`Engine::activate_slots`]; in cluster mode through the stream.
    pub async fn activate_slots_replicated(
        &self,
        campaign: &str,
        event_id: &str,
    ) -> Result<usize, EngineError> {
        match self.cluster() {
            None => self.activate_slots(campaign, event_id).await,
            Some(_) => self.publish_activation(campaign, event_id, true).await,
        }
    }

    async fn publish_activation(
        &self,
        campaign: &str,
        event_id: &str,
        slots: bool,
    ) -> Result<usize, EngineError> {
        let cluster = self.cluster().expect("called in cluster mode");
        self.campaign(campaign)?;
        cluster.require_connected("the activation")?;
        let event = Event::Activate {
            campaign: campaign.to_string(),
            event_id: event_id.to_string(),
            slots,
        };
        match cluster
            .publish_and_apply(cluster.subject(campaign), &event)
            .await?
        {
            Some(Outcome::Count(result)) => result,
            _ => Ok(0),
        }
    }
}

/// Apply an activation: how many deferred decisions it activated here.
pub(crate) fn apply(
    engine: &Engine,
    campaign: &str,
    event_id: &str,
    slots: bool,
) -> Result<usize, EngineError> {
    if !slots {
        return match engine.activate_one(campaign, event_id)? {
            None => Err(EngineError::EventNotFound {
                id: event_id.to_string(),
            }),
            Some(activated) => Ok(usize::from(activated)),
        };
    }
    let ids = engine
        .store()
        .deferred_with_prefix(campaign, &slot_event_id(event_id, ""))?;
    let mut activated = 0;
    for id in &ids {
        if engine.activate_one(campaign, id)? == Some(true) {
            activated += 1;
        }
    }
    Ok(activated)
}
