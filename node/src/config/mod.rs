//! Node configuration: defaults, a TOML file, `FLOTILLA_*` environment variables and flags, in
//! that order of precedence. The file and the merged result are validated with errors that name
//! the offending field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_actors::{catalog, membership};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// Default TCP and QUIC port of the mesh.
pub const DEFAULT_P2P_PORT: u16 = 7070;
/// Default HTTP API address.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:7080";
/// The admin token generated in the data directory, which the API requires beyond loopback.
pub const API_TOKEN_FILE: &str = "api-token";

pub mod api;
pub mod data;

/// Everything `flotilla up` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the identity key and the rocksdb store live.
    pub data_dir: PathBuf,
    /// libp2p listen multiaddrs.
    pub listen: Vec<String>,
    /// HTTP API address. Beyond loopback the API requires a bearer token: `api_token_file`, or
    /// the admin token generated in `<data_dir>/api-token`.
    pub api_listen: SocketAddr,
    /// File holding the bearer token the HTTP API requires (on every address, loopback too).
    pub api_token_file: Option<PathBuf>,
    /// PEM certificate chain the API serves HTTPS with (together with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The API's deadlines, in-flight cap and rate limits (`[node.api]`).
    pub api: api::ApiLimits,
    /// Multiaddrs of nodes to join (for networks mDNS does not reach). May end in `/p2p/<id>`.
    pub join: Vec<String>,
    /// Pre-shared key file: only nodes with the same key can connect. Forces TCP. Without it
    /// (and without `cluster_token` or `open`) the node uses `<data_dir>/swarm.key`, created
    /// with a random key on the first start.
    pub swarm_key: Option<PathBuf>,
    /// The cluster key as 64 hex characters, printed by the node that created the cluster:
    /// joins that cluster (saved to `<data_dir>/swarm.key`). Forces TCP.
    pub cluster_token: Option<String>,
    /// No cluster key: any host that reaches the node can join. For throw-away experiments.
    pub open: bool,
    /// If non-empty, only these node ids may connect.
    pub allow_peers: Vec<String>,
    /// Local-network discovery.
    pub mdns: bool,
    /// How often mDNS queries the network.
    #[serde(with = "humantime_serde")]
    pub mdns_query_interval: Duration,
    /// Established connections at most, all peers together.
    pub max_connections: u32,
    /// Established connections at most to one peer.
    pub max_connections_per_peer: u32,
    /// Bytes of inbound frames one connection may have in memory at once (all its streams).
    /// At least the largest frame a service allows.
    pub connection_budget_bytes: usize,
    /// Bytes of inbound frames larger than 64 KiB all connections together may have in memory
    /// at once (see `net::budget`).
    pub inbound_budget_bytes: usize,
    /// Dial newly discovered peers while fewer than this many are connected.
    pub target_peers: usize,
    /// Deadline of node-to-node requests.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Time spent on the start-up compute probe.
    #[serde(with = "humantime_serde")]
    pub probe_budget: Duration,
    /// How much slower than the machine this node's trainers run (1.0 = full speed; 2.0 = half
    /// speed). For measuring heterogeneous meshes on uniform hardware.
    pub train_slowdown: f64,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Failure-detector timeouts.
    pub membership: membership::Config,
    /// How often the catalog runs anti-entropy with one random alive peer.
    #[serde(with = "humantime_serde")]
    pub catalog_sync_interval: Duration,
    /// Limits of the catalog replica.
    pub catalog: catalog::Config,
    /// The data stage: replication, shard sizes, re-replication interval.
    pub data: data::Settings,
    /// How many nodes hold every model version's files (a registration answers once they do).
    pub model_replication: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            listen: vec![
                format!("/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}"),
                format!("/ip4/0.0.0.0/udp/{DEFAULT_P2P_PORT}/quic-v1"),
            ],
            api_listen: SocketAddr::from(([127, 0, 0, 1], 7080)),
            api_token_file: None,
            tls_cert: None,
            tls_key: None,
            api: Default::default(),
            join: vec![],
            swarm_key: None,
            cluster_token: None,
            open: false,
            allow_peers: vec![],
            mdns: true,
            mdns_query_interval: Duration::from_secs(5),
            max_connections: 256,
            max_connections_per_peer: 2,
            connection_budget_bytes: 160 << 20,
            inbound_budget_bytes: 1 << 30,
            target_peers: 64,
            request_timeout: Duration::from_secs(30),
            probe_budget: Duration::from_millis(300),
            train_slowdown: 1.0,
            shutdown: ShutdownConfig::default(),
            membership: membership::Config::default(),
            catalog_sync_interval: Duration::from_secs(5),
            catalog: catalog::Config::default(),
            data: data::Settings::default(),
            model_replication: crate::models::replicate::DEFAULT_FACTOR,
        }
    }
}

