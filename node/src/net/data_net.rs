//! The data service on the network: `/flotilla/data/1` requests between shard holders, the
//! worker that answers them with the local `DataShard` actor, and [`NetData`], the data cores'
//! [`DataPeers`] over the bridge.
//!
//! Inbound requests cross a bounded inbox to the worker, which answers each in its own task (at
//! most [`MAX_IN_FLIGHT`] at once) with [`flotilla_actors::data::service::serve`] and hands the
//! response back to the bridge. A full inbox is answered `Unavailable` at once.
//!
//! Unlike the other services, an answered error keeps its [`RemoteError`] (kind and message)
//! all the way to the caller: the operation coordinator stops on a `BadRequest` (a missing
//! field) but moves on to the next holder on anything else, so the kind must survive.

use std::sync::Arc;
use std::time::Duration;

use flotilla_actors::catalog;
use flotilla_actors::data::peers::DataPeers;
use flotilla_actors::data::{self as cores, service, shard};
use flotilla_protocol::catalog::{CatalogKey, Entry};
use flotilla_protocol::services::control::{RemoteError, RemoteErrorKind};
use flotilla_protocol::services::data;
use flotilla_protocol::{NodeId, RequestId};
use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use tokio::sync::mpsc;
use tracing::warn;

use super::bridge::{Bridge, Command};
use super::codec::Frame;
use super::mesh::NetMesh;
use super::rpc::{self, Envelope, Reply, Routed, Work};

/// Capacity of the inbox of requests waiting for the worker.
pub const INBOX_CAPACITY: usize = 256;
/// Requests answered concurrently at most.
pub const MAX_IN_FLIGHT: usize = 32;

/// What an outbound data request ends with once the peer answered: its body or its error.
pub type DataAnswer = Result<data::ResponseBody, RemoteError>;

impl Envelope for data::Response {
    type Body = DataAnswer;
    fn id(&self) -> RequestId {
        self.id
    }
    // The peer's error is part of the answer (see the module docs), never flattened here.
    fn into_body(self) -> Result<Self::Body, RemoteError> {
        Ok(self.body)
    }
}

/// A request for the worker.
pub type DataInbound = Work<data::Request, data::Response>;

impl Bridge {
    /// Sends a data request (size-checked against the service's cap).
    pub(super) fn data_request(
        &mut self,
        peer: PeerId,
        body: data::RequestBody,
        reply: Reply<DataAnswer>,
    ) {
        self.next_request_id += 1;
        let id = RequestId(self.next_request_id);
        let request = data::Request { id, body };
        rpc::send_checked(
            &mut self.swarm.behaviour_mut().data,
            &mut self.data,
            data::SERVICE,
            peer,
            id,
            request,
            reply,
        );
    }

    /// Sends the worker's answer to an inbound request.
    pub(super) fn data_respond(
        &mut self,
        channel: ResponseChannel<Frame<data::Response>>,
        response: data::Response,
    ) {
        // The requester may have gone away; nothing to do then.
        let _ = self
            .swarm
            .behaviour_mut()
            .data
            .send_response(channel, Frame::Valid(response));
    }

    /// Events of the data service.
    pub(super) fn on_data(
        &mut self,
        ev: libp2p::request_response::Event<Frame<data::Request>, Frame<data::Response>>,
    ) {
        let busy = |id| data::Response {
            id,
            body: Err(RemoteError {
                kind: RemoteErrorKind::Unavailable,
                message: "data service busy; retry later".into(),
            }),
        };
        match rpc::route(
            &mut self.data,
            data::SERVICE,
            ev,
            &self.wiring.data_inbox,
            busy,
        ) {
            Routed::Done => {}
            Routed::Malformed { peer, reason } => self.reject_peer(peer, data::SERVICE, &reason),
            Routed::Busy { channel, response } => self.data_respond(channel, response),
        }
    }
}

