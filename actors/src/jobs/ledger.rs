//! The task ledger on an executing node: the rule that makes "no task runs twice" hold when a
//! job's owner is replaced.
//!
//! Every start request carries the owner's epoch and the attempt number. The ledger answers, per
//! `(job, task)`:
//! - first time seen → [`StartAnswer::Started`];
//! - already running → [`StartAnswer::AlreadyRunning`]: a new owner re-attaches instead of
//!   starting a second copy (and its higher epoch is recorded);
//! - already finished → [`StartAnswer::AlreadyFinished`] with the outcome, so a new owner
//!   learns results it missed;
//! - a request whose epoch is older than one already seen → [`StartAnswer::Fenced`]: an old
//!   owner that comes back cannot start work its successor owns.
//!
//! A new attempt (the coordinator re-placing a task after its node died) is a different
//! execution on purpose; the ledger records which attempt ran so a report can show it. Entries
//! are persisted by the shell before a start is acknowledged so a restart of the executing node
//! keeps the guarantee.
//!
//! The ledger records when each task ended, so the shell can compact it: a job whose every task
//! here ended longer ago than the retention ([`Ledger::jobs_ended_before`]) and whose catalog
//! record is terminal (or compacted) is forgotten. A start for a job the catalog records as
//! finished is refused before it reaches the ledger, so forgetting it re-runs nothing.

use std::collections::BTreeMap;

use flotilla_protocol::jobs::JobId;
use serde::{Deserialize, Serialize};

/// One task of one job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey {
    pub job: JobId,
    pub task: u32,
}

pub use flotilla_protocol::services::jobs::{LedgerEntry as Entry, StartAnswer, TaskOutcome};