/// The largest frame any request-response service allows: a connection's budget must hold one.
pub fn largest_frame_bytes() -> usize {
    use flotilla_protocol::services::{actors, catalog, control, data, jobs, serving};
    [
        control::MAX_FRAME_BYTES,
        catalog::MAX_MESSAGE_BYTES,
        jobs::MAX_FRAME_BYTES,
        actors::MAX_FRAME_BYTES,
        serving::MAX_FRAME_BYTES,
        data::MAX_FRAME_BYTES,
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
}

/// `[shutdown]`: what a SIGTERM or SIGINT gives the node before it leaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long training runs coordinated here get to write a last checkpoint and in-flight
    /// HTTP requests get to finish, together; the leave announcement and the store flush come
    /// after it.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(20),
        }
    }
}

/// The default data directory: `<user data dir>/flotilla`.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("flotilla")
}

/// A configuration error naming the field.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

fn err(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

impl NodeConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(err("listen", "at least one listen address is required"));
        }
        if !(1..=16).contains(&self.model_replication) {
            return Err(err(
                "model_replication",
                "must be from 1 to 16 nodes holding each model",
            ));
        }
        if !(self.train_slowdown.is_finite() && (1.0..=100.0).contains(&self.train_slowdown)) {
            return Err(err(
                "train_slowdown",
                "must be a number from 1 (full speed) to 100",
            ));
        }
        for a in &self.listen {
            a.parse::<Multiaddr>()
                .map_err(|e| err("listen", format!("{a:?} is not a multiaddr: {e}")))?;
        }
        for a in &self.join {
            a.parse::<Multiaddr>()
                .map_err(|e| err("join", format!("{a:?} is not a multiaddr: {e}")))?;
        }
        for p in &self.allow_peers {
            p.parse::<PeerId>()
                .map_err(|e| err("allow_peers", format!("{p:?} is not a node id: {e}")))?;
        }
        if self.open && self.swarm_key.is_some() {
            return Err(err(
                "open",
                "an open node has no cluster key; drop swarm_key (--swarm-key) or open (--open)",
            ));
        }
        if self.open && self.cluster_token.is_some() {
            return Err(err(
                "open",
                "an open node has no cluster key; drop cluster_token (--cluster-token) or open (--open)",
            ));
        }
        if let Some(token) = &self.cluster_token {
            if self.swarm_key.is_some() {
                return Err(err(
                    "cluster_token",
                    "give the cluster key once: cluster_token (--cluster-token) or swarm_key (--swarm-key), not both",
                ));
            }
            parse_cluster_token(token).map_err(|reason| err("cluster_token", reason))?;
        }
        if !self.open && self.listen_addrs().is_empty() {
            return Err(err(
                "listen",
                "the cluster key forces TCP, and no TCP listen address is configured (QUIC cannot carry the key's handshake; --open runs without a key)",
            ));
        }
        if !self.api_listen.ip().is_loopback() && self.api_token_path().is_none() {
            return Err(err(
                "api_listen",
                format!(
                    "{} is reachable beyond this machine and an open node has no generated admin token; set api_token_file (--api-token-file) so the API requires a bearer token",
                    self.api_listen
                ),
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(err(
                    "tls_key",
                    "tls_cert (--tls-cert) is set, so the API serves HTTPS and needs the certificate's private key too; set tls_key (--tls-key)",
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "tls_cert",
                    "tls_key (--tls-key) is set, so the API serves HTTPS and needs the certificate too; set tls_cert (--tls-cert)",
                ))
            }
            _ => {}
        }
        self.api.validate().map_err(|e| err("api", e))?;
        if self.max_connections == 0 {
            return Err(err("max_connections", "must be at least 1"));
        }
        if self.max_connections_per_peer == 0 {
            return Err(err("max_connections_per_peer", "must be at least 1"));
        }
        let largest = largest_frame_bytes();
        if self.connection_budget_bytes < largest
            || self.connection_budget_bytes > u32::MAX as usize
        {
            return Err(err(
                "connection_budget_bytes",
                format!("must be between the largest frame ({largest} bytes) and 4 GiB"),
            ));
        }
        if self.inbound_budget_bytes < self.connection_budget_bytes {
            return Err(err(
                "inbound_budget_bytes",
                "must be at least connection_budget_bytes",
            ));
        }
        if self.mdns_query_interval < Duration::from_millis(100) {
            return Err(err("mdns_query_interval", "must be at least 100ms"));
        }
        if self.shutdown.grace > Duration::from_secs(3600) {
            return Err(err("shutdown.grace", "at most 1h"));
        }
        if self.request_timeout.is_zero() {
            return Err(err("request_timeout", "must be greater than zero"));
        }
        self.membership
            .validate()
            .map_err(|e| err("membership", e.to_string()))?;
        // Faster than this, rounds would overlap with their own request deadlines on a busy
        // node; slower than an hour, a missed gossip stays missing for too long.
        if self.catalog_sync_interval < Duration::from_millis(100)
            || self.catalog_sync_interval > Duration::from_secs(3600)
        {
            return Err(err("catalog_sync_interval", "must be between 100ms and 1h"));
        }
        self.catalog
            .validate()
            .map_err(|e| err("catalog", e.to_string()))?;
        self.data.validate().map_err(|e| err("data", e))?;
        Ok(())
    }

    /// The listen addresses, parsed (call after [`validate`](Self::validate)). Every node but
    /// an open one has a cluster key (a configured file, a token, or the one in the data dir),
    /// and a key forces TCP: QUIC addresses are left out because QUIC cannot carry the pnet
    /// handshake.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen
            .iter()
            .filter(|a| self.open || !a.contains("/quic"))
            .filter_map(|a| a.parse().ok())
            .collect()
    }

    /// The file holding the token the API requires, if it requires one: `api_token_file` when
    /// configured; otherwise, when the API listens beyond loopback, the admin token generated
    /// in `<data_dir>/api-token` (open nodes have none). A loopback API without a configured
    /// file requires no token, so the CLI on the same machine needs none.
    pub fn api_token_path(&self) -> Option<PathBuf> {
        match &self.api_token_file {
            Some(f) => Some(f.clone()),
            None if self.open || self.api_listen.ip().is_loopback() => None,
            None => Some(self.data_dir.join(API_TOKEN_FILE)),
        }
    }

    /// The join addresses, parsed.
    pub fn join_addrs(&self) -> Vec<Multiaddr> {
        self.join.iter().filter_map(|a| a.parse().ok()).collect()
    }

    /// The allow-list, parsed.
    pub fn allowed_peers(&self) -> Vec<PeerId> {
        self.allow_peers
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

/// Parses a cluster token: the 32-byte cluster key as 64 hex characters (surrounding
/// whitespace ignored). The error says what is wrong without echoing the secret.
pub fn parse_cluster_token(token: &str) -> Result<[u8; 32], String> {
    let t = token.trim();
    if t.len() != 64 {
        return Err(format!(
            "must be 64 hex characters (a 32-byte key), is {} characters",
            t.len()
        ));
    }
    if let Some(pos) = t.bytes().position(|b| !b.is_ascii_hexdigit()) {
        return Err(format!(
            "must be 64 hex characters; character {} is not a hex digit",
            pos + 1
        ));
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        // Every character is an ASCII hex digit, so each pair parses.
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(key)
}

/// Reads a bearer token from a file: its first line, trimmed; empty files are refused.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read API token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        anyhow::bail!("API token file {} is empty", path.display());
    }
    Ok(token)
}

