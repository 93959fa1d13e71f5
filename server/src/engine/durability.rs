//! Group commit: many writers wait on one flush.
//!
//! A writer makes its change, then calls [`GroupCommit::wait`]. One background task flushes the
//! store whenever someone waits, and wakes every writer whose change preceded the flush's start.
//! Durability then costs one fsync per batch, not per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};

use crate::store::{Store, StoreError};

/// Shared handle; clone freely.
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

struct Inner {
    requested: AtomicU64,
    wake: Notify,
    flushed: watch::Sender<Result<u64, String>>,
}

impl GroupCommit {
    /// Start the flusher task on the current tokio runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, _) = watch::channel(Ok(0));
        let inner = Arc::new(Inner {
            requested: AtomicU64::new(0),
            wake: Notify::new(),
            flushed: tx,
        });
        let me = Self {
            inner: inner.clone(),
        };
        tokio::spawn(async move {
            let mut done = 0u64;
            loop {
                inner.wake.notified().await;
                let target = inner.requested.load(Ordering::Acquire);
                if target <= done {
                    continue;
                }
                match store.commit_log().await {
                    Ok(()) => {
                        done = target;
                        let _ = inner.flushed.send_replace(Ok(target));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "flush failed; rewards are not being acknowledged");
                        let _ = inner.flushed.send_replace(Err(e.to_string()));
                    }
                }
            }
        });
        me
    }

    /// Resolve once everything this task wrote before calling is durable.
    pub async fn wait(&self) -> Result<(), StoreError> {
        let mut rx = self.inner.flushed.subscribe();
        let ticket = self.inner.requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.inner.wake.notify_one();
        loop {
            {
                let v = rx.borrow_and_update();
                match &*v {
                    Ok(done) if *done >= ticket => return Ok(()),
                    Ok(_) => {}
                    Err(message) => {
                        return Err(StoreError::Corrupt {
                            what: "flush",
                            message: message.clone(),
                        })
                    }
                }
            }
            if rx.changed().await.is_err() {
                return Err(StoreError::Corrupt {
                    what: "flush",
                    message: "flusher stopped".into(),
                });
            }
            // Another batch finished; if ours is still outstanding make sure the flusher runs.
            self.inner.wake.notify_one();
        }
    }
}
