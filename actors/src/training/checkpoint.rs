//! Checkpoints of a training job: when to take them, what they hold, where they go, and which
//! one to restore from.
//!
//! Every `save_every` steps the coordinator snapshots every parameter shard (parameters,
//! optimizer state, worker clocks) and the sample assignment (epoch, cursor, pending indices),
//! and builds a [`Manifest`] that lists each shard's blob with its range, size and blake3. The
//! checkpoint goes to [`REPLICAS`] nodes chosen by rendezvous hashing of `(job, step)` among
//! the alive nodes, so any node computes the same holders.
//!
//! Writing is atomic by order: a holder writes every blob, then the manifest with a synced
//! write; a checkpoint exists exactly when its manifest does, so a crash mid-write leaves blobs
//! without a manifest, which no reader trusts. Reading walks manifests newest first and takes
//! the first whose blobs are all present and hash to the manifest's values: a corrupt or
//! incomplete checkpoint is skipped in favour of the one before it. A lost shard is restored
//! from that checkpoint's blob for it.

use flotilla_protocol::codec;
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::NodeId;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::assignment;
use super::error::{Error, Result};
use super::param_server::core::Snapshot;
use crate::rendezvous;
use crate::store::{Column, Durability, Store};

/// Nodes that hold each checkpoint.
pub const REPLICAS: usize = 2;
/// Largest shard blob (a shard of 16 Mi values with AdamW state is about 200 MiB).
pub const MAX_BLOB_BYTES: usize = 1 << 36;
/// Largest manifest (its pending indices dominate).
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024 * 1024;
/// Manifests of one job read back at most.
pub const MAX_MANIFESTS: usize = 100_000;
/// Checkpoints of one job a node keeps: the newest, and one to fall back to when the newest
/// turns out corrupt. Older ones are deleted when a newer one is written.
pub const KEEP: usize = 2;

/// One shard's entry in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub shard: u32,
    /// The shard's range of the flat parameter vector.
    pub start: u64,
    pub end: u64,
    /// Its version (steps taken) in the blob.
    pub version: u64,
    pub blake3: String,
    pub bytes: u64,
}

/// A checkpoint's table of contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub job: JobId,
    pub step: u64,
    /// Seeds every epoch's sample order.
    pub seed: u64,
    pub assignment: assignment::Checkpoint,
    pub total_params: u64,
    pub shards: Vec<ShardEntry>,
    /// The nodes chosen to hold it.
    pub holders: Vec<NodeId>,
    /// What a coordinator on another node needs to carry the run on from here.
    pub run: RunState,
}

/// The coordinator's side of a checkpoint: enough for a coordinator started on another node
/// (after the first one's node died) to go on from the checkpoint's step without losing or
/// repeating a sample, with the loss curve as it stood.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The attempt that wrote the checkpoint (its actors' name prefix): the attempt that resumes
    /// stops whatever of it is left on the surviving nodes.
    pub attempt: String,
    /// `(step, epoch, record index)` of every sample consumed by the steps before `step`.
    pub ledger: Vec<(u64, u32, u64)>,
    /// Step records before `step`.
    pub series: Vec<flotilla_protocol::training::StepRecord>,
    /// The run's global batch (it follows the number of workers at the start, so a run
    /// resumed with fewer nodes keeps its steps and schedule).
    pub global_batch: u32,
}

/// Whether a checkpoint is due after step `step` (not at 0, not twice for one step).
pub fn due(step: u64, save_every: u64, last_saved: Option<u64>) -> bool {
    save_every > 0 && step > 0 && step.is_multiple_of(save_every) && last_saved != Some(step)
}

