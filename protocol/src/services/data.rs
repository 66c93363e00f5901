//! The data service: dataset shards between nodes.
//!
//! A shard is stored as its *body*: the canonical encoding of its records (a record count, then
//! each record's id and length-prefixed fields, see `flotilla_actors::data::shard`), named by its
//! [`ShardId`]. The body's blake3 is the shard hash the catalog records, so every holder can
//! check what it receives and what it reads back. Bodies travel in chunks of at most
//! [`MAX_CHUNK_BYTES`], so a shard of any size fits the frame cap.
//!
//! Besides storage (put, get, read a record range, list, delete a version, copy from a peer for
//! re-replication) the service carries the two remote steps of a dataset operation: phase 1
//! ([`RequestBody::Summarize`]: a holder sends what the global decision needs about one shard,
//! such as content hashes or MinHash sketches) and phase 3 ([`RequestBody::Apply`]: a holder
//! applies the decisions and writes the output shard). Operations travel as JSON text because
//! their parameter types live with the data cores in `flotilla-actors`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::Result;
use crate::ids::{NodeId, RequestId};
use crate::services::control::RemoteError;

/// Stream protocol name.
pub const PROTOCOL: &str = "/flotilla/data/1";
/// Name used in errors and metrics.
pub const SERVICE: &str = "data";
/// Largest request or response: a chunk with its metadata, or a phase-1 summary of a shard of
/// sketches (about 1 KiB a record at 128 hashes), with room to spare.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Largest chunk of a shard body in one message.
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Most records one range read returns.
pub const MAX_RANGE_RECORDS: u32 = 10_000;

/// Names one shard: `<dataset>@<version>#<index>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId {
    pub dataset: String,
    pub version: u64,
    /// Position in the version, from 0; export reassembles shards in this order.
    pub index: u32,
}

impl ShardId {
    /// Shard `index` of `dataset@version`.
    pub fn new(dataset: &str, version: u64, index: u32) -> Self {
        Self {
            dataset: dataset.to_string(),
            version,
            index,
        }
    }

    /// The rendezvous key of the shard, `<dataset>/<version>/<index>`: part of the protocol,
    /// since every node must place a shard alike.
    pub fn placement_key(&self) -> Vec<u8> {
        format!("{}/{}/{}", self.dataset, self.version, self.index).into_bytes()
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}#{}", self.dataset, self.version, self.index)
    }
}

/// What a holder knows about a shard without reading it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardMeta {
    pub id: ShardId,
    /// blake3 of the body, 64 lowercase hex characters.
    pub hash: String,
    pub records: u64,
    /// Length of the body.
    pub bytes: u64,
}

impl ShardMeta {
    /// Chunks the body travels in at `chunk_bytes` a chunk (an empty body is one empty chunk).
    pub fn chunks(&self, chunk_bytes: usize) -> u32 {
        let c = chunk_bytes.max(1) as u64;
        self.bytes.div_ceil(c).max(1) as u32
    }
}

/// A record on the wire: its stable id and its fields.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DataRecord {
    pub id: u64,
    pub fields: BTreeMap<String, String>,
}

/// A record's MinHash sketch for near dedup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sketch {
    pub id: u64,
    pub signature: Vec<u64>,
    /// Sorted, distinct shingle hashes (the decision verifies candidates exactly).
    pub shingles: Vec<u64>,
}

/// Phase 1: what one shard contributes to the global decision of one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Summary {
    /// Exact dedup: `(content hash, record id)` of every record.
    Exact(Vec<([u8; 32], u64)>),
    /// Near dedup: a sketch of every record.
    Near(Vec<Sketch>),
    /// Split: `(record id, stratum label)` of every record (empty label when unstratified).
    Split(Vec<(u64, String)>),
    /// Augmentation: how many records the shard holds and its largest id, so new ids can be
    /// handed out without collisions.
    Augment { records: u64, max_id: Option<u64> },
}

/// Phase 2's answer for one shard and one operation, applied in phase 3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Dedup: the ids of this shard's records to drop.
    Drop(Vec<u64>),
    /// Split: the part of each record by id (0 train, 1 validation, 2 test).
    Parts(Vec<(u64, u8)>),
    /// Augmentation: the first id of this shard's new records.
    IdBase(u64),
}

/// A data request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub body: RequestBody,
}

