//! From a [`TrainSpec`] to the settings of each role: the coordinator's [`dispatch::Config`],
//! each shard's [`param_server::core::Config`] and each trainer's [`trainer::Config`].
//!
//! The learning-rate schedule needs the number of optimizer updates. With `max_steps` that is
//! the number. Otherwise it is estimated from the epochs: in sync mode one update per global
//! batch, with the global batch at `workers_min` workers when it follows the worker count (more
//! workers mean fewer, larger steps: the schedule then ends at a rate above zero rather than
//! reaching zero early); in async and ssp modes one update per worker batch.

use std::time::Duration;

use flotilla_protocol::training::{Consistency, Precision, TrainSpec, WorkerId};
use flotilla_protocol::validation::FieldErrors;

use super::dispatch;
use super::elastic;
use super::optim::{clip_config, shards_clip, ClipConfig, LrPlan};
use super::param_server;
use super::trainer;

/// The settings of every role of one job.
#[derive(Debug, Clone)]
pub struct Plan {
    pub dispatch: dispatch::Config,
    pub lr: LrPlan,
    pub consistency: Consistency,
    pub precision: Precision,
    pub clip: Option<ClipConfig>,
    pub max_steps: Option<u64>,
    pub max_consecutive_nonfinite: u32,
    pub ps_shards: u32,
    pub save_every: u64,
}

impl Plan {
    /// The plan of a valid spec over a dataset of `records` records.
    pub fn new(spec: &TrainSpec, records: u64) -> Result<Plan, FieldErrors> {
        spec.validate()?;
        let a = &spec.args;
        let c = &spec.cluster;
        let consistency = c.consistency();
        let per_update = match consistency {
            Consistency::Sync => spec.global_batch(c.workers_min),
            Consistency::Async | Consistency::Ssp(_) => a.per_device_batch,
        };
        let from_epochs = a
            .epochs
            .map(|e| u64::from(e) * records.div_ceil(u64::from(per_update.max(1))));
        let total = match (a.max_steps, from_epochs) {
            (Some(m), Some(e)) => m.min(e),
            (Some(m), None) => m,
            (None, Some(e)) => e,
            (None, None) => 0, // refused by validation
        };
        Ok(Plan {
            dispatch: dispatch::Config {
                records,
                seed: a.seed,
                epochs: a.epochs,
                global_batch: a.global_batch,
                per_device_batch: a.per_device_batch,
                consistency,
                elastic: elastic::Config {
                    workers_min: c.workers_min,
                    workers_max: c.workers_max,
                    below_min_timeout: c.below_min_timeout,
                },
                speed_alpha: 0.3,
                series_capacity: 10_000,
                keep_ledger: false,
                save_every: a.save_every,
            },
            lr: LrPlan {
                peak: a.learning_rate,
                warmup: a.warmup_steps,
                total,
                decay: a.schedule,
            },
            consistency,
            precision: a.precision,
            clip: clip_config(a.clip_norm, a.adaptive_clip),
            max_steps: a.max_steps,
            max_consecutive_nonfinite: spec.nan.max_consecutive_nonfinite,
            ps_shards: c.ps_shards,
            save_every: a.save_every,
        })
    }

    /// Whether clipping is the shards' (sync) rather than the trainers' (async, ssp).
    fn clip_sync(&self) -> bool {
        shards_clip(self.consistency)
    }

    /// Shard `shard`'s settings.
    pub fn shard(&self, shard: u32) -> param_server::core::Config {
        param_server::core::Config {
            shard,
            consistency: self.consistency,
            max_consecutive_nonfinite: self.max_consecutive_nonfinite,
            lr: self.lr,
            save_every: self.save_every,
            // Sync steps are clipped on their mean gradient by the shards; see
            // `param_server::core`.
            clip: self.clip_sync().then_some(self.clip).flatten(),
        }
    }

    /// Worker `worker`'s settings.
    pub fn trainer(&self, worker: WorkerId) -> trainer::Config {
        trainer::Config {
            worker,
            sync: self.consistency == Consistency::Sync,
            precision: self.precision,
            clip: (!self.clip_sync()).then_some(self.clip).flatten(),
            max_steps: self.max_steps,
            lr: self.lr,
            idle_wait: Duration::from_millis(20),
        }
    }
}

#[cfg(test)]
mod tests {
    use flotilla_protocol::training::{LrSchedule, Mode};

    use super::*;

    fn spec() -> TrainSpec {
        let mut s = TrainSpec::default();
        s.dataset.name = "d@1".into();
        s.args.per_device_batch = 10;
        s.args.epochs = Some(2);
        s.args.learning_rate = 0.1;
        s.args.schedule = LrSchedule::Linear;
        s.cluster.workers_min = 2;
        s
    }

    #[test]
    fn the_schedule_covers_the_run() {
        let p = Plan::new(&spec(), 95).unwrap();
        // Sync: global batch 20 at the minimum of 2 workers, 5 steps an epoch.
        assert_eq!(p.lr.total, 10);
        assert_eq!(p.shard(1).shard, 1);
        assert!(p.trainer(WorkerId(3)).sync);
        let mut s = spec();
        s.cluster.mode = Mode::Async;
        assert_eq!(Plan::new(&s, 95).unwrap().lr.total, 20);
        s.args.max_steps = Some(7);
        assert_eq!(Plan::new(&s, 95).unwrap().lr.total, 7);
        s.args.learning_rate = -1.0;
        assert!(Plan::new(&s, 95)
            .unwrap_err()
            .mentions("args.learning_rate"));
    }
}
