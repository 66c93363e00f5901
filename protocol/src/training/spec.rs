//! The training job specification: what a user writes (TOML) to train or fine-tune a model.
//!
//! ```toml
//! [model]
//! registered = "gpt-small@3"          # or: hf_folder = "/models/bert" or a [model.new] table
//!
//! [dataset]
//! name = "reviews@2"
//! text_field = "text"
//! label_field = "label"
//!
//! [args]
//! per_device_batch = 16
//! epochs = 3
//! learning_rate = 3e-4
//! schedule = "cosine"
//!
//! [output]
//! model = "reviews-sentiment"          # registered as its next version
//!
//! [cluster]
//! workers_min = 2
//! workers_max = 8
//! ps_shards = 2
//! mode = "ssp"
//! staleness = 2
//! below_min_timeout = "2m"
//! ```
//!
//! Every section has defaults, unknown keys are refused, and [`TrainSpec::validate`] reports
//! every bad field at once with its dotted path (`args.learning_rate`, `cluster.staleness`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The model to train: a new one from a configuration, a registered version to fine-tune, or a
/// Hugging Face folder (safetensors + tokenizer.json + config.json) to import and fine-tune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSource {
    /// A fresh model built from this configuration.
    New(NewModel),
    /// A registered model version, written `name@version`.
    Registered(String),
    /// A Hugging Face model folder on the node that accepts the submission: that node
    /// registers it and sends the spec on naming the version (`Registered`), so the folder's
    /// path never travels.
    HfFolder(String),
}

impl Default for ModelSource {
    fn default() -> Self {
        ModelSource::New(NewModel::default())
    }
}

/// The architectures a new model may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// A GPT-style decoder language model.
    #[default]
    Decoder,
    /// A BERT-style encoder with a classification head.
    Classifier,
}

/// The shape of a new model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewModel {
    pub architecture: Architecture,
    pub vocab_size: u32,
    pub hidden_size: u32,
    pub layers: u32,
    pub heads: u32,
    pub max_seq_len: u32,
    /// Classes of the classification head; only for `classifier`.
    pub num_labels: Option<u32>,
}

impl Default for NewModel {
    fn default() -> Self {
        Self {
            architecture: Architecture::Decoder,
            vocab_size: 50_257,
            hidden_size: 256,
            layers: 4,
            heads: 4,
            max_seq_len: 256,
            num_labels: None,
        }
    }
}

/// The dataset version to train on and the fields to read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetRef {
    /// `name@version`.
    pub name: String,
    pub text_field: String,
    /// The label field, for classifiers.
    pub label_field: Option<String>,
    /// Share of the records held out of training to evaluate the result (chosen by a hash of
    /// the record id and the seed, so the split is the same on every run with that seed).
    pub eval_fraction: f32,
}

impl Default for DatasetRef {
    fn default() -> Self {
        Self {
            name: String::new(),
            text_field: "text".into(),
            label_field: None,
            eval_fraction: 0.1,
        }
    }
}

/// Where the trained model goes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputSpec {
    /// The model name the result is registered under, as a new version (default: the dataset's
    /// name followed by `-classifier`).
    pub model: Option<String>,
}

/// The learning-rate decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// Straight down to zero at the last step.
    Linear,
    /// Half a cosine down to zero at the last step.
    #[default]
    Cosine,
}

/// Number format of compute and of gradients on the wire; master weights stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

/// The optimizer the parameter servers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    #[default]
    Adamw,
    Sgd,
}

/// Clipping by global norm with a threshold that follows the run: `factor` times the
/// `percentile` of the last `window` global norms, capped by `clip_norm` when that is set.
/// Until `min_history` norms have been seen the threshold is `clip_norm` alone (no clipping
/// without one). A fixed threshold has to be tuned per model and goes stale as gradients
/// shrink; this one does not.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveClip {
    pub factor: f32,
    /// In [0, 1]; 0.5 is the median.
    pub percentile: f32,
    pub window: u32,
    pub min_history: u32,
}

impl Default for AdaptiveClip {
    fn default() -> Self {
        Self {
            factor: 2.0,
            percentile: 0.9,
            window: 200,
            min_history: 20,
        }
    }
}