/// What a data request asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Store chunk `chunk` of `chunks` of a shard body. The holder stores the shard once all
    /// chunks are in and the body's hash equals `meta.hash`; answered with
    /// [`ResponseBody::Stored`].
    PutChunk {
        meta: ShardMeta,
        chunk: u32,
        chunks: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Chunk `chunk` of a held shard's body, at most `max_bytes` long (capped at
    /// [`MAX_CHUNK_BYTES`]); answered with [`ResponseBody::Chunk`].
    GetChunk {
        shard: ShardId,
        chunk: u32,
        max_bytes: u32,
    },
    /// Records `offset..offset + limit` of a held shard in stored (upload) order; answered with
    /// [`ResponseBody::Records`].
    ReadRange {
        shard: ShardId,
        offset: u64,
        limit: u32,
    },
    /// The shards held here, of one dataset or all; answered with [`ResponseBody::Shards`].
    List { dataset: Option<String> },
    /// Delete one held shard; answered with [`ResponseBody::Deleted`] (0 if it was not held).
    DeleteShard { shard: ShardId },
    /// Delete every held shard of `dataset@version`; answered with [`ResponseBody::Deleted`].
    DeleteVersion { dataset: String, version: u64 },
    /// Fetch `shard` from `source` and store it here (re-replication); answered with
    /// [`ResponseBody::Copied`].
    CopyFrom { shard: ShardId, source: NodeId },
    /// Phase 1 of an operation: apply `ops_json`'s operations to the held shard `input` up to
    /// its next global one (using `decisions` for the global ones before it) and summarise the
    /// result for it; answered with [`ResponseBody::Summary`].
    Summarize {
        job: String,
        input: ShardId,
        ops_json: String,
        decisions: Vec<Decision>,
    },
    /// Phase 3: apply all operations with `decisions` (one per global operation) to the held
    /// shard `input` and store the result here as `output`; answered with
    /// [`ResponseBody::Applied`].
    Apply {
        job: String,
        input: ShardId,
        ops_json: String,
        decisions: Vec<Decision>,
        output: ShardId,
    },
}

/// A data response; `id` echoes the request's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub id: RequestId,
    pub body: std::result::Result<ResponseBody, RemoteError>,
}

/// The answer to a [`RequestBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// A chunk was accepted; `complete` once the shard is stored and verified.
    Stored {
        complete: bool,
    },
    Chunk {
        meta: ShardMeta,
        chunk: u32,
        chunks: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Records of a range and the shard's record count.
    Records {
        records: Vec<DataRecord>,
        total: u64,
    },
    Shards(Vec<ShardMeta>),
    Deleted {
        shards: u32,
    },
    Copied(ShardMeta),
    Summary(Summary),
    /// The stored output shard, the per-operation `(count_in, count_out)` on this shard and
    /// the per-operation details as JSON.
    Applied {
        meta: ShardMeta,
        counts: Vec<(u64, u64)>,
        details_json: String,
    },
}

request_response_codec!();

