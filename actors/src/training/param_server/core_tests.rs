use flotilla_protocol::services::training::PushOutcome;
use flotilla_protocol::training::{Consistency, GradPayload, Precision, WorkerId};

use super::core::{Config, Readiness, Shard};
use crate::training::error::Error;
use crate::training::optim::{ClipConfig, LrPlan, ShardOptimizer};

const A: WorkerId = WorkerId(0);
const B: WorkerId = WorkerId(1);
const C: WorkerId = WorkerId(2);

fn shard(consistency: Consistency, params: Vec<f32>) -> Shard {
    let n = params.len();
    Shard::new(
        Config {
            shard: 0,
            consistency,
            max_consecutive_nonfinite: 3,
            lr: LrPlan::constant(1.0),
            save_every: 0,
            clip: None,
        },
        params,
        Box::new(ShardOptimizer::sgd(n, 0.0, 0.0).unwrap()),
    )
}

/// Whether `worker`'s pull after `after` is answered with parameters now.
fn ready(s: &Shard, worker: WorkerId, after: Option<u64>) -> bool {
    s.pull_ready(worker, after).unwrap() == Readiness::Ready
}

fn g(v: &[f32]) -> GradPayload {
    GradPayload::F32(v.to_vec())
}

fn joined(consistency: Consistency, workers: &[WorkerId]) -> Shard {
    let mut s = shard(consistency, vec![0.0, 0.0]);
    for w in workers {
        s.join(*w).unwrap();
    }
    s
}

#[test]
fn sync_applies_the_sample_weighted_mean_once_per_step() {
    let mut s = joined(Consistency::Sync, &[A, B]);
    assert!(ready(&s, A, None));
    assert_eq!(
        s.push(A, 0, 1, &g(&[4.0, 0.0])).unwrap(),
        PushOutcome::Pending
    );
    assert_eq!(s.params(), &[0.0, 0.0], "applied before the barrier");
    assert!(!ready(&s, A, Some(0)), "pull answered before the step");
    assert!(matches!(
        s.push(A, 0, 1, &g(&[1.0, 1.0])),
        Err(Error::DuplicatePush { .. })
    ));
    let out = s.push(B, 0, 3, &g(&[0.0, 4.0])).unwrap();
    assert_eq!(
        out,
        PushOutcome::Applied {
            version: 1,
            staleness: 0
        }
    );
    // Mean over 4 samples: (1·[4,0] + 3·[0,4]) / 4 = [1, 3], at lr 1.
    assert_eq!(s.params(), &[-1.0, -3.0]);
    assert!(ready(&s, A, Some(0)) && ready(&s, B, Some(0)));
    assert_eq!(s.stats().updates, 1);
    // A gradient for a finished step is stale; one for a future step is a bug.
    assert_eq!(
        s.push(A, 0, 1, &g(&[1.0, 1.0])).unwrap(),
        PushOutcome::Stale { current: 1 }
    );
    assert!(matches!(
        s.push(A, 5, 1, &g(&[1.0, 1.0])),
        Err(Error::Ahead { .. })
    ));
    assert!(matches!(
        s.push(C, 1, 1, &g(&[1.0, 1.0])),
        Err(Error::UnknownWorker(_))
    ));
}

#[test]
fn sync_leave_during_a_step_does_not_deadlock() {
    // The departed worker had pushed, and its samples were not acknowledged: discarded.
    let mut s = joined(Consistency::Sync, &[A, B, C]);
    s.push(A, 0, 1, &g(&[2.0, 2.0])).unwrap();
    s.push(C, 0, 1, &g(&[9.0, 9.0])).unwrap();
    assert_eq!(s.stats().held, 2);
    let out = s.leave(C, true);
    assert_eq!(out, None, "B has not pushed yet");
    let out = s.leave(B, true);
    assert_eq!(
        out,
        Some(PushOutcome::Applied {
            version: 1,
            staleness: 0
        })
    );
    assert_eq!(s.params(), &[-2.0, -2.0], "only A's gradient counts");

    // A worker that leaves with an acknowledged gradient keeps it in the step.
    let mut s = joined(Consistency::Sync, &[A, B]);
    s.push(B, 0, 1, &g(&[2.0, 0.0])).unwrap();
    assert_eq!(s.leave(B, false), None);
    s.push(A, 0, 1, &g(&[0.0, 2.0])).unwrap();
    assert_eq!(s.params(), &[-1.0, -1.0]);

    // Everyone leaves while a gradient is held: the step still completes.
    let mut s = joined(Consistency::Sync, &[A, B]);
    s.push(A, 0, 2, &g(&[1.0, 1.0])).unwrap();
    s.leave(B, true);
    assert_eq!(s.version(), 1);
    assert!(s.leave(A, false).is_none());
}

