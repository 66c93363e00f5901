//! Persistence of a catalog replica through the [`Store`] boundary.
//!
//! Each entry is one row of the `Catalog` column: the key is [`CatalogKey::store_key`] (kind
//! tag, name, version), the value the entry encoded by the protocol codec within the entry cap.
//! Acknowledged local writes are saved with [`Durability::Sync`] before the write is
//! acknowledged; entries merged from peers can be saved buffered, since anti-entropy would bring
//! them back after a crash.

use flotilla_protocol::catalog::{CatalogKey, Entry, JobRecord, Record};
use flotilla_protocol::hlc::Hlc;
use flotilla_protocol::services::catalog::{decode_entry, encode_entry, MAX_ENTRY_BYTES};
use serde::Deserialize;

use super::core::{Catalog, Config};
use super::keys::Keys;
use crate::store::{Column, Durability, Store};
use crate::{Error, Result};

/// What loading found besides good entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Entries loaded.
    pub loaded: usize,
    /// Rows skipped, with the reason: unreadable keys or values, invalid entries. They are left
    /// in the store for inspection; anti-entropy brings the data back from peers.
    pub skipped: Vec<String>,
}

/// Saves one entry under `key`, whether or not the replica holds it yet: a local write is
/// saved before it is applied (see [`Catalog::prepare_local_write`]).
pub fn save_entry(
    store: &dyn Store,
    key: &CatalogKey,
    entry: &flotilla_protocol::catalog::Entry,
    durability: Durability,
) -> Result<()> {
    let value = encode_entry(entry).map_err(|e| Error::Store(format!("encoding {key}: {e}")))?;
    store.put(Column::Catalog, &key.store_key(), &value, durability)
}

impl Catalog {
    /// Saves the entries under `keys` (those absent are skipped).
    pub fn save_keys(
        &self,
        store: &dyn Store,
        keys: &[CatalogKey],
        durability: Durability,
    ) -> Result<()> {
        for key in keys {
            if let Some(entry) = self.get(key) {
                let value = encode_entry(entry)
                    .map_err(|e| Error::Store(format!("encoding {key}: {e}")))?;
                store.put(Column::Catalog, &key.store_key(), &value, durability)?;
            }
        }
        Ok(())
    }

    /// Saves every entry.
    pub fn save_to(&self, store: &dyn Store, durability: Durability) -> Result<()> {
        let keys: Vec<CatalogKey> = self.entries().map(|(k, _)| k.clone()).collect();
        self.save_keys(store, &keys, durability)
    }

    /// Loads a replica for the node holding `keys` from the store at wall time `wall_ms`. Rows
    /// that cannot be read are skipped and reported; more rows than `config.max_entries` is an
    /// error, since loading part of a catalog would silently drop records. Rows written before
    /// entries were sealed are read too: this node's own writes among them are sealed now and
    /// saved back; others' stay unsealed here, and lose to their writers' sealed copies.
    pub fn load_from(
        config: Config,
        keys: Keys,
        store: &dyn Store,
        wall_ms: u64,
    ) -> Result<(Catalog, LoadReport)> {
        config.validate()?;
        let limit = config.max_entries.saturating_add(1);
        let rows = store.scan_prefix(Column::Catalog, b"", limit)?;
        if rows.len() > config.max_entries {
            return Err(Error::Store(format!(
                "catalog column holds more than max_entries ({}) rows",
                config.max_entries
            )));
        }
        let mut catalog = Catalog::new(config, keys);
        let mut report = LoadReport::default();
        let mut resealed = Vec::new();
        for (raw_key, value) in rows {
            let Some(key) = CatalogKey::from_store_key(&raw_key) else {
                report
                    .skipped
                    .push(format!("unreadable key {raw_key:02x?}"));
                continue;
            };
            let entry = match decode_entry(&value) {
                Ok(e) => e,
                Err(e) => match decode_unsealed(&value) {
                    Some(mut old) => {
                        catalog.keys().seal(&key, &mut old);
                        resealed.push(key.clone());
                        old
                    }
                    None => {
                        report.skipped.push(format!("{key}: {e}"));
                        continue;
                    }
                },
            };

            if let Err(e) = entry.validate(&key) {
                report.skipped.push(format!("{key}: {e}"));
                continue;
            }
            catalog
                .witness(&entry, wall_ms)
                .map_err(|e| Error::Store(format!("clock cannot pass {key}: {e}")))?;
            catalog.merge(key, entry);
            report.loaded += 1;
        }
        catalog.save_keys(store, &resealed, Durability::Buffered)?;
        Ok((catalog, report))
    }
}

/// An entry as rows were written before seals existed.
#[derive(Deserialize)]
enum UnsealedEntry {
    Register { hlc: Hlc, value: Option<Record> },
    Job { hlc: Hlc, record: JobRecord },
}

fn decode_unsealed(bytes: &[u8]) -> Option<Entry> {
    let old = flotilla_protocol::codec::decode::<UnsealedEntry, MAX_ENTRY_BYTES>("catalog", bytes)
        .ok()?;
    Some(match old {
        UnsealedEntry::Register {
            hlc,
            value: Some(r),
        } => Entry::write(hlc, r),
        UnsealedEntry::Register { hlc, value: None } => Entry::tombstone(hlc),
        UnsealedEntry::Job { hlc, record } => Entry::job(hlc, record),
    })
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
