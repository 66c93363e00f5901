//! The `Catalog` actor: a thin shell around the [`Catalog`] CRDT that reads the wall clock,
//! persists through the [`Store`] boundary and hands local writes to the network.
//!
//! Local writes are saved with [`Durability::Sync`] before they are applied and acknowledged
//! (a write the store refuses leaves the replica as it was); entries from
//! peers are saved buffered, since anti-entropy brings them back after a crash. Store calls are
//! made on the actor's task: they are short single-row writes, and keeping them in order with
//! the merges means the store never holds an entry older than one already acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use crate::clock::wall_ms;

use flotilla_protocol::catalog::{CatalogKey, Entry};
use flotilla_protocol::services::catalog::Delta;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::core::{Catalog as Crdt, Config, MergeReport};
use super::msg::Msg;
use crate::store::{Column, Durability, Store};

/// Why a local write was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The CRDT refused it (invalid fields, wrong key, stale epoch, full, too large).
    #[error(transparent)]
    Refused(#[from] super::core::Error),
    /// It could not be saved; the replica is unchanged (the write is saved before it is
    /// applied) and it was not acknowledged, so the caller must retry.
    #[error("write to {key} not saved: {cause}")]
    Store {
        key: CatalogKey,
        cause: crate::Error,
    },
    /// The actor did not answer.
    #[error(transparent)]
    Unavailable(#[from] crate::Error),
}

/// What merging entries from a peer did, for the caller's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeSummary {
    /// Entries that changed this replica.
    pub applied: usize,
    /// Entries already known or older.
    pub unchanged: usize,
    /// One reason label ([`super::Rejection::reason`]) per refused entry.
    pub rejected: Vec<&'static str>,
}

impl MergeSummary {
    fn of(report: &MergeReport) -> Self {
        Self {
            applied: report.applied.len(),
            unchanged: report.unchanged,
            rejected: report.rejected.iter().map(|(_, r)| r.reason()).collect(),
        }
    }
}

/// Sizes and counters of the replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries held, tombstones included.
    pub entries: usize,
    /// Remote entries refused since start, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Local writes whose delta could not be queued for gossip (anti-entropy repairs them).
    pub gossip_dropped: u64,
}

/// How often the replica drops the tombstones and finished jobs past the retention.
pub const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// The actor type.
#[derive(Debug)]
pub struct CatalogActor {
    /// The span its messages are handled in ([`crate::task::actor_span`]).
    pub(crate) span: tracing::Span,
}

/// What the actor starts from.
pub struct Args {
    pub config: Config,
    /// This node's keys: its id and the key that seals its writes.
    pub keys: super::Keys,
    pub store: Arc<dyn Store>,
    /// Deltas of local writes for the network to gossip. Bounded; when full the delta is
    /// dropped and counted, and anti-entropy carries the write instead.
    pub outbox: mpsc::Sender<Delta>,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("config", &self.config)
            .field("node", self.keys.me())
            .finish_non_exhaustive()
    }
}

/// The actor's state.
pub struct State {
    crdt: Crdt,
    store: Arc<dyn Store>,
    outbox: mpsc::Sender<Delta>,
    stats: Stats,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("entries", &self.crdt.len())
            .finish_non_exhaustive()
    }
}

impl State {
    /// Drops the entries past the retention from the replica, then their rows (buffered: a
    /// row a crash keeps is dropped again by the next compaction). Returns how many.
    fn compact(&mut self, now_ms: u64) -> usize {
        let removed = self.crdt.compact(now_ms);
        for key in &removed {
            if let Err(e) =
                self.store
                    .delete(Column::Catalog, &key.store_key(), Durability::Buffered)
            {
                warn!(%key, error = %e, "compacted catalog row not deleted");
            }
        }
        if !removed.is_empty() {
            info!(removed = removed.len(), "catalog compacted");
        }
        removed.len()
    }

