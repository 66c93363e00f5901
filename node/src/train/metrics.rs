//! Live training metrics: the coordinator of each `train` job publishes its latest step here
//! (`flotilla_train_*` in `/metrics`, per job and per worker) and as job events, which
//! `flotilla job logs ID --follow` shows with a progress bar.

use flotilla_protocol::training::StepRecord;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// A job.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: String,
}

/// A worker of a job.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    pub job: String,
    pub worker: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// Jobs whose series stay in `/metrics` after they finish (the most recent ones), so the final
/// values can still be scraped while finished jobs do not pile up in every scrape.
const KEEP_FINISHED: usize = 16;

/// The training gauges of this node (the jobs it coordinates).
#[derive(Debug, Clone, Default)]
pub struct TrainMetrics {
    /// Finished jobs still exported, oldest first, with their worker counts.
    finished: Arc<Mutex<VecDeque<(String, u32)>>>,
    pub step: Family<JobLabel, F64Gauge>,
    pub total_steps: Family<JobLabel, F64Gauge>,
    pub loss: Family<JobLabel, F64Gauge>,
    pub learning_rate: Family<JobLabel, F64Gauge>,
    pub grad_norm: Family<JobLabel, F64Gauge>,
    pub samples_per_second: Family<JobLabel, F64Gauge>,
    pub worker_step_seconds: Family<WorkerLabel, F64Gauge>,
    pub worker_batch_share: Family<WorkerLabel, F64Gauge>,
    pub eval_accuracy: Family<JobLabel, F64Gauge>,
    pub eval_macro_f1: Family<JobLabel, F64Gauge>,
}

impl TrainMetrics {
    /// Registers every gauge under `flotilla_train_`.
    pub fn register(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("flotilla_train");
        let m = TrainMetrics::default();
        r.register(
            "step",
            "Latest completed step of a training job this node coordinates",
            m.step.clone(),
        );
        r.register(
            "total_steps",
            "Steps the job is planned to run",
            m.total_steps.clone(),
        );
        r.register(
            "loss",
            "Sample-weighted mean training loss of the latest step",
            m.loss.clone(),
        );
        r.register(
            "learning_rate",
            "Learning rate of the latest step",
            m.learning_rate.clone(),
        );
        r.register(
            "grad_norm",
            "Mean gradient norm of the latest step",
            m.grad_norm.clone(),
        );
        r.register(
            "samples_per_second",
            "Samples of the latest step over its slowest worker's compute time",
            m.samples_per_second.clone(),
        );
        r.register(
            "worker_step_seconds",
            "Each worker's compute time in the latest step",
            m.worker_step_seconds.clone(),
        );
        r.register(
            "worker_batch_share",
            "Samples each worker was given in the latest step (its share of the global batch)",
            m.worker_batch_share.clone(),
        );
        r.register(
            "eval_accuracy",
            "Held-out accuracy of the latest evaluation during the run (args.eval_every)",
            m.eval_accuracy.clone(),
        );
        r.register(
            "eval_macro_f1",
            "Held-out macro-F1 of the latest evaluation during the run (args.eval_every)",
            m.eval_macro_f1.clone(),
        );
        m
    }

    /// Publishes a held-out evaluation of job `job` made during the run.
    pub fn observe_eval(&self, job: &str, accuracy: f64, macro_f1: f64) {
        let l = JobLabel {
            job: job.to_string(),
        };
        self.eval_accuracy.get_or_create(&l).set(accuracy);
        self.eval_macro_f1.get_or_create(&l).set(macro_f1);
    }

    /// Publishes `rec` as job `job`'s latest step of `total`.
    pub fn observe(&self, job: &str, rec: &StepRecord, total: u64) {
        let l = JobLabel {
            job: job.to_string(),
        };
        self.step.get_or_create(&l).set(rec.step as f64);
        self.total_steps.get_or_create(&l).set(total as f64);
        self.loss.get_or_create(&l).set(f64::from(rec.loss));
        self.learning_rate.get_or_create(&l).set(f64::from(rec.lr));
        self.grad_norm
            .get_or_create(&l)
            .set(f64::from(rec.grad_norm));
        self.samples_per_second
            .get_or_create(&l)
            .set(rec.samples_per_s);
        for w in &rec.workers {
            let wl = WorkerLabel {
                job: job.to_string(),
                worker: w.worker.0.to_string(),
            };
            self.worker_step_seconds
                .get_or_create(&wl)
                .set(w.step_time_ms / 1000.0);
            self.worker_batch_share
                .get_or_create(&wl)
                .set(f64::from(w.share));
        }
    }

