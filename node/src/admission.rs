//! Admission to the mesh: the cluster key every node of a cluster shares (a libp2p pre-shared
//! key, checked in a pnet handshake before anything else is said), and the node's admin API
//! token.
//!
//! Where the key comes from, first match wins:
//! - `open`: no key at all; any host that reaches the node can join (QUIC stays available).
//! - `swarm_key`: a key file the operator manages.
//! - `cluster_token`: the key as 64 hex characters, given by the node that created the cluster.
//!   It is saved to `<data_dir>/swarm.key`, so later starts need no token; a different key
//!   already there is refused rather than overwritten.
//! - `<data_dir>/swarm.key` from an earlier start.
//! - none of these: a new cluster with a random key, saved to `<data_dir>/swarm.key`.
//!
//! Every node that is not open also gets an admin API token in `<data_dir>/api-token` unless it
//! is configured with `api_token_file`. The API requires it when it listens beyond loopback (see
//! [`NodeConfig::api_token_path`]); on loopback the API stays usable without one.
//!
//! [`prepare`] decides and generates in memory; [`Admission::commit`] writes the new files once
//! the node has bound its addresses, so a start that fails (a port in use) leaves nothing
//! behind and the next start still reports the new cluster's token.

use std::io::Write;
use std::path::{Path, PathBuf};

use libp2p::pnet::PreSharedKey;
use rand::RngCore;
use tracing::{info, warn};

pub use crate::config::API_TOKEN_FILE;
use crate::config::{parse_cluster_token, read_token, NodeConfig};

/// File name of the cluster key inside the data dir.
pub const SWARM_KEY_FILE: &str = "swarm.key";

/// Where a node's cluster key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// No key: an open mesh.
    Open,
    /// The configured `swarm_key` file.
    File(PathBuf),
    /// The configured `cluster_token` (saved to, or matching, `<data_dir>/swarm.key`).
    Token(PathBuf),
    /// `<data_dir>/swarm.key`, written by an earlier start.
    Stored(PathBuf),
    /// A new cluster: a random key for `<data_dir>/swarm.key`.
    New(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Open => f.write_str("none (open mesh)"),
            KeySource::File(p) => write!(f, "{} (swarm_key)", p.display()),
            KeySource::Token(p) => write!(f, "{} (from cluster_token)", p.display()),
            KeySource::Stored(p) => write!(f, "{}", p.display()),
            KeySource::New(p) => write!(f, "{} (new cluster)", p.display()),
        }
    }
}

/// Decides where the key comes from, reading but never writing: `flotilla up --dry-run` shows
/// this, and [`prepare`] starts from it. Errors name the file or the field at fault.
pub fn key_source(config: &NodeConfig) -> anyhow::Result<KeySource> {
    if config.open {
        return Ok(KeySource::Open);
    }
    if let Some(file) = &config.swarm_key {
        crate::net::transport::read_swarm_key(file)?;
        return Ok(KeySource::File(file.clone()));
    }
    let stored = config.data_dir.join(SWARM_KEY_FILE);
    let existing = if stored.exists() {
        Some(crate::net::transport::read_swarm_key(&stored)?)
    } else {
        None
    };
    if let Some(token) = &config.cluster_token {
        let given = psk_from_bytes(parse_cluster_token(token).map_err(anyhow::Error::msg)?);
        if let Some(existing) = existing {
            if existing != given {
                anyhow::bail!(
                    "invalid configuration: cluster_token: the data dir {} already belongs to another cluster (key fingerprint {}, the token's is {}); use another --data-dir, or delete {} to move this node to the token's cluster",
                    config.data_dir.display(),
                    existing.fingerprint(),
                    given.fingerprint(),
                    stored.display()
                );
            }
        }
        return Ok(KeySource::Token(stored));
    }
    Ok(match existing {
        Some(_) => KeySource::Stored(stored),
        None => KeySource::New(stored),
    })
}

/// A file [`Admission::commit`] will write (mode 0600).
#[derive(Debug, Clone)]
struct PendingFile {
    path: PathBuf,
    contents: String,
}

