//! Export: the records of a dataset version reassembled in upload order.
//!
//! Shard `i` holds the `i`-th run of records of the upload (operations keep the shard index),
//! so reading shards in index order and each shard's records in stored order gives the
//! records in the order they were uploaded. Every shard read is checked end to end against the
//! hash the catalog recorded for it, so an export is either the version's exact records or an
//! error naming the shard.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_protocol::catalog::DatasetRecord;
use flotilla_protocol::services::data::{RequestBody, ResponseBody, ShardId, MAX_RANGE_RECORDS};
use flotilla_protocol::NodeId;
use tracing::warn;

use super::error::{Error, Result};
use super::peers::{unexpected, DataPeers};
use super::record::{shard_hash, Record};
use crate::rendezvous;

/// Reads all records of shard `shard` from `node` in pages.
pub async fn read_shard(
    peers: &dyn DataPeers,
    node: &NodeId,
    shard: &ShardId,
    deadline: Duration,
) -> Result<Vec<Record>> {
    let mut out: Vec<Record> = Vec::new();
    loop {
        let req = RequestBody::ReadRange {
            shard: shard.clone(),
            offset: out.len() as u64,
            limit: MAX_RANGE_RECORDS,
        };
        let (records, total) = match peers.call(node, req, deadline).await? {
            ResponseBody::Records { records, total } => (records, total),
            other => return Err(unexpected(node, "ReadRange", &other)),
        };
        if records.is_empty() && (out.len() as u64) < total {
            return Err(Error::Peer {
                peer: node.to_string(),
                reason: format!("shard {shard}: empty page at offset {}", out.len()),
            });
        }
        out.extend(records.into_iter().map(Record::from));
        if out.len() as u64 >= total {
            return Ok(out);
        }
    }
}

/// Calls `each(index, records)` for every shard of `version` in index order, reading each
/// from its first live holder (in rendezvous order) that serves it with the catalog's hash.
pub async fn export_each(
    peers: &dyn DataPeers,
    version: &DatasetRecord,
    holders: &BTreeMap<u32, Vec<NodeId>>,
    alive: &[NodeId],
    deadline: Duration,
    mut each: impl FnMut(u32, Vec<Record>) -> Result<()>,
) -> Result<()> {
    for (i, want) in version.shard_hashes.iter().enumerate() {
        let i = i as u32;
        let id = ShardId::new(&version.name, version.version, i);
        let live: Vec<NodeId> = holders
            .get(&i)
            .into_iter()
            .flatten()
            .filter(|n| alive.contains(n))
            .cloned()
            .collect();
        let mut last = None;
        let mut got = None;
        for n in rendezvous::rank(&id.placement_key(), &live) {
            match read_shard(peers, &n, &id, deadline).await {
                Ok(records) => {
                    let actual = shard_hash(&records);
                    if actual == *want {
                        got = Some(records);
                        break;
                    }
                    let e = Error::HashMismatch {
                        shard: id.clone(),
                        expected: want.clone(),
                        actual,
                    };
                    warn!(node = %n, error = %e, "holder served other records; trying the next");
                    last = Some(e);
                }
                Err(e) => {
                    warn!(node = %n, error = %e, "holder failed; trying the next");
                    last = Some(e);
                }
            }
        }
        match got {
            Some(records) => each(i, records)?,
            None => {
                return Err(last
                    .unwrap_or_else(|| Error::BadRequest(format!("no live holder of shard {id}"))))
            }
        }
    }
    Ok(())
}

/// Every record of `version` in upload order (for versions that fit in memory).
pub async fn export_all(
    peers: &dyn DataPeers,
    version: &DatasetRecord,
    holders: &BTreeMap<u32, Vec<NodeId>>,
    alive: &[NodeId],
    deadline: Duration,
) -> Result<Vec<Record>> {
    let mut out = Vec::with_capacity(version.record_count.min(1 << 24) as usize);
    export_each(peers, version, holders, alive, deadline, |_, rs| {
        out.extend(rs);
        Ok(())
    })
    .await?;
    Ok(out)
}
