//! Errors of the training roles.

use flotilla_protocol::training::WorkerId;

/// What can go wrong in a training core or its actors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job has failed; every later call gets the same reason.
    #[error("training failed: {0}")]
    Failed(String),
    /// The worker has not joined this shard (or has left it).
    #[error("worker {0} is not an active worker of this shard")]
    UnknownWorker(WorkerId),
    /// A second gradient from one worker for one sync step.
    #[error("worker {worker} already pushed a gradient for step {step}")]
    DuplicatePush { worker: WorkerId, step: u64 },
    /// A gradient computed at a version the shard has not reached: a confused worker.
    #[error("gradient for step {step} but the shard is at step {current}")]
    Ahead { step: u64, current: u64 },
    /// A gradient or state whose length does not fit the shard's range.
    #[error("{what}: {got} values for a range of {expected}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A gradient payload with an odd number of half-precision bytes.
    #[error("malformed gradient payload")]
    Malformed,
    /// A pull range outside the shard.
    #[error("range {offset}+{len} is outside the shard's {size} values")]
    Range { offset: u64, len: u64, size: usize },
    /// A bounded queue is full; the caller may retry later.
    #[error("{0} is full")]
    Busy(&'static str),
    /// A checkpoint could not be written, read or verified.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A parameter server, coordinator or peer could not be reached.
    #[error(transparent)]
    Unavailable(#[from] crate::Error),
}

/// Result with the training [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
