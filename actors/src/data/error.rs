//! Errors of the data cores. Every variant names the record, line, field or parameter involved.

use flotilla_protocol::services::control::{RemoteError, RemoteErrorKind};
use flotilla_protocol::services::data::ShardId;

/// What can go wrong parsing, transforming or reading records.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is not UTF-8; `line` is 1-based, `byte_offset` counts from the input's start.
    /// Inside a quoted CSV field the offset is counted over the unquoted field, so it can fall
    /// a few bytes (the quotes and doubled quotes before it) short of the raw position.
    #[error("input is not valid UTF-8 near byte offset {byte_offset} (line {line})")]
    NotUtf8 { line: u64, byte_offset: u64 },
    /// A field the caller named is not in the input or the record.
    #[error("field `{field}` not found{}; available fields: {}", at.as_ref().map(|a| format!(" in {a}")).unwrap_or_default(), available.join(", "))]
    MissingField {
        field: String,
        /// Where it was looked for: `header`, `line 3`, `record 17`.
        at: Option<String>,
        available: Vec<String>,
    },
    /// A malformed line or row under [`crate::data::ingest::OnError::Fail`].
    #[error("malformed {format} at line {line}: {reason}")]
    Malformed {
        format: &'static str,
        line: u64,
        reason: String,
    },
    /// Reading the input failed.
    #[error("reading input: {0}")]
    Io(String),
    /// An operation's parameter is out of range or inconsistent.
    #[error("{op}: parameter `{parameter}`: {reason}")]
    InvalidParameter {
        op: &'static str,
        parameter: String,
        reason: String,
    },
    /// A regular expression does not compile.
    #[error("{op}: pattern `{pattern}`: {reason}")]
    Regex {
        op: &'static str,
        pattern: String,
        reason: String,
    },
    /// A rules or thesaurus file does not parse.
    #[error("{what}: {reason}")]
    Config { what: String, reason: String },
    /// A labelling model failed or answered with the wrong shape.
    #[error("model labeller: {0}")]
    Model(String),
    /// This node holds no shard of that name.
    #[error("shard {0} is not held here")]
    ShardNotFound(ShardId),
    /// A shard's bytes do not hash to the hash it was stored or sent under: refused.
    #[error("shard {shard} is corrupt: expected blake3 {expected}, content hashes to {actual}")]
    HashMismatch {
        shard: ShardId,
        expected: String,
        actual: String,
    },
    /// Stored or received bytes do not decode.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Something is larger than its configured or protocol limit.
    #[error("{what} of {len} exceeds the limit of {cap}")]
    TooLarge { what: String, len: u64, cap: u64 },
    /// A request is out of order or inconsistent (a chunk out of sequence, a range past the end).
    #[error("{0}")]
    BadRequest(String),
    /// A dataset version (or a parent in its lineage) is not in the catalog.
    #[error("dataset {dataset}@{version} not found{}", context.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    VersionNotFound {
        dataset: String,
        version: u64,
        context: Option<String>,
    },
    /// A peer failed or answered an error.
    #[error("peer {peer}: {reason}")]
    Peer { peer: String, reason: String },
    /// A peer answered with an error.
    #[error("peer {peer}: {error}")]
    Remote { peer: String, error: RemoteError },
    /// The store, an actor or a deadline failed.
    #[error(transparent)]
    Node(#[from] crate::Error),
}

/// Result with the data cores' [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid(op: &'static str, parameter: &str, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            op,
            parameter: parameter.to_string(),
            reason: reason.into(),
        }
    }

    /// The error to answer a peer with: its class and this error's message.
    pub fn to_remote(&self) -> RemoteError {
        let kind = match self {
            Error::ShardNotFound(_) | Error::VersionNotFound { .. } => RemoteErrorKind::NotFound,
            Error::HashMismatch { .. } | Error::Corrupt(_) | Error::Io(_) => {
                RemoteErrorKind::Internal
            }
            Error::Node(crate::Error::Timeout { .. } | crate::Error::ActorGone { .. })
            | Error::Peer { .. } => RemoteErrorKind::Unavailable,
            Error::Node(_) => RemoteErrorKind::Internal,
            Error::Remote { error, .. } => error.kind,
            _ => RemoteErrorKind::BadRequest,
        };
        RemoteError {
            kind,
            message: self.to_string(),
        }
    }

    pub(crate) fn regex(op: &'static str, pattern: &str, e: regex::Error) -> Self {
        Error::Regex {
            op,
            pattern: pattern.to_string(),
            reason: e.to_string(),
        }
    }
}
