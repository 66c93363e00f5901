//! The coordinator of a dataset operation: drives phases 1–3 over the shard holders and
//! assembles the new version's catalog record.
//!
//! Each input shard is worked on by its first live holder in rendezvous order of the shard's
//! key; if that holder fails (unreachable, or the shard is missing or corrupt there) the next
//! one takes the same request, which is safe because every phase is stateless. The output shard
//! `i` is written by its worker, copied to the holders rendezvous placement picks for it, and
//! dropped from the worker if the worker is not one of them. Nothing is written to the parent
//! version; if anything fails, the output version's shards are deleted (best effort) and no
//! catalog record is produced, so the parent stays exactly as it was.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_protocol::catalog::DatasetRecord;
use flotilla_protocol::services::control::RemoteErrorKind;
use flotilla_protocol::services::data::{Decision, RequestBody, ResponseBody, ShardId, ShardMeta};
use flotilla_protocol::NodeId;
use futures::stream::{self, StreamExt, TryStreamExt};
use tracing::warn;

use super::decide::{decide, Finding};
use super::{is_global, merge_detail, JobReport, NearFindings};
use super::{MAX_REPORTED_CLUSTERS, MAX_REPORTED_PAIRS};
use crate::data::error::{Error, Result};
use crate::data::ops::{Detail, LineageEntry, Op};
use crate::data::peers::{unexpected, DataPeers};
use crate::data::{replication, version};
use crate::rendezvous;

/// One operation job.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Job id, passed to holders for their logs.
    pub job: String,
    /// The catalog record of the input version.
    pub parent: DatasetRecord,
    pub output_version: u64,
    pub ops: Vec<Op>,
    /// Holders of each input shard by index, as this node knows them.
    pub holders: BTreeMap<u32, Vec<NodeId>>,
    /// Alive members now.
    pub alive: Vec<NodeId>,
    /// Replicas of each output shard (capped by the live node count).
    pub replication: usize,
    /// Deadline of each call to a holder.
    pub call_deadline: Duration,
    /// Shards worked on at once in each phase (at least 1).
    pub max_in_flight: usize,
    /// Timestamp of the new record, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// What a job produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The new version's catalog record (validated), to be written by the caller.
    pub record: DatasetRecord,
    pub report: JobReport,
    /// Holders of each output shard.
    pub placement: BTreeMap<u32, Vec<NodeId>>,
}

/// Runs the job. On error, output shards already written are deleted and the parent version
/// is untouched.
pub async fn run(peers: &dyn DataPeers, spec: &Spec) -> Result<Outcome> {
    let dataset = spec.parent.name.clone();
    if spec.output_version <= spec.parent.version {
        return Err(Error::invalid(
            "job",
            "output_version",
            format!(
                "{} is not after the parent version {}",
                spec.output_version, spec.parent.version
            ),
        ));
    }
    if spec.ops.is_empty() {
        return Err(Error::invalid("job", "ops", "the chain is empty"));
    }
    // Fail on an unrecordable chain before any work.
    version::ops_lineage(spec.parent.version, &planned_lineage(&spec.ops))?;
    let ops_json = serde_json::to_string(&spec.ops).map_err(|e| Error::Config {
        what: "operation chain".into(),
        reason: e.to_string(),
    })?;
    let mut workers = BTreeMap::new();
    for i in 0..spec.parent.shard_hashes.len() as u32 {
        let input = ShardId::new(&dataset, spec.parent.version, i);
        let held = spec.holders.get(&i).cloned().unwrap_or_default();
        let live: Vec<NodeId> = held
            .into_iter()
            .filter(|n| spec.alive.contains(n))
            .collect();
        let order = rendezvous::rank(&input.placement_key(), &live);
        if order.is_empty() {
            return Err(Error::BadRequest(format!(
                "no live holder of shard {input}"
            )));
        }
        workers.insert(i, (input, order));
    }
    let result = phases(peers, spec, &dataset, &ops_json, &workers).await;
    if result.is_err() {
        for n in &spec.alive {
            let body = RequestBody::DeleteVersion {
                dataset: dataset.clone(),
                version: spec.output_version,
            };
            if let Err(e) = peers.call(n, body, spec.call_deadline).await {
                warn!(node = %n, job = %spec.job, error = %e, "could not clean up a failed job's output");
            }
        }
    }
    result
}

