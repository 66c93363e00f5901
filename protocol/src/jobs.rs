//! Job specifications and the job status lattice.
//!
//! A [`JobSpec`] is what a user submits: the kind of work, its priority class, the resources
//! each task needs, how many tasks, how they may share nodes, where the data is, and an
//! idempotency key so a retried submission does not start the job twice. [`JobSpec::validate`]
//! reports every bad field at once.
//!
//! [`JobStatus`] only moves forward: `pending → placing → running → succeeded | failed |
//! cancelled`. Replicas of a job record merge statuses with [`JobStatus::join`], so whatever
//! order updates arrive in, every node ends with the same, latest state.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::validation::{Checker, FieldErrors, MAX_NAME_LEN};

/// Most tasks one job may ask for.
pub const MAX_TASKS: u32 = 4096;
/// Most preferred nodes a spec may name.
pub const MAX_PREFERRED_NODES: usize = 256;

/// A job's identity: a name-like string chosen by the node that accepted the submission.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub String);

impl JobId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl JobId {
    /// The id of the job submitted with idempotency key `key`: `job-` and 32 hex characters of
    /// the key's blake3. Every node derives the same id from the same key, so a submission
    /// retried against another node, even concurrently, lands on the same catalog record
    /// instead of starting a second job.
    pub fn for_idempotency_key(key: &str) -> JobId {
        let h = blake3::hash(key.as_bytes());
        let hex: String = h.as_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        JobId(format!("job-{hex}"))
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        JobId(s.to_string())
    }
}

/// Priority classes, lowest first: a class may preempt tasks of the classes below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// Offline work that can wait: data operations, evaluations.
    Batch,
    /// Training and fine-tuning.
    Training,
    /// Work a user is waiting on.
    Interactive,
    /// Serving live traffic.
    Inference,
}

/// Resources one task needs on its node.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Resources {
    pub cores: u32,
    pub ram_bytes: u64,
    pub gpus: u32,
}

/// A task that holds resources on a node: what placement counts as used there, and what a
/// higher priority class may preempt.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunningTask {
    pub job: JobId,
    pub task: u32,
    pub priority: Priority,
    pub resources: Resources,
}

/// How tasks of one job may share nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AntiAffinity {
    /// Any number of tasks on a node.
    None,
    /// At most one task on a node.
    OnePerNode,
    /// At most this many tasks on a node.
    MaxPerNode(u32),
}

impl AntiAffinity {
    /// Most tasks of one job on one node, `None` when unlimited.
    pub fn max_per_node(self) -> Option<u32> {
        match self {
            AntiAffinity::None => None,
            AntiAffinity::OnePerNode => Some(1),
            AntiAffinity::MaxPerNode(n) => Some(n),
        }
    }
}

/// What a job does. New kinds (train, data, deploy) are added as new variants at the end, which
/// keeps the encoding of the existing ones unchanged.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JobKind {
    /// A distributed matmul benchmark: every peer multiplies square matrices.
    Benchmark {
        peers: u32,
        matrix_size: u32,
        iterations: u32,
    },
    /// A chain of dataset operations (boxed: it is much larger than the other kinds, and job
    /// records travel inside actor messages).
    DataOps(Box<DataOpsJob>),
    /// A distributed training run; the spec is `flotilla_protocol::training::TrainSpec` as TOML
    /// (kept as text: the spec holds floats, and job kinds are compared and hashed).
    Train { spec_toml: String },
}

impl JobKind {
    /// The memory one task of this kind needs beyond the process, when the kind alone says:
    /// a benchmark holds two input matrices, their product and a copy of it, in f32.
    pub fn task_ram_bytes(&self) -> Option<u64> {
        match self {
            JobKind::Benchmark { matrix_size, .. } => {
                let n = u64::from(*matrix_size).max(8);
                Some(4 * n * n * 4)
            }
            JobKind::DataOps(_) | JobKind::Train { .. } => None,
        }
    }
}

/// A chain of dataset operations run where the shards of `dataset@parent_version` live,
/// writing `output_version`. The chain travels as JSON text because operation parameters hold
/// floats (thresholds, ratios) and their types live with the data cores.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DataOpsJob {
    pub dataset: String,
    pub parent_version: u64,
    pub output_version: u64,
    pub ops_json: String,
}

/// Longest operation chain (JSON text) a data job carries.
pub const MAX_OPS_JSON_BYTES: usize = 32 * 1024;

/// A job as submitted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobSpec {
    pub kind: JobKind,
    pub priority: Priority,
    /// Needed by each task.
    pub resources: Resources,
    /// Number of tasks.
    pub tasks: u32,
    pub anti_affinity: AntiAffinity,
    /// Nodes that hold the job's data; placement prefers them.
    pub preferred_nodes: Vec<NodeId>,
    /// A retried submission with the same key is the same job.
    pub idempotency_key: Option<String>,
}

