//! Checkpoints of training jobs on the mesh.
//!
//! Every node hosts the [`CHECKPOINT_STORE`] endpoint over its own store. A coordinator saves
//! checkpoint `step` of a job like this ([`save_shards`], then [`save`]):
//! 1. every shard writes its state at `step` (sync: kept by the shard when it reached that
//!    step; async and ssp: as it stands, with the workers quiesced, `step` being only the
//!    checkpoint's key) as a blob in its host's store and answers the blob's hash;
//! 2. the coordinator fetches each blob (hash-checked) and the dispatch's assignment state of
//!    `step`, and builds the manifest;
//! 3. each of the checkpoint's [`checkpoint::REPLICAS`] holders (rendezvous over the alive
//!    nodes) gets every blob, then the manifest. A holder writes the manifest, synced, only
//!    once every blob it holds matches the manifest, so a checkpoint exists on a node exactly
//!    when it is complete there.
//!
//! Only the run's coordinator may write blobs and manifests into a node's store
//! ([`super::checkpoint_writers`]); any member may read them.
//!
//! After a shard's host is lost, [`latest`] asks every alive node for its newest complete
//! checkpoint of the job and [`restore_shards`] starts every shard from it on the chosen hosts.
//! A corrupt or incomplete checkpoint on a node is skipped there in favour of the one before
//! (`checkpoint::latest_valid`).

use std::sync::Arc;
use std::time::Duration;

use flotilla_actors::mesh::Mesh;
use flotilla_actors::remote::{self, Endpoint, RemoteActor};
use flotilla_actors::store::Store;
use flotilla_actors::training::assignment;
use flotilla_actors::training::checkpoint::{self, Manifest, RunState, ShardEntry};
use flotilla_actors::training::partition;
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::NodeId;
use serde::{Deserialize, Serialize};

use super::checkpoint_writers::Writers;
use flotilla_actors::training::coordinator::params::RemoteParams;

/// The endpoint name every node serves its checkpoint store under.
pub const CHECKPOINT_STORE: &str = "train/checkpoints";

/// The lineage a training job's checkpoints are kept under: the same for every attempt of
/// the catalog job `run`.
pub fn lineage_of(run: &JobId) -> JobId {
    JobId(format!(
        "train-{}",
        &blake3::hash(run.as_str().as_bytes()).to_hex()[..16]
    ))
}

/// A request to a node's checkpoint store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoreAsk {
    /// Keep one shard's blob of checkpoint `step` of lineage `job`, which belongs to the
    /// catalog job `run` (the store checks both, and that the sender coordinates `run`).
    PutBlob {
        run: JobId,
        job: JobId,
        step: u64,
        shard: u32,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
    },
    /// Write the manifest once every blob it lists is here and intact; `run` as for `PutBlob`.
    PutManifest { run: JobId, manifest: Manifest },
    /// One shard's blob, checked against `blake3`.
    GetBlob {
        job: JobId,
        step: u64,
        shard: u32,
        blake3: String,
    },
    /// The newest complete checkpoint of `job` here.
    Latest { job: JobId },
}

/// A checkpoint store's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoreReply {
    Done,
    Blob(#[serde(with = "serde_bytes")] Vec<u8>),
    Latest(Option<Manifest>),
}

type Answer = std::result::Result<StoreReply, String>;

/// The endpoint over this node's store.
pub struct CheckpointStore {
    pub store: Arc<dyn Store>,
    /// Who may write checkpoints of a job here.
    pub writers: Arc<dyn Writers>,
}

#[async_trait::async_trait]
impl Endpoint for CheckpointStore {
    async fn call(&self, from: &NodeId, payload: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
        let ask: StoreAsk = remote::decode(&payload)?;
        let writes = match &ask {
            StoreAsk::PutBlob { run, job, .. } => Some((run, job)),
            StoreAsk::PutManifest { run, manifest } => Some((run, &manifest.job)),
            StoreAsk::GetBlob { .. } | StoreAsk::Latest { .. } => None,
        };
        if let Some((run, lineage)) = writes {
            let allowed = if lineage_of(run) != *lineage {
                Err(format!(
                    "{lineage} is not the checkpoint lineage of job {run}"
                ))
            } else {
                self.writers.may_write(from, run).await
            };
            if let Err(why) = allowed {
                tracing::warn!(%from, %run, %why, "checkpoint write refused");
                return Err(format!("checkpoint write refused: {why}"));
            }
        }
        let store = self.store.clone();
        // rocksdb reads and the hashing of blobs block: off the async workers.
        let answer: Answer = tokio::task::spawn_blocking(move || answer(store.as_ref(), ask))
            .await
            .map_err(|e| format!("checkpoint store task: {e}"))?;
        remote::encode(&answer)
    }
}

