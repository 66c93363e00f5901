//! Rendezvous (highest-random-weight) hashing with blake3.
//!
//! Every node scores every `(key, candidate)` pair with the same hash and ranks candidates by
//! score, so any two nodes with the same candidate set compute the same order without talking.
//! Removing a candidate moves only the keys it ranked first (and shifts it out of every other
//! key's order, leaving the rest of the order as it was); adding one moves to it only the keys
//! it now wins, about `1/(n+1)` of them.
//!
//! Used for the failover order of job owners (the first live node in the order of the job id
//! takes a job over) and for tie-breaks in placement; with a replication factor, the first `r`
//! nodes of a shard key hold its replicas.

use flotilla_protocol::NodeId;

/// The score of `candidate` for `key`: the first 8 bytes of blake3 over the key's length, the
/// key and the candidate id. The length prefix keeps `("ab", "c")` and `("a", "bc")` apart.
pub fn weight(key: &[u8], candidate: &NodeId) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&(key.len() as u64).to_be_bytes());
    h.update(key);
    h.update(candidate.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// Candidates in rendezvous order for `key`: highest score first, ties (never seen in
/// practice) by id. Duplicates are dropped; the order does not depend on the input order.
pub fn rank(key: &[u8], candidates: &[NodeId]) -> Vec<NodeId> {
    let mut scored: Vec<(u64, &NodeId)> = candidates.iter().map(|c| (weight(key, c), c)).collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().map(|(_, c)| c.clone()).collect()
}

/// The first `n` candidates in rendezvous order for `key` (fewer when there are fewer):
/// the holders of a key replicated `n` times.
pub fn top(key: &[u8], candidates: &[NodeId], n: usize) -> Vec<NodeId> {
    let mut r = rank(key, candidates);
    r.truncate(n);
    r
}

/// The candidate ranked first for `key`, `None` when there are none.
pub fn first(key: &[u8], candidates: &[NodeId]) -> Option<NodeId> {
    candidates
        .iter()
        .max_by(|a, b| weight(key, a).cmp(&weight(key, b)).then_with(|| b.cmp(a)))
        .cloned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Ids shaped like ed25519 peer ids: a shared prefix and a varying tail.
    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n)
            .map(|i| NodeId(format!("12D3KooWNode{i:04}xyz")))
            .collect()
    }

    fn key(i: usize) -> Vec<u8> {
        format!("job-{i}").into_bytes()
    }

    #[test]
    fn first_agrees_with_rank() {
        let ns = nodes(7);
        for i in 0..500 {
            assert_eq!(first(&key(i), &ns), rank(&key(i), &ns).first().cloned());
        }
        assert_eq!(first(b"k", &[]), None);
        assert!(rank(b"k", &[]).is_empty());
    }

    #[test]
    fn removing_a_node_moves_only_the_keys_it_owned() {
        let all = nodes(10);
        let gone = all[3].clone();
        let rest: Vec<NodeId> = all.iter().filter(|n| **n != gone).cloned().collect();
        let mut moved = 0;
        for i in 0..10_000 {
            let before = rank(&key(i), &all);
            let after = rank(&key(i), &rest);
            // The order of the remaining nodes is unchanged: failover order is stable.
            let expected: Vec<NodeId> = before.iter().filter(|n| **n != gone).cloned().collect();
            assert_eq!(after, expected, "key {i}");
            if before[0] != after[0] {
                assert_eq!(before[0], gone, "key {i} moved though its owner stayed");
                moved += 1;
            }
        }
        // About a tenth of the keys belonged to the removed node.
        assert!((800..1200).contains(&moved), "{moved} keys moved");
    }

    #[test]
    fn adding_a_node_moves_keys_only_to_it() {
        let old = nodes(9);
        let mut new = old.clone();
        new.push(NodeId("12D3KooWNewcomer".into()));
        for i in 0..10_000 {
            let (a, b) = (first(&key(i), &old), first(&key(i), &new));
            assert!(a == b || b.as_ref() == new.last(), "key {i}");
        }
    }

    #[test]
    fn owners_and_replicas_are_balanced_on_10000_keys() {
        let ns = nodes(10);
        let mut owned: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut held: BTreeMap<NodeId, usize> = BTreeMap::new();
        for i in 0..10_000 {
            let r = top(&key(i), &ns, 2);
            assert_eq!(r.len(), 2);
            *owned.entry(r[0].clone()).or_default() += 1;
            for n in r {
                *held.entry(n).or_default() += 1;
            }
        }
        // Expected 1000 owned (sd ≈ 30) and 2000 held per node; ±15% is about 5 sd.
        for n in &ns {
            let o = owned.get(n).copied().unwrap_or(0);
            let h = held.get(n).copied().unwrap_or(0);
            assert!((850..=1150).contains(&o), "{n} owns {o}");
            assert!((1700..=2300).contains(&h), "{n} holds {h}");
        }
    }

    proptest! {
        #[test]
        fn rank_does_not_depend_on_candidate_order_or_duplicates(
            k in prop::collection::vec(any::<u8>(), 0..32),
            (ns, shuffled) in prop::collection::btree_set("[a-z0-9]{1,12}", 1..12)
                .prop_map(|s| s.into_iter().map(NodeId).collect::<Vec<_>>())
                .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        ) {
            let mut doubled = shuffled.clone();
            doubled.extend(shuffled.iter().take(3).cloned());
            let r = rank(&k, &ns);
            prop_assert_eq!(&r, &rank(&k, &doubled));
            prop_assert_eq!(r.len(), ns.len());
            prop_assert_eq!(top(&k, &shuffled, 2), r.iter().take(2).cloned().collect::<Vec<_>>());
        }
    }
}
