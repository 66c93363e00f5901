//! Protocol names, per-service size caps and messages.
//!
//! Each request-response service is named `/flotilla/<service>/<major>`; gossip topics are named
//! `flotilla/<topic>/<major>`. Every service has its own cap, checked by [`crate::codec`].

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::Result;
use crate::ids::{NodeId, RequestId};
use crate::node_info::NodeInfo;

/// The size check and the encode/decode functions of a request-response service whose module
/// defines `Request`, `Response`, `SERVICE` and `MAX_FRAME_BYTES`: every service frames the
/// same way, with its own cap.
macro_rules! request_response_codec {
    () => {
        /// Checks a request fits the service's cap, without encoding it.
        pub fn check_request_size(r: &Request) -> $crate::error::Result<()> {
            let len = $crate::codec::encoded_len(SERVICE, r)?;
            $crate::codec::check_frame_len(SERVICE, len as u64, MAX_FRAME_BYTES).map(|_| ())
        }
        /// Encodes a request body (no length prefix).
        pub fn encode_request(r: &Request) -> $crate::error::Result<Vec<u8>> {
            $crate::codec::encode::<_, MAX_FRAME_BYTES>(SERVICE, r)
        }
        /// Decodes a request body.
        pub fn decode_request(b: &[u8]) -> $crate::error::Result<Request> {
            $crate::codec::decode::<_, MAX_FRAME_BYTES>(SERVICE, b)
        }
        /// Encodes a response body.
        pub fn encode_response(r: &Response) -> $crate::error::Result<Vec<u8>> {
            $crate::codec::encode::<_, MAX_FRAME_BYTES>(SERVICE, r)
        }
        /// Decodes a response body.
        pub fn decode_response(b: &[u8]) -> $crate::error::Result<Response> {
            $crate::codec::decode::<_, MAX_FRAME_BYTES>(SERVICE, b)
        }
    };
}

/// The membership gossip topic.
pub mod membership {
    use super::*;

    /// Gossipsub topic for heartbeats and leave notices.
    pub const TOPIC: &str = "flotilla/membership/1";
    /// Name used in errors and metrics.
    pub const SERVICE: &str = "membership";
    /// Largest membership message: a heartbeat is well under 4 KiB even with many addresses.
    pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

    /// A message on the membership topic.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Message {
        /// A node's periodic heartbeat.
        Heartbeat(NodeInfo),
        /// A node is shutting down gracefully: peers mark it `left`, not `dead`.
        Leaving { id: NodeId, incarnation: u64 },
    }

    impl Message {
        /// The node this message speaks for; gossip validation checks it equals the signer.
        pub fn sender(&self) -> &NodeId {
            match self {
                Message::Heartbeat(info) => &info.id,
                Message::Leaving { id, .. } => id,
            }
        }
    }

    /// Encodes a message for gossip.
    pub fn encode(msg: &Message) -> Result<Vec<u8>> {
        codec::encode::<_, MAX_MESSAGE_BYTES>(SERVICE, msg)
    }

    /// Decodes a gossip payload.
    pub fn decode(bytes: &[u8]) -> Result<Message> {
        codec::decode::<_, MAX_MESSAGE_BYTES>(SERVICE, bytes)
    }
}

/// The control service: node-to-node requests of the daemon itself.
pub mod control {
    use super::*;

    /// Stream protocol name.
    pub const PROTOCOL: &str = "/flotilla/control/1";
    /// Name used in errors and metrics.
    pub const SERVICE: &str = "control";
    /// Largest request or response: room for a 4 MiB echo payload and its framing.
    pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

