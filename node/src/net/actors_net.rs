//! The actors service on the network: `/flotilla/actors/1` messages to named actors, remote
//! spawns and monitors, answered by the node's [`remote::Host`] through a worker so the bridge
//! never waits on an actor.
//!
//! Inbound requests cross a bounded inbox to the worker, which answers each in its own task
//! (at most [`MAX_IN_FLIGHT`] at once) and hands the response back to the bridge. A full inbox
//! is answered `Unavailable` at once.

use std::sync::Arc;

use flotilla_actors::remote;
use flotilla_protocol::codec as wire;
use flotilla_protocol::services::actors;
use flotilla_protocol::services::control::{RemoteError, RemoteErrorKind};
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
pub struct ActorsInbound {
    pub peer: PeerId,
    pub request: actors::Request,
    pub channel: ResponseChannel<Frame<actors::Response>>,
}

impl Bridge {
    /// Sends an actors request, refusing one over the cap here rather than on the wire.
    pub(super) fn actors_request(
        &mut self,
        peer: PeerId,
        body: actors::RequestBody,
        reply: Reply<actors::ResponseBody>,
    ) {
        self.next_request_id += 1;
        let id = RequestId(self.next_request_id);
        let request = actors::Request { id, body };
        let fits = wire::encoded_len(actors::SERVICE, &request).and_then(|len| {
            wire::check_frame_len(actors::SERVICE, len as u64, actors::MAX_FRAME_BYTES)
        });
        if let Err(e) = fits {
            let _ = reply.send(Err(e.to_string()));
            return;
        }
        let out = self
            .swarm
            .behaviour_mut()
            .actors
            .send_request(&peer, Frame::Valid(request));
        self.actors.insert(out, id, reply);
    }

    /// Sends the worker's answer to an inbound request.
    pub(super) fn actors_respond(
        &mut self,
        channel: ResponseChannel<Frame<actors::Response>>,
        response: actors::Response,
    ) {
        // The requester may have gone away; nothing to do then.
        let _ = self
            .swarm
            .behaviour_mut()
            .actors
            .send_response(channel, Frame::Valid(response));
    }

    /// Events of the actors service.
    pub(super) fn on_actors(
        &mut self,
        ev: libp2p::request_response::Event<Frame<actors::Request>, Frame<actors::Response>>,
    ) {
        match self.actors.on_event(actors::SERVICE, ev) {
            None => {}
            Some(Inbound::Malformed { peer, reason }) => {
                self.reject_peer(peer, actors::SERVICE, &reason)
            }
            Some(Inbound::Request {
                peer,
                request,
                channel,
            }) => {
                let id = request.id;
                let work = ActorsInbound {
                    peer,
                    request,
                    channel,
                };
                if let Err(mpsc::error::TrySendError::Full(work)) =
                    self.wiring.actors_inbox.try_send(work)
                {
                    let body = Err(RemoteError {
                        kind: RemoteErrorKind::Unavailable,
                        message: "actors service busy; retry later".into(),
                    });
                    self.actors_respond(work.channel, actors::Response { id, body });
                }
            }
        }
    }
}

/// The worker: answers inbound actors requests until the bridge drops the inbox.
pub async fn serve(
    mut inbox: mpsc::Receiver<ActorsInbound>,
    host: remote::Host,
    commands: mpsc::Sender<Command>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(work) = inbox.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (host, commands) = (host.clone(), commands.clone());
        tokio::spawn(async move {
            let from = NodeId(work.peer.to_string());
            let body = host.serve(&from, work.request.body).await;
            let response = actors::Response {
                id: work.request.id,
                body,
            };
            let _ = commands
                .send(Command::ActorsRespond {
                    channel: work.channel,
                    response,
                })
                .await;
            drop(permit);
        });
    }
}
