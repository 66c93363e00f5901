//! Hybrid logical clocks: timestamps that follow wall time but never go backwards and respect
//! causality across nodes.
//!
//! An [`Hlc`] is `(physical_ms, logical, node)`, totally ordered in that order. The physical part
//! is the largest wall-clock reading seen (locally or in a timestamp received from a peer); the
//! logical part counts events within one millisecond; the node id makes timestamps of different
//! nodes distinct, so two writes are never "equal" and last-writer-wins has one winner.
//!
//! Wall time is injected (`wall_ms`), so every function here is pure. A remote timestamp more
//! than `max_skew_ms` ahead of the local wall clock is refused rather than adopted: adopting it
//! would drag this node's clock (and every clock it talks to) into the future, where it would
//! stay, letting one misconfigured peer win every last-writer-wins race.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// Default bound on how far a peer's clock may run ahead of ours: 60 s. Generous enough for
/// machines without NTP discipline for a while, tight enough that a clock set to next year is
/// caught.
pub const DEFAULT_MAX_SKEW_MS: u64 = 60_000;

/// A hybrid logical clock timestamp. Ordered by `physical_ms`, then `logical`, then `node`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch: the largest wall time this clock has seen.
    pub physical_ms: u64,
    /// Events within the same `physical_ms`.
    pub logical: u32,
    /// The node that issued the timestamp; breaks ties between nodes.
    pub node: NodeId,
}

/// Why a timestamp could not be produced or accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlcError {
    /// A remote timestamp is further ahead of the local wall clock than the skew bound allows.
    #[error(
        "timestamp from {remote} at {remote_ms} ms is {} ms ahead of local wall time {wall_ms} ms (bound {max_skew_ms} ms)",
        remote_ms.saturating_sub(*wall_ms)
    )]
    TooFarAhead {
        remote: NodeId,
        remote_ms: u64,
        wall_ms: u64,
        max_skew_ms: u64,
    },
    /// The clock of `node` has reached the end of its range (only after 2^64 ms).
    #[error("hybrid clock of {node} is exhausted")]
    Exhausted { node: NodeId },
}

impl Hlc {
    /// The smallest timestamp of `node`: what a clock starts from before its first event.
    pub fn zero(node: NodeId) -> Self {
        Hlc {
            physical_ms: 0,
            logical: 0,
            node,
        }
    }

    /// The timestamp of a local event that happens after `self` (this node's last timestamp),
    /// at wall time `wall_ms`. Strictly greater than `self`, even when the wall clock stepped
    /// back.
    pub fn now(&self, wall_ms: u64) -> Result<Hlc, HlcError> {
        if wall_ms > self.physical_ms {
            return Ok(Hlc {
                physical_ms: wall_ms,
                logical: 0,
                node: self.node.clone(),
            });
        }
        self.bump(self.physical_ms, self.logical)
    }

    /// The timestamp of receiving `remote` after `self` (this node's last timestamp), at wall
    /// time `wall_ms`: greater than both `self` and `remote`. A remote timestamp more than
    /// `max_skew_ms` ahead of `wall_ms` is an error and is not adopted.
    pub fn observe(&self, remote: &Hlc, wall_ms: u64, max_skew_ms: u64) -> Result<Hlc, HlcError> {
        check_skew(remote, wall_ms, max_skew_ms)?;
        let physical = wall_ms.max(self.physical_ms).max(remote.physical_ms);
        if physical == wall_ms && wall_ms > self.physical_ms && wall_ms > remote.physical_ms {
            return Ok(Hlc {
                physical_ms: wall_ms,
                logical: 0,
                node: self.node.clone(),
            });
        }
        // The logical counter continues from whichever timestamps share the new physical time.
        let mut logical = 0;
        if physical == self.physical_ms {
            logical = logical.max(self.logical);
        }
        if physical == remote.physical_ms {
            logical = logical.max(remote.logical);
        }
        self.bump(physical, logical)
    }

    /// `(physical, logical + 1)`, carrying into the next millisecond when the counter is full
    /// rather than failing: the clock then runs one millisecond ahead of wall time, which is
    /// harmless and keeps it monotone.
    fn bump(&self, physical_ms: u64, logical: u32) -> Result<Hlc, HlcError> {
        match logical.checked_add(1) {
            Some(l) => Ok(Hlc {
                physical_ms,
                logical: l,
                node: self.node.clone(),
            }),
            None => match physical_ms.checked_add(1) {
                Some(p) => Ok(Hlc {
                    physical_ms: p,
                    logical: 0,
                    node: self.node.clone(),
                }),
                None => Err(HlcError::Exhausted {
                    node: self.node.clone(),
                }),
            },
        }
    }
}

impl std::fmt::Display for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}@{}",
            self.physical_ms,
            self.logical,
            self.node.short()
        )
    }
}

/// Checks that `remote` is at most `max_skew_ms` ahead of the local wall time `wall_ms`.
/// Used on every timestamp a peer sends, before anything derived from it is kept.
pub fn check_skew(remote: &Hlc, wall_ms: u64, max_skew_ms: u64) -> Result<(), HlcError> {
    if remote.physical_ms > wall_ms.saturating_add(max_skew_ms) {
        return Err(HlcError::TooFarAhead {
            remote: remote.node.clone(),
            remote_ms: remote.physical_ms,
            wall_ms,
            max_skew_ms,
        });
    }
    Ok(())
}

/// A node's clock: its last timestamp and its skew bound. A thin stateful wrapper over the pure
/// [`Hlc::now`] and [`Hlc::observe`], for cores that issue timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HlcClock {
    last: Hlc,
    max_skew_ms: u64,
}

