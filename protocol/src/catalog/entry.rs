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

use serde::{Deserialize, Serialize};

use super::{CatalogKey, JobRecord, Record, RecordKind};
use crate::hlc::Hlc;
use crate::validation::{Checker, FieldErrors};

/// A last-writer-wins register; `value: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Register {
    pub hlc: Hlc,
    pub value: Option<Record>,
}

impl Register {
    /// Keeps the later of the two; returns whether `self` changed. Equal timestamps (possible
    /// only if a node reissued one after losing its clock state) are settled by the value, so
    /// the result still does not depend on the order of merging.
    pub fn merge(&mut self, other: Register) -> bool {
        if (&other.hlc, &other.value) > (&self.hlc, &self.value) {
            *self = other;
            true
        } else {
            false
        }
    }
}

/// A replicated job record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobEntry {
    /// Timestamp of the write that set the head (owner, epoch, spec).
    pub hlc: Hlc,
    pub record: JobRecord,
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

    /// Joins `other` into `self`; returns whether `self` changed.
    pub fn merge(&mut self, other: JobEntry) -> bool {
        let status = self.record.status.join(other.record.status);
        let updated = self.record.updated_at_ms.max(other.record.updated_at_ms);
        let mut changed = false;
        if other.head() > self.head() {
            *self = other;
            changed = true;
        }
        if self.record.status != status {
            self.record.status = status;
            changed = true;
        }
        if self.record.updated_at_ms != updated {
            self.record.updated_at_ms = updated;
            changed = true;
        }
        changed
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
    /// A live register holding `record`, written at `hlc`.
    pub fn write(hlc: Hlc, record: Record) -> Self {
        Entry::Register(Register {
            hlc,
            value: Some(record),
        })
    }

    /// A tombstone written at `hlc`.
    pub fn tombstone(hlc: Hlc) -> Self {
        Entry::Register(Register { hlc, value: None })
    }

    /// A job entry written at `hlc`.
    pub fn job(hlc: Hlc, record: JobRecord) -> Self {
        Entry::Job(JobEntry { hlc, record })
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
