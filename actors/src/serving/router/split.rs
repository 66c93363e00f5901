//! Traffic split between a deployment's model versions (canaries): which version answers a
//! request, before the router picks a replica of it.
//!
//! The choice hashes a key the caller picks — the client's `user` field, so one user keeps
//! seeing one version during a canary, or the request id where there is none — into a bucket
//! of the total share, so it is deterministic, needs no shared state between nodes, and sends
//! each version its share of distinct keys.

/// The entry of `split` (`(version, percent)` pairs, in the deployment's order) whose share
/// contains `key`'s bucket; `None` when no entry has a share.
pub fn pick<'a, T>(split: &'a [(T, u8)], key: &[u8]) -> Option<&'a T> {
    let total: u64 = split.iter().map(|(_, p)| u64::from(*p)).sum();
    if total == 0 {
        return None;
    }
    let h = blake3::hash(key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    // 2^64 is not a multiple of most totals; the bias is below 2^-56, far under any share.
    let mut bucket = u64::from_be_bytes(first) % total;
    for (version, percent) in split {
        let share = u64::from(*percent);
        if bucket < share {
            return Some(version);
        }
        bucket -= share;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_respected_and_keys_are_sticky() {
        let split = [(1u64, 90u8), (2, 10), (3, 0)];
        let mut counts = [0u32; 4];
        for i in 0..20_000u32 {
            let v = pick(&split, &i.to_be_bytes()).unwrap();
            counts[*v as usize] += 1;
        }
        assert_eq!(counts[3], 0, "a 0% version gets nothing");
        let canary = f64::from(counts[2]) / 20_000.0;
        assert!((0.09..0.11).contains(&canary), "canary share {canary}");
        assert_eq!(pick(&split, b"user-7"), pick(&split, b"user-7"));
    }

    #[test]
    fn promotion_moves_only_canary_keys() {
        // Going from 90/10 to 100/0 changes the version only of keys that were on the canary.
        let before = [("stable", 90u8), ("canary", 10)];
        let after = [("stable", 100u8), ("canary", 0)];
        for i in 0..2_000u32 {
            let k = i.to_be_bytes();
            if pick(&before, &k) == Some(&"stable") {
                assert_eq!(pick(&after, &k), Some(&"stable"));
            }
        }
        assert_eq!(pick::<u8>(&[], b"k"), None);
        assert_eq!(pick(&[(1u8, 0u8)], b"k"), None);
    }
}
