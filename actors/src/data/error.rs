//! Errors of the data cores. Every variant names the record, line, field or parameter involved.

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

    pub(crate) fn regex(op: &'static str, pattern: &str, e: regex::Error) -> Self {
        Error::Regex {
            op,
            pattern: pattern.to_string(),
            reason: e.to_string(),
        }
    }
}
