//! The crate's error type: bad input (mismatched lengths, out-of-range settings, empty buffers)
//! is reported, never panicked on.

/// Everything that can go wrong in `flotilla-numerics`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Two buffers that must agree in length do not.
    #[error("length mismatch in {what}: expected {expected}, got {got}")]
    LengthMismatch {
        /// Which argument or buffer.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// An argument is outside its valid range (a negative learning rate, a zero window).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An input that must not be empty is.
    #[error("empty input: {0}")]
    Empty(&'static str),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Checks that `got == expected`, naming `what` otherwise.
pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            got,
        })
    }
}
