//! The job spec users write, and its translation into a [`JobSpec`].
//!
//! ```toml
//! kind = "benchmark"            # the only kind so far
//! priority = "batch"            # batch | training | interactive | inference (default batch)
//! idempotency_key = "bench-42"  # optional: resubmitting returns the same job
//! anti_affinity = "one-per-node" # none | one-per-node | max-per-node (with max_per_node)
//! preferred_nodes = []          # node ids placement tries first (data locality)
//!
//! [resources]                   # per task (defaults: 1 core, 256 MiB, 0 GPUs)
//! cores = 1
//! ram_mib = 256
//! gpus = 0
//!
//! [benchmark]
//! peers = 3                     # one task on each of this many nodes
//! matrix_size = 256             # default 256
//! iterations = 10               # default 10
//! ```
//!
//! Every problem is reported by field, all at once, with the same names as the file's.

use serde::{Deserialize, Serialize};

use flotilla_protocol::jobs::{AntiAffinity, JobKind, JobSpec, Priority, Resources};
use flotilla_protocol::validation::{FieldError, FieldErrors};
use flotilla_protocol::NodeId;

/// Resources of one task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourcesDoc {
    pub cores: Option<u32>,
    pub ram_mib: Option<u64>,
    pub gpus: Option<u32>,
}

/// The `[benchmark]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BenchmarkDoc {
    pub peers: Option<u32>,
    pub matrix_size: Option<u32>,
    pub iterations: Option<u32>,
}

/// A job spec as written by a user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpecDoc {
    pub kind: String,
    pub priority: Option<String>,
    pub tasks: Option<u32>,
    pub resources: ResourcesDoc,
    pub anti_affinity: Option<String>,
    pub max_per_node: Option<u32>,
    pub preferred_nodes: Vec<String>,
    pub idempotency_key: Option<String>,
    pub benchmark: Option<BenchmarkDoc>,
    /// The `[train]` section: a training spec (model, dataset, args, cluster), for `train` jobs.
    pub train: Option<serde_json::Value>,
}

fn push(errors: &mut Vec<FieldError>, field: &str, message: impl Into<String>) {
    errors.push(FieldError {
        field: field.to_string(),
        message: message.into(),
    });
}

impl SpecDoc {
    /// Parses TOML text; a syntax or type error names its place.
    pub fn from_toml(text: &str) -> Result<SpecDoc, FieldErrors> {
        toml::from_str(text).map_err(|e| {
            FieldErrors(vec![FieldError {
                field: "spec".into(),
                message: e.message().to_string(),
            }])
        })
    }

