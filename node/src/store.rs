//! The rocksdb implementation of the [`Store`] boundary, one column family per [`Column`].
//!
//! A write (put, delete, flush) that rocksdb refuses — a full disk, an I/O error — is returned
//! to its caller and also remembered: [`RocksStore::failure`] gives the first such error, and
//! the node reports itself unhealthy with it and takes no new work (see
//! [`crate::lifecycle::Lifecycle`]). It stays set until the node restarts. With the
//! `fault-injection` feature, [`RocksStore::inject_write_fault`] makes writes fail on demand.

use std::path::Path;
use std::sync::{Arc, Mutex};

use flotilla_actors::store::{Column, Durability, Store};
use flotilla_actors::{Error, Result};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteOptions, DB};

/// A rocksdb database with Flotilla's column families.
#[derive(Clone)]
pub struct RocksStore {
    db: Arc<DB>,
    /// The first write error, as text.
    failure: Arc<Mutex<Option<String>>>,
    /// When set, every write fails with this reason before reaching rocksdb.
    #[cfg(feature = "fault-injection")]
    fault: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.db.path())
            .finish()
    }
}

fn store_err(e: rocksdb::Error) -> Error {
    Error::Store(e.into_string())
}

impl RocksStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Small defaults: many nodes share one machine in tests and demos.
        opts.set_max_open_files(256);
        opts.set_keep_log_file_num(4);
        let cfs = Column::ALL
            .iter()
            .map(|c| ColumnFamilyDescriptor::new(c.name(), Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
            let msg = e.into_string();
            if msg.contains("lock") {
                Error::Store(format!("{} is in use by another process (is a node already running with this data dir?): {msg}", path.display()))
            } else {
                Error::Store(msg)
            }
        })?;
        Ok(Self {
            db: Arc::new(db),
            failure: Arc::default(),
            #[cfg(feature = "fault-injection")]
            fault: Arc::default(),
        })
    }

    /// The first write error since the store was opened, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .map(|f| f.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Makes every later write fail with `reason` (or, with `None`, work again), as a full disk
    /// would. The failure is recorded like a real one.
    #[cfg(feature = "fault-injection")]
    pub fn inject_write_fault(&self, reason: Option<String>) {
        let mut f = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        *f = reason;
    }

    /// Runs a write, recording its error.
    fn write<T>(&self, op: impl FnOnce() -> std::result::Result<T, rocksdb::Error>) -> Result<T> {
        #[cfg(feature = "fault-injection")]
        {
            let fault = self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(reason) = fault {
                return Err(self.failed(reason));
            }
        }
        op().map_err(|e| self.failed(e.into_string()))
    }

    fn failed(&self, reason: String) -> Error {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            tracing::error!(error = %reason, "a store write failed; the node takes no new work");
            *f = Some(reason.clone());
        }
        Error::Store(reason)
    }

    fn cf(&self, col: Column) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(col.name())
            .ok_or_else(|| Error::Store(format!("column family {} missing", col.name())))
    }

    fn write_opts(durability: Durability) -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(durability == Durability::Sync);
        w
    }
}

impl Store for RocksStore {
    fn get(&self, col: Column, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(col)?, key).map_err(store_err)
    }

    fn put(&self, col: Column, key: &[u8], value: &[u8], durability: Durability) -> Result<()> {
        let cf = self.cf(col)?;
        self.write(|| {
            self.db
                .put_cf_opt(cf, key, value, &Self::write_opts(durability))
        })
    }

    fn delete(&self, col: Column, key: &[u8], durability: Durability) -> Result<()> {
        let cf = self.cf(col)?;
        self.write(|| {
            self.db
                .delete_cf_opt(cf, key, &Self::write_opts(durability))
        })
    }

    fn scan_prefix(
        &self,
        col: Column,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(col)?,
            rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(store_err)?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn flush(&self) -> Result<()> {
        for c in Column::ALL {
            let cf = self.cf(c)?;
            self.write(|| self.db.flush_cf(cf))?;
        }
        self.write(|| self.db.flush_wal(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The suite every store passes (the in-memory test store runs it too).
    #[test]
    fn passes_the_store_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(&dir.path().join("a")).unwrap();
        flotilla_actors::store_conformance::check_all(&s);
        let path = dir.path().join("b");
        let s = RocksStore::open(&path).unwrap();
        flotilla_actors::store_conformance::check_sync_writes_survive_reopen(s, |s| {
            drop(s);
            RocksStore::open(&path).unwrap()
        });
    }

    #[test]
    fn second_open_of_the_same_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _a = RocksStore::open(dir.path()).unwrap();
        let e = RocksStore::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("in use"), "{e}");
    }
}
