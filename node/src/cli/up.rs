//! `flotilla up`: the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::Cli;
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
    /// Multiaddr of a node to join (repeatable).
    #[arg(long, env = "FLOTILLA_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Pre-shared key file for a private network (forces TCP).
    #[arg(long, env = "FLOTILLA_SWARM_KEY")]
    pub swarm_key: Option<PathBuf>,
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
        if !self.join.is_empty() {
            c.join = self.join.clone();
        }
        if let Some(v) = &self.swarm_key {
            c.swarm_key = Some(v.clone());
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

/// Runs the daemon until a signal arrives, then shuts down gracefully.
pub async fn run(cli: &Cli, args: &UpArgs) -> anyhow::Result<()> {
    let config = resolve(cli, args)?;
    if args.dry_run {
        print!("{}", toml::to_string(&config)?);
        return Ok(());
    }
    let node = RunningNode::start(config).await?;
    println!("node {} is up", node.peer_id);
    println!("  api:  {}", node.api_url());
    for a in node.listen_addrs() {
        println!("  join: {a}");
    }
    wait_for_signal().await?;
    println!("shutting down: announcing leave, draining requests, flushing the store");
    node.shutdown().await
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
