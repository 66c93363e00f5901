//! Whether the node takes new work, and why not: it is shutting down (draining), or its store
//! failed a write (unhealthy). Shared by the HTTP API (which answers `503` naming the reason),
//! the executor (which refuses task starts with it), the heartbeat (which gossips the unhealthy
//! reason in `NodeInfo::unhealthy`) and training coordinators (which checkpoint and stop when
//! the node drains).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::store::RocksStore;

/// The node's state as far as new work is concerned.
#[derive(Debug)]
pub struct Lifecycle {
    draining: AtomicBool,
    store: RocksStore,
    /// Training runs coordinated here that have not returned yet.
    runs: AtomicUsize,
    runs_changed: Notify,
}

/// Held by a training run while it runs; dropping it counts the run as returned.
#[derive(Debug)]
pub struct RunGuard(Arc<Lifecycle>);

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.0.runs.fetch_sub(1, Ordering::AcqRel);
        self.0.runs_changed.notify_waiters();
    }
}

impl Lifecycle {
    /// A node that takes work, whose health is its store's.
    pub fn new(store: RocksStore) -> Arc<Self> {
        Arc::new(Self {
            draining: AtomicBool::new(false),
            store,
            runs: AtomicUsize::new(0),
            runs_changed: Notify::new(),
        })
    }

    /// From now on the node takes no new work: it is shutting down.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.runs_changed.notify_waiters();
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Why the node is unhealthy (its store failed a write), or `None`.
    pub fn unhealthy(&self) -> Option<String> {
        self.store
            .failure()
            .map(|e| format!("a store write failed: {e}"))
    }

    /// Why the node takes no new work now, or `None` when it does.
    pub fn refusal(&self) -> Option<String> {
        if self.is_draining() {
            return Some("the node is shutting down".into());
        }
        self.unhealthy()
            .map(|reason| format!("the node is unhealthy: {reason}"))
    }

    /// Counts a training run coordinated here until the guard is dropped.
    pub fn run_started(self: &Arc<Self>) -> RunGuard {
        self.runs.fetch_add(1, Ordering::AcqRel);
        RunGuard(self.clone())
    }

    /// Training runs coordinated here that have not returned.
    pub fn running(&self) -> usize {
        self.runs.load(Ordering::Acquire)
    }

    /// Waits until no training run is left, at most `limit`; whether none is.
    pub async fn runs_finished(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let changed = self.runs_changed.notified();
                if self.running() == 0 {
                    return;
                }
                // A bounded poll as well, so a missed wake-up costs at most this long.
                let _ = tokio::time::timeout(Duration::from_millis(200), changed).await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn draining_refuses_and_runs_are_awaited() {
        let dir = tempfile::tempdir().unwrap();
        let l = Lifecycle::new(RocksStore::open(dir.path()).unwrap());
        assert_eq!(l.refusal(), None);
        let guard = l.run_started();
        assert!(!l.runs_finished(Duration::from_millis(50)).await);
        l.start_draining();
        assert_eq!(l.refusal().as_deref(), Some("the node is shutting down"));
        let waiter = {
            let l = l.clone();
            flotilla_actors::task::spawn(
                async move { l.runs_finished(Duration::from_secs(10)).await },
            )
        };
        drop(guard);
        assert!(waiter.await.unwrap());
    }
}
