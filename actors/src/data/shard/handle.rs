//! The typed API of the `DataShard` actor; every call has the configured deadline.

use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::services::data::{Decision, ShardId, ShardMeta, Summary};
use ractor::{Actor, ActorRef};

use super::actor::{Args, DataShard};
use super::msg::{ChunkReply, Msg};
use super::Config;
use crate::data::error::{Error, Result};
use crate::data::job::worker::ShardReport;
use crate::data::ops::Op;
use crate::data::record::Record;
use crate::store::Store;

const ACTOR: &str = "data shard";

/// A cloneable handle to a running `DataShard` actor.
#[derive(Debug, Clone)]
pub struct Handle {
    actor: ActorRef<Msg>,
    deadline: Duration,
    chunk_bytes: usize,
}

impl Handle {
    /// Spawns the actor over `store`.
    pub async fn spawn(
        store: Arc<dyn Store>,
        config: Config,
    ) -> Result<(Handle, tokio::task::JoinHandle<()>)> {
        config.validate()?;
        let deadline = config.call_timeout;
        let chunk_bytes = config.chunk_bytes;
        let (actor, join) = Actor::spawn(
            None,
            DataShard {
                span: crate::task::actor_span("data_shard", None),
            },
            Args { store, config },
        )
        .await
        .map_err(|e| {
            Error::Node(crate::Error::Store(format!(
                "data shard actor failed to start: {e}"
            )))
        })?;
        Ok((
            Handle {
                actor,
                deadline,
                chunk_bytes,
            },
            join,
        ))
    }

    /// The chunk size this holder stores and sends by default.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(ractor::RpcReplyPort<Result<T>>) -> Msg,
    ) -> Result<T> {
        crate::call::call(&self.actor, ACTOR, self.deadline, f)
            .await
            .map_err(Error::Node)?
    }

    /// Stores a whole shard; refused if `body` does not hash to `meta.hash`.
    pub async fn put(&self, meta: ShardMeta, body: Vec<u8>) -> Result<()> {
        self.call(|reply| Msg::Put { meta, body, reply }).await
    }

    /// Stores one chunk of a shard; `true` once the shard is complete and verified.
    pub async fn put_chunk(
        &self,
        meta: ShardMeta,
        chunk: u32,
        chunks: u32,
        bytes: Vec<u8>,
    ) -> Result<bool> {
        self.call(|reply| Msg::PutChunk {
            meta,
            chunk,
            chunks,
            bytes,
            reply,
        })
        .await
    }

    /// Chunk `chunk` of a held shard cut at `chunk_bytes`, with the shard's metadata and its
    /// chunk count.
    pub async fn get_chunk(
        &self,
        shard: ShardId,
        chunk: u32,
        chunk_bytes: usize,
    ) -> Result<ChunkReply> {
        self.call(|reply| Msg::GetChunk {
            shard,
            chunk,
            chunk_bytes,
            reply,
        })
        .await
    }

    /// Records `offset..offset + limit` of a held shard in upload order, and its record count.
    pub async fn read_range(
        &self,
        shard: ShardId,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<Record>, u64)> {
        self.call(|reply| Msg::ReadRange {
            shard,
            offset,
            limit,
            reply,
        })
        .await
    }

    /// Every record of a held shard, in upload order.
    pub async fn records(&self, shard: ShardId) -> Result<Vec<Record>> {
        Ok(self.read_range(shard, 0, u32::MAX).await?.0)
    }

    /// The held shards of `dataset` (or all).
    pub async fn list(&self, dataset: Option<String>) -> Result<Vec<ShardMeta>> {
        self.call(|reply| Msg::List { dataset, reply }).await
    }

    /// Deletes one shard; whether it was held.
    pub async fn delete_shard(&self, shard: ShardId) -> Result<bool> {
        self.call(|reply| Msg::DeleteShard { shard, reply }).await
    }

    /// Deletes every held shard of `dataset@version`; how many there were.
    pub async fn delete_version(&self, dataset: String, version: u64) -> Result<u32> {
        self.call(|reply| Msg::DeleteVersion {
            dataset,
            version,
            reply,
        })
        .await
    }

    /// Phase 1 of an operation chain on a held shard.
    pub async fn summarize(
        &self,
        input: ShardId,
        ops: Vec<Op>,
        decisions: Vec<Decision>,
    ) -> Result<Summary> {
        self.call(|reply| Msg::Summarize {
            input,
            ops,
            decisions,
            reply,
        })
        .await
    }

    /// Phase 3: applies the chain to a held shard and stores the result here as `output`.
    pub async fn apply(
        &self,
        input: ShardId,
        ops: Vec<Op>,
        decisions: Vec<Decision>,
        output: ShardId,
    ) -> Result<(ShardMeta, ShardReport)> {
        self.call(|reply| Msg::Apply {
            input,
            ops,
            decisions,
            output,
            reply,
        })
        .await
    }

    /// Stops the actor.
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}
