use super::CrashStore;
use crate::store::{Column, Durability, Store};

const B: Durability = Durability::Buffered;
const S: Durability = Durability::Sync;

fn get(s: &CrashStore, key: &[u8]) -> Option<Vec<u8>> {
    s.get(Column::Meta, key).unwrap()
}

#[test]
fn reads_see_every_write_and_a_crash_keeps_only_synced_ones() {
    let s = CrashStore::new();
    s.put(Column::Meta, b"a", b"1", B).unwrap();
    assert_eq!(get(&s, b"a"), Some(b"1".to_vec()));
    assert!(!s.is_durable(Column::Meta, b"a"));
    assert_eq!(get(&s.crash(), b"a"), None, "an unsynced write is lost");

    // A synced write makes itself and every earlier write durable.
    s.put(Column::Jobs, b"b", b"2", S).unwrap();
    assert!(s.is_durable(Column::Meta, b"a"));
    let c = s.crash();
    assert_eq!(get(&c, b"a"), Some(b"1".to_vec()));
    assert_eq!(c.get(Column::Jobs, b"b").unwrap(), Some(b"2".to_vec()));

    // A buffered overwrite after it is lost: the synced value comes back.
    s.put(Column::Meta, b"a", b"3", B).unwrap();
    assert_eq!(get(&s, b"a"), Some(b"3".to_vec()));
    assert_eq!(get(&s.crash(), b"a"), Some(b"1".to_vec()));
    assert_eq!(s.writes(), 3);
    assert_eq!(s.unsynced(), 1);
}

#[test]
fn deletes_follow_the_same_rule() {
    let s = CrashStore::new();
    s.put(Column::Meta, b"a", b"1", S).unwrap();
    s.delete(Column::Meta, b"a", B).unwrap();
    assert_eq!(get(&s, b"a"), None);
    assert!(!s.is_durable(Column::Meta, b"a"));
    assert_eq!(
        get(&s.crash(), b"a"),
        Some(b"1".to_vec()),
        "unsynced delete"
    );
    s.delete(Column::Meta, b"zz", S).unwrap();
    assert_eq!(get(&s.crash(), b"a"), None, "made durable by a later sync");
    // A synced delete of a buffered put: neither is seen after a crash.
    s.put(Column::Meta, b"c", b"1", B).unwrap();
    s.delete(Column::Meta, b"c", S).unwrap();
    assert_eq!(get(&s.crash(), b"c"), None);
}

#[test]
fn flush_syncs_everything_before_it() {
    let s = CrashStore::new();
    s.put(Column::Meta, b"a", b"1", B).unwrap();
    s.delete(Column::Meta, b"a", B).unwrap();
    s.put(Column::Meta, b"b", b"2", B).unwrap();
    s.flush().unwrap();
    let c = s.crash();
    assert_eq!(get(&c, b"a"), None);
    assert_eq!(get(&c, b"b"), Some(b"2".to_vec()));
    assert_eq!(s.unsynced(), 0);
    assert_eq!(s.writes(), 4, "a flush counts as a write");
}

#[test]
fn crash_images_are_the_prefixes_of_the_unsynced_writes() {
    let s = CrashStore::new();
    s.put(Column::Meta, b"a", b"0", S).unwrap();
    s.put(Column::Meta, b"a", b"1", B).unwrap();
    s.put(Column::Meta, b"b", b"1", B).unwrap();
    s.delete(Column::Meta, b"a", B).unwrap();
    /// What one image holds under `a` and under `b`.
    type Pair = (Option<Vec<u8>>, Option<Vec<u8>>);
    let seen: Vec<Pair> = s
        .crash_images()
        .iter()
        .map(|c| (get(c, b"a"), get(c, b"b")))
        .collect();
    let v = |x: &[u8]| Some(x.to_vec());
    assert_eq!(
        seen,
        vec![
            (v(b"0"), None),
            (v(b"1"), None),
            (v(b"1"), v(b"1")),
            (None, v(b"1")),
        ]
    );
    // The last image is what reads see.
    assert_eq!(
        s.crash_keeping(usize::MAX).rows(Column::Meta),
        s.rows(Column::Meta)
    );
}

#[test]
fn a_crashed_store_restarts_with_every_row_durable() {
    let s = CrashStore::new();
    s.put(Column::Meta, b"a", b"1", S).unwrap();
    s.put(Column::Meta, b"b", b"1", B).unwrap();
    let c = s.crash();
    assert_eq!(c.writes(), 0);
    assert_eq!(c.unsynced(), 0);
    assert!(c.is_durable(Column::Meta, b"a"));
    // A second crash of the restarted store loses nothing more.
    assert_eq!(c.crash().rows(Column::Meta), c.rows(Column::Meta));
    // The original is untouched by crashing it.
    assert_eq!(get(&s, b"b"), Some(b"1".to_vec()));
}

#[test]
fn a_dying_process_writes_nothing_after_its_last_write() {
    let s = CrashStore::dying_after(2);
    s.put(Column::Meta, b"a", b"1", B).unwrap();
    s.put(Column::Meta, b"b", b"1", S).unwrap();
    assert!(!s.died());
    let e = s.put(Column::Meta, b"c", b"1", S).unwrap_err();
    assert!(e.to_string().contains("crashed"), "{e}");
    assert!(s.delete(Column::Meta, b"a", S).is_err());
    assert!(s.flush().is_err());
    assert!(s.died());
    assert_eq!(s.writes(), 2);
    assert_eq!(get(&s, b"c"), None);
    assert_eq!(get(&s, b"a"), Some(b"1".to_vec()));
    let c = s.crash();
    assert_eq!(c.rows(Column::Meta).len(), 2);
    c.put(Column::Meta, b"c", b"1", B).unwrap();

    // Dying later on a running store.
    let s = CrashStore::new();
    s.put(Column::Meta, b"a", b"1", B).unwrap();
    s.die_after(0);
    assert!(s.put(Column::Meta, b"b", b"1", B).is_err());
}

#[test]
fn scans_and_columns() {
    let s = CrashStore::new();
    for k in [&b"k2"[..], b"k1", b"j", b"k3"] {
        s.put(Column::Catalog, k, b"v", B).unwrap();
    }
    s.put(Column::Jobs, b"k0", b"other", B).unwrap();
    s.put(Column::Meta, b"k9", b"other", B).unwrap();
    let keys = |limit| -> Vec<Vec<u8>> {
        s.scan_prefix(Column::Catalog, b"k", limit)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(
        keys(10),
        vec![b"k1".to_vec(), b"k2".to_vec(), b"k3".to_vec()]
    );
    assert_eq!(keys(2).len(), 2);
    assert_eq!(s.scan_prefix(Column::Catalog, b"", 10).unwrap().len(), 4);
    assert_eq!(
        s.rows(Column::Jobs),
        vec![(b"k0".to_vec(), b"other".to_vec())]
    );
    // A poke is what the disk holds, at once.
    s.poke(Column::Jobs, b"k0", b"bad".to_vec());
    assert_eq!(s.crash().rows(Column::Jobs)[0].1, b"bad");
}

#[test]
fn passes_the_store_conformance_suite() {
    crate::store_conformance::check_all(&CrashStore::new());
    crate::store_conformance::check_sync_writes_survive_reopen(CrashStore::new(), |s| s.crash());
}
