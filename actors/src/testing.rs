//! Test doubles of the storage boundary, shared by this crate's unit tests and its integration
//! tests (compiled for tests, and with the `testing` feature, which the crate's dev-dependency
//! on itself turns on).
//!
//! [`CrashStore`] is an in-memory [`Store`] that models what a crash keeps, the way the node's
//! rocksdb store behaves: every write goes to one sequential write-ahead log, and a
//! [`Durability::Sync`] write (or a flush) syncs the log, so it makes itself *and every earlier
//! write* durable. Reads see every write. [`CrashStore::crash`] is the store as a restarted
//! process finds it after a power loss: only the durable writes. Since the log is sequential,
//! a crash may also keep some of the unsynced writes, but only a prefix of them in write
//! order: [`CrashStore::crash_keeping`] and [`CrashStore::crash_images`] give those images.
//!
//! To crash *in the middle* of an operation, [`CrashStore::dying_after`] builds a store whose
//! process dies after a given number of writes: every later write fails and changes nothing,
//! as nothing reaches the disk of a dead process. Running an operation once with a plain store
//! gives its number of writes ([`CrashStore::writes`]); running it again for every crash point
//! `k` in `0..=writes` and restarting the component from `crash()` checks every point.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::store::{Column, Durability, Store};
use crate::{Error, Result};

/// A row's address: the column's index in [`Column::ALL`] and the key.
type Key = (u8, Vec<u8>);
type Rows = BTreeMap<Key, Vec<u8>>;

fn col(c: Column) -> u8 {
    Column::ALL.iter().position(|x| *x == c).unwrap_or(0) as u8
}

/// One write not yet synced.
#[derive(Debug, Clone)]
enum Op {
    Put(Key, Vec<u8>),
    Delete(Key),
}

impl Op {
    fn apply(&self, rows: &mut Rows) {
        match self {
            Op::Put(k, v) => {
                rows.insert(k.clone(), v.clone());
            }
            Op::Delete(k) => {
                rows.remove(k);
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// What reads see: every write.
    live: Rows,
    /// What survives a crash: the rows as of the last synced write or flush.
    durable: Rows,
    /// Writes since the last sync, in order.
    unsynced: Vec<Op>,
    /// Writes (puts, deletes and flushes) accepted.
    writes: u64,
    /// Writes the process makes before it dies; later ones fail.
    dies_after: Option<u64>,
    /// Writes refused because the process had died.
    refused: u64,
}

impl State {
    fn sync(&mut self) {
        for op in self.unsynced.drain(..) {
            op.apply(&mut self.durable);
        }
    }

    /// Counts one write, or refuses it when the process has died.
    fn admit(&mut self) -> Result<()> {
        if self.dies_after.is_some_and(|n| self.writes >= n) {
            self.refused += 1;
            return Err(Error::Store(format!(
                "crashed: the process died after write {}",
                self.writes
            )));
        }
        self.writes += 1;
        Ok(())
    }

    fn write(&mut self, op: Op, durability: Durability) -> Result<()> {
        self.admit()?;
        op.apply(&mut self.live);
        self.unsynced.push(op);
        if durability == Durability::Sync {
            self.sync();
        }
        Ok(())
    }
}

/// An in-memory [`Store`] that models a crash: see the [module documentation](self).
#[derive(Debug, Default)]
pub struct CrashStore {
    state: Mutex<State>,
}

impl CrashStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose process dies after `writes` writes (puts, deletes and flushes):
    /// every later write fails with [`Error::Store`] and changes nothing.
    pub fn dying_after(writes: u64) -> Self {
        let s = Self::default();
        s.lock().dies_after = Some(writes);
        s
    }

    /// Makes the process die after `more` further writes (0: at once).
    pub fn die_after(&self, more: u64) {
        let mut s = self.lock();
        s.dies_after = Some(s.writes + more);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; its rows are intact.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_rows(rows: Rows) -> Self {
        Self {
            state: Mutex::new(State {
                live: rows.clone(),
                durable: rows,
                ..State::default()
            }),
        }
    }

    /// Writes (puts, deletes and flushes) accepted so far.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// Whether a write was refused because the process had died.
    pub fn died(&self) -> bool {
        self.lock().refused > 0
    }

    /// Writes made since the last sync: what a crash may lose.
    pub fn unsynced(&self) -> usize {
        self.lock().unsynced.len()
    }

    /// The store as a restarted process finds it after a crash that lost every unsynced
    /// write: only the durable rows. The new store has every row durable and no crash point.
    pub fn crash(&self) -> CrashStore {
        self.crash_keeping(0)
    }

    /// The store after a crash that kept the first `n` unsynced writes (the log reached the
    /// disk up to there): the durable rows with those writes applied in order.
    pub fn crash_keeping(&self, n: usize) -> CrashStore {
        let s = self.lock();
        let mut rows = s.durable.clone();
        for op in s.unsynced.iter().take(n) {
            op.apply(&mut rows);
        }
        Self::with_rows(rows)
    }

    /// Every store a crash now can leave: from [`CrashStore::crash`] (no unsynced write kept)
    /// to every write kept.
    pub fn crash_images(&self) -> Vec<CrashStore> {
        (0..=self.unsynced())
            .map(|n| self.crash_keeping(n))
            .collect()
    }

    /// Whether the row under `key` would read the same after a crash as now (present with the
    /// same value, or absent in both).
    pub fn is_durable(&self, c: Column, key: &[u8]) -> bool {
        let s = self.lock();
        let k = (col(c), key.to_vec());
        s.live.get(&k) == s.durable.get(&k)
    }

    /// Rows of a column as reads see them, in key order.
    pub fn rows(&self, c: Column) -> Vec<(Vec<u8>, Vec<u8>)> {
        let c = col(c);
        self.lock()
            .live
            .iter()
            .filter(|((cc, _), _)| *cc == c)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Overwrites a row as stored on disk (durable at once, not counted as a write, allowed
    /// after the process died): for tests that tamper with stored bytes.
    pub fn poke(&self, c: Column, key: &[u8], value: Vec<u8>) {
        let mut s = self.lock();
        let k = (col(c), key.to_vec());
        s.live.insert(k.clone(), value.clone());
        s.durable.insert(k, value);
    }
}

impl Store for CrashStore {
    fn get(&self, c: Column, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().live.get(&(col(c), key.to_vec())).cloned())
    }

    fn put(&self, c: Column, key: &[u8], value: &[u8], durability: Durability) -> Result<()> {
        self.lock()
            .write(Op::Put((col(c), key.to_vec()), value.to_vec()), durability)
    }

    fn delete(&self, c: Column, key: &[u8], durability: Durability) -> Result<()> {
        self.lock()
            .write(Op::Delete((col(c), key.to_vec())), durability)
    }

    fn scan_prefix(
        &self,
        c: Column,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let c = col(c);
        let s = self.lock();
        Ok(s.live
            .range((c, prefix.to_vec())..)
            .take_while(|((cc, k), _)| *cc == c && k.starts_with(prefix))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn flush(&self) -> Result<()> {
        let mut s = self.lock();
        s.admit()?;
        s.sync();
        Ok(())
    }
}

#[cfg(test)]
#[path = "testing_tests.rs"]
mod tests;