    /// Marks a job finished: its series stay until [`KEEP_FINISHED`] later jobs finished.
    pub fn finished(&self, job: &str, workers: u32) {
        let evicted = {
            let mut f = self.finished.lock().unwrap_or_else(|e| e.into_inner());
            f.push_back((job.to_string(), workers));
            if f.len() > KEEP_FINISHED {
                f.pop_front()
            } else {
                None
            }
        };
        if let Some((old, workers)) = evicted {
            self.forget(&old, workers);
        }
    }

    /// Drops a job's series.
    pub fn forget(&self, job: &str, workers: u32) {
        let l = JobLabel {
            job: job.to_string(),
        };
        for f in [
            &self.step,
            &self.total_steps,
            &self.loss,
            &self.learning_rate,
            &self.grad_norm,
            &self.samples_per_second,
            &self.eval_accuracy,
            &self.eval_macro_f1,
        ] {
            f.remove(&l);
        }
        for w in 0..workers {
            let wl = WorkerLabel {
                job: job.to_string(),
                worker: w.to_string(),
            };
            self.worker_step_seconds.remove(&wl);
            self.worker_batch_share.remove(&wl);
        }
    }
}

/// One step as a job event line: `step 12/90 loss 1.2345 lr 3.00e-3 grad_norm 0.912
/// 812 samples/s | worker 0: 10 samples 12 ms, …`. The CLI draws its progress bar from the
/// leading `step N/M`.
pub fn event_text(rec: &StepRecord, total: u64) -> String {
    let workers: Vec<String> = rec
        .workers
        .iter()
        .map(|w| {
            format!(
                "worker {}: {} samples {:.0} ms",
                w.worker.0, w.share, w.step_time_ms
            )
        })
        .collect();
    format!(
        "step {}/{} loss {:.4} lr {:.2e} grad_norm {:.3} {:.0} samples/s | {}",
        rec.step,
        total,
        rec.loss,
        rec.lr,
        rec.grad_norm,
        rec.samples_per_s,
        workers.join(", ")
    )
}

/// The `(step, total)` of an event written by [`event_text`].
pub fn parse_progress(text: &str) -> Option<(u64, u64)> {
    let rest = text.strip_prefix("step ")?;
    let fraction = rest.split_whitespace().next()?;
    let (step, total) = fraction.split_once('/')?;
    Some((step.parse().ok()?, total.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_protocol::training::{WorkerId, WorkerStat};

    #[test]
    fn events_carry_the_progress_the_cli_reads() {
        let rec = StepRecord {
            step: 12,
            loss: 1.23456,
            lr: 0.003,
            grad_norm: 0.9123,
            samples: 30,
            samples_per_s: 812.4,
            workers: vec![WorkerStat {
                worker: WorkerId(1),
                step_time_ms: 12.2,
                share: 10,
            }],
        };
        let t = event_text(&rec, 90);
        assert!(t.starts_with("step 12/90 loss 1.2346 lr 3.00e-3"), "{t}");
        assert!(t.contains("worker 1: 10 samples 12 ms"), "{t}");
        assert_eq!(parse_progress(&t), Some((12, 90)));
        assert_eq!(parse_progress("task 0 started on n1"), None);

        let m = TrainMetrics::default();
        m.observe("job-1", &rec, 90);
        let l = JobLabel {
            job: "job-1".into(),
        };
        assert_eq!(m.step.get_or_create(&l).get(), 12.0);
        assert!((m.loss.get_or_create(&l).get() - 1.23456).abs() < 1e-6);
        m.forget("job-1", 2);
        assert_eq!(
            m.step.get_or_create(&l).get(),
            0.0,
            "a fresh gauge after forget"
        );
    }
}