/// Settings of the CLI's client commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Base URL of the node to talk to.
    pub peer: String,
    /// Bearer token file for nodes that require one.
    pub api_token_file: Option<PathBuf>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            peer: format!("http://{DEFAULT_API_ADDR}"),
            api_token_file: None,
        }
    }
}

/// The TOML file given with `--config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub node: NodeConfig,
    pub client: ClientConfig,
}

impl FileConfig {
    /// Loads and parses a config file; errors name the file and the field.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        NodeConfig::default().validate().unwrap();
    }

    #[test]
    fn byte_budgets_must_hold_the_largest_frame() {
        let c = NodeConfig {
            connection_budget_bytes: largest_frame_bytes() - 1,
            ..NodeConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("connection_budget_bytes"), "{e}");
        let mut c = NodeConfig::default();
        c.inbound_budget_bytes = c.connection_budget_bytes - 1;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("inbound_budget_bytes"), "{e}");
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let e = toml::from_str::<FileConfig>("[node]\nlisten_adress = []\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_adress"), "{e}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let e = toml::from_str::<FileConfig>("[node]\nmdns_query_interval = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mdns_query_interval"), "{e}");
        let c = NodeConfig {
            join: vec!["not an address".into()],
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "join");
        let c = NodeConfig {
            allow_peers: vec!["nope".into()],
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "allow_peers");
    }

    #[test]
    fn catalog_sync_interval_is_checked_by_name() {
        let f: FileConfig = toml::from_str("[node]\ncatalog_sync_interval = \"2s\"\n").unwrap();
        assert_eq!(f.node.catalog_sync_interval, Duration::from_secs(2));
        f.node.validate().unwrap();
        let c = NodeConfig {
            catalog_sync_interval: Duration::from_millis(10),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "catalog_sync_interval");
        let mut c = NodeConfig::default();
        c.catalog.max_entries = 0;
        assert_eq!(c.validate().unwrap_err().field, "catalog");
    }

    #[test]
    fn tls_needs_both_files_and_api_limits_are_checked() {
        let c = NodeConfig {
            tls_cert: Some("/etc/cert.pem".into()),
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "tls_key");
        assert!(e.reason.contains("--tls-key"), "{}", e.reason);
        let c = NodeConfig {
            tls_key: Some("/etc/key.pem".into()),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "tls_cert");
        NodeConfig {
            tls_cert: Some("/etc/cert.pem".into()),
            tls_key: Some("/etc/key.pem".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let f: FileConfig = toml::from_str(
            "[node]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n[node.api]\nrequest_timeout = \"5s\"\nmax_in_flight = 8\n",
        )
        .unwrap();
        assert_eq!(f.node.api.request_timeout, Duration::from_secs(5));
        assert_eq!(f.node.api.max_in_flight, 8);
        f.node.validate().unwrap();
        let mut c = NodeConfig::default();
        c.api.rate_burst = 0;
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "api");
        assert!(e.reason.starts_with("rate_burst"), "{}", e.reason);
    }

    #[test]
    fn public_api_needs_a_token() {
        // An admitted node (the default) uses the admin token generated in its data dir.
        let c = NodeConfig {
            api_listen: "0.0.0.0:7080".parse().unwrap(),
            data_dir: "node-data".into(),
            ..Default::default()
        };
        c.validate().unwrap();
        assert_eq!(
            c.api_token_path(),
            Some(PathBuf::from("node-data/api-token"))
        );
        // An open node has none: it must be given one.
        let c = NodeConfig { open: true, ..c };
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "api_listen");
        assert!(e.reason.contains("--api-token-file"));
        let c = NodeConfig {
            api_token_file: Some("secrets/t".into()),
            ..c
        };
        c.validate().unwrap();
        assert_eq!(c.api_token_path(), Some(PathBuf::from("secrets/t")));
        // On loopback no token is required unless one is configured.
        assert_eq!(NodeConfig::default().api_token_path(), None);
    }

    #[test]
    fn every_node_but_an_open_one_has_a_key_and_so_listens_on_tcp_only() {
        let c = NodeConfig::default();
        assert_eq!(c.listen.len(), 2, "the default lists TCP and QUIC");
        let addrs = c.listen_addrs();
        assert_eq!(addrs.len(), 1);
        assert!(addrs[0].to_string().contains("/tcp/"), "{addrs:?}");
        let open = NodeConfig {
            open: true,
            ..Default::default()
        };
        open.validate().unwrap();
        assert_eq!(open.listen_addrs().len(), 2, "an open node keeps QUIC");
        // A QUIC-only node needs --open.
        let quic_only = NodeConfig {
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()],
            ..Default::default()
        };
        assert_eq!(quic_only.validate().unwrap_err().field, "listen");
        NodeConfig {
            open: true,
            ..quic_only
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn cluster_token_and_open_are_checked_by_name() {
        let token = "ab".repeat(32);
        let c = NodeConfig {
            cluster_token: Some(token.clone()),
            ..Default::default()
        };
        c.validate().unwrap();
        assert_eq!(parse_cluster_token(&token).unwrap(), [0xab; 32]);
        assert_eq!(
            parse_cluster_token(&format!(" {} \n", "AB".repeat(32))).unwrap(),
            [0xab; 32],
            "case and surrounding whitespace do not matter"
        );
        for bad in [
            "",
            "abc",
            &"ab".repeat(33),
            &format!("{}zz", "ab".repeat(31)),
            &format!("+f{}", "ab".repeat(31)),
        ] {
            let c = NodeConfig {
                cluster_token: Some(bad.to_string()),
                ..Default::default()
            };
            let e = c.validate().unwrap_err();
            assert_eq!(e.field, "cluster_token", "{bad:?}");
            assert!(e.reason.contains("64 hex characters"), "{}", e.reason);
        }
        let both = NodeConfig {
            cluster_token: Some(token.clone()),
            swarm_key: Some("secrets/k".into()),
            ..Default::default()
        };
        assert_eq!(both.validate().unwrap_err().field, "cluster_token");
        let open_with_token = NodeConfig {
            open: true,
            cluster_token: Some(token),
            ..Default::default()
        };
        let e = open_with_token.validate().unwrap_err();
        assert_eq!(e.field, "open");
        assert!(e.reason.contains("--cluster-token"), "{}", e.reason);
        let open_with_key = NodeConfig {
            open: true,
            swarm_key: Some("secrets/k".into()),
            ..Default::default()
        };
        let e = open_with_key.validate().unwrap_err();
        assert_eq!(e.field, "open");
        assert!(e.reason.contains("--swarm-key"), "{}", e.reason);
        // Both fields come from a file too.
        let f: FileConfig = toml::from_str("[node]\nopen = true\n").unwrap();
        assert!(f.node.open);
        let f: FileConfig = toml::from_str(&format!(
            "[node]\ncluster_token = \"{}\"\n",
            "01".repeat(32)
        ))
        .unwrap();
        f.node.validate().unwrap();
    }

    #[test]
    fn swarm_key_forces_tcp() {
        let c = NodeConfig {
            swarm_key: Some("secrets/k".into()),
            ..Default::default()
        };
        c.validate().unwrap();
        assert!(c
            .listen_addrs()
            .iter()
            .all(|a| !a.to_string().contains("quic")));
        assert_eq!(c.listen_addrs().len(), 1);
        let c = NodeConfig {
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()],
            ..c
        };
        assert_eq!(c.validate().unwrap_err().field, "listen");
    }

    #[test]
    fn file_parses_human_units() {
        let f: FileConfig = toml::from_str(
            "[node]\nmdns_query_interval = \"2s\"\n[node.membership]\ndead_after = \"20s\"\n[client]\npeer = \"http://10.0.0.1:7080\"\n",
        )
        .unwrap();
        assert_eq!(f.node.mdns_query_interval, Duration::from_secs(2));
        assert_eq!(f.node.membership.dead_after, Duration::from_secs(20));
        assert_eq!(
            f.node.membership.suspect_after,
            membership::Config::default().suspect_after
        );
        assert_eq!(f.client.peer, "http://10.0.0.1:7080");
    }
}
