use flotilla_protocol::catalog::CatalogKey;
use flotilla_protocol::jobs::JobStatus;

use super::*;
use crate::catalog::core::Write;
use crate::catalog::fixtures::{dataset, job, replica, state};
use crate::store::{Column, Durability, Store};
use crate::testing::CrashStore;

#[test]
fn a_saved_replica_loads_back_equal_and_its_clock_stays_ahead() {
    let store = CrashStore::new();
    let mut a = replica("a");
    a.apply_local_write(
        5_000,
        CatalogKey::dataset("d", 1),
        Write::Put(dataset("d", 1, 3, 1)),
    )
    .unwrap();
    a.apply_local_write(5_001, CatalogKey::alias("m", "latest"), Write::Delete)
        .unwrap();
    a.apply_local_write(
        5_002,
        CatalogKey::job(&"j".into()),
        Write::Job(job("j", 1, "a", JobStatus::Running, 5)),
    )
    .unwrap();
    a.save_to(&store, Durability::Sync).unwrap();
    // A row of another column and a corrupt catalog row.
    store
        .put(Column::Jobs, b"x", b"y", Durability::Sync)
        .unwrap();
    store
        .put(
            Column::Catalog,
            &CatalogKey::dataset("z", 1).store_key(),
            b"\xff\xff",
            Durability::Sync,
        )
        .unwrap();

    // Restarted with a wall clock that went back: the write must still beat the stored entry.
    let (mut b, report) = Catalog::load_from(
        Config::default(),
        crate::catalog::Keys::from_seed("a"),
        &store,
        10,
    )
    .unwrap();
    assert_eq!(report.loaded, 3);
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert!(
        report.skipped[0].contains("dataset/z@1"),
        "{:?}",
        report.skipped
    );
    assert_eq!(state(&a), state(&b));
    assert_eq!(a.digest(), b.digest());
    b.apply_local_write(
        10,
        CatalogKey::dataset("d", 1),
        Write::Put(dataset("d", 1, 9, 1)),
    )
    .unwrap();
    assert_eq!(
        b.record(&CatalogKey::dataset("d", 1)),
        Some(&dataset("d", 1, 9, 1))
    );
}

#[test]
fn loading_more_rows_than_the_bound_is_an_error() {
    let store = CrashStore::new();
    let mut a = replica("a");
    for n in ["p", "q", "r"] {
        a.apply_local_write(
            1,
            CatalogKey::dataset(n, 1),
            Write::Put(dataset(n, 1, 1, 1)),
        )
        .unwrap();
    }
    a.save_to(&store, Durability::Buffered).unwrap();
    let err = Catalog::load_from(
        Config {
            max_entries: 2,
            ..Config::default()
        },
        crate::catalog::Keys::from_seed("a"),
        &store,
        1,
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_entries"), "{err}");
}
