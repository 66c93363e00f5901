//! The composed libp2p behaviour of a node.

use std::time::Duration;

use flotilla_protocol::services::{actors, catalog, control, data, jobs};
use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, connection_limits, gossipsub, identify, kad, mdns, ping, request_response,
    PeerId, StreamProtocol,
};

use super::budget::InboundBudget;
use super::codec::FrameCodec;
use crate::config::NodeConfig;

/// Protocol name of identify exchanges.
pub const IDENTIFY_PROTOCOL: &str = "/flotilla/id/1";
/// Protocol name of the Kademlia DHT, distinct from the public IPFS DHT.
pub const KAD_PROTOCOL: &str = "/flotilla/kad/1";

/// The control service's codec.
pub type ControlCodec =
    FrameCodec<control::Request, control::Response, { control::MAX_FRAME_BYTES }>;

/// The catalog anti-entropy service's codec.
pub type CatalogCodec =
    FrameCodec<catalog::Request, catalog::Response, { catalog::MAX_MESSAGE_BYTES }>;

/// The jobs service's codec.
pub type JobsCodec = FrameCodec<jobs::Request, jobs::Response, { jobs::MAX_FRAME_BYTES }>;

/// The actors service's codec.
pub type ActorsCodec = FrameCodec<actors::Request, actors::Response, { actors::MAX_FRAME_BYTES }>;
/// The serving service's codec.
pub type ServingCodec = FrameCodec<
    flotilla_protocol::services::serving::Request,
    flotilla_protocol::services::serving::Response,
    { flotilla_protocol::services::serving::MAX_FRAME_BYTES },
>;
/// The data service's codec.
pub type DataCodec = FrameCodec<data::Request, data::Response, { data::MAX_FRAME_BYTES }>;

/// Every behaviour a node runs.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub limits: connection_limits::Behaviour,
    /// Present only when an allow-list is configured; refuses every other peer.
    pub allow: Toggle<allow_block_list::Behaviour<allow_block_list::AllowedPeers>>,
    /// Peers an operator has blocked at run time (a misbehaving node; also how tests partition
    /// a cluster): their connections are closed and refused until unblocked.
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub gossipsub: gossipsub::Behaviour,
    pub control: request_response::Behaviour<ControlCodec>,
    pub catalog: request_response::Behaviour<CatalogCodec>,
    pub jobs: request_response::Behaviour<JobsCodec>,
    pub actors: request_response::Behaviour<ActorsCodec>,
    pub serving: request_response::Behaviour<ServingCodec>,
    pub data: request_response::Behaviour<DataCodec>,
}

impl Behaviour {
    /// Builds the behaviours from the node's configuration.
    pub fn new(key: &Keypair, config: &NodeConfig, allowed: &[PeerId]) -> anyhow::Result<Self> {
        let peer_id = key.public().to_peer_id();

        let budget =
            InboundBudget::new(config.inbound_budget_bytes, config.connection_budget_bytes);
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.max_connections))
                .with_max_established_per_peer(Some(config.max_connections_per_peer))
                .with_max_pending_incoming(Some(config.max_connections / 2 + 1))
                .with_max_pending_outgoing(Some(config.max_connections / 2 + 1)),
        );

        let allow = if config.allow_peers.is_empty() {
            Toggle::from(None)
        } else {
            let mut b = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
            for p in allowed {
                b.allow_peer(*p);
            }
            Toggle::from(Some(b))
        };

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                .with_agent_version(format!("flotilla/{}", env!("CARGO_PKG_VERSION"))),
        );

        let ping = ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(5)));

        let mdns = if config.mdns {
            let cfg = mdns::Config {
                query_interval: config.mdns_query_interval,
                ..Default::default()
            };
            Toggle::from(Some(mdns::tokio::Behaviour::new(cfg, peer_id)?))
        } else {
            Toggle::from(None)
        };

        let mut kad = kad::Behaviour::with_config(
            peer_id,
            kad::store::MemoryStore::new(peer_id),
            kad::Config::new(StreamProtocol::new(KAD_PROTOCOL)),
        );
        // Nodes on private networks never confirm an external address, which would leave them
        // in client mode and unable to answer lookups; every Flotilla node is a full DHT member.
        kad.set_mode(Some(kad::Mode::Server));

        let gossip_config = gossipsub::ConfigBuilder::default()
            .heartbeat_interval(Duration::from_millis(500))
            .validation_mode(gossipsub::ValidationMode::Strict)
            // Messages are delivered to the application first and forwarded only once it has
            // validated them (sender matches signer, payload decodes within its cap).
            .validate_messages()
            // Room for the largest catalog delta; each topic's own cap is applied when the
            // bridge validates a message.
            .max_transmit_size(catalog::MAX_MESSAGE_BYTES + 1024)
            .build()
            .map_err(|e| anyhow::anyhow!("gossipsub configuration: {e}"))?;
        let gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )
        .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;

        let control = request_response::Behaviour::with_codec(
            ControlCodec::with_budget(control::SERVICE, budget.clone()),
            [(
                StreamProtocol::new(control::PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(256),
        );

        let catalog = request_response::Behaviour::with_codec(
            CatalogCodec::with_budget(catalog::SERVICE, budget.clone()),
            [(
                StreamProtocol::new(catalog::PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(64),
        );

        let jobs = request_response::Behaviour::with_codec(
            JobsCodec::with_budget(jobs::SERVICE, budget.clone()),
            [(
                StreamProtocol::new(jobs::PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(256),
        );

        let actors = request_response::Behaviour::with_codec(
            ActorsCodec::with_budget(actors::SERVICE, budget.clone()),
            [(
                StreamProtocol::new(actors::PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(256),
        );

        // Stream long polls are held up to `MAX_POLL_WAIT_MS`; the timeout leaves room beyond.
        let serving = request_response::Behaviour::with_codec(
            ServingCodec::with_budget(
                flotilla_protocol::services::serving::SERVICE,
                budget.clone(),
            ),
            [(
                StreamProtocol::new(flotilla_protocol::services::serving::PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout.max(Duration::from_secs(60)))
                .with_max_concurrent_streams(1024),
        );

        // Shard chunks and operation phases take longer than control calls: at least a minute.
        let data = request_response::Behaviour::with_codec(
            DataCodec::with_budget(data::SERVICE, budget.clone()),
            [(
                StreamProtocol::new(data::PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout.max(Duration::from_secs(60)))
                .with_max_concurrent_streams(64),
        );

        Ok(Self {
            actors,
            serving,
            data,
            blocked: allow_block_list::Behaviour::default(),
            jobs,
            catalog,
            limits,
            allow,
            identify,
            ping,
            mdns,
            kad,
            gossipsub,
            control,
        })
    }
}
