//! The `DataShard` actor over an in-memory store: verified writes and reads, chunked storage
//! and uploads, a corrupt shard refused, listing, range reads and deletion of a version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_actors::data::error::Error;
use flotilla_actors::data::record::Record;
use flotilla_actors::data::shard::{self, encode_body, meta_of, Handle};
use flotilla_actors::store::Column;
use flotilla_actors::testing::CrashStore;
use flotilla_protocol::services::data::{ShardId, ShardMeta};

fn records(n: u64, from: u64) -> Vec<Record> {
    (from..from + n)
        .map(|i| Record::labelled(i, format!("query number {i} about my card"), "card"))
        .collect()
}

fn built(id: ShardId, rs: &[Record]) -> (ShardMeta, Vec<u8>) {
    let body = encode_body(rs);
    (meta_of(id, &body, rs.len() as u64), body)
}

async fn holder(chunk_bytes: usize) -> (Arc<CrashStore>, Handle) {
    let store = Arc::new(CrashStore::new());
    let config = shard::Config {
        chunk_bytes,
        max_pending_uploads: 2,
        ..shard::Config::default()
    };
    let (h, _) = Handle::spawn(store.clone(), config).await.unwrap();
    (store, h)
}

#[tokio::test]
async fn shards_are_stored_in_chunks_and_read_back_verified() {
    let (store, h) = holder(256).await;
    let rs = records(40, 100);
    let id = ShardId::new("bank", 1, 0);
    let (meta, body) = built(id.clone(), &rs);
    assert!(meta.bytes > 256 * 4, "the shard must span several chunks");
    h.put(meta.clone(), body.clone()).await.unwrap();
    // Stored as one meta row and ceil(bytes / 256) chunk rows.
    let rows = store.rows(Column::Shards);
    assert_eq!(rows.len() as u32, 1 + meta.chunks(256));
    assert_eq!(h.records(id.clone()).await.unwrap(), rs);
    let (page, total) = h.read_range(id.clone(), 35, 10).await.unwrap();
    assert_eq!((page, total), (rs[35..].to_vec(), 40));
    assert!(h.read_range(id.clone(), 40, 10).await.unwrap().0.is_empty());
    let e = h
        .read_range(id.clone(), 41, 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("past the end"), "{e}");
    // Chunks on the wire reassemble to the body.
    let (m, n, first) = h.get_chunk(id.clone(), 0, 1000).await.unwrap();
    assert_eq!((m, n), (meta.clone(), meta.chunks(1000)));
    let mut again = first;
    for c in 1..n {
        again.extend(h.get_chunk(id.clone(), c, 1000).await.unwrap().2);
    }
    assert_eq!(again, body);
    // Writing the same shard again is a no-op; a missing shard is named.
    h.put(meta, body).await.unwrap();
    let e = h.records(ShardId::new("bank", 1, 9)).await.unwrap_err();
    assert!(
        matches!(e, Error::ShardNotFound(ref s) if s.index == 9),
        "{e}"
    );
}

#[tokio::test]
async fn a_body_that_does_not_match_its_hash_is_refused_on_write_and_on_read() {
    let (store, h) = holder(128).await;
    let rs = records(10, 0);
    let id = ShardId::new("bank", 1, 3);
    let (meta, body) = built(id.clone(), &rs);
    let mut bad = body.clone();
    bad[20] ^= 1;
    let e = h.put(meta.clone(), bad).await.unwrap_err();
    assert!(matches!(e, Error::HashMismatch { .. }), "{e}");
    assert!(h.list(None).await.unwrap().is_empty());

    h.put(meta.clone(), body).await.unwrap();
    // Flip one byte of one stored chunk behind the actor's back (a bad disk).
    let (key, mut chunk) = store
        .rows(Column::Shards)
        .into_iter()
        .find(|(k, _)| k.starts_with(b"c/"))
        .unwrap();
    chunk[5] ^= 0x40;
    store.poke(Column::Shards, &key, chunk);
    let e = h.records(id.clone()).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::HashMismatch { .. }), "{msg}");
    assert!(
        msg.contains("bank@1#3") && msg.contains("corrupt") && msg.contains(&meta.hash),
        "{msg}"
    );
    assert!(h.get_chunk(id.clone(), 0, 64).await.is_err());
    // Putting the good body again repairs the copy (a re-copy from a healthy replica).
    h.put(meta, encode_body(&rs)).await.unwrap();
    assert_eq!(h.records(id).await.unwrap(), rs);
}

