//! What handlers need from the store beyond deciding and rewarding, through the engine: readiness,
//! durability, event lookups, a campaign's log range, stored evaluations.

use super::reports::{self, RowFold};
use super::Engine;
use crate::error::EngineError;

impl Engine {
    /// The store answers (readiness).
    pub fn ready(&self) -> Result<(), EngineError> {
        self.store.next_seq()?;
        if let Some(cluster) = self.cluster() {
            if !cluster.connected() {
                return Err(EngineError::Unavailable {
                    message: "cluster mode: NATS is unreachable; rewards are refused until it is back (decides too: they are answered once in the stream)".into(),
                });
            }
        }
        Ok(())
    }

    /// Everything written so far is durable.
    pub async fn durable(&self) -> Result<(), EngineError> {
        self.store.flush().await?;
        Ok(())
    }

    /// Whether `campaign` logged a decision under `event_id`.
    pub fn event_exists(&self, campaign: &str, event_id: &str) -> Result<bool, EngineError> {
        Ok(self.store.event(campaign, event_id)?.is_some())
    }

    /// Time of the first and the last decision in `campaign`'s log.
    pub fn log_time_range(&self, campaign: &str) -> Result<Option<(u64, u64)>, EngineError> {
        let mut range: Option<(u64, u64)> = None;
        for d in self.store.decisions(campaign, 0) {
            let at = d?.at_ms;
            range = Some(match range {
                None => (at, at),
                Some((lo, hi)) => (lo.min(at), hi.max(at)),
            });
        }
        Ok(range)
    }

    /// Store an evaluation document (JSON) of `campaign` under `id`.
    pub fn put_evaluation(&self, campaign: &str, id: &str, json: &[u8]) -> Result<(), EngineError> {
        Ok(self.store.put_evaluation(campaign, id, json)?)
    }

    /// Every stored evaluation document of `campaign`.
    pub fn evaluations(&self, campaign: &str) -> Result<Vec<Vec<u8>>, EngineError> {
        Ok(self.store.evaluations(campaign)?)
    }

    /// Remove a stored evaluation; false when there was none.
    pub fn delete_evaluation(&self, campaign: &str, id: &str) -> Result<bool, EngineError> {
        Ok(self.store.delete_evaluation(campaign, id)?)
    }

    /// Fold `campaign`'s log into a report one decision at a time (the reports that still need
    /// the logged requests: category affinity, sub-hour buckets).
    pub fn fold_report<F: RowFold>(
        &self,
        campaign: &str,
        history_path: Option<&str>,
        fold: F,
    ) -> Result<F::Out, EngineError> {
        let range = self.campaign(campaign)?.config.reward_range;
        reports::fold(self.store.as_ref(), campaign, range, history_path, fold)
    }
}
