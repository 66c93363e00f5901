//! How a trainer reaches the parameter shards: the [`ParamClient`] trait. In one process
//! [`LocalParams`] calls the `ParamServer` actors directly; the node implements the trait over
//! training requests (`protocol::services::training`, carried by `/flotilla/actors/1` calls) to the nodes that host the shards.

use std::sync::Arc;

use async_trait::async_trait;
use flotilla_protocol::services::training::PushOutcome;
use flotilla_protocol::training::{GradPayload, WorkerId};

use super::error::{Error, Result};
use super::param_server::core::Snapshot;
use super::param_server::{self, Pulled, StepNorm};
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
    /// Sync with clipping: the global gradient norm of step `step` for `shard`.
    async fn finish(&self, shard: u32, step: u64, norm: f32) -> Result<()>;
}

/// Every shard's range at the version `after` the last gradient pushed there (sync: once the
/// barrier passed), in shard order. When the shards clip a sync step by its global norm and
/// some still wait for it, the norm is computed from their partials (or taken from a shard that
/// another trainer finished already), sent to those shards, and they are pulled again.
pub async fn pull_all(
    c: &dyn ParamClient,
    worker: WorkerId,
    after: &[Option<u64>],
) -> Result<Vec<Pulled>> {
    let mut pulled = Vec::with_capacity(after.len());
    for (i, a) in after.iter().enumerate() {
        pulled.push(c.pull(i as u32, worker, *a).await?);
    }
    let waiting: Vec<usize> = (0..pulled.len())
        .filter(|&i| matches!(pulled[i].norm, StepNorm::Needed(_)))
        .collect();
    let Some(&first) = waiting.first() else {
        return Ok(pulled);
    };
    let step = pulled[first].version;
    let norm = global_norm(&pulled, step)?;
    for &i in &waiting {
        c.finish(i as u32, pulled[i].version, norm).await?;
    }
    for &i in &waiting {
        let again = c.pull(i as u32, worker, Some(pulled[i].version)).await?;
        if matches!(again.norm, StepNorm::Needed(_)) {
            return Err(Error::Failed(format!(
                "shard {i} still waits for the norm of step {} after it was sent",
                pulled[i].version
            )));
        }
        pulled[i] = again;
    }
    Ok(pulled)
}

/// The global norm of sync step `step`: the one a shard already applied, or the root of the sum
/// of the waiting shards' partial squares (summed in shard order, so every trainer gets the
/// same value).
fn global_norm(pulled: &[Pulled], step: u64) -> Result<f32> {
    let mut sum = 0.0f64;
    for p in pulled {
        match p.norm {
            // A shard past the step was finished with the norm every trainer computes.
            StepNorm::Applied(n) if p.version == step + 1 => return Ok(n),
            StepNorm::Needed(partial) if p.version == step => sum += partial,
            _ => {
                return Err(Error::Failed(format!(
                    "shards disagree about sync step {step}: one is at version {} ({:?})",
                    p.version, p.norm
                )))
            }
        }
    }
    Ok(sum.sqrt() as f32)
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

    async fn finish(&self, shard: u32, step: u64, norm: f32) -> Result<()> {
        self.handle(shard)?.finish(step, norm).await
    }
}

/// Shard ranges of a client's vector.
pub fn ranges(c: &dyn ParamClient) -> Vec<std::ops::Range<usize>> {
    partition::ranges(c.total_params(), c.shards())
}

/// A client shared between trainers.
pub type SharedParams = Arc<dyn ParamClient>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use flotilla_protocol::training::Consistency;

    use super::*;
    use crate::training::optim::{ClipConfig, LrPlan, ShardOptimizer};
    use crate::training::param_server::core::{Config, Shard};

    async fn clipping_shard(i: u32, params: Vec<f32>) -> param_server::Handle {
        let n = params.len();
        let shard = Shard::new(
            Config {
                shard: i,
                consistency: Consistency::Sync,
                max_consecutive_nonfinite: 3,
                lr: LrPlan::constant(1.0),
                save_every: 0,
                clip: Some(ClipConfig::fixed(1.0)),
            },
            params,
            Box::new(ShardOptimizer::sgd(n, 0.0, 0.0).unwrap()),
        );
        param_server::Handle::spawn(shard, param_server::Config::default())
            .await
            .unwrap()
            .0
    }

    #[tokio::test]
    async fn trainers_pulling_at_once_clip_a_sync_step_by_the_norm_across_all_shards() {
        // Shard 0 holds one value, shard 1 two.
        let params = Arc::new(LocalParams::new(
            vec![
                clipping_shard(0, vec![0.0]).await,
                clipping_shard(1, vec![0.0, 0.0]).await,
            ],
            3,
        ));
        let (a, b) = (WorkerId(0), WorkerId(1));
        join_all(params.as_ref(), a).await.unwrap();
        join_all(params.as_ref(), b).await.unwrap();
        let first = pull_all(params.as_ref(), a, &[None, None]).await.unwrap();
        assert_eq!(first[0].norm, StepNorm::NotClipped);
        // Mean gradient [2, 4, 4] (norm 6) from two workers of one sample each.
        for (w, grad) in [(a, [4.0f32, 0.0, 8.0]), (b, [0.0, 8.0, 0.0])] {
            params
                .push(0, w, 0, 1, GradPayload::F32(grad[..1].to_vec()))
                .await
                .unwrap();
            params
                .push(1, w, 0, 1, GradPayload::F32(grad[1..].to_vec()))
                .await
                .unwrap();
        }
        let after = [Some(0), Some(0)];
        let (pa, pb) = tokio::join!(
            pull_all(params.as_ref(), a, &after),
            pull_all(params.as_ref(), b, &after)
        );
        let (pa, pb) = (pa.unwrap(), pb.unwrap());
        let flat = |p: &[Pulled]| p.iter().flat_map(|x| x.values.clone()).collect::<Vec<_>>();
        assert_eq!(flat(&pa), flat(&pb));
        // Clipped to norm 1: the update is -[2, 4, 4] / 6.
        let want = [-1.0 / 3.0, -2.0 / 3.0, -2.0 / 3.0];
        for (x, w) in flat(&pa).iter().zip(want) {
            assert!((x - w).abs() < 1e-6, "{:?}", flat(&pa));
        }
        assert!(pa
            .iter()
            .all(|p| p.version == 1 && p.norm == StepNorm::Applied(6.0)));
    }
}
