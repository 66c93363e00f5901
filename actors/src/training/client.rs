//! How a trainer reaches the parameter shards: the [`ParamClient`] trait. In one process
//! [`LocalParams`] calls the `ParamServer` actors directly; the node implements the trait over
//! `/flotilla/training/1` requests to the nodes that host the shards.

use std::sync::Arc;

use async_trait::async_trait;
use flotilla_protocol::services::training::PushOutcome;
use flotilla_protocol::training::{GradPayload, WorkerId};

use super::error::{Error, Result};
use super::param_server::core::Snapshot;
use super::param_server::{self, Pulled};
use super::partition;

/// The parameter shards of one job, as a trainer sees them.
#[async_trait]
pub trait ParamClient: Send + Sync + 'static {
    /// Parameters in the whole flat vector; shard ranges are [`partition::ranges`] of it.
    fn total_params(&self) -> usize;
    /// Number of shards.
    fn shards(&self) -> usize;
    /// Counts `worker` on `shard`.
    async fn join(&self, shard: u32, worker: WorkerId) -> Result<()>;
    /// Stops counting `worker` on `shard`.
    async fn leave(&self, shard: u32, worker: WorkerId, drop_pending: bool) -> Result<()>;
    /// `shard`'s whole range once it is ready for `worker`.
    async fn pull(&self, shard: u32, worker: WorkerId, after: Option<u64>) -> Result<Pulled>;
    /// A gradient for `shard`'s whole range.
    async fn push(
        &self,
        shard: u32,
        worker: WorkerId,
        step: u64,
        samples: u32,
        grad: GradPayload,
    ) -> Result<PushOutcome>;
}

/// Joins `worker` to every shard.
pub async fn join_all(c: &dyn ParamClient, worker: WorkerId) -> Result<()> {
    for s in 0..c.shards() as u32 {
        c.join(s, worker).await?;
    }
    Ok(())
}

/// Removes `worker` from every shard, trying all of them even when one fails.
pub async fn leave_all(c: &dyn ParamClient, worker: WorkerId, drop_pending: bool) -> Result<()> {
    let mut first = None;
    for s in 0..c.shards() as u32 {
        if let Err(e) = c.leave(s, worker, drop_pending).await {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// `ParamServer` actors in this process.
#[derive(Debug, Clone)]
pub struct LocalParams {
    handles: Vec<param_server::Handle>,
    total: usize,
}

impl LocalParams {
    /// The shards of a vector of `total` parameters, in shard order.
    pub fn new(handles: Vec<param_server::Handle>, total: usize) -> Self {
        Self { handles, total }
    }

    /// The handle of `shard`.
    pub fn handle(&self, shard: u32) -> Result<&param_server::Handle> {
        self.handles
            .get(shard as usize)
            .ok_or_else(|| Error::Failed(format!("no shard {shard}")))
    }

    /// Every handle, in shard order.
    pub fn handles(&self) -> &[param_server::Handle] {
        &self.handles
    }

    /// The whole flat vector, read from every shard now (for evaluation and tests).
    pub async fn snapshot_params(&self) -> Result<Vec<f32>> {
        let mut flat = Vec::with_capacity(self.total);
        for s in self.snapshots().await? {
            flat.extend(s.params);
        }
        Ok(flat)
    }

    /// Every shard's snapshot, in shard order (for a checkpoint).
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let mut out = Vec::with_capacity(self.handles.len());
        for h in &self.handles {
            out.push(h.snapshot().await?);
        }
        Ok(out)
    }
}

#[async_trait]
impl ParamClient for LocalParams {
    fn total_params(&self) -> usize {
        self.total
    }

    fn shards(&self) -> usize {
        self.handles.len()
    }

    async fn join(&self, shard: u32, worker: WorkerId) -> Result<()> {
        self.handle(shard)?.join(worker).await
    }

    async fn leave(&self, shard: u32, worker: WorkerId, drop_pending: bool) -> Result<()> {
        self.handle(shard)?.leave(worker, drop_pending).await
    }

    async fn pull(&self, shard: u32, worker: WorkerId, after: Option<u64>) -> Result<Pulled> {
        self.handle(shard)?.pull(worker, after, None).await
    }

    async fn push(
        &self,
        shard: u32,
        worker: WorkerId,
        step: u64,
        samples: u32,
        grad: GradPayload,
    ) -> Result<PushOutcome> {
        self.handle(shard)?.push(worker, step, samples, grad).await
    }
}

/// Shard ranges of a client's vector.
pub fn ranges(c: &dyn ParamClient) -> Vec<std::ops::Range<usize>> {
    partition::ranges(c.total_params(), c.shards())
}

/// A client shared between trainers.
pub type SharedParams = Arc<dyn ParamClient>;
