//! Parameter-server shards on other nodes: the `param_server` role a node's remote-actor host
//! spawns (from [`ShardArgs`]), and [`RemoteParams`], the trainers' and the coordinator's
//! `ParamClient` that reaches those shards through the mesh with the training messages
//! (`protocol::services::training`) as payloads.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use flotilla_numerics::optim::OptimizerConfig;
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::control::RemoteError;
use flotilla_protocol::services::training::{
    CheckpointCommand, PushOutcome, RequestBody, ResponseBody, SavedShard,
};
use flotilla_protocol::training::{GradPayload, LrArgs, ShardArgs, WorkerId};
use flotilla_protocol::NodeId;
use ractor::ActorCell;

use crate::mesh::Mesh;
use crate::remote::{self, Endpoint, RemoteActor, Role};
use crate::store::Store;
use crate::training::client::ParamClient;
use crate::training::error::{Error, Result};
use crate::training::optim::{clip_config, shards_clip, LrPlan, ShardOptimizer};
use crate::training::param_server::{self, core::Shard, Pulled};
use crate::training::partition;

/// The role name parameter-server shards are spawned under.
pub const PARAM_SERVER_ROLE: &str = "param_server";

/// The JSON form of an optimizer configuration for [`ShardArgs::optimizer_json`].
pub fn optimizer_json(config: &OptimizerConfig) -> String {
    // A plain enum of numbers always serialises.
    serde_json::to_string(config).unwrap_or_default()
}

impl From<LrArgs> for LrPlan {
    fn from(a: LrArgs) -> Self {
        LrPlan {
            peak: a.peak,
            warmup: a.warmup,
            total: a.total,
            decay: a.decay,
        }
    }
}

/// A reply as it travels: the shard's answer or its error, kind included.
type Reply = std::result::Result<ResponseBody, RemoteError>;

/// Spawns parameter-server shards with the numerics' optimizers; checkpoints go to `store`.
pub struct ParamServerRole {
    pub store: Arc<dyn Store>,
}

struct ShardEndpoint {
    handle: param_server::Handle,
    store: Arc<dyn Store>,
    job: JobId,
    shard: u32,
}

#[async_trait::async_trait]
impl Endpoint for ShardEndpoint {
    async fn call(&self, _from: &NodeId, payload: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
        let body: RequestBody = remote::decode(&payload)?;
        let reply: Reply = param_server::rpc::serve(
            &self.handle,
            self.store.as_ref(),
            &self.job,
            self.shard,
            body,
        )
        .await;
        remote::encode(&reply)
    }
}

#[async_trait::async_trait]
impl Role for ParamServerRole {
    async fn spawn(
        &self,
        _name: &str,
        args: &[u8],
        supervisor: ActorCell,
    ) -> std::result::Result<(ActorCell, Arc<dyn Endpoint>), String> {
        let a: ShardArgs = remote::decode(args)?;
        let config: OptimizerConfig = serde_json::from_str(&a.optimizer_json)
            .map_err(|e| format!("optimizer configuration: {e}"))?;
        let optimizer = ShardOptimizer::new(config, a.init.len())?;
        let shard = Shard::new(
            param_server::core::Config {
                shard: a.shard,
                consistency: a.consistency,
                max_consecutive_nonfinite: a.max_consecutive_nonfinite,
                lr: a.lr.into(),
                save_every: a.save_every,
                clip: shards_clip(a.consistency)
                    .then(|| clip_config(a.clip_norm, a.adaptive_clip))
                    .flatten(),
            },
            a.init,
            Box::new(optimizer),
        );
        let handle =
            param_server::Handle::spawn_linked(shard, param_server::Config::default(), supervisor)
                // The server's span (with its shard) sits under its run's lineage, under the node's.
                .instrument(tracing::info_span!("job", lineage = %a.job))
                .await
                .map_err(|e| e.to_string())?;
        let endpoint = ShardEndpoint {
            handle: handle.clone(),
            store: self.store.clone(),
            job: a.job,
            shard: a.shard,
        };
        Ok((handle.cell(), Arc::new(endpoint)))
    }
}

/// The actor name of `job`'s shard `shard`.
pub fn shard_actor(job: &JobId, shard: u32) -> String {
    format!("train/{job}/ps/{shard}")
}

/// The shards of one job on the nodes that host them, in shard order.
pub struct RemoteParams {
    shards: Vec<RemoteActor<RequestBody, Reply>>,
    total: usize,
    /// How long a pull may wait for the slowest worker of a sync step.
    pull_deadline: Duration,
}

