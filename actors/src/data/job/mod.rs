//! Dataset operations as a cluster job: an op chain over a version's shards, run where the
//! shards live, writing a new version with lineage.
//!
//! Local ops (normalise, filter, PII, label) look at one record at a time and run on each
//! shard alone. Global ops (exact and near dedup, split, augmentation) need the whole version,
//! so each runs in three phases whose result does not depend on how shards are spread:
//! 1. every shard's holder summarises its shard ([`worker::summarize`]: content hashes,
//!    MinHash sketches, split strata, id ranges);
//! 2. the coordinator makes one deterministic decision over all summaries
//!    ([`decide::decide`]: which records to keep, which part, which new ids);
//! 3. holders apply the decisions ([`worker::apply`]) and write the output shards.
//!
//! Output shard `i` comes from input shard `i`, so the new version keeps the upload order and
//! its shard count. [`coordinator::run`] drives the phases over [`crate::data::peers::DataPeers`].
//!
//! Modules: [`worker`] (phases 1 and 3), [`decide`] (phase 2), [`coordinator`] (the driver).

pub mod coordinator;
pub mod decide;
pub mod worker;

use std::collections::BTreeMap;

pub use flotilla_protocol::services::data::Sketch;
use serde::{Deserialize, Serialize};

use crate::data::ops::{dedup, Detail, LineageEntry, Op};

/// Most near-dup clusters and pairs a job report lists (the counts are always complete).
pub const MAX_REPORTED_CLUSTERS: usize = 10_000;
/// Most verified near-duplicate pairs a job report lists.
pub const MAX_REPORTED_PAIRS: usize = 100_000;

/// Whether `op` needs a decision over the whole version.
pub fn is_global(op: &Op) -> bool {
    matches!(
        op,
        Op::DedupExact(_) | Op::DedupNear(_) | Op::Split(_) | Op::Augment(_)
    )
}

impl From<dedup::Sketch> for Sketch {
    fn from(s: dedup::Sketch) -> Self {
        Sketch {
            id: s.id,
            signature: s.signature,
            shingles: s.shingles,
        }
    }
}

impl From<Sketch> for dedup::Sketch {
    fn from(s: Sketch) -> Self {
        dedup::Sketch {
            id: s.id,
            signature: s.signature,
            shingles: s.shingles,
        }
    }
}

/// Near dedup's findings in a job report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NearFindings {
    /// Which op of the chain.
    pub op_index: usize,
    pub clusters_total: u64,
    pub removed_total: u64,
    /// The first [`MAX_REPORTED_CLUSTERS`] clusters, each sorted, by smallest id.
    pub clusters: Vec<Vec<u64>>,
    /// The first [`MAX_REPORTED_PAIRS`] verified pairs `(smaller, larger)`.
    pub pairs: Vec<(u64, u64)>,
}

/// What a job did: per op its lineage entry (summed over shards) and detail (merged), and
/// near dedup's clusters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    pub lineage: Vec<LineageEntry>,
    pub details: Vec<Detail>,
    pub near: Vec<NearFindings>,
}

/// Sums two shards' details of the same op.
pub fn merge_detail(a: Detail, b: Detail) -> Detail {
    fn add<K: Ord>(mut a: BTreeMap<K, u64>, b: BTreeMap<K, u64>) -> BTreeMap<K, u64> {
        for (k, v) in b {
            *a.entry(k).or_default() += v;
        }
        a
    }
    match (a, b) {
        (Detail::Filter(x), Detail::Filter(y)) => Detail::Filter(add(x, y)),
        (Detail::Pii(x), Detail::Pii(y)) => Detail::Pii(add(x, y)),
        (Detail::DedupExact { removed: x }, Detail::DedupExact { removed: y }) => {
            Detail::DedupExact { removed: x + y }
        }
        (
            Detail::DedupNear {
                clusters,
                removed: x,
            },
            Detail::DedupNear { removed: y, .. },
        ) => Detail::DedupNear {
            clusters,
            removed: x + y,
        },
        (
            Detail::Label {
                spans: s1,
                relations: r1,
            },
            Detail::Label {
                spans: s2,
                relations: r2,
            },
        ) => Detail::Label {
            spans: s1 + s2,
            relations: r1 + r2,
        },
        (Detail::Augment { added: x }, Detail::Augment { added: y }) => {
            Detail::Augment { added: x + y }
        }
        (Detail::Split(x), Detail::Split(y)) => Detail::Split(add(x, y)),
        (a, _) => a,
    }
}

#[cfg(test)]
mod tests;
