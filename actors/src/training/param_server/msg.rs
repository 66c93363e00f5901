//! Messages of the `ParamServer` actor.

use flotilla_protocol::services::training::PushOutcome;
use flotilla_protocol::training::{GradPayload, WorkerId};
use ractor::RpcReplyPort;

use super::core::{Snapshot, Stats};
use super::Pulled;
use crate::training::error::Result;

/// What a `ParamServer` accepts. Callers use [`super::Handle`].
#[derive(Debug)]
pub enum Msg {
    /// Count a worker among the active ones.
    Join {
        worker: WorkerId,
        reply: RpcReplyPort<Result<()>>,
    },
    /// Stop counting a worker (see [`super::core::Shard::leave`]).
    Leave {
        worker: WorkerId,
        drop_pending: bool,
        reply: RpcReplyPort<()>,
    },
    /// Parameters `range` (offset, len; the whole range when `None`), answered once the shard
    /// is ready for this worker (see [`super::core::Shard::pull_ready`]).
    Pull {
        worker: WorkerId,
        after: Option<u64>,
        range: Option<(u64, u64)>,
        reply: RpcReplyPort<Result<Pulled>>,
    },
    /// A gradient for the shard's range.
    Push {
        worker: WorkerId,
        step: u64,
        samples: u32,
        grad: GradPayload,
        reply: RpcReplyPort<Result<PushOutcome>>,
    },
    /// Sync with clipping: the global gradient norm of step `step` (see
    /// [`super::core::Shard::finish`]).
    Finish {
        step: u64,
        norm: f32,
        reply: RpcReplyPort<Result<()>>,
    },
    /// The state a checkpoint keeps.
    Snapshot { reply: RpcReplyPort<Snapshot> },
    /// The version and the parameters as they stand (no optimizer state), for a reader.
    Peek {
        reply: RpcReplyPort<(u64, Vec<f32>)>,
    },
    /// The state at version `step` for a checkpoint (see
    /// [`super::core::Shard::snapshot_at`]).
    SnapshotAt {
        step: u64,
        reply: RpcReplyPort<Result<Snapshot>>,
    },
    /// Replace the state with a snapshot.
    Restore {
        snapshot: Box<Snapshot>,
        reply: RpcReplyPort<Result<()>>,
    },
    /// The shard's counters.
    Stats { reply: RpcReplyPort<Stats> },
}
