use flotilla_protocol::jobs::JobId;
use flotilla_protocol::training::{Consistency, GradPayload, WorkerId};
use flotilla_protocol::NodeId;

use super::assignment::Checkpoint;
use super::checkpoint::{self, Manifest};
use super::optim::{LrPlan, ShardOptimizer};
use super::param_server::core::{Config, Shard, Snapshot};
use crate::store::{Column, Durability, Store};
use crate::testing::CrashStore;

/// Flips a byte of every blob of checkpoint `step` of shard `shard`.
fn corrupt_blob(store: &CrashStore, step: u64, shard: u32) {
    let tail = [step.to_be_bytes().as_slice(), &shard.to_be_bytes()].concat();
    for (k, mut v) in store.rows(Column::Checkpoints) {
        if k.windows(3).any(|w| w == b"/b/") && k.ends_with(&tail) {
            v[5] ^= 0xff;
            store.poke(Column::Checkpoints, &k, v);
        }
    }
}

const W: WorkerId = WorkerId(0);

fn nodes(n: usize) -> Vec<NodeId> {
    (0..n).map(|i| NodeId(format!("node{i}"))).collect()
}

fn shard(i: u32, params: Vec<f32>) -> Shard {
    let n = params.len();
    let mut s = Shard::new(
        Config {
            shard: i,
            consistency: Consistency::Async,
            max_consecutive_nonfinite: 3,
            lr: LrPlan::constant(0.1),
            save_every: 0,
            clip: None,
        },
        params,
        Box::new(ShardOptimizer::sgd(n, 0.9, 0.0).unwrap()),
    );
    s.join(W).unwrap();
    s
}

fn train(shards: &mut [Shard], steps: u64) {
    for s in shards.iter_mut() {
        for _ in 0..steps {
            let g: Vec<f32> = s.params().iter().map(|p| p - 1.0).collect();
            let v = s.version();
            s.push(W, v, 1, &GradPayload::F32(g)).unwrap();
        }
    }
}

fn save(store: &CrashStore, job: &JobId, step: u64, shards: &[Shard]) -> Manifest {
    let snaps: Vec<Snapshot> = shards.iter().map(Shard::snapshot).collect();
    let cp = Checkpoint {
        epoch: 1,
        cursor: step,
        pending: vec![(1, vec![3, 4])],
    };
    let (mut m, blobs) = checkpoint::build(job, step, 9, cp, &snaps, &nodes(5)).unwrap();
    m.run = checkpoint::RunState {
        attempt: format!("{job}-a"),
        ledger: vec![(step - 1, 1, 7), (step - 1, 1, 2)],
        series: Vec::new(),
        global_batch: 8,
    };
    checkpoint::write(store, &m, &blobs).unwrap();
    m
}

#[test]
fn checkpoints_are_due_every_save_every_steps() {
    assert!(!checkpoint::due(0, 10, None));
    assert!(!checkpoint::due(5, 10, None));
    assert!(checkpoint::due(20, 10, Some(10)));
    assert!(!checkpoint::due(20, 10, Some(20)));
    assert!(!checkpoint::due(20, 0, None));
}

#[test]
fn holders_are_two_nodes_by_rendezvous() {
    let job = JobId("job-a".into());
    let all = nodes(6);
    let h = checkpoint::holders(&job, 100, &all).unwrap();
    assert_eq!(h.len(), 2);
    assert_ne!(h[0], h[1]);
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(checkpoint::holders(&job, 100, &reversed).unwrap(), h);
    // Different steps spread over the nodes.
    let distinct: std::collections::BTreeSet<NodeId> = (1..50)
        .flat_map(|s| checkpoint::holders(&job, s * 100, &all).unwrap())
        .collect();
    assert!(distinct.len() >= 5, "{distinct:?}");
    assert!(checkpoint::holders(&job, 100, &nodes(1)).is_err());
}