#[test]
fn sync_join_mid_step_waits_for_the_newcomer() {
    let mut s = joined(Consistency::Sync, &[A]);
    s.join(B).unwrap();
    assert_eq!(
        s.push(A, 0, 1, &g(&[1.0, 1.0])).unwrap(),
        PushOutcome::Pending
    );
    assert!(ready(&s, B, None));
    // A worker with no data this step still takes part in the barrier.
    assert!(matches!(
        s.push(B, 0, 0, &GradPayload::F32(vec![])).unwrap(),
        PushOutcome::Applied { version: 1, .. }
    ));
    assert_eq!(s.params(), &[-1.0, -1.0]);
}

#[test]
fn async_applies_every_gradient_and_tracks_staleness() {
    let mut s = joined(Consistency::Async, &[A, B]);
    assert!(matches!(
        s.push(A, 0, 1, &g(&[1.0, 0.0])).unwrap(),
        PushOutcome::Applied {
            version: 1,
            staleness: 0
        }
    ));
    assert!(matches!(
        s.push(A, 1, 1, &g(&[1.0, 0.0])).unwrap(),
        PushOutcome::Applied {
            version: 2,
            staleness: 0
        }
    ));
    // B computed at version 0; two updates happened since.
    assert_eq!(
        s.push(B, 0, 5, &g(&[0.0, 1.0])).unwrap(),
        PushOutcome::Applied {
            version: 3,
            staleness: 2
        }
    );
    assert_eq!(s.params(), &[-2.0, -1.0]);
    assert_eq!(s.stats().max_staleness, 2);
    assert!(ready(&s, A, Some(0)));
}

#[test]
fn ssp_holds_a_worker_that_runs_ahead_until_the_slowest_catches_up() {
    let mut s = joined(Consistency::Ssp(2), &[A, B]);
    for step in 0..2 {
        s.push(A, step, 1, &g(&[1.0, 0.0])).unwrap();
        assert!(ready(&s, A, Some(step)), "within the bound");
    }
    s.push(A, 2, 1, &g(&[1.0, 0.0])).unwrap();
    assert!(!ready(&s, A, Some(2)), "3 ahead of B with bound 2");
    assert!(ready(&s, B, None));
    s.push(B, 0, 1, &g(&[0.0, 1.0])).unwrap();
    assert!(ready(&s, A, Some(2)), "B caught up by one");
    // A newcomer starts at the slowest clock and does not hold anyone back.
    s.join(C).unwrap();
    assert!(ready(&s, A, Some(2)));
    for step in 3..5 {
        s.push(A, step, 1, &g(&[1.0, 0.0])).unwrap();
    }
    assert!(!ready(&s, A, Some(4)));
    // The slow workers leave: the fast one is released.
    s.leave(B, false);
    assert!(!ready(&s, A, Some(4)), "C is as slow as B was");
    s.leave(C, false);
    assert!(ready(&s, A, Some(4)));
    assert!(s.stats().max_staleness >= 1);
}

