//! Model files on more than one node. Every live model version is held by the first
//! `factor` alive nodes in rendezvous order for its version hash (besides the node that
//! registered it). Each node runs [`ModelReplicator`]: for every version it is a holder of, it
//! fetches the blobs it lacks from the nodes that have them. When a holder dies the ranking
//! over the survivors moves on by one, and the next node copies the files back, so losing any
//! one node loses no model.
//!
//! [`wait_replicated`] lets a registration answer only once the holders have the files.

use std::time::{Duration, Instant};

use flotilla_actors::{catalog, membership, rendezvous};
use flotilla_protocol::catalog::{Entry, Record, RecordKind};
use flotilla_protocol::services::serving::{RequestBody, ResponseBody};
use flotilla_protocol::{MemberState, NodeId};
use tracing::{debug, warn};

use super::artifacts::ServedModel;
use super::files::ModelFiles;

/// How many nodes hold every model version's files when the configuration does not say.
pub const DEFAULT_FACTOR: usize = 2;

/// The alive members of `view`.
pub async fn alive(membership: &membership::Handle) -> Vec<NodeId> {
    membership
        .view()
        .await
        .map(|v| {
            v.into_iter()
                .filter(|m| m.state == MemberState::Alive)
                .map(|m| m.info.id)
                .collect()
        })
        .unwrap_or_default()
}

/// The nodes that hold `model`'s files among `alive`: `factor` of them in rendezvous order.
pub fn holders(model: &ServedModel, alive: &[NodeId], factor: usize) -> Vec<NodeId> {
    rendezvous::top(model.hash.as_bytes(), alive, factor.max(1))
}

/// Every live model version with serving fields.
async fn models(catalog: &catalog::Handle) -> anyhow::Result<Vec<ServedModel>> {
    Ok(catalog
        .list(Some(RecordKind::Model))
        .await?
        .into_iter()
        .filter_map(|(_, e)| match e {
            Entry::Register(r) => match r.value {
                Some(Record::Model(m)) => ServedModel::from_record(&m),
                _ => None,
            },
            Entry::Job(_) => None,
        })
        .collect())
}

/// Keeps this node's share of model files.
pub struct ModelReplicator {
    pub files: ModelFiles,
    pub catalog: catalog::Handle,
    pub membership: membership::Handle,
    pub factor: usize,
    pub every: Duration,
}

impl ModelReplicator {
    /// Runs until the task is aborted.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.once().await {
                warn!(error = %e, "model replication pass failed");
            }
        }
    }

    async fn once(&self) -> anyhow::Result<()> {
        let alive = alive(&self.membership).await;
        let me = NodeId(self.files.me.clone());
        let peers: Vec<String> = alive
            .iter()
            .filter(|n| **n != me)
            .map(|n| n.0.clone())
            .collect();
        for model in models(&self.catalog).await? {
            if !holders(&model, &alive, self.factor).contains(&me) {
                continue;
            }
            let store = self.files.blobs.clone();
            let have = model.artifacts.values().all(|h| store.contains(h));
            if have {
                continue;
            }
            match super::fetch::ensure_local(&model, &store, &*self.files.transport, &peers).await {
                Ok(_) => debug!(model = %model.hash, "model files replicated here"),
                Err(e) => warn!(model = %model.hash, error = %e, "model files not replicated yet"),
            }
        }
        Ok(())
    }
}

/// Whether `node` holds every blob of `model` (this node: its store; others: `HeldBlobs`).
async fn holds(files: &ModelFiles, node: &NodeId, model: &ServedModel) -> bool {
    let blobs: Vec<String> = model.artifacts.values().cloned().collect();
    if node.0 == files.me {
        return blobs.iter().all(|b| files.blobs.contains(b));
    }
    let target = super::files::artifacts_endpoint(&node.0);
    let request = flotilla_protocol::services::serving::Request {
        id: flotilla_protocol::RequestId(rand::random()),
        body: RequestBody::HeldBlobs {
            blobs: blobs.clone(),
        },
    };
    match files
        .transport
        .call(&target, request, Duration::from_secs(5))
        .await
        .map(|r| r.body)
    {
        Ok(Ok(ResponseBody::HeldBlobs(held))) => blobs.iter().all(|b| held.contains(b)),
        _ => false,
    }
}

/// Waits until `model`'s holders (with `factor`, over the alive nodes) hold its files, or
/// `deadline` passes; returns the nodes that hold them.
pub async fn wait_replicated(
    files: &ModelFiles,
    membership: &membership::Handle,
    model: &ServedModel,
    factor: usize,
    deadline: Duration,
) -> Vec<NodeId> {
    let until = Instant::now() + deadline;
    loop {
        let alive = alive(membership).await;
        let mut held = Vec::new();
        for n in holders(model, &alive, factor) {
            if holds(files, &n, model).await {
                held.push(n);
            }
        }
        let me = NodeId(files.me.clone());
        if !held.contains(&me) && holds(files, &me, model).await {
            held.push(me);
        }
        let want = factor.max(1).min(alive.len().max(1));
        if held.len() >= want || Instant::now() >= until {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
