//! Errors of the serving cores and shells, and the OpenAI error each becomes.

use std::time::Duration;

use flotilla_protocol::openai::ApiError;
use flotilla_protocol::services::serving::{ErrorKind, ServingError};

/// Why a request was not answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServeError {
    /// A queue or every replica is full; the client should retry after `retry_after`.
    #[error("overloaded; retry after {retry_after:?}")]
    Overloaded { retry_after: Duration },
    /// The request's deadline passed.
    #[error("no answer within {deadline:?}")]
    DeadlineExceeded { deadline: Duration },
    /// The request can never run here (e.g. it needs more KV slots than the whole budget).
    #[error("request too large: needs {need} tokens, the budget is {budget}")]
    TooLarge { need: u32, budget: u32 },
    /// The model failed on the request's batch.
    #[error("model failed: {0}")]
    Model(String),
    /// The serving task stopped.
    #[error("{0} is not running")]
    Stopped(&'static str),
    /// No replica serves the deployment's model version.
    #[error("no replica serves {deployment} at {model_hash}")]
    NoReplica {
        deployment: String,
        model_hash: String,
    },
    /// A replica answered with an error.
    #[error("replica {replica}: {error}")]
    Replica {
        replica: String,
        error: ServingError,
    },
}

impl ServeError {
    /// The OpenAI error to answer the client with.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            ServeError::Overloaded { retry_after } => {
                ApiError::rate_limited(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            ServeError::DeadlineExceeded { deadline } => {
                ApiError::deadline_exceeded(deadline.as_millis() as u64)
            }
            ServeError::TooLarge { .. } => {
                ApiError::invalid_request(self.to_string(), Some("max_tokens"))
            }
            ServeError::Model(m) => ApiError::server_error(m.clone()),
            ServeError::Stopped(_) => ApiError::unavailable(self.to_string(), Some(1)),
            ServeError::NoReplica { .. } => ApiError::unavailable(self.to_string(), Some(1)),
            ServeError::Replica { error, .. } => error.to_api_error(),
        }
    }

    /// The error a replica sends over the wire for this failure.
    pub fn to_serving_error(&self) -> ServingError {
        let kind = match self {
            ServeError::Overloaded { retry_after } => ErrorKind::Overloaded {
                retry_after_ms: retry_after.as_millis().min(u128::from(u32::MAX)) as u32,
            },
            ServeError::DeadlineExceeded { .. } => ErrorKind::DeadlineExceeded,
            ServeError::TooLarge { .. } => {
                return ServingError::new(ErrorKind::BadRequest, self.to_api_error().to_json())
            }
            ServeError::Model(_) => ErrorKind::Internal,
            ServeError::Stopped(_) | ServeError::NoReplica { .. } => ErrorKind::Unavailable,
            ServeError::Replica { error, .. } => return error.clone(),
        };
        ServingError::new(kind, self.to_string())
    }
}
