use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_protocol::catalog::{CatalogKey, Entry, Record};
use flotilla_protocol::hlc::Hlc;
use flotilla_protocol::services::catalog::Delta;
use tokio::sync::mpsc;

use crate::catalog::core::Config;
use crate::catalog::fixtures::{dataset, node, sealed};
use crate::catalog::{Error, Handle, WriteError};
use crate::store::{Column, Store};
use crate::testing::CrashStore;

/// Whether the row of `key` is in the store, and whether a crash would keep it as it is:
/// acknowledged local writes are synced, merged ones buffered.
fn saved(store: &CrashStore, key: &CatalogKey) -> Option<bool> {
    let k = key.store_key();
    store
        .get(Column::Catalog, &k)
        .unwrap()
        .map(|_| store.is_durable(Column::Catalog, &k))
}

async fn spawn(store: &Arc<CrashStore>) -> (Handle, mpsc::Receiver<Delta>) {
    let (tx, rx) = mpsc::channel(4);
    let (handle, _) = Handle::spawn(
        Config::default(),
        crate::catalog::Keys::from_seed("n1"),
        store.clone(),
        tx,
    )
    .await
    .unwrap();
    (handle, rx)
}

#[tokio::test]
async fn local_writes_are_synced_gossiped_and_reloaded() {
    let store = Arc::new(CrashStore::new());
    let (catalog, mut outbox) = spawn(&store).await;
    let key = CatalogKey::dataset("d", 1);
    catalog.put(dataset("d", 1, 3, 1)).await.unwrap();
    assert_eq!(saved(&store, &key), Some(true));
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
    // Acknowledged writes are synced: they survive a crash, not only a clean stop.
    let (again, _) = spawn(&Arc::new(store.crash())).await;
    assert_eq!(again.list(None).await.unwrap(), before);
    assert_eq!(again.stats().await.unwrap().entries, 1);
}

#[tokio::test]
async fn remote_entries_are_buffered_and_refusals_counted_by_reason() {
    let store = Arc::new(CrashStore::new());
    let (catalog, mut outbox) = spawn(&store).await;
    let now = crate::clock::wall_ms();
    let hlc = |ms: u64| Hlc {
        physical_ms: ms,
        logical: 0,
        node: node("peer"),
    };
    let good = CatalogKey::dataset("good", 1);
    let ahead = CatalogKey::dataset("ahead", 1);
    let forged = CatalogKey::dataset("forged", 1);
    let mut unsealed = Entry::write(hlc(now), dataset("forged", 1, 3, 1));
    let summary = catalog
        .merge(Delta {
            entries: vec![
                (
                    good.clone(),
                    sealed(
                        "peer",
                        &good,
                        Entry::write(hlc(now), dataset("good", 1, 3, 1)),
                    ),
                ),
                // Ten minutes ahead of this node's clock: past the 60 s skew bound.
                (
                    ahead.clone(),
                    sealed(
                        "peer",
                        &ahead,
                        Entry::write(hlc(now + 600_000), dataset("ahead", 1, 3, 1)),
                    ),
                ),
                // Written in the peer's name by someone without its key.
                (forged.clone(), {
                    crate::catalog::Keys::from_seed("mallory").seal(&forged, &mut unsealed);
                    unsealed
                }),
            ],
        })
        .await
        .unwrap();
    assert_eq!(summary.applied, 1);
    assert_eq!(summary.rejected, vec!["clock_skew", "bad_seal"]);
    assert_eq!(saved(&store, &good), Some(false));
    assert_eq!(saved(&store, &ahead), None);
    assert_eq!(saved(&store, &forged), None);
    // Merged entries are not re-gossiped by this node: gossipsub already forwards them.
    assert!(outbox.try_recv().is_err());
    let stats = catalog.stats().await.unwrap();
    assert_eq!(stats.rejected.get("clock_skew"), Some(&1));
    assert_eq!(stats.rejected.get("bad_seal"), Some(&1));
    assert_eq!(stats.entries, 1);

    // A local write after the merge is later than the merged entry.
    catalog.put(dataset("good", 1, 4, 2)).await.unwrap();
    let Some(Entry::Register(r)) = catalog.get(good).await.unwrap() else {
        panic!("no entry");
    };
    assert!(r.hlc > hlc(now));
    assert_eq!(r.hlc.node, node("n1"));
}

/// What a catalog holds under a key: absent, deleted (`Some(None)`) or a record.
async fn value_of(catalog: &Handle, key: &CatalogKey) -> Option<Option<Record>> {
    match catalog.get(key.clone()).await.unwrap() {
        None => None,
        Some(Entry::Register(r)) => Some(r.value),
        Some(Entry::Job(j)) => panic!("a job entry under {key}: {j:?}"),
    }
}

