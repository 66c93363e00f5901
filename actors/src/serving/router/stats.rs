//! The router's counters: plain atomics the node exports to Prometheus
//! (`flotilla_serving_<what>_total`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters.
#[derive(Debug, Default)]
pub struct RouterStats {
    pub(crate) requests: AtomicU64,
    pub(crate) streams: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) deadline_exceeded: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouterStatsSnapshot {
    /// Requests routed, streams included.
    pub requests: u64,
    /// Of which streams.
    pub streams: u64,
    pub cache_hits: u64,
    /// Cacheable requests not found in the cache.
    pub cache_misses: u64,
    /// Requests answered by joining an identical request already in flight.
    pub coalesced: u64,
    /// Second attempts on another replica.
    pub retries: u64,
    /// Requests refused for overload (429).
    pub rejected: u64,
    /// Requests that ended in an error other than overload or deadline.
    pub failed: u64,
    pub deadline_exceeded: u64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl RouterStats {
    /// The counters now.
    pub fn snapshot(&self) -> RouterStatsSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RouterStatsSnapshot {
            requests: l(&self.requests),
            streams: l(&self.streams),
            cache_hits: l(&self.cache_hits),
            cache_misses: l(&self.cache_misses),
            coalesced: l(&self.coalesced),
            retries: l(&self.retries),
            rejected: l(&self.rejected),
            failed: l(&self.failed),
            deadline_exceeded: l(&self.deadline_exceeded),
        }
    }
}
