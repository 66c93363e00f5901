//! The clock injected into pure cores.
//!
//! Cores take `now` as a [`Millis`] argument instead of reading a clock, so tests and the
//! simulator drive them with virtual time; actor shells pass a [`MonotonicClock`] reading.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since an arbitrary, fixed origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// Time elapsed from `earlier` to `self` (zero if `earlier` is later).
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// `self` moved forward by `d`.
    pub fn plus(self, d: Duration) -> Millis {
        Millis(self.0.saturating_add(d.as_millis() as u64))
    }
}

/// A real monotonic clock for actor shells.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl MonotonicClock {
    /// The current reading.
    pub fn now(&self) -> Millis {
        Millis(self.origin.elapsed().as_millis() as u64)
    }
}

/// Wall-clock milliseconds since the Unix epoch: the one wall clock of the project, for what is
/// compared across nodes or shown to people (hybrid logical clocks, record timestamps). A
/// clock before 1970 reads as 0.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
