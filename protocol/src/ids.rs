//! Identifiers shared by every service.

use serde::{Deserialize, Serialize};

/// A node's identity: the base58 text of its libp2p peer id (derived from its ed25519 key).
///
/// Kept as text so this crate does not depend on libp2p; the node checks the text parses as a
/// peer id before trusting it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub String);

impl NodeId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short form for tables: the last 8 characters, which differ between ed25519 peer ids
    /// (their common prefix encodes the key type).
    pub fn short(&self) -> &str {
        let len = self.0.len();
        self.0.get(len.saturating_sub(8)..).unwrap_or(&self.0)
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId(s.to_string())
    }
}

/// Identifies a request within one connection direction; the response echoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);