fn answer(store: &dyn Store, ask: StoreAsk) -> Answer {
    let e = |e: flotilla_actors::training::error::Error| e.to_string();
    match ask {
        StoreAsk::PutBlob {
            job,
            step,
            shard,
            blob,
            ..
        } => {
            checkpoint::put_blob(store, &job, step, shard, &blob).map_err(e)?;
            Ok(StoreReply::Done)
        }
        StoreAsk::PutManifest { manifest, .. } => {
            checkpoint::write_manifest(store, &manifest).map_err(e)?;
            Ok(StoreReply::Done)
        }
        StoreAsk::GetBlob {
            job,
            step,
            shard,
            blake3,
        } => Ok(StoreReply::Blob(
            checkpoint::get_blob(store, &job, step, shard, &blake3).map_err(e)?,
        )),
        StoreAsk::Latest { job } => Ok(StoreReply::Latest(
            checkpoint::latest_valid(store, &job)
                .map_err(e)?
                .map(|(m, _)| m),
        )),
    }
}

/// Calls the checkpoint store of `node`.
async fn ask(mesh: &Arc<dyn Mesh>, node: &NodeId, msg: StoreAsk) -> Result<StoreReply, String> {
    // Blobs of large shards take a while to hash and write.
    let actor: RemoteActor<StoreAsk, Answer> = RemoteActor::new(
        mesh.clone(),
        node.clone(),
        CHECKPOINT_STORE,
        Duration::from_secs(60),
    );
    actor
        .call(&msg)
        .await
        .map_err(|e| format!("checkpoint store on {node}: {e}"))?
        .map_err(|e| format!("checkpoint store on {node}: {e}"))
}

async fn get_blob(
    mesh: &Arc<dyn Mesh>,
    node: &NodeId,
    m: &Manifest,
    e: &ShardEntry,
) -> Result<Vec<u8>, String> {
    let msg = StoreAsk::GetBlob {
        job: m.job.clone(),
        step: m.step,
        shard: e.shard,
        blake3: e.blake3.clone(),
    };
    match ask(mesh, node, msg).await? {
        StoreReply::Blob(b) => Ok(b),
        other => Err(format!("unexpected answer to a blob read: {other:?}")),
    }
}

async fn put_blob(
    mesh: &Arc<dyn Mesh>,
    node: &NodeId,
    run: &JobId,
    m: &Manifest,
    shard: u32,
    blob: Vec<u8>,
) -> Result<(), String> {
    let msg = StoreAsk::PutBlob {
        run: run.clone(),
        job: m.job.clone(),
        step: m.step,
        shard,
        blob,
    };
    ask(mesh, node, msg).await.map(|_| ())
}

/// What [`save`] needs besides the shards.
pub struct SaveArgs<'a> {
    /// The catalog job the run belongs to.
    pub catalog_job: &'a JobId,
    /// Its lineage ([`lineage_of`]).
    pub job: &'a JobId,
    pub step: u64,
    pub seed: u64,
    pub assignment: assignment::Checkpoint,
    /// The coordinator's part (ledger and step records before `step`).
    pub run: RunState,
    /// Nodes alive now: the holders are chosen among them.
    pub alive: &'a [NodeId],
}

/// Step 1 of a checkpoint (see the module docs): every shard of `params` writes its blob of
/// checkpoint `step` on its host; their entries, in shard order.
pub async fn save_shards(params: &RemoteParams, step: u64) -> Result<Vec<ShardEntry>, String> {
    let ranges = partition::ranges(
        flotilla_actors::training::client::ParamClient::total_params(params),
        params.hosts().len(),
    );
    let mut shards = Vec::with_capacity(ranges.len());
    for (i, r) in ranges.iter().enumerate() {
        let saved = params
            .save(i as u32, step)
            .await
            .map_err(|e| e.to_string())?;
        shards.push(ShardEntry {
            shard: i as u32,
            start: r.start as u64,
            end: r.end as u64,
            version: saved.version,
            blake3: saved.blake3,
            bytes: saved.bytes,
        });
    }
    Ok(shards)
}

