//! The serving service: a node's router asks a replica (on this node or another) to answer
//! OpenAI-compatible requests.
//!
//! Request bodies travel as the client's JSON. The OpenAI types accept several spellings of a
//! field (untagged enums, optional fields), which bincode cannot carry, and passing the JSON
//! the router validated means a local and a remote replica see exactly the same request.
//!
//! **Streaming is pulled, not pushed.** Request-response gives one answer per request, and a
//! push would need the replica to open requests back towards the router and find the waiting
//! HTTP handler there. Instead, [`StartStream`] starts generation and returns a stream id, and
//! the router long-polls with [`NextPieces`]`{ stream, from }`: the replica answers as soon as
//! it holds pieces at index `from` or later, or the stream ended, or `wait_ms` passed. Pieces
//! generated during one round trip ride in the next answer, so a stream is not slowed to one
//! piece per round trip. A poll is idempotent: a lost answer is recovered by polling again
//! with the same `from`, and a poll with a higher `from` acknowledges (and lets the replica
//! drop) everything before it. A stream not polled for the replica's lease time, or cancelled
//! with [`CancelStream`], is stopped and its batch slot freed at once.
//!
//! [`StartStream`]: crate::services::serving::RequestBody::StartStream
//! [`NextPieces`]: crate::services::serving::RequestBody::NextPieces
//! [`CancelStream`]: crate::services::serving::RequestBody::CancelStream

use serde::{Deserialize, Serialize};

use crate::ids::RequestId;
use crate::openai::{ApiError, FinishReason};

/// Stream protocol name.
pub const PROTOCOL: &str = "/flotilla/serving/1";
/// Name used in errors and metrics.
pub const SERVICE: &str = "serving";
/// Largest request or response: room for a batch of embeddings as JSON (e.g. 256 inputs of
/// 1024 floats). Larger answers are refused at the replica, not truncated.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Largest client request body a router forwards; bigger HTTP bodies are answered 413.
pub const MAX_REQUEST_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Largest piece of a model artifact in one [`RequestBody::FetchBlob`] answer.
pub const MAX_ARTIFACT_CHUNK: u32 = 8 * 1024 * 1024;
/// Most blobs one [`RequestBody::HeldBlobs`] asks about (a model version's artifacts).
pub const MAX_BLOBS_PER_QUERY: usize = 256;
/// Longest a replica holds a [`RequestBody::NextPieces`] poll open.
pub const MAX_POLL_WAIT_MS: u32 = 10_000;

/// Which OpenAI-compatible endpoint a body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Classify,
}

/// Identifies a stream on the replica that started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamId(pub u64);

/// A serving request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub body: RequestBody,
}

/// What a serving request asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Answer one non-streaming request: answered with [`ResponseBody::Completed`].
    Infer {
        deployment: String,
        /// The model version the router chose; a replica serving another version refuses
        /// ([`ErrorKind::WrongModelVersion`]) rather than answer for it.
        model_hash: String,
        endpoint: Endpoint,
        /// Time left of the client's deadline; the replica drops the work when it passes.
        deadline_ms: u32,
        /// The client's JSON body.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// Start a streamed generation: answered with [`ResponseBody::StreamStarted`].
    StartStream {
        deployment: String,
        model_hash: String,
        endpoint: Endpoint,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// The pieces of `stream` from index `from` on, waiting up to `wait_ms` (at most
    /// [`MAX_POLL_WAIT_MS`]) for one: answered with [`ResponseBody::Pieces`].
    NextPieces {
        stream: StreamId,
        from: u32,
        wait_ms: u32,
    },
    /// The client went away: stop the stream and free its slot. Answered with
    /// [`ResponseBody::Cancelled`].
    CancelStream { stream: StreamId },
    /// The replica's load, for the router's choice: answered with [`ResponseBody::Load`].
    Load,
    /// Bytes `offset .. offset + len` (at most [`MAX_ARTIFACT_CHUNK`]) of the content-addressed
    /// blob whose blake3 is `blob`: answered with [`ResponseBody::Artifact`]. A node answers
    /// only for a blob that a live model version in its catalog lists, from its artifact
    /// store, after checking the stored bytes still hash to `blob`; there is no way to name a
    /// file. The fetcher checks the whole blob's blake3 again before using it.
    FetchBlob { blob: String, offset: u64, len: u32 },
    /// Which of `blobs` (at most [`MAX_BLOBS_PER_QUERY`]) this node holds and may serve:
    /// answered with [`ResponseBody::HeldBlobs`].
    HeldBlobs { blobs: Vec<String> },
}

/// A serving response; `id` echoes the request's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub id: RequestId,
    pub body: std::result::Result<ResponseBody, ServingError>,
}

