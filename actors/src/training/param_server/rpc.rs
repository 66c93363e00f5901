//! Answers training requests (`protocol::services::training`, the payloads of `/flotilla/actors/1` calls) addressed to a shard hosted here: the node's bridge
//! decodes a request, calls [`serve`] with the shard's handle, and sends the answer back.
//!
//! Checkpoint commands use this node's store: `Save` snapshots the shard and stores its blob
//! under the checkpoint's keys (the coordinator then builds the manifest from the
//! [`SavedShard`]s and has the holders copy the blobs); `Restore` reads the blob, checks its
//! hash and replaces the shard's state.

use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::control::{RemoteError, RemoteErrorKind};
use flotilla_protocol::services::training::{
    CheckpointCommand, RequestBody, ResponseBody, SavedShard, StepNorm, MAX_RANGE_VALUES,
};

use super::Handle;
use crate::store::Store;
use crate::training::checkpoint;
use crate::training::error::Error;

fn remote(e: Error) -> RemoteError {
    let kind = match &e {
        Error::Failed(_) | Error::Busy(_) | Error::Unavailable(_) => RemoteErrorKind::Unavailable,
        Error::Checkpoint(_) => RemoteErrorKind::NotFound,
        Error::UnknownWorker(_)
        | Error::DuplicatePush { .. }
        | Error::Ahead { .. }
        | Error::Length { .. }
        | Error::Malformed
        | Error::Range { .. } => RemoteErrorKind::BadRequest,
    };
    RemoteError {
        kind,
        message: e.to_string(),
    }
}

fn bad(message: String) -> RemoteError {
    RemoteError {
        kind: RemoteErrorKind::BadRequest,
        message,
    }
}

/// Serves one request of `job` for shard `shard`, which `handle` runs.
pub async fn serve(
    handle: &Handle,
    store: &dyn Store,
    job: &JobId,
    shard: u32,
    body: RequestBody,
) -> Result<ResponseBody, RemoteError> {
    let check = |s: u32| {
        if s == shard {
            Ok(())
        } else {
            Err(bad(format!(
                "shard {s} is not served here (shard {shard} is)"
            )))
        }
    };
    match body {
        RequestBody::Join { shard: s, worker } => {
            check(s)?;
            handle.join(worker).await.map_err(remote)?;
            Ok(ResponseBody::Ack)
        }
        RequestBody::Leave {
            shard: s,
            worker,
            drop_pending,
        } => {
            check(s)?;
            handle.leave(worker, drop_pending).await.map_err(remote)?;
            Ok(ResponseBody::Ack)
        }
        RequestBody::Pull {
            shard: s,
            worker,
            after,
            offset,
            len,
        } => {
            check(s)?;
            if len > MAX_RANGE_VALUES as u64 {
                return Err(bad(format!(
                    "pull of {len} values; at most {MAX_RANGE_VALUES} a request"
                )));
            }
            let p = handle
                .pull(worker, after, Some((offset, len)))
                .await
                .map_err(remote)?;
            Ok(ResponseBody::Params {
                version: p.version,
                offset: p.offset,
                values: p.values,
                norm: p.norm,
            })
        }
        RequestBody::Peek { shard: s } => {
            check(s)?;
            let (version, values) = handle.peek().await.map_err(remote)?;
            Ok(ResponseBody::Params {
                version,
                offset: 0,
                values,
                norm: StepNorm::NotClipped,
            })
        }
        RequestBody::Finish {
            shard: s,
            step,
            norm,
        } => {
            check(s)?;
            handle.finish(step, norm).await.map_err(remote)?;
            Ok(ResponseBody::Ack)
        }
        RequestBody::Push {
            shard: s,
            worker,
            step,
            samples,
            grad,
        } => {
            check(s)?;
            let o = handle
                .push(worker, step, samples, grad)
                .await
                .map_err(remote)?;
            Ok(ResponseBody::Pushed(o))
        }
        RequestBody::Checkpoint {
            shard: s,
            command: CheckpointCommand::Save { step },
        } => {
            check(s)?;
            let snap = handle.snapshot_at(step).await.map_err(remote)?;
            let version = snap.version;
            let blob = checkpoint::encode_snapshot(&snap).map_err(remote)?;
            checkpoint::put_local_blob(store, job, step, shard, &blob).map_err(remote)?;
            Ok(ResponseBody::Saved(SavedShard {
                shard,
                version,
                blake3: checkpoint::hash_hex(&blob),
                bytes: blob.len() as u64,
            }))
        }
        RequestBody::Checkpoint {
            shard: s,
            command: CheckpointCommand::Restore { step, blake3 },
        } => {
            check(s)?;
            let blob = checkpoint::get_blob(store, job, step, shard, &blake3).map_err(remote)?;
            let snap = checkpoint::decode_snapshot(&blob).map_err(remote)?;
            let version = snap.version;
            handle.restore(snap).await.map_err(remote)?;
            Ok(ResponseBody::Restored { version })
        }
        RequestBody::Report(_) => Err(bad(
            "metrics reports go to the job's coordinator, not to a shard".into(),
        )),
    }
}