#[test]
fn a_lost_shard_is_restored_from_the_latest_intact_checkpoint() {
    let store = CrashStore::new();
    let job = JobId("job-b".into());
    let mut shards = vec![shard(0, vec![0.0; 5]), shard(1, vec![2.0; 4])];
    train(&mut shards, 3);
    save(&store, &job, 100, &shards);
    train(&mut shards, 2);
    let m200 = save(&store, &job, 200, &shards);
    assert_eq!(m200.total_params, 9);
    assert_eq!((m200.shards[1].start, m200.shards[1].end), (5, 9));
    let (m, snaps) = checkpoint::latest_valid(&store, &job).unwrap().unwrap();
    assert_eq!(m, m200);
    assert_eq!(snaps[1], shards[1].snapshot());

    // Shard 1 is lost: a fresh one restored from the checkpoint continues exactly as the
    // original does.
    let (_, snap) = checkpoint::restore_shard(&store, &job, 1).unwrap();
    let mut fresh = shard(1, vec![0.0; 4]);
    fresh.restore(snap).unwrap();
    let mut pair = [fresh, shard(1, vec![0.0; 4])];
    pair[1].restore(shards[1].snapshot()).unwrap();
    train(&mut pair, 4);
    assert_eq!(pair[0].params(), pair[1].params());
    train(&mut shards[1..], 4);
    assert_eq!(pair[0].params(), shards[1].params());

    // The newest checkpoint is corrupted: the one before it is used.
    corrupt_blob(&store, 200, 1);
    let (m, _) = checkpoint::latest_valid(&store, &job).unwrap().unwrap();
    assert_eq!(m.step, 100);
    assert_eq!(m.assignment.pending, vec![(1, vec![3, 4])]);
    // The coordinator's part travels with it.
    assert_eq!(m.run.ledger, vec![(99, 1, 7), (99, 1, 2)]);
    assert_eq!(m.run.attempt, "job-b-a");
    // Blobs written without their manifest (a crash mid-write) are not a checkpoint.
    let snaps: Vec<Snapshot> = shards.iter().map(Shard::snapshot).collect();
    let (m300, blobs) =
        checkpoint::build(&job, 300, 9, Checkpoint::default(), &snaps, &nodes(3)).unwrap();
    for (i, b) in blobs.iter().enumerate() {
        let mut key = format!("ckpt/{}/b/", job.as_str()).into_bytes();
        key.extend_from_slice(&300u64.to_be_bytes());
        key.extend_from_slice(&(i as u32).to_be_bytes());
        store
            .put(Column::Checkpoints, &key, b, Durability::Buffered)
            .unwrap();
    }
    assert_eq!(
        checkpoint::latest_valid(&store, &job)
            .unwrap()
            .unwrap()
            .0
            .step,
        100
    );
    checkpoint::write(&store, &m300, &blobs).unwrap();
    assert_eq!(
        checkpoint::latest_valid(&store, &job)
            .unwrap()
            .unwrap()
            .0
            .step,
        300
    );
    // Nothing intact at all.
    corrupt_blob(&store, 100, 0);
    corrupt_blob(&store, 300, 0);
    assert!(checkpoint::latest_valid(&store, &job).unwrap().is_none());
    assert!(checkpoint::restore_shard(&store, &job, 0).is_err());
}

#[test]
fn a_node_keeps_the_newest_two_checkpoints_and_a_host_one_blob_per_shard() {
    let store = CrashStore::new();
    let job = JobId("job-p".into());
    let mut shards = vec![shard(0, vec![0.0; 3]), shard(1, vec![1.0; 2])];
    let mut written = Vec::new();
    for step in [10, 20, 30, 40] {
        train(&mut shards, 1);
        written.push(save(&store, &job, step, &shards));
    }
    // Only 30 and 40 are left, blobs included; 40 is the one restored from.
    for m in &written[..2] {
        assert!(
            checkpoint::read(&store, &job, m.step).is_err(),
            "{}",
            m.step
        );
        for e in &m.shards {
            assert!(checkpoint::get_blob(&store, &job, m.step, e.shard, &e.blake3).is_err());
        }
    }
    for m in &written[2..] {
        checkpoint::read(&store, &job, m.step).unwrap();
    }
    assert_eq!(
        checkpoint::latest_valid(&store, &job)
            .unwrap()
            .unwrap()
            .0
            .step,
        40
    );
    // The newest corrupt: the one kept beside it is used.
    corrupt_blob(&store, 40, 1);
    assert_eq!(
        checkpoint::latest_valid(&store, &job)
            .unwrap()
            .unwrap()
            .0
            .step,
        30
    );

    // A shard host that holds no checkpoint keeps only its latest blob of each shard.
    let host = CrashStore::new();
    checkpoint::put_local_blob(&host, &job, 10, 0, b"ten").unwrap();
    checkpoint::put_local_blob(&host, &job, 20, 0, b"twenty").unwrap();
    checkpoint::put_local_blob(&host, &job, 20, 1, b"other shard").unwrap();
    let hash = |b: &[u8]| checkpoint::hash_hex(b);
    assert!(checkpoint::get_blob(&host, &job, 10, 0, &hash(b"ten")).is_err());
    checkpoint::get_blob(&host, &job, 20, 0, &hash(b"twenty")).unwrap();
    checkpoint::get_blob(&host, &job, 20, 1, &hash(b"other shard")).unwrap();
    // One it holds a checkpoint of stays (pruning takes it in its turn).
    let (m, blobs) = {
        let snaps: Vec<Snapshot> = shards.iter().map(Shard::snapshot).collect();
        checkpoint::build(&job, 30, 9, Checkpoint::default(), &snaps, &nodes(3)).unwrap()
    };
    checkpoint::write(&host, &m, &blobs).unwrap();
    checkpoint::put_local_blob(&host, &job, 30, 0, &blobs[0]).unwrap();
    checkpoint::put_local_blob(&host, &job, 40, 0, b"forty").unwrap();
    checkpoint::read(&host, &job, 30).unwrap();
}

