//! A job checkpointed mid-epoch and resumed by a new set of actors ends where an
//! uninterrupted run does.

use std::collections::BTreeSet;

use flotilla_protocol::jobs::JobId;
use flotilla_protocol::training::{Consistency, Precision};
use flotilla_protocol::NodeId;

use super::harness::*;
use crate::testing::CrashStore;
use crate::training::assignment::permutation;
use crate::training::checkpoint;
use crate::training::ledger::Ledger;
use crate::training::trainer::Outcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_resumed_from_a_checkpoint_ends_where_an_uninterrupted_one_does() {
    const AT: u64 = 13; // mid-way through the first epoch
    let job = Job::start_with(Consistency::Sync, Precision::F32, 3, Some(AT), None)
        .await
        .unwrap();
    let (params, dispatch) = (job.params.clone(), job.dispatch.clone());
    let (_, outcomes, before) = job.finish_part().await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Done { .. })),
        "{outcomes:?}"
    );
    let snaps = params.snapshots().await.unwrap();
    let versions: Vec<u64> = snaps.iter().map(|s| s.version).collect();
    assert_eq!(versions, vec![AT; SHARDS]);
    let cp = dispatch.inspect(|c| c.checkpoint(AT)).unwrap();
    assert_eq!((cp.epoch, cp.cursor), (0, AT * u64::from(GLOBAL)));
    let store = CrashStore::new();
    let job_id = JobId("job-resume".into());
    let nodes: Vec<NodeId> = (0..4).map(|i| NodeId(format!("n{i}"))).collect();
    assert!(checkpoint::due(AT, AT, None));
    let (manifest, blobs) = checkpoint::build(&job_id, AT, SEED, cp, &snaps, &nodes).unwrap();
    checkpoint::write(&store, &manifest, &blobs).unwrap();

    // Every actor is gone; a new set starts from the checkpoint.
    for h in params.handles() {
        h.stop();
    }
    let restored = checkpoint::latest_valid(&store, &job_id).unwrap().unwrap();
    assert_eq!(restored.0, manifest);
    let job = Job::start_with(Consistency::Sync, Precision::F32, 3, None, Some(restored))
        .await
        .unwrap();
    let (params, outcomes, after) = job.finish_part().await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Done { .. })),
        "{outcomes:?}"
    );
    let mut all = before;
    all.merge(&after);
    all.verify_exactly_once(EPOCHS, RECORDS).unwrap();
    let reference = single_process();
    let diff = params
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("resumed vs single process: max |Δparam| = {diff:e}");
    assert!(diff < 1e-4, "resumed run drifted by {diff}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkpoint_kept_while_training_runs_resumes_exactly() {
    let job = Job::start(Consistency::Sync, Precision::F32, 3)
        .await
        .unwrap();
    let (params, dispatch) = (job.params.clone(), job.dispatch.clone());
    let (_, outcomes, _) = job.finish_part().await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Done { .. })),
        "{outcomes:?}"
    );
    // Training went on past the checkpoint step; shards and coordinator kept its state.
    let mut snaps = Vec::new();
    for h in params.handles() {
        snaps.push(h.snapshot_at(SAVE_EVERY).await.unwrap());
    }
    assert!(params.handles()[0]
        .snapshot_at(SAVE_EVERY - 1)
        .await
        .is_err());
    let cp = dispatch.inspect(|c| c.checkpoint(SAVE_EVERY)).unwrap();
    let per_epoch = RECORDS.div_ceil(u64::from(GLOBAL));
    assert_eq!(cp.epoch as u64, SAVE_EVERY / per_epoch);
    assert_eq!(cp.cursor, (SAVE_EVERY % per_epoch) * u64::from(GLOBAL));

    // The samples the checkpointed parameters hold: every epoch's order up to the cursor,
    // less the pending ones.
    let pending: BTreeSet<(u32, u64)> = cp
        .pending
        .iter()
        .flat_map(|(e, v)| v.iter().map(move |i| (*e, *i)))
        .collect();
    let mut before = Ledger::new();
    for e in 0..=cp.epoch {
        let order = permutation(RECORDS, SEED, e);
        let end = if e == cp.epoch {
            cp.cursor as usize
        } else {
            order.len()
        };
        let done: Vec<u64> = order[..end]
            .iter()
            .copied()
            .filter(|i| !pending.contains(&(e, *i)))
            .collect();
        before.record(e, &done);
    }

    let store = CrashStore::new();
    let job_id = JobId("job-live".into());
    let nodes: Vec<NodeId> = (0..3).map(|i| NodeId(format!("n{i}"))).collect();
    let (manifest, blobs) =
        checkpoint::build(&job_id, SAVE_EVERY, SEED, cp, &snaps, &nodes).unwrap();
    checkpoint::write(&store, &manifest, &blobs).unwrap();
    let restored = checkpoint::latest_valid(&store, &job_id).unwrap().unwrap();
    let job = Job::start_with(Consistency::Sync, Precision::F32, 3, None, Some(restored))
        .await
        .unwrap();
    let (params, _, after) = job.finish_part().await;
    let mut all = before;
    all.merge(&after);
    all.verify_exactly_once(EPOCHS, RECORDS).unwrap();
    let reference = single_process();
    let diff = params
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("resumed from a live checkpoint vs single process: max |Δparam| = {diff:e}");
    assert!(diff < 1e-4, "resumed run drifted by {diff}");
}
