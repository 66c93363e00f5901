//! The storage core of a shard holder: shards as rows of [`Column::Shards`] behind the
//! [`Store`] trait, checked against their blake3 hash on every write and every read.
//!
//! Layout: a shard's body is cut into rows of at most `chunk_bytes` under
//! `c/<dataset>\0<version BE><index BE><chunk BE>`, and its [`ShardMeta`] is one row under
//! `m/<dataset>\0<version BE><index BE>`. Chunks are written first (buffered) and the meta row
//! last (synced): the meta row is the commit marker, so a crash mid-write leaves no half shard
//! visible, only orphan chunks the next write of that shard overwrites. Deletion removes the
//! meta row first for the same reason. Keys sort by dataset, version and index, so a version's
//! or a dataset's shards are one prefix scan in shard order.

use std::sync::Arc;

use flotilla_protocol::codec;
use flotilla_protocol::services::data::{ShardId, ShardMeta};

use super::{body_hash, decode_body};
use crate::data::error::{Error, Result};
use crate::data::record::Record;
use crate::store::{Column, Durability, Store};

const META: &[u8] = b"m/";
const CHUNK: &[u8] = b"c/";
/// Largest encoded meta row.
const MAX_META_BYTES: usize = 64 * 1024;

/// Where a holder keeps its shards, and its limits.
#[derive(Clone)]
pub struct ShardStore {
    store: Arc<dyn Store>,
    chunk_bytes: usize,
    max_shard_bytes: u64,
    max_shards: usize,
}

impl std::fmt::Debug for ShardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardStore")
            .field("chunk_bytes", &self.chunk_bytes)
            .field("max_shard_bytes", &self.max_shard_bytes)
            .finish()
    }
}

fn version_prefix(dataset: &str, version: Option<u64>) -> Vec<u8> {
    let mut k = dataset.as_bytes().to_vec();
    k.push(0);
    if let Some(v) = version {
        k.extend_from_slice(&v.to_be_bytes());
    }
    k
}

fn shard_key(id: &ShardId) -> Vec<u8> {
    let mut k = version_prefix(&id.dataset, Some(id.version));
    k.extend_from_slice(&id.index.to_be_bytes());
    k
}

fn prefixed(p: &[u8], key: &[u8]) -> Vec<u8> {
    let mut k = p.to_vec();
    k.extend_from_slice(key);
    k
}

