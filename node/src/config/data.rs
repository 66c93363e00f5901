//! `[node.data]`: the data stage's settings on a node.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the data stage on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Replicas of each shard.
    pub replication: usize,
    /// Records per shard of an upload unless the upload says otherwise.
    pub records_per_shard: usize,
    /// Body bytes per shard of an upload.
    pub bytes_per_shard: usize,
    /// Deadline of each call to a shard holder.
    #[serde(with = "humantime_serde")]
    pub call_deadline: Duration,
    /// How often this node checks the replication of the versions it is responsible for.
    #[serde(with = "humantime_serde")]
    pub rereplicate_every: Duration,
    /// Shards an operation works on at once.
    pub max_in_flight: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            replication: flotilla_actors::data::replication::DEFAULT_REPLICATION,
            records_per_shard: flotilla_actors::data::upload::DEFAULT_RECORDS_PER_SHARD,
            bytes_per_shard: flotilla_actors::data::upload::DEFAULT_BYTES_PER_SHARD,
            call_deadline: Duration::from_secs(60),
            rereplicate_every: Duration::from_secs(2),
            max_in_flight: 4,
        }
    }
}

impl Settings {
    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.replication == 0 || self.records_per_shard == 0 || self.max_in_flight == 0 {
            return Err(
                "replication, records_per_shard and max_in_flight must be at least 1".into(),
            );
        }
        if self.bytes_per_shard < 64 {
            return Err("bytes_per_shard must be at least 64".into());
        }
        if self.call_deadline.is_zero() {
            return Err("call_deadline must be greater than zero".into());
        }
        if self.rereplicate_every < Duration::from_millis(100) {
            return Err("rereplicate_every must be at least 100ms".into());
        }
        Ok(())
    }
}