#[test]
fn non_finite_steps_are_skipped_then_fail_the_job() {
    let mut s = joined(Consistency::Sync, &[A, B]);
    let nan = g(&[f32::NAN, 0.0]);
    // One bad gradient skips the whole sync step.
    s.push(A, 0, 1, &nan).unwrap();
    assert_eq!(
        s.push(B, 0, 1, &g(&[1.0, 1.0])).unwrap(),
        PushOutcome::Skipped { consecutive: 1 }
    );
    assert_eq!((s.version(), s.params()), (1, &[0.0f32, 0.0][..]));
    // A good step resets the run.
    s.push(A, 1, 1, &g(&[1.0, 1.0])).unwrap();
    s.push(B, 1, 1, &g(&[1.0, 1.0])).unwrap();
    assert_eq!(s.stats().consecutive_nonfinite, 0);
    for step in 2..5 {
        s.push(A, step, 1, &nan).unwrap();
        s.push(B, step, 1, &nan).unwrap();
    }
    let reason = s.failure().unwrap().to_string();
    assert!(reason.contains("3 steps in a row"), "{reason}");
    assert!(matches!(s.pull_ready(A, Some(4)), Err(Error::Failed(_))));
    assert!(matches!(s.push(A, 5, 1, &nan), Err(Error::Failed(_))));
    assert_eq!(s.stats().skipped, 4);

    // Async: an f16 gradient that overflowed is skipped too.
    let mut s = joined(Consistency::Async, &[A]);
    let over = GradPayload::encode(&[1e6, 0.0], Precision::F16);
    assert_eq!(
        s.push(A, 0, 1, &over).unwrap(),
        PushOutcome::Skipped { consecutive: 1 }
    );
    s.push(A, 1, 1, &GradPayload::encode(&[0.5, 0.25], Precision::Bf16))
        .unwrap();
    assert_eq!(s.params(), &[-0.5, -0.25]);
}

#[test]
fn bad_payloads_are_refused() {
    let mut s = joined(Consistency::Async, &[A]);
    assert!(matches!(
        s.push(A, 0, 1, &g(&[1.0])),
        Err(Error::Length { .. })
    ));
    assert!(matches!(
        s.push(A, 0, 1, &GradPayload::F16(vec![0; 3])),
        Err(Error::Malformed)
    ));
    assert_eq!(s.range(1, 1).unwrap(), &[0.0]);
    assert!(s.range(1, 2).is_err() && s.range(u64::MAX, 2).is_err());
}

#[test]
fn snapshots_restore_parameters_optimizer_and_clocks() {
    let mut s = shard(Consistency::Sync, vec![1.0, 2.0, 3.0]);
    let n = 3;
    s.join(A).unwrap();
    s.push(A, 0, 1, &g(&[1.0, 1.0, 1.0])).unwrap();
    let snap = s.snapshot();
    s.push(A, 1, 1, &g(&[5.0, 5.0, 5.0])).unwrap();
    let mut fresh = Shard::new(
        Config {
            shard: 0,
            consistency: Consistency::Sync,
            max_consecutive_nonfinite: 3,
            lr: LrPlan::constant(1.0),
            save_every: 0,
            clip: None,
        },
        vec![0.0; n],
        Box::new(ShardOptimizer::sgd(n, 0.0, 0.0).unwrap()),
    );
    fresh.restore(snap.clone()).unwrap();
    assert_eq!(fresh.snapshot(), snap);
    assert_eq!(fresh.params(), &[0.0, 1.0, 2.0]);
    assert!(ready(&fresh, A, Some(0)));
    let mut short = snap;
    short.params.pop();
    assert!(fresh.restore(short).is_err());
}