fn chunk_key(id: &ShardId, chunk: u32) -> Vec<u8> {
    let mut k = prefixed(CHUNK, &shard_key(id));
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

fn check_name(dataset: &str) -> Result<()> {
    if dataset.is_empty() || dataset.contains('\0') {
        return Err(Error::BadRequest(format!(
            "dataset name {dataset:?} is empty or contains a NUL byte"
        )));
    }
    Ok(())
}

impl ShardStore {
    /// A shard store over `store` writing rows of `chunk_bytes`, refusing shards over
    /// `max_shard_bytes` and listing at most `max_shards`.
    pub fn new(
        store: Arc<dyn Store>,
        chunk_bytes: usize,
        max_shard_bytes: u64,
        max_shards: usize,
    ) -> Self {
        Self {
            store,
            chunk_bytes: chunk_bytes.max(1),
            max_shard_bytes,
            max_shards,
        }
    }

    /// Stores a shard after checking that `body` has `meta`'s length, hash and record count.
    /// Writing a shard again with the same hash is a no-op success (a retried put or copy),
    /// unless the held copy no longer reads back intact: then the new body replaces it, which
    /// is how a corrupt replica is repaired by copying it again.
    pub fn put(&self, meta: &ShardMeta, body: &[u8]) -> Result<()> {
        check_name(&meta.id.dataset)?;
        if body.len() as u64 > self.max_shard_bytes {
            return Err(Error::TooLarge {
                what: format!("shard {}", meta.id),
                len: body.len() as u64,
                cap: self.max_shard_bytes,
            });
        }
        let actual = body_hash(body);
        if actual != meta.hash || body.len() as u64 != meta.bytes {
            return Err(Error::HashMismatch {
                shard: meta.id.clone(),
                expected: meta.hash.clone(),
                actual,
            });
        }
        let records = decode_body(body)?.len() as u64;
        if records != meta.records {
            return Err(Error::Corrupt(format!(
                "shard {} claims {} records but holds {records}",
                meta.id, meta.records
            )));
        }
        if self.meta(&meta.id).ok().flatten().as_ref() == Some(meta) && self.body(&meta.id).is_ok()
        {
            return Ok(());
        }
        // A shard rewritten with other contents may have had more chunks: drop them all first.
        self.delete(&meta.id)?;
        let chunks = if body.is_empty() {
            vec![&body[..0]]
        } else {
            body.chunks(self.chunk_bytes).collect()
        };
        for (i, c) in chunks.iter().enumerate() {
            self.store.put(
                Column::Shards,
                &chunk_key(&meta.id, i as u32),
                c,
                Durability::Buffered,
            )?;
        }
        let row = codec::encode::<_, MAX_META_BYTES>("shard meta", &(meta, chunks.len() as u32))
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        self.store.put(
            Column::Shards,
            &prefixed(META, &shard_key(&meta.id)),
            &row,
            Durability::Sync,
        )?;
        Ok(())
    }

    fn meta_row(&self, id: &ShardId) -> Result<Option<(ShardMeta, u32)>> {
        let Some(row) = self
            .store
            .get(Column::Shards, &prefixed(META, &shard_key(id)))?
        else {
            return Ok(None);
        };
        codec::decode::<(ShardMeta, u32), MAX_META_BYTES>("shard meta", &row)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("meta of shard {id}: {e}")))
    }

    /// The metadata of a held shard, `None` if not held.
    pub fn meta(&self, id: &ShardId) -> Result<Option<ShardMeta>> {
        Ok(self.meta_row(id)?.map(|(m, _)| m))
    }

    /// The verified body of a held shard: a body whose bytes no longer hash to the stored hash
    /// is refused with [`Error::HashMismatch`].
    pub fn body(&self, id: &ShardId) -> Result<(ShardMeta, Vec<u8>)> {
        let (meta, chunks) = self
            .meta_row(id)?
            .ok_or_else(|| Error::ShardNotFound(id.clone()))?;
        let mut body = Vec::with_capacity(meta.bytes.min(self.max_shard_bytes) as usize);
        for i in 0..chunks {
            match self.store.get(Column::Shards, &chunk_key(id, i))? {
                Some(c) => body.extend_from_slice(&c),
                None => {
                    return Err(Error::Corrupt(format!(
                        "shard {id}: chunk {i} of {chunks} is missing"
                    )))
                }
            }
        }
        let actual = body_hash(&body);
        if actual != meta.hash {
            return Err(Error::HashMismatch {
                shard: id.clone(),
                expected: meta.hash,
                actual,
            });
        }
        Ok((meta, body))
    }

    /// The verified records of a held shard.
    pub fn records(&self, id: &ShardId) -> Result<Vec<Record>> {
        decode_body(&self.body(id)?.1)
    }

    /// Records `offset..offset + limit` of a held shard (fewer at its end) and its record
    /// count. An offset past the end is an error; at the end it is an empty range.
    pub fn read_range(&self, id: &ShardId, offset: u64, limit: u32) -> Result<(Vec<Record>, u64)> {
        let records = self.records(id)?;
        let total = records.len() as u64;
        if offset > total {
            return Err(Error::BadRequest(format!(
                "offset {offset} is past the end of shard {id} ({total} records)"
            )));
        }
        let out = records
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .collect();
        Ok((out, total))
    }

    /// The held shards of `dataset` (or of all datasets), in dataset, version, index order.
    pub fn list(&self, dataset: Option<&str>) -> Result<Vec<ShardMeta>> {
        let prefix = match dataset {
            Some(d) => {
                check_name(d)?;
                prefixed(META, &version_prefix(d, None))
            }
            None => META.to_vec(),
        };
        self.store
            .scan_prefix(Column::Shards, &prefix, self.max_shards)?
            .into_iter()
            .map(|(k, row)| {
                codec::decode::<(ShardMeta, u32), MAX_META_BYTES>("shard meta", &row)
                    .map(|(m, _)| m)
                    .map_err(|e| {
                        Error::Corrupt(format!("meta row {}: {e}", String::from_utf8_lossy(&k)))
                    })
            })
            .collect()
    }

    /// Deletes one shard (meta row first); whether it was held.
    pub fn delete(&self, id: &ShardId) -> Result<bool> {
        let held = self.meta_row(id)?;
        let key = prefixed(META, &shard_key(id));
        self.store.delete(Column::Shards, &key, Durability::Sync)?;
        // Orphans of an interrupted write have no meta row: scan for every chunk of the shard.
        let chunks =
            self.store
                .scan_prefix(Column::Shards, &prefixed(CHUNK, &shard_key(id)), usize::MAX)?;
        for (k, _) in chunks {
            self.store
                .delete(Column::Shards, &k, Durability::Buffered)?;
        }
        Ok(held.is_some())
    }

    /// Deletes every held shard of `dataset@version`; how many there were.
    pub fn delete_version(&self, dataset: &str, version: u64) -> Result<u32> {
        check_name(dataset)?;
        let prefix = prefixed(META, &version_prefix(dataset, Some(version)));
        let rows = self
            .store
            .scan_prefix(Column::Shards, &prefix, usize::MAX)?;
        let mut n = 0;
        for (k, _) in rows {
            let idx = k
                .get(k.len().saturating_sub(4)..)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| Error::Corrupt("short shard meta key".into()))?;
            if self.delete(&ShardId::new(dataset, version, idx))? {
                n += 1;
            }
        }
        Ok(n)
    }
}
