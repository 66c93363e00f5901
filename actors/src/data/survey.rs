//! Finding where a version's shards are, and carrying out a re-replication plan.
//!
//! The catalog records a version's shard hashes, not its holders: holders change as nodes die
//! and copies are made. [`survey`] asks every live node what it holds (one `List` each) and
//! returns the holders map the re-replication planner, the operation coordinator and export
//! take. [`execute`] asks each copy's target to fetch the shard from its source.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_protocol::services::data::{RequestBody, ResponseBody, ShardId};
use flotilla_protocol::NodeId;
use tracing::warn;

use super::error::Result;
use super::peers::{unexpected, DataPeers};
use super::replication::CopyAction;

/// Holders of each shard of `dataset@version` among `alive`, by shard index, each list in
/// `alive`'s order. A node that does not answer is left out (and logged): the survey describes
/// what can be read now.
pub async fn survey(
    peers: &dyn DataPeers,
    alive: &[NodeId],
    dataset: &str,
    version: u64,
    deadline: Duration,
) -> BTreeMap<u32, Vec<NodeId>> {
    let mut out: BTreeMap<u32, Vec<NodeId>> = BTreeMap::new();
    for n in alive {
        let body = RequestBody::List {
            dataset: Some(dataset.to_string()),
        };
        match peers.call(n, body, deadline).await {
            Ok(ResponseBody::Shards(metas)) => {
                for m in metas.into_iter().filter(|m| m.id.version == version) {
                    out.entry(m.id.index).or_default().push(n.clone());
                }
            }
            Ok(other) => warn!(node = %n, error = %unexpected(n, "List", &other), "survey"),
            Err(e) => warn!(node = %n, error = %e, "node did not answer the survey"),
        }
    }
    out
}

/// Carries out copies in order; the shards whose copy failed, with the error (a later plan
/// over a fresh survey retries them).
pub async fn execute(
    peers: &dyn DataPeers,
    copies: &[CopyAction],
    deadline: Duration,
) -> Vec<(ShardId, super::error::Error)> {
    let mut failed = Vec::new();
    for c in copies {
        if let Err(e) = copy(peers, c, deadline).await {
            warn!(shard = %c.shard, source = %c.source, target = %c.target, error = %e, "copy failed");
            failed.push((c.shard.clone(), e));
        }
    }
    failed
}

async fn copy(peers: &dyn DataPeers, c: &CopyAction, deadline: Duration) -> Result<()> {
    let body = RequestBody::CopyFrom {
        shard: c.shard.clone(),
        source: c.source.clone(),
    };
    match peers.call(&c.target, body, deadline).await? {
        ResponseBody::Copied(m) if m.id == c.shard => Ok(()),
        other => Err(unexpected(&c.target, "CopyFrom", &other)),
    }
}