/// The ledger of every task this node has been asked to run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    entries: BTreeMap<TaskKey, Entry>,
    /// When each ended task ended, wall-clock ms since the Unix epoch.
    ended_at: BTreeMap<TaskKey, u64>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// A ledger restored from persisted entries, each with when it ended if it did. An ended
    /// entry without its time (written before the time was recorded) counts as ended at
    /// `loaded_at_ms`, so it is kept one full retention from now.
    pub fn from_entries(
        entries: impl IntoIterator<Item = (TaskKey, Entry, Option<u64>)>,
        loaded_at_ms: u64,
    ) -> Self {
        let mut ledger = Self::default();
        for (key, entry, ended_at) in entries {
            if entry.outcome.is_some() {
                ledger
                    .ended_at
                    .insert(key.clone(), ended_at.unwrap_or(loaded_at_ms));
            }
            ledger.entries.insert(key, entry);
        }
        ledger
    }

    /// Decides a start request. On `Start` and `AlreadyRunning` the entry changed: persist
    /// [`Ledger::entry`] before acting.
    pub fn on_start(&mut self, key: &TaskKey, epoch: u64, attempt: u32) -> StartAnswer {
        match self.entries.get_mut(key) {
            None => {
                self.entries.insert(
                    key.clone(),
                    Entry {
                        epoch,
                        attempt,
                        outcome: None,
                    },
                );
                StartAnswer::Started
            }
            Some(e) if epoch < e.epoch => StartAnswer::Fenced { current: e.epoch },
            Some(e) => {
                e.epoch = epoch;
                match &e.outcome {
                    Some(outcome) if attempt <= e.attempt => {
                        StartAnswer::AlreadyFinished(outcome.clone())
                    }
                    None if attempt <= e.attempt => StartAnswer::AlreadyRunning,
                    // A later attempt: the coordinator gave up on the earlier one (its node was
                    // declared dead while this one kept running, or it failed). Run it.
                    _ => {
                        e.attempt = attempt;
                        e.outcome = None;
                        self.ended_at.remove(key);
                        StartAnswer::Started
                    }
                }
            }
        }
    }

    /// Records how a task ended, at wall time `now_ms`. Returns false if the task is unknown
    /// here or already ended.
    pub fn on_finish(&mut self, key: &TaskKey, outcome: TaskOutcome, now_ms: u64) -> bool {
        match self.entries.get_mut(key) {
            Some(e) if e.outcome.is_none() => {
                e.outcome = Some(outcome);
                self.ended_at.insert(key.clone(), now_ms);
                true
            }
            _ => false,
        }
    }

    /// When `key` ended, if it did.
    pub fn ended_at(&self, key: &TaskKey) -> Option<u64> {
        self.ended_at.get(key).copied()
    }

    /// Jobs whose every task here has ended, the last of them at or before `cutoff_ms`: what
    /// compaction may forget once the catalog agrees the job is over.
    pub fn jobs_ended_before(&self, cutoff_ms: u64) -> Vec<JobId> {
        let mut latest: BTreeMap<&JobId, Option<u64>> = BTreeMap::new();
        for key in self.entries.keys() {
            let ended = self.ended_at.get(key).copied();
            let slot = latest.entry(&key.job).or_insert(Some(0));
            *slot = match (*slot, ended) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None, // a task still running keeps the whole job
            };
        }
        latest
            .into_iter()
            .filter(|(_, ended)| ended.is_some_and(|t| t <= cutoff_ms))
            .map(|(job, _)| job.clone())
            .collect()
    }

    /// The tasks of `job` this ledger holds.
    pub fn tasks_of(&self, job: &JobId) -> Vec<TaskKey> {
        self.entries
            .keys()
            .filter(|k| k.job == *job)
            .cloned()
            .collect()
    }

    /// The tasks of `job` still running here (to stop on cancel).
    pub fn running_tasks_of(&self, job: &JobId) -> Vec<TaskKey> {
        self.entries
            .iter()
            .filter(|(k, e)| k.job == *job && e.outcome.is_none())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// One entry, for persistence.
    pub fn entry(&self, key: &TaskKey) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Forgets every task of a finished job (after its record is terminal everywhere).
    pub fn forget_job(&mut self, job: &JobId) {
        self.entries.retain(|k, _| k.job != *job);
        self.ended_at.retain(|k, _| k.job != *job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: u32) -> TaskKey {
        TaskKey {
            job: JobId("job-1".into()),
            task: t,
        }
    }

    #[test]
    fn first_start_runs_and_a_repeat_reattaches() {
        let mut l = Ledger::new();
        assert_eq!(l.on_start(&key(0), 1, 0), StartAnswer::Started);
        assert_eq!(l.on_start(&key(0), 1, 0), StartAnswer::AlreadyRunning);
        // A new owner (epoch 2) re-attaches instead of starting a copy, and its epoch sticks.
        assert_eq!(l.on_start(&key(0), 2, 0), StartAnswer::AlreadyRunning);
        assert_eq!(l.entry(&key(0)).unwrap().epoch, 2);
    }

    #[test]
    fn an_old_owner_is_fenced() {
        let mut l = Ledger::new();
        l.on_start(&key(0), 3, 0);
        assert_eq!(
            l.on_start(&key(0), 2, 0),
            StartAnswer::Fenced { current: 3 }
        );
        assert_eq!(
            l.on_start(&key(0), 2, 5),
            StartAnswer::Fenced { current: 3 }
        );
    }

    #[test]
    fn finished_tasks_report_their_outcome_to_a_new_owner() {
        let mut l = Ledger::new();
        l.on_start(&key(1), 1, 0);
        assert!(l.on_finish(&key(1), TaskOutcome::Succeeded("{\"gflops\":3}".into()), 5));
        assert!(
            !l.on_finish(&key(1), TaskOutcome::Failed("late".into()), 6),
            "an outcome is final"
        );
        assert_eq!(
            l.on_start(&key(1), 2, 0),
            StartAnswer::AlreadyFinished(TaskOutcome::Succeeded("{\"gflops\":3}".into()))
        );
    }

    #[test]
    fn a_later_attempt_runs_again_but_an_earlier_one_does_not() {
        let mut l = Ledger::new();
        l.on_start(&key(2), 1, 1);
        l.on_finish(&key(2), TaskOutcome::Failed("oom".into()), 5);
        assert!(matches!(
            l.on_start(&key(2), 1, 0),
            StartAnswer::AlreadyFinished(_)
        ));
        assert_eq!(l.on_start(&key(2), 1, 2), StartAnswer::Started);
        assert_eq!(l.entry(&key(2)).unwrap().attempt, 2);
        assert_eq!(l.entry(&key(2)).unwrap().outcome, None);
    }

    #[test]
    fn cancel_finds_running_tasks_and_forget_clears_the_job() {
        let mut l = Ledger::new();
        l.on_start(&key(0), 1, 0);
        l.on_start(&key(1), 1, 0);
        l.on_finish(&key(1), TaskOutcome::Cancelled, 5);
        assert_eq!(l.running_tasks_of(&JobId("job-1".into())), vec![key(0)]);
        l.forget_job(&JobId("job-1".into()));
        assert!(l.entry(&key(0)).is_none());
        assert_eq!(l.on_start(&key(0), 1, 0), StartAnswer::Started);
    }

    #[test]
    fn restored_ledger_keeps_the_guarantee() {
        let mut l = Ledger::new();
        l.on_start(&key(0), 4, 0);
        let restored = Ledger::from_entries([(key(0), l.entry(&key(0)).unwrap().clone(), None)], 9);
        let mut r = restored;
        assert_eq!(
            r.on_start(&key(0), 3, 0),
            StartAnswer::Fenced { current: 4 }
        );
        assert_eq!(r.on_start(&key(0), 4, 0), StartAnswer::AlreadyRunning);
    }

    #[test]
    fn a_job_is_a_compaction_candidate_once_all_its_tasks_ended_before_the_cutoff() {
        let mut l = Ledger::new();
        let other = TaskKey {
            job: JobId("job-2".into()),
            task: 0,
        };
        l.on_start(&key(0), 1, 0);
        l.on_start(&key(1), 1, 0);
        l.on_start(&other, 1, 0);
        l.on_finish(&key(0), TaskOutcome::Cancelled, 100);
        l.on_finish(&other, TaskOutcome::Cancelled, 300);
        assert_eq!(
            l.jobs_ended_before(1_000),
            vec![other.job.clone()],
            "job-1 still runs"
        );
        l.on_finish(&key(1), TaskOutcome::Succeeded("{}".into()), 200);
        assert_eq!(
            l.jobs_ended_before(199),
            Vec::<JobId>::new(),
            "its last task ended at 200"
        );
        assert_eq!(l.jobs_ended_before(250), vec![JobId("job-1".into())]);
        // A new attempt runs again: the job is no longer a candidate.
        assert_eq!(l.on_start(&key(1), 1, 1), StartAnswer::Started);
        assert_eq!(l.ended_at(&key(1)), None);
        assert_eq!(l.jobs_ended_before(1_000), vec![other.job.clone()]);
        l.forget_job(&other.job);
        assert_eq!(l.jobs_ended_before(1_000), Vec::<JobId>::new());
    }

    #[test]
    fn a_restored_entry_without_its_end_time_counts_as_ended_when_loaded() {
        let ended = Entry {
            epoch: 1,
            attempt: 0,
            outcome: Some(TaskOutcome::Cancelled),
        };
        let l = Ledger::from_entries([(key(0), ended.clone(), None)], 500);
        assert_eq!(l.ended_at(&key(0)), Some(500));
        let l = Ledger::from_entries([(key(0), ended, Some(70))], 500);
        assert_eq!(l.ended_at(&key(0)), Some(70));
    }
}
