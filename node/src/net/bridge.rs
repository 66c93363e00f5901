//! The network bridge: one task that owns the swarm, turns swarm events into actor messages and
//! answers commands from the rest of the node.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flotilla_actors::membership;
use flotilla_protocol::services::{actors, catalog, control, data, jobs, membership as gossip};
use flotilla_protocol::{NodeId, NodeInfo, RequestId};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::metrics::Recorder;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, kad, mdns, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::actors_net::ActorsInbound;
use super::behaviour::{Behaviour, BehaviourEvent};
use super::catalog_sync::{CatalogNet, CatalogReply, CatalogWiring};
use super::codec::Frame;
use super::data_net::{DataAnswer, DataInbound};
use super::jobs_net::JobsInbound;
use super::rpc::{Inbound, Pending, Reply};
use crate::metrics::{Metrics, ServiceLabel};

/// Reply channel of an outbound control request.
pub type ControlReply = Reply<control::ResponseBody>;

/// What the rest of the node asks of the bridge.
#[derive(Debug)]
pub enum Command {
    /// Publish on the membership topic.
    Publish(gossip::Message),
    /// Send a control request and reply with the answer.
    Control {
        peer: PeerId,
        body: control::RequestBody,
        reply: ControlReply,
    },
    /// Publish a delta of local catalog writes on the catalog topic.
    PublishCatalog(catalog::Delta),
    /// Send a catalog anti-entropy request and reply with the answer.
    Catalog {
        peer: PeerId,
        body: catalog::RequestBody,
        reply: CatalogReply,
    },
    /// Send the answer to an inbound catalog request, once the catalog actor has produced it.
    CatalogRespond {
        channel: ResponseChannel<Frame<catalog::Response>>,
        response: catalog::Response,
    },
    /// Send a jobs request and reply with the answer.
    Jobs {
        peer: PeerId,
        body: jobs::RequestBody,
        reply: Reply<jobs::ResponseBody>,
    },
    /// Send the answer to an inbound jobs request.
    JobsRespond {
        channel: ResponseChannel<Frame<jobs::Response>>,
        response: jobs::Response,
    },
    /// Send an actors request and reply with the answer.
    Actors {
        peer: PeerId,
        body: actors::RequestBody,
        reply: Reply<actors::ResponseBody>,
    },
    /// Send the answer to an inbound actors request.
    ActorsRespond {
        channel: ResponseChannel<Frame<actors::Response>>,
        response: actors::Response,
    },
    /// Send a serving request and reply with the replica's answer.
    Serving {
        peer: PeerId,
        request: flotilla_protocol::services::serving::Request,
        reply: Reply<super::serving_net::ServingAnswer>,
    },
    /// Send the answer to an inbound serving request.
    ServingRespond {
        channel: ResponseChannel<Frame<flotilla_protocol::services::serving::Response>>,
        response: flotilla_protocol::services::serving::Response,
    },
    /// Send a data request and reply with the answer.
    Data {
        peer: PeerId,
        body: data::RequestBody,
        reply: Reply<DataAnswer>,
    },
    /// Send the answer to an inbound data request.
    DataRespond {
        channel: ResponseChannel<Frame<data::Response>>,
        response: data::Response,
    },
    /// Close and refuse every connection with a peer until it is unblocked.
    Block(PeerId),
    /// Accept a blocked peer again (not an evicted one).
    Unblock(PeerId),
    /// Remove a member for good: block it, forget its addresses, and ignore gossip it signed
    /// (other nodes may relay it until they apply the eviction too).
    Evict(PeerId),
    /// The peers with an open connection.
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    /// Dial an address.
    Dial(Multiaddr),
    /// Stop the event loop; connections close when the swarm is dropped.
    Shutdown(oneshot::Sender<()>),
}