/// Encodes a whole frame (length prefix and body) of a request.
pub fn encode_request_frame(r: &Request) -> Result<Vec<u8>> {
    codec::encode_frame::<_, MAX_FRAME_BYTES>(SERVICE, r)
}
/// Decodes a whole request frame, checking the prefix against the cap before anything else.
pub fn decode_request_frame(f: &[u8]) -> Result<Request> {
    codec::decode_frame::<_, MAX_FRAME_BYTES>(SERVICE, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::services::control::RemoteErrorKind;

    fn meta() -> ShardMeta {
        ShardMeta {
            id: ShardId::new("bank", 2, 7),
            hash: "ab".repeat(32),
            records: 3,
            bytes: 120,
        }
    }

    fn round_trip_request(body: RequestBody) {
        let req = Request {
            id: RequestId(9),
            body,
        };
        assert_eq!(decode_request(&encode_request(&req).unwrap()).unwrap(), req);
        assert_eq!(
            decode_request_frame(&encode_request_frame(&req).unwrap()).unwrap(),
            req
        );
    }

    fn round_trip_response(body: std::result::Result<ResponseBody, RemoteError>) {
        let resp = Response {
            id: RequestId(9),
            body,
        };
        assert_eq!(
            decode_response(&encode_response(&resp).unwrap()).unwrap(),
            resp
        );
    }

    #[test]
    fn every_request_round_trips() {
        let id = ShardId::new("bank", 1, 0);
        for body in [
            RequestBody::PutChunk {
                meta: meta(),
                chunk: 1,
                chunks: 2,
                bytes: vec![1, 2, 3],
            },
            RequestBody::GetChunk {
                shard: id.clone(),
                chunk: 0,
                max_bytes: 1 << 20,
            },
            RequestBody::ReadRange {
                shard: id.clone(),
                offset: 10,
                limit: 5,
            },
            RequestBody::List { dataset: None },
            RequestBody::List {
                dataset: Some("bank".into()),
            },
            RequestBody::DeleteShard { shard: id.clone() },
            RequestBody::DeleteVersion {
                dataset: "bank".into(),
                version: 3,
            },
            RequestBody::CopyFrom {
                shard: id.clone(),
                source: NodeId::from("n1"),
            },
            RequestBody::Summarize {
                job: "j".into(),
                input: id.clone(),
                ops_json: r#"[{"op":"dedup-exact"}]"#.into(),
                decisions: vec![Decision::Drop(vec![4, 5])],
            },
            RequestBody::Apply {
                job: "j".into(),
                input: id,
                ops_json: "[]".into(),
                decisions: vec![Decision::Parts(vec![(1, 0), (2, 2)]), Decision::IdBase(77)],
                output: ShardId::new("bank", 2, 0),
            },
        ] {
            round_trip_request(body);
        }
    }

    #[test]
    fn every_response_round_trips() {
        let mut fields = BTreeMap::new();
        fields.insert("text".to_string(), "héllo".to_string());
        for body in [
            Ok(ResponseBody::Stored { complete: true }),
            Ok(ResponseBody::Chunk {
                meta: meta(),
                chunk: 0,
                chunks: 1,
                bytes: vec![9; 40],
            }),
            Ok(ResponseBody::Records {
                records: vec![DataRecord { id: 4, fields }],
                total: 10,
            }),
            Ok(ResponseBody::Shards(vec![meta()])),
            Ok(ResponseBody::Deleted { shards: 4 }),
            Ok(ResponseBody::Copied(meta())),
            Ok(ResponseBody::Summary(Summary::Exact(vec![([7; 32], 3)]))),
            Ok(ResponseBody::Summary(Summary::Near(vec![Sketch {
                id: 1,
                signature: vec![u64::MAX, 3],
                shingles: vec![1, 2],
            }]))),
            Ok(ResponseBody::Summary(Summary::Split(vec![(1, "a".into())]))),
            Ok(ResponseBody::Summary(Summary::Augment {
                records: 3,
                max_id: Some(9),
            })),
            Ok(ResponseBody::Applied {
                meta: meta(),
                counts: vec![(3, 2)],
                details_json: "[]".into(),
            }),
            Err(RemoteError {
                kind: RemoteErrorKind::NotFound,
                message: "shard bank@1#0 not held".into(),
            }),
        ] {
            round_trip_response(body);
        }
    }

    #[test]
    fn oversized_frames_are_refused() {
        // Encoding: a chunk larger than the frame cap is not encoded at all.
        let big = Request {
            id: RequestId(1),
            body: RequestBody::PutChunk {
                meta: meta(),
                chunk: 0,
                chunks: 1,
                bytes: vec![0; MAX_FRAME_BYTES + 1],
            },
        };
        assert!(matches!(
            check_request_size(&big),
            Err(Error::FrameTooLarge { .. })
        ));
        assert!(encode_request(&big).is_err());
        // Decoding: a prefix announcing more than the cap is refused before reading the body.
        let mut frame = ((MAX_FRAME_BYTES as u64) + 1).to_be_bytes().to_vec();
        frame.extend_from_slice(&[0; 64]);
        assert!(matches!(
            decode_request_frame(&frame),
            Err(Error::FrameTooLarge {
                service: "data",
                ..
            })
        ));
        // A body over the cap handed straight to the decoder is refused too.
        assert!(matches!(
            decode_request(&vec![0; MAX_FRAME_BYTES + 1]),
            Err(Error::FrameTooLarge { .. })
        ));
        // A full-size chunk with its metadata fits.
        let ok = Request {
            id: RequestId(1),
            body: RequestBody::PutChunk {
                meta: meta(),
                chunk: 0,
                chunks: 1,
                bytes: vec![0; MAX_CHUNK_BYTES],
            },
        };
        check_request_size(&ok).unwrap();
    }

    #[test]
    fn chunk_counts_and_keys() {
        let mut m = meta();
        m.bytes = 0;
        assert_eq!(m.chunks(10), 1);
        m.bytes = 10;
        assert_eq!(m.chunks(10), 1);
        m.bytes = 11;
        assert_eq!(m.chunks(10), 2);
        assert_eq!(ShardId::new("a", 1, 2).placement_key(), b"a/1/2".to_vec());
        assert_eq!(ShardId::new("a", 1, 2).to_string(), "a@1#2");
    }
}
