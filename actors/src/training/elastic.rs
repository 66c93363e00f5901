//! Elasticity: who is a worker as nodes join and leave, and when too few workers fail the job.
//!
//! A node that joins while the job has fewer than `workers_max` workers becomes a worker at
//! once (the parameter servers count it from the current step); at the maximum it waits as a
//! standby and is promoted, in join order, when a worker leaves. A worker that is drained or
//! dies leaves alone — the others keep running; its samples are served again by the
//! assignment. With fewer than `workers_min` workers the job keeps going (slower) but a timer
//! runs; below the minimum for longer than `below_min_timeout`, the job fails with a reason
//! that says so. The timer runs from the job's start too, so a job that never gathers enough
//! workers fails the same way.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use flotilla_protocol::training::WorkerId;

use crate::clock::Millis;

/// Limits from the spec's cluster section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub workers_min: u32,
    pub workers_max: u32,
    pub below_min_timeout: Duration,
}

/// What a joining node becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Worker,
    /// Waits for a worker to leave.
    Standby,
}

/// Why a worker leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Asked to leave (preemption, scale-down, node drain): finished its step first.
    Drained,
    /// Crashed or was declared dead by membership.
    Died,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A standby became a worker: join it to the servers and start its trainer.
    Promote(WorkerId),
    /// The job fails with this reason.
    Fail(String),
}

/// The policy's state for one job.
#[derive(Debug, Clone)]
pub struct Elastic {
    cfg: Config,
    workers: BTreeSet<WorkerId>,
    standby: VecDeque<WorkerId>,
    below_since: Option<Millis>,
    failed: Option<String>,
}

impl Elastic {
    /// A job with no workers yet, starting at `now`.
    pub fn new(cfg: Config, now: Millis) -> Self {
        Self {
            cfg,
            workers: BTreeSet::new(),
            standby: VecDeque::new(),
            below_since: Some(now),
            failed: None,
        }
    }

    /// The current workers.
    pub fn workers(&self) -> &BTreeSet<WorkerId> {
        &self.workers
    }

    /// Why the job failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn update_timer(&mut self, now: Millis) {
        if self.workers.len() >= self.cfg.workers_min as usize {
            self.below_since = None;
        } else if self.below_since.is_none() {
            self.below_since = Some(now);
        }
    }

    /// A node offers to work.
    pub fn join(&mut self, now: Millis, worker: WorkerId) -> Role {
        if self.workers.contains(&worker) {
            return Role::Worker;
        }
        if self.workers.len() < self.cfg.workers_max as usize {
            self.standby.retain(|w| *w != worker);
            self.workers.insert(worker);
            self.update_timer(now);
            Role::Worker
        } else {
            if !self.standby.contains(&worker) {
                self.standby.push_back(worker);
            }
            Role::Standby
        }
    }

    /// A worker (or standby) leaves; nobody else is restarted.
    pub fn leave(&mut self, now: Millis, worker: WorkerId, _why: Why) -> Vec<Effect> {
        self.standby.retain(|w| *w != worker);
        let mut effects = Vec::new();
        if self.workers.remove(&worker) {
            if let Some(next) = self.standby.pop_front() {
                self.workers.insert(next);
                effects.push(Effect::Promote(next));
            }
        }
        self.update_timer(now);
        effects.extend(self.tick(now));
        effects
    }

    /// Checks the below-minimum timer.
    pub fn tick(&mut self, now: Millis) -> Option<Effect> {
        if self.failed.is_some() {
            return None;
        }
        let since = self.below_since?;
        let below = now.since(since);
        if below <= self.cfg.below_min_timeout {
            return None;
        }
        let reason = format!(
            "only {} of at least {} workers for {:?}, longer than cluster.below_min_timeout ({:?})",
            self.workers.len(),
            self.cfg.workers_min,
            below,
            self.cfg.below_min_timeout
        );
        self.failed = Some(reason.clone());
        Some(Effect::Fail(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(i: u32) -> WorkerId {
        WorkerId(i)
    }

    fn policy() -> Elastic {
        Elastic::new(
            Config {
                workers_min: 2,
                workers_max: 3,
                below_min_timeout: Duration::from_secs(10),
            },
            Millis(0),
        )
    }

    #[test]
    fn joins_below_max_work_and_above_max_wait() {
        let mut e = policy();
        for i in 0..3 {
            assert_eq!(e.join(Millis(1), w(i)), Role::Worker);
        }
        assert_eq!(e.join(Millis(1), w(3)), Role::Standby);
        assert_eq!(e.join(Millis(1), w(4)), Role::Standby);
        assert_eq!(e.join(Millis(1), w(0)), Role::Worker, "joining twice");
        // A leaving worker is replaced by the first standby; the others are untouched.
        assert_eq!(
            e.leave(Millis(2), w(1), Why::Died),
            vec![Effect::Promote(w(3))]
        );
        assert_eq!(
            e.workers().iter().copied().collect::<Vec<_>>(),
            vec![w(0), w(2), w(3)]
        );
        // A standby that leaves is simply forgotten.
        assert!(e.leave(Millis(3), w(4), Why::Drained).is_empty());
        assert!(e.leave(Millis(3), w(0), Why::Drained).is_empty());
        assert_eq!(e.workers().len(), 2);
    }

    #[test]
    fn below_min_for_longer_than_the_timeout_fails_the_job() {
        let mut e = policy();
        e.join(Millis(0), w(0));
        e.join(Millis(5_000), w(1));
        assert_eq!(e.tick(Millis(60_000)), None, "at the minimum");
        assert!(e.leave(Millis(60_000), w(1), Why::Died).is_empty());
        assert_eq!(e.tick(Millis(69_000)), None, "below for 9 s");
        // Back at the minimum in time: the timer resets.
        e.join(Millis(69_500), w(2));
        assert_eq!(e.tick(Millis(200_000)), None);
        e.leave(Millis(200_000), w(2), Why::Died);
        let Some(Effect::Fail(reason)) = e.tick(Millis(210_001)) else {
            panic!("did not fail")
        };
        assert!(reason.contains("only 1 of at least 2 workers"), "{reason}");
        assert!(reason.contains("below_min_timeout"), "{reason}");
        assert_eq!(e.failure(), Some(reason.as_str()));
        assert_eq!(e.tick(Millis(300_000)), None, "fails once");
    }

    #[test]
    fn a_job_that_never_gathers_its_minimum_fails() {
        let mut e = policy();
        e.join(Millis(1), w(0));
        assert!(e.tick(Millis(10_000)).is_none());
        assert!(matches!(e.tick(Millis(10_001)), Some(Effect::Fail(_))));
    }
}
