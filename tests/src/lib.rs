//! `flotilla-tests`: multi-node integration tests and the in-process [`TestCluster`] harness.
//!
//! A `TestCluster` starts N real nodes in one process: real libp2p sockets on ephemeral loopback
//! ports, real rocksdb stores in temporary directories, real HTTP APIs. Tests wait on predicates
//! with deadlines ([`wait_until`]) instead of sleeping.

pub mod raw_peer;
pub mod serving;
pub mod stall_peer;
pub mod training;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flotilla_node::cli::demo::local_node_config;
use flotilla_node::config::NodeConfig;
use flotilla_node::RunningNode;
use flotilla_protocol::{MemberState, MemberView, NodeId};

/// Polls `predicate` until it holds or `deadline` passes; the error says what was awaited.
pub async fn wait_until<F, Fut>(
    deadline: Duration,
    what: &str,
    mut predicate: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if predicate().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > deadline {
            anyhow::bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This process's resident set size (`VmRSS`), in KiB: what tests of memory bounds compare.
#[allow(clippy::expect_used)]
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// A data set or model the tests read, inside the repository: Banking77 (`data/banking77-*`) is
/// in `node/data/` (compiled into the binary), other `data/` files are in `tests/data/`, and
/// `models/` are fetched into `tests/fixtures/models/` by `tests/fixtures/fetch.sh`. Panics,
/// naming the path and the fix, when it does not exist: what uses it must run on the real
/// files, not skip them.
pub fn shared(relative: &str) -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let path = match relative {
        r if r.starts_with("data/banking77-") => root.join("node").join(r),
        r => match (r.strip_prefix("data/"), r.strip_prefix("models/")) {
            (Some(data), _) => root.join("tests/data").join(data),
            (_, Some(model)) => root.join("tests/fixtures/models").join(model),
            _ => root.join(r),
        },
    };
    if !path.exists() {
        panic!(
            "{relative} not found at {} (models are fetched by tests/fixtures/fetch.sh)",
            path.display()
        );
    }
    path
}

/// Installs a test log subscriber once (quiet unless `RUST_LOG` says otherwise).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The configuration test nodes start from: loopback, no mDNS, the demo's fast failure
/// detection (heartbeat 250 ms, suspect after 1.5 s, dead after 3 s) — short enough for quick
/// tests, long enough that a busy 2-core machine does not make live nodes look dead.
pub fn test_config(data_dir: PathBuf) -> NodeConfig {
    let mut c = local_node_config(data_dir, vec![]);
    c.request_timeout = Duration::from_secs(10);
    c
}

/// Customises one node's configuration before it starts.
pub type Customize = Box<dyn Fn(usize, &mut NodeConfig) + Send + Sync>;

/// N real nodes in one process, sharing one cluster key (`<root>/swarm.key`).
pub struct TestCluster {
    root: tempfile::TempDir,
    /// The cluster key every node is given, unless `customize` sets another.
    key: PathBuf,
    nodes: Vec<Option<RunningNode>>,
    customize: Option<Customize>,
}

impl TestCluster {
    /// Starts `n` nodes; node 0 is the bootstrap address every other node is given.
    pub async fn start(n: usize) -> anyhow::Result<TestCluster> {
        Self::start_with(n, None).await
    }

    /// Starts `n` nodes, letting `customize` adjust each configuration.
    pub async fn start_with(n: usize, customize: Option<Customize>) -> anyhow::Result<TestCluster> {
        init_logging();
        let root = tempfile::tempdir()?;
        let key = flotilla_node::admission::load_or_create_key_file(
            &root.path().join(flotilla_node::admission::SWARM_KEY_FILE),
        )?;
        let mut cluster = TestCluster {
            root,
            key,
            nodes: Vec::new(),
            customize,
        };
        for _ in 0..n {
            cluster.add_node().await?;
        }
        Ok(cluster)
    }

    fn config_for(&self, i: usize) -> NodeConfig {
        let mut c = test_config(self.data_dir(i));
        c.join = self.bootstrap_addrs(i);
        c.cluster_token = None;
        c.swarm_key = Some(self.key.clone());
        if let Some(f) = &self.customize {
            f(i, &mut c);
        }
        c
    }

    /// Join addresses for node `i`: the first running node other than `i`.
    fn bootstrap_addrs(&self, i: usize) -> Vec<String> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .find_map(|(_, n)| n.as_ref())
            .map(|n| n.listen_addrs().iter().map(|a| a.to_string()).collect())
            .unwrap_or_default()
    }

    /// Starts one more node and returns its index.
    pub async fn add_node(&mut self) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let node = RunningNode::start(self.config_for(i)).await?;
        self.nodes.push(Some(node));
        Ok(i)
    }

    /// Starts one more node with an explicit configuration (its data dir is set here).
    pub async fn add_node_with(
        &mut self,
        f: impl FnOnce(&mut NodeConfig),
    ) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let mut c = self.config_for(i);
        f(&mut c);
        let node = RunningNode::start(c).await?;
        self.nodes.push(Some(node));
        Ok(i)
    }

    /// The cluster key file the nodes share.
    pub fn key_file(&self) -> &std::path::Path {
        &self.key
    }

    /// A raw peer that holds the cluster's key: a hostile member speaking on `protocol`.
    pub fn raw_member(&self, protocol: &'static str) -> anyhow::Result<raw_peer::RawPeer> {
        let psk = flotilla_node::net::transport::read_swarm_key(&self.key)?;
        raw_peer::RawPeer::with_key(protocol, psk)
    }

    /// A member that floods a node with stalled requests on `protocol`.
    pub fn stall_member(&self, protocol: &'static str) -> anyhow::Result<stall_peer::StallPeer> {
        let psk = flotilla_node::net::transport::read_swarm_key(&self.key)?;
        stall_peer::StallPeer::with_key(protocol, psk)
    }

    /// The directory node `i` keeps its data in.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.root.path().join(format!("node-{i}"))
    }

    /// Number of node slots (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`; panics if it is not running (a test bug).
    #[allow(clippy::expect_used)]
    pub fn node(&self, i: usize) -> &RunningNode {
        self.nodes[i].as_ref().expect("node is not running")
    }

    /// Indices of running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// Splits the nodes into `groups` that cannot reach each other: every link between nodes of
    /// different groups is cut both ways (each side blocks the other's peer id), and stays cut
    /// until [`TestCluster::heal`]. Links inside a group, and those of nodes named in no group,
    /// are kept.
    pub async fn partition(&self, groups: &[&[usize]]) -> anyhow::Result<()> {
        for (g, side) in groups.iter().enumerate() {
            for other in &groups[g + 1..] {
                for &a in *side {
                    for &b in *other {
                        self.node(a).block_peer(&self.node(b).node_id()).await?;
                        self.node(b).block_peer(&self.node(a).node_id()).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Restores every link between running nodes that [`TestCluster::partition`] cut.
    pub async fn heal(&self) -> anyhow::Result<()> {
        let running = self.running();
        for &a in &running {
            for &b in &running {
                if a != b {
                    self.node(a).unblock_peer(&self.node(b).node_id()).await?;
                }
            }
        }
        Ok(())
    }

    /// Kills node `i` abruptly: no leave notice, no flush.
    pub async fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.kill().await;
        }
    }

    /// Stops node `i` gracefully.
    pub async fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await?;
        }
        Ok(())
    }

    /// Starts node `i` again from its data dir.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(self.nodes[i].is_none(), "node {i} is still running");
        let node = RunningNode::start(self.config_for(i)).await?;
        self.nodes[i] = Some(node);
        Ok(())
    }

    /// Node `i`'s view.
    pub async fn view(&self, i: usize) -> anyhow::Result<Vec<MemberView>> {
        Ok(self.node(i).membership.view().await?)
    }

    /// The state node `viewer` holds for `subject`.
    pub async fn state_seen_by(&self, viewer: usize, subject: &NodeId) -> Option<MemberState> {
        let view = self.view(viewer).await.ok()?;
        view.into_iter()
            .find(|m| m.info.id == *subject)
            .map(|m| m.state)
    }

    /// Whether every running node sees exactly the running nodes as alive.
    pub async fn converged(&self) -> bool {
        let expected: Vec<NodeId> = self
            .running()
            .iter()
            .map(|i| self.node(*i).node_id())
            .collect();
        for i in self.running() {
            let Ok(view) = self.view(i).await else {
                return false;
            };
            let mut alive: Vec<NodeId> = view
                .into_iter()
                .filter(|m| m.state == MemberState::Alive)
                .map(|m| m.info.id)
                .collect();
            alive.sort();
            let mut want = expected.clone();
            want.sort();
            if alive != want {
                return false;
            }
        }
        true
    }

    /// Stops every node gracefully.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.stop(i).await?;
        }
        drop(self.root);
        Ok(())
    }
}
