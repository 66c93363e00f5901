//! The split of a flat parameter vector into contiguous shard ranges.
//!
//! `n` parameters over `s` shards: the first `n % s` shards hold `n / s + 1` values, the rest
//! `n / s`. Every node computes the same split from `(n, s)`, so workers and servers agree on
//! ranges without talking, and a checkpoint written with one split can be re-cut for another
//! (resharding on load) by copying ranges of the flat vector.

use std::ops::Range;

/// Contiguous, ordered, non-overlapping ranges covering `0..n`; ranges are empty only when
/// `n < s`. `s = 0` is treated as one shard.
pub fn ranges(n: usize, s: usize) -> Vec<Range<usize>> {
    let s = s.max(1);
    let (base, extra) = (n / s, n % s);
    let mut out = Vec::with_capacity(s);
    let mut start = 0;
    for i in 0..s {
        let len = base + usize::from(i < extra);
        out.push(start..start + len);
        start += len;
    }
    out
}

/// The shard holding parameter `index` under [`ranges`]`(n, s)`, `None` when out of range.
pub fn shard_of(index: usize, n: usize, s: usize) -> Option<usize> {
    ranges(n, s).iter().position(|r| r.contains(&index))
}

/// Cuts `flat` into the shards' slices.
pub fn split(flat: &[f32], s: usize) -> Vec<Vec<f32>> {
    ranges(flat.len(), s)
        .into_iter()
        .map(|r| flat[r].to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn small_cases() {
        assert_eq!(ranges(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(ranges(2, 3), vec![0..1, 1..2, 2..2]);
        assert_eq!(ranges(5, 0), vec![0..5]);
        assert_eq!(shard_of(6, 10, 3), Some(1));
        assert_eq!(shard_of(10, 10, 3), None);
        assert_eq!(split(&[1.0, 2.0, 3.0], 2), vec![vec![1.0, 2.0], vec![3.0]]);
    }

    proptest! {
        #[test]
        fn ranges_tile_the_vector_evenly(n in 0usize..10_000, s in 1usize..64) {
            let r = ranges(n, s);
            prop_assert_eq!(r.len(), s);
            prop_assert_eq!(r[0].start, 0);
            prop_assert_eq!(r[s - 1].end, n);
            for w in r.windows(2) {
                prop_assert_eq!(w[0].end, w[1].start);
                prop_assert!(w[0].len() >= w[1].len() && w[0].len() - w[1].len() <= 1);
            }
        }
    }
}