/// The answer to a [`RequestBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// The JSON response body for the client.
    Completed {
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    StreamStarted {
        stream: StreamId,
        prompt_tokens: u32,
    },
    /// Text pieces `from ..` of the stream; `end` is set once the stream is over and every
    /// piece has been sent.
    Pieces {
        from: u32,
        pieces: Vec<String>,
        end: Option<StreamEnd>,
    },
    /// Whether the stream was still generating.
    Cancelled {
        was_running: bool,
    },
    Load(ReplicaLoad),
    /// A piece of an artifact and the file's whole length.
    Artifact {
        total: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// The blobs of a [`RequestBody::HeldBlobs`] query this node holds.
    HeldBlobs(Vec<String>),
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEnd {
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// A replica's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplicaLoad {
    /// Requests accepted and not yet answered.
    pub outstanding: u32,
    /// Requests waiting for a batch slot.
    pub queued: u32,
    /// Relative throughput (e.g. its batch size times its compute score).
    pub capacity: u32,
}

/// Why a replica did not answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ServingError {
    pub kind: ErrorKind,
    pub message: String,
}

/// Classes of serving errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The body is invalid; `message` is the OpenAI error body's JSON.
    BadRequest,
    /// This replica does not serve the deployment.
    NotFound,
    /// This replica serves another model version.
    WrongModelVersion,
    /// The replica's queue is full.
    Overloaded { retry_after_ms: u32 },
    /// The deadline passed before the answer.
    DeadlineExceeded,
    /// No such stream (finished and collected, cancelled, or never started here).
    UnknownStream,
    /// The replica is starting or stopping.
    Unavailable,
    /// The model failed.
    Internal,
}

impl ServingError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Whether another replica may succeed where this one failed.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self.kind,
            ErrorKind::BadRequest | ErrorKind::DeadlineExceeded
        )
    }

    /// The OpenAI error to answer the client with.
    pub fn to_api_error(&self) -> ApiError {
        match self.kind {
            ErrorKind::BadRequest => serde_json::from_str(&self.message)
                .map(|body| ApiError {
                    status: 400,
                    body,
                    retry_after_s: None,
                })
                .unwrap_or_else(|_| ApiError::invalid_request(self.message.clone(), None)),
            ErrorKind::Overloaded { retry_after_ms } => {
                ApiError::rate_limited(u64::from(retry_after_ms).div_ceil(1000).max(1))
            }
            ErrorKind::DeadlineExceeded => ApiError::deadline_exceeded(0),
            ErrorKind::NotFound
            | ErrorKind::WrongModelVersion
            | ErrorKind::UnknownStream
            | ErrorKind::Unavailable => ApiError::unavailable(self.message.clone(), Some(1)),
            ErrorKind::Internal => ApiError::server_error(self.message.clone()),
        }
    }
}

