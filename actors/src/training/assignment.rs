//! Which samples each worker trains on: every record exactly once per epoch, across worker
//! deaths, joins and restarts from a checkpoint.
//!
//! Each epoch has a seeded permutation of the record indices `0..len` (blake3 of `(seed,
//! epoch)` seeds the shuffle, so every node computes the same order). Workers take *leases* —
//! the next `share` indices of the permutation — through one cursor; a worker holds at most one
//! lease, and its cursor is that lease. A lease is done when the worker acknowledges it (after
//! every parameter shard accepted its gradient). A worker that dies or whose gradient was
//! discarded gives its lease back: those indices are served first to the survivors, under the
//! lease's own epoch, so none is lost or repeated.
//!
//! In sync mode a request names the step it is for; the first request of a step fixes the
//! step's budget (at most the global batch, from one epoch), so the step's leases are the
//! permutation's next `G` indices whatever order workers ask in — as a single process with
//! batch `G` would read them. A step never mixes epochs: the last step of an epoch is short.
//!
//! A checkpoint at version `v` keeps the epoch, the cursor and the pending indices: leases
//! given back, and leases (outstanding or, in sync mode, acknowledged) for steps `≥ v`, whose
//! gradients the checkpointed parameters do not hold yet. In sync mode the coordinator takes
//! it when the first request for step `v` arrives, before the step's budget is drawn.

use std::collections::{BTreeMap, VecDeque};

use flotilla_protocol::training::WorkerId;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::ledger::Ledger;

/// Indices one worker trains on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: u64,
    pub epoch: u32,
    pub indices: Vec<u64>,
    /// Sync mode: the step it was handed out for.
    pub step: Option<u64>,
}

/// The answer to a request for samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Batch(Lease),
    /// Nothing to hand out now, but leases are outstanding that may come back: push an empty
    /// contribution (sync, ssp) or wait, then ask again.
    Idle,
    /// Every epoch is done.
    Done,
}

/// What a checkpoint keeps of the assignment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    pub epoch: u32,
    /// Position in the epoch's permutation of the next index to hand out.
    pub cursor: u64,
    /// Indices to serve again, by epoch.
    pub pending: Vec<(u32, Vec<u64>)>,
}

/// The permutation of `0..len` for `epoch`.
pub fn permutation(len: u64, seed: u64, epoch: u32) -> Vec<u64> {
    let mut h = blake3::Hasher::new();
    h.update(b"flotilla/epoch-order");
    h.update(&seed.to_le_bytes());
    h.update(&epoch.to_le_bytes());
    let mut v: Vec<u64> = (0..len).collect();
    v.shuffle(&mut StdRng::from_seed(*h.finalize().as_bytes()));
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Returned(u32),
    Fresh,
}

/// A sync step's budget.
#[derive(Debug, Clone, Copy)]
struct Budget {
    step: u64,
    source: Source,
    left: u64,
}

/// The sample assignment of one job.
#[derive(Debug, Clone)]
pub struct Assignment {
    len: u64,
    seed: u64,
    /// `None`: run epochs until the job stops for another reason (max steps).
    epochs: Option<u32>,
    epoch: u32,
    order: Vec<u64>,
    cursor: u64,
    returned: BTreeMap<u32, VecDeque<u64>>,
    leases: BTreeMap<WorkerId, Lease>,
    /// Sync: acknowledged leases by step, until a later step shows them applied.
    recent: Vec<(u64, Lease)>,
    budget: Option<Budget>,
    next_id: u64,
    /// Leases acknowledged so far: in async and ssp the ledger records each consumption under
    /// this sequence number, so it can be cut back like a sync one.
    acks: u64,
    ledger: Option<Ledger>,
}

impl Assignment {
    /// The assignment of `len` records for `epochs` epochs (or unbounded), from the start.
    pub fn new(len: u64, seed: u64, epochs: Option<u32>) -> Self {
        Self::resume(len, seed, epochs, Checkpoint::default())
    }

    /// The assignment continued from a checkpoint.
    pub fn resume(len: u64, seed: u64, epochs: Option<u32>, cp: Checkpoint) -> Self {
        let mut returned: BTreeMap<u32, VecDeque<u64>> = BTreeMap::new();
        for (e, idx) in cp.pending {
            returned.entry(e).or_default().extend(idx);
        }
        Self {
            len,
            seed,
            epochs,
            epoch: cp.epoch,
            order: permutation(len, seed, cp.epoch),
            cursor: cp.cursor.min(len),
            returned,
            leases: BTreeMap::new(),
            recent: Vec::new(),
            budget: None,
            next_id: 0,
            acks: 0,
            ledger: None,
        }
    }

    /// Keeps a [`Ledger`] of acknowledged samples from now on.
    pub fn with_ledger(mut self) -> Self {
        self.ledger = Some(Ledger::new());
        self
    }

    /// The ledger, when kept.
    pub fn ledger(&self) -> Option<&Ledger> {
        self.ledger.as_ref()
    }

    /// The epoch fresh samples come from.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The outstanding lease of `worker`.
    pub fn lease(&self, worker: WorkerId) -> Option<&Lease> {
        self.leases.get(&worker)
    }

    fn last_epoch(&self) -> bool {
        self.epochs.is_some_and(|e| self.epoch + 1 >= e)
    }