/// Settings in the spirit of Hugging Face's `TrainingArguments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingArgs {
    /// Samples per worker per step when shares are equal.
    pub per_device_batch: u32,
    /// Fixed global batch (split among workers by throughput); when absent it is
    /// `per_device_batch` times the number of active workers.
    pub global_batch: Option<u32>,
    /// Passes over the dataset; at least one of `epochs` and `max_steps` is given.
    pub epochs: Option<u32>,
    /// Optimizer steps at most.
    pub max_steps: Option<u64>,
    pub optimizer: OptimizerKind,
    pub learning_rate: f32,
    pub warmup_steps: u64,
    pub weight_decay: f32,
    pub schedule: LrSchedule,
    /// Clip to this global L2 norm: in sync mode each step's mean gradient (on the shards), in
    /// async and ssp each worker's gradient; none when absent. With `adaptive_clip` it caps the
    /// adaptive threshold.
    pub clip_norm: Option<f32>,
    /// Clip to a threshold that follows the run (see [`AdaptiveClip`]); none when absent.
    pub adaptive_clip: Option<AdaptiveClip>,
    /// Precision of gradients on the wire: f16 or bf16 halve the bytes pushed; the shards keep
    /// f32 master weights and optimizer state.
    pub precision: Precision,
    /// Evaluate every this many steps (0: never).
    pub eval_every: u64,
    /// Checkpoint every this many steps (0: never).
    pub save_every: u64,
    /// Seeds the data order, initialisation and dropout.
    pub seed: u64,
}

impl Default for TrainingArgs {
    fn default() -> Self {
        Self {
            per_device_batch: 8,
            global_batch: None,
            epochs: Some(1),
            max_steps: None,
            optimizer: OptimizerKind::Adamw,
            learning_rate: 5e-5,
            warmup_steps: 0,
            weight_decay: 0.0,
            schedule: LrSchedule::Cosine,
            clip_norm: Some(1.0),
            adaptive_clip: None,
            precision: Precision::F32,
            eval_every: 0,
            save_every: 500,
            seed: 42,
        }
    }
}

/// How parameter servers combine the gradients of workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Bulk-synchronous: one update per step from every active worker's gradient.
    #[default]
    Sync,
    /// Every gradient is applied when it arrives.
    Async,
    /// Stale-synchronous: as async, but no worker runs more than `staleness` steps ahead of
    /// the slowest.
    Ssp,
}

/// The consistency model with its parameter, as the servers use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    Sync,
    Async,
    /// Stale-synchronous with this bound (steps a worker may run ahead of the slowest).
    Ssp(u32),
}

/// Where and how the job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSpec {
    pub workers_min: u32,
    pub workers_max: u32,
    pub ps_shards: u32,
    pub mode: Mode,
    /// Only for `mode = "ssp"`.
    pub staleness: Option<u32>,
    /// The job fails when it has had fewer than `workers_min` workers for this long.
    #[serde(with = "humantime_serde")]
    pub below_min_timeout: Duration,
    /// Each worker's share of the global batch follows its measured throughput (`false`: equal
    /// shares, for comparison).
    pub adaptive_shares: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            workers_min: 1,
            workers_max: 8,
            ps_shards: 1,
            mode: Mode::Sync,
            staleness: None,
            below_min_timeout: Duration::from_secs(300),
            adaptive_shares: true,
        }
    }
}

impl ClusterSpec {
    /// The mode with its staleness bound (0 when an ssp spec lacks one; validation refuses it).
    pub fn consistency(&self) -> Consistency {
        match self.mode {
            Mode::Sync => Consistency::Sync,
            Mode::Async => Consistency::Async,
            Mode::Ssp => Consistency::Ssp(self.staleness.unwrap_or(0)),
        }
    }
}

/// What to do about non-finite losses and gradients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NanPolicy {
    /// Steps with a non-finite loss or gradient are skipped; this many in a row fail the job.
    pub max_consecutive_nonfinite: u32,
}

impl Default for NanPolicy {
    fn default() -> Self {
        Self {
            max_consecutive_nonfinite: 10,
        }
    }
}

/// A training job as submitted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSpec {
    pub model: ModelSource,
    pub dataset: DatasetRef,
    pub args: TrainingArgs,
    pub cluster: ClusterSpec,
    pub nan: NanPolicy,
    pub output: OutputSpec,
}

impl TrainSpec {
    /// The model name the result is registered under.
    pub fn output_model(&self) -> String {
        match &self.output.model {
            Some(m) => m.clone(),
            None => {
                let dataset = self
                    .dataset
                    .name
                    .rsplit_once('@')
                    .map_or(self.dataset.name.as_str(), |(n, _)| n);
                format!("{dataset}-classifier")
            }
        }
    }
}

/// A `name@version` reference, parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Versioned {
    pub name: String,
    pub version: u64,
}

impl Versioned {
    /// Parses `name@version`: a valid name and a version of at least 1.
    pub fn parse(s: &str) -> Result<Versioned, String> {
        let Some((name, version)) = s.rsplit_once('@') else {
            return Err(format!("must be written name@version, got {s:?}"));
        };
        crate::validation::name_problem(name)?;
        let version: u64 = version
            .parse()
            .map_err(|_| format!("version {version:?} is not a whole number"))?;
        if version == 0 {
            return Err("versions start at 1".into());
        }
        Ok(Versioned {
            name: name.to_string(),
            version,
        })
    }
}

impl std::fmt::Display for Versioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}