/// How a node is admitted: its key, its API token, and the files a first start creates.
pub struct Admission {
    /// The pre-shared key; `None` for an open mesh.
    pub psk: Option<PreSharedKey>,
    pub source: KeySource,
    /// The bearer token the API requires, if any.
    pub api_token: Option<String>,
    /// The new cluster's key as 64 hex characters: set only on the start that created it.
    pub new_cluster_token: Option<String>,
    /// The admin API token and its file: set only on the start that created them.
    pub new_api_token: Option<(PathBuf, String)>,
    pending: Vec<PendingFile>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or the tokens: this ends up in logs.
        f.debug_struct("Admission")
            .field("source", &self.source)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl Admission {
    /// The key's fingerprint (safe to show: it does not reveal the key), if there is a key.
    pub fn fingerprint(&self) -> Option<String> {
        self.psk.map(|k| k.fingerprint().to_string())
    }

    /// Writes the files this start generated (the key of a new cluster or the one given as a
    /// token, a new admin token), each with mode 0600.
    pub fn commit(&mut self) -> anyhow::Result<()> {
        for file in self.pending.drain(..) {
            write_private(&file.path, &file.contents)?;
            info!(path = %file.path.display(), "written");
        }
        Ok(())
    }
}

/// Decides the node's key and API token; generates what is missing, in memory (see
/// [`Admission::commit`]).
pub fn prepare(config: &NodeConfig) -> anyhow::Result<Admission> {
    let source = key_source(config)?;
    let mut pending = Vec::new();
    let mut new_cluster_token = None;
    let psk = match &source {
        KeySource::Open => {
            warn!("open mesh (--open): no cluster key, so any host that reaches this node can join the cluster; use it only for throw-away experiments");
            None
        }
        KeySource::File(path) | KeySource::Stored(path) => {
            Some(crate::net::transport::read_swarm_key(path)?)
        }
        KeySource::Token(path) => {
            let token = config.cluster_token.as_deref().unwrap_or_default();
            let bytes = parse_cluster_token(token).map_err(anyhow::Error::msg)?;
            if !path.exists() {
                pending.push(PendingFile {
                    path: path.clone(),
                    contents: key_file(&bytes),
                });
            }
            Some(psk_from_bytes(bytes))
        }
        KeySource::New(path) => {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            pending.push(PendingFile {
                path: path.clone(),
                contents: key_file(&bytes),
            });
            new_cluster_token = Some(hex(&bytes));
            Some(psk_from_bytes(bytes))
        }
    };

    // The admin token: the configured file, else the one in the data dir (made on first start).
    // Only required when the API listens beyond loopback (see `NodeConfig::api_token_path`).
    let required = config.api_token_path().is_some();
    let mut new_api_token = None;
    let api_token = if let Some(file) = &config.api_token_file {
        Some(read_token(file)?)
    } else if config.open {
        None
    } else {
        let path = config.data_dir.join(API_TOKEN_FILE);
        if path.exists() {
            required.then(|| read_token(&path)).transpose()?
        } else {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let token = hex(&bytes);
            pending.push(PendingFile {
                path: path.clone(),
                contents: format!("{token}\n"),
            });
            new_api_token = Some((path, token.clone()));
            required.then_some(token)
        }
    };
    let admission = Admission {
        psk,
        source,
        api_token,
        new_cluster_token,
        new_api_token,
        pending,
    };
    if let Some(fp) = admission.fingerprint() {
        info!(key = %admission.source, fingerprint = %fp, "cluster key");
    }
    Ok(admission)
}

/// Reads the cluster key from `path`, or creates a random one there (mode 0600): one key shared
/// by the nodes of a local cluster (the demo, tests). Returns the key file's path.
pub fn load_or_create_key_file(path: &Path) -> anyhow::Result<PathBuf> {
    if path.exists() {
        crate::net::transport::read_swarm_key(path)?;
    } else {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        write_private(path, &key_file(&bytes))?;
    }
    Ok(path.to_path_buf())
}

/// A new random cluster token (64 hex characters).
pub fn random_cluster_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// The cluster token (64 hex characters) of a key file: the key's third line.
pub fn cluster_token_of(path: &Path) -> anyhow::Result<String> {
    crate::net::transport::read_swarm_key(path)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read swarm key {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .nth(2)
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase())
}

fn psk_from_bytes(bytes: [u8; 32]) -> PreSharedKey {
    PreSharedKey::new(bytes)
}

/// The standard key file: `/key/swarm/psk/1.0.0/`, `/base16/`, the key in hex.
fn key_file(bytes: &[u8; 32]) -> String {
    format!("/key/swarm/psk/1.0.0/\n/base16/\n{}\n", hex(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `contents` to a temporary file with mode 0600 and renames it into place, so the file
/// is never readable by others, nor half-written after a crash.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> NodeConfig {
        NodeConfig {
            data_dir: dir.to_path_buf(),
            ..NodeConfig::default()
        }
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_fresh_data_dir_makes_a_new_cluster_once() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        assert_eq!(
            key_source(&c).unwrap(),
            KeySource::New(dir.path().join(SWARM_KEY_FILE))
        );
        let mut first = prepare(&c).unwrap();
        // Nothing is written before commit.
        assert!(!dir.path().join(SWARM_KEY_FILE).exists());
        let token = first.new_cluster_token.clone().unwrap();
        assert_eq!(token.len(), 64);
        assert!(first.new_api_token.is_some());
        // Loopback API: the token exists but is not required.
        assert_eq!(first.api_token, None);
        first.commit().unwrap();
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir.path().join(SWARM_KEY_FILE)), 0o600);
            assert_eq!(mode(&dir.path().join(API_TOKEN_FILE)), 0o600);
        }
        assert_eq!(
            cluster_token_of(&dir.path().join(SWARM_KEY_FILE)).unwrap(),
            token
        );