#[test]
fn sync_shards_keep_their_state_at_checkpoint_steps() {
    let mut s = Shard::new(
        Config {
            shard: 0,
            consistency: Consistency::Sync,
            max_consecutive_nonfinite: 3,
            lr: LrPlan::constant(1.0),
            save_every: 2,
            clip: None,
        },
        vec![0.0, 0.0],
        Box::new(ShardOptimizer::sgd(2, 0.0, 0.0).unwrap()),
    );
    s.join(A).unwrap();
    for step in 0..3 {
        s.push(A, step, 1, &g(&[1.0, 0.0])).unwrap();
    }
    let at2 = s.snapshot_at(2).unwrap();
    assert_eq!((at2.version, at2.params.clone()), (2, vec![-2.0, 0.0]));
    assert_eq!(
        s.snapshot_at(3).unwrap().params,
        vec![-3.0, 0.0],
        "the current step"
    );
    assert!(s.snapshot_at(1).is_err());
    // The next multiple replaces the kept state.
    s.push(A, 3, 1, &g(&[1.0, 0.0])).unwrap();
    assert!(s.snapshot_at(2).is_err());
    assert_eq!(s.snapshot_at(4).unwrap().version, 4);
    // Async (checkpointed with its workers quiesced): the state as it stands, under any key.
    let mut a = shard(Consistency::Async, vec![1.0, 1.0]);
    a.join(A).unwrap();
    a.push(A, 0, 1, &g(&[1.0, 0.0])).unwrap();
    let now = a.snapshot_at(77).unwrap();
    assert_eq!((now.version, now.params), (1, a.params().to_vec()));
}

fn clipping(clip: f32) -> Shard {
    clipped_by(ClipConfig::fixed(clip), vec![0.0, 0.0])
}

#[test]
fn sync_clipping_waits_for_the_global_norm_then_applies_the_clipped_mean_once() {
    let mut s = clipping(1.0);
    s.join(A).unwrap();
    s.join(B).unwrap();
    assert_eq!(
        s.push(A, 0, 1, &g(&[6.0, 0.0])).unwrap(),
        PushOutcome::Pending
    );
    assert_eq!(
        s.push(B, 0, 1, &g(&[0.0, 8.0])).unwrap(),
        PushOutcome::Pending
    );
    // The barrier closed: the mean [3, 4] waits for the norm; nothing applied yet.
    assert_eq!(s.version(), 0);
    assert_eq!(s.params(), &[0.0, 0.0]);
    assert_eq!(
        s.pull_ready(A, Some(0)).unwrap(),
        Readiness::NeedsNorm {
            step: 0,
            partial_sq: 25.0
        }
    );
    // A newcomer's first gradient for the closed step is served again.
    s.join(C).unwrap();
    assert_eq!(
        s.push(C, 0, 1, &g(&[1.0, 1.0])).unwrap(),
        PushOutcome::Stale { current: 0 }
    );
    assert!(matches!(s.finish(3, 5.0), Err(Error::Ahead { .. })));
    // Another shard holds the rest of the vector: the global norm is 10, so the scale is 0.1.
    s.finish(0, 10.0).unwrap();
    assert_eq!(s.version(), 1);
    assert_eq!(s.last_norm(), Some(10.0));
    let p = s.params().to_vec();
    assert!(
        (p[0] + 0.3).abs() < 1e-6 && (p[1] + 0.4).abs() < 1e-6,
        "{p:?}"
    );
    // A second trainer sending the same norm changes nothing.
    s.finish(0, 10.0).unwrap();
    assert_eq!(s.params(), p.as_slice());
    assert_eq!(s.stats().updates, 1);
    assert!(ready(&s, A, Some(0)));
}

#[test]
fn sync_clipping_gives_the_same_step_however_the_batch_is_split() {
    // One worker with both samples' mean gradient ...
    let mut whole = clipping(1.0);
    whole.join(A).unwrap();
    whole.push(A, 0, 2, &g(&[3.0, 4.0])).unwrap();
    // ... and two workers with one sample each, whose gradients have norms 6 and 8: clipping
    // each alone would give a different step.
    let mut split = clipping(1.0);
    split.join(A).unwrap();
    split.join(B).unwrap();
    split.push(A, 0, 1, &g(&[6.0, 0.0])).unwrap();
    split.push(B, 0, 1, &g(&[0.0, 8.0])).unwrap();
    for s in [&mut whole, &mut split] {
        let Readiness::NeedsNorm { partial_sq, .. } = s.pull_ready(A, Some(0)).unwrap() else {
            panic!("the step waits for its norm");
        };
        s.finish(0, partial_sq.sqrt() as f32).unwrap();
    }
    assert_eq!(whole.params(), split.params());
    let p = whole.params();
    assert!(
        (p[0] + 0.6).abs() < 1e-6 && (p[1] + 0.8).abs() < 1e-6,
        "{p:?}"
    );
}

