//! Networking: the libp2p swarm and its composition into the node.
//!
//! - [`transport`]: TCP + pnet + Noise + yamux with the cluster key; QUIC or TCP + Noise +
//!   yamux for an open mesh.
//! - [`behaviour`]: identify, ping, mDNS, Kademlia, gossipsub, request-response, limits.
//! - [`codec`]: the size-capped request-response codec.
//! - [`budget`]: the byte budgets inbound frames are paid from (per connection, per node).
//! - [`bridge`]: the event loop that owns the swarm and connects it to the actors.
//! - [`catalog_sync`]: the catalog's side of the bridge (delta gossip, the anti-entropy
//!   service) and the periodic anti-entropy rounds.
//! - [`actors_net`]: the actors service (`/flotilla/actors/1`): named actors, remote spawn and
//!   monitoring, answered by the node's `remote::Host`.
//! - [`data_net`]: the data service (`/flotilla/data/1`), its worker, and [`data_net::NetData`],
//!   the data cores' `DataPeers` over the mesh.
//! - [`jobs_net`]: the jobs service (`/flotilla/jobs/1`) and the worker that answers it.
//! - [`serving_net`]: the serving service (`/flotilla/serving/1`), its worker and the routers'
//!   transport.
//! - [`rpc`]: what every request-response service shares (pending requests, event sorting).
//! - [`mesh`]: the [`flotilla_actors::mesh::Mesh`] implementation over the bridge.

pub mod actors_net;
pub mod behaviour;
pub mod bridge;
pub mod budget;
pub mod catalog_sync;
pub mod codec;
pub mod data_net;
pub mod jobs_net;
pub mod mesh;
pub mod rpc;
pub mod serving_net;
pub mod transport;

use std::sync::Arc;

use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;
use libp2p::Swarm;
use prometheus_client::registry::Registry;

use crate::config::NodeConfig;
use behaviour::Behaviour;

/// Builds the swarm: transport, bandwidth metrics registered in `registry`, behaviours. `psk`
/// is the cluster key ([`crate::admission`]); `None` only for an open mesh.
pub fn build_swarm(
    key: &Keypair,
    config: &NodeConfig,
    psk: Option<PreSharedKey>,
    registry: &mut Registry,
) -> anyhow::Result<Swarm<Behaviour>> {
    let allowed = config.allowed_peers();
    let transport = transport::build(key, psk)?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_other_transport(|_| transport)?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key| {
            Behaviour::new(key, config, &allowed).map_err(|e| {
                Box::new(std::io::Error::other(e.to_string()))
                    as Box<dyn std::error::Error + Send + Sync>
            })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(std::time::Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

/// Shared pointer used by HTTP handlers to read metrics.
pub type SharedRegistry = Arc<Registry>;
