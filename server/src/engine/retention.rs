//! Log retention (docs/security/memory.md): a campaign's log entries older than
//! `[storage] log_retention_days` and its return window are deleted once its learned state
//! covering them is snapshotted, with the join-state markers and settled slots of their events,
//! so the store (and sled's in-memory page metadata, which follows its size) stops growing
//! with traffic.
//!
//! What stays: learned state, counters and report aggregates (all in the snapshot). What goes:
//! the deleted decisions can no longer be exported, evaluated off-policy or explained; a reward
//! or return for one of their events is answered 404 (unknown event), like an id never seen;
//! and such an event id may be decided again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{now_ms, Engine};
use crate::config::StorageSettings;
use crate::error::EngineError;
use crate::store::{expire_margin_ms, Expired};

/// Decisions removed per store call.
const EXPIRE_ROUND: usize = 20_000;
/// After each round the pass rests as long as the round took (at most this long), so a pass
/// that deletes a whole segment's decisions takes at most about half of one core from the
/// requests being served.
const MAX_REST: Duration = Duration::from_secs(1);

/// When and what the retention task deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Entries older than this (and than the campaign's return window) go; 0 keeps everything.
    pub retention_ms: u64,
    /// How often the task runs.
    pub interval_ms: u64,
}

impl RetentionSettings {
    /// From `[storage] log_retention_days` and `log_retention_interval_ms` (validated).
    pub fn of(s: &StorageSettings) -> Self {
        Self {
            retention_ms: (s.log_retention_days * 86_400_000.0).round() as u64,
            interval_ms: s.log_retention_interval_ms.max(1),
        }
    }
}

impl Engine {
    /// Delete every campaign's log entries logged before `now_ms - max(retention_ms, its return
    /// window)` that its stored snapshot covers. Returns what went, per campaign that lost
    /// something.
    pub fn expire_logs(
        &self,
        now_ms: u64,
        retention_ms: u64,
    ) -> Result<Vec<(String, Expired)>, EngineError> {
        let mut out = Vec::new();
        if retention_ms == 0 {
            return Ok(out);
        }
        for rt in self.campaigns() {
            if rt.retired.load(Ordering::Acquire) {
                continue;
            }
            // The return window and a margin for the sweeper's lag first: every reward and
            // return of a decision taken is in the log (and goes with it).
            let window = rt.config.return_window_ms();
            let keep = retention_ms.max(window + expire_margin_ms(window));
            let Some(before) = now_ms.checked_sub(keep) else {
                continue;
            };
            // Only what the snapshot in the store covers: recovery replays the log after its
            // positions, so nothing it needs is ever deleted (whatever snapshot task ran last).
            // Every entry up to the larger of the two is in it: decisions are numbered and
            // counted under the books lock, rewards and returns numbered and learned under the
            // join lock, and the snapshot holds both (as `delete_logs` relies on).
            let Some(snap) = self.store.snapshot(&rt.config.id)? else {
                continue;
            };
            let covered = snap.decision_seq.max(snap.reward_seq);
            if covered == 0 {
                continue;
            }
            // In rounds, so sled's batch and the segment lock stay small.
            let mut total = Expired::default();
            loop {
                let round = std::time::Instant::now();
                let gone = self.store.expire_log(
                    &rt.config.id,
                    before,
                    covered,
                    rt.config.return_window_ms(),
                    EXPIRE_ROUND,
                )?;
                total.up_to = total.up_to.max(gone.up_to);
                total.decisions += gone.decisions;
                total.rewards += gone.rewards;
                total.keys += gone.keys;
                if gone.up_to == 0 || (gone.decisions as usize) < EXPIRE_ROUND {
                    break;
                }
                std::thread::sleep(round.elapsed().min(MAX_REST));
            }
            if total.up_to > 0 {
                out.push((rt.config.id.clone(), total));
            }
        }
        Ok(out)
    }

    /// The retention task: every `interval_ms` (and once at start), off the async workers.
    /// Nothing runs when retention is off; in cluster mode the stream's retention applies.
    pub fn spawn_retention(self: &Arc<Self>, settings: RetentionSettings) {
        if settings.retention_ms == 0 {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(settings.interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if me.cluster().is_some() {
                    continue;
                }
                let e = me.clone();
                let pass = tokio::task::spawn_blocking(move || {
                    e.expire_logs(now_ms(), settings.retention_ms)
                })
                .await;
                match pass {
                    Ok(Ok(done)) => {
                        for (campaign, x) in done {
                            tracing::info!(
                                campaign,
                                up_to = x.up_to,
                                decisions = x.decisions,
                                rewards = x.rewards,
                                keys = x.keys,
                                "deleted log entries past retention"
                            );
                        }
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "log retention failed"),
                    Err(e) => tracing::error!(error = %e, "log retention panicked"),
                }
            }
        });
    }
}
