//! Dataset shards as stored and sent: the body encoding, its hash, and the `DataShard` actor
//! that holds a node's shards.
//!
//! A shard body is the record count (u64 BE) followed by each record's canonical encoding
//! ([`Record::encode_into`]); its blake3 is exactly [`crate::data::record::shard_hash`] of the
//! records, the hash the catalog records. Holders verify it on every write and every read, so
//! a corrupt copy is refused rather than served.
//!
//! - [`store`]: the pure storage core over the [`crate::store::Store`] trait (chunked rows,
//!   verification, listing, deletion, range reads).
//! - [`msg`], [`actor`], [`handle`]: the `DataShard` actor and its typed API.

pub mod actor;
pub mod handle;
pub mod msg;
pub mod store;

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_protocol::services::data::{DataRecord, ShardId, ShardMeta, MAX_CHUNK_BYTES};
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::record::Record;

pub use handle::Handle;

/// Limits of a `DataShard` actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Rows a body is cut into in the store, and the default chunk on the wire.
    pub chunk_bytes: usize,
    /// Largest shard accepted.
    pub max_shard_bytes: u64,
    /// Chunked uploads in progress at once; a new one beyond this is refused.
    pub max_pending_uploads: usize,
    /// Most shards one listing returns.
    pub max_listed: usize,
    /// Verified, decoded shards kept in memory for repeated range reads and chunked gets;
    /// the oldest is dropped when full. 0 disables the cache.
    pub cache_shards: usize,
    /// Deadline of every call through the handle.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            chunk_bytes: 1 << 20,
            max_shard_bytes: 256 << 20,
            max_pending_uploads: 16,
            max_listed: 100_000,
            cache_shards: 4,
            call_timeout: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Checks ranges.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::InvalidConfig(m));
        if self.chunk_bytes == 0 || self.chunk_bytes > MAX_CHUNK_BYTES {
            return bad(format!(
                "data.chunk_bytes must be 1..={MAX_CHUNK_BYTES}, is {}",
                self.chunk_bytes
            ));
        }
        if self.max_pending_uploads == 0 || self.max_listed == 0 {
            return bad("data.max_pending_uploads and data.max_listed must be at least 1".into());
        }
        if self.call_timeout.is_zero() {
            return bad("data.call_timeout must be positive".into());
        }
        Ok(())
    }
}

/// The body of a shard holding `records`, in order.
pub fn encode_body(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + records.len() * 64);
    out.extend_from_slice(&(records.len() as u64).to_be_bytes());
    for r in records {
        r.encode_into(&mut out);
    }
    out
}

/// blake3 of a body as lowercase hex.
pub fn body_hash(body: &[u8]) -> String {
    blake3::hash(body).to_hex().to_string()
}

/// The metadata of a shard `id` with this body.
pub fn meta_of(id: ShardId, body: &[u8], records: u64) -> ShardMeta {
    ShardMeta {
        id,
        hash: body_hash(body),
        records,
        bytes: body.len() as u64,
    }
}

/// Reads a body back into records. Every length is checked against the bytes left, so a
/// truncated or hostile body is an error, never a huge allocation or a panic.
pub fn decode_body(body: &[u8]) -> Result<Vec<Record>> {
    let mut cur = Cursor { bytes: body, at: 0 };
    let count = cur.u64()?;
    // Each record takes at least 12 bytes (id and field count): bounds the allocation.
    if count > (body.len() as u64) / 12 + 1 {
        return Err(cur.bad(format!("claims {count} records")));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let id = cur.u64()?;
        let n = cur.u32()?;
        let mut fields = BTreeMap::new();
        for _ in 0..n {
            let k = cur.string()?;
            let v = cur.string()?;
            fields.insert(k, v);
        }
        out.push(Record { id, fields });
    }
    if cur.at != body.len() {
        return Err(cur.bad(format!(
            "{} bytes after the last record",
            body.len() - cur.at
        )));
    }
    Ok(out)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn bad(&self, reason: String) -> Error {
        Error::Corrupt(format!("shard body at byte {}: {reason}", self.at))
    }
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| self.bad(format!("needs {n} more bytes")))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        let at = self.at;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec())
            .map_err(|_| Error::Corrupt(format!("shard body at byte {at}: text is not UTF-8")))
    }
}

impl From<Record> for DataRecord {
    fn from(r: Record) -> Self {
        DataRecord {
            id: r.id,
            fields: r.fields,
        }
    }
}

impl From<DataRecord> for Record {
    fn from(r: DataRecord) -> Self {
        Record {
            id: r.id,
            fields: r.fields,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::record::shard_hash;

    #[test]
    fn body_round_trips_and_hash_is_the_catalog_hash() {
        let mut rs = vec![
            Record::labelled(3, "héllo, world", "greet"),
            Record::text(9, ""),
        ];
        rs[1].fields.insert("extra".into(), "x\ny".into());
        let body = encode_body(&rs);
        assert_eq!(decode_body(&body).unwrap(), rs);
        assert_eq!(body_hash(&body), shard_hash(&rs));
        assert_eq!(
            decode_body(&encode_body(&[])).unwrap(),
            Vec::<Record>::new()
        );
    }

    #[test]
    fn truncated_or_padded_bodies_are_corrupt() {
        let body = encode_body(&[Record::text(1, "abc")]);
        for cut in 0..body.len() {
            assert!(decode_body(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = body.clone();
        padded.push(0);
        assert!(decode_body(&padded).is_err());
        let mut huge = u64::MAX.to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        assert!(decode_body(&huge)
            .unwrap_err()
            .to_string()
            .contains("claims"));
    }
}