request_response_codec!();

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn requests() -> Vec<Request> {
        let bodies = vec![
            RequestBody::Infer {
                deployment: "chat".into(),
                model_hash: "ab".repeat(32),
                endpoint: Endpoint::ChatCompletions,
                deadline_ms: 30_000,
                body: br#"{"model":"chat","messages":[]}"#.to_vec(),
            },
            RequestBody::StartStream {
                deployment: "chat".into(),
                model_hash: "cd".into(),
                endpoint: Endpoint::Completions,
                body: b"{}".to_vec(),
            },
            RequestBody::NextPieces {
                stream: StreamId(9),
                from: 4,
                wait_ms: 500,
            },
            RequestBody::CancelStream {
                stream: StreamId(9),
            },
            RequestBody::Load,
            RequestBody::FetchBlob {
                blob: "ab".into(),
                offset: 8,
                len: 1024,
            },
            RequestBody::HeldBlobs {
                blobs: vec!["ab".into(), "cd".into()],
            },
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Request {
                id: RequestId(i as u64),
                body,
            })
            .collect()
    }

    fn responses() -> Vec<Response> {
        let bodies = vec![
            Ok(ResponseBody::Completed {
                body: b"{\"id\":1}".to_vec(),
            }),
            Ok(ResponseBody::StreamStarted {
                stream: StreamId(1),
                prompt_tokens: 12,
            }),
            Ok(ResponseBody::Pieces {
                from: 3,
                pieces: vec!["Hel".into(), "lo".into()],
                end: Some(StreamEnd {
                    finish_reason: FinishReason::Length,
                    prompt_tokens: 12,
                    completion_tokens: 5,
                }),
            }),
            Ok(ResponseBody::Cancelled { was_running: true }),
            Ok(ResponseBody::Load(ReplicaLoad {
                outstanding: 3,
                queued: 1,
                capacity: 8,
            })),
            Ok(ResponseBody::Artifact {
                total: 100,
                bytes: vec![1, 2, 3],
            }),
            Ok(ResponseBody::HeldBlobs(vec!["ab".into()])),
            Err(ServingError::new(
                ErrorKind::Overloaded {
                    retry_after_ms: 1500,
                },
                "queue full",
            )),
        ];
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Response {
                id: RequestId(i as u64),
                body,
            })
            .collect()
    }

    #[test]
    fn messages_round_trip() {
        for r in requests() {
            check_request_size(&r).unwrap();
            assert_eq!(decode_request(&encode_request(&r).unwrap()).unwrap(), r);
        }
        for r in responses() {
            assert_eq!(decode_response(&encode_response(&r).unwrap()).unwrap(), r);
        }
        assert!(decode_request(&[0xff; 16]).is_err());
        assert!(decode_response(&[]).is_err());
    }

    #[test]
    fn oversized_bodies_are_refused_both_ways() {
        let big = Request {
            id: RequestId(1),
            body: RequestBody::Infer {
                deployment: "d".into(),
                model_hash: "h".into(),
                endpoint: Endpoint::Embeddings,
                deadline_ms: 1,
                body: vec![b' '; MAX_FRAME_BYTES + 1],
            },
        };
        assert!(matches!(
            check_request_size(&big),
            Err(Error::FrameTooLarge { .. })
        ));
        assert!(encode_request(&big).is_err());
        let frame = (MAX_FRAME_BYTES as u64 + 1).to_be_bytes();
        assert!(crate::codec::decode_frame::<Request, MAX_FRAME_BYTES>(SERVICE, &frame).is_err());
    }

    #[test]
    fn errors_map_to_openai_statuses() {
        let bad = ApiError::invalid_request("nope", Some("n"));
        let wire = ServingError::new(ErrorKind::BadRequest, bad.to_json());
        assert_eq!(
            wire.to_api_error(),
            bad,
            "a replica's 400 reaches the client intact"
        );
        assert!(!wire.is_retryable());
        let over = ServingError::new(
            ErrorKind::Overloaded {
                retry_after_ms: 1500,
            },
            "full",
        );
        assert_eq!(over.to_api_error().status, 429);
        assert_eq!(over.to_api_error().retry_after_s, Some(2));
        assert!(over.is_retryable());
        assert_eq!(
            ServingError::new(ErrorKind::Internal, "boom")
                .to_api_error()
                .status,
            500
        );
        assert_eq!(
            ServingError::new(ErrorKind::WrongModelVersion, "v")
                .to_api_error()
                .status,
            503
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Arbitrary bytes are an error or a message, never a panic.
            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = decode_request(&bytes);
                let _ = decode_response(&bytes);
            }

            /// Every infer request round-trips, whatever its strings and body.
            #[test]
            fn infer_requests_round_trip(
                id in any::<u64>(),
                deployment in ".{0,40}",
                model_hash in "[0-9a-f]{0,64}",
                deadline_ms in any::<u32>(),
                body in proptest::collection::vec(any::<u8>(), 0..1024),
            ) {
                let r = Request {
                    id: RequestId(id),
                    body: RequestBody::Infer {
                        deployment,
                        model_hash,
                        endpoint: Endpoint::Embeddings,
                        deadline_ms,
                        body,
                    },
                };
                prop_assert_eq!(decode_request(&encode_request(&r).unwrap()).unwrap(), r);
            }
        }
    }
}