    /// A control request.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Request {
        pub id: RequestId,
        pub body: RequestBody,
    }

    /// What a control request asks.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum RequestBody {
        /// Liveness check; answered with [`ResponseBody::Pong`].
        Ping,
        /// Returns the payload unchanged (used to measure the RPC path).
        Echo(#[serde(with = "serde_bytes")] Vec<u8>),
        /// Asks for the peer's current heartbeat.
        GetNodeInfo,
        /// The sender is leaving gracefully; sent directly so peers learn it even if gossip
        /// does not flush before the sender closes its connections.
        Leaving { id: NodeId, incarnation: u64 },
    }

    /// A control response; `id` echoes the request's.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Response {
        pub id: RequestId,
        pub body: std::result::Result<ResponseBody, RemoteError>,
    }

    /// The answer to a [`RequestBody`].
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum ResponseBody {
        Pong,
        Echo(#[serde(with = "serde_bytes")] Vec<u8>),
        NodeInfo(Box<NodeInfo>),
        LeaveAck,
    }

    /// An error the remote side reports.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
    #[error("{kind:?}: {message}")]
    pub struct RemoteError {
        pub kind: RemoteErrorKind,
        pub message: String,
    }

    /// Classes of remote errors.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum RemoteErrorKind {
        BadRequest,
        NotFound,
        Unavailable,
        Internal,
        /// The sender may not ask this (it does not own the work it names, say).
        Forbidden,
    }

    request_response_codec!();
}

/// The jobs service (tasks between a job's owner and executing nodes).
pub mod jobs;

/// The actors service (typed messages to named actors on peers, remote spawn, monitoring).
pub mod actors;

/// The data service (dataset shards and the remote steps of dataset operations).
pub mod data;

/// The training service (workers, parameter-server shards and a job's coordinator).
pub mod training;

/// The serving service (a router asks replicas to answer OpenAI-compatible requests).
pub mod serving;

/// The catalog: delta gossip and anti-entropy between replicas of the catalog CRDT.
///
/// Writes spread as [`Delta`](catalog::Delta)s on the gossip topic. Anti-entropy repairs what gossip lost: the
/// initiator sends its [`Digest`](catalog::Digest) (a hash per bucket of keys); the responder answers with the
/// buckets that differ and all its entries in them ([`SyncReply`](catalog::SyncReply)); the initiator merges them
/// and pushes back ([`RequestBody::Push`](catalog::RequestBody::Push)) exactly the entries the responder lacks or holds
/// older. One exchange each way makes both replicas equal in the buckets covered.
pub mod catalog {
    use super::*;
    use crate::catalog::{CatalogKey, Entry};

    /// Gossip topic for deltas.
    pub const TOPIC: &str = "flotilla/catalog/1";
    /// Stream protocol name for anti-entropy.
    pub const PROTOCOL: &str = "/flotilla/catalog/1";
    /// Name used in errors and metrics.
    pub const SERVICE: &str = "catalog";
    /// Largest catalog message, gossip or request-response. A reply that would be larger covers
    /// fewer buckets; the rest are repaired by the next round.
    pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
    /// Largest single entry, as stored and as sent.
    pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;
    /// Buckets in a digest: 256 × 36 bytes ≈ 9 KiB per digest.
    pub const DIGEST_BUCKETS: usize = 256;

    /// Entries to merge, each under its key, in key order.
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    pub struct Delta {
        pub entries: Vec<(CatalogKey, Entry)>,
    }

    /// Summary of one bucket of keys.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
    pub struct BucketSummary {
        /// XOR of the blake3 hashes of the bucket's `(key, entry)` encodings: order-free, so it
        /// can be kept up to date entry by entry.
        pub hash: [u8; 32],
        /// Entries in the bucket.
        pub count: u32,
    }