    fn write(&mut self, key: CatalogKey, write: super::core::Write) -> Result<(), WriteError> {
        // Saved before it is applied: a write the store refused is not served, not gossiped
        // and not in the digests, so no peer copies what the client was told failed.
        let (key, entry) = self.crdt.prepare_local_write(wall_ms(), key, write)?;
        super::persist::save_entry(self.store.as_ref(), &key, &entry, Durability::Sync).map_err(
            |cause| WriteError::Store {
                key: key.clone(),
                cause,
            },
        )?;
        let delta = self.crdt.commit_local_write(key.clone(), entry);
        if self.outbox.try_send(delta).is_err() {
            self.stats.gossip_dropped += 1;
            debug!(%key, "gossip queue full; anti-entropy will carry the write");
        }
        Ok(())
    }

    fn merge(&mut self, delta: Delta) -> MergeSummary {
        let report = self.crdt.merge_remote(wall_ms(), delta);
        self.after_merge(&report)
    }

    fn after_merge(&mut self, report: &MergeReport) -> MergeSummary {
        for (key, why) in &report.rejected {
            *self.stats.rejected.entry(why.reason()).or_default() += 1;
            warn!(%key, reason = why.reason(), "remote catalog entry refused");
        }
        if let Err(e) =
            self.crdt
                .save_keys(self.store.as_ref(), &report.applied, Durability::Buffered)
        {
            // Held in memory and served; a restart would lose them until anti-entropy runs.
            warn!(error = %e, "merged catalog entries not saved");
        }
        MergeSummary::of(report)
    }
}

impl Actor for CatalogActor {
    type Msg = Msg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        args: Args,
    ) -> Result<State, ActorProcessingErr> {
        // The timer ends with the actor (its sends fail once the actor has stopped).
        myself.send_interval(COMPACT_EVERY, || Msg::Compact {
            now_ms: None,
            reply: None,
        });
        let (crdt, report) =
            Crdt::load_from(args.config, args.keys, args.store.as_ref(), wall_ms())?;
        for skipped in &report.skipped {
            warn!(row = %skipped, "unreadable catalog row skipped");
        }
        info!(loaded = report.loaded, "catalog loaded");
        Ok(State {
            crdt,
            store: args.store,
            outbox: args.outbox,
            stats: Stats::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let span = self.span.clone();
        self.handle_message(myself, msg, state)
            .instrument(span)
            .await
    }
}

impl CatalogActor {
    /// What [`Actor::handle`] does, inside the actor's span.
    async fn handle_message(
        &self,
        _myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        // Replies may find the caller gone (its deadline passed); that is not this actor's
        // failure, so send errors are ignored.
        match msg {
            Msg::Write { key, write, reply } => {
                let _ = reply.send(state.write(key, write));
            }
            Msg::Get { key, reply } => {
                let _ = reply.send(state.crdt.get(&key).cloned());
            }
            Msg::List { kind, reply } => {
                let clone = |(k, e): (&CatalogKey, &Entry)| (k.clone(), e.clone());
                let list = match kind {
                    Some(kind) => state.crdt.entries_of(kind).map(clone).collect(),
                    None => state.crdt.entries().map(clone).collect(),
                };
                let _ = reply.send(list);
            }
            Msg::Digest(reply) => {
                let _ = reply.send(state.crdt.digest());
            }
            Msg::AnswerSync { theirs, reply } => {
                let _ = reply.send(state.crdt.answer_sync(&theirs));
            }
            Msg::CompleteSync { answer, reply } => {
                let (report, push) = state.crdt.complete_sync(wall_ms(), answer);
                let summary = state.after_merge(&report);
                let _ = reply.send((summary, push));
            }
            Msg::Merge { delta, reply } => {
                let _ = reply.send(state.merge(delta));
            }
            Msg::MergePublished { entries, reply } => {
                let report = state.crdt.merge_published(wall_ms(), entries);
                let _ = reply.send(state.after_merge(&report));
            }
            Msg::Compact { now_ms, reply } => {
                let removed = state.compact(now_ms.unwrap_or_else(wall_ms));
                if let Some(reply) = reply {
                    let _ = reply.send(removed);
                }
            }
            Msg::Stats(reply) => {
                let mut stats = state.stats.clone();
                stats.entries = state.crdt.len();
                let _ = reply.send(stats);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "actor_tests.rs"]
mod tests;
