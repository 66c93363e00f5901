//! Records, their canonical encoding, shards and shard placement.
//!
//! A [`Record`] is an id and a sorted map of string fields. The id is stable: it comes from the
//! record's position in the source (its 0-based line or row), so a record keeps its id through
//! every operation and any tie (which duplicate to keep) is broken the same way on every node.
//!
//! A shard's hash is blake3 over the canonical encoding of its records in order; two nodes
//! holding the same shard hold the same bytes and the same hash, which the catalog records in
//! `DatasetRecord::shard_hashes`.

use std::collections::BTreeMap;

use flotilla_protocol::NodeId;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use crate::rendezvous;

/// The conventional name of the text field.
pub const TEXT: &str = "text";
/// The conventional name of the label field.
pub const LABEL: &str = "label";

/// One record of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Record {
    /// Stable id from the source position (0-based line or data row).
    pub id: u64,
    pub fields: BTreeMap<String, String>,
}

impl Record {
    /// A record with only a text field.
    pub fn text(id: u64, text: impl Into<String>) -> Self {
        let mut fields = BTreeMap::new();
        fields.insert(TEXT.to_string(), text.into());
        Self { id, fields }
    }

    /// A record with a text and a label field.
    pub fn labelled(id: u64, text: impl Into<String>, label: impl Into<String>) -> Self {
        let mut r = Self::text(id, text);
        r.fields.insert(LABEL.to_string(), label.into());
        r
    }

    /// The value of `field`, or an error naming the field, the record and the fields it has.
    pub fn field(&self, field: &str) -> Result<&str> {
        self.fields
            .get(field)
            .map(String::as_str)
            .ok_or_else(|| Error::MissingField {
                field: field.to_string(),
                at: Some(format!("record {}", self.id)),
                available: self.fields.keys().cloned().collect(),
            })
    }

    /// A mutable reference to `field`, or the same error as [`Record::field`].
    pub fn field_mut(&mut self, field: &str) -> Result<&mut String> {
        let available: Vec<String> = self.fields.keys().cloned().collect();
        let id = self.id;
        self.fields
            .get_mut(field)
            .ok_or_else(|| Error::MissingField {
                field: field.to_string(),
                at: Some(format!("record {id}")),
                available,
            })
    }

    /// The canonical encoding: id (u64 BE), field count (u32 BE), then each field as key length
    /// (u32 BE), key, value length (u32 BE), value, in key order. Length prefixes keep
    /// `{"ab": "c"}` and `{"a": "bc"}` apart.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&(self.fields.len() as u32).to_be_bytes());
        for (k, v) in &self.fields {
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
    }
}

/// A run of consecutive records with the hash of their canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Position in the dataset version, from 0.
    pub index: u32,
    pub records: Vec<Record>,
    /// blake3 of the records' canonical encodings in order, 64 lowercase hex characters.
    pub hash: String,
}

/// blake3 over the canonical encodings of `records`, in order, as lowercase hex.
pub fn shard_hash(records: &[Record]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&(records.len() as u64).to_be_bytes());
    let mut buf = Vec::new();
    for r in records {
        buf.clear();
        r.encode_into(&mut buf);
        h.update(&buf);
    }
    h.finalize().to_hex().to_string()
}

/// Accumulates records into shards of `per_shard` records as they arrive, so an upload never
/// holds more than one shard in memory.
#[derive(Debug)]
pub struct Sharder {
    per_shard: usize,
    next_index: u32,
    current: Vec<Record>,
}

impl Sharder {
    /// A sharder cutting every `per_shard` records; `per_shard` must be at least 1.
    pub fn new(per_shard: usize) -> Result<Self> {
        if per_shard == 0 {
            return Err(Error::invalid(
                "shard",
                "records_per_shard",
                "must be at least 1",
            ));
        }
        Ok(Self {
            per_shard,
            next_index: 0,
            current: Vec::with_capacity(per_shard.min(1 << 16)),
        })
    }

