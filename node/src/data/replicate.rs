//! Re-replication: restores the replication factor of every dataset version after holders die.
//!
//! Every node runs [`run`], but for each version only the first live node in rendezvous order
//! of `<dataset>/<version>` acts, so one node surveys and copies per version and no two nodes
//! race to make the same copy. When that node dies the next one in the order takes over on its
//! next round. Each round surveys the holders afresh, so a failed copy is planned again.

use std::collections::BTreeMap;

use flotilla_actors::data::replication;
use flotilla_actors::data::survey;
use flotilla_actors::rendezvous;
use flotilla_protocol::services::data::ShardId;
use tracing::{info, warn};

use super::DataNode;

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Versions this node was responsible for.
    pub versions: usize,
    pub copies: usize,
    pub failed: usize,
    pub lost: usize,
}

/// Runs rounds every `settings.rereplicate_every` until the task is aborted.
pub async fn run(data: DataNode) {
    let mut tick = tokio::time::interval(data.settings.rereplicate_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        round(&data).await;
    }
}

/// One round over every version in the catalog.
pub async fn round(data: &DataNode) -> Round {
    let mut out = Round::default();
    let datasets = match data.datasets().await {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "re-replication: catalog unavailable");
            return out;
        }
    };
    if datasets.is_empty() {
        return out;
    }
    let alive = data.alive().await;
    for (name, versions) in datasets {
        for (v, record) in versions {
            let key = format!("{name}/{v}");
            if rendezvous::rank(key.as_bytes(), &alive).first() != Some(&data.me) {
                continue;
            }
            out.versions += 1;
            let found =
                survey::survey(&*data.peers, &alive, &name, v, data.settings.call_deadline).await;
            let holders: BTreeMap<ShardId, Vec<_>> = (0..record.shard_hashes.len() as u32)
                .map(|i| {
                    (
                        ShardId::new(&name, v, i),
                        found.get(&i).cloned().unwrap_or_default(),
                    )
                })
                .collect();
            let plan = replication::plan(&holders, &alive, data.settings.replication);
            for shard in &plan.lost {
                warn!(%shard, "every holder of the shard is gone");
            }
            out.lost += plan.lost.len();
            if plan.copies.is_empty() {
                continue;
            }
            let failed =
                survey::execute(&*data.peers, &plan.copies, data.settings.call_deadline).await;
            info!(dataset = %name, version = v, copies = plan.copies.len(), failed = failed.len(), "re-replicated");
            out.copies += plan.copies.len() - failed.len();
            out.failed += failed.len();
        }
    }
    out
}
