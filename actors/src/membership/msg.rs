//! Messages of the `Membership` actor.

use flotilla_protocol::{MemberView, NodeId, NodeInfo};
use ractor::RpcReplyPort;

/// What the `Membership` actor accepts. Callers use [`super::Handle`], never these directly.
#[derive(Debug)]
pub enum Msg {
    /// A heartbeat received from a peer (already validated by the network layer).
    Heartbeat(NodeInfo),
    /// A peer announced a graceful leave.
    Leave { id: NodeId, incarnation: u64 },
    /// This node's own, refreshed heartbeat.
    UpdateSelf(NodeInfo),
    /// Periodic clock tick that drives suspicion and death.
    Tick,
    /// Returns the current view, in id order.
    View(RpcReplyPort<Vec<MemberView>>),
}
