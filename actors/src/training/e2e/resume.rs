//! A job checkpointed mid-epoch and resumed by a new set of actors ends where an
//! uninterrupted run does.

use flotilla_protocol::jobs::JobId;
use flotilla_protocol::training::{Consistency, Precision};
use flotilla_protocol::NodeId;

use super::harness::*;
use crate::training::checkpoint;
use crate::training::checkpoint_tests::MemStore;
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
    let store = MemStore::default();
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
