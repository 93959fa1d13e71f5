//! The engine's entry points for handlers that work the same in both modes: single-node calls
//! go straight to the engine; in cluster mode the change goes through the stream first.

use std::sync::Arc;

use async_nats::jetstream::kv::{CreateErrorKind, UpdateErrorKind};
use tailor_wire::{DecideResponse, RewardRequest, RewardResponse, RewardStatus};

use super::event::{config_key, ConfigChange, Event};
use super::{Cluster, Outcome};
use crate::campaign::{CampaignConfig, CampaignKind};
use crate::engine::etag::{revision_etag, IfMatch};
use crate::engine::{
    check_reward_request, now_ms, response_of_decision, reward_key, CampaignRuntime, DecideInput,
    Engine, Ranked,
};
use crate::error::EngineError;

fn unavailable(what: &str, e: &dyn std::fmt::Display) -> EngineError {
    EngineError::Unavailable {
        message: format!("the cluster's config bucket did not take the {what}: {e}"),
    }
}

impl Engine {
    /// Rank items ([`Engine::decide_items`]); in cluster mode the decision is answered once it
    /// is in the stream, and a retried event id decided on another replica gets the recorded
    /// decision.
    pub async fn decide_items_replicated(
        &self,
        campaign: &str,
        input: DecideInput,
    ) -> Result<DecideResponse, EngineError> {
        let Some(cluster) = self.cluster() else {
            return self.decide_items(campaign, input);
        };
        let rt = self.campaign(campaign)?;
        if rt.config.kind != CampaignKind::Items {
            return Err(EngineError::invalid_owned(
                "body",
                format!(
                    "campaign {campaign:?} is a send_time campaign: send shopper_id and timezone"
                ),
            ));
        }
        let (decision, defer, distribution) = match self.choose_items(rt, input)? {
            Ranked::Recorded(response) => return Ok(response),
            Ranked::New {
                decision,
                defer,
                distribution,
            } => (decision, defer, distribution),
            Ranked::Previewed(_) => unreachable!("a decide is not a preview"),
        };
        let response = response_of_decision(&decision, distribution);
        let (event_id, candidate_set) = (decision.event_id.clone(), decision.candidate_set);
        let event = Event::Decision {
            campaign: campaign.to_string(),
            deferred: defer,
            decision,
        };
        // NATS unreachable: serve from the local posteriors, unlogged (its rewards will be
        // unknown), rather than fail the page.
        let unlogged = || {
            metrics::counter!("tailor_cluster_unlogged_decisions_total").increment(1);
        };
        if !cluster.connected() {
            unlogged();
            return Ok(response);
        }
        let (seq, duplicate) = match cluster.publish(cluster.subject(campaign), &event).await {
            Ok(ack) => ack,
            Err(e) => {
                tracing::warn!(error = %e, "decision not in the cluster log; served unlogged");
                unlogged();
                return Ok(response);
            }
        };
        if !duplicate {
            return Ok(response);
        }
        // Another replica decided this event id first: answer with its decision.
        cluster.wait_applied(seq).await?;
        self.replayed_decision(campaign, &event_id, candidate_set)?
            .ok_or_else(|| EngineError::EventNotFound { id: event_id })
    }

    /// Create a campaign ([`Engine::create_campaign`]); in cluster mode through the config
    /// bucket (an id taken there is a 409) and the stream, answered once applied here.
    pub async fn create_campaign_replicated(
        &self,
        mut config: CampaignConfig,
    ) -> Result<Arc<CampaignRuntime>, EngineError> {
        let Some(cluster) = self.cluster() else {
            return self.create_campaign(config);
        };
        // Every replica must draw the same holdout assignments.
        if config.holdout_salt.is_empty() {
            config.holdout_salt = crate::engine::holdout::new_salt();
        }
        config.validate()?;
        super::snapshot::check_reward_wait(cluster.settings(), &config)?;
        if self.campaign(&config.id).is_ok() {
            return Err(EngineError::CampaignExists { id: config.id });
        }
        let json = serde_json::to_vec(&config).expect("JSON encoding of a config");
        let revision = cluster
            .configs()
            .create(config_key(&config.id), json.clone().into())
            .await
            .map_err(|e| match e.kind() {
                CreateErrorKind::AlreadyExists => EngineError::CampaignExists {
                    id: config.id.clone(),
                },
                _ => unavailable("campaign", &e),
            })?;
        self.config_change(cluster, &config.id, revision, ConfigChange::Create(json))
            .await?;
        self.campaign(&config.id)
    }