impl HlcClock {
    /// A clock for `node` that has issued nothing yet.
    pub fn new(node: NodeId, max_skew_ms: u64) -> Self {
        Self {
            last: Hlc::zero(node),
            max_skew_ms,
        }
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> &Hlc {
        &self.last
    }

    /// The skew bound in force.
    pub fn max_skew_ms(&self) -> u64 {
        self.max_skew_ms
    }

    /// Issues the timestamp of a local event.
    pub fn now(&mut self, wall_ms: u64) -> Result<Hlc, HlcError> {
        let next = self.last.now(wall_ms)?;
        self.last = next.clone();
        Ok(next)
    }

    /// Moves the clock past a timestamp that was already accepted once (read back from the
    /// store), without the skew check: refusing it now would only let new local writes lose to
    /// entries this node already holds.
    pub fn witness(&mut self, seen: &Hlc, wall_ms: u64) -> Result<Hlc, HlcError> {
        let next = self.last.observe(seen, wall_ms, u64::MAX)?;
        self.last = next.clone();
        Ok(next)
    }

    /// Takes in a remote timestamp; on error the clock is unchanged.
    pub fn observe(&mut self, remote: &Hlc, wall_ms: u64) -> Result<Hlc, HlcError> {
        let next = self.last.observe(remote, wall_ms, self.max_skew_ms)?;
        self.last = next.clone();
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(p: u64, l: u32, n: &str) -> Hlc {
        Hlc {
            physical_ms: p,
            logical: l,
            node: NodeId::from(n),
        }
    }

    #[test]
    fn now_follows_wall_time_and_never_goes_back() {
        let t0 = Hlc::zero("a".into());
        let t1 = t0.now(100).unwrap();
        assert_eq!(t1, at(100, 0, "a"));
        // Same millisecond: logical counts.
        assert_eq!(t1.now(100).unwrap(), at(100, 1, "a"));
        // Wall clock stepped back: physical holds, logical counts.
        assert_eq!(t1.now(50).unwrap(), at(100, 1, "a"));
        assert_eq!(t1.now(101).unwrap(), at(101, 0, "a"));
    }

    #[test]
    fn observe_moves_past_the_remote() {
        let mine = at(100, 3, "a");
        // Remote ahead of both (within skew): adopt its physical time, count past its logical.
        assert_eq!(
            mine.observe(&at(150, 7, "b"), 120, 1000).unwrap(),
            at(150, 8, "a")
        );
        // Remote behind: local wins.
        assert_eq!(
            mine.observe(&at(90, 9, "b"), 100, 1000).unwrap(),
            at(100, 4, "a")
        );
        // Same physical on both: larger logical + 1.
        assert_eq!(
            mine.observe(&at(100, 9, "b"), 100, 1000).unwrap(),
            at(100, 10, "a")
        );
        // Wall time ahead of both: reset logical.
        assert_eq!(
            mine.observe(&at(150, 9, "b"), 200, 1000).unwrap(),
            at(200, 0, "a")
        );
    }

    #[test]
    fn a_remote_too_far_ahead_is_refused_and_not_adopted() {
        let mut clock = HlcClock::new("a".into(), 1000);
        clock.now(5000).unwrap();
        let before = clock.last().clone();
        let err = clock.observe(&at(6001, 0, "b"), 5000).unwrap_err();
        assert!(
            matches!(err, HlcError::TooFarAhead { ref remote, remote_ms: 6001, .. } if remote.as_str() == "b")
        );
        assert!(err.to_string().contains("1001 ms ahead"), "{err}");
        assert_eq!(clock.last(), &before);
        // Exactly at the bound is accepted.
        assert_eq!(
            clock.observe(&at(6000, 0, "b"), 5000).unwrap(),
            at(6000, 1, "a")
        );
    }

    #[test]
    fn a_full_logical_counter_carries_into_the_next_millisecond() {
        assert_eq!(at(7, u32::MAX, "a").now(7).unwrap(), at(8, 0, "a"));
        assert!(matches!(
            at(u64::MAX, u32::MAX, "a").now(0),
            Err(HlcError::Exhausted { .. })
        ));
    }

    #[test]
    fn order_is_physical_then_logical_then_node() {
        assert!(at(1, 9, "z") < at(2, 0, "a"));
        assert!(at(1, 1, "z") < at(1, 2, "a"));
        assert!(at(1, 1, "a") < at(1, 1, "b"));
    }

    proptest! {
        /// Any interleaving of local events and receipts yields strictly increasing timestamps,
        /// each greater than every accepted remote one (causality).
        #[test]
        fn monotone_and_causal(events in prop::collection::vec((any::<bool>(), 0u64..10_000, 0u64..12_000, 0u32..5), 1..60)) {
            let mut clock = HlcClock::new("a".into(), 1000);
            let mut prev = clock.last().clone();
            for (receive, wall, remote_ms, remote_l) in events {
                let next = if receive {
                    let remote = at(remote_ms, remote_l, "b");
                    match clock.observe(&remote, wall) {
                        Ok(t) => { prop_assert!(t > remote); t }
                        Err(_) => { prop_assert!(remote_ms > wall + 1000); prop_assert_eq!(clock.last(), &prev); continue; }
                    }
                } else {
                    clock.now(wall).unwrap()
                };
                prop_assert!(next > prev);
                prop_assert!(next.physical_ms >= wall);
                prev = next;
            }
        }
    }
}