    /// Moves to the next epoch when this one's permutation is used up.
    fn roll(&mut self) {
        if self.cursor >= self.len && !self.last_epoch() && self.len > 0 {
            self.epoch += 1;
            self.order = permutation(self.len, self.seed, self.epoch);
            self.cursor = 0;
        }
    }

    /// Where samples come from now, and how many are there.
    fn source(&mut self) -> (Source, u64) {
        self.returned.retain(|_, q| !q.is_empty());
        if let Some((e, q)) = self.returned.iter().next() {
            return (Source::Returned(*e), q.len() as u64);
        }
        self.roll();
        (Source::Fresh, self.len - self.cursor)
    }

    fn take(&mut self, source: Source, n: u64) -> (u32, Vec<u64>) {
        match source {
            Source::Returned(e) => {
                let q = self.returned.entry(e).or_default();
                let k = (n as usize).min(q.len());
                (e, q.drain(..k).collect())
            }
            Source::Fresh => {
                let end = (self.cursor + n).min(self.len);
                let v = self.order[self.cursor as usize..end as usize].to_vec();
                self.cursor = end;
                (self.epoch, v)
            }
        }
    }

    /// A lease of up to `want` samples for `worker`. In sync mode `step` is the parameter
    /// version the worker pulled and `global` the step's budget. A worker that still holds a
    /// lease gives it back first.
    pub fn next(&mut self, worker: WorkerId, want: u32, step: Option<u64>, global: u32) -> Next {
        self.give_back(worker);
        let want = u64::from(want);
        let (source, n) = match step {
            Some(step) => {
                // A request for step t shows every step before t applied.
                self.recent.retain(|(s, _)| *s >= step);
                let fresh_budget = self.budget.is_none_or(|b| b.step != step);
                if fresh_budget {
                    let (source, available) = self.source();
                    self.budget = Some(Budget {
                        step,
                        source,
                        left: available.min(u64::from(global)),
                    });
                }
                match &mut self.budget {
                    Some(b) => {
                        let n = want.min(b.left);
                        b.left -= n;
                        (b.source, n)
                    }
                    None => (Source::Fresh, 0),
                }
            }
            None => {
                let (source, available) = self.source();
                (source, want.min(available))
            }
        };
        if n > 0 {
            let (epoch, indices) = self.take(source, n);
            if !indices.is_empty() {
                let lease = Lease {
                    id: self.next_id,
                    epoch,
                    indices,
                    step,
                };
                self.next_id += 1;
                self.leases.insert(worker, lease.clone());
                return Next::Batch(lease);
            }
        }
        self.roll();
        let exhausted = self.returned.values().all(VecDeque::is_empty)
            && self.cursor >= self.len
            && self.last_epoch();
        if exhausted && self.leases.is_empty() {
            Next::Done
        } else {
            Next::Idle
        }
    }

    /// Marks `worker`'s lease `id` done; in sync mode `step` is the step it was pushed for.
    /// False when it is not the worker's outstanding lease (given back meanwhile).
    pub fn ack(&mut self, worker: WorkerId, id: u64, step: Option<u64>) -> bool {
        if self.leases.get(&worker).map(|l| l.id) != Some(id) {
            return false;
        }
        let Some(lease) = self.leases.remove(&worker) else {
            return false;
        };
        if let Some(l) = &mut self.ledger {
            l.record_at(step.unwrap_or(self.acks), lease.epoch, &lease.indices);
        }
        self.acks += 1;
        if let Some(step) = step {
            self.recent.push((step, lease));
        }
        true
    }

    /// Leases acknowledged so far.
    pub fn acks(&self) -> u64 {
        self.acks
    }

    /// Leases handed out and neither acknowledged nor given back.
    pub fn outstanding(&self) -> usize {
        self.leases.len()
    }

    /// Gives `worker`'s outstanding lease back to be served again; the number of samples.
    pub fn give_back(&mut self, worker: WorkerId) -> usize {
        let Some(lease) = self.leases.remove(&worker) else {
            return 0;
        };
        let n = lease.indices.len();
        self.returned
            .entry(lease.epoch)
            .or_default()
            .extend(lease.indices);
        n
    }

    /// The state to keep in a checkpoint of parameters at `version` (sync; `None` for async
    /// and ssp, where acknowledged samples count as done).
    pub fn checkpoint(&self, version: Option<u64>) -> Checkpoint {
        let mut pending: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for (e, q) in &self.returned {
            pending.entry(*e).or_default().extend(q.iter().copied());
        }
        // A sync lease of a step before `version` that is still outstanding was pushed (the
        // step could not complete without it, or without the worker's departure, which gives
        // the lease back): its samples are in the parameters already.
        for l in self
            .leases
            .values()
            .filter(|l| version.is_none() || l.step.is_none_or(|s| Some(s) >= version))
        {
            pending.entry(l.epoch).or_default().extend(&l.indices);
        }
        if let Some(v) = version {
            for (_, l) in self.recent.iter().filter(|(s, _)| *s >= v) {
                pending.entry(l.epoch).or_default().extend(&l.indices);
            }
        }
        Checkpoint {
            epoch: self.epoch,
            cursor: self.cursor,
            pending: pending.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
        }
    }
}