    /// The protocol spec, or every bad field.
    pub fn to_spec(&self) -> Result<JobSpec, FieldErrors> {
        let mut errors = Vec::new();
        let priority = match self.priority.as_deref().unwrap_or("batch") {
            "batch" => Priority::Batch,
            "training" => Priority::Training,
            "interactive" => Priority::Interactive,
            "inference" => Priority::Inference,
            other => {
                push(
                    &mut errors,
                    "priority",
                    format!(
                        "unknown class {other:?}: one of batch, training, interactive, inference"
                    ),
                );
                Priority::Batch
            }
        };
        let (kind, default_tasks, default_affinity) = match self.kind.as_str() {
            "benchmark" => {
                let b = self.benchmark.clone().unwrap_or_default();
                if self.benchmark.is_none() {
                    push(
                        &mut errors,
                        "benchmark",
                        "a benchmark job needs a [benchmark] section",
                    );
                }
                let peers = b.peers.unwrap_or(0);
                if b.peers.is_none() && self.benchmark.is_some() {
                    push(&mut errors, "benchmark.peers", "is required");
                }
                (
                    Some(JobKind::Benchmark {
                        peers,
                        matrix_size: b.matrix_size.unwrap_or(256),
                        iterations: b.iterations.unwrap_or(10),
                    }),
                    peers,
                    AntiAffinity::OnePerNode,
                )
            }
            "train" => match &self.train {
                None => {
                    push(
                        &mut errors,
                        "train",
                        "a training job needs a [train] section",
                    );
                    (None, 1, AntiAffinity::None)
                }
                Some(section) => match flotilla_protocol::toml_text::check_quote_runs(section)
                    .and_then(|()| toml::to_string(section).map_err(|e| e.to_string()))
                {
                    Ok(spec_toml) => (Some(JobKind::Train { spec_toml }), 1, AntiAffinity::None),
                    Err(e) => {
                        push(
                            &mut errors,
                            "train",
                            format!("not a table of settings: {e}"),
                        );
                        (None, 1, AntiAffinity::None)
                    }
                },
            },
            "" => {
                push(
                    &mut errors,
                    "kind",
                    "is required (supported: benchmark, train)",
                );
                (None, 1, AntiAffinity::None)
            }
            other => {
                push(
                    &mut errors,
                    "kind",
                    format!("unknown job kind {other:?} (supported: benchmark, train)"),
                );
                (None, 1, AntiAffinity::None)
            }
        };
        let anti_affinity = match (self.anti_affinity.as_deref(), self.max_per_node) {
            (None, None) => default_affinity,
            (None | Some("max-per-node"), Some(n)) => AntiAffinity::MaxPerNode(n),
            (Some("max-per-node"), None) => {
                push(
                    &mut errors,
                    "max_per_node",
                    "is required with anti_affinity = \"max-per-node\"",
                );
                default_affinity
            }
            (Some("none"), None) => AntiAffinity::None,
            (Some("one-per-node"), None) => AntiAffinity::OnePerNode,
            (Some(other), _) => {
                push(
                    &mut errors,
                    "anti_affinity",
                    format!("unknown rule {other:?}: one of none, one-per-node, max-per-node (max_per_node only with max-per-node)"),
                );
                default_affinity
            }
        };
        let spec = JobSpec {
            kind: kind.unwrap_or(JobKind::Benchmark {
                peers: 1,
                matrix_size: 1,
                iterations: 1,
            }),
            priority,
            resources: Resources {
                cores: self.resources.cores.unwrap_or(1),
                ram_bytes: self
                    .resources
                    .ram_mib
                    .unwrap_or(256)
                    .saturating_mul(1 << 20),
                gpus: self.resources.gpus.unwrap_or(0),
            },
            tasks: self.tasks.unwrap_or(default_tasks),
            anti_affinity,
            preferred_nodes: self
                .preferred_nodes
                .iter()
                .map(|n| NodeId(n.clone()))
                .collect(),
            idempotency_key: self.idempotency_key.clone(),
        };
        if let Err(FieldErrors(more)) = spec.validate() {
            for e in more {
                // Report under the file's names, not the protocol's.
                let field = e
                    .field
                    .replace("kind.benchmark.", "benchmark.")
                    .replace("kind.train.", "train.")
                    .replace("resources.ram_bytes", "resources.ram_mib")
                    .replace("anti_affinity.max_per_node", "max_per_node");
                if !errors.iter().any(|x: &FieldError| x.field == field) {
                    errors.push(FieldError {
                        field,
                        message: e.message,
                    });
                }
            }
        }
        if errors.is_empty() {
            Ok(spec)
        } else {
            Err(FieldErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A string the TOML writer cannot write back (a run of 266 quotes: the writer counts runs
    /// in a `u8`) is refused with the field named, not a panic.
    #[test]
    fn a_train_section_the_toml_writer_cannot_write_is_refused() {
        let text = format!("kind = \"train\"\n[train]\nel = '{}'\n", "\"".repeat(266));
        let doc = SpecDoc::from_toml(&text).unwrap();
        let e = doc.to_spec().unwrap_err();
        let shown = format!("{e:?}");
        assert!(
            shown.contains("train") && shown.contains("quote characters"),
            "{shown}"
        );
    }

    #[test]
    fn a_minimal_benchmark_file_gets_defaults() {
        let doc = SpecDoc::from_toml("kind = \"benchmark\"\n[benchmark]\npeers = 3\n").unwrap();
        let spec = doc.to_spec().unwrap();
        assert_eq!(spec.tasks, 3);
        assert_eq!(spec.anti_affinity, AntiAffinity::OnePerNode);
        assert_eq!(spec.priority, Priority::Batch);
        assert_eq!(spec.resources.ram_bytes, 256 << 20);
        assert_eq!(
            spec.kind,
            JobKind::Benchmark {
                peers: 3,
                matrix_size: 256,
                iterations: 10
            }
        );
    }

    #[test]
    fn every_bad_field_is_named_with_the_files_names() {
        let doc = SpecDoc::from_toml(
            "kind = \"benchmark\"\npriority = \"urgent\"\nanti_affinity = \"spread\"\n\
             [resources]\ncores = 0\nram_mib = 0\n[benchmark]\npeers = 2\nmatrix_size = 0\n",
        )
        .unwrap();
        let e = doc.to_spec().unwrap_err();
        for f in [
            "priority",
            "anti_affinity",
            "resources.cores",
            "resources.ram_mib",
            "benchmark.matrix_size",
        ] {
            assert!(e.mentions(f), "{f} missing from {e}");
        }
        let e = SpecDoc::from_toml("kind = \"compile\"\n")
            .unwrap()
            .to_spec()
            .unwrap_err();
        assert!(e.mentions("kind"));
        let e = SpecDoc::from_toml("kind = \"train\"\n")
            .unwrap()
            .to_spec()
            .unwrap_err();
        assert!(e.mentions("train"), "{e}");
        let e = SpecDoc::from_toml("kind = \"benchmark\"\n")
            .unwrap()
            .to_spec()
            .unwrap_err();
        assert!(e.mentions("benchmark"));
        let e = SpecDoc::from_toml("kind = \"benchmark\"\nbogus = 1\n").unwrap_err();
        assert!(e.mentions("spec") && e.to_string().contains("bogus"), "{e}");
    }
}
