//! The catalog on the network: delta gossip on `flotilla/catalog/1`, the anti-entropy service
//! `/flotilla/catalog/1`, and the periodic anti-entropy rounds.
//!
//! The bridge owns the swarm and must never wait on an actor, so catalog work crosses two
//! bounded queues: the catalog actor's *outbox* (deltas of local writes, published by the
//! bridge) and the bridge's *inbox* to a worker task (gossiped deltas to merge, requests to
//! answer). The worker calls the catalog actor and sends answers back to the bridge as
//! [`Command::CatalogRespond`]. When the inbox is full, gossip is dropped (anti-entropy repairs
//! it) and requests are answered `Unavailable` at once.

use std::sync::Arc;
use std::time::Duration;

use flotilla_actors::{catalog as replica, membership};
use flotilla_protocol::services::catalog::{self, Delta};
use flotilla_protocol::services::control::{RemoteError, RemoteErrorKind};
use flotilla_protocol::{MemberState, NodeId, RequestId};
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::request_response::{self, ResponseChannel};
use libp2p::{PeerId, Swarm};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::behaviour::Behaviour;
use super::bridge::{Bridge, Command};
use super::codec::Frame;
use super::rpc::{Inbound, Pending, Reply};
use crate::metrics::Metrics;

/// Capacity of the outbox (local deltas waiting to be gossiped).
pub const OUTBOX_CAPACITY: usize = 256;
/// Capacity of the inbox (gossip and requests waiting for the catalog actor).
pub const INBOX_CAPACITY: usize = 1024;
/// Most entries of queued gossip merged in one call to the catalog actor.
const MAX_MERGE_BATCH: usize = 1024;

/// Reply channel of an outbound catalog request.
pub type CatalogReply = Reply<catalog::ResponseBody>;

/// Catalog work the bridge hands to the worker.
#[derive(Debug)]
pub enum InboundWork {
    /// A validated delta from the gossip topic, with the node that published it when
    /// gossipsub's strict mode verified its signature.
    Gossip {
        delta: Delta,
        publisher: Option<NodeId>,
    },
    /// An anti-entropy request to answer.
    Request {
        request: catalog::Request,
        channel: ResponseChannel<Frame<catalog::Response>>,
    },
}

/// The bridge's ends of the catalog queues.
#[derive(Debug)]
pub struct CatalogWiring {
    /// Deltas of local writes, from the catalog actor.
    pub outbox: mpsc::Receiver<Delta>,
    /// Work for the worker ([`serve`]).
    pub inbox: mpsc::Sender<InboundWork>,
}

/// The bridge's catalog state: the topic and the outbound requests awaiting answers.
pub struct CatalogNet {
    pub(super) topic: IdentTopic,
    pending: Pending<catalog::ResponseBody>,
}

impl CatalogNet {
    /// Subscribes to the catalog topic.
    pub fn subscribe(swarm: &mut Swarm<Behaviour>) -> anyhow::Result<CatalogNet> {
        let topic = IdentTopic::new(catalog::TOPIC);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| anyhow::anyhow!("subscribe to {}: {e}", catalog::TOPIC))?;
        Ok(CatalogNet {
            topic,
            pending: Pending::default(),
        })
    }

    /// Fails every request still waiting (the bridge is stopping).
    pub fn fail_pending(&mut self) {
        self.pending.fail_all("node is shutting down");
    }
}

fn unavailable(message: impl Into<String>) -> RemoteError {
    RemoteError {
        kind: RemoteErrorKind::Unavailable,
        message: message.into(),
    }
}