/// The holders of checkpoint `step` of `job`: the first [`REPLICAS`] alive nodes in
/// rendezvous order. Fewer alive nodes is an error: a checkpoint on one node is lost with it.
pub fn holders(job: &JobId, step: u64, alive: &[NodeId]) -> Result<Vec<NodeId>> {
    let key = format!("{}/{step}", job.as_str());
    let h = rendezvous::top(key.as_bytes(), alive, REPLICAS);
    if h.len() < REPLICAS {
        return Err(Error::Checkpoint(format!(
            "checkpoint {step} of {job} needs {REPLICAS} nodes, {} alive",
            h.len()
        )));
    }
    Ok(h)
}

/// blake3 of `bytes` as 64 lowercase hex characters.
pub fn hash_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// A shard snapshot as a blob.
pub fn encode_snapshot(s: &Snapshot) -> Result<Vec<u8>> {
    codec::encode::<_, MAX_BLOB_BYTES>("checkpoint", s)
        .map_err(|e| Error::Checkpoint(e.to_string()))
}

/// A blob back as a snapshot.
pub fn decode_snapshot(b: &[u8]) -> Result<Snapshot> {
    codec::decode::<_, MAX_BLOB_BYTES>("checkpoint", b)
        .map_err(|e| Error::Checkpoint(e.to_string()))
}

/// Builds checkpoint `step`: the manifest and each shard's blob, in shard order. `snapshots`
/// are the shards' in shard order; their lengths give the ranges.
pub fn build(
    job: &JobId,
    step: u64,
    seed: u64,
    assignment: assignment::Checkpoint,
    snapshots: &[Snapshot],
    alive: &[NodeId],
) -> Result<(Manifest, Vec<Vec<u8>>)> {
    let holders = holders(job, step, alive)?;
    let mut shards = Vec::with_capacity(snapshots.len());
    let mut blobs = Vec::with_capacity(snapshots.len());
    let mut start = 0u64;
    for (i, s) in snapshots.iter().enumerate() {
        if s.shard as usize != i {
            return Err(Error::Checkpoint(format!(
                "snapshot {i} is of shard {}",
                s.shard
            )));
        }
        let blob = encode_snapshot(s)?;
        let end = start + s.params.len() as u64;
        shards.push(ShardEntry {
            shard: s.shard,
            start,
            end,
            version: s.version,
            blake3: hash_hex(&blob),
            bytes: blob.len() as u64,
        });
        blobs.push(blob);
        start = end;
    }
    let manifest = Manifest {
        job: job.clone(),
        step,
        seed,
        assignment,
        total_params: start,
        shards,
        holders,
        run: RunState::default(),
    };
    Ok((manifest, blobs))
}

fn job_prefix(job: &JobId, kind: &str) -> Vec<u8> {
    format!("ckpt/{}/{kind}/", job.as_str()).into_bytes()
}

fn manifest_key(job: &JobId, step: u64) -> Vec<u8> {
    let mut k = job_prefix(job, "m");
    k.extend_from_slice(&step.to_be_bytes());
    k
}

/// Where a shard host notes the step of the last blob it wrote for a shard of `job`.
fn last_local_key(job: &JobId, shard: u32) -> Vec<u8> {
    let mut k = job_prefix(job, "l");
    k.extend_from_slice(&shard.to_be_bytes());
    k
}

fn blob_key(job: &JobId, step: u64, shard: u32) -> Vec<u8> {
    let mut k = job_prefix(job, "b");
    k.extend_from_slice(&step.to_be_bytes());
    k.extend_from_slice(&shard.to_be_bytes());
    k
}

/// Stores one shard's blob of checkpoint `step` on this node (the node hosting a shard saves
/// its blob locally, then copies it to the checkpoint's holders). Buffered: the manifest's
/// synced write makes it durable.
pub fn put_blob(store: &dyn Store, job: &JobId, step: u64, shard: u32, blob: &[u8]) -> Result<()> {
    store.put(
        Column::Checkpoints,
        &blob_key(job, step, shard),
        blob,
        Durability::Buffered,
    )?;
    Ok(())
}

