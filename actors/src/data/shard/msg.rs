//! Messages of the `DataShard` actor. Callers use [`super::Handle`].

use flotilla_protocol::services::data::{Decision, ShardId, ShardMeta, Summary};
use ractor::RpcReplyPort;

use crate::data::error::Result;
use crate::data::job::worker::ShardReport;
use crate::data::ops::Op;
use crate::data::record::Record;

/// A chunk of a body with the shard's metadata and the chunk count.
pub type ChunkReply = (ShardMeta, u32, Vec<u8>);

/// What the `DataShard` actor accepts.
#[derive(Debug)]
pub enum Msg {
    /// Store a whole shard after checking its hash.
    Put {
        meta: ShardMeta,
        body: Vec<u8>,
        reply: RpcReplyPort<Result<()>>,
    },
    /// Store chunk `chunk` of `chunks`; chunks arrive in order from 0 (chunk 0 restarts the
    /// upload). Replies `true` once the last chunk made a verified, stored shard.
    PutChunk {
        meta: ShardMeta,
        chunk: u32,
        chunks: u32,
        bytes: Vec<u8>,
        reply: RpcReplyPort<Result<bool>>,
    },
    /// Chunk `chunk` of a held shard's verified body, cut at `chunk_bytes`.
    GetChunk {
        shard: ShardId,
        chunk: u32,
        chunk_bytes: usize,
        reply: RpcReplyPort<Result<ChunkReply>>,
    },
    /// Records `offset..offset + limit` in stored order, and the shard's record count.
    ReadRange {
        shard: ShardId,
        offset: u64,
        limit: u32,
        reply: RpcReplyPort<Result<(Vec<Record>, u64)>>,
    },
    /// The metadata of the held shards of one dataset, or of all.
    List {
        dataset: Option<String>,
        reply: RpcReplyPort<Result<Vec<ShardMeta>>>,
    },
    /// Delete one shard; whether it was held.
    DeleteShard {
        shard: ShardId,
        reply: RpcReplyPort<Result<bool>>,
    },
    /// Delete every held shard of a version; how many.
    DeleteVersion {
        dataset: String,
        version: u64,
        reply: RpcReplyPort<Result<u32>>,
    },
    /// Phase 1 of an operation on a held shard.
    Summarize {
        input: ShardId,
        ops: Vec<Op>,
        decisions: Vec<Decision>,
        reply: RpcReplyPort<Result<Summary>>,
    },
    /// Phase 3 of an operation: the output shard is stored here.
    Apply {
        input: ShardId,
        ops: Vec<Op>,
        decisions: Vec<Decision>,
        output: ShardId,
        reply: RpcReplyPort<Result<(ShardMeta, ShardReport)>>,
    },
}