/// Steps 2 and 3: checkpoint `a.step` of the job whose shards `params` reaches, from the blobs
/// [`save_shards`] wrote; the manifest written on every holder.
pub async fn save(
    mesh: &Arc<dyn Mesh>,
    params: &RemoteParams,
    a: SaveArgs<'_>,
    shards: Vec<ShardEntry>,
) -> Result<Manifest, String> {
    let holders = checkpoint::holders(a.job, a.step, a.alive).map_err(|e| e.to_string())?;
    let hosts = params.hosts();
    let total_params = shards.last().map_or(0, |s| s.end);
    let manifest = Manifest {
        job: a.job.clone(),
        step: a.step,
        seed: a.seed,
        assignment: a.assignment,
        total_params,
        shards,
        holders: holders.clone(),
        run: a.run,
    };
    for (e, host) in manifest.shards.iter().zip(&hosts) {
        let blob = get_blob(mesh, host, &manifest, e).await?;
        for holder in holders.iter().filter(|h| *h != host) {
            put_blob(
                mesh,
                holder,
                a.catalog_job,
                &manifest,
                e.shard,
                blob.clone(),
            )
            .await?;
        }
    }
    for holder in &holders {
        let put = StoreAsk::PutManifest {
            run: a.catalog_job.clone(),
            manifest: manifest.clone(),
        };
        ask(mesh, holder, put).await?;
    }
    Ok(manifest)
}

/// The newest checkpoint of `job` complete on some node of `nodes`, and that node. Nodes that
/// do not answer are passed over.
pub async fn latest(
    mesh: &Arc<dyn Mesh>,
    job: &JobId,
    nodes: &[NodeId],
) -> Option<(NodeId, Manifest)> {
    let mut best: Option<(NodeId, Manifest)> = None;
    for node in nodes {
        let Ok(StoreReply::Latest(Some(m))) =
            ask(mesh, node, StoreAsk::Latest { job: job.clone() }).await
        else {
            continue;
        };
        if best.as_ref().is_none_or(|(_, b)| m.step > b.step) {
            best = Some((node.clone(), m));
        }
    }
    best
}

