//! Catalog entries: the CRDT values stored under each [`CatalogKey`], and their merge.
//!
//! - [`Register`]: a last-writer-wins register for datasets, model versions, aliases,
//!   deployments and evictions. The greater `(hlc, value)` wins; a delete is a tombstone
//!   (`value: None`) with its own timestamp, so a delete and a concurrent write converge to
//!   whichever is later. Evictions, like jobs, are never deleted.
//! - [`JobEntry`]: a job record. Its head (owner, epoch, spec) is last-writer-wins ordered by
//!   `(epoch, hlc)`, so a new owner's writes beat the old owner's however the clocks compare;
//!   its status merges with [`JobStatus::join`](crate::jobs::JobStatus::join) and `updated_at_ms` with `max`, independently of
//!   the head, so a terminal status is never undone by whoever writes the head.
//!
//! Each merge is the join of a semilattice (commutative, associative, idempotent); an entry of
//! the wrong shape for its key is refused by [`Entry::validate`] before it is merged, and if two
//! shapes ever meet, a job entry absorbs a register (an ordinal sum, still a semilattice).
//!
//! **Seals.** Every write carries its writer's signature ([`Seal`]): a register's by the node
//! its timestamp names, a job's head by the node that wrote the head and its status by the node
//! that wrote the status (`status_by`), since the two parts merge separately and may come from
//! different writers. What each seal covers is [`Register::sealed_bytes`],
//! [`JobEntry::head_bytes`] and [`JobEntry::status_bytes`]; replicas verify seals before they
//! merge a peer's entry, so no node can write in another's name. Seals take part in the merge
//! order only as the last tie-break, which keeps the merge a join.

use serde::{Deserialize, Serialize};

use super::{CatalogKey, JobRecord, Record, RecordKind};
use crate::hlc::Hlc;
use crate::ids::NodeId;
use crate::jobs::JobStatus;
use crate::validation::{Checker, FieldErrors};

/// A writer's ed25519 signature over the bytes a write covers; empty when unsealed (an entry
/// being built, or one read back from a store written before seals existed).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seal(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl Seal {
    /// Whether the write carries no signature.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Domain tags, so bytes signed for one part can never pass as another.
const REGISTER_TAG: &str = "flotilla/catalog/register/1";
const JOB_HEAD_TAG: &str = "flotilla/catalog/job-head/1";
const JOB_STATUS_TAG: &str = "flotilla/catalog/job-status/1";

fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    // bincode's standard configuration is canonical for these types (no maps with unordered
    // keys, no floats); encoding plain data into a Vec cannot fail.
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default()
}

/// A last-writer-wins register; `value: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Register {
    pub hlc: Hlc,
    pub value: Option<Record>,
    /// By `hlc.node`, over [`Register::sealed_bytes`].
    pub seal: Seal,
}

impl Register {
    /// Keeps the later of the two; returns whether `self` changed. Equal timestamps (possible
    /// only if a node reissued one after losing its clock state) are settled by the value and
    /// then the seal, so the result still does not depend on the order of merging.
    pub fn merge(&mut self, other: Register) -> bool {
        if (&other.hlc, &other.value, &other.seal) > (&self.hlc, &self.value, &self.seal) {
            *self = other;
            true
        } else {
            false
        }
    }

    /// What the writer signs: the key, the timestamp and the value.
    pub fn sealed_bytes(&self, key: &CatalogKey) -> Vec<u8> {
        canonical(&(REGISTER_TAG, key, &self.hlc, &self.value))
    }
}

/// A replicated job record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobEntry {
    /// Timestamp of the write that set the head (owner, epoch, spec).
    pub hlc: Hlc,
    pub record: JobRecord,
    /// By `hlc.node`, over [`JobEntry::head_bytes`].
    pub head_seal: Seal,
    /// The node that wrote `record.status` and `record.updated_at_ms`.
    pub status_by: NodeId,
    /// By `status_by`, over [`JobEntry::status_bytes`].
    pub status_seal: Seal,
}

impl JobEntry {
    /// What orders heads: epoch first (fencing), then timestamp, then content for a total order.
    /// Status and `updated_at_ms` are left out: they are joined separately.
    #[allow(clippy::type_complexity)]
    fn head(
        &self,
    ) -> (
        u64,
        &Hlc,
        &crate::jobs::JobId,
        &crate::jobs::JobSpec,
        &crate::ids::NodeId,
        u64,
    ) {
        let r = &self.record;
        (
            r.epoch,
            &self.hlc,
            &r.id,
            &r.spec,
            &r.owner,
            r.submitted_at_ms,
        )
    }

    /// The status part, with its writer and seal, as one value: statuses join by rank (a
    /// total order), then the later update, then the writer and seal, so the part that wins is
    /// always one a writer sealed whole.
    fn status_stamp(&self) -> (JobStatus, u64, &NodeId, &Seal) {
        (
            self.record.status,
            self.record.updated_at_ms,
            &self.status_by,
            &self.status_seal,
        )
    }