/// Everything the bridge needs besides the swarm.
pub struct Wiring {
    pub commands: mpsc::Receiver<Command>,
    pub membership: membership::Handle,
    pub metrics: Arc<Metrics>,
    /// This node's latest heartbeat, served to `GetNodeInfo`.
    pub own_info: watch::Receiver<NodeInfo>,
    /// Where the bridge publishes its listen addresses.
    pub listen_addrs: watch::Sender<Vec<Multiaddr>>,
    pub join: Vec<Multiaddr>,
    pub target_peers: usize,
    /// The catalog's gossip outbox and request queue.
    pub catalog: CatalogWiring,
    /// Inbound jobs requests for the jobs worker.
    pub jobs_inbox: mpsc::Sender<JobsInbound>,
    /// Inbound actors requests for the actors worker.
    pub actors_inbox: mpsc::Sender<ActorsInbound>,
    /// Inbound serving requests for the serving worker.
    pub serving_inbox: mpsc::Sender<super::serving_net::ServingInbound>,
    /// Inbound data requests for the data worker.
    pub data_inbox: mpsc::Sender<DataInbound>,
}

/// The bridge's state.
pub struct Bridge {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) wiring: Wiring,
    topic: IdentTopic,
    pending: Pending<control::ResponseBody>,
    pub(super) next_request_id: u64,
    pub(super) catalog: CatalogNet,
    pub(super) jobs: Pending<jobs::ResponseBody>,
    pub(super) actors: Pending<actors::ResponseBody>,
    pub(super) serving: Pending<super::serving_net::ServingAnswer>,
    pub(super) data: Pending<DataAnswer>,
    /// Evicted members: blocked for good, their gossip ignored.
    evicted: HashSet<PeerId>,
}

