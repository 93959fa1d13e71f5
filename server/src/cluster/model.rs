//! Cluster mode: the model operations of the Personalizer surface — import (`PUT model`), reset
//! (`DELETE model`) and log deletion (`DELETE logs`) — are events of the stream, applied in
//! stream order on every replica (at the stream time, so imported or fresh evidence ages the
//! same way everywhere). A replica answers once it applied the event itself; a refusal (say, a
//! model learned with another featurizer) is decided the same way on every replica.

use super::event::{Event, ModelChange};
use super::Outcome;
use crate::engine::Engine;
use crate::error::EngineError;

/// Room left in a message for the event around a model file.
const EVENT_OVERHEAD: usize = 4 << 10;

impl Engine {
    /// [`Engine::import_model`]; in cluster mode through the stream. The file is checked
    /// before it is published, and must fit in one NATS message (`max_payload`).
    pub async fn import_model_replicated(
        &self,
        campaign: &str,
        bytes: Vec<u8>,
    ) -> Result<Vec<String>, EngineError> {
        let Some(cluster) = self.cluster() else {
            return self.import_model(campaign, &bytes);
        };
        Engine::check_model_file(&bytes)?;
        let max = cluster.max_payload();
        if bytes.len() + EVENT_OVERHEAD > max {
            return Err(EngineError::invalid_owned(
                "body",
                format!(
                    "the model file ({} bytes) does not fit in one cluster message (nats-server max_payload {max} bytes); raise max_payload, or import on a single node and start the replicas from its snapshot",
                    bytes.len()
                ),
            ));
        }
        match self
            .publish_model(campaign, ModelChange::Import(bytes))
            .await?
        {
            Outcome::Imported(result) => result,
            _ => Err(lost()),
        }
    }

    /// [`Engine::reset_model`]; in cluster mode through the stream.
    pub async fn reset_model_replicated(&self, campaign: &str) -> Result<(), EngineError> {
        if self.cluster().is_none() {
            return self.reset_model(campaign);
        }
        match self.publish_model(campaign, ModelChange::Reset).await? {
            Outcome::Config(result) => result,
            _ => Err(lost()),
        }
    }

    /// [`Engine::delete_logs`]; in cluster mode through the stream: every replica deletes its
    /// copy of the campaign's log up to the same point. Returns what this replica deleted.
    pub async fn delete_logs_replicated(
        self: &std::sync::Arc<Self>,
        campaign: &str,
    ) -> Result<(u64, u64), EngineError> {
        if self.cluster().is_none() {
            let engine = self.clone();
            let id = campaign.to_string();
            return tokio::task::spawn_blocking(move || engine.delete_logs(&id))
                .await
                .map_err(|e| EngineError::Unavailable {
                    message: format!("deleting the logs stopped: {e}"),
                })?;
        }
        match self
            .publish_model(campaign, ModelChange::DeleteLogs)
            .await?
        {
            Outcome::Deleted(result) => result,
            _ => Err(lost()),
        }
    }

    async fn publish_model(
        &self,
        campaign: &str,
        change: ModelChange,
    ) -> Result<Outcome, EngineError> {
        let cluster = self.cluster().expect("called in cluster mode");
        self.campaign(campaign)?;
        cluster.require_connected("the change")?;
        let event = Event::Model {
            campaign: campaign.to_string(),
            change,
        };
        cluster
            .publish_and_apply(cluster.subject(campaign), &event)
            .await?
            .ok_or_else(lost)
    }
}

fn lost() -> EngineError {
    EngineError::Unavailable {
        message: "the change is in the cluster log but its outcome was not kept here".into(),
    }
}

/// Apply a model change at stream time `now`.
pub(crate) fn apply(engine: &Engine, campaign: &str, change: ModelChange, now: u64) -> Outcome {
    match change {
        ModelChange::Import(bytes) => {
            Outcome::Imported(engine.import_model_at(campaign, &bytes, now))
        }
        ModelChange::Reset => Outcome::Config(engine.reset_model_at(campaign, now)),
        ModelChange::DeleteLogs => Outcome::Deleted(engine.delete_logs(campaign)),
    }
}
