//! The read order of a dataset version for training: seeded, partitioned across readers,
//! resumable from a cursor.
//!
//! For an epoch seed, the shards are put in a shuffled order and each shard's rows in a
//! shuffled order of their own; walking shards in order and rows within each gives the epoch's
//! global sequence. Reader `k` of `K` takes positions `k, k + K, k + 2K, …` of that sequence, so
//! the readers together see every record exactly once and their counts differ by at most one.
//! A reader's [`Cursor`] is `(shard_index, offset)`: the position in the shard order and the
//! position within that shard's row order of the next record to read. It is part of every
//! checkpoint, so a restarted worker neither loses nor repeats a record.
//!
//! Orders come from `StdRng` seeded by blake3 of `(seed, shard)`; memory is one permutation of
//! the current shard.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// Where a reader is: the next record is row `offset` (in shuffled order) of the shard at
/// position `shard_index` of the shuffled shard order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub shard_index: u32,
    pub offset: u64,
}

/// A record's address: the shard and the row within it (storage order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordRef {
    pub shard: u32,
    pub row: u64,
}

fn rng(seed: u64, salt: u64) -> StdRng {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&salt.to_le_bytes());
    StdRng::from_seed(*h.finalize().as_bytes())
}

/// One reader's walk through an epoch.
#[derive(Debug, Clone)]
pub struct Reader {
    shard_lens: Vec<u64>,
    seed: u64,
    readers: u64,
    me: u64,
    shard_order: Vec<u32>,
    /// Global position (over all shards in shard order) of the cursor.
    global: u64,
    /// Global position where each shard (in shard order) starts.
    starts: Vec<u64>,
    cursor: Cursor,
    /// The current shard's row order, built lazily.
    rows: Option<(u32, Vec<u64>)>,
}

impl Reader {
    /// Reader `me` of `readers` over shards of the given lengths, from the start of the epoch.
    pub fn new(shard_lens: Vec<u64>, seed: u64, readers: u64, me: u64) -> Result<Self> {
        Self::resume(shard_lens, seed, readers, me, Cursor::default())
    }

    /// The same reader continued from `cursor`, as saved by [`Reader::cursor`].
    pub fn resume(
        shard_lens: Vec<u64>,
        seed: u64,
        readers: u64,
        me: u64,
        cursor: Cursor,
    ) -> Result<Self> {
        if readers == 0 || me >= readers {
            return Err(Error::invalid(
                "reader",
                "me",
                format!("reader {me} of {readers}"),
            ));
        }
        let mut shard_order: Vec<u32> = (0..shard_lens.len() as u32).collect();
        shard_order.shuffle(&mut rng(seed, u64::MAX));
        let mut starts = Vec::with_capacity(shard_order.len() + 1);
        let mut acc = 0u64;
        for &s in &shard_order {
            starts.push(acc);
            acc += shard_lens[s as usize];
        }
        starts.push(acc);
        let ci = cursor.shard_index as usize;
        // The start of any shard (even an empty one, or the end) is a valid position; the
        // seek below moves past empty shards.
        let valid = cursor.offset == 0 && ci <= shard_order.len()
            || ci < shard_order.len() && cursor.offset < shard_lens[shard_order[ci] as usize];
        if !valid {
            return Err(Error::invalid(
                "reader",
                "cursor",
                format!(
                    "({}, {}) is outside the dataset",
                    cursor.shard_index, cursor.offset
                ),
            ));
        }
        let global = starts[ci] + cursor.offset;
        let mut r = Self {
            shard_lens,
            seed,
            readers,
            me,
            shard_order,
            global,
            starts,
            cursor,
            rows: None,
        };
        // A fresh reader (or a cursor saved at a boundary) starts at its first own position.
        r.seek(r.next_own(global));
        Ok(r)
    }

    /// The cursor to save: resuming from it continues with the next record this reader
    /// would have returned.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Records left for this reader in the epoch.
    pub fn remaining(&self) -> u64 {
        let total = *self.starts.last().unwrap_or(&0);
        if self.global >= total {
            0
        } else {
            (total - self.global).div_ceil(self.readers)
        }
    }

    /// The first global position at or after `g` that belongs to this reader.
    fn next_own(&self, g: u64) -> u64 {
        let r = g % self.readers;
        if r <= self.me {
            g + (self.me - r)
        } else {
            g + (self.readers - r) + self.me
        }
    }

