//! Trainers on any node: the `trainer` role that spawns a kernels-backed trainer under a node's
//! supervisor, reaching its shards and its coordinator over the mesh (the actors'
//! `coordinator::{params, dispatch}`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use flotilla_actors::mesh::Mesh;
use flotilla_actors::remote::{self, Endpoint, RemoteActor, Role};
use flotilla_actors::training::client::ParamClient;
use flotilla_actors::training::coordinator::dispatch::{dispatch_actor, RemoteDispatch};
use flotilla_actors::training::coordinator::params::RemoteParams;
use flotilla_actors::training::dispatch::Dispatch;
use flotilla_actors::training::optim::clip_config;
use flotilla_actors::training::trainer::{self, GradientSource};
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::training::{AdaptiveClip, LrArgs, Precision, WorkerId};
use flotilla_protocol::NodeId;
use ractor::ActorCell;
use serde::{Deserialize, Serialize};

use crate::models::build::ModelArgs;
use crate::models::gradient::ClassifierSource;

/// The role name trainers are spawned under.
pub const TRAINER_ROLE: &str = "trainer";

/// The actor name of `job`'s trainer `worker`.
pub fn trainer_actor(job: &JobId, worker: WorkerId) -> String {
    format!("train/{job}/trainer/{}", worker.0)
}

/// What a trainer is spawned from: its job and worker id, where the shards and the
/// coordinator are, the model and how to read records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerArgs {
    pub job: JobId,
    pub worker: WorkerId,
    pub sync: bool,
    pub precision: Precision,
    /// Async and ssp: clip each gradient (the trainer does it); in sync mode both are `None`.
    pub clip_norm: Option<f32>,
    pub adaptive_clip: Option<AdaptiveClip>,
    pub lr: LrArgs,
    pub model: ModelArgs,
    /// Label text → class id.
    pub classes: BTreeMap<String, u32>,
    pub text_field: String,
    pub label_field: String,
    pub total_params: u64,
    /// Shard `i` of the job runs on `shard_hosts[i]`.
    pub shard_hosts: Vec<NodeId>,
    pub coordinator: NodeId,
    pub call_deadline_ms: u64,
    pub pull_deadline_ms: u64,
}

/// Spawns kernels-backed trainers that reach their shards and coordinator over the mesh.
pub struct TrainerRole {
    pub mesh: Arc<dyn Mesh>,
    /// How much slower than the machine this node's trainers run (1.0: full speed). A trainer
    /// slowed to `f` sleeps `f − 1` times its compute time after each batch, so one machine can
    /// stand in for a mesh of unequal devices when measuring how shares adapt.
    pub slowdown: f64,
}

/// A gradient source slowed down by a factor (see [`TrainerRole::slowdown`]).
struct Slowed {
    inner: ClassifierSource,
    factor: f64,
}

impl GradientSource for Slowed {
    fn compute(
        &self,
        params: &[f32],
        batch: &[flotilla_actors::data::record::Record],
    ) -> std::result::Result<(Vec<f32>, f32, usize), String> {
        let started = std::time::Instant::now();
        let out = self.inner.compute(params, batch);
        if self.factor > 1.0 {
            std::thread::sleep(started.elapsed().mul_f64(self.factor - 1.0));
        }
        out
    }
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
        let source = a.model.source(&a.classes, &a.text_field, &a.label_field)?;
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
                clip: clip_config(a.clip_norm, a.adaptive_clip),
                max_steps: None,
                lr: a.lr.into(),
                idle_wait: Duration::from_millis(2),
            },
            Arc::new(Slowed {
                inner: source,
                factor: self.slowdown,
            }) as Arc<dyn GradientSource>,
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