/// One step of the crash test's script.
enum Step {
    Put(Record),
    Delete(CatalogKey),
    /// An entry merged from a peer (saved buffered).
    Merge(Record),
}

#[tokio::test]
async fn every_acknowledged_write_survives_a_crash_at_every_point() {
    let now = crate::clock::wall_ms();
    let script = || {
        vec![
            Step::Put(dataset("a", 1, 3, 1)),
            Step::Put(dataset("b", 1, 3, 1)),
            Step::Merge(dataset("r", 1, 3, 1)),
            Step::Delete(CatalogKey::dataset("a", 1)),
            Step::Put(dataset("c", 1, 3, 1)),
            Step::Put(dataset("b", 1, 4, 2)),
        ]
    };
    // One store write per step.
    let writes = script().len() as u64;
    for k in 0..=writes {
        let store = Arc::new(CrashStore::dying_after(k));
        let (catalog, _outbox) = spawn(&store).await;
        // The last acknowledged value of each key written locally.
        let mut acked: BTreeMap<CatalogKey, Option<Record>> = BTreeMap::new();
        let mut merged = Vec::new();
        let mut acks = 0;
        for step in script() {
            let (key, value, result) = match step {
                Step::Put(r) => {
                    let key = r.key();
                    (key, Some(r.clone()), catalog.put(r).await)
                }
                Step::Delete(key) => (key.clone(), None, catalog.delete(key).await),
                Step::Merge(r) => {
                    let key = r.key();
                    let hlc = Hlc {
                        physical_ms: now,
                        logical: 0,
                        node: node("peer"),
                    };
                    let delta = Delta {
                        entries: vec![(key.clone(), sealed("peer", &key, Entry::write(hlc, r)))],
                    };
                    catalog.merge(delta).await.unwrap();
                    merged.push(key);
                    continue;
                }
            };
            let before = acked.get(&key).cloned();
            match result {
                Ok(()) => {
                    acks += 1;
                    acked.insert(key, value);
                }
                Err(WriteError::Store { .. }) => {
                    // Not saved, so not applied: nobody reads a write a crash would lose.
                    assert_eq!(
                        value_of(&catalog, &key).await,
                        before,
                        "crash after write {k}: the unsaved write to {key} is visible"
                    );
                }
                Err(e) => panic!("crash after write {k}: {e}"),
            }
        }
        // Every write up to the crash point was acknowledged, none after it.
        let local = script()
            .iter()
            .take(k as usize)
            .filter(|s| !matches!(s, Step::Merge(_)))
            .count();
        assert_eq!(acks, local, "crash after write {k}");
        catalog.stop();
        for (n, image) in store.crash_images().into_iter().enumerate() {
            let (again, _) = spawn(&Arc::new(image)).await;
            for (key, value) in &acked {
                assert_eq!(
                    value_of(&again, key).await,
                    Some(value.clone()),
                    "crash after write {k} keeping {n} unsynced: acknowledged {key} lost"
                );
            }
            // Nothing else: a refused write is not there after the restart either.
            let held = again.list(None).await.unwrap();
            for (key, _) in held {
                assert!(
                    acked.contains_key(&key) || merged.contains(&key),
                    "crash after write {k}: {key} was never acknowledged"
                );
            }
            again.stop();
        }
    }
}

#[tokio::test]
async fn compaction_removes_old_tombstones_from_the_replica_and_the_store() {
    let store = Arc::new(CrashStore::new());
    let (catalog, _outbox) = spawn(&store).await;
    let (gone, kept) = (
        CatalogKey::dataset("gone", 1),
        CatalogKey::dataset("kept", 1),
    );
    catalog.put(dataset("gone", 1, 3, 1)).await.unwrap();
    catalog.delete(gone.clone()).await.unwrap();
    catalog.put(dataset("kept", 1, 3, 2)).await.unwrap();
    assert_eq!(saved(&store, &gone), Some(true));
    let now = crate::clock::wall_ms();
    // Not yet past the retention: nothing goes.
    assert_eq!(catalog.compact_at(now).await.unwrap(), 0);
    let later = now + crate::catalog::core::DEFAULT_RETENTION.as_millis() as u64 + 60_000;
    assert_eq!(catalog.compact_at(later).await.unwrap(), 1);
    assert!(catalog.get(gone.clone()).await.unwrap().is_none());
    assert!(catalog.get(kept.clone()).await.unwrap().is_some());
    assert_eq!(
        saved(&store, &gone),
        None,
        "the tombstone's row is deleted too"
    );
    assert_eq!(saved(&store, &kept), Some(true));
    // A restart does not bring it back.
    catalog.stop();
    let (again, _) = spawn(&store).await;
    assert!(again.get(gone).await.unwrap().is_none());
    assert_eq!(again.stats().await.unwrap().entries, 1);
}