/// How long a delete from a peer waits for the catalog's deletion of the version to arrive by
/// gossip (`data rm` deletes the catalog entry, then asks the holders at once).
const TOMBSTONE_WAIT: Duration = Duration::from_secs(3);

/// Why a peer may not delete what `body` names, or `None`: shards are deleted only as the
/// catalog drives it — a version that the catalog deleted, or one it never recorded (the
/// output of a failed upload or operation) — never a version the catalog holds live.
async fn delete_refusal(catalog: &catalog::Handle, body: &data::RequestBody) -> Option<String> {
    let (dataset, version) = match body {
        data::RequestBody::DeleteVersion { dataset, version } => (dataset.clone(), *version),
        data::RequestBody::DeleteShard { shard } => (shard.dataset.clone(), shard.version),
        _ => return None,
    };
    let key = CatalogKey::dataset(&dataset, version);
    let deadline = tokio::time::Instant::now() + TOMBSTONE_WAIT;
    loop {
        let live = match catalog.get(key.clone()).await {
            Ok(Some(Entry::Register(r))) => r.value.is_some(),
            Ok(_) => false,
            // Without the catalog nothing can be shown deletable.
            Err(_) => true,
        };
        if !live {
            return None;
        }
        if tokio::time::Instant::now() >= deadline {
            return Some(format!(
                "{dataset}@{version} is live in the catalog; its shards are deleted only once \
                 the catalog deletes it"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The worker: answers inbound data requests until the bridge drops the inbox. `deadline`
/// bounds the calls an answer makes to other peers (the fetch of a copy). Deletes are checked
/// against `catalog` first.
pub async fn serve(
    inbox: mpsc::Receiver<DataInbound>,
    peers: Arc<NetData>,
    catalog: catalog::Handle,
    commands: mpsc::Sender<Command>,
    deadline: Duration,
) {
    let answer = move |peer: PeerId, request: data::Request| {
        let (peers, catalog) = (peers.clone(), catalog.clone());
        async move {
            if let Some(refusal) = delete_refusal(&catalog, &request.body).await {
                warn!(%peer, %refusal, "delete refused");
                return data::Response {
                    id: request.id,
                    body: Err(RemoteError {
                        kind: RemoteErrorKind::Forbidden,
                        message: refusal,
                    }),
                };
            }
            let body = service::serve(&peers.shards, &*peers, request.body, deadline).await;
            data::Response {
                id: request.id,
                body,
            }
        }
    };
    let respond = |channel, response| Command::DataRespond { channel, response };
    rpc::serve_inbox(inbox, MAX_IN_FLIGHT, commands, respond, answer).await;
}

/// The data cores' [`DataPeers`] over the mesh; calls to this node go straight to its shard
/// actor through the same [`service::serve`] a remote caller reaches.
#[derive(Debug, Clone)]
pub struct NetData {
    pub local: NodeId,
    pub shards: shard::Handle,
    pub mesh: NetMesh,
}

#[async_trait::async_trait]
impl DataPeers for NetData {
    async fn call(
        &self,
        peer: &NodeId,
        body: data::RequestBody,
        deadline: Duration,
    ) -> cores::Result<data::ResponseBody> {
        let answer = if *peer == self.local {
            let served =
                tokio::time::timeout(deadline, service::serve(&self.shards, self, body, deadline))
                    .await;
            match served {
                Ok(a) => a,
                Err(_) => {
                    return Err(cores::Error::Peer {
                        peer: peer.to_string(),
                        reason: format!("no answer within {deadline:?}"),
                    })
                }
            }
        } else {
            self.mesh
                .ask(peer, deadline, |peer, reply| Command::Data {
                    peer,
                    body,
                    reply,
                })
                .await
                .map_err(|e| cores::Error::Peer {
                    peer: peer.to_string(),
                    reason: e.to_string(),
                })?
        };
        answer.map_err(|error| cores::Error::Remote {
            peer: peer.to_string(),
            error,
        })
    }
}
