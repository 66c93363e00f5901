//! Errors of the wire layer.

/// What can go wrong encoding or decoding a frame.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// A frame announced (or would have) more bytes than the service allows.
    #[error("frame of {len} bytes exceeds the {cap}-byte cap of {service}")]
    FrameTooLarge {
        service: &'static str,
        len: u64,
        cap: u64,
    },
    /// The bytes are not a valid message of the expected type.
    #[error("malformed {service} frame: {reason}")]
    Malformed {
        service: &'static str,
        reason: String,
    },
    /// A valid message was followed by extra bytes.
    #[error("{service} frame has {extra} trailing bytes")]
    TrailingBytes { service: &'static str, extra: usize },
    /// Encoding failed (only for values the protocol cannot represent).
    #[error("cannot encode {service} message: {reason}")]
    Encode {
        service: &'static str,
        reason: String,
    },
}

/// Result with the wire [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
