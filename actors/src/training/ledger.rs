//! A record of which samples were consumed in which epoch, to prove exactly-once delivery.
//!
//! Memory is one entry per consumed sample, so the ledger is for tests, the simulator and
//! audits of small jobs; the assignment keeps one only when asked to.

use std::collections::BTreeMap;

/// Times each `(epoch, record index)` was consumed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    counts: BTreeMap<(u32, u64), u32>,
    /// Sync mode: `(step, epoch, index)` of every consumption, so the ledger can be cut back
    /// to a checkpoint's step when a job resumes from it.
    steps: Vec<(u64, u32, u64)>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `indices` of `epoch` were consumed once more.
    pub fn record(&mut self, epoch: u32, indices: &[u64]) {
        for &i in indices {
            *self.counts.entry((epoch, i)).or_insert(0) += 1;
        }
    }

    /// Records that `indices` of `epoch` were consumed by sync step `step`.
    pub fn record_at(&mut self, step: u64, epoch: u32, indices: &[u64]) {
        self.record(epoch, indices);
        self.steps.extend(indices.iter().map(|&i| (step, epoch, i)));
    }

    /// The ledger as it stood for the steps before `step`: what a job resumed from the
    /// checkpoint of `step` has done. Only consumptions recorded with their step count.
    pub fn before_step(&self, step: u64) -> Ledger {
        let mut out = Ledger::new();
        for &(s, e, i) in self.steps.iter().filter(|x| x.0 < step) {
            *out.counts.entry((e, i)).or_insert(0) += 1;
            out.steps.push((s, e, i));
        }
        out
    }

    /// `(step, epoch, index)` of every consumption recorded with its step.
    pub fn steps(&self) -> &[(u64, u32, u64)] {
        &self.steps
    }

    /// The ledger of these `(step, epoch, index)` consumptions (a checkpoint's record of them).
    pub fn from_steps(steps: &[(u64, u32, u64)]) -> Ledger {
        let mut out = Ledger::new();
        for &(s, e, i) in steps {
            out.record_at(s, e, &[i]);
        }
        out
    }

    /// Adds another ledger's counts to this one.
    pub fn merge(&mut self, other: &Ledger) {
        for (k, n) in &other.counts {
            *self.counts.entry(*k).or_insert(0) += n;
        }
        self.steps.extend_from_slice(&other.steps);
    }

    /// Samples consumed, counting repeats.
    pub fn total(&self) -> u64 {
        self.counts.values().map(|&n| u64::from(n)).sum()
    }

    /// Checks that every record `0..len` was consumed exactly once in every epoch
    /// `0..epochs`, and nothing else; the error lists the first problems found.
    pub fn verify_exactly_once(&self, epochs: u32, len: u64) -> Result<(), String> {
        let mut problems = Vec::new();
        for e in 0..epochs {
            for i in 0..len {
                match self.counts.get(&(e, i)).copied().unwrap_or(0) {
                    1 => {}
                    0 => problems.push(format!("epoch {e} record {i} never consumed")),
                    n => problems.push(format!("epoch {e} record {i} consumed {n} times")),
                }
                if problems.len() >= 10 {
                    break;
                }
            }
        }
        for &(e, i) in self.counts.keys() {
            if e >= epochs || i >= len {
                problems.push(format!("epoch {e} record {i} is outside the run"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            problems.truncate(10);
            Err(problems.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_missing_repeated_and_extra_samples() {
        let mut l = Ledger::new();
        l.record(0, &[0, 1, 2]);
        l.record(1, &[2, 1, 0]);
        l.verify_exactly_once(2, 3).unwrap();
        let mut bad = l.clone();
        bad.record(1, &[1]);
        assert!(bad
            .verify_exactly_once(2, 3)
            .unwrap_err()
            .contains("consumed 2 times"));
        assert!(l
            .verify_exactly_once(2, 4)
            .unwrap_err()
            .contains("never consumed"));
        assert!(l.verify_exactly_once(1, 3).unwrap_err().contains("outside"));
        let mut m = Ledger::new();
        m.merge(&l);
        assert_eq!(m.total(), 6);
    }

    #[test]
    fn a_ledger_rebuilt_from_its_steps_equals_it() {
        let mut l = Ledger::new();
        l.record_at(0, 0, &[4, 1]);
        l.record_at(1, 0, &[0, 2, 3]);
        l.record_at(2, 1, &[3, 3]);
        assert_eq!(Ledger::from_steps(l.steps()), l);
        let cut = l.before_step(2);
        assert_eq!(Ledger::from_steps(cut.steps()), cut);
        cut.verify_exactly_once(1, 5).unwrap();
    }
}
