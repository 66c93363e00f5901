//! The dynamic batching core: `(now, input) → batch to run`.
//!
//! Requests wait in arrival order. A batch is taken when the model is idle and either
//! `max_batch` requests wait or the oldest has waited `max_wait`; while a batch runs, arrivals
//! keep queueing, so a busy model gets full batches and an idle one answers a lone request
//! after at most `max_wait`. The queue holds at most `max_queue` requests; beyond that an
//! arrival is refused (the caller answers 429) rather than queued without bound.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::{Error, Result};

/// Dynamic batching settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Largest batch handed to the model.
    pub max_batch: usize,
    /// Longest the oldest waiting request waits for its batch to fill.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Most requests waiting; an arrival beyond it is refused.
    pub max_queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_batch: 16,
            max_wait: Duration::from_millis(5),
            max_queue: 256,
        }
    }
}

impl Config {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if self.max_batch == 0 {
            return Err(Error::InvalidConfig("max_batch must be at least 1".into()));
        }
        if self.max_queue < self.max_batch {
            return Err(Error::InvalidConfig(format!(
                "max_queue ({}) must be at least max_batch ({})",
                self.max_queue, self.max_batch
            )));
        }
        if self.max_wait > Duration::from_secs(10) {
            return Err(Error::InvalidConfig("max_wait must be at most 10s".into()));
        }
        Ok(())
    }
}

/// A waiting request.
#[derive(Debug)]
struct Waiting<T> {
    item: T,
    arrived: Millis,
}

/// The batching state machine over requests of type `T`.
#[derive(Debug)]
pub struct Batcher<T> {
    config: Config,
    queue: VecDeque<Waiting<T>>,
    running: bool,
}

impl<T> Batcher<T> {
    /// An empty batcher; `config` should have been validated.
    pub fn new(config: Config) -> Self {
        Self {
            queue: VecDeque::with_capacity(config.max_queue.min(4096)),
            config,
            running: false,
        }
    }

    /// Queues `item`, arrived at `now`; hands it back when the queue is full.
    pub fn push(&mut self, now: Millis, item: T) -> std::result::Result<(), T> {
        if self.queue.len() >= self.config.max_queue {
            return Err(item);
        }
        self.queue.push_back(Waiting { item, arrived: now });
        Ok(())
    }

    /// The batch to run now, if one is due; the model counts as busy until [`Self::done`].
    pub fn poll(&mut self, now: Millis) -> Option<Vec<T>> {
        if self.running {
            return None;
        }
        let oldest = self.queue.front()?.arrived;
        let full = self.queue.len() >= self.config.max_batch;
        if !full && now.since(oldest) < self.config.max_wait {
            return None;
        }
        let n = self.queue.len().min(self.config.max_batch);
        self.running = true;
        Some(self.queue.drain(..n).map(|w| w.item).collect())
    }

    /// The running batch finished; the next may start.
    pub fn done(&mut self) {
        self.running = false;
    }

    /// When [`Self::poll`] may next return a batch without a new arrival: the oldest request's
    /// wait limit. `None` while a batch runs (its end is the next event) or nothing waits.
    pub fn next_deadline(&self) -> Option<Millis> {
        if self.running {
            return None;
        }
        self.queue
            .front()
            .map(|w| w.arrived.plus(self.config.max_wait))
    }