/// Stores the blob a shard's host writes for checkpoint `step` ([`put_blob`]) and deletes the
/// one it wrote for the previous checkpoint unless this node holds that checkpoint (then
/// [`prune`] deletes it in its turn): a host that is not a holder keeps one blob per shard.
pub fn put_local_blob(
    store: &dyn Store,
    job: &JobId,
    step: u64,
    shard: u32,
    blob: &[u8],
) -> Result<()> {
    put_blob(store, job, step, shard, blob)?;
    let marker = last_local_key(job, shard);
    if let Some(prev) = store.get(Column::Checkpoints, &marker)? {
        if let Ok(bytes) = <[u8; 8]>::try_from(prev.as_slice()) {
            let prev = u64::from_be_bytes(bytes);
            let held = store
                .get(Column::Checkpoints, &manifest_key(job, prev))?
                .is_some();
            if prev != step && !held {
                store.delete(
                    Column::Checkpoints,
                    &blob_key(job, prev, shard),
                    Durability::Buffered,
                )?;
            }
        }
    }
    store.put(
        Column::Checkpoints,
        &marker,
        &step.to_be_bytes(),
        Durability::Buffered,
    )?;
    Ok(())
}

/// Deletes every checkpoint of `job` on this node but the newest `keep` (manifest first, so a
/// crash midway leaves blobs without a manifest, which nothing reads); how many went.
pub fn prune(store: &dyn Store, job: &JobId, keep: usize) -> Result<usize> {
    let rows = store.scan_prefix(Column::Checkpoints, &job_prefix(job, "m"), MAX_MANIFESTS)?;
    let old = rows.len().saturating_sub(keep);
    for (key, value) in rows.into_iter().take(old) {
        store.delete(Column::Checkpoints, &key, Durability::Buffered)?;
        // An unreadable manifest's blobs cannot be named; they stay.
        if let Ok(m) = codec::decode::<Manifest, MAX_MANIFEST_BYTES>("checkpoint", &value) {
            for e in &m.shards {
                store.delete(
                    Column::Checkpoints,
                    &blob_key(job, m.step, e.shard),
                    Durability::Buffered,
                )?;
            }
        }
    }
    Ok(old)
}

/// Reads one shard's blob of checkpoint `step` and checks it against `blake3`.
pub fn get_blob(
    store: &dyn Store,
    job: &JobId,
    step: u64,
    shard: u32,
    blake3: &str,
) -> Result<Vec<u8>> {
    let Some(blob) = store.get(Column::Checkpoints, &blob_key(job, step, shard))? else {
        return Err(Error::Checkpoint(format!(
            "checkpoint {step}: blob of shard {shard} is missing"
        )));
    };
    if hash_hex(&blob) != blake3 {
        return Err(Error::Checkpoint(format!(
            "checkpoint {step}: blob of shard {shard} does not match its hash"
        )));
    }
    Ok(blob)
}

/// Writes a checkpoint on this node: the blobs, then (synced) the manifest that makes it
/// exist.
pub fn write(store: &dyn Store, manifest: &Manifest, blobs: &[Vec<u8>]) -> Result<()> {
    if blobs.len() != manifest.shards.len() {
        return Err(Error::Checkpoint(format!(
            "{} blobs for {} shards",
            blobs.len(),
            manifest.shards.len()
        )));
    }
    for (e, b) in manifest.shards.iter().zip(blobs) {
        put_blob(store, &manifest.job, manifest.step, e.shard, b)?;
    }
    write_manifest(store, manifest)
}