/// The steps of the checkpoints present in `store` (manifest rows).
fn manifests_in(store: &CrashStore, job: &JobId) -> Vec<u64> {
    let prefix = format!("ckpt/{}/m/", job.as_str()).into_bytes();
    store
        .rows(Column::Checkpoints)
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| u64::from_be_bytes(k[prefix.len()..].try_into().unwrap()))
        .collect()
}

#[test]
fn a_crash_at_any_write_leaves_only_whole_checkpoints() {
    let job = JobId("job-c".into());
    let mut shards = vec![shard(0, vec![0.0; 3]), shard(1, vec![1.0; 2])];
    let mut rounds = Vec::new();
    for step in [10, 20, 30, 40] {
        train(&mut shards, 1);
        let snaps: Vec<Snapshot> = shards.iter().map(Shard::snapshot).collect();
        rounds.push(
            checkpoint::build(&job, step, 9, Checkpoint::default(), &snaps, &nodes(3)).unwrap(),
        );
    }
    // One node hosting both shards and holding every checkpoint: each round, the hosts save
    // their blobs locally, then the holder gets the blobs and the manifest. Returns the steps
    // whose checkpoint write was acknowledged, stopping at the first failed write.
    let run = |store: &CrashStore| -> Vec<u64> {
        let mut acked = Vec::new();
        for (m, blobs) in &rounds {
            for (e, b) in m.shards.iter().zip(blobs) {
                if checkpoint::put_local_blob(store, &job, m.step, e.shard, b).is_err() {
                    return acked;
                }
            }
            if checkpoint::write(store, m, blobs).is_err() {
                return acked;
            }
            acked.push(m.step);
        }
        acked
    };
    let clean = CrashStore::new();
    assert_eq!(run(&clean), vec![10, 20, 30, 40]);
    let writes = clean.writes();
    for k in 0..=writes {
        let store = CrashStore::dying_after(k);
        let acked = run(&store);
        for (n, image) in store.crash_images().iter().enumerate() {
            let at = format!("crash after write {k} of {writes}, keeping {n} unsynced");
            // A manifest present: every blob present and intact.
            let present = manifests_in(image, &job);
            for step in &present {
                if let Err(e) = checkpoint::read(image, &job, *step) {
                    panic!("{at}: checkpoint {step} has a manifest but {e}");
                }
            }
            // The newest checkpoint is the newest manifest, never one whose blobs were lost,
            // and no older than the last acknowledged write.
            let latest = checkpoint::latest_valid(image, &job).unwrap();
            assert_eq!(
                latest.as_ref().map(|(m, _)| m.step),
                present.last().copied(),
                "{at}"
            );
            if let Some(last) = acked.last() {
                let (m, snaps) = latest.expect("an acknowledged checkpoint");
                assert!(
                    m.step >= *last,
                    "{at}: acknowledged {last}, latest {}",
                    m.step
                );
                let (built, blobs) = &rounds[(m.step / 10 - 1) as usize];
                assert_eq!(&m, built, "{at}");
                for (s, b) in snaps.iter().zip(blobs) {
                    assert_eq!(&checkpoint::encode_snapshot(s).unwrap(), b, "{at}");
                }
            }
        }
    }
}
