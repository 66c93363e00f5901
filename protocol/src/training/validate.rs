//! Field-level validation of a [`TrainSpec`].

use super::spec::{Architecture, Mode, ModelSource, TrainSpec, Versioned};
use crate::validation::{Checker, FieldErrors};

/// Most workers one job may ask for.
pub const MAX_WORKERS: u32 = 4096;
/// Most parameter-server shards one job may ask for.
pub const MAX_PS_SHARDS: u32 = 1024;
/// Longest folder path accepted for a Hugging Face import.
pub const MAX_PATH_LEN: usize = 4096;

impl TrainSpec {
    /// Checks every field; the errors name them (`args.learning_rate`, `cluster.staleness`).
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut c = Checker::new();
        self.check_model(&mut c);
        self.check_dataset(&mut c);
        self.check_args(&mut c);
        self.check_cluster(&mut c);
        c.check(
            self.nan.max_consecutive_nonfinite >= 1,
            "nan.max_consecutive_nonfinite",
            "must be at least 1",
        );
        c.finish()
    }

    fn check_model(&self, c: &mut Checker) {
        match &self.model {
            ModelSource::Registered(s) => {
                if let Err(m) = Versioned::parse(s) {
                    c.push("model.registered", m);
                }
            }
            ModelSource::HfFolder(p) => {
                c.check(!p.is_empty(), "model.hf_folder", "must not be empty");
                c.text("model.hf_folder", p, MAX_PATH_LEN);
            }
            ModelSource::New(m) => {
                c.check(
                    (2..=1 << 20).contains(&m.vocab_size),
                    "model.new.vocab_size",
                    "must be between 2 and 1048576",
                );
                c.check(
                    (1..=65_536).contains(&m.hidden_size),
                    "model.new.hidden_size",
                    "must be between 1 and 65536",
                );
                c.check(
                    (1..=1024).contains(&m.layers),
                    "model.new.layers",
                    "must be between 1 and 1024",
                );
                if m.heads == 0 || m.heads > 1024 {
                    c.push("model.new.heads", "must be between 1 and 1024");
                } else if m.hidden_size % m.heads != 0 {
                    c.push(
                        "model.new.heads",
                        format!("must divide hidden_size ({})", m.hidden_size),
                    );
                }
                c.check(
                    (1..=1 << 20).contains(&m.max_seq_len),
                    "model.new.max_seq_len",
                    "must be between 1 and 1048576",
                );
                match (m.architecture, m.num_labels) {
                    (Architecture::Classifier, Some(n)) if !(2..=1 << 16).contains(&n) => {
                        c.push("model.new.num_labels", "must be between 2 and 65536")
                    }
                    (Architecture::Classifier, None) => {
                        c.push("model.new.num_labels", "a classifier needs num_labels")
                    }
                    (Architecture::Decoder, Some(_)) => {
                        c.push("model.new.num_labels", "only a classifier has num_labels")
                    }
                    _ => {}
                }
            }
        }
    }

    fn check_dataset(&self, c: &mut Checker) {
        let d = &self.dataset;
        if let Err(m) = Versioned::parse(&d.name) {
            c.push("dataset.name", m);
        }
        c.name("dataset.text_field", &d.text_field);
        c.check(
            (0.0..=0.5).contains(&d.eval_fraction),
            "dataset.eval_fraction",
            "must be between 0 and 0.5",
        );
        if let Some(m) = &self.output.model {
            c.name("output.model", m);
        }
        if let Some(l) = &d.label_field {
            c.name("dataset.label_field", l);
            c.check(
                *l != d.text_field,
                "dataset.label_field",
                "must differ from text_field",
            );
        }
        if let ModelSource::New(m) = &self.model {
            if m.architecture == Architecture::Classifier {
                c.check(
                    d.label_field.is_some(),
                    "dataset.label_field",
                    "a classifier trains on labels: name the label field",
                );
            }
        }
    }

    fn check_args(&self, c: &mut Checker) {
        let a = &self.args;
        c.check(
            (1..=1 << 20).contains(&a.per_device_batch),
            "args.per_device_batch",
            "must be between 1 and 1048576",
        );
        if let Some(g) = a.global_batch {
            c.check(
                g >= self.cluster.workers_max.max(1),
                "args.global_batch",
                format!(
                    "every worker needs at least one sample: must be at least cluster.workers_max ({})",
                    self.cluster.workers_max
                ),
            );
            c.check(
                g <= 1 << 24,
                "args.global_batch",
                "must be at most 16777216",
            );
        }
        match (a.epochs, a.max_steps) {
            (None, None) => c.push("args.epochs", "give epochs, max_steps or both"),
            (Some(e), _) if !(1..=100_000).contains(&e) => {
                c.push("args.epochs", "must be between 1 and 100000")
            }
            _ => {}
        }
        if a.max_steps == Some(0) {
            c.push("args.max_steps", "must be at least 1");
        }
        c.check(
            a.learning_rate.is_finite() && a.learning_rate > 0.0 && a.learning_rate <= 10.0,
            "args.learning_rate",
            "must be a number in (0, 10]",
        );
        if let Some(m) = a.max_steps {
            c.check(
                a.warmup_steps <= m,
                "args.warmup_steps",
                format!("must not exceed max_steps ({m})"),
            );
        }
        c.check(
            a.weight_decay.is_finite() && (0.0..=1.0).contains(&a.weight_decay),
            "args.weight_decay",
            "must be a number in [0, 1]",
        );
        if let Some(n) = a.clip_norm {
            c.check(
                n.is_finite() && n > 0.0,
                "args.clip_norm",
                "must be a positive number",
            );
        }
        if let Some(ac) = a.adaptive_clip {
            c.check(
                ac.factor.is_finite() && ac.factor > 0.0 && ac.factor <= 100.0,
                "args.adaptive_clip.factor",
                "must be a number in (0, 100]",
            );
            c.check(
                (0.0..=1.0).contains(&ac.percentile),
                "args.adaptive_clip.percentile",
                "must be a number in [0, 1]",
            );
            c.check(
                (1..=100_000).contains(&ac.window),
                "args.adaptive_clip.window",
                "must be between 1 and 100000",
            );
            c.check(
                (1..=ac.window).contains(&ac.min_history),
                "args.adaptive_clip.min_history",
                "must be between 1 and window",
            );
        }
    }

    fn check_cluster(&self, c: &mut Checker) {
        let k = &self.cluster;
        c.check(
            (1..=MAX_WORKERS).contains(&k.workers_min),
            "cluster.workers_min",
            format!("must be between 1 and {MAX_WORKERS}"),
        );
        if !(1..=MAX_WORKERS).contains(&k.workers_max) {
            c.push(
                "cluster.workers_max",
                format!("must be between 1 and {MAX_WORKERS}"),
            );
        } else if k.workers_max < k.workers_min {
            c.push(
                "cluster.workers_max",
                format!("must be at least workers_min ({})", k.workers_min),
            );
        }
        c.check(
            (1..=MAX_PS_SHARDS).contains(&k.ps_shards),
            "cluster.ps_shards",
            format!("must be between 1 and {MAX_PS_SHARDS}"),
        );
        match (k.mode, k.staleness) {
            (Mode::Ssp, None) => {
                c.push("cluster.staleness", "mode \"ssp\" needs a staleness bound")
            }
            (Mode::Ssp, Some(s)) if !(1..=1000).contains(&s) => {
                c.push("cluster.staleness", "must be between 1 and 1000")
            }
            (Mode::Sync | Mode::Async, Some(_)) => c.push(
                "cluster.staleness",
                "only mode \"ssp\" takes a staleness bound",
            ),
            _ => {}
        }
        c.check(
            k.below_min_timeout.as_millis() >= 1,
            "cluster.below_min_timeout",
            "must be at least 1ms",
        );
    }

    /// The global batch with `workers` active workers.
    pub fn global_batch(&self, workers: u32) -> u32 {
        self.args
            .global_batch
            .unwrap_or_else(|| self.args.per_device_batch.saturating_mul(workers.max(1)))
    }
}
