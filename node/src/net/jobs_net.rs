//! The jobs service on the network: `/flotilla/jobs/1` requests between owners and executing
//! nodes, answered by a worker so the bridge never waits on an actor.
//!
//! Inbound requests cross a bounded inbox to the worker, which answers each in its own task
//! (at most [`MAX_IN_FLIGHT`] at once) with [`flotilla_actors::jobs::manager::serve::answer`]
//! and hands the response back to the bridge. A full inbox is answered `Unavailable` at once.

use std::sync::Arc;

use flotilla_actors::jobs::{executor, manager};
use flotilla_protocol::codec as wire;
use flotilla_protocol::services::control::{RemoteError, RemoteErrorKind};
use flotilla_protocol::services::jobs;
use flotilla_protocol::{NodeId, RequestId};
use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use tokio::sync::{mpsc, Semaphore};

use super::bridge::{Bridge, Command};
use super::codec::Frame;
use super::rpc::{Inbound, Reply};

/// Capacity of the inbox of requests waiting for the worker.
pub const INBOX_CAPACITY: usize = 256;
/// Requests answered concurrently at most.
pub const MAX_IN_FLIGHT: usize = 64;

/// A request for the worker.
#[derive(Debug)]
pub struct JobsInbound {
    pub peer: PeerId,
    pub request: jobs::Request,
    pub channel: ResponseChannel<Frame<jobs::Response>>,
}

impl Bridge {
    /// Sends a jobs request, refusing one over the cap here rather than on the wire.
    pub(super) fn jobs_request(
        &mut self,
        peer: PeerId,
        body: jobs::RequestBody,
        reply: Reply<jobs::ResponseBody>,
    ) {
        self.next_request_id += 1;
        let id = RequestId(self.next_request_id);
        let request = jobs::Request { id, body };
        let fits = wire::encoded_len(jobs::SERVICE, &request).and_then(|len| {
            wire::check_frame_len(jobs::SERVICE, len as u64, jobs::MAX_FRAME_BYTES)
        });
        if let Err(e) = fits {
            let _ = reply.send(Err(e.to_string()));
            return;
        }
        let out = self
            .swarm
            .behaviour_mut()
            .jobs
            .send_request(&peer, Frame::Valid(request));
        self.jobs.insert(out, id, reply);
    }

    /// Sends the worker's answer to an inbound request.
    pub(super) fn jobs_respond(
        &mut self,
        channel: ResponseChannel<Frame<jobs::Response>>,
        response: jobs::Response,
    ) {
        // The requester may have gone away; nothing to do then.
        let _ = self
            .swarm
            .behaviour_mut()
            .jobs
            .send_response(channel, Frame::Valid(response));
    }

    /// Events of the jobs service.
    pub(super) fn on_jobs(
        &mut self,
        ev: libp2p::request_response::Event<Frame<jobs::Request>, Frame<jobs::Response>>,
    ) {
        match self.jobs.on_event(jobs::SERVICE, ev) {
            None => {}
            Some(Inbound::Malformed { peer, reason }) => {
                self.reject_peer(peer, jobs::SERVICE, &reason)
            }
            Some(Inbound::Request {
                peer,
                request,
                channel,
            }) => {
                let id = request.id;
                let work = JobsInbound {
                    peer,
                    request,
                    channel,
                };
                if let Err(mpsc::error::TrySendError::Full(work)) =
                    self.wiring.jobs_inbox.try_send(work)
                {
                    let body = Err(RemoteError {
                        kind: RemoteErrorKind::Unavailable,
                        message: "jobs service busy; retry later".into(),
                    });
                    self.jobs_respond(work.channel, jobs::Response { id, body });
                }
            }
        }
    }
}

/// The worker: answers inbound jobs requests until the bridge drops the inbox.
pub async fn serve(
    mut inbox: mpsc::Receiver<JobsInbound>,
    executor: executor::Handle,
    manager: manager::Handle,
    commands: mpsc::Sender<Command>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(work) = inbox.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (executor, manager, commands) = (executor.clone(), manager.clone(), commands.clone());
        tokio::spawn(async move {
            let from = NodeId(work.peer.to_string());
            let body = manager::serve::answer(&from, work.request.body, &executor, &manager).await;
            let response = jobs::Response {
                id: work.request.id,
                body,
            };
            let _ = commands
                .send(Command::JobsRespond {
                    channel: work.channel,
                    response,
                })
                .await;
            drop(permit);
        });
    }
}
