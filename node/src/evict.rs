//! Evicting a member at run time.
//!
//! The cluster key is shared by every node, so a member cannot be removed by changing it
//! without touching every machine; it is removed by its node id. The eviction is an
//! [`EvictionRecord`] in the replicated catalog: written once on any node, it spreads by gossip
//! and anti-entropy like every other entry, is on disk on every node that has it, and reaches
//! nodes that were down when they come back. Every node runs [`enforce`], which applies each
//! eviction it holds: the node's connections are closed and refused from then on, its gossip is
//! ignored, and it is shown as left in the membership view. Evictions are never deleted.

use std::collections::HashSet;
use std::time::Duration;

use flotilla_actors::{catalog, membership};
use flotilla_protocol::catalog::{CatalogKey, Entry, EvictionRecord, Record, RecordKind, Register};
use flotilla_protocol::{MemberState, NodeId};
use libp2p::PeerId;
use tracing::{info, warn};

use crate::net::mesh::NetMesh;

/// How often [`enforce`] looks for evictions it has not applied yet.
pub const ENFORCE_EVERY: Duration = Duration::from_millis(500);

/// Why an eviction was refused.
#[derive(Debug, thiserror::Error)]
pub enum EvictError {
    #[error("{0:?} is not a node id")]
    NotANodeId(String),
    #[error("a node cannot evict itself ({0}); evict it through another node's API")]
    OwnNode(NodeId),
    #[error("node {0} is not a member this node knows (see `flotilla nodes`)")]
    Unknown(NodeId),
    #[error("the eviction could not be recorded: {0}")]
    Unavailable(String),
}

/// What [`evict`] did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Evicted {
    pub eviction: EvictionRecord,
    /// Whether the node had been evicted before this call (the record is the earlier one).
    pub already_evicted: bool,
}

/// The live eviction under `node`'s key, if there is one.
async fn recorded(
    catalog: &catalog::Handle,
    node: &NodeId,
) -> Result<Option<EvictionRecord>, EvictError> {
    let entry = catalog
        .get(CatalogKey::eviction(node))
        .await
        .map_err(|e| EvictError::Unavailable(e.to_string()))?;
    Ok(match entry {
        Some(Entry::Register(Register {
            value: Some(Record::Eviction(r)),
            ..
        })) => Some(r),
        _ => None,
    })
}

/// Evicts `target`: checks it is a member other than this node, records the eviction in the
/// catalog (on disk before this returns; gossiped to the others) and applies it here at once.
/// Evicting a node again returns the earlier record.
pub async fn evict(
    catalog: &catalog::Handle,
    membership: &membership::Handle,
    mesh: &NetMesh,
    target: &str,
) -> Result<Evicted, EvictError> {
    let peer: PeerId = target
        .parse()
        .map_err(|_| EvictError::NotANodeId(target.to_string()))?;
    let node = NodeId(peer.to_string());
    let me = flotilla_actors::mesh::Mesh::local_id(mesh);
    if node == me {
        return Err(EvictError::OwnNode(node));
    }
    if let Some(earlier) = recorded(catalog, &node).await? {
        apply(mesh, membership, &node).await;
        return Ok(Evicted {
            eviction: earlier,
            already_evicted: true,
        });
    }
    let view = membership
        .view()
        .await
        .map_err(|e| EvictError::Unavailable(e.to_string()))?;
    if !view.iter().any(|m| m.info.id == node) {
        return Err(EvictError::Unknown(node));
    }
    let record = EvictionRecord {
        node: node.clone(),
        evicted_by: me,
        evicted_at_ms: flotilla_actors::clock::wall_ms(),
    };
    catalog
        .put(Record::Eviction(record.clone()))
        .await
        .map_err(|e| EvictError::Unavailable(e.to_string()))?;
    apply(mesh, membership, &node).await;
    info!(node = %node, "node evicted");
    Ok(Evicted {
        eviction: record,
        already_evicted: false,
    })
}

/// Every eviction this node's catalog holds.
pub async fn evictions(catalog: &catalog::Handle) -> flotilla_actors::Result<Vec<EvictionRecord>> {
    Ok(catalog
        .list(Some(RecordKind::Eviction))
        .await?
        .into_iter()
        .filter_map(|(_, e)| match e {
            Entry::Register(Register {
                value: Some(Record::Eviction(r)),
                ..
            }) => Some(r),
            _ => None,
        })
        .collect())
}

/// Refuses the node on the network and marks it left. The leave uses the highest incarnation,
/// so no heartbeat of the node, from any restart, counts as newer.
async fn apply(mesh: &NetMesh, membership: &membership::Handle, node: &NodeId) {
    if let Err(e) = mesh.evict(node).await {
        warn!(node = %node, error = %e, "cannot apply an eviction to the network");
    }
    if let Err(e) = membership.leave(node.clone(), u64::MAX) {
        warn!(node = %node, error = %e, "cannot mark an evicted node left");
    }
}

/// Applies every eviction in the catalog, now and whenever a new one arrives (checked every
/// `every`): from the disk at start, by gossip, or by anti-entropy after this node was down.
/// Runs until the node stops.
pub async fn enforce(
    catalog: catalog::Handle,
    membership: membership::Handle,
    mesh: NetMesh,
    every: Duration,
) {
    let me = flotilla_actors::mesh::Mesh::local_id(&mesh);
    let mut applied: HashSet<NodeId> = HashSet::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let records = match evictions(&catalog).await {
            Ok(r) => r,
            // The catalog is busy or stopping; the next tick tries again.
            Err(_) => continue,
        };
        // A heartbeat that raced the eviction (sent before the node was refused) may have
        // marked an evicted member alive again: mark it left once more.
        if let Ok(view) = membership.view().await {
            for m in view {
                if applied.contains(&m.info.id) && m.state != MemberState::Left {
                    apply(&mesh, &membership, &m.info.id).await;
                }
            }
        }
        for r in records {
            if applied.contains(&r.node) {
                continue;
            }
            if r.node == me {
                // This node was evicted while it was still connected to a peer that had the
                // record; the others refuse it already.
                warn!(
                    "this node has been evicted from the cluster by {}",
                    r.evicted_by
                );
                applied.insert(r.node);
                continue;
            }
            apply(&mesh, &membership, &r.node).await;
            info!(node = %r.node, by = %r.evicted_by, "eviction applied");
            applied.insert(r.node);
        }
    }
}