    /// Drops waiting requests for which `keep` is false (their callers went away), so they
    /// take no place in a batch.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.queue.retain(|w| keep(&w.item));
    }

    /// Requests waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether a batch is running.
    pub fn is_running(&self) -> bool {
        self.running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batcher(max_batch: usize, wait_ms: u64, max_queue: usize) -> Batcher<u32> {
        let c = Config {
            max_batch,
            max_wait: Duration::from_millis(wait_ms),
            max_queue,
        };
        c.validate().unwrap();
        Batcher::new(c)
    }

    #[test]
    fn flushes_when_full() {
        let mut b = batcher(3, 100, 10);
        for i in 0..2 {
            b.push(Millis(0), i).unwrap();
            assert_eq!(b.poll(Millis(1)), None);
        }
        b.push(Millis(2), 2).unwrap();
        assert_eq!(b.poll(Millis(2)), Some(vec![0, 1, 2]));
        assert_eq!(b.queued(), 0);
    }

    #[test]
    fn flushes_a_partial_batch_when_the_oldest_has_waited() {
        let mut b = batcher(8, 10, 10);
        b.push(Millis(100), 1).unwrap();
        b.push(Millis(105), 2).unwrap();
        assert_eq!(b.next_deadline(), Some(Millis(110)));
        assert_eq!(b.poll(Millis(109)), None);
        assert_eq!(b.poll(Millis(110)), Some(vec![1, 2]));
    }

    #[test]
    fn one_batch_at_a_time_and_arrivals_queue_meanwhile() {
        let mut b = batcher(2, 10, 10);
        for i in 0..5 {
            b.push(Millis(0), i).unwrap();
        }
        assert_eq!(b.poll(Millis(0)), Some(vec![0, 1]));
        assert!(b.is_running());
        assert_eq!(b.poll(Millis(50)), None, "busy");
        assert_eq!(b.next_deadline(), None);
        b.done();
        assert_eq!(b.poll(Millis(50)), Some(vec![2, 3]));
        b.done();
        // The last one waited long already: it goes at once, alone.
        assert_eq!(b.poll(Millis(50)), Some(vec![4]));
    }

    #[test]
    fn a_full_queue_refuses() {
        let mut b = batcher(2, 10, 3);
        for i in 0..3 {
            b.push(Millis(0), i).unwrap();
        }
        assert_eq!(b.push(Millis(0), 9), Err(9));
        assert_eq!(b.poll(Millis(0)), Some(vec![0, 1]));
        b.push(Millis(0), 9).unwrap();
    }

    #[test]
    fn abandoned_requests_leave_the_queue() {
        let mut b = batcher(2, 10, 10);
        for i in 0..3 {
            b.push(Millis(0), i).unwrap();
        }
        b.retain(|i| *i != 0);
        assert_eq!(b.poll(Millis(0)), Some(vec![1, 2]));
    }

    #[test]
    fn config_checks() {
        assert!(Config::default().validate().is_ok());
        let zero = Config {
            max_batch: 0,
            ..Config::default()
        };
        assert!(zero.validate().is_err());
        let small_queue = Config {
            max_queue: 1,
            max_batch: 4,
            ..Config::default()
        };
        assert!(small_queue.validate().is_err());
        let c: Config = toml::from_str("max_batch = 4\nmax_wait = \"20ms\"").unwrap();
        assert_eq!(c.max_wait, Duration::from_millis(20));
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push,
        Poll,
        Done,
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Push),
            2 => Just(Op::Poll),
            1 => Just(Op::Done),
            1 => (0..20u64).prop_map(Op::Wait),
        ]
    }

    proptest! {
        /// Whatever the arrivals and timings: nothing is lost or duplicated, order is kept,
        /// bounds hold, one batch runs at a time, and a short batch goes only once its oldest
        /// request has waited `max_wait`.
        #[test]
        fn batches_keep_order_and_bounds(
            ops in proptest::collection::vec(op(), 1..200),
            max_batch in 1..6usize,
            extra_queue in 0..6usize,
            wait in 0..15u64,
        ) {
            let config = Config {
                max_batch,
                max_wait: Duration::from_millis(wait),
                max_queue: max_batch + extra_queue,
            };
            let mut b = Batcher::new(config.clone());
            let mut now = Millis(0);
            let mut next = 0u32;
            let mut accepted = Vec::new();
            let mut arrived = std::collections::BTreeMap::new();
            let mut out = Vec::new();
            for op in ops {
                match op {
                    Op::Push => {
                        let queued = b.queued();
                        match b.push(now, next) {
                            Ok(()) => {
                                accepted.push(next);
                                arrived.insert(next, now);
                            }
                            Err(x) => {
                                prop_assert_eq!(x, next);
                                prop_assert_eq!(queued, config.max_queue);
                            }
                        }
                        next += 1;
                    }
                    Op::Poll => {
                        let running = b.is_running();
                        let queued = b.queued();
                        if let Some(batch) = b.poll(now) {
                            prop_assert!(!running);
                            prop_assert!(!batch.is_empty() && batch.len() <= max_batch);
                            if batch.len() < max_batch {
                                prop_assert_eq!(batch.len(), queued);
                                let oldest = arrived[&batch[0]];
                                prop_assert!(now.since(oldest) >= config.max_wait);
                            }
                            out.extend(batch);
                        }
                    }
                    Op::Done => b.done(),
                    Op::Wait(ms) => now = Millis(now.0 + ms),
                }
                prop_assert!(b.queued() <= config.max_queue);
            }
            b.done();
            if let Some(rest) = b.poll(Millis(u64::MAX)) {
                out.extend(rest);
            }
            while b.queued() > 0 {
                b.done();
                out.extend(b.poll(Millis(u64::MAX)).unwrap_or_default());
            }
            prop_assert_eq!(out, accepted);
        }
    }
}
