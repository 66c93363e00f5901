//! `flotilla up`: the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

use super::Cli;
use crate::admission;
use crate::config::NodeConfig;
use crate::daemon::RunningNode;

/// Flags of `flotilla up`; each overrides the config file and has a `FLOTILLA_*` variable.
#[derive(Debug, Clone, Default, Args)]
pub struct UpArgs {
    /// Data directory (identity key and store).
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// libp2p listen multiaddr (repeatable, or comma-separated in the variable).
    #[arg(long, env = "FLOTILLA_LISTEN", value_delimiter = ',')]
    pub listen: Vec<String>,
    /// HTTP API address.
    #[arg(long, env = "FLOTILLA_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,
    /// Serve the API over HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "FLOTILLA_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "FLOTILLA_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// Time an API request has to answer, e.g. `30s` (uploads, data operations, model
    /// registration and inference have --api-long-request-timeout).
    #[arg(long, env = "FLOTILLA_API_REQUEST_TIMEOUT")]
    pub api_request_timeout: Option<humantime::Duration>,
    /// Time uploads, data operations, model registration and inference have to answer.
    #[arg(long, env = "FLOTILLA_API_LONG_REQUEST_TIMEOUT")]
    pub api_long_request_timeout: Option<humantime::Duration>,
    /// API requests in flight at most; more are answered 503 at once.
    #[arg(long, env = "FLOTILLA_API_MAX_IN_FLIGHT")]
    pub api_max_in_flight: Option<usize>,
    /// API requests per second per bearer token (per client address without a token); 0: no
    /// limit.
    #[arg(long, env = "FLOTILLA_API_RATE")]
    pub api_rate: Option<f64>,
    /// API requests a token or address may make at once before --api-rate applies.
    #[arg(long, env = "FLOTILLA_API_RATE_BURST")]
    pub api_rate_burst: Option<u32>,
    /// Multiaddr of a node to join (repeatable).
    #[arg(long, env = "FLOTILLA_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Cluster key file (`/key/swarm/psk/1.0.0/` format) managed by hand (forces TCP). By
    /// default the node uses `<data-dir>/swarm.key`, created on the first start.
    #[arg(long, env = "FLOTILLA_SWARM_KEY")]
    pub swarm_key: Option<PathBuf>,
    /// Join an existing cluster: its key as 64 hex characters, printed by the node that created
    /// it (saved to `<data-dir>/swarm.key`).
    #[arg(
        long,
        env = "FLOTILLA_CLUSTER_TOKEN",
        hide_env_values = true,
        value_name = "HEX"
    )]
    pub cluster_token: Option<String>,
    /// No cluster key: any host that can reach this node joins. For throw-away experiments.
    #[arg(long, env = "FLOTILLA_OPEN")]
    pub open: bool,
    /// Node id allowed to connect (repeatable); when given, all others are refused.
    #[arg(long, env = "FLOTILLA_ALLOW_PEER", value_delimiter = ',')]
    pub allow_peer: Vec<String>,
    /// Local-network discovery with mDNS.
    #[arg(long, env = "FLOTILLA_MDNS")]
    pub mdns: Option<bool>,
    /// mDNS query interval, e.g. `5s`.
    #[arg(long, env = "FLOTILLA_MDNS_QUERY_INTERVAL")]
    pub mdns_query_interval: Option<humantime::Duration>,
    /// Heartbeat interval, e.g. `1s`.
    #[arg(long, env = "FLOTILLA_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<humantime::Duration>,
    /// Silence after which a member is suspected.
    #[arg(long, env = "FLOTILLA_SUSPECT_AFTER")]
    pub suspect_after: Option<humantime::Duration>,
    /// Silence after which a member is declared dead.
    #[arg(long, env = "FLOTILLA_DEAD_AFTER")]
    pub dead_after: Option<humantime::Duration>,
    /// Maximum established connections.
    #[arg(long, env = "FLOTILLA_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// How long a SIGTERM or SIGINT gives training runs to checkpoint and HTTP requests to
    /// finish, e.g. `20s` (`[node.shutdown] grace`).
    #[arg(long, env = "FLOTILLA_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<humantime::Duration>,
    /// Validate the configuration, print the effective result as TOML and exit.
    #[arg(long)]
    pub dry_run: bool,
}

impl UpArgs {
    /// Applies these flags (and variables) on top of `base`.
    pub fn apply(&self, mut c: NodeConfig, api_token_file: Option<&PathBuf>) -> NodeConfig {
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        if !self.listen.is_empty() {
            c.listen = self.listen.clone();
        }
        if let Some(v) = self.api_listen {
            c.api_listen = v;
        }
        if let Some(v) = api_token_file {
            c.api_token_file = Some(v.clone());
        }
        if let Some(v) = &self.tls_cert {
            c.tls_cert = Some(v.clone());
        }
        if let Some(v) = &self.tls_key {
            c.tls_key = Some(v.clone());
        }
        if let Some(v) = self.api_request_timeout {
            c.api.request_timeout = v.into();
        }
        if let Some(v) = self.api_long_request_timeout {
            c.api.long_request_timeout = v.into();
        }
        if let Some(v) = self.api_max_in_flight {
            c.api.max_in_flight = v;
        }
        if let Some(v) = self.api_rate {
            c.api.rate_per_sec = v;
        }
        if let Some(v) = self.api_rate_burst {
            c.api.rate_burst = v;
        }
        if !self.join.is_empty() {
            c.join = self.join.clone();
        }
        if let Some(v) = &self.swarm_key {
            c.swarm_key = Some(v.clone());
        }
        if let Some(v) = &self.cluster_token {
            c.cluster_token = Some(v.clone());
        }
        if self.open {
            c.open = true;
        }
        if !self.allow_peer.is_empty() {
            c.allow_peers = self.allow_peer.clone();
        }
        if let Some(v) = self.mdns {
            c.mdns = v;
        }
        if let Some(v) = self.mdns_query_interval {
            c.mdns_query_interval = v.into();
        }
        if let Some(v) = self.heartbeat_interval {
            c.membership.heartbeat_interval = v.into();
        }
        if let Some(v) = self.suspect_after {
            c.membership.suspect_after = v.into();
        }
        if let Some(v) = self.dead_after {
            c.membership.dead_after = v.into();
        }
        if let Some(v) = self.max_connections {
            c.max_connections = v;
        }
        if let Some(v) = self.shutdown_grace {
            c.shutdown.grace = v.into();
        }
        c
    }
}

