//! Dataset operations as jobs: [`DataNode::prepare_ops`] turns a request into a
//! `JobKind::DataOps` spec (checked against a sample of the parent first, so a missing field is
//! refused before any job exists), and [`DataNode::run_ops`] is the job's one task: it clears
//! what an interrupted earlier attempt left, runs the three-phase coordinator over the shard
//! holders and records the new version in the catalog.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use flotilla_actors::data::job::coordinator;
use flotilla_actors::data::job::worker::parse_ops;
use flotilla_actors::data::ops::{self, Op};
use flotilla_protocol::catalog::Record;
use flotilla_protocol::jobs::{AntiAffinity, DataOpsJob, JobKind, JobSpec, Priority, Resources};
use flotilla_protocol::NodeId;
use serde::{Deserialize, Serialize};

use flotilla_actors::clock::wall_ms;

use super::{DataNode, Error, Result};

/// Quarter-seconds a job waits for its parent to reach this node's catalog replica.
const PARENT_WAIT_TRIES: u32 = 40;

/// Records of the parent a chain is tried on before the job is submitted.
const PRECHECK_RECORDS: usize = 64;

/// A request to run a chain of operations on a dataset version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpsRequest {
    /// The parent version; the latest when absent.
    pub version: Option<u64>,
    /// The chain, each op as `{"op": "normalize", ...parameters}`.
    pub ops: Vec<serde_json::Value>,
    /// Answer only once the job has finished.
    pub wait: bool,
    /// How long to wait at most, in seconds (default 600).
    pub wait_secs: Option<u64>,
}

/// A prepared operation job.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub spec: JobSpec,
    pub dataset: String,
    pub parent_version: u64,
    pub output_version: u64,
}

impl DataNode {
    /// Checks `req` and builds its job spec.
    pub async fn prepare_ops(&self, name: &str, req: &OpsRequest) -> Result<Prepared> {
        if req.ops.is_empty() {
            return Err(Error::Invalid("ops: the chain is empty".into()));
        }
        let mut chain: Vec<Op> = Vec::with_capacity(req.ops.len());
        for (i, v) in req.ops.iter().enumerate() {
            let op: Op = serde_json::from_value(v.clone())
                .map_err(|e| Error::Invalid(format!("ops[{i}]: {e}")))?;
            chain.push(op);
        }
        let parent = self.get(name, req.version).await?;
        let versions = self.versions(name).await?;
        let output_version = versions
            .keys()
            .last()
            .copied()
            .unwrap_or(0)
            .max(parent.version)
            + 1;
        // A chain that cannot run on the parent's first records (a field the records lack, a
        // bad pattern) would fail on every shard: refuse it before a job exists.
        let sample = self.sample(&parent, PRECHECK_RECORDS).await?;
        ops::apply_chain(sample, &chain).map_err(|e| Error::Invalid(format!("ops: {e}")))?;
        let ops_json =
            serde_json::to_string(&chain).map_err(|e| Error::Invalid(format!("ops: {e}")))?;
        let holders = self.holders(&parent).await;
        let preferred: BTreeSet<NodeId> = holders.into_values().flatten().collect();
        let spec = JobSpec {
            kind: JobKind::DataOps(Box::new(DataOpsJob {
                dataset: name.to_string(),
                parent_version: parent.version,
                output_version,
                ops_json,
            })),
            priority: Priority::Batch,
            resources: Resources {
                cores: 1,
                ram_bytes: 256 << 20,
                gpus: 0,
            },
            tasks: 1,
            anti_affinity: AntiAffinity::None,
            preferred_nodes: preferred.into_iter().take(16).collect(),
            idempotency_key: None,
        };
        spec.validate()
            .map_err(|e| Error::Invalid(format!("job spec: {e:?}")))?;
        Ok(Prepared {
            spec,
            dataset: name.to_string(),
            parent_version: parent.version,
            output_version,
        })
    }

    /// The task of a `DataOps` job; the result is JSON text, the error a reason.
    pub async fn run_ops(
        &self,
        dataset: &str,
        parent_version: u64,
        output_version: u64,
        ops_json: &str,
        cancelled: &AtomicBool,
    ) -> std::result::Result<String, String> {
        // The job may run on a node whose catalog replica has not yet heard of the parent
        // (gossip is eventually consistent): give it a little time before failing.
        let mut tries = 0;
        let parent = loop {
            match self.get(dataset, Some(parent_version)).await {
                Ok(p) => break p,
                Err(Error::NotFound(_)) if tries < PARENT_WAIT_TRIES => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        if let Ok(done) = self.get(dataset, Some(output_version)).await {
            // An attempt that finished but whose report was lost: the version is recorded.
            if done.lineage.parent_version == Some(parent_version) {
                return Ok(serde_json::json!({
                    "dataset": dataset,
                    "version": output_version,
                    "records": done.record_count,
                    "already_recorded": true,
                })
                .to_string());
            }
            return Err(format!("{dataset}@{output_version} already exists"));
        }
        let ops = parse_ops(ops_json).map_err(|e| e.to_string())?;
        let alive = self.alive().await;
        // Output shards of an interrupted attempt would be mixed with this one's: drop them.
        self.delete_shards(&alive, dataset, output_version).await;
        if cancelled.load(Ordering::Acquire) {
            return Err("cancelled".into());
        }
        let holders = self.holders(&parent).await;
        let spec = coordinator::Spec {
            job: format!("{dataset}@{output_version}"),
            parent,
            output_version,
            ops,
            holders,
            alive,
            replication: self.settings.replication,
            call_deadline: self.settings.call_deadline,
            max_in_flight: self.settings.max_in_flight,
            created_at_ms: wall_ms(),
        };
        let outcome = coordinator::run(&*self.peers, &spec)
            .await
            .map_err(|e| e.to_string())?;
        self.catalog
            .put(Record::Dataset(outcome.record.clone()))
            .await
            .map_err(|e| format!("catalog write of {dataset}@{output_version}: {e}"))?;
        let mut report = outcome.report;
        // The result travels in the task's report to the job owner, whose frames are capped
        // (1 MiB): near dedup's cluster and pair lists are cut to a sample here (the totals
        // stay), or a big result would never reach the owner and the job never end.
        for n in &mut report.near {
            n.clusters.truncate(MAX_RESULT_CLUSTERS);
            n.pairs.truncate(MAX_RESULT_CLUSTERS);
        }
        let shards = outcome.placement.len();
        let mut result = serde_json::json!({
            "dataset": dataset,
            "version": output_version,
            "records": outcome.record.record_count,
            "shards": shards,
            "report": report,
        });
        if shards <= MAX_RESULT_SHARDS {
            result["placement"] = serde_json::json!(outcome.placement);
        }
        Ok(result.to_string())
    }
}

/// Near-dedup clusters (and pairs) a job's result lists; the totals count all of them.
const MAX_RESULT_CLUSTERS: usize = 100;
/// Largest output whose placement the result lists (`show` surveys it for any size).
const MAX_RESULT_SHARDS: usize = 64;
