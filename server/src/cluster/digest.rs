//! A digest of a campaign's learned state and counters: equal on every replica that applied
//! the same events in the same order (the cluster tests compare it across replicas).

use serde::Serialize;
use utoipa::ToSchema;
use xxhash_rust::xxh3::Xxh3;

use crate::engine::Engine;
use crate::error::EngineError;

/// `GET /admin/v1/campaigns/{id}/digest`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Digest {
    pub campaign: String,
    /// 128-bit hash (hex) of every policy's learned state, the per-item counters and the
    /// decision and reward counts.
    pub digest: String,
    pub decisions: u64,
    pub rewards: u64,
    /// Cluster mode: the last stream sequence applied on this replica (null on a single node).
    pub applied_seq: Option<u64>,
}

impl Engine {
    /// The digest of `campaign`'s learned state, taken under its join lock (no reward is half
    /// applied).
    pub fn digest(&self, campaign: &str) -> Result<Digest, EngineError> {
        let rt = self.campaign(campaign)?;
        let mut h = Xxh3::new();
        let (decisions, rewards);
        {
            let _joins = rt.joins.lock();
            let books = rt.books.lock();
            let learner = rt.learner.read();
            for (name, policy) in &learner.policies {
                h.update(name.as_bytes());
                h.update(&[0]);
                // Through JSON: its objects are sorted by key, so two equal states hash alike
                // whatever order their maps were filled in.
                let canonical = serde_json::to_value(policy)
                    .and_then(|v| serde_json::to_vec(&v))
                    .unwrap_or_else(|_| postcard::to_stdvec(policy).unwrap_or_default());
                h.update(&canonical);
            }
            let mut counters: Vec<_> = books.counters.iter().collect();
            counters.sort_by(|a, b| a.0.cmp(b.0));
            for (id, c) in counters {
                h.update(id.as_bytes());
                h.update(&[0]);
                h.update(&c.exposures.to_le_bytes());
                h.update(&c.rewards.to_le_bytes());
                h.update(&c.reward_sum.to_bits().to_le_bytes());
            }
            decisions = books.decisions;
            rewards = books.rewards;
            h.update(&decisions.to_le_bytes());
            h.update(&rewards.to_le_bytes());
        }
        Ok(Digest {
            campaign: campaign.to_string(),
            digest: format!("{:032x}", h.digest128()),
            decisions,
            rewards,
            applied_seq: self.cluster().map(|c| c.applied()),
        })
    }
}