#[test]
fn sync_clipping_skips_a_step_whose_norm_is_not_finite() {
    let mut s = clipping(1.0);
    s.join(A).unwrap();
    s.push(A, 0, 1, &g(&[3.0, 4.0])).unwrap();
    s.finish(0, f32::INFINITY).unwrap();
    assert_eq!((s.version(), s.stats().skipped), (1, 1));
    assert_eq!(s.params(), &[0.0, 0.0]);
}

fn clipped_by(clip: ClipConfig, params: Vec<f32>) -> Shard {
    let n = params.len();
    Shard::new(
        Config {
            shard: 0,
            consistency: Consistency::Sync,
            max_consecutive_nonfinite: 3,
            lr: LrPlan::constant(1.0),
            save_every: 0,
            clip: Some(clip),
        },
        params,
        Box::new(ShardOptimizer::sgd(n, 0.0, 0.0).unwrap()),
    )
}

#[test]
fn sync_adaptive_clipping_follows_the_runs_norms_and_agrees_across_shards() {
    // Threshold: the median of the norms seen so far, once two have been seen; no cap.
    let adaptive = ClipConfig {
        factor: 1.0,
        percentile: 0.5,
        window: 4,
        min_history: 2,
        max_norm: None,
    };
    // Two shards of a two-value model, one value each, trained by one worker with SGD at lr 1.
    let mut shards = [
        clipped_by(adaptive, vec![0.0]),
        clipped_by(adaptive, vec![0.0]),
    ];
    for s in &mut shards {
        s.join(A).unwrap();
    }
    let mut step = |version: u64, grad: [f32; 2]| {
        for (s, x) in shards.iter_mut().zip(grad) {
            assert_eq!(
                s.push(A, version, 1, &g(&[x])).unwrap(),
                PushOutcome::Pending
            );
        }
        let sq: f64 = shards
            .iter()
            .map(|s| match s.pull_ready(A, Some(version)).unwrap() {
                Readiness::NeedsNorm { partial_sq, .. } => partial_sq,
                other => panic!("the step waits for its norm, not {other:?}"),
            })
            .sum();
        for s in &mut shards {
            s.finish(version, sq.sqrt() as f32).unwrap();
        }
        [shards[0].params()[0], shards[1].params()[0]]
    };
    // Norms 5 and 10 fill the history unclipped.
    assert_eq!(step(0, [3.0, 4.0]), [-3.0, -4.0]);
    assert_eq!(step(1, [6.0, 8.0]), [-9.0, -12.0]);
    // Norm 50 is clipped to the median of {5, 10} (nearest rank: 10) on both shards alike, so
    // the step keeps its direction.
    let p = step(2, [30.0, 40.0]);
    assert!(
        (p[0] + 15.0).abs() < 1e-4 && (p[1] + 20.0).abs() < 1e-4,
        "{p:?}"
    );
    // Norm 8 stays under the median of {5, 10, 50}; a norm-25 step is clipped to the median of
    // {5, 8, 10, 50} (nearest rank: 10).
    let p = step(3, [4.8, 6.4]);
    assert!((p[0] + 19.8).abs() < 1e-4, "{p:?}");
    let p = step(4, [15.0, 20.0]);
    assert!(
        (p[0] + 25.8).abs() < 1e-3 && (p[1] + 34.4).abs() < 1e-3,
        "{p:?}"
    );
}

#[test]
fn a_clipping_config_the_numerics_refuse_fails_the_shard() {
    let bad = ClipConfig {
        window: 0,
        ..ClipConfig::default()
    };
    let s = clipped_by(bad, vec![0.0]);
    assert!(s.failure().is_some_and(|f| f.contains("clip")), "{s:?}");
}
