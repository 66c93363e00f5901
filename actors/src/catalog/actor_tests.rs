use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use flotilla_protocol::catalog::{CatalogKey, Entry};
use flotilla_protocol::hlc::Hlc;
use flotilla_protocol::services::catalog::Delta;
use flotilla_protocol::NodeId;
use tokio::sync::mpsc;

use crate::catalog::core::Config;
use crate::catalog::fixtures::dataset;
use crate::catalog::{Error, Handle, WriteError};
use crate::store::{Column, Durability, Store};

/// An in-memory store that remembers the durability of each row's last write, so tests can
/// tell acknowledged local writes (synced) from merged ones (buffered).
#[derive(Default)]
struct RecordingStore {
    rows: Mutex<Rows>,
    /// When set, every put fails with this reason (a full disk).
    failing: Mutex<Option<String>>,
}

/// Store key → (value, durability of its last write).
type Rows = BTreeMap<Vec<u8>, (Vec<u8>, Durability)>;

impl RecordingStore {
    fn durability(&self, key: &CatalogKey) -> Option<Durability> {
        self.rows.lock().unwrap().get(&key.store_key()).map(|r| r.1)
    }
}

impl Store for RecordingStore {
    fn get(&self, _: Column, key: &[u8]) -> crate::Result<Option<Vec<u8>>> {
        Ok(self.rows.lock().unwrap().get(key).map(|r| r.0.clone()))
    }
    fn put(&self, col: Column, key: &[u8], value: &[u8], d: Durability) -> crate::Result<()> {
        assert_eq!(col, Column::Catalog);
        if let Some(reason) = self.failing.lock().unwrap().clone() {
            return Err(crate::Error::Store(reason));
        }
        self.rows
            .lock()
            .unwrap()
            .insert(key.to_vec(), (value.to_vec(), d));
        Ok(())
    }
    fn delete(&self, _: Column, key: &[u8], _: Durability) -> crate::Result<()> {
        self.rows.lock().unwrap().remove(key);
        Ok(())
    }
    fn scan_prefix(
        &self,
        _: Column,
        prefix: &[u8],
        limit: usize,
    ) -> crate::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let rows = self.rows.lock().unwrap();
        Ok(rows
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect())
    }
    fn flush(&self) -> crate::Result<()> {
        Ok(())
    }
}

async fn spawn(store: &Arc<RecordingStore>) -> (Handle, mpsc::Receiver<Delta>) {
    let (tx, rx) = mpsc::channel(4);
    let (handle, _) = Handle::spawn(Config::default(), NodeId::from("n1"), store.clone(), tx)
        .await
        .unwrap();
    (handle, rx)
}

#[tokio::test]
async fn local_writes_are_synced_gossiped_and_reloaded() {
    let store = Arc::new(RecordingStore::default());
    let (catalog, mut outbox) = spawn(&store).await;
    let key = CatalogKey::dataset("d", 1);
    catalog.put(dataset("d", 1, 3, 1)).await.unwrap();
    assert_eq!(store.durability(&key), Some(Durability::Sync));
    let delta = outbox.try_recv().unwrap();
    assert_eq!(delta.entries.len(), 1);
    assert_eq!(delta.entries[0].0, key);

    // An invalid record is refused with its fields and neither saved nor gossiped.
    let err = catalog.put(dataset("d", 0, 3, 1)).await.unwrap_err();
    assert!(
        matches!(&err, WriteError::Refused(Error::Invalid { errors, .. }) if errors.mentions("version")),
        "{err}"
    );
    assert!(outbox.try_recv().is_err());

    let before = catalog.list(None).await.unwrap();
    catalog.stop();
    let (again, _) = spawn(&store).await;
    assert_eq!(again.list(None).await.unwrap(), before);
    assert_eq!(again.stats().await.unwrap().entries, 1);
}

#[tokio::test]
async fn remote_entries_are_buffered_and_refusals_counted_by_reason() {
    let store = Arc::new(RecordingStore::default());
    let (catalog, mut outbox) = spawn(&store).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let hlc = |ms: u64| Hlc {
        physical_ms: ms,
        logical: 0,
        node: NodeId::from("peer"),
    };
    let good = CatalogKey::dataset("good", 1);
    let ahead = CatalogKey::dataset("ahead", 1);
    let summary = catalog
        .merge(Delta {
            entries: vec![
                (
                    good.clone(),
                    Entry::write(hlc(now), dataset("good", 1, 3, 1)),
                ),
                // Ten minutes ahead of this node's clock: past the 60 s skew bound.
                (
                    ahead.clone(),
                    Entry::write(hlc(now + 600_000), dataset("ahead", 1, 3, 1)),
                ),
            ],
        })
        .await
        .unwrap();
    assert_eq!(summary.applied, 1);
    assert_eq!(summary.rejected, vec!["clock_skew"]);
    assert_eq!(store.durability(&good), Some(Durability::Buffered));
    assert_eq!(store.durability(&ahead), None);
    // Merged entries are not re-gossiped by this node: gossipsub already forwards them.
    assert!(outbox.try_recv().is_err());
    let stats = catalog.stats().await.unwrap();
    assert_eq!(stats.rejected.get("clock_skew"), Some(&1));
    assert_eq!(stats.entries, 1);

    // A local write after the merge is later than the merged entry.
    catalog.put(dataset("good", 1, 4, 2)).await.unwrap();
    let Some(Entry::Register(r)) = catalog.get(good).await.unwrap() else {
        panic!("no entry");
    };
    assert!(r.hlc > hlc(now));
    assert_eq!(r.hlc.node, NodeId::from("n1"));
}

#[tokio::test]
async fn a_write_the_store_refuses_is_neither_served_nor_gossiped() {
    let store = Arc::new(RecordingStore::default());
    let (catalog, mut outbox) = spawn(&store).await;
    catalog.put(dataset("d", 1, 3, 1)).await.unwrap();
    outbox.recv().await.unwrap();
    *store.failing.lock().unwrap() = Some("No space left on device".into());
    let err = catalog.put(dataset("d", 2, 3, 1)).await.unwrap_err();
    assert!(
        matches!(&err, WriteError::Store { cause, .. } if cause.to_string().contains("No space")),
        "{err}"
    );
    // The replica is as it was: not served, not in the digest, not queued for gossip.
    assert!(catalog
        .get(CatalogKey::dataset("d", 2))
        .await
        .unwrap()
        .is_none());
    assert_eq!(catalog.stats().await.unwrap().entries, 1);
    assert!(outbox.try_recv().is_err());
    // Once the store takes writes again, the same write goes through.
    *store.failing.lock().unwrap() = None;
    catalog.put(dataset("d", 2, 3, 1)).await.unwrap();
    assert!(catalog
        .get(CatalogKey::dataset("d", 2))
        .await
        .unwrap()
        .is_some());
}
