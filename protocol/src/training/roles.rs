//! What a run's coordinator sends a node to spawn one of its parameter-server shards or
//! trainers: the arguments of the `param_server` and `trainer` roles (the bytes of an actors
//! `Spawn` request).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AdaptiveClip, Consistency, LrSchedule, Precision, WorkerId};
use crate::jobs::JobId;
use crate::NodeId;

/// The learning-rate plan as it travels (the servers apply it): linear warmup to `peak`, then
/// linear or cosine decay to zero at `total` updates (at or below `warmup`: the rate stays at
/// the peak).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrArgs {
    pub peak: f32,
    pub warmup: u64,
    pub total: u64,
    pub decay: LrSchedule,
}

/// What a shard is spawned from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardArgs {
    pub job: JobId,
    pub shard: u32,
    pub consistency: Consistency,
    pub max_consecutive_nonfinite: u32,
    pub lr: LrArgs,
    pub save_every: u64,
    /// The job's clipping (`args.clip_norm`, `args.adaptive_clip`); shards apply it in sync
    /// mode, to each step's mean gradient.
    pub clip_norm: Option<f32>,
    pub adaptive_clip: Option<AdaptiveClip>,
    /// The optimizer configuration (AdamW or SGD with their settings) as JSON: it is an
    /// internally tagged enum, which bincode cannot decode.
    pub optimizer_json: String,
    /// The shard's range of the initial parameters.
    #[serde(with = "crate::floats")]
    pub init: Vec<f32>,
}

impl ShardArgs {
    /// These settings for shard `shard` starting from `init`.
    pub fn for_shard(&self, shard: u32, init: Vec<f32>) -> ShardArgs {
        ShardArgs {
            shard,
            init,
            ..self.clone()
        }
    }
}

/// What a trainer is spawned from: its job and worker id, where the shards and the
/// coordinator are, the model and how to read records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerArgs {
    pub job: JobId,
    pub worker: WorkerId,
    pub sync: bool,
    pub precision: Precision,
    /// The job's clipping; trainers apply it in async and ssp mode, to each gradient (in sync
    /// mode the shards clip).
    pub clip_norm: Option<f32>,
    pub adaptive_clip: Option<AdaptiveClip>,
    pub lr: LrArgs,
    /// The model, as the spawning node's model code describes it (its gradient factory reads
    /// it; the transport does not look inside).
    #[serde(with = "serde_bytes")]
    pub model: Vec<u8>,
    /// Label text → class id.
    pub classes: BTreeMap<String, u32>,
    pub text_field: String,
    pub label_field: String,
    pub total_params: u64,
    /// Shard `i` of the job runs on `shard_hosts[i]`.
    pub shard_hosts: Vec<NodeId>,
    pub coordinator: NodeId,
    pub call_deadline_ms: u64,
    pub pull_deadline_ms: u64,
}
