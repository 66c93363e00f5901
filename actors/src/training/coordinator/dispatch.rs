//! A run's coordinator (`LocalDispatch`) on the mesh: [`DispatchEndpoint`] answers the
//! trainers' questions as a named endpoint on the coordinator's node, and [`RemoteDispatch`]
//! is the trainers' `Dispatch` over remote-actor calls to it.

use std::sync::Arc;

use flotilla_protocol::jobs::JobId;
use flotilla_protocol::training::{WorkerId, WorkerReport};
use flotilla_protocol::NodeId;
use serde::{Deserialize, Serialize};

use crate::data::record::Record;
use crate::remote::{self, Endpoint, RemoteActor};
use crate::training::assignment::Lease;
use crate::training::dispatch::{Dispatch, LocalDispatch, Work};
use crate::training::error::{Error, Result};

/// The actor name of `job`'s coordinator.
pub fn dispatch_actor(job: &JobId) -> String {
    format!("train/{job}/dispatch")
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
