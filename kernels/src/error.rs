//! The crate's error type. Bad input (mismatched lengths, empty batches, corrupt files, unknown
//! characters) is always reported through [`Error`], never by panicking.

use std::path::PathBuf;

/// Everything that can go wrong in `flotilla-kernels`.
#[derive(Debug, thiserror::Error)]
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
    /// An argument is outside its valid range (a negative learning rate, a zero dimension).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An input that must not be empty is.
    #[error("empty input: {0}")]
    Empty(&'static str),
    /// The Hugging Face tokenizer library reported an error.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The character tokenizer met a character outside its vocabulary.
    #[error("character {ch:?} at char position {position} is not in the vocabulary")]
    UnknownChar {
        /// The character.
        ch: char,
        /// Its position, counted in characters.
        position: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab_size}")]
    UnknownTokenId {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A file could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A checkpoint file does not match its manifest, or cannot be parsed.
    #[error("checkpoint file {file} is corrupt: {reason}")]
    CorruptFile {
        /// The file's name inside the checkpoint.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor is missing, unexpected, or has the wrong shape or dtype.
    #[error("tensor {name}: {reason}")]
    TensorMismatch {
        /// The tensor's name.
        name: String,
        /// What does not match.
        reason: String,
    },
    /// JSON (de)serialisation failed.
    #[error("serialisation: {0}")]
    Serde(String),
    /// A CPU feature needed by a requested kernel path is not present.
    #[error("kernel path {0} is not supported on this CPU")]
    UnsupportedKernel(&'static str),
    /// A GPU entry point was called in a build without the `cuda` feature.
    #[error("flotilla-kernels was built without the `cuda` feature")]
    CudaNotCompiled,
    /// The CUDA driver, NVRTC or a kernel launch failed (or no GPU is present).
    #[error("cuda: {0}")]
    Cuda(String),
    /// An empty batch, or a sequence with no tokens.
    #[error("empty batch: {0}")]
    EmptyBatch(String),
    /// A token id at or beyond a model's vocabulary.
    #[error("token id {token} at position {position} of sequence {sequence} is out of range (vocabulary {vocab})")]
    TokenOutOfRange {
        /// The offending id.
        token: u32,
        /// Sequence index within the batch.
        sequence: usize,
        /// Position within the sequence.
        position: usize,
        /// Vocabulary size.
        vocab: usize,
    },
    /// A sequence longer than the model's context.
    #[error("sequence {sequence} has {len} tokens, more than the model's context of {context}")]
    SequenceTooLong {
        /// Sequence index within the batch.
        sequence: usize,
        /// Its length.
        len: usize,
        /// The model's maximum.
        context: usize,
    },
    /// A model configuration that cannot be built.
    #[error("invalid model config: {0}")]
    ModelConfig(String),
    /// A model folder whose `architectures`/`model_type` (or activation) is not supported.
    #[error("unsupported model {got}; supported: {supported}")]
    UnsupportedModel {
        /// What the folder declares.
        got: String,
        /// What this crate can load.
        supported: String,
    },
    /// A weight that the config requires is missing from the weights file.
    #[error("tensor {name} is missing from {path}")]
    MissingTensor {
        /// Tensor name.
        name: String,
        /// Weights file.
        path: PathBuf,
    },
    /// A file's contents could not be parsed.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::LengthMismatch`].
    pub(crate) fn len(what: &'static str, expected: usize, got: usize) -> Self {
        Error::LengthMismatch {
            what,
            expected,
            got,
        }
    }

    /// Shorthand for an [`Error::Io`] on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The shared numerics report the same three kinds of bad input as this crate.
impl From<flotilla_numerics::Error> for Error {
    fn from(e: flotilla_numerics::Error) -> Self {
        match e {
            flotilla_numerics::Error::LengthMismatch {
                what,
                expected,
                got,
            } => Error::LengthMismatch {
                what,
                expected,
                got,
            },
            flotilla_numerics::Error::InvalidArgument(m) => Error::InvalidArgument(m),
            flotilla_numerics::Error::Empty(what) => Error::Empty(what),
        }
    }
}

/// `a · b`, or an [`Error::InvalidArgument`] naming `what` when it overflows.
pub(crate) fn checked_size(what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| Error::InvalidArgument(format!("{what}: {a} × {b} overflows")))
}

/// Checks that `got == expected`, naming `what` otherwise.
pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::len(what, expected, got))
    }
}
