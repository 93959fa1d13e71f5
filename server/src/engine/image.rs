//! A campaign's whole replicated state as one value, for cluster snapshots
//! (`crate::cluster::snapshot`): its config, its learned state and books (the single-node
//! [`CampaignSnapshot`] encoding) and every join state — open windows with their decisions'
//! vectors, closed ones as their markers — so a replica started from it joins later rewards and
//! closes open windows exactly as a replica that applied the whole stream.

use serde::{Deserialize, Serialize};

use super::{to_json, Engine};
use crate::campaign::CampaignConfig;
use crate::error::EngineError;
use crate::store::{CampaignSnapshot, EventRecord, SendEventRecord, SettledSlot, ShopperRecord};

/// One campaign in a cluster snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignImage {
    /// The campaign's config as JSON (holdout salt included).
    pub config: Vec<u8>,
    /// Learned state, counters and report books (the single-node snapshot encoding); its log
    /// positions are the taking replica's and are not used.
    pub state: CampaignSnapshot,
    /// (event id, join state). An open window's state carries its decision's vectors.
    pub events: Vec<(String, EventRecord)>,
    /// Send-time campaigns: (shopper id, state): frequency caps and per-shopper learning.
    pub shoppers: Vec<(String, ShopperRecord)>,
    /// Send-time campaigns: (event id, send event): what a send's reward joins.
    pub sends: Vec<(String, SendEventRecord)>,
    /// (event id, slot, settled state): what returns (`/adjust`) correct, and their
    /// idempotency keys.
    pub settled: Vec<(String, u32, SettledSlot)>,
}

impl Engine {
    /// The image of campaign `id`. Consistent only while nothing applies events: the cluster
    /// applier takes it between two events (it is the only writer of replicated state).
    pub(crate) fn campaign_image(&self, id: &str) -> Result<CampaignImage, EngineError> {
        let rt = self.campaign(id)?;
        let state = rt.image_snapshot();
        let mut events = Vec::new();
        let mut settled = Vec::new();
        for e in self.store.join_states(id) {
            let mut e = e?;
            for (slot, state) in self.store.settled(id, &e.event_id)? {
                settled.push((e.event_id.clone(), slot, state));
            }
            if !e.is_pruned() && e.vectors.is_empty() {
                // The vectors live in the decision's frame of this replica's log.
                if let Some(d) = self.store.decision(id, e.decision_seq)? {
                    e.vectors = d.actions.into_iter().map(|a| a.x).collect();
                }
            }
            events.push((e.event_id.clone(), e));
        }
        let mut shoppers = Vec::new();
        let mut sends = Vec::new();
        if rt.send_time.is_some() {
            for s in self.store.all_shopper_states() {
                let (shopper, campaign, record) = s?;
                if campaign == id {
                    shoppers.push((shopper, record));
                }
            }
            sends = self.store.send_events(id)?;
        }
        Ok(CampaignImage {
            config: to_json(&rt.config),
            state,
            events,
            shoppers,
            sends,
            settled,
        })
    }

    /// Create the campaign of `image` with its learned state and join states. The decisions
    /// themselves are not in this replica's log (export and offline evaluation start after the
    /// snapshot); open join states keep their vectors, which is what joins and window closing
    /// read when the frame is absent.
    pub(crate) fn restore_image(&self, image: CampaignImage) -> Result<(), EngineError> {
        let config: CampaignConfig = serde_json::from_slice(&image.config)
            .map_err(|e| EngineError::invalid_owned("snapshot", e.to_string()))?;
        let id = config.id.clone();
        let rt = self.create_campaign(config)?;
        let mut state = image.state;
        // Local log positions start over: nothing of this campaign is in the local log yet.
        state.decision_seq = 0;
        state.reward_seq = 0;
        rt.restore(state);
        rt.books.lock().forget_waiting_seqs();
        for (event_id, mut e) in image.events {
            e.event_id = event_id;
            e.campaign = id.clone();
            // No local frame: joins read the kept vectors.
            e.decision_seq = 0;
            if e.is_pruned() {
                self.store.put_event(&e)?;
            } else {
                self.store.index_decision(&e)?;
            }
        }
        for (shopper, mut record) in image.shoppers {
            // A reward seq of the taking replica's log: this log starts over.
            record.last_reward_seq = 0;
            self.store.put_shopper(&shopper, &id, &record)?;
        }
        for (event_id, send) in image.sends {
            self.store.put_send_event(&id, &event_id, &send)?;
        }
        for (event_id, slot, state) in image.settled {
            self.store.put_settled(&id, &event_id, slot, &state)?;
        }
        self.store.put_snapshot(&id, &rt.snapshot())?;
        Ok(())
    }
}
