//! Moving whole shards between nodes in chunks over [`DataPeers`]: pushing an upload's shard
//! to a holder, and fetching a shard from a holder (re-replication, export).
//!
//! The receiver checks the reassembled body against the shard's blake3 before storing it, and
//! [`fetch`] checks it before returning it, so a corrupt or truncated transfer is refused on
//! either side.

use std::time::Duration;

use flotilla_protocol::services::data::{RequestBody, ResponseBody, ShardId, ShardMeta};
use flotilla_protocol::NodeId;

use super::error::{Error, Result};
use super::peers::{unexpected, DataPeers};
use super::shard::body_hash;

/// Sends a shard to `target` in chunks of `chunk_bytes`.
pub async fn push(
    peers: &dyn DataPeers,
    target: &NodeId,
    meta: &ShardMeta,
    body: &[u8],
    chunk_bytes: usize,
    deadline: Duration,
) -> Result<()> {
    let chunks = meta.chunks(chunk_bytes);
    for i in 0..chunks {
        let start = (i as usize).saturating_mul(chunk_bytes.max(1));
        let end = start.saturating_add(chunk_bytes.max(1)).min(body.len());
        let req = RequestBody::PutChunk {
            meta: meta.clone(),
            chunk: i,
            chunks,
            bytes: body.get(start..end).unwrap_or_default().to_vec(),
        };
        match peers.call(target, req, deadline).await? {
            ResponseBody::Stored { complete } if complete == (i + 1 == chunks) => {}
            other => return Err(unexpected(target, "PutChunk", &other)),
        }
    }
    Ok(())
}

/// Fetches a shard's verified body from `source`.
pub async fn fetch(
    peers: &dyn DataPeers,
    source: &NodeId,
    shard: &ShardId,
    chunk_bytes: usize,
    deadline: Duration,
) -> Result<(ShardMeta, Vec<u8>)> {
    let mut body = Vec::new();
    let mut first: Option<(ShardMeta, u32)> = None;
    let mut i = 0;
    loop {
        let req = RequestBody::GetChunk {
            shard: shard.clone(),
            chunk: i,
            max_bytes: chunk_bytes as u32,
        };
        let (meta, chunks, bytes) = match peers.call(source, req, deadline).await? {
            ResponseBody::Chunk {
                meta,
                chunk,
                chunks,
                bytes,
            } if chunk == i => (meta, chunks, bytes),
            other => return Err(unexpected(source, "GetChunk", &other)),
        };
        match &first {
            None => {
                if meta.id != *shard {
                    return Err(Error::Peer {
                        peer: source.to_string(),
                        reason: format!("asked for shard {shard}, sent {}", meta.id),
                    });
                }
                body.reserve(meta.bytes.min(1 << 30) as usize);
                first = Some((meta.clone(), chunks));
            }
            Some((m, n)) if *m == meta && *n == chunks => {}
            Some(_) => {
                return Err(Error::Peer {
                    peer: source.to_string(),
                    reason: format!("shard {shard} changed during the transfer"),
                })
            }
        }
        if body.len() as u64 + bytes.len() as u64 > meta.bytes {
            return Err(Error::Peer {
                peer: source.to_string(),
                reason: format!("sent more than the {} bytes of shard {shard}", meta.bytes),
            });
        }
        body.extend_from_slice(&bytes);
        i += 1;
        if i >= chunks {
            break;
        }
    }
    let Some((meta, _)) = first else {
        return Err(Error::ShardNotFound(shard.clone()));
    };
    let actual = body_hash(&body);
    if actual != meta.hash {
        return Err(Error::HashMismatch {
            shard: shard.clone(),
            expected: meta.hash,
            actual,
        });
    }
    Ok((meta, body))
}
