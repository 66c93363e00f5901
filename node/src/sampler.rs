//! Builds this node's [`NodeInfo`] heartbeat: fixed facts measured once at start (cores, RAM,
//! GPUs, compute score) and the current load, sampled at each beat.

use std::time::Duration;

use flotilla_kernels::devices::{self, GpuDiscovery};
use flotilla_protocol::{GpuState, GpuSummary, NodeId, NodeInfo};

/// Produces successive heartbeats of this node.
#[derive(Debug)]
pub struct Sampler {
    template: NodeInfo,
}

fn gpu_state(found: GpuDiscovery) -> GpuState {
    match found {
        GpuDiscovery::Found(gpus) => GpuState::Gpus(
            gpus.into_iter()
                .map(|g| GpuSummary {
                    name: g.name,
                    memory_bytes: g.memory_bytes,
                    compute_capability: g.compute_capability,
                })
                .collect(),
        ),
        GpuDiscovery::NoDriver => GpuState::NoCudaDriver,
        GpuDiscovery::DriverError(e) => GpuState::DriverError(e),
    }
}

impl Sampler {
    /// Measures the machine: cores, RAM, GPUs, and the compute probe for `probe_budget`.
    pub fn measure(id: NodeId, probe_budget: Duration) -> Sampler {
        let mut sys = sysinfo::System::new();
        sys.refresh_memory();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let probe = flotilla_kernels::probe::run_cpu_probe(256, probe_budget);
        let incarnation = flotilla_actors::clock::wall_ms();
        Sampler {
            template: NodeInfo {
                id,
                incarnation,
                seq: 0,
                listen_addrs: vec![],
                api_addr: None,
                version: env!("CARGO_PKG_VERSION").to_string(),
                cores,
                ram_bytes: sys.total_memory(),
                gpus: gpu_state(devices::discover_gpus()),
                compute_score: (probe.gflops * 100.0).round() / 100.0,
                load: 0.0,
                ready_replicas: vec![],
                unhealthy: None,
            },
        }
    }

    /// The next heartbeat: a higher sequence number and the current load.
    pub fn next(&mut self, listen_addrs: Vec<String>, api_addr: Option<String>) -> NodeInfo {
        self.template.seq += 1;
        self.template.listen_addrs = listen_addrs;
        self.template.api_addr = api_addr;
        let one_minute = sysinfo::System::load_average().one;
        self.template.load =
            ((one_minute / f64::from(self.template.cores.max(1))) * 100.0).round() / 100.0;
        self.template.clone()
    }

    /// The latest heartbeat produced.
    pub fn current(&self) -> &NodeInfo {
        &self.template
    }
}
