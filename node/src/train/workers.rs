//! Trainers on any node: a job's coordinator (`LocalDispatch`) reachable over the mesh as a
//! named endpoint, [`RemoteDispatch`] — the trainers' `Dispatch` over remote-actor calls — and
//! the `trainer` role that spawns a kernels-backed trainer under a node's supervisor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use flotilla_actors::data::record::Record;
use flotilla_actors::mesh::Mesh;
use flotilla_actors::remote::{self, Endpoint, RemoteActor, Role};
use flotilla_actors::training::assignment::Lease;
use flotilla_actors::training::client::ParamClient;
use flotilla_actors::training::dispatch::{Dispatch, LocalDispatch, Work};
use flotilla_actors::training::error::{Error, Result};
use flotilla_actors::training::optim::clip_config;
use flotilla_actors::training::trainer::{self, GradientSource};
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::training::{AdaptiveClip, Precision, WorkerId, WorkerReport};
use flotilla_protocol::NodeId;
use ractor::ActorCell;
use serde::{Deserialize, Serialize};

use super::remote::{LrArgs, RemoteParams};
use crate::models::build::ModelArgs;
use crate::models::gradient::ClassifierSource;

/// The role name trainers are spawned under.
pub const TRAINER_ROLE: &str = "trainer";

/// The actor name of `job`'s coordinator.
pub fn dispatch_actor(job: &JobId) -> String {
    format!("train/{job}/dispatch")
}

/// The actor name of `job`'s trainer `worker`.
pub fn trainer_actor(job: &JobId, worker: WorkerId) -> String {
    format!("train/{job}/trainer/{}", worker.0)
}

/// A trainer's question to its coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DispatchAsk {
    NextBatch {
        worker: WorkerId,
        step: Option<u64>,
    },
    Ack {
        worker: WorkerId,
        lease: u64,
        step: Option<u64>,
    },
    GiveBack {
        worker: WorkerId,
    },
    Report(WorkerReport),
    Leave {
        worker: WorkerId,
    },
}

/// The coordinator's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DispatchReply {
    Batch { lease: Lease, records: Vec<Record> },
    Idle,
    Done,
    Flag(bool),
    Ok,
}

type Answer = std::result::Result<DispatchReply, String>;

/// A job's coordinator as a mesh endpoint.
pub struct DispatchEndpoint(pub Arc<LocalDispatch>);

#[async_trait::async_trait]
impl Endpoint for DispatchEndpoint {
    async fn call(&self, _from: &NodeId, payload: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
        let d = &self.0;
        let answer: Answer = match remote::decode::<DispatchAsk>(&payload)? {
            DispatchAsk::NextBatch { worker, step } => {
                d.next_batch(worker, step).await.map(|w| match w {
                    Work::Batch { lease, records } => DispatchReply::Batch { lease, records },
                    Work::Idle => DispatchReply::Idle,
                    Work::Done => DispatchReply::Done,
                })
            }
            DispatchAsk::Ack {
                worker,
                lease,
                step,
            } => d.ack(worker, lease, step).await.map(DispatchReply::Flag),
            DispatchAsk::GiveBack { worker } => {
                d.give_back(worker).await.map(|()| DispatchReply::Ok)
            }
            DispatchAsk::Report(r) => d.report(r).await.map(|()| DispatchReply::Ok),
            DispatchAsk::Leave { worker } => d.leave(worker).await.map(DispatchReply::Flag),
        }
        .map_err(|e| e.to_string());
        remote::encode(&answer)
    }
}

/// The trainers' `Dispatch` over the mesh.
pub struct RemoteDispatch(pub RemoteActor<DispatchAsk, Answer>);

impl RemoteDispatch {
    async fn ask(&self, q: DispatchAsk) -> Result<DispatchReply> {
        let peer = self.0.peer().clone();
        self.0
            .call(&q)
            .await
            .map_err(|e| Error::Failed(format!("coordinator on {peer}: {e}")))?
            .map_err(|e| Error::Failed(format!("coordinator on {peer}: {e}")))
    }
}

fn unexpected(r: DispatchReply) -> Error {
    Error::Failed(format!("unexpected answer from the coordinator: {r:?}"))
}

#[async_trait::async_trait]
impl Dispatch for RemoteDispatch {
    async fn next_batch(&self, worker: WorkerId, step: Option<u64>) -> Result<Work> {
        match self.ask(DispatchAsk::NextBatch { worker, step }).await? {
            DispatchReply::Batch { lease, records } => Ok(Work::Batch { lease, records }),
            DispatchReply::Idle => Ok(Work::Idle),
            DispatchReply::Done => Ok(Work::Done),
            other => Err(unexpected(other)),
        }
    }

    async fn ack(&self, worker: WorkerId, lease: u64, step: Option<u64>) -> Result<bool> {
        match self
            .ask(DispatchAsk::Ack {
                worker,
                lease,
                step,
            })
            .await?
        {
            DispatchReply::Flag(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    async fn give_back(&self, worker: WorkerId) -> Result<()> {
        self.ask(DispatchAsk::GiveBack { worker }).await.map(|_| ())
    }

    async fn report(&self, report: WorkerReport) -> Result<()> {
        self.ask(DispatchAsk::Report(report)).await.map(|_| ())
    }

    async fn leave(&self, worker: WorkerId) -> Result<bool> {
        match self.ask(DispatchAsk::Leave { worker }).await? {
            DispatchReply::Flag(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }
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