    /// Replace a campaign's config ([`Engine::update_campaign`]); in cluster mode with
    /// compare-and-set on the revision this replica applied: another writer's change since is a
    /// 409 `config_conflict`.
    pub async fn update_campaign_replicated(
        &self,
        config: CampaignConfig,
    ) -> Result<Arc<CampaignRuntime>, EngineError> {
        self.update_campaign_replicated_if(config, None).await
    }

    /// [`Engine::update_campaign_replicated`] only while the campaign's `ETag` passes
    /// `if_match`, else 412. In cluster mode the compare-and-set is on the revision the tag
    /// names, in the bucket: a write based on an older read fails even when another replica
    /// wrote in between.
    pub async fn update_campaign_replicated_if(
        &self,
        config: CampaignConfig,
        if_match: Option<&IfMatch>,
    ) -> Result<Arc<CampaignRuntime>, EngineError> {
        let Some(cluster) = self.cluster() else {
            return self.update_campaign_if(config, |old| match if_match {
                Some(m) => m.check(&old.config.id, &self.campaign_etag(old)),
                None => Ok(()),
            });
        };
        let old = self.campaign(&config.id)?;
        let revision = expected_revision(cluster, &config.id, if_match)?;
        // Checked here with what the engine fills in, so a bad config is a 400 before anything
        // is written.
        let mut checked = config.clone();
        if checked.holdout_salt.is_empty() {
            checked.holdout_salt = old.config.holdout_salt.clone();
        }
        if checked.personalizer.is_none() {
            checked.personalizer = old.config.personalizer.clone();
        }
        checked.validate()?;
        super::snapshot::check_reward_wait(cluster.settings(), &checked)?;
        let json = serde_json::to_vec(&config).expect("JSON encoding of a config");
        let new_revision = cluster
            .configs()
            .update(config_key(&config.id), json.clone().into(), revision)
            .await
            .map_err(|e| match e.kind() {
                UpdateErrorKind::WrongLastRevision => EngineError::ConfigConflict {
                    id: config.id.clone(),
                    revision,
                },
                _ => unavailable("campaign", &e),
            });
        let new_revision = match new_revision {
            Err(EngineError::ConfigConflict { .. }) if if_match.is_some() => {
                return Err(stale(cluster, &config.id, revision).await)
            }
            other => other?,
        };
        self.config_change(
            cluster,
            &config.id,
            new_revision,
            ConfigChange::Update(json),
        )
        .await?;
        self.campaign(&config.id)
    }

    /// Delete a campaign ([`Engine::delete_campaign`]); in cluster mode with compare-and-set on
    /// the revision this replica applied.
    pub async fn delete_campaign_replicated(&self, id: &str) -> Result<(), EngineError> {
        self.delete_campaign_replicated_if(id, None).await
    }

    /// [`Engine::delete_campaign_replicated`] only while the campaign's `ETag` passes
    /// `if_match`, else 412 (in cluster mode: compare-and-set on the revision it names).
    pub async fn delete_campaign_replicated_if(
        &self,
        id: &str,
        if_match: Option<&IfMatch>,
    ) -> Result<(), EngineError> {
        let Some(cluster) = self.cluster() else {
            return self.delete_campaign_if(id, if_match);
        };
        self.campaign(id)?;
        let revision = expected_revision(cluster, id, if_match)?;
        let key = config_key(id);
        let deleted = cluster
            .configs()
            .delete_expect_revision(&key, Some(revision))
            .await
            .map_err(|e| {
                // The bucket answers a stale revision with "wrong last sequence".
                let text = format!("{e} {e:?}");
                if text.contains("wrong last sequence") || text.contains("WrongLastSequence") {
                    EngineError::ConfigConflict {
                        id: id.to_string(),
                        revision,
                    }
                } else {
                    unavailable("deletion", &e)
                }
            });
        match deleted {
            Err(EngineError::ConfigConflict { .. }) if if_match.is_some() => {
                return Err(stale(cluster, id, revision).await)
            }
            other => other?,
        }
        let deleted_at = match cluster.configs().entry(&key).await {
            Ok(Some(entry)) => entry.revision,
            _ => revision + 1,
        };
        self.config_change(cluster, id, deleted_at, ConfigChange::Delete)
            .await
    }

    /// Publish a config change at `revision` and wait for it to be applied here.
    async fn config_change(
        &self,
        cluster: &Cluster,
        campaign: &str,
        revision: u64,
        change: ConfigChange,
    ) -> Result<(), EngineError> {
        let event = Event::Config {
            campaign: campaign.to_string(),
            revision,
            change,
        };
        let (seq, _) = cluster.publish(cluster.subject(campaign), &event).await?;
        cluster.wait_applied(seq).await?;
        match cluster.take_outcome(seq) {
            Some(Outcome::Config(result)) => result,
            _ => Ok(()),
        }
    }
}

