//! Live training metrics: per-step records built from the workers' reports, kept in a bounded
//! series the node stores and exports (CLI, `/metrics`, dashboard).

use std::collections::{BTreeMap, VecDeque};

use flotilla_protocol::training::{StepRecord, WorkerReport, WorkerStat};

/// The newest `capacity` step records; older ones are dropped (and counted).
#[derive(Debug, Clone)]
pub struct Series {
    capacity: usize,
    records: VecDeque<StepRecord>,
    dropped: u64,
}

impl Series {
    /// An empty series keeping at most `capacity` records (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            records: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Appends a record, dropping the oldest when full.
    pub fn push(&mut self, r: StepRecord) {
        if self.records.len() == self.capacity {
            self.records.pop_front();
            self.dropped += 1;
        }
        self.records.push_back(r);
    }

    /// The newest record.
    pub fn latest(&self) -> Option<&StepRecord> {
        self.records.back()
    }

    /// Records of steps after `step`, oldest first (what a live view polls for).
    pub fn since(&self, step: Option<u64>) -> Vec<StepRecord> {
        self.records
            .iter()
            .filter(|r| step.is_none_or(|s| r.step > s))
            .cloned()
            .collect()
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Records dropped for room.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Gathers the workers' reports of each step into one record: when as many reports as there
/// are workers have arrived, or when more than `max_open` steps are open (async workers report
/// different versions; a worker may die before reporting), the oldest open step is closed with
/// what it has.
#[derive(Debug, Clone)]
pub struct Aggregator {
    max_open: usize,
    open: BTreeMap<u64, Vec<WorkerReport>>,
}

impl Aggregator {
    /// An aggregator keeping at most `max_open` (at least 1) steps open.
    pub fn new(max_open: usize) -> Self {
        Self {
            max_open: max_open.max(1),
            open: BTreeMap::new(),
        }
    }

    /// Adds a report; returns the records closed by it, oldest first.
    pub fn add(&mut self, report: WorkerReport, workers: usize) -> Vec<StepRecord> {
        let step = report.step;
        let reports = self.open.entry(step).or_default();
        reports.retain(|r| r.worker != report.worker);
        reports.push(report);
        let mut closed = Vec::new();
        if reports.len() >= workers.max(1) {
            if let Some(r) = self.open.remove(&step) {
                closed.push(close(step, r));
            }
        }
        while self.open.len() > self.max_open {
            if let Some((s, r)) = self.open.pop_first() {
                closed.push(close(s, r));
            }
        }
        closed.sort_by_key(|r| r.step);
        closed
    }
}

impl Aggregator {
    /// Closes every open step, oldest first (the job ended).
    pub fn flush(&mut self) -> Vec<StepRecord> {
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|(s, r)| close(s, r))
            .collect()
    }
}

fn close(step: u64, mut reports: Vec<WorkerReport>) -> StepRecord {
    reports.sort_by_key(|r| r.worker);
    let samples: u32 = reports.iter().map(|r| r.samples).sum();
    let weighted = |f: fn(&WorkerReport) -> f32| -> f32 {
        if samples == 0 {
            return f32::NAN;
        }
        let s: f64 = reports
            .iter()
            .filter(|r| r.samples > 0)
            .map(|r| f64::from(f(r)) * f64::from(r.samples))
            .sum();
        (s / f64::from(samples)) as f32
    };
    let slowest = reports.iter().map(|r| r.compute_ms).fold(0.0, f64::max);
    StepRecord {
        step,
        loss: weighted(|r| r.loss),
        lr: reports.first().map_or(0.0, |r| r.lr),
        grad_norm: weighted(|r| r.grad_norm),
        samples,
        samples_per_s: if slowest > 0.0 {
            f64::from(samples) * 1000.0 / slowest
        } else {
            0.0
        },
        workers: reports
            .iter()
            .map(|r| WorkerStat {
                worker: r.worker,
                step_time_ms: r.compute_ms,
                share: r.samples,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use flotilla_protocol::training::WorkerId;

    use super::*;

    fn report(worker: u32, step: u64, loss: f32, samples: u32, ms: f64) -> WorkerReport {
        WorkerReport {
            worker: WorkerId(worker),
            step,
            loss,
            grad_norm: 2.0,
            lr: 0.1,
            samples,
            compute_ms: ms,
        }
    }

    #[test]
    fn steps_close_when_every_worker_reported() {
        let mut a = Aggregator::new(4);
        assert!(a.add(report(1, 0, 1.0, 30, 100.0), 2).is_empty());
        let r = a.add(report(0, 0, 4.0, 10, 50.0), 2);
        assert_eq!(r.len(), 1);
        let r = &r[0];
        assert_eq!(r.loss, 1.75, "sample-weighted");
        assert_eq!((r.samples, r.samples_per_s), (40, 400.0));
        assert_eq!(r.workers[0].worker, WorkerId(0));
        assert_eq!((r.workers[1].share, r.workers[1].step_time_ms), (30, 100.0));
        // A worker with no samples does not dilute the loss.
        a.add(report(0, 1, f32::NAN, 0, 0.0), 2);
        let r = a.add(report(1, 1, 2.0, 5, 10.0), 2);
        assert_eq!(r[0].loss, 2.0);
    }

    #[test]
    fn stragglers_are_closed_when_too_many_steps_are_open() {
        let mut a = Aggregator::new(2);
        a.add(report(0, 0, 1.0, 1, 1.0), 3);
        a.add(report(0, 1, 1.0, 1, 1.0), 3);
        let r = a.add(report(0, 2, 1.0, 1, 1.0), 3);
        assert_eq!(r.iter().map(|r| r.step).collect::<Vec<_>>(), vec![0]);
        let r = a.flush();
        assert_eq!(r.iter().map(|r| r.step).collect::<Vec<_>>(), vec![1, 2]);
        assert!(a.flush().is_empty());
    }

    #[test]
    fn the_series_is_bounded() {
        let mut s = Series::new(3);
        let mut a = Aggregator::new(1);
        for step in 0..5 {
            for r in a.add(report(0, step, 1.0, 1, 1.0), 1) {
                s.push(r);
            }
        }
        assert_eq!((s.len(), s.dropped()), (3, 2));
        assert_eq!(s.latest().map(|r| r.step), Some(4));
        assert_eq!(s.since(Some(2)).len(), 2);
        assert_eq!(s.since(None).len(), 3);
    }
}