/// The node configuration after precedence: defaults < file < environment < flags.
pub fn resolve(cli: &Cli, args: &UpArgs) -> anyhow::Result<NodeConfig> {
    let file = cli.file_config()?;
    let config = args.apply(file.node, cli.api_token_file.as_ref());
    config.validate()?;
    Ok(config)
}

/// What `--dry-run` prints: the effective configuration as TOML, with the addresses the node
/// will really listen on (the cluster key leaves QUIC out) and where its key comes from. It
/// reads the data dir but writes nothing.
pub fn dry_run(config: &NodeConfig) -> anyhow::Result<String> {
    let source = admission::key_source(config)?;
    let mut shown = config.clone();
    shown.listen = config
        .listen_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    if shown.cluster_token.is_some() {
        // A secret: never echoed.
        shown.cluster_token = Some("<hidden>".into());
    }
    let mut out = format!("# cluster key: {source}\n");
    if let Some(path) = config.api_token_path() {
        out += &format!(
            "# the API requires the bearer token in {}\n",
            path.display()
        );
    }
    out += &toml::to_string(&shown)?;
    Ok(out)
}

/// The addresses to hand to other machines: those beyond loopback first.
fn join_addr(node: &RunningNode) -> Option<Multiaddr> {
    let addrs = node.listen_addrs();
    let loopback = |a: &Multiaddr| {
        a.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_loopback(),
            Protocol::Ip6(ip) => ip.is_loopback(),
            _ => false,
        })
    };
    addrs
        .iter()
        .find(|a| !loopback(a))
        .or_else(|| addrs.first())
        .cloned()
}

/// Runs the daemon until a signal arrives, then shuts down gracefully and exits the process
/// (a task still running past the grace period does not keep it alive). A second signal during
/// the shutdown exits at once.
pub async fn run(cli: &Cli, args: &UpArgs) -> anyhow::Result<()> {
    let config = resolve(cli, args)?;
    if args.dry_run {
        print!("{}", dry_run(&config)?);
        return Ok(());
    }
    // Listening before the node starts, so a signal during start-up is not lost.
    let mut signals = Signals::new()?;
    let node = RunningNode::start(config).await?;
    // The secrets are shown once, on the start that created them; they stay in the data dir.
    if let Some(token) = &node.admission.new_cluster_token {
        println!(
            "created a new cluster; its key is saved in {}",
            node.config()
                .data_dir
                .join(admission::SWARM_KEY_FILE)
                .display()
        );
        println!("  cluster token: {token}");
        if let Some(addr) = join_addr(&node) {
            println!("  to add a machine: flotilla up --join {addr} --cluster-token {token}");
        }
    }
    if let Some((path, token)) = &node.admission.new_api_token {
        println!("  admin API token: {token} (saved in {})", path.display());
    }
    println!("node {} is up", node.peer_id);
    println!("  api:  {}", node.api_url());
    if let Some(path) = node.config().api_token_path() {
        println!("        requires the bearer token in {}", path.display());
    }
    for a in node.listen_addrs() {
        println!("  join: {a}");
    }
    #[cfg(unix)]
    let notifier = crate::notify::Notifier::from_env().map(std::sync::Arc::new);
    #[cfg(unix)]
    if let Some(n) = &notifier {
        n.notify("READY=1");
        if let Some(every) = crate::notify::watchdog_interval() {
            let n = n.clone();
            flotilla_actors::task::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    n.notify("WATCHDOG=1");
                }
            });
        }
    }
    let first = signals.next().await;
    flotilla_actors::task::spawn(async move {
        let second = signals.next().await;
        eprintln!("{} during shutdown: exiting at once", second.name);
        std::process::exit(second.exit_code);
    });
    #[cfg(unix)]
    if let Some(n) = &notifier {
        n.notify("STOPPING=1");
    }
    println!(
        "{}: shutting down (a second signal exits at once): no new work, training runs \
         checkpoint, requests drain (grace {}), then the node leaves and flushes its store",
        first.name,
        humantime::format_duration(node.config().shutdown.grace)
    );
    node.shutdown().await?;
    println!("node stopped");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(0)
}

/// A termination signal.
#[derive(Debug, Clone, Copy)]
struct Caught {
    name: &'static str,
    /// The conventional status of a process ended by it (128 + its number).
    exit_code: i32,
}

/// SIGTERM and SIGINT, listened to from start-up on.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) -> Caught {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => Caught { name: "SIGTERM", exit_code: 143 },
                _ = self.int.recv() => Caught { name: "SIGINT", exit_code: 130 },
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Caught {
                name: "ctrl-c",
                exit_code: 130,
            }
        }
    }
}