impl JobSpec {
    /// Checks every field; the errors name the fields (`resources.cores`, `kind.benchmark.peers`).
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut c = Checker::new();
        c.check(
            (1..=MAX_TASKS).contains(&self.tasks),
            "tasks",
            format!("must be between 1 and {MAX_TASKS}"),
        );
        let r = &self.resources;
        c.check(
            r.cores >= 1,
            "resources.cores",
            "a task needs at least one core",
        );
        c.check(r.cores <= 4096, "resources.cores", "must be at most 4096");
        c.check(
            r.ram_bytes >= 1 << 20,
            "resources.ram_bytes",
            "a task needs at least 1 MiB of RAM",
        );
        c.check(r.gpus <= 64, "resources.gpus", "must be at most 64");
        if let AntiAffinity::MaxPerNode(n) = self.anti_affinity {
            c.check(n >= 1, "anti_affinity.max_per_node", "must be at least 1");
        }
        if self.preferred_nodes.len() > MAX_PREFERRED_NODES {
            c.push(
                "preferred_nodes",
                format!("at most {MAX_PREFERRED_NODES} nodes may be named"),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, n) in self.preferred_nodes.iter().enumerate() {
            let field = format!("preferred_nodes[{i}]");
            if n.0.is_empty()
                || n.0.len() > MAX_NAME_LEN
                || !n.0.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                c.push(field, "must be a node id (base58 text)");
            } else if !seen.insert(n) {
                c.push(field, format!("node {n} is named twice"));
            }
        }
        if let Some(key) = &self.idempotency_key {
            c.check(
                !key.is_empty(),
                "idempotency_key",
                "must not be empty when given",
            );
            c.text("idempotency_key", key, MAX_NAME_LEN);
        }
        match &self.kind {
            &JobKind::Benchmark {
                peers,
                matrix_size,
                iterations,
            } => {
                c.check(
                    (1..=1024).contains(&peers),
                    "kind.benchmark.peers",
                    "must be between 1 and 1024",
                );
                c.check(
                    (1..=16_384).contains(&matrix_size),
                    "kind.benchmark.matrix_size",
                    "must be between 1 and 16384",
                );
                c.check(
                    (1..=100_000).contains(&iterations),
                    "kind.benchmark.iterations",
                    "must be between 1 and 100000",
                );
                if let Some(need) = self.kind.task_ram_bytes() {
                    c.check(
                        need <= self.resources.ram_bytes,
                        "resources.ram_bytes",
                        format!(
                            "a {matrix_size}×{matrix_size} benchmark needs {} MiB per task",
                            need.div_ceil(1 << 20)
                        ),
                    );
                }
                // A benchmark runs one task on each of its peers.
                c.check(self.tasks == peers, "tasks", format!("a benchmark runs one task per peer: must equal kind.benchmark.peers ({peers})"));
            }
            JobKind::DataOps(job) => {
                let DataOpsJob {
                    dataset,
                    parent_version,
                    output_version,
                    ops_json,
                } = &**job;
                c.name("kind.data_ops.dataset", dataset);
                c.check(
                    *parent_version >= 1,
                    "kind.data_ops.parent_version",
                    "versions start at 1",
                );
                c.check(
                    output_version > parent_version,
                    "kind.data_ops.output_version",
                    format!("must be after the parent version {parent_version}"),
                );
                c.check(
                    !ops_json.trim().is_empty(),
                    "kind.data_ops.ops_json",
                    "the chain is empty",
                );
                c.text("kind.data_ops.ops_json", ops_json, MAX_OPS_JSON_BYTES);
                // The coordinator drives every shard holder itself: one task.
                c.check(self.tasks == 1, "tasks", "a data job runs one task");
            }
            JobKind::Train { spec_toml } => {
                match toml::from_str::<crate::training::TrainSpec>(spec_toml) {
                    Err(e) => c.push(
                        "kind.train",
                        format!("not a training spec: {}", e.message()),
                    ),
                    Ok(spec) => {
                        if let Err(FieldErrors(errors)) = spec.validate() {
                            for e in errors {
                                c.push(format!("kind.train.{}", e.field), e.message);
                            }
                        }
                    }
                }
                c.check(
                    spec_toml.len() <= MAX_OPS_JSON_BYTES,
                    "kind.train",
                    format!("at most {MAX_OPS_JSON_BYTES} bytes"),
                );
                // The coordinator spawns the shards and trainers itself: one task.
                c.check(
                    self.tasks == 1,
                    "tasks",
                    "a training job runs one task (its coordinator)",
                );
            }
        }
        c.finish()
    }
}

/// Where a job is in its life. Ordered as a lattice: later states win, terminal states absorb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobStatus {
    /// Recorded, not yet placed.
    Pending,
    /// The owner is computing a placement and starting tasks.
    Placing,
    /// Tasks are running.
    Running,
    /// Finished with success.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Stopped at a user's request.
    Cancelled,
}