/// Copies every blob of `m` (a checkpoint of catalog job `run`) from `holder` to the node
/// that will host its shard, so the shard can restore from its own store; the blobs, in shard
/// order.
pub async fn stage_blobs(
    mesh: &Arc<dyn Mesh>,
    run: &JobId,
    holder: &NodeId,
    m: &Manifest,
    hosts: &[NodeId],
) -> Result<Vec<Vec<u8>>, String> {
    let mut blobs = Vec::with_capacity(m.shards.len());
    for (e, host) in m.shards.iter().zip(hosts) {
        let blob = get_blob(mesh, holder, m, e).await?;
        if host != holder {
            put_blob(mesh, host, run, m, e.shard, blob.clone()).await?;
        }
        blobs.push(blob);
    }
    Ok(blobs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use flotilla_actors::training::param_server::core::Snapshot;

    use super::*;

    fn snapshot(shard: u32, version: u64, value: f32) -> Snapshot {
        Snapshot {
            shard,
            version,
            updates: version,
            params: vec![value; 4],
            optimizer: vec![1, 2, 3],
            clocks: vec![(flotilla_protocol::training::WorkerId(0), version)],
        }
    }

    /// Writes from one node only: the plumbing of the rule, not the rule itself (that is
    /// `RunCoordinators`, exercised on a cluster by the `checkpoint_writes` test).
    struct OnlyFrom(NodeId);

    #[async_trait::async_trait]
    impl Writers for OnlyFrom {
        async fn may_write(&self, from: &NodeId, job: &JobId) -> Result<(), String> {
            if *from == self.0 {
                Ok(())
            } else {
                Err(format!("{from} does not coordinate {job}"))
            }
        }
    }

    fn coordinator() -> NodeId {
        NodeId::from("coordinator")
    }

    async fn ask_as(store: &CheckpointStore, from: &NodeId, msg: StoreAsk) -> Answer {
        match store.call(from, remote::encode(&msg).unwrap()).await {
            Ok(bytes) => remote::decode(&bytes).unwrap(),
            Err(refused) => Err(refused),
        }
    }

    async fn ask_store(store: &CheckpointStore, msg: StoreAsk) -> Answer {
        ask_as(store, &coordinator(), msg).await
    }

    #[tokio::test]
    async fn the_store_refuses_corrupt_or_incomplete_checkpoints_and_falls_back_to_the_previous() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore {
            store: Arc::new(crate::store::RocksStore::open(dir.path()).unwrap()),
            writers: Arc::new(OnlyFrom(coordinator())),
        };
        let run = JobId("job-ckpt".into());
        let job = lineage_of(&run);
        let nodes: Vec<NodeId> = (0..3).map(|i| NodeId(format!("n{i}"))).collect();
        let mut manifests = Vec::new();
        for step in [10u64, 20] {
            let snaps = [snapshot(0, step, step as f32), snapshot(1, step, -1.0)];
            let (m, blobs) = checkpoint::build(
                &job,
                step,
                7,
                assignment::Checkpoint::default(),
                &snaps,
                &nodes,
            )
            .unwrap();
            // A manifest before its blobs is refused: a checkpoint never exists half-written.
            let manifest = |m: &Manifest| StoreAsk::PutManifest {
                run: run.clone(),
                manifest: m.clone(),
            };
            let early = ask_store(&store, manifest(&m)).await;
            assert!(early.unwrap_err().contains("missing"));
            // Writes from anyone but the coordinator are refused before they touch the store.
            let stranger = NodeId::from("stranger");
            let forged = StoreAsk::PutBlob {
                run: run.clone(),
                job: job.clone(),
                step,
                shard: 0,
                blob: blobs[0].clone(),
            };
            for ask in [forged, manifest(&m)] {
                let refused = ask_as(&store, &stranger, ask).await.unwrap_err();
                assert!(refused.contains("refused"), "{refused}");
            }
            // The coordinator of one job does not write into another job's lineage.
            let elsewhere = StoreAsk::PutBlob {
                run: JobId("job-other".into()),
                job: job.clone(),
                step,
                shard: 0,
                blob: blobs[0].clone(),
            };
            let refused = ask_store(&store, elsewhere).await.unwrap_err();
            assert!(refused.contains("lineage"), "{refused}");
            for (e, b) in m.shards.iter().zip(&blobs) {
                let put = StoreAsk::PutBlob {
                    run: run.clone(),
                    job: job.clone(),
                    step,
                    shard: e.shard,
                    blob: b.clone(),
                };
                assert_eq!(ask_store(&store, put).await, Ok(StoreReply::Done));
            }
            assert_eq!(ask_store(&store, manifest(&m)).await, Ok(StoreReply::Done));
            manifests.push(m);
        }
        let latest = StoreAsk::Latest { job: job.clone() };
        assert_eq!(
            ask_store(&store, latest.clone()).await,
            Ok(StoreReply::Latest(Some(manifests[1].clone())))
        );
        // The newest checkpoint's blob of shard 1 is damaged on disk: it is refused by hash and
        // the previous checkpoint is the newest complete one.
        let e = &manifests[1].shards[1];
        let mut damaged = get(&store, &manifests[1], e).await.unwrap();
        damaged[5] ^= 0xff;
        let put = StoreAsk::PutBlob {
            run: run.clone(),
            job: job.clone(),
            step: 20,
            shard: 1,
            blob: damaged,
        };
        ask_store(&store, put).await.unwrap();
        let err = get(&store, &manifests[1], e).await.unwrap_err();
        assert!(err.contains("does not match its hash"), "{err}");
        assert_eq!(
            ask_store(&store, latest).await,
            Ok(StoreReply::Latest(Some(manifests[0].clone())))
        );
        // Another job has nothing here.
        let other = StoreAsk::Latest {
            job: JobId("job-other".into()),
        };
        assert_eq!(ask_store(&store, other).await, Ok(StoreReply::Latest(None)));
    }

    async fn get(store: &CheckpointStore, m: &Manifest, e: &ShardEntry) -> Result<Vec<u8>, String> {
        let msg = StoreAsk::GetBlob {
            job: m.job.clone(),
            step: m.step,
            shard: e.shard,
            blake3: e.blake3.clone(),
        };
        match ask_store(store, msg).await? {
            StoreReply::Blob(b) => Ok(b),
            other => Err(format!("{other:?}")),
        }
    }
}
