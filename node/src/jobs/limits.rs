//! What this node accepts to run for a job's owner, checked where the work runs: the owner is
//! a peer, and its start request is the only thing this node sees of the job, so the checks
//! made at submission (on whichever node accepted it) are made again here, together with what
//! only this node knows — its own cores, memory and GPUs.

use flotilla_actors::jobs::manager::serve::WorkLimits;
use flotilla_protocol::jobs::{AntiAffinity, JobKind, JobSpec, Priority, Resources};

/// This machine's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLimits {
    pub cores: u32,
    pub ram_bytes: u64,
    pub gpus: u32,
}

impl WorkLimits for NodeLimits {
    fn check(&self, kind: &JobKind, resources: &Resources) -> Result<(), String> {
        // The kind's own bounds, as a submission checks them (a benchmark runs one task per
        // peer, the other kinds one task).
        let tasks = match kind {
            JobKind::Benchmark { peers, .. } => *peers,
            _ => 1,
        };
        let spec = JobSpec {
            kind: kind.clone(),
            priority: Priority::Batch,
            resources: *resources,
            tasks,
            anti_affinity: AntiAffinity::None,
            preferred_nodes: vec![],
            idempotency_key: None,
        };
        if let Err(errors) = spec.validate() {
            return Err(errors.to_string());
        }
        let mib = |b: u64| b.div_ceil(1 << 20);
        if resources.cores > self.cores {
            return Err(format!(
                "it reserves {} cores; this node has {}",
                resources.cores, self.cores
            ));
        }
        if resources.ram_bytes > self.ram_bytes {
            return Err(format!(
                "it reserves {} MiB of memory; this node has {} MiB",
                mib(resources.ram_bytes),
                mib(self.ram_bytes)
            ));
        }
        if resources.gpus > self.gpus {
            return Err(format!(
                "it reserves {} GPUs; this node has {}",
                resources.gpus, self.gpus
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn node() -> NodeLimits {
        NodeLimits {
            cores: 2,
            ram_bytes: 24 * GIB,
            gpus: 0,
        }
    }

    fn bench(n: u32) -> JobKind {
        JobKind::Benchmark {
            peers: 1,
            matrix_size: n,
            iterations: 1,
        }
    }

    fn res(cores: u32, ram_bytes: u64, gpus: u32) -> Resources {
        Resources {
            cores,
            ram_bytes,
            gpus,
        }
    }

    #[test]
    fn work_within_the_node_and_its_reservation_is_accepted() {
        node().check(&bench(512), &res(1, 256 << 20, 0)).unwrap();
    }

    #[test]
    fn a_benchmark_larger_than_its_reservation_or_its_bounds_is_refused() {
        // 200,000² f32 matrices would need 480 GB: refused by its bounds before anything else.
        let why = node()
            .check(&bench(200_000), &res(1, 256 << 20, 0))
            .unwrap_err();
        assert!(why.contains("matrix_size"), "{why}");
        // 8192² needs 1 GiB; a task reserving 256 MiB may not take it.
        let why = node()
            .check(&bench(8192), &res(1, 256 << 20, 0))
            .unwrap_err();
        assert!(why.contains("1024 MiB"), "{why}");
    }

    #[test]
    fn reservations_beyond_the_machine_are_refused() {
        let n = node();
        assert!(n
            .check(&bench(64), &res(3, 1 << 30, 0))
            .unwrap_err()
            .contains("3 cores"));
        assert!(n
            .check(&bench(64), &res(1, 100 * GIB, 0))
            .unwrap_err()
            .contains("MiB of memory"));
        assert!(n
            .check(&bench(64), &res(1, 1 << 30, 1))
            .unwrap_err()
            .contains("GPUs"));
    }
}
