//! Trainers on any node: the `trainer` role a node's remote-actor host spawns. The trainer
//! reaches its run's shards through [`RemoteParams`] and its coordinator through
//! [`RemoteDispatch`]; its gradients come from the node's [`GradientFactory`], which builds the
//! model the arguments describe (the node's kernels-backed classifier).

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use flotilla_protocol::jobs::JobId;
use flotilla_protocol::training::{TrainerArgs, WorkerId};
use flotilla_protocol::NodeId;
use ractor::ActorCell;

use super::dispatch::{dispatch_actor, RemoteDispatch};
use super::params::RemoteParams;
use crate::mesh::Mesh;
use crate::remote::{self, Endpoint, RemoteActor, Role};
use crate::training::client::ParamClient;
use crate::training::dispatch::Dispatch;
use crate::training::optim::clip_config;
use crate::training::trainer::{self, GradientSource};

/// The role name trainers are spawned under.
pub const TRAINER_ROLE: &str = "trainer";

/// The actor name of `job`'s trainer `worker`.
pub fn trainer_actor(job: &JobId, worker: WorkerId) -> String {
    format!("train/{job}/trainer/{}", worker.0)
}

/// Builds a trainer's gradient source from its spawn arguments (the model, its classes and
/// which record fields hold the text and the label). The node implements it on the kernels.
pub trait GradientFactory: Send + Sync + 'static {
    fn source(&self, args: &TrainerArgs) -> Result<Arc<dyn GradientSource>, String>;
}

/// Spawns trainers that reach their shards and coordinator over the mesh.
pub struct TrainerRole {
    pub mesh: Arc<dyn Mesh>,
    pub gradients: Arc<dyn GradientFactory>,
}

#[async_trait::async_trait]
impl Role for TrainerRole {
    async fn spawn(
        &self,
        _name: &str,
        args: &[u8],
        supervisor: ActorCell,
    ) -> std::result::Result<(ActorCell, Arc<dyn Endpoint>), String> {
        let a: TrainerArgs = remote::decode(args)?;
        let source = self.gradients.source(&a)?;
        let call = Duration::from_millis(a.call_deadline_ms);
        let params = RemoteParams::new(
            self.mesh.clone(),
            &a.job,
            &a.shard_hosts,
            usize::try_from(a.total_params).map_err(|e| e.to_string())?,
            call,
            Duration::from_millis(a.pull_deadline_ms),
        );
        let dispatch = RemoteDispatch(RemoteActor::new(
            self.mesh.clone(),
            a.coordinator.clone(),
            &dispatch_actor(&a.job),
            // Asking for the next batch may wait for a sync step to complete.
            Duration::from_millis(a.pull_deadline_ms),
        ));
        let (handle, _outcome) = trainer::Handle::spawn_linked(
            trainer::Config {
                worker: a.worker,
                sync: a.sync,
                precision: a.precision,
                // Sync steps are clipped by the shards.
                clip: (!a.sync)
                    .then(|| clip_config(a.clip_norm, a.adaptive_clip))
                    .flatten(),
                max_steps: None,
                lr: a.lr.into(),
                idle_wait: Duration::from_millis(2),
            },
            source,
            Arc::new(params) as Arc<dyn ParamClient>,
            Arc::new(dispatch) as Arc<dyn Dispatch>,
            supervisor,
        )
        // The trainer's span sits under its run's (with its worker id), under the node's.
        .instrument(tracing::info_span!("job", run = %a.job, worker = ?a.worker))
        .await
        .map_err(|e| e.to_string())?;
        // A trainer takes no messages from the mesh yet; its coordinator drives it.
        let endpoint: Arc<dyn Endpoint> = Arc::new(NoMessages);
        Ok((handle.cell(), endpoint))
    }
}

struct NoMessages;

#[async_trait::async_trait]
impl Endpoint for NoMessages {
    async fn call(
        &self,
        _from: &NodeId,
        _payload: Vec<u8>,
    ) -> std::result::Result<Vec<u8>, String> {
        Err("a trainer takes no messages; stop it or ask its coordinator".into())
    }
}