impl Bridge {
    /// Publishes a delta of local writes. Without peers on the topic the publish fails; the
    /// writes then reach peers by anti-entropy.
    pub(super) fn publish_catalog(&mut self, delta: Delta) {
        let bytes = match catalog::encode_message(&catalog::Message::Delta(delta)) {
            Ok(b) => b,
            Err(e) => return warn!(error = %e, "cannot encode catalog delta"),
        };
        let topic = self.catalog.topic.clone();
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            debug!(error = %e, "catalog publish skipped; anti-entropy will carry it");
        }
    }

    /// Sends an anti-entropy request, refusing one over the cap here rather than on the wire.
    pub(super) fn catalog_request(
        &mut self,
        peer: PeerId,
        body: catalog::RequestBody,
        reply: CatalogReply,
    ) {
        self.next_request_id += 1;
        let id = RequestId(self.next_request_id);
        let request = catalog::Request { id, body };
        super::rpc::send_checked(
            &mut self.swarm.behaviour_mut().catalog,
            &mut self.catalog.pending,
            catalog::SERVICE,
            peer,
            id,
            request,
            reply,
        );
    }

    /// Sends the worker's answer to an inbound request.
    pub(super) fn catalog_respond(
        &mut self,
        channel: ResponseChannel<Frame<catalog::Response>>,
        response: catalog::Response,
    ) {
        // The requester may have gone away; nothing to do then.
        let _ = self
            .swarm
            .behaviour_mut()
            .catalog
            .send_response(channel, Frame::Valid(response));
    }

    /// A catalog delta is forwarded only if it decodes within the catalog cap and every entry
    /// is valid for its key; the CRDT applies its own checks (skew, capacity) when merging.
    pub(super) fn on_catalog_gossip(
        &mut self,
        source: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let verdict = catalog::decode_message(&message.data)
            .map_err(|e| e.to_string())
            .and_then(|catalog::Message::Delta(delta)| {
                match delta.entries.iter().find_map(|(k, e)| e.validate(k).err()) {
                    Some(errors) => Err(format!("invalid entry: {errors}")),
                    None => Ok(delta),
                }
            });
        let acceptance = match &verdict {
            Ok(_) => MessageAcceptance::Accept,
            Err(reason) => {
                self.wiring.metrics.gossip_rejected.inc();
                warn!(peer = %source, %reason, "catalog gossip rejected");
                MessageAcceptance::Reject
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
        if let Ok(delta) = verdict {
            if self
                .wiring
                .catalog
                .inbox
                .try_send(InboundWork::Gossip {
                    delta,
                    publisher: message.source.map(|p| NodeId(p.to_string())),
                })
                .is_err()
            {
                debug!("catalog inbox full; gossiped delta dropped, anti-entropy repairs it");
            }
        }
    }

    /// Events of the anti-entropy service; malformed frames are handled as for control.
    pub(super) fn on_catalog(
        &mut self,
        ev: request_response::Event<Frame<catalog::Request>, Frame<catalog::Response>>,
    ) {
        match self.catalog.pending.on_event(catalog::SERVICE, ev) {
            None => {}
            Some(Inbound::Malformed { peer, reason }) => {
                self.reject_peer(peer, catalog::SERVICE, &reason)
            }
            Some(Inbound::Request {
                request, channel, ..
            }) => {
                let id = request.id;
                if let Err(mpsc::error::TrySendError::Full(InboundWork::Request {
                    channel, ..
                })) = self
                    .wiring
                    .catalog
                    .inbox
                    .try_send(InboundWork::Request { request, channel })
                {
                    let body = Err(unavailable("catalog busy; retry later"));
                    self.catalog_respond(channel, catalog::Response { id, body });
                }
            }
        }
    }
}

/// Refreshes the entries gauge from the actor.
pub async fn refresh_entries(catalog: &replica::Handle, metrics: &Metrics) {
    if let Ok(stats) = catalog.stats().await {
        metrics.catalog_entries.set(stats.entries as i64);
    }
}

/// The worker: merges gossiped deltas and answers anti-entropy requests, one at a time, until
/// the bridge drops the inbox.
pub async fn serve(
    mut inbox: mpsc::Receiver<InboundWork>,
    catalog: replica::Handle,
    commands: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
) {
    let mut next: Option<InboundWork> = None;
    loop {
        let work = match next.take() {
            Some(w) => w,
            None => match inbox.recv().await {
                Some(w) => w,
                None => break,
            },
        };
        match work {
            InboundWork::Gossip { delta, publisher } => {
                // A burst of writes arrives as many one-entry deltas: merge what is already
                // queued in one call, so the worker keeps up instead of the inbox overflowing
                // (dropped gossip waits for anti-entropy, seconds later). Each entry keeps the
                // publisher of its own message.
                let tag = |d: Delta, p: Option<NodeId>| {
                    d.entries.into_iter().map(move |(k, e)| (k, e, p.clone()))
                };
                let mut entries: Vec<_> = tag(delta, publisher).collect();
                while entries.len() < MAX_MERGE_BATCH {
                    match inbox.try_recv() {
                        Ok(InboundWork::Gossip { delta, publisher }) => {
                            entries.extend(tag(delta, publisher))
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                match catalog.merge_published(entries).await {
                    Ok(summary) => metrics.count_catalog_rejections(&summary.rejected),
                    Err(e) => warn!(error = %e, "gossiped catalog delta not merged"),
                }
            }
            InboundWork::Request { request, channel } => {
                let body = match request.body {
                    catalog::RequestBody::Sync(theirs) => catalog
                        .answer_sync(theirs)
                        .await
                        .map(catalog::ResponseBody::Sync),
                    catalog::RequestBody::Push(delta) => {
                        catalog.merge(delta).await.map(|summary| {
                            metrics.count_catalog_rejections(&summary.rejected);
                            catalog::ResponseBody::Merged {
                                applied: summary.applied as u32,
                                rejected: summary.rejected.len() as u32,
                            }
                        })
                    }
                }
                .map_err(|e| unavailable(e.to_string()));
                let response = catalog::Response {
                    id: request.id,
                    body,
                };
                if commands
                    .send(Command::CatalogRespond { channel, response })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        refresh_entries(&catalog, &metrics).await;
    }
}

/// Sends one catalog request through the bridge and waits at most `deadline`.
async fn request(
    commands: &mpsc::Sender<Command>,
    peer: PeerId,
    body: catalog::RequestBody,
    deadline: Duration,
) -> Result<catalog::ResponseBody, String> {
    let (reply, answer) = oneshot::channel();
    commands
        .send(Command::Catalog { peer, body, reply })
        .await
        .map_err(|_| "network bridge stopped".to_string())?;
    match tokio::time::timeout(deadline, answer).await {
        Err(_) => Err(format!("no answer within {deadline:?}")),
        Ok(Err(_)) => Err("network bridge stopped".to_string()),
        Ok(Ok(r)) => r,
    }
}

/// What an anti-entropy loop needs.
#[derive(Debug, Clone)]
pub struct AntiEntropy {
    pub me: NodeId,
    pub every: Duration,
    /// Deadline of each request of a round.
    pub deadline: Duration,
    pub membership: membership::Handle,
    pub catalog: replica::Handle,
    pub commands: mpsc::Sender<Command>,
    pub metrics: Arc<Metrics>,
}

impl AntiEntropy {
    /// Every `every`, exchanges digests with one random alive peer and merges both ways.
    pub async fn run(self) {
        // The first round waits one period: a node that just started has nobody in its view.
        let start = tokio::time::Instant::now() + self.every;
        let mut tick = tokio::time::interval_at(start, self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Which peer is asked only spreads the load; it needs no reproducible seed.
        let mut rng = StdRng::from_entropy();
        loop {
            tick.tick().await;
            let Ok(view) = self.membership.view().await else {
                break;
            };
            let alive: Vec<PeerId> = view
                .iter()
                .filter(|m| !m.is_self && m.state == MemberState::Alive && m.info.id != self.me)
                .filter_map(|m| m.info.id.as_str().parse().ok())
                .collect();
            let Some(peer) = alive.choose(&mut rng).copied() else {
                continue;
            };
            if let Err(e) = self.round(peer).await {
                debug!(%peer, error = %e, "catalog anti-entropy round failed");
            }
            refresh_entries(&self.catalog, &self.metrics).await;
        }
    }

    /// One round: send the digest, merge the answer, push back what the peer lacks.
    async fn round(&self, peer: PeerId) -> Result<(), String> {
        let digest = self.catalog.digest().await.map_err(|e| e.to_string())?;
        let answer = match request(
            &self.commands,
            peer,
            catalog::RequestBody::Sync(digest),
            self.deadline,
        )
        .await?
        {
            catalog::ResponseBody::Sync(answer) => answer,
            other => return Err(format!("unexpected answer to a digest: {other:?}")),
        };
        let (summary, push) = self
            .catalog
            .complete_sync(answer)
            .await
            .map_err(|e| e.to_string())?;
        self.metrics.count_catalog_rejections(&summary.rejected);
        self.metrics.catalog_sync_rounds.inc();
        for delta in push {
            match request(
                &self.commands,
                peer,
                catalog::RequestBody::Push(delta),
                self.deadline,
            )
            .await?
            {
                catalog::ResponseBody::Merged { rejected, .. } if rejected > 0 => {
                    warn!(%peer, rejected, "peer refused pushed catalog entries")
                }
                catalog::ResponseBody::Merged { .. } => {}
                other => return Err(format!("unexpected answer to a push: {other:?}")),
            }
        }
        Ok(())
    }
}