    /// Adds a record; returns a full shard when this record completes one.
    pub fn push(&mut self, r: Record) -> Option<Shard> {
        self.current.push(r);
        if self.current.len() >= self.per_shard {
            Some(self.cut())
        } else {
            None
        }
    }

    /// The last, partial shard, if any records are left.
    pub fn finish(mut self) -> Option<Shard> {
        if self.current.is_empty() {
            None
        } else {
            Some(self.cut())
        }
    }

    fn cut(&mut self) -> Shard {
        let records = std::mem::take(&mut self.current);
        let index = self.next_index;
        self.next_index += 1;
        Shard {
            index,
            hash: shard_hash(&records),
            records,
        }
    }
}

/// Splits `records` into shards of `per_shard` records.
pub fn shard_records(records: Vec<Record>, per_shard: usize) -> Result<Vec<Shard>> {
    let mut s = Sharder::new(per_shard)?;
    let mut out = Vec::new();
    for r in records {
        out.extend(s.push(r));
    }
    out.extend(s.finish());
    Ok(out)
}

/// The rendezvous key of a shard: `<dataset>/<version>/<index>`.
pub fn shard_key(dataset: &str, version: u64, index: u32) -> Vec<u8> {
    format!("{dataset}/{version}/{index}").into_bytes()
}

/// The holders of each shard: the first `replication` nodes in rendezvous order of its key.
pub fn place_shards(
    dataset: &str,
    version: u64,
    shard_count: u32,
    nodes: &[NodeId],
    replication: usize,
) -> BTreeMap<u32, Vec<NodeId>> {
    (0..shard_count)
        .map(|i| {
            let key = shard_key(dataset, version, i);
            (i, rendezvous::top(&key, nodes, replication))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_separates_fields_and_hash_sees_every_byte() {
        let mut a = Record::text(1, "x");
        a.fields.insert("ab".into(), "c".into());
        let mut b = Record::text(1, "x");
        b.fields.insert("a".into(), "bc".into());
        assert_ne!(shard_hash(&[a.clone()]), shard_hash(&[b]));
        assert_ne!(
            shard_hash(&[a.clone()]),
            shard_hash(&[Record::text(2, "x")])
        );
        assert_eq!(shard_hash(&[a.clone()]), shard_hash(&[a]));
        assert_eq!(shard_hash(&[]).len(), 64);
    }

    #[test]
    fn shards_cut_every_n_and_keep_order() {
        let rs: Vec<Record> = (0..10).map(|i| Record::text(i, format!("r{i}"))).collect();
        let shards = shard_records(rs.clone(), 4).unwrap();
        assert_eq!(
            shards.iter().map(|s| s.records.len()).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        assert_eq!(shards[2].index, 2);
        let back: Vec<Record> = shards.into_iter().flat_map(|s| s.records).collect();
        assert_eq!(back, rs);
        assert!(shard_records(Vec::new(), 0).is_err());
    }

    #[test]
    fn placement_uses_rendezvous_with_replication() {
        let nodes: Vec<NodeId> = (0..5).map(|i| NodeId(format!("n{i}"))).collect();
        let p = place_shards("bank", 1, 20, &nodes, 2);
        assert_eq!(p.len(), 20);
        for (i, holders) in &p {
            assert_eq!(holders.len(), 2);
            assert_ne!(holders[0], holders[1]);
            assert_eq!(
                holders,
                &rendezvous::top(&shard_key("bank", 1, *i), &nodes, 2)
            );
        }
        // More than one node holds something: the keys spread.
        let owners: std::collections::BTreeSet<_> = p.values().map(|h| h[0].clone()).collect();
        assert!(owners.len() > 1);
    }

    #[test]
    fn missing_field_names_field_and_lists_available() {
        let r = Record::labelled(7, "t", "l");
        let e = r.field("body").unwrap_err().to_string();
        assert!(e.contains("`body`") && e.contains("record 7"), "{e}");
        assert!(e.contains("label, text"), "{e}");
    }
}
