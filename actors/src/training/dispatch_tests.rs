use std::time::Duration;

use flotilla_protocol::training::{Consistency, WorkerId, WorkerReport};

use super::assignment::Next;
use super::dispatch::{Config, Core};
use super::elastic::{self, Effect, Role, Why};
use super::error::Error;
use crate::clock::Millis;

fn w(i: u32) -> WorkerId {
    WorkerId(i)
}

fn core(consistency: Consistency, global: Option<u32>) -> Core {
    core_with(consistency, global, 2, 2)
}

/// A core over 100 records with a per-device batch of 4 and `min..=max` workers.
fn core_with(consistency: Consistency, global: Option<u32>, min: u32, max: u32) -> Core {
    Core::new(
        Config {
            records: 100,
            seed: 1,
            epochs: Some(1),
            global_batch: global,
            per_device_batch: 4,
            consistency,
            elastic: elastic::Config {
                workers_min: min,
                workers_max: max,
                below_min_timeout: Duration::from_secs(5),
            },
            speed_alpha: 1.0,
            series_capacity: 10,
            keep_ledger: true,
            save_every: 0,
        },
        Millis(0),
        None,
    )
}

fn report(worker: u32, step: u64, samples: u32, ms: f64) -> WorkerReport {
    WorkerReport {
        worker: w(worker),
        step,
        loss: 1.0,
        grad_norm: 1.0,
        lr: 0.1,
        samples,
        compute_ms: ms,
    }
}

#[test]
fn standbys_are_promoted_and_the_batch_follows_the_workers() {
    let mut c = core(Consistency::Sync, None);
    assert_eq!(c.join(Millis(0), w(0)), Role::Worker);
    assert_eq!(c.shares().values().sum::<u32>(), 4);
    assert_eq!(c.join(Millis(0), w(1)), Role::Worker);
    assert_eq!(
        c.shares().values().sum::<u32>(),
        8,
        "per-device batch times workers"
    );
    assert_eq!(c.join(Millis(0), w(2)), Role::Standby);
    assert!(matches!(
        c.next(w(2), Some(0)),
        Err(Error::UnknownWorker(_))
    ));
    let Ok(Next::Batch(lease)) = c.next(w(0), Some(0)) else {
        panic!()
    };
    assert_eq!(lease.indices.len(), 4);
    // The dead worker held a lease: the shards must drop its held gradient.
    let d = c.leave(Millis(1), w(0), Why::Died);
    assert!(d.drop_pending && d.returned == 4);
    assert_eq!(d.effects, vec![Effect::Promote(w(2))]);
    assert_eq!(c.take_promoted(), vec![w(2)]);
    assert!(c.take_promoted().is_empty());
    // Worker 1 left after acknowledging: nothing to drop.
    let Ok(Next::Batch(l)) = c.next(w(1), Some(0)) else {
        panic!()
    };
    assert!(c.ack(w(1), l.id, Some(0)));
    assert!(!c.leave(Millis(2), w(1), Why::Drained).drop_pending);
}

#[test]
fn sync_shares_are_frozen_within_a_step() {
    let mut c = core(Consistency::Sync, Some(12));
    c.join(Millis(0), w(0));
    c.join(Millis(0), w(1));
    let Ok(Next::Batch(a)) = c.next(w(0), Some(0)) else {
        panic!()
    };
    // Worker 0 reports a huge speed between the two requests of step 0.
    c.report(report(0, 0, 6, 1.0));
    let Ok(Next::Batch(b)) = c.next(w(1), Some(0)) else {
        panic!()
    };
    assert_eq!(a.indices.len() + b.indices.len(), 12);
    // The next step uses the new speeds: worker 1 reported 6 samples in 100 ms.
    c.report(report(1, 0, 6, 100.0));
    c.ack(w(0), a.id, Some(0));
    c.ack(w(1), b.id, Some(0));
    let Ok(Next::Batch(a)) = c.next(w(0), Some(1)) else {
        panic!()
    };
    assert!(a.indices.len() > 6, "{}", a.indices.len());
    // Both workers reported step 0: its record is in the series.
    assert_eq!(
        c.series().latest().map(|r| (r.step, r.samples)),
        Some((0, 12))
    );
}

#[test]
fn a_job_below_its_minimum_for_too_long_fails_every_request() {
    let mut c = core(Consistency::Async, None);
    c.join(Millis(0), w(0));
    assert_eq!(c.tick(Millis(4_000)), None);
    assert!(matches!(c.tick(Millis(5_001)), Some(Effect::Fail(_))));
    let Err(Error::Failed(reason)) = c.next(w(0), None) else {
        panic!()
    };
    assert!(reason.contains("below_min_timeout"), "{reason}");
    assert!(c.failure().is_some());
}

#[test]
fn a_paused_async_dispatch_drains_its_leases_for_a_consistent_checkpoint() {
    let mut c = core(Consistency::Ssp(2), None);
    c.join(Millis(0), w(0));
    c.join(Millis(0), w(1));
    let Next::Batch(a) = c.next(w(0), None).unwrap() else {
        panic!("a lease")
    };
    let Next::Batch(b) = c.next(w(1), None).unwrap() else {
        panic!("a lease")
    };
    assert!(c.ack(w(0), a.id, None));
    c.pause(true);
    // Paused: no new lease, the outstanding one comes in.
    assert!(matches!(c.next(w(0), None).unwrap(), Next::Idle));
    assert_eq!(c.outstanding(), 1);
    assert!(c.ack(w(1), b.id, None));
    assert_eq!((c.outstanding(), c.acks()), (0, 2));
    // What is acknowledged is done: the checkpoint has nothing pending, and the ledger's
    // consumptions carry their acknowledgement's sequence number.
    let cp = c.checkpoint(0);
    assert!(cp.pending.is_empty(), "{cp:?}");
    assert_eq!(cp.cursor, (a.indices.len() + b.indices.len()) as u64);
    let ledger = c.ledger().unwrap();
    assert_eq!(ledger.before_step(1).total(), a.indices.len() as u64);
    assert_eq!(ledger.before_step(2).total(), ledger.total());
    c.pause(false);
    assert!(matches!(c.next(w(0), None).unwrap(), Next::Batch(_)));
    // Sync runs are checkpointed at step boundaries and never pause.
    let mut s = core(Consistency::Sync, None);
    s.join(Millis(0), w(0));
    s.pause(true);
    assert!(matches!(s.next(w(0), Some(0)).unwrap(), Next::Batch(_)));
}

#[test]
fn a_step_left_open_by_a_late_joiner_is_flushed_into_the_series_at_the_end() {
    let mut c = core_with(Consistency::Sync, None, 1, 3);
    c.join(Millis(0), w(0));
    c.join(Millis(0), w(1));
    // Step 0 ran with workers 0 and 1; a third joined before their reports arrived, so the
    // step waits for a report that never comes.
    c.join(Millis(0), w(2));
    c.report(report(0, 0, 6, 10.0));
    c.report(report(1, 0, 2, 10.0));
    for worker in 0..3 {
        c.report(report(worker, 1, 3, 10.0));
    }
    assert_eq!(
        c.series()
            .since(None)
            .iter()
            .map(|r| r.step)
            .collect::<Vec<_>>(),
        vec![1]
    );
    c.flush_reports();
    let steps: Vec<(u64, u32)> = c
        .series()
        .since(None)
        .iter()
        .map(|r| (r.step, r.samples))
        .collect();
    assert_eq!(steps, vec![(1, 9), (0, 8)]);
}
