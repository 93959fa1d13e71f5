//! Recovery: each campaign's log replayed past its snapshot at start.

use std::sync::atomic::Ordering;

use super::{report_book, Engine};
use crate::error::EngineError;
use crate::store::LogRecord;

impl Engine {
    /// Bring each campaign's in-memory state up to the end of its log.
    pub(super) fn replay(&self) -> Result<(), EngineError> {
        let campaigns = self.campaigns.read().clone();
        let (mut replayed_rewards, mut replayed_decisions) = (0u64, 0u64);
        for rt in campaigns.values() {
            let (decision_seq, reward_seq, rebuild_from) = {
                let books = rt.books.lock();
                (books.decision_seq, books.reward_seq, books.rebuild_from())
            };
            // From the first decision the report aggregates wait for again, when that is
            // earlier: what the snapshot covers is only re-settled there, not counted.
            let mut from = decision_seq.min(reward_seq);
            if rebuild_from > 0 {
                from = from.min(rebuild_from - 1);
            }
            for record in self.store.log_after(&rt.config.id, from) {
                match record? {
                    LogRecord::Decision(d) if d.seq > decision_seq => {
                        let facts = report_book::DecisionFacts::of(&d);
                        rt.books.lock().count_decision(
                            d.seq,
                            &facts,
                            d.actions.iter().map(|a| a.id.as_str()),
                        );
                        replayed_decisions += 1;
                    }
                    LogRecord::Decision(d) if rebuild_from > 0 && d.seq >= rebuild_from => {
                        rt.books.lock().reopen_decision(
                            &report_book::DecisionFacts::of(&d),
                            d.actions.iter().map(|a| a.id.as_str()),
                        );
                    }
                    LogRecord::Reward(mut r) if r.seq > reward_seq => {
                        // A log written before reward ranges existed may hold any finite value.
                        r.value = rt.config.reward_range.clamp(r.value);
                        self.learn(rt, &r)?;
                        replayed_rewards += 1;
                    }
                    LogRecord::Reward(mut r) if rebuild_from > 0 => {
                        r.value = rt.config.reward_range.clamp(r.value);
                        rt.books.lock().reapply_reward(&r);
                    }
                    // Numbered under the join lock like rewards, and covered by `reward_seq`.
                    LogRecord::Adjustment(a) if a.seq > reward_seq => {
                        self.learn_adjustment(rt, &a);
                        replayed_rewards += 1;
                    }
                    LogRecord::Adjustment(a) if rebuild_from > 0 => {
                        rt.books.lock().reapply_adjustment(&a.entry);
                    }
                    // Covered by the snapshot, and nothing to wait for again.
                    _ => {}
                }
            }
            rt.learner.write().warm();
            rt.snapshot_mark.store(rt.mark(), Ordering::Release);
        }
        tracing::info!(
            campaigns = campaigns.len(),
            replayed_rewards,
            replayed_decisions,
            "state recovered"
        );
        Ok(())
    }
}
