//! Counters of a batcher, shared between its task and whoever exports them (the node's
//! Prometheus registry): plain atomics, no locks on the request path.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters.
#[derive(Debug)]
pub struct BatchStats {
    batches: AtomicU64,
    requests: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    /// `sizes[n]` counts batches of `n` requests, `n` up to `max_batch`.
    sizes: Vec<AtomicU64>,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchStatsSnapshot {
    /// Batches run.
    pub batches: u64,
    /// Requests answered by the model (successfully or not).
    pub requests: u64,
    /// Requests refused because the queue was full.
    pub refused: u64,
    /// Requests whose batch failed.
    pub failed: u64,
    /// `batch_sizes[n]` = batches of exactly `n` requests: the batch size histogram.
    pub batch_sizes: Vec<u64>,
}

impl BatchStats {
    /// Zeroed counters for batches up to `max_batch`.
    pub fn new(max_batch: usize) -> Self {
        Self {
            batches: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            sizes: (0..=max_batch).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn batch(&self, size: usize, ok: bool) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(size as u64, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(size as u64, Ordering::Relaxed);
        }
        // Batches never exceed max_batch; a larger one would be counted in the last bucket.
        let i = size.min(self.sizes.len().saturating_sub(1));
        if let Some(c) = self.sizes.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> BatchStatsSnapshot {
        BatchStatsSnapshot {
            batches: self.batches.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            batch_sizes: self
                .sizes
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        }
    }
}