#[tokio::test]
async fn chunked_uploads_are_ordered_bounded_and_verified() {
    let (_, h) = holder(1 << 20).await;
    let rs = records(30, 0);
    let id = ShardId::new("bank", 2, 0);
    let (meta, body) = built(id.clone(), &rs);
    let parts: Vec<&[u8]> = body.chunks(300).collect();
    let n = parts.len() as u32;
    for (i, p) in parts.iter().enumerate() {
        let done = h
            .put_chunk(meta.clone(), i as u32, n, p.to_vec())
            .await
            .unwrap();
        assert_eq!(done, i as u32 + 1 == n);
    }
    assert_eq!(h.records(id.clone()).await.unwrap(), rs);

    // Out of sequence: refused and the upload dropped.
    let id2 = ShardId::new("bank", 2, 1);
    let (m2, b2) = built(id2.clone(), &records(30, 30));
    h.put_chunk(m2.clone(), 0, 3, b2[..100].to_vec())
        .await
        .unwrap();
    let e = h
        .put_chunk(m2.clone(), 2, 3, b2[200..].to_vec())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("out of sequence"), "{e}");
    let e = h
        .put_chunk(m2.clone(), 1, 3, b2[100..200].to_vec())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("before chunk 0"), "{e}");
    // A corrupted chunk fails the final hash check.
    let mut b2bad = b2.clone();
    b2bad[150] ^= 1;
    h.put_chunk(m2.clone(), 0, 2, b2bad[..100].to_vec())
        .await
        .unwrap();
    let e = h
        .put_chunk(m2.clone(), 1, 2, b2bad[100..].to_vec())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::HashMismatch { .. }), "{e}");
    // At most two uploads in progress: a third is refused until one finishes.
    for i in 10..12 {
        let (m, b) = built(ShardId::new("bank", 2, i), &records(5, 0));
        h.put_chunk(m, 0, 2, b[..10].to_vec()).await.unwrap();
    }
    let (m, b) = built(ShardId::new("bank", 2, 12), &records(5, 0));
    let e = h.put_chunk(m, 0, 2, b[..10].to_vec()).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
}

#[tokio::test]
async fn listing_and_deleting_a_version() {
    let (store, h) = holder(64).await;
    for (ds, v, i) in [
        ("bank", 1, 0),
        ("bank", 1, 1),
        ("bank", 2, 0),
        ("banks", 1, 0),
    ] {
        let (m, b) = built(ShardId::new(ds, v, i), &records(8, i as u64 * 8));
        h.put(m, b).await.unwrap();
    }
    let names = |l: Vec<ShardMeta>| l.into_iter().map(|m| m.id.to_string()).collect::<Vec<_>>();
    assert_eq!(
        names(h.list(Some("bank".into())).await.unwrap()),
        vec!["bank@1#0", "bank@1#1", "bank@2#0"]
    );
    assert_eq!(h.list(None).await.unwrap().len(), 4);
    assert_eq!(h.delete_version("bank".into(), 1).await.unwrap(), 2);
    assert_eq!(h.delete_version("bank".into(), 1).await.unwrap(), 0);
    assert_eq!(
        names(h.list(None).await.unwrap()),
        vec!["bank@2#0", "banks@1#0"]
    );
    // No chunk rows of the deleted version are left behind.
    let left = store.rows(Column::Shards).len();
    let expect: u32 = h
        .list(None)
        .await
        .unwrap()
        .iter()
        .map(|m| m.chunks(64) + 1)
        .sum();
    assert_eq!(left as u32, expect);
    assert!(h.delete_shard(ShardId::new("bank", 2, 0)).await.unwrap());
    assert!(!h.delete_shard(ShardId::new("bank", 2, 0)).await.unwrap());
}