impl RemoteParams {
    /// Reaches shard `i` of `job` on `hosts[i]`.
    pub fn new(
        mesh: Arc<dyn Mesh>,
        job: &JobId,
        hosts: &[NodeId],
        total: usize,
        deadline: Duration,
        pull_deadline: Duration,
    ) -> Self {
        let shards = hosts
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let name = shard_actor(job, i as u32);
                RemoteActor::new(mesh.clone(), node.clone(), &name, deadline)
            })
            .collect();
        Self {
            shards,
            total,
            pull_deadline,
        }
    }

    /// Has `shard`'s host store the shard's state at `step` as a checkpoint blob.
    pub async fn save(&self, shard: u32, step: u64) -> Result<SavedShard> {
        let command = CheckpointCommand::Save { step };
        match self
            .ask(shard, RequestBody::Checkpoint { shard, command })
            .await?
        {
            ResponseBody::Saved(s) => Ok(s),
            other => Err(Error::Failed(format!(
                "unexpected answer to a checkpoint save: {other:?}"
            ))),
        }
    }

    /// Has `shard` replace its state with its blob of checkpoint `step` (which its host's
    /// store must hold, hashing to `blake3`); the version it is at then.
    pub async fn restore(&self, shard: u32, step: u64, blake3: String) -> Result<u64> {
        let command = CheckpointCommand::Restore { step, blake3 };
        match self
            .ask(shard, RequestBody::Checkpoint { shard, command })
            .await?
        {
            ResponseBody::Restored { version } => Ok(version),
            other => Err(Error::Failed(format!(
                "unexpected answer to a checkpoint restore: {other:?}"
            ))),
        }
    }

    /// Shard `shard`'s version and whole range as they stand, read without joining.
    pub async fn peek(&self, shard: u32) -> Result<(u64, Vec<f32>)> {
        match self.ask(shard, RequestBody::Peek { shard }).await? {
            ResponseBody::Params {
                version, values, ..
            } => Ok((version, values)),
            other => Err(Error::Failed(format!(
                "unexpected answer to a peek: {other:?}"
            ))),
        }
    }

    /// Every shard's parameters as one vector and the version each was at. In sync mode the
    /// shards move together, so a read that straddles a step (versions differ) is retried.
    pub async fn peek_all(&self, sync: bool) -> Result<(Vec<u64>, Vec<f32>)> {
        let mut tries = 0;
        loop {
            let mut versions = Vec::with_capacity(self.shards.len());
            let mut values = Vec::with_capacity(self.total);
            for s in 0..self.shards.len() as u32 {
                let (v, part) = self.peek(s).await?;
                versions.push(v);
                values.extend(part);
            }
            let even = versions.windows(2).all(|w| w[0] == w[1]);
            if !sync || even || tries >= 20 {
                return Ok((versions, values));
            }
            tries += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The node hosting each shard, in shard order.
    pub fn hosts(&self) -> Vec<NodeId> {
        self.shards.iter().map(|s| s.peer().clone()).collect()
    }

    /// Stops every shard actor (best effort: a dead host's shard is gone already).
    pub async fn stop_all(&self) {
        for s in &self.shards {
            let _ = s.stop().await;
        }
    }

    async fn ask(&self, shard: u32, body: RequestBody) -> Result<ResponseBody> {
        let actor = self
            .shards
            .get(shard as usize)
            .ok_or_else(|| Error::Failed(format!("no shard {shard}")))?;
        let reply = if matches!(body, RequestBody::Pull { .. }) {
            // A sync pull waits for the step's last gradient: it gets the longer deadline.
            let slow = RemoteActor::new_like(actor, self.pull_deadline);
            slow.call(&body).await
        } else {
            actor.call(&body).await
        };
        reply
            .map_err(|e| Error::Failed(format!("shard {shard} on {}: {e}", actor.peer())))?
            .map_err(|e| Error::Failed(format!("shard {shard} on {}: {e}", actor.peer())))
    }
}

#[async_trait::async_trait]
impl ParamClient for RemoteParams {
    fn total_params(&self) -> usize {
        self.total
    }

    fn shards(&self) -> usize {
        self.shards.len()
    }

    async fn join(&self, shard: u32, worker: WorkerId) -> Result<()> {
        self.ask(shard, RequestBody::Join { shard, worker }).await?;
        Ok(())
    }

    async fn leave(&self, shard: u32, worker: WorkerId, drop_pending: bool) -> Result<()> {
        let body = RequestBody::Leave {
            shard,
            worker,
            drop_pending,
        };
        self.ask(shard, body).await?;
        Ok(())
    }

    async fn pull(&self, shard: u32, worker: WorkerId, after: Option<u64>) -> Result<Pulled> {
        let ranges = partition::ranges(self.total, self.shards.len());
        let len = ranges.get(shard as usize).map_or(0, |r| r.len()) as u64;
        let body = RequestBody::Pull {
            shard,
            worker,
            after,
            offset: 0,
            len,
        };
        match self.ask(shard, body).await? {
            ResponseBody::Params {
                version,
                offset,
                values,
                norm,
            } => Ok(Pulled {
                version,
                offset,
                values,
                norm,
            }),
            other => Err(Error::Failed(format!(
                "unexpected answer to a pull: {other:?}"
            ))),
        }
    }

    async fn push(
        &self,
        shard: u32,
        worker: WorkerId,
        step: u64,
        samples: u32,
        grad: GradPayload,
    ) -> Result<PushOutcome> {
        let body = RequestBody::Push {
            shard,
            worker,
            step,
            samples,
            grad,
        };
        match self.ask(shard, body).await? {
            ResponseBody::Pushed(o) => Ok(o),
            other => Err(Error::Failed(format!(
                "unexpected answer to a push: {other:?}"
            ))),
        }
    }

    async fn finish(&self, shard: u32, step: u64, norm: f32) -> Result<()> {
        match self
            .ask(shard, RequestBody::Finish { shard, step, norm })
            .await?
        {
            ResponseBody::Ack => Ok(()),
            other => Err(Error::Failed(format!(
                "unexpected answer to a step's norm: {other:?}"
            ))),
        }
    }
}
