//! A member that opens many request streams and trickles a frame into each without ever
//! finishing it (a slow-loris on the mesh): what the inbound byte budgets are tested against.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::pnet::PreSharedKey;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};

/// One stalled request: a length prefix announcing `announced` bytes, `send` bytes of body,
/// then nothing for `hold`.
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    pub announced: u64,
    pub send: u64,
    pub hold: Duration,
}

/// Writes stalled requests, counting the body bytes the transport took.
#[derive(Debug, Clone, Default)]
pub struct StallCodec {
    written: Arc<AtomicU64>,
}

static CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];

impl request_response::Codec for StallCodec {
    type Protocol = StreamProtocol;
    type Request = Stall;
    type Response = ();

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> io::Result<Stall> {
        Err(io::Error::other("this peer only sends"))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<()> {
        let mut sink = Vec::new();
        io.take(1 << 20).read_to_end(&mut sink).await?;
        Ok(())
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Stall,
    ) -> io::Result<()> {
        io.write_all(&req.announced.to_be_bytes()).await?;
        let mut left = req.send;
        while left > 0 {
            let n = left.min(CHUNK.len() as u64) as usize;
            io.write_all(&CHUNK[..n]).await?;
            self.written.fetch_add(n as u64, Ordering::Relaxed);
            left -= n as u64;
        }
        io.flush().await?;
        tokio::time::sleep(req.hold).await;
        Ok(())
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: (),
    ) -> io::Result<()> {
        Ok(())
    }
}

/// A member of the cluster that floods one node with stalled requests.
pub struct StallPeer {
    swarm: Swarm<request_response::Behaviour<StallCodec>>,
    written: Arc<AtomicU64>,
}

impl StallPeer {
    /// A new member (fresh identity, the cluster key `psk`) speaking on `protocol`.
    pub fn with_key(protocol: &'static str, psk: PreSharedKey) -> anyhow::Result<StallPeer> {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let transport = flotilla_node::net::transport::build(&key, Some(psk))?;
        let codec = StallCodec::default();
        let written = codec.written.clone();
        let behaviour = request_response::Behaviour::with_codec(
            codec,
            [(StreamProtocol::new(protocol), ProtocolSupport::Outbound)],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(120))
                .with_max_concurrent_streams(1024),
        );
        let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|_| transport)?
            .with_behaviour(|_| behaviour)?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        Ok(StallPeer { swarm, written })
    }

    /// Connects to `addr` (ending in `/p2p/<id>`) and waits for the connection.
    pub async fn connect(&mut self, addr: Multiaddr, peer: PeerId) -> anyhow::Result<()> {
        crate::raw_peer::dial_and_wait(&mut self.swarm, addr, peer).await
    }

    /// Body bytes written so far, all streams together.
    pub fn written(&self) -> Arc<AtomicU64> {
        self.written.clone()
    }

    /// Opens `streams` stalled requests to `peer` and keeps driving them in a task (abort it
    /// to drop the peer).
    pub fn flood(
        mut self,
        peer: PeerId,
        streams: usize,
        stall: Stall,
    ) -> tokio::task::JoinHandle<()> {
        for _ in 0..streams {
            self.swarm.behaviour_mut().send_request(&peer, stall);
        }
        tokio::spawn(async move {
            loop {
                let _ = self.swarm.select_next_some().await;
            }
        })
    }
}
