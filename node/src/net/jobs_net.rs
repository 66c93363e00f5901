//! The jobs service on the network: `/flotilla/jobs/1` requests between owners and executing
//! nodes, answered by a worker so the bridge never waits on an actor.
//!
//! Inbound requests cross a bounded inbox to the worker, which answers each in its own task
//! (at most [`MAX_IN_FLIGHT`] at once) with [`flotilla_actors::jobs::manager::serve::answer`]
//! and hands the response back to the bridge. A full inbox is answered `Unavailable` at once.

use std::sync::Arc;

use flotilla_actors::catalog;
use flotilla_actors::jobs::manager::serve::WorkLimits;
use flotilla_actors::jobs::{executor, manager};
use flotilla_protocol::services::control::{RemoteError, RemoteErrorKind};
use flotilla_protocol::services::jobs;
use flotilla_protocol::{NodeId, RequestId};
use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::bridge::{Bridge, Command};
use super::codec::Frame;
use super::rpc::{self, Reply, Routed, Work};

/// Capacity of the inbox of requests waiting for the worker.
pub const INBOX_CAPACITY: usize = 256;
/// Requests answered concurrently at most.
pub const MAX_IN_FLIGHT: usize = 64;

/// A request for the worker.
pub type JobsInbound = Work<jobs::Request, jobs::Response>;

impl Bridge {
    /// Sends a jobs request (size-checked against the service's cap).
    pub(super) fn jobs_request(
        &mut self,
        peer: PeerId,
        body: jobs::RequestBody,
        reply: Reply<jobs::ResponseBody>,
    ) {
        self.next_request_id += 1;
        let id = RequestId(self.next_request_id);
        let request = jobs::Request { id, body };
        rpc::send_checked(
            &mut self.swarm.behaviour_mut().jobs,
            &mut self.jobs,
            jobs::SERVICE,
            peer,
            id,
            request,
            reply,
        );
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
        let busy = |id| jobs::Response {
            id,
            body: Err(RemoteError {
                kind: RemoteErrorKind::Unavailable,
                message: "jobs service busy; retry later".into(),
            }),
        };
        match rpc::route(
            &mut self.jobs,
            jobs::SERVICE,
            ev,
            &self.wiring.jobs_inbox,
            busy,
        ) {
            Routed::Done => {}
            Routed::Malformed { peer, reason } => self.reject_peer(peer, jobs::SERVICE, &reason),
            Routed::Busy { channel, response } => self.jobs_respond(channel, response),
        }
    }
}

/// The worker: answers inbound jobs requests until the bridge drops the inbox. Peers' requests
/// are authorised against `catalog` and the work they ask for checked against `limits`.
pub async fn serve(
    inbox: mpsc::Receiver<JobsInbound>,
    executor: executor::Handle,
    manager: manager::Handle,
    catalog: catalog::Handle,
    limits: Arc<dyn WorkLimits>,
    commands: mpsc::Sender<Command>,
) {
    let answer = move |peer: PeerId, request: jobs::Request| {
        let (executor, manager, catalog, limits) = (
            executor.clone(),
            manager.clone(),
            catalog.clone(),
            limits.clone(),
        );
        async move {
            let from = NodeId(peer.to_string());
            let body = manager::serve::answer(
                &from,
                request.body,
                &executor,
                &manager,
                &catalog,
                limits.as_ref(),
            )
            .await;
            jobs::Response {
                id: request.id,
                body,
            }
        }
    };
    let respond = |channel, response| Command::JobsRespond { channel, response };
    rpc::serve_inbox(inbox, MAX_IN_FLIGHT, commands, respond, answer).await;
}
