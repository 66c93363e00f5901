//! The work each job kind does on this machine.

use std::sync::atomic::{AtomicBool, Ordering};

use flotilla_actors::jobs::executor::TaskRunner;
use flotilla_protocol::jobs::{JobId, JobKind};
use flotilla_protocol::NodeId;

/// Runs job tasks with this node's compute kernels and data stage.
#[derive(Debug, Clone)]
pub struct KernelRunner {
    node: NodeId,
    /// The span it was made in (the node's): tasks run on blocking threads, outside any span,
    /// so each runs in a `job` span under this one.
    span: tracing::Span,
    /// The data stage, for `DataOps` jobs; without it they fail with a reason.
    data: Option<crate::data::DataNode>,
    /// What a `train` job's coordinator needs; without it they fail with a reason.
    training: Option<crate::train::job::TrainContext>,
}

impl std::fmt::Debug for crate::train::job::TrainContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainContext").finish_non_exhaustive()
    }
}

impl KernelRunner {
    /// A runner that reports results as coming from `node`.
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            span: tracing::Span::current(),
            data: None,
            training: None,
        }
    }

    /// The runner with what `train` jobs need.
    pub fn with_training(mut self, ctx: crate::train::job::TrainContext) -> Self {
        self.training = Some(ctx);
        self
    }

    /// The runner with the data stage, so it can run `DataOps` jobs.
    pub fn with_data(mut self, data: crate::data::DataNode) -> Self {
        self.data = Some(data);
        self
    }
}

impl TaskRunner for KernelRunner {
    fn run(
        &self,
        job: &JobId,
        kind: &JobKind,
        task: u32,
        cancelled: &AtomicBool,
    ) -> Result<String, String> {
        let span = tracing::info_span!(parent: &self.span, "job", job = %job, task);
        let _in_job = span.enter();
        match kind {
            JobKind::Benchmark {
                matrix_size,
                iterations,
                ..
            } => {
                let stop = || cancelled.load(Ordering::Acquire);
                let r = flotilla_kernels::probe::run_cpu_matmuls(
                    *matrix_size as usize,
                    *iterations,
                    &stop,
                )
                .ok_or_else(|| "cancelled".to_string())?;
                Ok(serde_json::json!({
                    "task": task,
                    "node": self.node.as_str(),
                    "matrix_size": r.size,
                    "iterations": r.iterations,
                    "gflops": r.gflops,
                    "elapsed_ms": r.elapsed.as_secs_f64() * 1000.0,
                })
                .to_string())
            }
            JobKind::DataOps(job) => {
                let data = self
                    .data
                    .as_ref()
                    .ok_or_else(|| "this node runs no data stage".to_string())?;
                // Tasks run on a blocking thread (see `TaskRunner`), so driving the async
                // coordinator to completion here blocks no runtime worker.
                data.runtime
                    .block_on(tracing::Instrument::in_current_span(data.run_ops(
                        &job.dataset,
                        job.parent_version,
                        job.output_version,
                        &job.ops_json,
                        cancelled,
                    )))
            }
            JobKind::Train { spec_toml } => {
                let ctx = self
                    .training
                    .as_ref()
                    .ok_or_else(|| "this node cannot coordinate training".to_string())?;
                // The coordinator's tasks and the actors it spawns here inherit this span.
                let coordinator = tracing::info_span!(
                    "actor",
                    role = "coordinator",
                    run = tracing::field::Empty,
                    lineage = tracing::field::Empty
                );
                ctx.data.runtime.block_on(tracing::Instrument::instrument(
                    crate::train::job::run(ctx, job, spec_toml, cancelled),
                    coordinator,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmark_tasks_report_their_measurement() {
        let r = KernelRunner::new(NodeId::from("n1"));
        let job = JobId::from("job-1");
        let kind = JobKind::Benchmark {
            peers: 1,
            matrix_size: 48,
            iterations: 2,
        };
        let out: serde_json::Value =
            serde_json::from_str(&r.run(&job, &kind, 4, &AtomicBool::new(false)).unwrap()).unwrap();
        assert_eq!(out["task"], 4);
        assert_eq!(out["node"], "n1");
        assert_eq!(out["iterations"], 2);
        assert!(out["gflops"].as_f64().unwrap() > 0.0);
        assert_eq!(
            r.run(&job, &kind, 4, &AtomicBool::new(true)).unwrap_err(),
            "cancelled"
        );
    }
}
