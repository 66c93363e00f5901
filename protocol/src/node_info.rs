//! The membership heartbeat ([`NodeInfo`]) and the view a node keeps of its peers.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// One GPU as seen by its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuSummary {
    pub name: String,
    pub memory_bytes: u64,
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
}

/// What the node found when it looked for GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GpuState {
    /// The CUDA driver loaded; these GPUs are present (possibly none).
    Gpus(Vec<GpuSummary>),
    /// No CUDA driver library on this machine.
    NoCudaDriver,
    /// The driver loaded but reported an error.
    DriverError(String),
}

impl GpuState {
    /// Number of usable GPUs.
    pub fn count(&self) -> usize {
        match self {
            GpuState::Gpus(g) => g.len(),
            _ => 0,
        }
    }

    /// A short text for tables.
    pub fn summary(&self) -> String {
        match self {
            GpuState::Gpus(g) if g.is_empty() => "0".to_string(),
            GpuState::Gpus(g) => {
                let mem: u64 = g.iter().map(|x| x.memory_bytes).sum();
                format!("{}× {} ({} GiB)", g.len(), g[0].name, mem >> 30)
            }
            GpuState::NoCudaDriver => "no CUDA driver".to_string(),
            GpuState::DriverError(e) => format!("driver error: {e}"),
        }
    }
}

/// The heartbeat every node publishes on the membership topic.
///
/// `(incarnation, seq)` orders heartbeats of one node: `incarnation` is fixed for a process's
/// life (its start time in milliseconds), `seq` counts heartbeats within it, so a restarted node
/// is recognised as newer even though its counter starts again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    pub incarnation: u64,
    pub seq: u64,
    /// libp2p multiaddrs the node listens on.
    pub listen_addrs: Vec<String>,
    /// The node's HTTP API address, if it serves one.
    pub api_addr: Option<String>,
    pub version: String,
    pub cores: u32,
    pub ram_bytes: u64,
    pub gpus: GpuState,
    /// Measured compute rate from the start-up matmul probe, in GFLOP/s.
    pub compute_score: f64,
    /// One-minute load average divided by the number of cores (1.0 = fully busy).
    pub load: f64,
    /// The serving replicas loaded on this node and ready for requests, each as
    /// `<deployment>/<model version hash>`: routers send requests only to these.
    pub ready_replicas: Vec<String>,
    /// Why the node takes no new work (its store failed a write), or `None` when healthy.
    /// Placement leaves such nodes out.
    #[serde(default)]
    pub unhealthy: Option<String>,
}

impl NodeInfo {
    /// The entry of [`NodeInfo::ready_replicas`] for `deployment` serving `model_hash`.
    pub fn ready_key(deployment: &str, model_hash: &str) -> String {
        format!("{deployment}/{model_hash}")
    }
}

impl NodeInfo {
    /// Whether `self` is a newer heartbeat of the same node than `other`.
    pub fn newer_than(&self, other: &NodeInfo) -> bool {
        (self.incarnation, self.seq) > (other.incarnation, other.seq)
    }
}

/// A member's state in a node's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Heard from within the suspicion timeout.
    Alive,
    /// Silent for longer than the suspicion timeout.
    Suspect,
    /// Silent for longer than the death timeout.
    Dead,
    /// Announced a graceful leave.
    Left,
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        })
    }
}

/// One row of a node's membership view, as served by `GET /api/v1/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub info: NodeInfo,
    pub state: MemberState,
    /// Milliseconds since the viewing node last heard from this member.
    pub last_seen_ms_ago: u64,
    /// Whether this row is the viewing node itself.
    pub is_self: bool,
}