impl Cluster {
    /// A reward in cluster mode: published as received, answered once JetStream acknowledged
    /// it and this replica applied it (its status is what every replica decided).
    pub(crate) async fn reward(
        &self,
        engine: &Engine,
        campaign: &str,
        event_id: &str,
        req: RewardRequest,
    ) -> Result<RewardResponse, EngineError> {
        check_reward_request(&req)?;
        engine.campaign(campaign)?;
        self.require_connected("the reward")?;
        let event = Event::Reward {
            campaign: campaign.to_string(),
            event_id: event_id.to_string(),
            at_ms: now_ms(),
            value: req.value,
            action_id: req.action_id.clone(),
            reward_id: req.reward_id.clone(),
        };
        let subject = self.subject(campaign);
        let started = std::time::Instant::now();
        let (seq, duplicate) = self.publish(subject.clone(), &event).await?;
        metrics::histogram!("tailor_cluster_reward_ack_seconds")
            .record(started.elapsed().as_secs_f64());
        self.wait_applied(seq).await?;
        let status = if !duplicate {
            match self.take_outcome(seq) {
                Some(Outcome::Reward(result)) => result?,
                _ => RewardStatus::Duplicate,
            }
        } else if joined(engine, campaign, event_id, &req)? {
            RewardStatus::Duplicate
        } else {
            // The first copy was refused (say, it came before its decision): this one is
            // judged on its own, without the message id that matched the first.
            let (seq, _) = self.publish_unkeyed(subject, &event).await?;
            self.wait_applied(seq).await?;
            match self.take_outcome(seq) {
                Some(Outcome::Reward(result)) => result?,
                _ => RewardStatus::Duplicate,
            }
        };
        Ok(RewardResponse {
            event_id: event_id.to_string(),
            status,
        })
    }

    /// Rewards one by one (each acknowledged before the next is published).
    pub(crate) async fn reward_batch(
        &self,
        engine: &Engine,
        items: Vec<(String, String, RewardRequest)>,
    ) -> Vec<Result<RewardResponse, EngineError>> {
        let mut out = Vec::with_capacity(items.len());
        for (campaign, event_id, req) in items {
            out.push(self.reward(engine, &campaign, &event_id, req).await);
        }
        out
    }
}

/// The bucket revision a write of `campaign` compares against: the one applied here, or with
/// `If-Match`, the revision its tag names (a tag naming an older one than applied here is 412
/// at once; a newer one — read from a replica ahead of this one — is left to the bucket).
fn expected_revision(
    cluster: &Cluster,
    campaign: &str,
    if_match: Option<&IfMatch>,
) -> Result<u64, EngineError> {
    let local = cluster
        .revision(campaign)
        .ok_or_else(|| EngineError::CampaignNotFound {
            id: campaign.to_string(),
        })?;
    let Some(m) = if_match else {
        return Ok(local);
    };
    if m.matches(&revision_etag(local)) {
        return Ok(local);
    }
    match m.revisions().into_iter().max() {
        Some(named) if named > local => Ok(named),
        _ => Err(EngineError::PreconditionFailed {
            id: campaign.to_string(),
            current: revision_etag(local),
        }),
    }
}

/// The 412 of a compare-and-set that lost in the bucket, naming the bucket's current revision.
async fn stale(cluster: &Cluster, campaign: &str, expected: u64) -> EngineError {
    let current = match cluster.configs().entry(config_key(campaign)).await {
        Ok(Some(entry)) => entry.revision,
        _ => expected,
    };
    EngineError::PreconditionFailed {
        id: campaign.to_string(),
        current: revision_etag(current),
    }
}

/// Whether the join state here already holds this reward's idempotency key.
fn joined(
    engine: &Engine,
    campaign: &str,
    event_id: &str,
    req: &RewardRequest,
) -> Result<bool, EngineError> {
    let Some(event) = engine.store().event(campaign, event_id)? else {
        return Ok(false);
    };
    if event.is_pruned() {
        // Closed: whatever it held was applied; a retry changes nothing.
        return Ok(true);
    }
    let slot = match &req.action_id {
        None => 0,
        Some(a) => match event.actions.iter().position(|x| &x.id == a) {
            Some(i) => i,
            None => return Ok(false),
        },
    };
    Ok(event
        .slots
        .get(slot)
        .is_some_and(|s| s.reward_ids.contains(&reward_key(req))))
}