/// Writes the manifest of a checkpoint whose blobs this node already holds, once every blob is
/// present, fits its range and matches its hash: the checkpoint then exists here. Synced;
/// syncing also makes the buffered blob writes before it durable (one write-ahead log).
pub fn write_manifest(store: &dyn Store, manifest: &Manifest) -> Result<()> {
    for e in &manifest.shards {
        read_shard(store, manifest, e.shard)?;
    }
    let m = codec::encode::<_, MAX_MANIFEST_BYTES>("checkpoint", manifest)
        .map_err(|e| Error::Checkpoint(e.to_string()))?;
    store.put(
        Column::Checkpoints,
        &manifest_key(&manifest.job, manifest.step),
        &m,
        Durability::Sync,
    )?;
    prune(store, &manifest.job, KEEP)?;
    Ok(())
}

/// Checkpoint `step` of `job` as written on this node with every shard's snapshot verified,
/// or an error saying what is missing or corrupt.
pub fn read(store: &dyn Store, job: &JobId, step: u64) -> Result<(Manifest, Vec<Snapshot>)> {
    let Some(value) = store.get(Column::Checkpoints, &manifest_key(job, step))? else {
        return Err(Error::Checkpoint(format!(
            "no checkpoint {step} of {job} here"
        )));
    };
    let m: Manifest = codec::decode::<_, MAX_MANIFEST_BYTES>("checkpoint", &value)
        .map_err(|e| Error::Checkpoint(format!("checkpoint {step} manifest: {e}")))?;
    let snaps = m
        .shards
        .iter()
        .map(|e| read_shard(store, &m, e.shard))
        .collect::<Result<Vec<_>>>()?;
    Ok((m, snaps))
}

/// The blob of `shard` in checkpoint `m`, verified against the manifest.
fn read_shard(store: &dyn Store, m: &Manifest, shard: u32) -> Result<Snapshot> {
    let Some(entry) = m.shards.iter().find(|e| e.shard == shard) else {
        return Err(Error::Checkpoint(format!(
            "checkpoint {} has no shard {shard}",
            m.step
        )));
    };
    let blob = get_blob(store, &m.job, m.step, shard, &entry.blake3)?;
    let s = decode_snapshot(&blob)?;
    if s.params.len() as u64 != entry.end - entry.start || s.shard != shard {
        return Err(Error::Checkpoint(format!(
            "checkpoint {}: blob of shard {shard} does not fit its range",
            m.step
        )));
    }
    Ok(s)
}

/// The newest checkpoint of `job` on this node whose blobs are all present and intact, with
/// every shard's snapshot; corrupt or incomplete ones are skipped (and logged).
pub fn latest_valid(store: &dyn Store, job: &JobId) -> Result<Option<(Manifest, Vec<Snapshot>)>> {
    let rows = store.scan_prefix(Column::Checkpoints, &job_prefix(job, "m"), MAX_MANIFESTS)?;
    for (key, value) in rows.into_iter().rev() {
        let m: Manifest = match codec::decode::<_, MAX_MANIFEST_BYTES>("checkpoint", &value) {
            Ok(m) => m,
            Err(e) => {
                warn!(key = %String::from_utf8_lossy(&key), error = %e, "skipping unreadable checkpoint manifest");
                continue;
            }
        };
        let snaps: Result<Vec<Snapshot>> = m
            .shards
            .iter()
            .map(|e| read_shard(store, &m, e.shard))
            .collect();
        match snaps {
            Ok(s) => return Ok(Some((m, s))),
            Err(e) => warn!(job = %job, step = m.step, error = %e, "skipping corrupt checkpoint"),
        }
    }
    Ok(None)
}

/// The snapshot to restore a lost shard from: its blob in the newest intact checkpoint.
pub fn restore_shard(store: &dyn Store, job: &JobId, shard: u32) -> Result<(Manifest, Snapshot)> {
    let Some((m, snaps)) = latest_valid(store, job)? else {
        return Err(Error::Checkpoint(format!("no intact checkpoint of {job}")));
    };
    let Some(s) = snaps.into_iter().find(|s| s.shard == shard) else {
        return Err(Error::Checkpoint(format!(
            "checkpoint {} has no shard {shard}",
            m.step
        )));
    };
    Ok((m, s))
}