type Workers = BTreeMap<u32, (ShardId, Vec<NodeId>)>;

/// Sends `body` to the shard's holders in order until one answers; returns the answer and who
/// gave it. A holder that is unreachable, lacks the shard or fails internally is skipped; an
/// error in the request itself (a missing field, a bad parameter) stops at once.
async fn on_shard(
    peers: &dyn DataPeers,
    order: &[NodeId],
    body: &RequestBody,
    deadline: Duration,
) -> Result<(ResponseBody, NodeId)> {
    let mut last = None;
    for n in order {
        match peers.call(n, body.clone(), deadline).await {
            Ok(r) => return Ok((r, n.clone())),
            Err(Error::Remote { peer, error }) if error.kind == RemoteErrorKind::BadRequest => {
                return Err(Error::Remote { peer, error })
            }
            Err(e) => {
                warn!(node = %n, error = %e, "holder failed; trying the next one");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::BadRequest("no holder to ask".into())))
}

async fn phases(
    peers: &dyn DataPeers,
    spec: &Spec,
    dataset: &str,
    ops_json: &str,
    workers: &Workers,
) -> Result<Outcome> {
    let mut decisions: BTreeMap<u32, Vec<Decision>> =
        workers.keys().map(|i| (*i, Vec::new())).collect();
    let mut findings = BTreeMap::new();
    let in_flight = spec.max_in_flight.max(1);
    for (k, op) in spec.ops.iter().enumerate().filter(|(_, o)| is_global(o)) {
        let decided = &decisions;
        let summaries: BTreeMap<u32, _> = stream::iter(workers.iter())
            .map(|(i, (input, order))| async move {
                let body = RequestBody::Summarize {
                    job: spec.job.clone(),
                    input: input.clone(),
                    ops_json: ops_json.to_string(),
                    decisions: decided.get(i).cloned().unwrap_or_default(),
                };
                match on_shard(peers, order, &body, spec.call_deadline).await? {
                    (ResponseBody::Summary(s), _) => Ok((*i, s)),
                    (other, n) => Err(unexpected(&n, "Summarize", &other)),
                }
            })
            .buffered(in_flight)
            .try_collect()
            .await?;
        let (per_shard, finding) = decide(op, &summaries)?;
        for (i, d) in per_shard {
            decisions.entry(i).or_default().push(d);
        }
        findings.insert(k, finding);
    }

    let decided = &decisions;
    let applied: Vec<Applied> = stream::iter(workers.iter())
        .map(|(i, (input, order))| async move {
            let output = ShardId::new(dataset, spec.output_version, *i);
            let decisions = decided.get(i).cloned().unwrap_or_default();
            apply_shard(peers, spec, ops_json, input, order, decisions, output).await
        })
        .buffered(in_flight)
        .try_collect()
        .await?;

    let mut metas: Vec<ShardMeta> = Vec::new();
    let mut placement = BTreeMap::new();
    let mut sums: Vec<(u64, u64)> = vec![(0, 0); spec.ops.len()];
    let mut details: Vec<Option<Detail>> = vec![None; spec.ops.len()];
    for a in applied {
        for (k, ((cin, cout), d)) in a.counts.into_iter().zip(a.details).enumerate() {
            sums[k].0 += cin;
            sums[k].1 += cout;
            details[k] = Some(match details[k].take() {
                Some(prev) => merge_detail(prev, d),
                None => d,
            });
        }
        placement.insert(a.meta.id.index, a.targets);
        metas.push(a.meta);
    }

    let mut report = JobReport::default();
    for (k, op) in spec.ops.iter().enumerate() {
        report.lineage.push(LineageEntry {
            operation: op.name().to_string(),
            parameters: op.parameters(),
            count_in: sums[k].0,
            count_out: sums[k].1,
        });
        let mut d = details[k].take().unwrap_or(Detail::None);
        if let Some(Finding::Near(res)) = findings.get(&k) {
            if let Detail::DedupNear { clusters, .. } = &mut d {
                *clusters = res.clusters.len();
            }
            report.near.push(NearFindings {
                op_index: k,
                clusters_total: res.clusters.len() as u64,
                removed_total: res.removed.len() as u64,
                clusters: res
                    .clusters
                    .iter()
                    .take(MAX_REPORTED_CLUSTERS)
                    .cloned()
                    .collect(),
                pairs: res.pairs.iter().take(MAX_REPORTED_PAIRS).copied().collect(),
            });
        }
        report.details.push(d);
    }
    let record = DatasetRecord {
        name: dataset.to_string(),
        version: spec.output_version,
        schema: version::schema_after(&spec.parent.schema, &spec.ops),
        record_count: metas.iter().map(|m| m.records).sum(),
        shard_hashes: metas.iter().map(|m| m.hash.clone()).collect(),
        lineage: version::ops_lineage(spec.parent.version, &report.lineage)?,
        created_at_ms: spec.created_at_ms,
    };
    record.validate().map_err(|e| Error::Config {
        what: format!("dataset record {dataset}@{}", spec.output_version),
        reason: e.to_string(),
    })?;
    Ok(Outcome {
        record,
        report,
        placement,
    })
}

/// One output shard, written and placed.
struct Applied {
    meta: ShardMeta,
    counts: Vec<(u64, u64)>,
    details: Vec<Detail>,
    targets: Vec<NodeId>,
}

/// Phase 3 on one shard: its worker writes the output, the placement's holders copy it from
/// the worker, and the worker drops its copy if it is not one of them.
async fn apply_shard(
    peers: &dyn DataPeers,
    spec: &Spec,
    ops_json: &str,
    input: &ShardId,
    order: &[NodeId],
    decisions: Vec<Decision>,
    output: ShardId,
) -> Result<Applied> {
    let body = RequestBody::Apply {
        job: spec.job.clone(),
        input: input.clone(),
        ops_json: ops_json.to_string(),
        decisions,
        output: output.clone(),
    };
    let (meta, counts, details_json, worker) =
        match on_shard(peers, order, &body, spec.call_deadline).await? {
            (
                ResponseBody::Applied {
                    meta,
                    counts,
                    details_json,
                },
                n,
            ) => (meta, counts, details_json, n),
            (other, n) => return Err(unexpected(&n, "Apply", &other)),
        };
    let details: Vec<Detail> = serde_json::from_str(&details_json).map_err(|e| Error::Peer {
        peer: worker.to_string(),
        reason: format!("details of shard {output}: {e}"),
    })?;
    if meta.id != output || counts.len() != spec.ops.len() || details.len() != counts.len() {
        return Err(Error::Peer {
            peer: worker.to_string(),
            reason: format!("inconsistent answer to Apply of {output}"),
        });
    }
    let targets = replication::replicas(&output, &spec.alive, spec.replication);
    for t in targets.iter().filter(|t| **t != worker) {
        let body = RequestBody::CopyFrom {
            shard: output.clone(),
            source: worker.clone(),
        };
        match peers.call(t, body, spec.call_deadline).await? {
            ResponseBody::Copied(m) if m.hash == meta.hash => {}
            other => return Err(unexpected(t, "CopyFrom", &other)),
        }
    }
    if !targets.contains(&worker) {
        let body = RequestBody::DeleteShard { shard: output };
        peers.call(&worker, body, spec.call_deadline).await?;
    }
    Ok(Applied {
        meta,
        counts,
        details,
        targets,
    })
}

/// The lineage entries a chain will produce (counts unknown yet), to check it fits the catalog.
fn planned_lineage(ops: &[Op]) -> Vec<LineageEntry> {
    ops.iter()
        .map(|op| LineageEntry {
            operation: op.name().to_string(),
            parameters: op.parameters(),
            count_in: u64::MAX,
            count_out: u64::MAX,
        })
        .collect()
}
