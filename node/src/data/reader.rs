//! The training reader over the mesh: the records of a dataset version in the seeded, shuffled
//! order of [`flotilla_actors::data::reader`], partitioned across `K` readers, resumable from a
//! cursor — fetched shard by shard from the shards' live holders (hash-checked).
//!
//! One shard's rows are held at a time; the shard lengths come from the holders' listings, so
//! opening a reader reads no records.

use std::collections::BTreeMap;

use flotilla_actors::data::peers::DataPeers;
use flotilla_actors::data::reader::{Cursor, Reader};
use flotilla_actors::data::record::Record as DataRow;
use flotilla_protocol::catalog::DatasetRecord;
use flotilla_protocol::services::data::{RequestBody, ResponseBody};
use flotilla_protocol::NodeId;

use super::{DataNode, Error, Result};

/// One reader's stream of a dataset version.
pub struct VersionReader {
    data: DataNode,
    record: DatasetRecord,
    holders: BTreeMap<u32, Vec<NodeId>>,
    order: Reader,
    /// The shard whose rows are held, and its rows.
    current: Option<(u32, Vec<DataRow>)>,
}

impl VersionReader {
    /// Reader `me` of `readers` over `name@version` for epoch seed `seed`, from `cursor` (the
    /// start when `None`).
    pub async fn open(
        data: &DataNode,
        name: &str,
        version: u64,
        seed: u64,
        readers: u64,
        me: u64,
        cursor: Option<Cursor>,
    ) -> Result<VersionReader> {
        let record = data.get(name, Some(version)).await?;
        let shards = record.shard_hashes.len();
        let mut lens: Vec<Option<u64>> = vec![None; shards];
        let mut holders: BTreeMap<u32, Vec<NodeId>> = BTreeMap::new();
        for node in data.alive().await {
            let body = RequestBody::List {
                dataset: Some(name.to_string()),
            };
            let Ok(ResponseBody::Shards(metas)) = data
                .peers
                .call(&node, body, data.settings.call_deadline)
                .await
            else {
                continue;
            };
            for m in metas.into_iter().filter(|m| m.id.version == version) {
                let i = m.id.index as usize;
                if record.shard_hashes.get(i) == Some(&m.hash) {
                    lens[i] = Some(m.records);
                    holders.entry(m.id.index).or_default().push(node.clone());
                }
            }
        }
        let lens: Vec<u64> = lens
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                l.ok_or_else(|| {
                    Error::Unavailable(format!("no live holder of shard {i} of {name}@{version}"))
                })
            })
            .collect::<Result<_>>()?;
        let order = Reader::resume(lens, seed, readers, me, cursor.unwrap_or_default())?;
        Ok(VersionReader {
            data: data.clone(),
            record,
            holders,
            order,
            current: None,
        })
    }

    /// Where this reader is: saved with a checkpoint, it resumes without losing or repeating a
    /// record.
    pub fn cursor(&self) -> Cursor {
        self.order.cursor()
    }

    /// Records left for this reader in the epoch.
    pub fn remaining(&self) -> u64 {
        self.order.remaining()
    }

    /// The next record, or `None` at the end of this reader's share of the epoch.
    pub async fn next(&mut self) -> Result<Option<DataRow>> {
        let Some(at) = self.order.next() else {
            return Ok(None);
        };
        if self.current.as_ref().map(|(s, _)| *s) != Some(at.shard) {
            let rows = self
                .data
                .read_shard(&self.record, at.shard, &self.holders)
                .await?;
            self.current = Some((at.shard, rows));
        }
        let rows = self
            .current
            .as_ref()
            .map(|(_, r)| r.as_slice())
            .unwrap_or(&[]);
        rows.get(at.row as usize).cloned().map(Some).ok_or_else(|| {
            Error::Unavailable(format!(
                "shard {} of {}@{} has no row {}",
                at.shard, self.record.name, self.record.version, at.row
            ))
        })
    }
}
