//! The applier: every replica consumes the whole stream in order and applies each event
//! through the same engine entry points a single node uses, so all replicas converge.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures_util::StreamExt;
use tailor_wire::RewardRequest;

use super::event::{ConfigChange, Event};
use super::{Cluster, Outcome, NODE_HEADER};
use crate::campaign::CampaignConfig;
use crate::engine::Engine;
use crate::error::EngineError;

/// Consume the stream from the next unapplied sequence, forever; a broken consumer (NATS
/// restarted, connection lost) is created again from where this replica stands.
pub async fn run(engine: Arc<Engine>, cluster: Arc<Cluster>) {
    loop {
        if let Err(e) = consume(&engine, &cluster).await {
            tracing::warn!(error = %e, applied = cluster.applied(), "cluster consumer stopped; starting again");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn consume(engine: &Arc<Engine>, cluster: &Arc<Cluster>) -> Result<(), String> {
    let stream = cluster
        .js()
        .get_stream(&cluster.settings().stream)
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("{}.>", cluster.settings().subject_prefix),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: cluster.applied() + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    // Every replica publishes its clock each `tick_ms`: a consumer that hears nothing for a few
    // ticks is broken (seen after a NATS restart) and is created again.
    let idle = Duration::from_millis((cluster.settings().tick_ms * 3).max(1_000));
    loop {
        let message = match tokio::time::timeout(idle, messages.next()).await {
            Ok(Some(message)) => message.map_err(|e| e.to_string())?,
            Ok(None) => break,
            Err(_) => return Err(format!("no event for {idle:?}")),
        };
        let info = message.info().map_err(|e| e.to_string())?;
        let seq = info.stream_sequence;
        if seq <= cluster.applied() {
            continue;
        }
        if seq > cluster.applied() + 1 {
            // Retention dropped events this replica never applied: it must be restarted (it
            // then starts from the newest snapshot; docs/scale-out.md).
            tracing::error!(
                seq,
                applied = cluster.applied(),
                "the stream moved past events this replica never applied; restart it"
            );
            metrics::counter!("tailor_cluster_gaps_total").increment(1);
        }
        let own = message
            .headers
            .as_ref()
            .and_then(|h| h.get(NODE_HEADER))
            .is_some_and(|n| n.as_str() == cluster.node());
        let outcome = match Event::decode(&message.payload) {
            Ok(event) => apply(engine, cluster, event, seq),
            Err(e) => {
                tracing::error!(seq, error = %e, "undecodable event in the cluster log; skipped");
                Outcome::Done
            }
        };
        // Only rewards and config changes have a request waiting for what applying decided.
        if own && !matches!(outcome, Outcome::Done) {
            cluster.put_outcome(seq, outcome);
        }
        cluster.set_applied(seq);
        super::snapshot::serve_request(engine, cluster);
    }
    Err("the consumer's message stream ended".into())
}

/// Apply one event at stream sequence `seq`: what recovery does with a log entry, plus closing
/// the windows that ended by the event's stream time.
pub(crate) fn apply(engine: &Engine, cluster: &Cluster, event: Event, seq: u64) -> Outcome {
    let now = match event.at_ms() {
        Some(at) => cluster.advance_time(at),
        None => cluster.stream_time(),
    };
    let outcome = match event {
        Event::Decision {
            campaign,
            deferred,
            mut decision,
        } => {
            decision.campaign = campaign;
            apply_decision(engine, decision, deferred);
            Outcome::Done
        }
        Event::Reward {
            campaign,
            event_id,
            at_ms,
            value,
            action_id,
            reward_id,
        } => {
            let req = RewardRequest {
                value,
                action_id,
                reward_id,
                campaign: None,
            };
            Outcome::Reward(engine.join_one(&campaign, &event_id, &req, at_ms))
        }
        Event::Config {
            campaign,
            revision,
            change,
        } => Outcome::Config(apply_config(engine, cluster, &campaign, revision, change)),
        Event::Tick { .. } => Outcome::Done,
        Event::ShopperDeleted { shopper } => Outcome::Count(engine.delete_shopper(&shopper)),
        Event::SendTime {
            campaign,
            shopper,
            send_event,
            mut decision,
        } => {
            decision.campaign = campaign;
            super::send_time::apply(engine, &shopper, send_event, decision);
            Outcome::Done
        }
        Event::Activate {
            campaign,
            event_id,
            slots,
        } => Outcome::Count(super::activate::apply(engine, &campaign, &event_id, slots)),
        Event::Adjust {
            campaign,
            event_id,
            at_ms,
            value,
            delta,
            action_id,
            adjustment_id,
        } => {
            let req = tailor_wire::AdjustRequest {
                value,
                delta,
                action_id,
                adjustment_id,
                campaign: None,
            };
            // At the publisher's clock: the return window is judged the same everywhere.
            Outcome::Adjust(engine.adjust_at(&campaign, &event_id, &req, at_ms))
        }
        Event::Model { campaign, change } => super::model::apply(engine, &campaign, change, now),
    };
    if now > 0 {
        if let Err(e) = engine.sweep(now) {
            tracing::error!(seq, error = %e, "closing reward windows on stream time failed");
        }
        // Promotion boundaries too pass on stream time: every replica applies one at the same
        // point of the stream.
        match engine.apply_promotions(now) {
            Ok(applied) if applied.is_empty() => {}
            Ok(applied) => {
                let store = engine.store().clone();
                tokio::spawn(async move {
                    if let Err(e) = applied.audit(store).await {
                        tracing::error!(error = %e, "promotion boundaries applied but not audited");
                    }
                });
            }
            Err(e) => {
                tracing::error!(seq, error = %e, "applying promotion boundaries on stream time failed")
            }
        }
    }
    outcome
}

fn apply_decision(engine: &Engine, decision: crate::store::DecisionRecord, deferred: bool) {
    let Ok(rt) = engine.campaign(&decision.campaign) else {
        // Its campaign was deleted after it was decided.
        return;
    };
    // The first decision of an event id wins: a retry published after the de-duplication
    // window is not a second decision.
    match engine.store().event(&decision.campaign, &decision.event_id) {
        Ok(Some(_)) => return,
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "reading a join state failed");
            return;
        }
    }
    if let Err(e) = engine.log_decision(rt, decision, deferred) {
        tracing::error!(error = %e, "logging a decision from the cluster log failed");
    }
}

fn apply_config(
    engine: &Engine,
    cluster: &Cluster,
    campaign: &str,
    revision: u64,
    change: ConfigChange,
) -> Result<(), EngineError> {
    // A change already applied (the stream holds one per revision; a repair may repeat one).
    if cluster.revision(campaign).is_some_and(|r| r >= revision) {
        return Ok(());
    }
    let parse = |json: &[u8]| {
        serde_json::from_slice::<CampaignConfig>(json)
            .map_err(|e| EngineError::invalid_owned("body", e.to_string()))
    };
    match change {
        ConfigChange::Create(json) => {
            engine.create_campaign(parse(&json)?)?;
            cluster.set_revision(campaign, Some(revision));
        }
        ConfigChange::Update(json) => {
            engine.update_campaign(parse(&json)?)?;
            cluster.set_revision(campaign, Some(revision));
        }
        ConfigChange::Delete => {
            engine.delete_campaign(campaign)?;
            cluster.set_revision(campaign, None);
        }
    }
    Ok(())
}