    /// A replica's catalog in [`DIGEST_BUCKETS`] summaries, indexed by bucket.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Digest {
        pub buckets: Vec<BucketSummary>,
    }

    /// The responder's answer to a digest.
    #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
    pub struct SyncReply {
        /// Differing buckets whose entries are all in `delta`, ascending.
        pub buckets: Vec<u16>,
        /// The responder's entries in those buckets (and possibly some of one more bucket that
        /// did not fit whole).
        pub delta: Delta,
    }

    /// A message on the catalog gossip topic.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Message {
        /// Entries that changed at the sender.
        Delta(Delta),
    }

    /// An anti-entropy request.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Request {
        pub id: RequestId,
        pub body: RequestBody,
    }

    /// What an anti-entropy request asks.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum RequestBody {
        /// "Here is my digest": answered with [`ResponseBody::Sync`].
        Sync(Digest),
        /// "Here are the entries you lack or hold older": answered with [`ResponseBody::Merged`].
        Push(Delta),
    }

    /// An anti-entropy response; `id` echoes the request's.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Response {
        pub id: RequestId,
        pub body: std::result::Result<ResponseBody, control::RemoteError>,
    }

    /// The answer to a [`RequestBody`].
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum ResponseBody {
        Sync(SyncReply),
        /// How many pushed entries changed the responder's state, and how many it refused.
        Merged {
            applied: u32,
            rejected: u32,
        },
    }

    /// Encodes a gossip message.
    pub fn encode_message(m: &Message) -> Result<Vec<u8>> {
        codec::encode::<_, MAX_MESSAGE_BYTES>(SERVICE, m)
    }
    /// Decodes a gossip message.
    pub fn decode_message(b: &[u8]) -> Result<Message> {
        codec::decode::<_, MAX_MESSAGE_BYTES>(SERVICE, b)
    }
    /// Encodes a request body.
    pub fn encode_request(r: &Request) -> Result<Vec<u8>> {
        codec::encode::<_, MAX_MESSAGE_BYTES>(SERVICE, r)
    }
    /// Decodes a request body.
    pub fn decode_request(b: &[u8]) -> Result<Request> {
        codec::decode::<_, MAX_MESSAGE_BYTES>(SERVICE, b)
    }
    /// Encodes a response body.
    pub fn encode_response(r: &Response) -> Result<Vec<u8>> {
        codec::encode::<_, MAX_MESSAGE_BYTES>(SERVICE, r)
    }
    /// Decodes a response body.
    pub fn decode_response(b: &[u8]) -> Result<Response> {
        codec::decode::<_, MAX_MESSAGE_BYTES>(SERVICE, b)
    }
    /// Encodes one entry for the store's catalog column.
    pub fn encode_entry(e: &Entry) -> Result<Vec<u8>> {
        codec::encode::<_, MAX_ENTRY_BYTES>(SERVICE, e)
    }
    /// Decodes one stored entry.
    pub fn decode_entry(b: &[u8]) -> Result<Entry> {
        codec::decode::<_, MAX_ENTRY_BYTES>(SERVICE, b)
    }
    /// Encodes a batch of entries (a delta) within the message cap.
    pub fn encode_entries(d: &Delta) -> Result<Vec<u8>> {
        codec::encode::<_, MAX_MESSAGE_BYTES>(SERVICE, d)
    }
    /// Decodes a batch of entries.
    pub fn decode_entries(b: &[u8]) -> Result<Delta> {
        codec::decode::<_, MAX_MESSAGE_BYTES>(SERVICE, b)
    }
    /// The encoded size of a value of this service, computed without allocating it.
    pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize> {
        codec::encoded_len(SERVICE, value)
    }

    /// The digest bucket of `key`: the first two bytes of the blake3 of its store key, modulo
    /// [`DIGEST_BUCKETS`]. Part of the protocol: every node must bucket alike.
    pub fn bucket_of(key: &CatalogKey) -> u16 {
        let h = blake3::hash(&key.store_key());
        let b = h.as_bytes();
        // DIGEST_BUCKETS divides 65536, so every bucket is equally likely.
        (u16::from_be_bytes([b[0], b[1]]) as usize % DIGEST_BUCKETS) as u16
    }

    /// The hash of one `(key, entry)` pair that digests XOR together: blake3 of the store key
    /// followed by the entry's bincode encoding, streamed into the hasher without a buffer.
    pub fn entry_hash(key: &CatalogKey, entry: &Entry) -> [u8; 32] {
        struct HashWriter(blake3::Hasher);
        impl bincode::enc::write::Writer for HashWriter {
            fn write(
                &mut self,
                bytes: &[u8],
            ) -> std::result::Result<(), bincode::error::EncodeError> {
                self.0.update(bytes);
                Ok(())
            }
        }
        let store_key = key.store_key();
        let mut w = HashWriter(blake3::Hasher::new());
        w.0.update(&(store_key.len() as u64).to_be_bytes());
        w.0.update(&store_key);
        // Catalog types are plain structs, enums, strings, maps and sequences of known length,
        // which bincode always encodes; were that ever to fail, the hash covers what was written
        // up to the failure, which every node computes alike, so digests stay comparable.
        let _ = bincode::serde::encode_into_writer(entry, &mut w, bincode::config::standard());
        *w.0.finalize().as_bytes()
    }
}
