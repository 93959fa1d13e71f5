//! Background duties: closing reward windows, snapshotting what changed, shopper retention, the
//! autopilot (`ope/autopilot.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{now_ms, send_time, Engine};
use crate::error::EngineError;

/// How often send-time shopper states past their retention are looked for.
const SHOPPER_PURGE_INTERVAL_MS: u64 = 3_600_000;

impl Engine {
    /// Write a snapshot of the learned state of every campaign that changed since its last
    /// one.
    pub fn snapshot_all(&self) -> Result<(), EngineError> {
        for rt in self.campaigns() {
            if rt.retired.load(Ordering::Acquire)
                || rt.mark() == rt.snapshot_mark.load(Ordering::Acquire)
            {
                continue;
            }
            let snapshot = rt.snapshot();
            self.store.put_snapshot(&rt.config.id, &snapshot)?;
            rt.snapshot_mark.store(
                snapshot.decision_seq.max(snapshot.reward_seq),
                Ordering::Release,
            );
        }
        Ok(())
    }

    /// Background duties: closing reward windows and snapshotting. Runs until the process ends.
    pub fn spawn_background(self: &Arc<Self>) {
        send_time::spawn_prior_refresh(self.clone());
        crate::ope::autopilot::spawn(self.clone());
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_millis(me.settings.sweep_interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // In cluster mode windows close on stream time, as each replica applies the
                // stream (crate::cluster), never on this clock.
                if me.cluster().is_some() {
                    continue;
                }
                if let Err(e) = me.sweep(now_ms()) {
                    tracing::error!(error = %e, "closing reward windows failed");
                }
                if let Err(e) = me.promotion_tick(now_ms()).await {
                    tracing::error!(error = %e, "applying promotion boundaries failed");
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_millis(me.settings.snapshot_interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_purge = 0u64;
            loop {
                tick.tick().await;
                if let Err(e) = me.snapshot_all() {
                    tracing::error!(error = %e, "snapshot failed");
                }
                // Retention is in days: scanning shopper states hourly (and once at start) is
                // plenty, off the async workers.
                if now_ms().saturating_sub(last_purge) >= SHOPPER_PURGE_INTERVAL_MS {
                    last_purge = now_ms();
                    let e = me.clone();
                    match tokio::task::spawn_blocking(move || e.purge_shoppers(now_ms())).await {
                        Ok(Ok(0)) => {}
                        Ok(Ok(n)) => tracing::info!(
                            states = n,
                            "dropped send-time shopper states past retention"
                        ),
                        Ok(Err(e)) => tracing::error!(error = %e, "shopper retention sweep failed"),
                        Err(e) => tracing::error!(error = %e, "shopper retention sweep panicked"),
                    }
                }
            }
        });
    }
}
