//! Errors of the actor layer.

use std::time::Duration;

/// What can go wrong talking to an actor, a peer or the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An actor did not answer within the call's deadline.
    #[error("{actor} did not answer within {deadline:?}")]
    Timeout {
        actor: &'static str,
        deadline: Duration,
    },
    /// An actor has stopped or its mailbox is closed.
    #[error("{actor} is not running")]
    ActorGone { actor: &'static str },
    /// A peer could not be reached or answered with an error.
    #[error("peer {peer}: {reason}")]
    Peer { peer: String, reason: String },
    /// A peer asked for something it may not do; the reason says what and why.
    #[error("refused: {0}")]
    Forbidden(String),
    /// The storage engine failed.
    #[error("store: {0}")]
    Store(String),
    /// A configuration value is invalid; the message names the field.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
