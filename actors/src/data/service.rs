//! The server side of `/flotilla/data/1`: each request mapped onto this node's
//! [`shard::Handle`](super::shard::Handle), with errors answered as [`RemoteError`]s.
//!
//! `flotilla-node` calls [`serve`] for every inbound data request; tests call it from an
//! in-memory [`DataPeers`], so the same code answers in both.

use std::time::Duration;

use flotilla_protocol::services::control::RemoteError;
use flotilla_protocol::services::data::{
    self as wire, DataRecord, RequestBody, ResponseBody, MAX_CHUNK_BYTES, MAX_FRAME_BYTES,
    MAX_RANGE_RECORDS,
};

use super::error::{Error, Result};
use super::job::worker::parse_ops;
use super::peers::DataPeers;
use super::shard::Handle;
use super::transfer;

/// Room left in a frame for the response's framing around its payload.
const FRAME_SLACK: usize = 64 * 1024;

/// Answers one data request. `deadline` bounds the calls this request makes to other peers
/// (the fetch of a copy).
pub async fn serve(
    local: &Handle,
    peers: &dyn DataPeers,
    body: RequestBody,
    deadline: Duration,
) -> std::result::Result<ResponseBody, RemoteError> {
    answer(local, peers, body, deadline)
        .await
        .map_err(|e| e.to_remote())
}

fn encoded_len<T: serde::Serialize>(value: &T) -> Result<usize> {
    flotilla_protocol::codec::encoded_len(wire::SERVICE, value)
        .map_err(|e| Error::Corrupt(e.to_string()))
}

async fn answer(
    local: &Handle,
    peers: &dyn DataPeers,
    body: RequestBody,
    deadline: Duration,
) -> Result<ResponseBody> {
    Ok(match body {
        RequestBody::PutChunk {
            meta,
            chunk,
            chunks,
            bytes,
        } => {
            if bytes.len() > MAX_CHUNK_BYTES {
                return Err(Error::TooLarge {
                    what: format!("chunk {chunk} of shard {}", meta.id),
                    len: bytes.len() as u64,
                    cap: MAX_CHUNK_BYTES as u64,
                });
            }
            let complete = local.put_chunk(meta, chunk, chunks, bytes).await?;
            ResponseBody::Stored { complete }
        }
        RequestBody::GetChunk {
            shard,
            chunk,
            max_bytes,
        } => {
            let size = (max_bytes as usize).clamp(1, MAX_CHUNK_BYTES);
            let (meta, chunks, bytes) = local.get_chunk(shard, chunk, size).await?;
            ResponseBody::Chunk {
                meta,
                chunk,
                chunks,
                bytes,
            }
        }
        RequestBody::ReadRange {
            shard,
            offset,
            limit,
        } => {
            let (records, total) = local
                .read_range(shard, offset, limit.min(MAX_RANGE_RECORDS))
                .await?;
            let mut records: Vec<DataRecord> = records.into_iter().map(Into::into).collect();
            // Long records: answer fewer of them rather than a frame over the cap; the reader
            // asks again from where this answer ends.
            loop {
                let len = encoded_len(&records)?;
                if len <= MAX_FRAME_BYTES - FRAME_SLACK {
                    break;
                }
                if records.len() <= 1 {
                    return Err(Error::TooLarge {
                        what: format!("record at offset {offset}"),
                        len: len as u64,
                        cap: (MAX_FRAME_BYTES - FRAME_SLACK) as u64,
                    });
                }
                records.truncate(records.len() / 2);
            }
            ResponseBody::Records { records, total }
        }
        RequestBody::List { dataset } => ResponseBody::Shards(local.list(dataset).await?),
        RequestBody::DeleteShard { shard } => ResponseBody::Deleted {
            shards: local.delete_shard(shard).await? as u32,
        },
        RequestBody::DeleteVersion { dataset, version } => ResponseBody::Deleted {
            shards: local.delete_version(dataset, version).await?,
        },
        RequestBody::CopyFrom { shard, source } => {
            let (meta, body) =
                transfer::fetch(peers, &source, &shard, local.chunk_bytes(), deadline).await?;
            local.put(meta.clone(), body).await?;
            ResponseBody::Copied(meta)
        }
        RequestBody::Summarize {
            job: _,
            input,
            ops_json,
            decisions,
        } => {
            let ops = parse_ops(&ops_json)?;
            let summary =
                ResponseBody::Summary(local.summarize(input.clone(), ops, decisions).await?);
            let len = encoded_len(&summary)?;
            if len > MAX_FRAME_BYTES - FRAME_SLACK {
                return Err(Error::TooLarge {
                    what: format!("the summary of shard {input} (use smaller shards)"),
                    len: len as u64,
                    cap: (MAX_FRAME_BYTES - FRAME_SLACK) as u64,
                });
            }
            summary
        }
        RequestBody::Apply {
            job: _,
            input,
            ops_json,
            decisions,
            output,
        } => {
            let ops = parse_ops(&ops_json)?;
            let (meta, report) = local.apply(input, ops, decisions, output).await?;
            let details_json =
                serde_json::to_string(&report.details).map_err(|e| Error::Config {
                    what: "operation details".into(),
                    reason: e.to_string(),
                })?;
            ResponseBody::Applied {
                meta,
                counts: report.counts,
                details_json,
            }
        }
    })
}