        let again = prepare(&c).unwrap();
        assert_eq!(
            again.source,
            KeySource::Stored(dir.path().join(SWARM_KEY_FILE))
        );
        assert_eq!(again.new_cluster_token, None);
        assert!(again.new_api_token.is_none());
        assert_eq!(again.psk, first.psk);
    }

    #[test]
    fn a_token_joins_and_a_different_stored_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let token = random_cluster_token();
        let c = NodeConfig {
            cluster_token: Some(token.clone()),
            ..config(dir.path())
        };
        let mut a = prepare(&c).unwrap();
        assert_eq!(a.new_cluster_token, None, "joining prints no new cluster");
        a.commit().unwrap();
        assert_eq!(
            cluster_token_of(&dir.path().join(SWARM_KEY_FILE)).unwrap(),
            token
        );
        // The same token again is fine; another is refused, naming the field.
        prepare(&c).unwrap();
        let other = NodeConfig {
            cluster_token: Some(random_cluster_token()),
            ..config(dir.path())
        };
        let e = prepare(&other).unwrap_err().to_string();
        assert!(
            e.contains("cluster_token") && e.contains("another cluster"),
            "{e}"
        );
    }

    #[test]
    fn an_exposed_api_requires_the_generated_token_and_open_nodes_get_none() {
        let dir = tempfile::tempdir().unwrap();
        let c = NodeConfig {
            api_listen: "0.0.0.0:0".parse().unwrap(),
            ..config(dir.path())
        };
        let mut a = prepare(&c).unwrap();
        let (path, token) = a.new_api_token.clone().unwrap();
        assert_eq!(a.api_token.as_deref(), Some(token.as_str()));
        a.commit().unwrap();
        assert_eq!(read_token(&path).unwrap(), token);
        assert_eq!(prepare(&c).unwrap().api_token, Some(token));

        let open = tempfile::tempdir().unwrap();
        let c = NodeConfig {
            open: true,
            ..config(open.path())
        };
        let mut a = prepare(&c).unwrap();
        assert!(a.psk.is_none() && a.api_token.is_none() && a.new_api_token.is_none());
        a.commit().unwrap();
        assert!(!open.path().join(SWARM_KEY_FILE).exists());
        assert!(!open.path().join(API_TOKEN_FILE).exists());
    }

    #[test]
    fn a_corrupt_stored_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SWARM_KEY_FILE), "garbage").unwrap();
        let e = prepare(&config(dir.path())).unwrap_err().to_string();
        assert!(e.contains("swarm.key") && e.contains("not a valid"), "{e}");
    }
}
