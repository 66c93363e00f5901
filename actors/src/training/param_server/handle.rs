//! The typed API of a `ParamServer`; every call has a deadline.

use std::time::Duration;

use flotilla_protocol::services::training::PushOutcome;
use flotilla_protocol::training::{GradPayload, WorkerId};
use ractor::{Actor, ActorRef};

use super::actor::ParamServer;
use super::core::{Shard, Snapshot, Stats};
use super::msg::Msg;
use super::{Config, Pulled};
use crate::training::error::{Error, Result};

const ACTOR: &str = "param_server";

/// A cloneable handle to a running `ParamServer`.
#[derive(Debug, Clone)]
pub struct Handle {
    actor: ActorRef<Msg>,
    cfg: Config,
}

impl Handle {
    /// Spawns a server for `shard`.
    pub async fn spawn(shard: Shard, cfg: Config) -> Result<(Handle, tokio::task::JoinHandle<()>)> {
        let (actor, join) = Actor::spawn(None, ParamServer::new(&shard), (shard, cfg))
            .await
            .map_err(|e| Error::Failed(format!("parameter server failed to start: {e}")))?;
        Ok((Handle { actor, cfg }, join))
    }

    /// Spawns a shard linked to `supervisor`, which hears when it stops or fails (a node's
    /// remote-actor host, so the job's coordinator gets a `Down` notice).
    pub async fn spawn_linked(
        shard: Shard,
        cfg: Config,
        supervisor: ractor::ActorCell,
    ) -> Result<Handle> {
        let (actor, _) =
            Actor::spawn_linked(None, ParamServer::new(&shard), (shard, cfg), supervisor)
                .await
                .map_err(|e| Error::Failed(format!("parameter server failed to start: {e}")))?;
        Ok(Handle { actor, cfg })
    }

    /// The actor's cell (to stop it, or to tell it apart in supervision events).
    pub fn cell(&self) -> ractor::ActorCell {
        self.actor.get_cell()
    }

    async fn call<T: Send + 'static>(
        &self,
        deadline: Duration,
        f: impl FnOnce(ractor::RpcReplyPort<T>) -> Msg,
    ) -> Result<T> {
        crate::call::call(&self.actor, ACTOR, deadline, f)
            .await
            .map_err(Error::Unavailable)
    }

    /// Counts `worker` among the active workers.
    pub async fn join(&self, worker: WorkerId) -> Result<()> {
        self.call(self.cfg.call_deadline, |reply| Msg::Join { worker, reply })
            .await?
    }

    /// Stops counting `worker`; see [`super::core::Shard::leave`].
    pub async fn leave(&self, worker: WorkerId, drop_pending: bool) -> Result<()> {
        self.call(self.cfg.call_deadline, |reply| Msg::Leave {
            worker,
            drop_pending,
            reply,
        })
        .await
    }

    /// Parameters (a range, or all) once the shard is ready for `worker`.
    pub async fn pull(
        &self,
        worker: WorkerId,
        after: Option<u64>,
        range: Option<(u64, u64)>,
    ) -> Result<Pulled> {
        self.call(self.cfg.pull_deadline, |reply| Msg::Pull {
            worker,
            after,
            range,
            reply,
        })
        .await?
    }

    /// A gradient for the shard's range.
    pub async fn push(
        &self,
        worker: WorkerId,
        step: u64,
        samples: u32,
        grad: GradPayload,
    ) -> Result<PushOutcome> {
        self.call(self.cfg.call_deadline, |reply| Msg::Push {
            worker,
            step,
            samples,
            grad,
            reply,
        })
        .await?
    }

    /// Sync with clipping: the global gradient norm of step `step`.
    pub async fn finish(&self, step: u64, norm: f32) -> Result<()> {
        self.call(self.cfg.call_deadline, |reply| Msg::Finish {
            step,
            norm,
            reply,
        })
        .await?
    }

    /// The state a checkpoint keeps.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        self.call(self.cfg.call_deadline, |reply| Msg::Snapshot { reply })
            .await
    }

    /// The version and parameters as they stand, without joining (see `Msg::Peek`).
    pub async fn peek(&self) -> Result<(u64, Vec<f32>)> {
        self.call(self.cfg.call_deadline, |reply| Msg::Peek { reply })
            .await
    }

    /// The shard's state at version `step`, for checkpoint `step`.
    pub async fn snapshot_at(&self, step: u64) -> Result<Snapshot> {
        self.call(self.cfg.call_deadline, |reply| Msg::SnapshotAt {
            step,
            reply,
        })
        .await?
    }

    /// Replaces the shard's state with `snapshot`.
    pub async fn restore(&self, snapshot: Snapshot) -> Result<()> {
        self.call(self.cfg.call_deadline, |reply| Msg::Restore {
            snapshot: Box::new(snapshot),
            reply,
        })
        .await?
    }

    /// The shard's counters.
    pub async fn stats(&self) -> Result<Stats> {
        self.call(self.cfg.call_deadline, |reply| Msg::Stats { reply })
            .await
    }

    /// Stops the actor.
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}