impl JobStatus {
    /// Position in the lattice's total order.
    ///
    /// Between terminal states the order is `succeeded < failed < cancelled`. Two terminal
    /// states meet only when two nodes concluded concurrently (a cancel raced the last task, or
    /// an old owner and its successor disagree). The rule is conservative: a success that
    /// another node contradicts is not reported as a success, so nothing downstream (a pipeline
    /// gate, a promotion) acts on it; and a user's explicit cancel is what the user sees.
    fn rank(self) -> u8 {
        match self {
            JobStatus::Pending => 0,
            JobStatus::Placing => 1,
            JobStatus::Running => 2,
            JobStatus::Succeeded => 3,
            JobStatus::Failed => 4,
            JobStatus::Cancelled => 5,
        }
    }

    /// The lattice join: the later of the two states. Commutative, associative and idempotent,
    /// so replicas that apply the same updates in any order agree.
    pub fn join(self, other: JobStatus) -> JobStatus {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    /// Whether the job has finished; no later state exists but another terminal one.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// Whether moving from `self` to `next` goes forward (or stays): the only moves a writer
    /// should make. A backward write is harmless, since the join ignores it, but is a bug.
    pub fn can_become(self, next: JobStatus) -> bool {
        self.join(next) == next
    }
}

impl PartialOrd for JobStatus {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for JobStatus {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobStatus::Pending => "pending",
            JobStatus::Placing => "placing",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec() -> JobSpec {
        JobSpec {
            kind: JobKind::Benchmark {
                peers: 3,
                matrix_size: 512,
                iterations: 10,
            },
            priority: Priority::Batch,
            resources: Resources {
                cores: 2,
                ram_bytes: 1 << 30,
                gpus: 0,
            },
            tasks: 3,
            anti_affinity: AntiAffinity::OnePerNode,
            preferred_nodes: vec![],
            idempotency_key: Some("k-1".into()),
        }
    }

    #[test]
    fn a_good_spec_passes() {
        spec().validate().unwrap();
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut s = spec();
        s.resources.cores = 0;
        s.resources.ram_bytes = 10;
        s.anti_affinity = AntiAffinity::MaxPerNode(0);
        s.preferred_nodes = vec!["a1".into(), "a1".into(), "bad id".into()];
        s.idempotency_key = Some(String::new());
        s.kind = JobKind::Benchmark {
            peers: 0,
            matrix_size: 0,
            iterations: 0,
        };
        let e = s.validate().unwrap_err();
        for f in [
            "resources.cores",
            "resources.ram_bytes",
            "anti_affinity.max_per_node",
            "preferred_nodes[1]",
            "preferred_nodes[2]",
            "idempotency_key",
            "kind.benchmark.peers",
            "kind.benchmark.matrix_size",
            "kind.benchmark.iterations",
            "tasks",
        ] {
            assert!(e.mentions(f), "{f} missing from {e}");
        }
        assert!(!e.mentions("preferred_nodes[0]"));
    }

    #[test]
    fn idempotency_keys_map_to_one_valid_job_id() {
        let a = JobId::for_idempotency_key("upload-42");
        assert_eq!(a, JobId::for_idempotency_key("upload-42"));
        assert_ne!(a, JobId::for_idempotency_key("upload-43"));
        assert_eq!(a.as_str().len(), 36);
        assert!(crate::validation::name_problem(a.as_str()).is_ok());
    }

    #[test]
    fn priorities_are_ordered_as_documented() {
        assert!(Priority::Inference > Priority::Interactive);
        assert!(Priority::Interactive > Priority::Training);
        assert!(Priority::Training > Priority::Batch);
    }

    #[test]
    fn status_moves_forward_and_terminal_states_absorb() {
        use JobStatus::*;
        assert_eq!(Pending.join(Running), Running);
        assert_eq!(Running.join(Placing), Running);
        for t in [Succeeded, Failed, Cancelled] {
            for s in [Pending, Placing, Running] {
                assert_eq!(t.join(s), t);
                assert!(!t.can_become(s));
            }
        }
        assert_eq!(Succeeded.join(Failed), Failed);
        assert_eq!(Cancelled.join(Failed), Cancelled);
        assert!(Pending.can_become(Placing) && Running.can_become(Running));
    }

    fn status() -> impl Strategy<Value = JobStatus> {
        use JobStatus::*;
        prop::sample::select(vec![
            Pending, Placing, Running, Succeeded, Failed, Cancelled,
        ])
    }

    proptest! {
        #[test]
        fn join_is_a_semilattice(a in status(), b in status(), c in status()) {
            prop_assert_eq!(a.join(b), b.join(a));
            prop_assert_eq!(a.join(b).join(c), a.join(b.join(c)));
            prop_assert_eq!(a.join(a), a);
            // The join is an upper bound and terminal states stay terminal.
            prop_assert!(a.can_become(a.join(b)));
            prop_assert!(!a.is_terminal() || a.join(b).is_terminal());
        }
    }
}
