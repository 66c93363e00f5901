//! The behaviour every [`Store`] must have, as one suite that runs against each
//! implementation: the in-memory [`CrashStore`](crate::testing::CrashStore) (in this crate's
//! tests) and the node's rocksdb store (in the node's tests). A store that passes behaves, as
//! far as the actors can tell, like any other.
//!
//! Each check panics with what differed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::store::{Column, Durability, Store};

/// Runs every check that needs only an empty store.
pub fn check_all(store: &dyn Store) {
    reads_what_was_written(store);
    scans_by_prefix_in_key_order_up_to_the_limit(store);
    deletes_remove_and_tolerate_absent_keys(store);
    flush_keeps_everything_readable(store);
    // Last: it writes one key into every column, which the checks above would see.
    columns_are_separate_keyspaces(store);
}

fn reads_what_was_written(s: &dyn Store) {
    let c = Column::Meta;
    assert_eq!(
        s.get(c, b"absent").unwrap(),
        None,
        "an unwritten key reads as absent"
    );
    s.put(c, b"k", b"one", Durability::Sync).unwrap();
    assert_eq!(s.get(c, b"k").unwrap().as_deref(), Some(&b"one"[..]));
    s.put(c, b"k", b"two", Durability::Buffered).unwrap();
    assert_eq!(
        s.get(c, b"k").unwrap().as_deref(),
        Some(&b"two"[..]),
        "a buffered write is read back at once, and the last write wins"
    );
    s.put(c, b"empty", b"", Durability::Sync).unwrap();
    assert_eq!(
        s.get(c, b"empty").unwrap().as_deref(),
        Some(&b""[..]),
        "an empty value is present, not absent"
    );
    let big = vec![7u8; 1 << 20];
    s.put(c, b"big", &big, Durability::Buffered).unwrap();
    assert_eq!(
        s.get(c, b"big").unwrap().as_deref(),
        Some(&big[..]),
        "a 1 MiB value"
    );
}

fn columns_are_separate_keyspaces(s: &dyn Store) {
    for (i, c) in Column::ALL.iter().enumerate() {
        s.put(*c, b"shared-key", &[i as u8], Durability::Sync)
            .unwrap();
    }
    for (i, c) in Column::ALL.iter().enumerate() {
        assert_eq!(
            s.get(*c, b"shared-key").unwrap(),
            Some(vec![i as u8]),
            "column {} sees another column's value",
            c.name()
        );
    }
    s.delete(Column::Jobs, b"shared-key", Durability::Sync)
        .unwrap();
    assert_eq!(s.get(Column::Jobs, b"shared-key").unwrap(), None);
    assert_eq!(
        s.get(Column::Catalog, b"shared-key").unwrap(),
        Some(vec![Column::ALL
            .iter()
            .position(|c| *c == Column::Catalog)
            .unwrap() as u8]),
        "a delete in one column removed another column's key"
    );
}

fn scans_by_prefix_in_key_order_up_to_the_limit(s: &dyn Store) {
    let c = Column::Shards;
    // Written out of order, with neighbours just before and just after the prefix.
    for k in [&b"p/3"[..], b"p/1", b"p0", b"p/2", b"o/9", b"p/\xff", b"p"] {
        s.put(c, k, k, Durability::Buffered).unwrap();
    }
    let keys = |rows: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<Vec<u8>> {
        rows.into_iter()
            .map(|(k, v)| {
                assert_eq!(k, v, "a scan paired a key with another key's value");
                k
            })
            .collect()
    };
    let want: Vec<Vec<u8>> = [&b"p/1"[..], b"p/2", b"p/3", b"p/\xff"]
        .iter()
        .map(|k| k.to_vec())
        .collect();
    assert_eq!(
        keys(s.scan_prefix(c, b"p/", 100).unwrap()),
        want,
        "prefix p/"
    );
    assert_eq!(
        keys(s.scan_prefix(c, b"p/", 2).unwrap()),
        want[..2].to_vec(),
        "the limit keeps the first keys in order"
    );
    assert!(s.scan_prefix(c, b"p/", 0).unwrap().is_empty(), "limit 0");
    assert!(
        s.scan_prefix(c, b"q", 100).unwrap().is_empty(),
        "no key has prefix q"
    );
    assert_eq!(
        keys(s.scan_prefix(c, b"", 100).unwrap()).len(),
        7,
        "the empty prefix"
    );
    assert!(
        s.scan_prefix(Column::Models, b"p/", 100)
            .unwrap()
            .is_empty(),
        "a scan sees only its own column"
    );
}

fn deletes_remove_and_tolerate_absent_keys(s: &dyn Store) {
    let c = Column::Checkpoints;
    s.put(c, b"d/1", b"x", Durability::Sync).unwrap();
    s.put(c, b"d/2", b"y", Durability::Buffered).unwrap();
    s.delete(c, b"d/1", Durability::Buffered).unwrap();
    assert_eq!(s.get(c, b"d/1").unwrap(), None);
    assert_eq!(
        s.scan_prefix(c, b"d/", 10).unwrap().len(),
        1,
        "a deleted key is not scanned"
    );
    s.delete(c, b"never-written", Durability::Sync)
        .expect("deleting an absent key is not an error");
    s.put(c, b"d/1", b"again", Durability::Sync).unwrap();
    assert_eq!(
        s.get(c, b"d/1").unwrap().as_deref(),
        Some(&b"again"[..]),
        "rewritten after a delete"
    );
}

fn flush_keeps_everything_readable(s: &dyn Store) {
    let c = Column::Metrics;
    s.put(c, b"f", b"before", Durability::Buffered).unwrap();
    s.flush().unwrap();
    assert_eq!(s.get(c, b"f").unwrap().as_deref(), Some(&b"before"[..]));
}

/// Acknowledged (`Sync`) writes and deletes survive closing and reopening the store: `reopen`
/// takes the store, closes it as a process exit would, and opens it again.
pub fn check_sync_writes_survive_reopen<S: Store>(store: S, reopen: impl FnOnce(S) -> S) {
    let c = Column::Catalog;
    store.put(c, b"kept", b"v1", Durability::Sync).unwrap();
    store.put(c, b"gone", b"v", Durability::Sync).unwrap();
    store.delete(c, b"gone", Durability::Sync).unwrap();
    store.put(c, b"kept", b"v2", Durability::Sync).unwrap();
    let store = reopen(store);
    assert_eq!(
        store.get(c, b"kept").unwrap().as_deref(),
        Some(&b"v2"[..]),
        "an acknowledged write was lost"
    );
    assert_eq!(
        store.get(c, b"gone").unwrap(),
        None,
        "an acknowledged delete was lost"
    );
}
