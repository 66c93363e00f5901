//! Messages of the `Catalog` actor.

use flotilla_protocol::catalog::{CatalogKey, Entry, RecordKind};
use flotilla_protocol::services::catalog::{Delta, Digest, SyncReply};
use flotilla_protocol::NodeId;
use ractor::RpcReplyPort;

use super::actor::{MergeSummary, Stats, WriteError};
use super::core::Write;

/// What the `Catalog` actor accepts. Callers use [`super::Handle`], never these directly.
#[derive(Debug)]
pub enum Msg {
    /// A local write: validated, applied, saved with `Durability::Sync`, then handed to the
    /// network; the reply comes only after the save.
    Write {
        key: CatalogKey,
        write: Write,
        reply: RpcReplyPort<Result<(), WriteError>>,
    },
    /// The entry under a key, tombstones included.
    Get {
        key: CatalogKey,
        reply: RpcReplyPort<Option<Entry>>,
    },
    /// Every entry (of one kind, if given) in key order, tombstones included.
    List {
        kind: Option<RecordKind>,
        reply: RpcReplyPort<Vec<(CatalogKey, Entry)>>,
    },
    /// The replica's digest, to start an anti-entropy round.
    Digest(RpcReplyPort<Digest>),
    /// A peer's digest: answered with the differing buckets and this replica's entries in them.
    AnswerSync {
        theirs: Digest,
        reply: RpcReplyPort<SyncReply>,
    },
    /// A peer's answer to this replica's digest: merged; the reply holds what to push back.
    CompleteSync {
        answer: SyncReply,
        reply: RpcReplyPort<(MergeSummary, Vec<Delta>)>,
    },
    /// Entries from a peer (gossip or a push): merged, applied entries saved buffered.
    Merge {
        delta: Delta,
        reply: RpcReplyPort<MergeSummary>,
    },
    /// Gossiped entries, each with the node that published (and signed) its message.
    MergePublished {
        entries: Vec<(CatalogKey, Entry, Option<NodeId>)>,
        reply: RpcReplyPort<MergeSummary>,
    },
    /// Counters and sizes for metrics.
    Stats(RpcReplyPort<Stats>),
    /// Removes the tombstones and finished jobs past the retention, as of `now_ms` (the wall
    /// clock when `None`), from the replica and the store; replies with how many, if asked.
    /// The actor sends itself one every [`super::actor::COMPACT_EVERY`].
    Compact {
        now_ms: Option<u64>,
        reply: Option<RpcReplyPort<usize>>,
    },
}