    fn seek(&mut self, g: u64) {
        let total = *self.starts.last().unwrap_or(&0);
        self.global = g.min(total);
        if self.global >= total {
            self.cursor = Cursor {
                shard_index: self.shard_order.len() as u32,
                offset: 0,
            };
            return;
        }
        // The last shard start at or before g; empty shards are skipped by taking the last.
        let i = self.starts.partition_point(|&s| s <= self.global) - 1;
        self.cursor = Cursor {
            shard_index: i as u32,
            offset: self.global - self.starts[i],
        };
    }

    fn row_order(&mut self, shard: u32) -> &[u64] {
        if self.rows.as_ref().map(|r| r.0) != Some(shard) {
            let mut v: Vec<u64> = (0..self.shard_lens[shard as usize]).collect();
            v.shuffle(&mut rng(self.seed, u64::from(shard)));
            self.rows = Some((shard, v));
        }
        self.rows.as_ref().map_or(&[], |r| r.1.as_slice())
    }
}

impl Iterator for Reader {
    type Item = RecordRef;

    fn next(&mut self) -> Option<RecordRef> {
        if self.cursor.shard_index as usize >= self.shard_order.len() {
            return None;
        }
        let shard = self.shard_order[self.cursor.shard_index as usize];
        let offset = self.cursor.offset as usize;
        let row = *self.row_order(shard).get(offset)?;
        let g = self.global + self.readers;
        self.seek(g);
        Some(RecordRef { shard, row })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const LENS: [u64; 7] = [13, 0, 40, 7, 25, 1, 30];

    fn all(seed: u64, k: u64) -> Vec<Vec<RecordRef>> {
        (0..k)
            .map(|me| Reader::new(LENS.to_vec(), seed, k, me).unwrap().collect())
            .collect()
    }

    #[test]
    fn every_record_exactly_once_across_readers() {
        let total: u64 = LENS.iter().sum();
        for k in [1, 2, 3, 5, 8, 200] {
            let parts = all(9, k);
            let mut seen = BTreeSet::new();
            for p in &parts {
                for r in p {
                    assert!(seen.insert(*r), "{r:?} twice with {k} readers");
                    assert!(r.row < LENS[r.shard as usize]);
                }
            }
            assert_eq!(seen.len() as u64, total, "{k} readers");
            let (lo, hi) = (
                parts.iter().map(Vec::len).min().unwrap(),
                parts.iter().map(Vec::len).max().unwrap(),
            );
            assert!(hi - lo <= 1, "{k} readers: {lo}..{hi}");
        }
    }

    #[test]
    fn resuming_from_any_cursor_continues_exactly() {
        for k in [1, 3] {
            for me in 0..k {
                let full: Vec<RecordRef> = Reader::new(LENS.to_vec(), 5, k, me).unwrap().collect();
                let mut r = Reader::new(LENS.to_vec(), 5, k, me).unwrap();
                for stop in 0..=full.len() {
                    assert_eq!(r.remaining() as usize, full.len() - stop);
                    let resumed = Reader::resume(LENS.to_vec(), 5, k, me, r.cursor()).unwrap();
                    assert_eq!(
                        resumed.collect::<Vec<_>>(),
                        full[stop..],
                        "reader {me}/{k} at {stop}"
                    );
                    r.next();
                }
            }
        }
    }

    #[test]
    fn epoch_seed_changes_the_order_and_cursors_are_checked() {
        let a: Vec<RecordRef> = Reader::new(LENS.to_vec(), 1, 1, 0).unwrap().collect();
        let b: Vec<RecordRef> = Reader::new(LENS.to_vec(), 2, 1, 0).unwrap().collect();
        assert_ne!(a, b);
        let (mut sa, mut sb) = (a.clone(), b);
        sa.sort();
        sb.sort();
        assert_eq!(sa, sb);
        // Rows are shuffled within shards, not read in storage order.
        assert_ne!(
            a.iter()
                .filter(|r| r.shard == 2)
                .map(|r| r.row)
                .collect::<Vec<_>>(),
            (0..40).collect::<Vec<_>>()
        );
        assert!(Reader::resume(
            LENS.to_vec(),
            1,
            1,
            0,
            Cursor {
                shard_index: 0,
                offset: 999
            }
        )
        .is_err());
        assert!(Reader::new(LENS.to_vec(), 1, 2, 2).is_err());
        // Empty shards anywhere, including first in the shuffled order, and no shards at all.
        for seed in 0..20 {
            let n: usize = Reader::new(vec![0, 0, 3, 0], seed, 2, 1).unwrap().count();
            assert_eq!(n, 1, "seed {seed}");
        }
        assert_eq!(Reader::new(Vec::new(), 1, 3, 0).unwrap().count(), 0);
    }
}
