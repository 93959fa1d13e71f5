//! Cluster mode: send-time decisions travel in the stream like item decisions. The deciding
//! replica chooses with its local state (the shopper's counts and frequency cap as applied
//! here) and writes nothing; every replica, applying the event in stream order, claims the
//! shopper's cap, writes the send event and logs the decision ([`Engine::commit_send_time`]),
//! so rewards of the send join and learn on every replica.

use tailor_wire::{SendTimeRequest, SendTimeResponse};

use super::event::Event;
use crate::campaign::CampaignKind;
use crate::engine::send_time::SendPlan;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::store::{DecisionRecord, SendEventRecord};

impl Engine {
    /// [`Engine::decide_send_time`]; in cluster mode answered once the decision is in the
    /// stream and applied here (so this replica's next decide for the shopper sees the cap). A
    /// retried event id decided on another replica gets the recorded decision.
    pub async fn decide_send_time_replicated(
        &self,
        campaign: &str,
        request: SendTimeRequest,
    ) -> Result<SendTimeResponse, EngineError> {
        let Some(cluster) = self.cluster() else {
            return self.decide_send_time(campaign, request);
        };
        let rt = self.campaign(campaign)?;
        if rt.config.kind != CampaignKind::SendTime {
            return Err(EngineError::invalid_owned(
                "body",
                format!("campaign {campaign:?} ranks items: send candidates"),
            ));
        }
        let (response, shopper, send_event, decision) =
            match self.plan_send(rt, request.clone(), false)? {
                SendPlan::Replayed(response) => return Ok(response),
                SendPlan::New {
                    response,
                    shopper,
                    send_event,
                    decision,
                } => (response, shopper, send_event, decision),
            };
        // Unlike an item decide, a send is not answered unlogged: its frequency cap would not
        // be claimed anywhere.
        cluster.require_connected("the send-time decide")?;
        let event = Event::SendTime {
            campaign: campaign.to_string(),
            shopper,
            send_event,
            decision,
        };
        let (seq, duplicate) = cluster.publish(cluster.subject(campaign), &event).await?;
        cluster.wait_applied(seq).await?;
        if !duplicate {
            return Ok(response);
        }
        // Another replica decided this event id first: answer with its decision.
        match self.plan_send(self.campaign(campaign)?, request, false)? {
            SendPlan::Replayed(response) => Ok(response),
            SendPlan::New { response, .. } => Err(EngineError::EventNotFound {
                id: response.event_id,
            }),
        }
    }
}

/// Apply a send-time decision from the stream (the first decision of an event id wins).
pub(crate) fn apply(
    engine: &Engine,
    shopper: &str,
    send_event: SendEventRecord,
    decision: DecisionRecord,
) {
    let Ok(rt) = engine.campaign(&decision.campaign) else {
        return;
    };
    match engine.store().event(&decision.campaign, &decision.event_id) {
        Ok(Some(_)) => return,
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "reading a join state failed");
            return;
        }
    }
    if let Err(e) = engine.commit_send_time(rt, shopper, send_event, decision) {
        tracing::error!(error = %e, "logging a send-time decision from the cluster log failed");
    }
}
