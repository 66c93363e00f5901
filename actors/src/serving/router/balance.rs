//! Replica choice: least outstanding requests weighted by capacity.
//!
//! A replica's score is `(outstanding + 1) / capacity` — its load after taking this request, in
//! units of its capacity — so a replica twice as fast takes twice the requests, and an idle
//! large replica is preferred to an idle small one. Replicas at `max_inflight` are skipped.
//! Equal scores go to the smallest id, so the choice is deterministic.

use std::cmp::Ordering;

/// What the choice looks at for one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub outstanding: u32,
    /// Relative throughput; 0 counts as 1.
    pub capacity: u32,
    pub max_inflight: u32,
}

/// The outcome of a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The index of the chosen candidate.
    Chosen(usize),
    /// Every eligible replica is at its in-flight limit.
    AllBusy,
    /// No replica other than the excluded one exists.
    NoReplica,
}

fn lighter(a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering {
    // (a.out + 1) / a.cap  vs  (b.out + 1) / b.cap, cross-multiplied in u64 (no rounding).
    let left = (u64::from(a.outstanding) + 1) * u64::from(b.capacity.max(1));
    let right = (u64::from(b.outstanding) + 1) * u64::from(a.capacity.max(1));
    left.cmp(&right).then_with(|| a.id.cmp(b.id))
}

/// Chooses a replica for the next request, never `exclude` (the one a retry avoids).
pub fn choose(candidates: &[Candidate<'_>], exclude: Option<&str>) -> Choice {
    let eligible = || {
        candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| Some(c.id) != exclude)
    };
    if eligible().next().is_none() {
        return Choice::NoReplica;
    }
    eligible()
        .filter(|(_, c)| c.outstanding < c.max_inflight)
        .min_by(|(_, a), (_, b)| lighter(a, b))
        .map_or(Choice::AllBusy, |(i, _)| Choice::Chosen(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, outstanding: u32, capacity: u32) -> Candidate<'_> {
        Candidate {
            id,
            outstanding,
            capacity,
            max_inflight: 100,
        }
    }

    #[test]
    fn load_is_spread_in_proportion_to_capacity() {
        let ids = ["a", "b", "c"];
        let caps = [1u32, 3, 2];
        let mut out = [0u32; 3];
        for _ in 0..60 {
            let cands: Vec<_> = (0..3).map(|i| cand(ids[i], out[i], caps[i])).collect();
            match choose(&cands, None) {
                Choice::Chosen(i) => out[i] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(out, [10, 30, 20]);
    }

    #[test]
    fn ties_go_to_the_smallest_id_whatever_the_order() {
        let a = [cand("z", 0, 1), cand("m", 0, 1), cand("q", 0, 1)];
        assert_eq!(choose(&a, None), Choice::Chosen(1));
        let b = [cand("q", 0, 1), cand("z", 0, 1), cand("m", 0, 1)];
        assert_eq!(choose(&b, None), Choice::Chosen(2));
        // An idle bigger replica beats an idle smaller one.
        assert_eq!(
            choose(&[cand("a", 0, 1), cand("b", 0, 2)], None),
            Choice::Chosen(1)
        );
    }

    #[test]
    fn busy_and_excluded_replicas_are_skipped() {
        let mut full = cand("a", 4, 8);
        full.max_inflight = 4;
        assert_eq!(choose(&[full, cand("b", 9, 1)], None), Choice::Chosen(1));
        assert_eq!(choose(&[full], None), Choice::AllBusy);
        assert_eq!(
            choose(&[cand("a", 0, 1), cand("b", 5, 1)], Some("a")),
            Choice::Chosen(1)
        );
        assert_eq!(choose(&[cand("a", 0, 1)], Some("a")), Choice::NoReplica);
        assert_eq!(choose(&[], None), Choice::NoReplica);
    }
}
