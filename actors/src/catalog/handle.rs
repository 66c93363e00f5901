//! The typed API of the `Catalog` actor; every call has a deadline.

use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::catalog::{CatalogKey, Entry, JobRecord, Record, RecordKind};
use flotilla_protocol::services::catalog::{Delta, Digest, SyncReply};
use ractor::{Actor, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use super::actor::{Args, CatalogActor, MergeSummary, Stats, WriteError};
use super::core::{Config, Write};
use super::msg::Msg;
use crate::store::Store;
use crate::{Error, Result};

const ACTOR: &str = "catalog";

/// A cloneable handle to a running `Catalog` actor.
#[derive(Debug, Clone)]
pub struct Handle {
    actor: ActorRef<Msg>,
    call_deadline: Duration,
}

impl Handle {
    /// Spawns the actor (unnamed, so several nodes can live in one process), loading the
    /// replica from `store`. Deltas of local writes are sent on `outbox`.
    pub async fn spawn(
        config: Config,
        keys: super::Keys,
        store: Arc<dyn Store>,
        outbox: mpsc::Sender<Delta>,
    ) -> Result<(Handle, tokio::task::JoinHandle<()>)> {
        config.validate()?;
        let args = Args {
            config,
            keys,
            store,
            outbox,
        };
        let (actor, join) = Actor::spawn(
            None,
            CatalogActor {
                span: crate::task::actor_span("catalog", None),
            },
            args,
        )
        .await
        .map_err(|e| Error::Store(format!("catalog failed to start: {e}")))?;
        Ok((
            Handle {
                actor,
                call_deadline: Duration::from_secs(5),
            },
            join,
        ))
    }

    async fn call<T: Send + 'static>(&self, msg: impl FnOnce(RpcReplyPort<T>) -> Msg) -> Result<T> {
        crate::call::call(&self.actor, ACTOR, self.call_deadline, msg).await
    }

    async fn write(&self, key: CatalogKey, write: Write) -> std::result::Result<(), WriteError> {
        self.call(|reply| Msg::Write { key, write, reply }).await?
    }

    /// Writes a record under its own key; returns once it is on disk.
    pub async fn put(&self, record: Record) -> std::result::Result<(), WriteError> {
        self.write(record.key(), Write::Put(record)).await
    }

    /// Deletes the record under `key` (a tombstone); returns once it is on disk.
    pub async fn delete(&self, key: CatalogKey) -> std::result::Result<(), WriteError> {
        self.write(key, Write::Delete).await
    }

    /// Records a job, or its new owner, epoch or status; returns once it is on disk.
    pub async fn put_job(&self, record: JobRecord) -> std::result::Result<(), WriteError> {
        self.write(CatalogKey::job(&record.id), Write::Job(record))
            .await
    }

    /// The entry under `key`, tombstones included.
    pub async fn get(&self, key: CatalogKey) -> Result<Option<Entry>> {
        self.call(|reply| Msg::Get { key, reply }).await
    }

    /// Every entry (of `kind`, if given) in key order, tombstones included.
    pub async fn list(&self, kind: Option<RecordKind>) -> Result<Vec<(CatalogKey, Entry)>> {
        self.call(|reply| Msg::List { kind, reply }).await
    }

    /// The replica's digest.
    pub async fn digest(&self) -> Result<Digest> {
        self.call(Msg::Digest).await
    }

    /// Answers a peer's digest.
    pub async fn answer_sync(&self, theirs: Digest) -> Result<SyncReply> {
        self.call(|reply| Msg::AnswerSync { theirs, reply }).await
    }

    /// Merges a peer's answer to this replica's digest; returns the deltas to push back.
    pub async fn complete_sync(&self, answer: SyncReply) -> Result<(MergeSummary, Vec<Delta>)> {
        self.call(|reply| Msg::CompleteSync { answer, reply }).await
    }

    /// Merges entries from a peer.
    pub async fn merge(&self, delta: Delta) -> Result<MergeSummary> {
        self.call(|reply| Msg::Merge { delta, reply }).await
    }

    /// Merges gossiped entries, each with the node that published and signed its message (as
    /// the transport authenticated it; `None` when it did not): that node's own parts need no
    /// seal check.
    pub async fn merge_published(
        &self,
        entries: Vec<(CatalogKey, Entry, Option<flotilla_protocol::NodeId>)>,
    ) -> Result<MergeSummary> {
        self.call(|reply| Msg::MergePublished { entries, reply })
            .await
    }

    /// Compacts the replica as of wall time `now_ms` (tests; the actor compacts itself every
    /// [`super::actor::COMPACT_EVERY`] by the wall clock); how many entries went.
    pub async fn compact_at(&self, now_ms: u64) -> Result<usize> {
        self.call(|reply| Msg::Compact {
            now_ms: Some(now_ms),
            reply: Some(reply),
        })
        .await
    }

    /// Sizes and counters.
    pub async fn stats(&self) -> Result<Stats> {
        self.call(Msg::Stats).await
    }

    /// Stops the actor.
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}