/// One step of the crash test's script.
enum Step {
    Put(ShardId, Vec<Record>),
    Delete(ShardId),
    DeleteVersion(&'static str, u64),
}

impl Step {
    /// The shards it touches, with what each holds once it is done.
    fn effect(&self, universe: &[ShardId]) -> Vec<(ShardId, Option<Vec<Record>>)> {
        match self {
            Step::Put(id, rs) => vec![(id.clone(), Some(rs.clone()))],
            Step::Delete(id) => vec![(id.clone(), None)],
            Step::DeleteVersion(d, v) => universe
                .iter()
                .filter(|id| id.dataset == *d && id.version == *v)
                .map(|id| (id.clone(), None))
                .collect(),
        }
    }
}

#[tokio::test]
async fn a_crash_at_any_write_leaves_each_shard_whole_or_absent() {
    let a = ShardId::new("bank", 1, 0);
    let b = ShardId::new("bank", 1, 1);
    let c = ShardId::new("bank", 2, 0);
    let universe = [a.clone(), b.clone(), c.clone()];
    let script = vec![
        Step::Put(a.clone(), records(12, 0)),
        Step::Put(b.clone(), records(6, 100)),
        // The same shard again (a retried put), then other contents under its id (more
        // chunks are dropped first).
        Step::Put(a.clone(), records(12, 0)),
        Step::Put(a.clone(), records(4, 200)),
        Step::Delete(b.clone()),
        Step::Put(c.clone(), records(5, 300)),
        Step::Put(b.clone(), records(3, 400)),
        Step::DeleteVersion("bank", 1),
    ];
    let config = shard::Config {
        chunk_bytes: 96,
        ..shard::Config::default()
    };
    // Runs the script through the actor until a call fails: what each answered call left, and
    // the step in flight when the process died.
    let run = |store: Arc<CrashStore>| {
        let config = config.clone();
        let script = &script;
        let universe = &universe;
        async move {
            let (h, _) = Handle::spawn(store, config).await.unwrap();
            let mut acked: BTreeMap<ShardId, Option<Vec<Record>>> = BTreeMap::new();
            let mut in_flight = None;
            for step in script {
                let answer = match step {
                    Step::Put(id, rs) => {
                        let (meta, body) = built(id.clone(), rs);
                        h.put(meta, body).await
                    }
                    Step::Delete(id) => h.delete_shard(id.clone()).await.map(|_| ()),
                    Step::DeleteVersion(d, v) => {
                        h.delete_version(d.to_string(), *v).await.map(|_| ())
                    }
                };
                match answer {
                    Ok(()) => acked.extend(step.effect(universe)),
                    Err(_) => {
                        in_flight = Some(step.effect(universe));
                        break;
                    }
                }
            }
            h.stop();
            (acked, in_flight)
        }
    };
    let clean = Arc::new(CrashStore::new());
    let (acked, in_flight) = run(clean.clone()).await;
    assert!(in_flight.is_none());
    // The last step deleted version 1 (a and b); version 2's shard stays.
    assert_eq!(acked[&a], None);
    assert_eq!(acked[&b], None);
    assert_eq!(acked[&c], Some(records(5, 300)));
    let writes = clean.writes();
    assert!(
        writes > 20,
        "{writes} writes: the shards must span several chunks"
    );

    for k in 0..=writes {
        let store = Arc::new(CrashStore::dying_after(k));
        let (acked, in_flight) = run(store.clone()).await;
        assert_eq!(in_flight.is_some(), k < writes, "crash after write {k}");
        for (n, image) in store.crash_images().into_iter().enumerate() {
            let at = format!("crash after write {k} of {writes}, keeping {n} unsynced");
            let (h, _) = Handle::spawn(Arc::new(image), config.clone())
                .await
                .unwrap();
            for id in &universe {
                // Whole (read back verified) or absent, never half there.
                let held = match h.records(id.clone()).await {
                    Ok(rs) => Some(rs),
                    Err(Error::ShardNotFound(_)) => None,
                    Err(e) => panic!("{at}: shard {id} is half there: {e}"),
                };
                // An answered put or delete holds; the call in flight may or may not have
                // happened (a rewrite may also leave the shard absent: its old copy is dropped
                // before the new one is written).
                let mut allowed = vec![acked.get(id).cloned().flatten()];
                if let Some(touched) = in_flight.iter().flatten().find(|(t, _)| t == id) {
                    allowed.push(touched.1.clone());
                    allowed.push(None);
                }
                assert!(
                    allowed.contains(&held),
                    "{at}: shard {id} holds {:?} records, acknowledged {:?}",
                    held.as_ref().map(Vec::len),
                    acked.get(id).map(|r| r.as_ref().map(Vec::len))
                );
            }
            assert!(h.list(None).await.is_ok(), "{at}");
            h.stop();
        }
    }
}
