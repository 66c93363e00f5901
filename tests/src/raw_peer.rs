//! A bare libp2p peer that speaks Flotilla's transport but writes arbitrary bytes on a
//! request-response protocol: the hostile client of the bad-input tests (with the cluster key,
//! as a member) and of the admission tests (without it).

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::pnet::PreSharedKey;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};

/// Writes requests verbatim and reads responses up to a small bound.
#[derive(Debug, Clone, Default)]
pub struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.take(1 << 20).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.take(16 << 20).read_to_end(&mut buf).await?;
        if buf.is_empty() {
            // The node closed the stream without answering: that is a refusal, not a reply.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream closed without a response",
            ));
        }
        Ok(buf)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await?;
        io.flush().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&res).await
    }
}

/// What happened to one raw request.
#[derive(Debug)]
pub enum RawOutcome {
    /// The node answered with these bytes.
    Response(Vec<u8>),
    /// The request failed (stream reset, connection closed, ...).
    Failed(String),
}

/// A hostile peer.
pub struct RawPeer {
    swarm: Swarm<request_response::Behaviour<RawCodec>>,
}

fn behaviour(protocol: &'static str) -> request_response::Behaviour<RawCodec> {
    request_response::Behaviour::with_codec(
        RawCodec,
        [(StreamProtocol::new(protocol), ProtocolSupport::Outbound)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
    )
}

impl RawPeer {
    /// A new peer with a fresh identity and no cluster key, speaking on `protocol`: plain
    /// TCP + Noise + yamux, which only an open node accepts.
    pub fn new(protocol: &'static str) -> anyhow::Result<RawPeer> {
        let swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| behaviour(protocol))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
            .build();
        Ok(RawPeer { swarm })
    }

    /// A new peer with a fresh identity that holds the cluster key `psk`: a hostile member,
    /// on the nodes' own transport (TCP + pnet + Noise + yamux).
    pub fn with_key(protocol: &'static str, psk: PreSharedKey) -> anyhow::Result<RawPeer> {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let transport = flotilla_node::net::transport::build(&key, Some(psk))?;
        let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|_| transport)?
            .with_behaviour(|_| behaviour(protocol))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
            .build();
        Ok(RawPeer { swarm })
    }

    /// Connects to `addr` (which ends in `/p2p/<id>`) and waits for the connection.
    pub async fn connect(&mut self, addr: Multiaddr, peer: PeerId) -> anyhow::Result<()> {
        dial_and_wait(&mut self.swarm, addr, peer).await
    }

    /// Sends `bytes` as one request and reports the outcome (within 10 s).
    pub async fn send(&mut self, peer: PeerId, bytes: Vec<u8>) -> anyhow::Result<RawOutcome> {
        let id = self.swarm.behaviour_mut().send_request(&peer, bytes);
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match self.swarm.select_next_some().await {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    }) if request_id == id => return Ok(RawOutcome::Response(response)),
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                        request_id,
                        error,
                        ..
                    }) if request_id == id => return Ok(RawOutcome::Failed(error.to_string())),
                    _ => {}
                }
            }
        })
        .await?
    }

    /// Whether a connection to `peer` is open, after processing pending events for `settle`.
    pub async fn is_connected_after(&mut self, peer: PeerId, settle: Duration) -> bool {
        let _ = tokio::time::timeout(settle, async {
            loop {
                let _ = self.swarm.select_next_some().await;
            }
        })
        .await;
        self.swarm.is_connected(&peer)
    }
}

/// Dials `addr` (ending in `/p2p/<peer>`) and drives `swarm` until the connection to `peer` is
/// up, at most 10 s; the test peers' `connect`.
pub async fn dial_and_wait<B: libp2p::swarm::NetworkBehaviour>(
    swarm: &mut libp2p::Swarm<B>,
    addr: Multiaddr,
    peer: PeerId,
) -> anyhow::Result<()> {
    swarm.dial(addr)?;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer => {
                    return Ok(())
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    anyhow::bail!("dial failed: {error}")
                }
                _ => {}
            }
        }
    })
    .await?
}