    /// Joins `other` into `self`; returns whether `self` changed (a part is taken only when it
    /// is strictly greater, so taking one is a change).
    pub fn merge(&mut self, other: JobEntry) -> bool {
        let take_status = other.status_stamp() > self.status_stamp();
        let take_head = (other.head(), &other.head_seal) > (self.head(), &self.head_seal);
        let JobEntry {
            hlc,
            record,
            head_seal,
            status_by,
            status_seal,
        } = other;
        if take_status {
            self.record.status = record.status;
            self.record.updated_at_ms = record.updated_at_ms;
            self.status_by = status_by;
            self.status_seal = status_seal;
        }
        if take_head {
            self.hlc = hlc;
            self.head_seal = head_seal;
            self.record.id = record.id;
            self.record.spec = record.spec;
            self.record.owner = record.owner;
            self.record.epoch = record.epoch;
            self.record.submitted_at_ms = record.submitted_at_ms;
        }
        take_status || take_head
    }

    /// What the head's writer signs: the key, the head timestamp and every head field.
    pub fn head_bytes(&self, key: &CatalogKey) -> Vec<u8> {
        canonical(&(JOB_HEAD_TAG, key, self.head()))
    }

    /// What the status's writer signs: the key, the status, the update time and the writer.
    pub fn status_bytes(&self, key: &CatalogKey) -> Vec<u8> {
        canonical(&(
            JOB_STATUS_TAG,
            key,
            self.record.status,
            self.record.updated_at_ms,
            &self.status_by,
        ))
    }
}

/// The value under one catalog key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Entry {
    /// Datasets, model versions, aliases and deployments.
    Register(Register),
    /// Job records.
    Job(JobEntry),
}

impl Entry {
    /// A live register holding `record`, written at `hlc` (unsealed).
    pub fn write(hlc: Hlc, record: Record) -> Self {
        Entry::Register(Register {
            hlc,
            value: Some(record),
            seal: Seal::default(),
        })
    }

    /// A tombstone written at `hlc` (unsealed).
    pub fn tombstone(hlc: Hlc) -> Self {
        Entry::Register(Register {
            hlc,
            value: None,
            seal: Seal::default(),
        })
    }

    /// A job entry whose head and status were both written at `hlc` (unsealed).
    pub fn job(hlc: Hlc, record: JobRecord) -> Self {
        let status_by = hlc.node.clone();
        Entry::Job(JobEntry {
            hlc,
            record,
            head_seal: Seal::default(),
            status_by,
            status_seal: Seal::default(),
        })
    }

    /// Each part of the entry that a writer seals: the writer, the bytes it signs, its seal.
    pub fn sealed_parts(&self, key: &CatalogKey) -> Vec<(&NodeId, Vec<u8>, &Seal)> {
        match self {
            Entry::Register(r) => vec![(&r.hlc.node, r.sealed_bytes(key), &r.seal)],
            Entry::Job(j) => vec![
                (&j.hlc.node, j.head_bytes(key), &j.head_seal),
                (&j.status_by, j.status_bytes(key), &j.status_seal),
            ],
        }
    }

    /// The timestamp of the entry's latest winning write.
    pub fn hlc(&self) -> &Hlc {
        match self {
            Entry::Register(r) => &r.hlc,
            Entry::Job(j) => &j.hlc,
        }
    }

    /// Whether the entry records a deletion.
    pub fn is_tombstone(&self) -> bool {
        matches!(self, Entry::Register(Register { value: None, .. }))
    }

    /// Joins `other` into `self`; returns whether `self` changed.
    pub fn merge(&mut self, other: Entry) -> bool {
        match (&mut *self, other) {
            (Entry::Register(a), Entry::Register(b)) => a.merge(b),
            (Entry::Job(a), Entry::Job(b)) => a.merge(b),
            (Entry::Job(_), Entry::Register(_)) => false,
            (slot, job) => {
                *slot = job;
                true
            }
        }
    }

    /// Checks the entry belongs under `key` and that its record is valid. Entries from peers
    /// that fail this are dropped and counted.
    pub fn validate(&self, key: &CatalogKey) -> Result<(), FieldErrors> {
        let mut c = Checker::new();
        if let Err(FieldErrors(errors)) = key.validate() {
            for e in errors {
                c.push(format!("key.{}", e.field), e.message);
            }
        }
        c.check(
            !self.hlc().node.0.is_empty(),
            "hlc.node",
            "must name the writing node",
        );
        if let Entry::Job(j) = self {
            c.check(
                !j.status_by.0.is_empty(),
                "status_by",
                "must name the node that wrote the status",
            );
        }
        let record_errors = match self {
            Entry::Register(Register {
                value: Some(record),
                ..
            }) => {
                c.check(
                    record.key() == *key,
                    "value",
                    format!("record belongs under {}, not {key}", record.key()),
                );
                if let Record::Eviction(e) = record {
                    // The seal proves who wrote it; the record must not claim someone else.
                    c.check(
                        e.evicted_by == self.hlc().node,
                        "value.evicted_by",
                        "must be the node that wrote the eviction",
                    );
                }
                record.validate().err()
            }
            Entry::Register(Register { value: None, .. }) => {
                c.check(
                    key.kind != RecordKind::Job,
                    "value",
                    "job records are not deleted",
                );
                // An eviction is final: a tombstone would let the node back in on every
                // replica that merged it, whoever wrote it.
                c.check(
                    key.kind != RecordKind::Eviction,
                    "value",
                    "evictions are not deleted",
                );
                None
            }
            Entry::Job(j) => {
                c.check(
                    CatalogKey::job(&j.record.id) == *key,
                    "record.id",
                    format!("job {} does not belong under {key}", j.record.id),
                );
                j.record.validate().err()
            }
        };
        if let Some(FieldErrors(errors)) = record_errors {
            for e in errors {
                c.push(format!("value.{}", e.field), e.message);
            }
        }
        c.finish()
    }
}