impl Bridge {
    /// Subscribes to the membership topic and dials the join addresses.
    pub fn new(mut swarm: Swarm<Behaviour>, wiring: Wiring) -> anyhow::Result<Bridge> {
        let topic = IdentTopic::new(gossip::TOPIC);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| anyhow::anyhow!("subscribe: {e}"))?;
        let catalog = CatalogNet::subscribe(&mut swarm)?;
        let mut bridge = Bridge {
            swarm,
            wiring,
            topic,
            pending: Pending::default(),
            next_request_id: 0,
            catalog,
            jobs: Pending::default(),
            actors: Pending::default(),
            serving: Pending::default(),
            data: Pending::default(),
            evicted: HashSet::new(),
        };
        bridge.dial_join_addrs();
        Ok(bridge)
    }

    fn dial_join_addrs(&mut self) {
        for addr in self.wiring.join.clone() {
            if let Some(Protocol::P2p(peer)) = addr.iter().last() {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                warn!(%addr, error = %e, "cannot dial join address");
            }
        }
    }

    /// Runs until shutdown or until every command sender is gone.
    pub async fn run(mut self) {
        let mut rejoin = tokio::time::interval(Duration::from_secs(3));
        let mut kad_refresh = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                cmd = self.wiring.commands.recv() => match cmd {
                    None => break,
                    Some(Command::Shutdown(done)) => {
                        let _ = done.send(());
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                },
                Some(delta) = self.wiring.catalog.outbox.recv() => self.publish_catalog(delta),
                _ = rejoin.tick() => {
                    // Lost every peer (or never had one): try the join addresses again.
                    if self.swarm.connected_peers().next().is_none() && !self.wiring.join.is_empty() {
                        self.dial_join_addrs();
                    }
                }
                _ = kad_refresh.tick() => {
                    // Finds peers beyond the ones we were told about; no peers yet is fine.
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
            }
        }
        self.pending.fail_all("node is shutting down");
        self.jobs.fail_all("node is shutting down");
        self.actors.fail_all("node is shutting down");
        self.serving.fail_all("node is shutting down");
        self.data.fail_all("node is shutting down");
        self.catalog.fail_pending();
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish(msg) => match gossip::encode(&msg) {
                Ok(bytes) => {
                    if let Err(e) = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(self.topic.clone(), bytes)
                    {
                        // No peers yet, or a duplicate: the next heartbeat will try again.
                        debug!(error = %e, "membership publish skipped");
                    }
                }
                Err(e) => warn!(error = %e, "cannot encode membership message"),
            },
            Command::Control { peer, body, reply } => {
                self.next_request_id += 1;
                let id = RequestId(self.next_request_id);
                let request = control::Request { id, body };
                // Refuse an oversized request here: sent, it would fail in the codec and look
                // like a malformed frame on a healthy connection.
                if let Err(e) = control::check_request_size(&request) {
                    let _ = reply.send(Err(e.to_string()));
                    return;
                }
                let out = self
                    .swarm
                    .behaviour_mut()
                    .control
                    .send_request(&peer, Frame::Valid(request));
                self.pending.insert(out, id, reply);
            }
            Command::PublishCatalog(delta) => self.publish_catalog(delta),
            Command::Catalog { peer, body, reply } => self.catalog_request(peer, body, reply),
            Command::CatalogRespond { channel, response } => {
                self.catalog_respond(channel, response)
            }
            Command::Jobs { peer, body, reply } => self.jobs_request(peer, body, reply),
            Command::JobsRespond { channel, response } => self.jobs_respond(channel, response),
            Command::Actors { peer, body, reply } => self.actors_request(peer, body, reply),
            Command::ActorsRespond { channel, response } => self.actors_respond(channel, response),
            Command::Serving {
                peer,
                request,
                reply,
            } => self.serving_request(peer, request, reply),
            Command::ServingRespond { channel, response } => {
                self.serving_respond(channel, response)
            }
            Command::Data { peer, body, reply } => self.data_request(peer, body, reply),
            Command::DataRespond { channel, response } => self.data_respond(channel, response),
            Command::Block(peer) => {
                self.swarm.behaviour_mut().blocked.block_peer(peer);
            }
            Command::Unblock(peer) => {
                if self.evicted.contains(&peer) {
                    warn!(%peer, "not unblocking an evicted node");
                } else {
                    self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                }
            }
            Command::Evict(peer) => {
                if self.evicted.insert(peer) {
                    info!(%peer, "evicted: closing and refusing its connections");
                }
                // Blocking closes the open connections and refuses new ones either way.
                let behaviour = self.swarm.behaviour_mut();
                behaviour.blocked.block_peer(peer);
                behaviour.kad.remove_peer(&peer);
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::Dial(addr) => {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    warn!(%addr, error = %e, "dial failed");
                }
            }
            Command::Shutdown(_) => {}
        }
    }

    fn maybe_dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id() || self.swarm.is_connected(&peer) || addrs.is_empty()
        {
            return;
        }
        if self.swarm.connected_peers().count() >= self.wiring.target_peers {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(%peer, error = %e, "dial of discovered peer failed");
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.wiring.metrics.libp2p.record(&event);
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(ev)) => {
                self.wiring.metrics.libp2p.record(&ev);
                if let gossipsub::Event::Message {
                    propagation_source,
                    message_id,
                    message,
                } = ev
                {
                    self.on_gossip(propagation_source, message_id, message);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(ev)) => {
                self.wiring.metrics.libp2p.record(&ev);
                if let identify::Event::Received { peer_id, info, .. } = ev {
                    for addr in info.listen_addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    self.maybe_dial(peer, vec![addr]);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => {
                self.wiring.metrics.libp2p.record(&ev);
                if let kad::Event::RoutingUpdated {
                    peer, addresses, ..
                } = ev
                {
                    self.maybe_dial(peer, addresses.into_vec());
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ev)) => {
                self.wiring.metrics.libp2p.record(&ev)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Control(ev)) => self.on_control(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Catalog(ev)) => self.on_catalog(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Jobs(ev)) => self.on_jobs(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Actors(ev)) => self.on_actors(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Serving(ev)) => self.on_serving(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Data(ev)) => self.on_data(ev),
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.wiring.listen_addrs.send_modify(|a| a.push(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.wiring
                    .listen_addrs
                    .send_modify(|a| a.retain(|x| *x != address));
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                if endpoint.is_dialer() {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, endpoint.get_remote_address().clone());
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
                debug!(peer = %peer_id, ?cause, "disconnected")
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                debug!(%error, "incoming connection refused")
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(?peer_id, %error, "dial failed")
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        // A node that has not applied an eviction yet may still relay the evicted node's
        // messages; they must not bring it back into this node's view or catalog.
        if message.source.is_some_and(|s| self.evicted.contains(&s)) {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&id, &source, MessageAcceptance::Ignore);
            return;
        }
        if message.topic == self.catalog.topic.hash() {
            self.on_catalog_gossip(source, id, message);
            return;
        }
        let verdict = self.validate_gossip(&message);
        let acceptance = match &verdict {
            Ok(_) => MessageAcceptance::Accept,
            Err(reason) => {
                self.wiring.metrics.gossip_rejected.inc();
                warn!(peer = %source, %reason, "gossip message rejected");
                MessageAcceptance::Reject
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
        let Ok(msg) = verdict else { return };
        let result = match msg {
            gossip::Message::Heartbeat(info) => {
                if let Ok(peer) = info.id.as_str().parse::<PeerId>() {
                    let addrs = info
                        .listen_addrs
                        .iter()
                        .filter_map(|a| a.parse().ok())
                        .collect();
                    self.maybe_dial(peer, addrs);
                }
                self.wiring.membership.heartbeat(info)
            }
            gossip::Message::Leaving { id, incarnation } => {
                self.wiring.membership.leave(id, incarnation)
            }
        };
        if let Err(e) = result {
            warn!(error = %e, "membership actor unavailable");
        }
    }

    /// A membership message is accepted only if it decodes within its cap, is on the right
    /// topic, and speaks for the peer that signed it (gossipsub's strict mode checked the
    /// signature): no node can publish another's heartbeat or leave.
    fn validate_gossip(&self, message: &gossipsub::Message) -> Result<gossip::Message, String> {
        if message.topic != self.topic.hash() {
            return Err(format!("unexpected topic {}", message.topic));
        }
        let msg = gossip::decode(&message.data).map_err(|e| e.to_string())?;
        let signer = message.source.ok_or("unsigned message")?;
        if msg.sender().as_str() != signer.to_string() {
            return Err(format!("message for {} signed by {signer}", msg.sender()));
        }
        Ok(msg)
    }

    fn on_control(
        &mut self,
        ev: request_response::Event<Frame<control::Request>, Frame<control::Response>>,
    ) {
        match self.pending.on_event(control::SERVICE, ev) {
            None => {}
            Some(Inbound::Request {
                peer,
                request,
                channel,
            }) => self.answer(peer, request, channel),
            Some(Inbound::Malformed { peer, reason }) => {
                self.reject_peer(peer, control::SERVICE, &reason)
            }
        }
    }

    /// A peer sent a frame that fails the codec: count it and close its connections.
    pub(super) fn reject_peer(&mut self, peer: PeerId, service: &str, reason: &str) {
        self.wiring
            .metrics
            .rejected_frames
            .get_or_create(&ServiceLabel {
                service: service.to_string(),
            })
            .inc();
        warn!(%peer, %service, %reason, "malformed frame; closing the peer's connections");
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn answer(
        &mut self,
        peer: PeerId,
        request: control::Request,
        channel: ResponseChannel<Frame<control::Response>>,
    ) {
        use control::{RemoteError, RemoteErrorKind, RequestBody, ResponseBody};
        let body = match request.body {
            RequestBody::Ping => Ok(ResponseBody::Pong),
            RequestBody::Echo(bytes) => Ok(ResponseBody::Echo(bytes)),
            RequestBody::GetNodeInfo => Ok(ResponseBody::NodeInfo(Box::new(
                self.wiring.own_info.borrow().clone(),
            ))),
            RequestBody::Leaving { id, incarnation } => {
                if id != NodeId(peer.to_string()) {
                    Err(RemoteError {
                        kind: RemoteErrorKind::BadRequest,
                        message: format!("{peer} cannot announce the leave of {id}"),
                    })
                } else {
                    match self.wiring.membership.leave(id, incarnation) {
                        Ok(()) => Ok(ResponseBody::LeaveAck),
                        Err(e) => Err(RemoteError {
                            kind: RemoteErrorKind::Unavailable,
                            message: e.to_string(),
                        }),
                    }
                }
            }
        };
        // The requester may have gone away; nothing to do then.
        let _ = self.swarm.behaviour_mut().control.send_response(
            channel,
            Frame::Valid(control::Response {
                id: request.id,
                body,
            }),
        );
    }
}
