//! The authenticated, multiplexed transport.
//!
//! With the cluster key (every node but an open one, see [`crate::admission`]): TCP only,
//! wrapped in a pnet handshake before Noise, because QUIC cannot carry the private-network
//! layer. Without a key (`--open`): QUIC (its own TLS 1.3 handshake) or TCP + Noise + yamux. DNS resolution wraps both so `--join /dns4/host/tcp/port` works.

use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, OrTransport};
use libp2p::core::upgrade::Version;
use libp2p::futures::future::Either;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::{dns, noise, quic, tcp, yamux, PeerId, Transport};

/// How long a connection may take to be authenticated and multiplexed.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds the node's transport.
pub fn build(
    key: &Keypair,
    psk: Option<PreSharedKey>,
) -> std::io::Result<Boxed<(PeerId, StreamMuxerBox)>> {
    let tcp_config = tcp::Config::default().nodelay(true);
    let noise = noise::Config::new(key).map_err(std::io::Error::other)?;
    let mut yamux_config = yamux::Config::default();
    // Request-response opens one stream per request; allow many in flight on one connection.
    yamux_config.set_max_num_streams(512);

    let transport = match psk {
        Some(psk) => {
            let tcp = tcp::tokio::Transport::new(tcp_config)
                .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                .upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux_config)
                .timeout(UPGRADE_TIMEOUT)
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
            dns::tokio::Transport::system(tcp)?.boxed()
        }
        None => {
            let tcp = tcp::tokio::Transport::new(tcp_config)
                .upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux_config)
                .timeout(UPGRADE_TIMEOUT);
            let quic = quic::tokio::Transport::new(quic::Config::new(key));
            let both = OrTransport::new(quic, tcp).map(|either, _| match either {
                Either::Left((peer, muxer)) => (peer, StreamMuxerBox::new(muxer)),
                Either::Right((peer, muxer)) => (peer, StreamMuxerBox::new(muxer)),
            });
            dns::tokio::Transport::system(both)?.boxed()
        }
    };
    Ok(transport)
}

/// Reads a swarm key in the usual `/key/swarm/psk/1.0.0/` text format.
pub fn read_swarm_key(path: &std::path::Path) -> anyhow::Result<PreSharedKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read swarm key {}: {e}", path.display()))?;
    text.parse::<PreSharedKey>().map_err(|e| {
        anyhow::anyhow!(
            "swarm key {} is not a valid /key/swarm/psk/1.0.0/ key: {e}",
            path.display()
        )
    })
}
