//! Byte budgets for inbound frames: what a peer can make this node hold in memory.
//!
//! The codec checks every frame's length prefix against its service's cap before it allocates,
//! but a cap alone still lets one connection open hundreds of streams that each announce a
//! full-cap frame and then trickle it in: every stream would hold its buffer until the frame
//! completes. A frame's buffer is therefore paid for before it is allocated, from two pools:
//!
//! - the **connection's budget**: every frame read on one connection (requests and responses,
//!   all services) draws on it, so one peer's streams queue behind each other once it is spent;
//! - the **node's budget**, shared by all connections: frames larger than [`SMALL_FRAME_BYTES`]
//!   draw on it as well, so a crowd of connections cannot hold more than it either.
//!
//! Small frames (pings, catalog digests, most requests) draw only on their connection's budget,
//! so a flood of large frames from other peers never starves them. A frame waits for its bytes
//! at most [`BUDGET_WAIT`]; then its stream fails (an I/O error, not a malformed frame: a busy
//! node is not the sender's fault). The bytes return when the frame is decoded.
//!
//! What the budgets do not cover: the transport's own receive window (yamux gives every open
//! stream 256 KiB before anyone reads it), bounded by the streams a connection may open.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Frames up to this size draw only on their connection's budget.
pub const SMALL_FRAME_BYTES: usize = 64 * 1024;

/// How long a frame waits for its bytes before its stream is failed.
pub const BUDGET_WAIT: Duration = Duration::from_secs(10);

/// The budgets of one node.
#[derive(Debug)]
pub struct InboundBudget {
    node: Arc<Semaphore>,
    per_connection: usize,
}

impl InboundBudget {
    /// A node budget of `node_bytes`, and `per_connection` bytes for each connection.
    pub fn new(node_bytes: usize, per_connection: usize) -> Arc<Self> {
        Arc::new(Self {
            node: Arc::new(Semaphore::new(node_bytes)),
            per_connection,
        })
    }

    /// The budget of a new connection.
    pub fn connection(self: &Arc<Self>) -> ConnectionBudget {
        ConnectionBudget {
            node: self.clone(),
            own: Arc::new(Semaphore::new(self.per_connection)),
        }
    }

    /// Bytes of the node's budget not held by any frame now.
    pub fn node_available(&self) -> usize {
        self.node.available_permits()
    }
}

/// The budget of one connection, shared by all its streams.
#[derive(Debug, Clone)]
pub struct ConnectionBudget {
    node: Arc<InboundBudget>,
    own: Arc<Semaphore>,
}

/// Bytes held for one frame; returned when dropped.
#[derive(Debug)]
pub struct Charge {
    _own: OwnedSemaphorePermit,
    _node: Option<OwnedSemaphorePermit>,
}

impl ConnectionBudget {
    /// Holds `len` bytes for a frame of `service`, waiting up to `wait` for them.
    pub async fn charge(&self, service: &str, len: usize, wait: Duration) -> io::Result<Charge> {
        let over = |whose: &str| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no room for a {len}-byte {service} frame in the {whose} budget"),
            )
        };
        let bytes = u32::try_from(len).map_err(|_| over("connection's"))?;
        let deadline = tokio::time::Instant::now() + wait;
        let own = tokio::time::timeout_at(deadline, self.own.clone().acquire_many_owned(bytes))
            .await
            .map_err(|_| over("connection's"))?
            .map_err(|_| over("connection's"))?;
        let node = if len > SMALL_FRAME_BYTES {
            let node = self.node.node.clone();
            Some(
                tokio::time::timeout_at(deadline, node.acquire_many_owned(bytes))
                    .await
                    .map_err(|_| over("node's"))?
                    .map_err(|_| over("node's"))?,
            )
        } else {
            None
        };
        Ok(Charge {
            _own: own,
            _node: node,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_waits_once_its_budget_is_held_and_others_do_not() {
        let budget = InboundBudget::new(10 << 20, 4 << 20);
        let (a, b) = (budget.connection(), budget.connection());
        let wait = Duration::from_millis(50);
        let held = a.charge("t", 3 << 20, wait).await.unwrap();
        assert_eq!(budget.node_available(), 7 << 20);
        let e = a.charge("t", 2 << 20, wait).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("connection's"), "{e}");
        // Another connection still has its own.
        let other = b.charge("t", 4 << 20, wait).await.unwrap();
        drop(held);
        assert!(a.charge("t", 2 << 20, wait).await.is_ok());
        drop(other);
        assert_eq!(budget.node_available(), 10 << 20);
    }

    #[tokio::test]
    async fn large_frames_share_the_node_budget_and_small_ones_skip_it() {
        let budget = InboundBudget::new(5 << 20, 4 << 20);
        let (a, b) = (budget.connection(), budget.connection());
        let wait = Duration::from_millis(50);
        let _held = a.charge("t", 4 << 20, wait).await.unwrap();
        let e = b.charge("t", 2 << 20, wait).await.unwrap_err();
        assert!(e.to_string().contains("node's"), "{e}");
        // The failed charge gave its connection's bytes back.
        assert!(b.charge("t", SMALL_FRAME_BYTES, wait).await.is_ok());
        let small = b.charge("t", SMALL_FRAME_BYTES, wait).await.unwrap();
        assert_eq!(
            budget.node_available(),
            1 << 20,
            "small frames skip the node budget"
        );
        drop(small);
    }
}
