use flotilla_protocol::catalog::EvictionRecord;
use flotilla_protocol::jobs::JobStatus;
use flotilla_protocol::Hlc;
use proptest::prelude::*;

use super::*;
use crate::catalog::fixtures::{
    alias, dataset, deployment, job, node, replica, sealed, state, WALL,
};

// ---- Unit tests ----

/// Milliseconds of the default retention.
const RETENTION_MS: u64 = DEFAULT_RETENTION.as_millis() as u64;

#[test]
fn compaction_drops_old_tombstones_and_finished_jobs_and_refuses_them_back() {
    let t0 = 10 * WALL;
    let mut a = replica("a");
    let mut b = replica("b");
    let gone = CatalogKey::dataset("gone", 1);
    let kept = CatalogKey::dataset("kept", 1);
    let done = CatalogKey::job(&JobId::from("done"));
    let busy = CatalogKey::job(&JobId::from("busy"));
    let mut writes = Vec::new();
    for (key, write) in [
        (gone.clone(), Write::Put(dataset("gone", 1, 3, 1))),
        (gone.clone(), Write::Delete),
        (kept.clone(), Write::Put(dataset("kept", 1, 3, 2))),
        (
            done.clone(),
            Write::Job(job("done", 1, "a", JobStatus::Succeeded, t0)),
        ),
        (
            busy.clone(),
            Write::Job(job("busy", 1, "a", JobStatus::Running, t0)),
        ),
    ] {
        writes.push(a.apply_local_write(t0, key, write).unwrap());
    }
    for d in &writes {
        b.merge_remote(t0, d.clone());
    }
    assert_eq!(a.digest(), b.digest());

    // Within the retention nothing goes.
    assert!(a.compact(t0 + RETENTION_MS).is_empty());
    // Past it, the tombstone and the finished job go; live records and running jobs stay.
    let late = t0 + RETENTION_MS + 1;
    let mut removed = a.compact(late);
    removed.sort();
    let mut want = vec![gone.clone(), done.clone()];
    want.sort();
    assert_eq!(removed, want);
    assert_eq!(a.len(), 2);
    assert!(a.get(&kept).is_some() && a.get(&busy).is_some());
    // A peer that has not compacted yet offers them back: refused as expired, by gossip or by
    // anti-entropy, and the replica stays as it is.
    let report = a.merge_remote(late, Delta { entries: state(&b) });
    let mut refused: Vec<_> = report
        .rejected
        .iter()
        .map(|(k, r)| (k.clone(), r.reason()))
        .collect();
    refused.sort();
    assert_eq!(
        refused,
        vec![(gone.clone(), "expired"), (done.clone(), "expired")]
    );
    assert_eq!(a.len(), 2);
    let (merged, _) = a.complete_sync(late, b.answer_sync(&a.digest()));
    assert!(merged.applied.is_empty(), "{merged:?}");
    // Once the peer compacts as well, the two replicas are equal again.
    b.compact(late);
    assert_eq!(a.digest(), b.digest());
    assert_eq!(state(&a), state(&b));
    // A change log walk skips what was compacted.
    assert_eq!(a.delta_since(0).0.entries.len(), 2);
}

#[test]
fn a_retention_shorter_than_a_minute_is_refused_by_name() {
    let e = Config {
        retention: Duration::from_secs(5),
        ..Config::default()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().contains("retention"), "{e}");
}

#[test]
fn a_local_write_returns_its_delta_and_a_peer_converges_on_it() {
    let mut a = replica("a");
    let mut b = replica("b");
    let delta = a
        .apply_local_write(
            100,
            CatalogKey::dataset("d", 1),
            Write::Put(dataset("d", 1, 5, 1)),
        )
        .unwrap();
    assert_eq!(delta.entries.len(), 1);
    let report = b.merge_remote(100, delta.clone());
    assert_eq!(report.applied, vec![CatalogKey::dataset("d", 1)]);
    assert_eq!(
        b.record(&CatalogKey::dataset("d", 1)),
        Some(&dataset("d", 1, 5, 1))
    );
    // A duplicate delivery changes nothing.
    assert_eq!(b.merge_remote(100, delta).unchanged, 1);
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn a_delete_and_a_concurrent_write_converge_to_the_later() {
    let key = CatalogKey::alias("m", "prod");
    let mut a = replica("a");
    let mut b = replica("b");
    let base = a
        .apply_local_write(100, key.clone(), Write::Put(alias("prod", 1)))
        .unwrap();
    b.merge_remote(100, base);
    // Concurrently: a deletes at 200, b repoints at 201.
    let del = a
        .apply_local_write(200, key.clone(), Write::Delete)
        .unwrap();
    let put = b
        .apply_local_write(201, key.clone(), Write::Put(alias("prod", 2)))
        .unwrap();
    a.merge_remote(300, put);
    b.merge_remote(300, del);
    assert_eq!(state(&a), state(&b));
    assert_eq!(a.record(&key), Some(&alias("prod", 2)));
    // A later delete wins in turn, as a tombstone that still replicates.
    let del = a
        .apply_local_write(400, key.clone(), Write::Delete)
        .unwrap();
    b.merge_remote(400, del);
    assert!(b.get(&key).is_some_and(Entry::is_tombstone) && b.record(&key).is_none());
}

#[test]
fn a_local_write_beats_what_was_seen_even_when_the_local_clock_lags() {
    let key = CatalogKey::deployment("web");
    let mut a = replica("a");
    let mut b = replica("b");
    // b's clock is 30 s ahead of a's (within the skew bound).
    let ahead = b
        .apply_local_write(130_000, key.clone(), Write::Put(deployment(2)))
        .unwrap();
    a.merge_remote(100_000, ahead);
    a.apply_local_write(100_001, key.clone(), Write::Put(deployment(5)))
        .unwrap();
    assert_eq!(a.record(&key), Some(&deployment(5)));
}

#[test]
fn remote_entries_too_far_ahead_invalid_or_over_capacity_are_rejected() {
    let mut a = Catalog::new(
        Config {
            max_entries: 2,
            ..Config::default()
        },
        crate::catalog::Keys::from_seed("a"),
    );
    let far = sealed(
        "b",
        &CatalogKey::dataset("d", 1),
        Entry::write(
            Hlc {
                physical_ms: WALL + 61_000,
                logical: 0,
                node: node("b"),
            },
            dataset("d", 1, 1, 1),
        ),
    );
    let mut bad = dataset("e", 1, 1, 1);
    if let Record::Dataset(d) = &mut bad {
        d.shard_hashes[0] = "nope".into();
    }
    let ok = |n: &str| {
        let key = CatalogKey::dataset(n, 1);
        let entry = Entry::write(
            Hlc {
                physical_ms: WALL,
                logical: 0,
                node: node("b"),
            },
            dataset(n, 1, 1, 1),
        );
        (key.clone(), sealed("b", &key, entry))
    };
    let report = a.merge_remote(
        WALL,
        Delta {
            entries: vec![
                (CatalogKey::dataset("d", 1), far),
                (
                    CatalogKey::dataset("e", 1),
                    Entry::write(
                        Hlc {
                            physical_ms: WALL,
                            logical: 0,
                            node: node("b"),
                        },
                        bad,
                    ),
                ),
                ok("f"),
                ok("g"),
                ok("h"),
            ],
        },
    );
    assert_eq!(report.applied.len(), 2);
    let reasons: Vec<_> = report
        .rejected
        .iter()
        .map(|(k, r)| (k.name.as_str(), r))
        .collect();
    assert!(matches!(
        reasons[0],
        ("d", Rejection::Skew(HlcError::TooFarAhead { .. }))
    ));
    assert!(
        matches!(reasons[1], ("e", Rejection::Invalid(e)) if e.mentions("value.shard_hashes[0]"))
    );
    assert!(matches!(reasons[2], ("h", Rejection::Full)));
    let labels: Vec<_> = report.rejected.iter().map(|(_, r)| r.reason()).collect();
    assert_eq!(labels, ["clock_skew", "invalid", "full"]);
    assert_eq!(a.len(), 2);
}

#[test]
fn local_writes_are_checked() {
    let mut a = replica("a");
    let err = a
        .apply_local_write(
            1,
            CatalogKey::dataset("d", 2),
            Write::Put(dataset("d", 1, 1, 1)),
        )
        .unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    let err = a
        .apply_local_write(1, CatalogKey::job(&"j".into()), Write::Delete)
        .unwrap_err();
    assert!(matches!(err, Error::JobDelete(_)), "{err}");
    let err = a
        .apply_local_write(1, CatalogKey::dataset("d", 0), Write::Delete)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid { errors, .. } if errors.mentions("version")),
        "{err}"
    );
    assert!(a.is_empty());
}

#[test]
fn a_fenced_owner_cannot_write_the_head_but_status_only_moves_forward() {
    let mut a = replica("a");
    let key = CatalogKey::job(&"j".into());
    a.apply_local_write(
        10,
        key.clone(),
        Write::Job(job("j", 2, "b", JobStatus::Running, 10)),
    )
    .unwrap();
    let err = a
        .apply_local_write(
            20,
            key.clone(),
            Write::Job(job("j", 1, "a", JobStatus::Failed, 20)),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::StaleEpoch {
                wrote: 1,
                current: 2,
                ..
            }
        ),
        "{err}"
    );
    a.apply_local_write(
        30,
        key.clone(),
        Write::Job(job("j", 2, "b", JobStatus::Succeeded, 30)),
    )
    .unwrap();
    a.apply_local_write(
        40,
        key,
        Write::Job(job("j", 2, "b", JobStatus::Running, 40)),
    )
    .unwrap();
    // The status and its time come from the write that set the winning status.
    let j = a.job(&"j".into()).unwrap();
    assert_eq!(
        (j.status, j.updated_at_ms, j.owner.as_str()),
        (JobStatus::Succeeded, 30, "b")
    );
}

#[test]
fn delta_since_returns_each_changed_key_once_from_the_cursor() {
    let mut a = replica("a");
    a.apply_local_write(
        1,
        CatalogKey::dataset("x", 1),
        Write::Put(dataset("x", 1, 1, 1)),
    )
    .unwrap();
    let (d, cursor) = a.delta_since(0);
    assert_eq!(d.entries.len(), 1);
    a.apply_local_write(
        2,
        CatalogKey::dataset("y", 1),
        Write::Put(dataset("y", 1, 1, 1)),
    )
    .unwrap();
    a.apply_local_write(
        3,
        CatalogKey::dataset("x", 1),
        Write::Put(dataset("x", 1, 2, 1)),
    )
    .unwrap();
    let (d, next) = a.delta_since(cursor);
    let keys: Vec<_> = d.entries.iter().map(|(k, _)| k.name.as_str()).collect();
    assert_eq!(keys, ["y", "x"]);
    assert_eq!(next, a.seq());
    assert!(a.delta_since(next).0.entries.is_empty());
}

#[test]
fn config_validation_names_the_field() {
    assert!(Config::default().validate().is_ok());
    let e = Config {
        max_message_bytes: 10,
        ..Config::default()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().contains("max_message_bytes"), "{e}");
    let e = Config {
        max_entries: 0,
        ..Config::default()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().contains("max_entries"), "{e}");
}

// ---- Properties ----

fn hlc() -> impl Strategy<Value = Hlc> {
    (
        1u64..40,
        0u32..3,
        prop::sample::select(vec!["n1", "n2", "n3"]),
    )
        .prop_map(|(physical_ms, logical, n)| Hlc {
            physical_ms: WALL - 100 + physical_ms,
            logical,
            node: node(n),
        })
}

fn key() -> impl Strategy<Value = CatalogKey> {
    prop::sample::select(vec![
        CatalogKey::dataset("a", 1),
        CatalogKey::dataset("a", 2),
        CatalogKey::dataset("b", 1),
        CatalogKey::alias("m", "latest"),
        CatalogKey::alias("m", "prod"),
        CatalogKey::deployment("web"),
        CatalogKey::job(&"j1".into()),
        CatalogKey::job(&"j2".into()),
        CatalogKey::eviction(&"n9".into()),
    ])
}

fn status() -> impl Strategy<Value = JobStatus> {
    use JobStatus::*;
    prop::sample::select(vec![
        Pending, Placing, Running, Succeeded, Failed, Cancelled,
    ])
}

/// A valid entry for `key`; small value ranges so equal timestamps with different values occur.
fn entry_for(key: CatalogKey) -> BoxedStrategy<Entry> {
    match key.kind {
        RecordKind::Job => (
            hlc(),
            1u64..4,
            prop::sample::select(vec!["n1", "n2"]),
            status(),
            0u64..5,
        )
            .prop_map(move |(h, epoch, owner, s, updated)| {
                Entry::job(h, job(&key.name, epoch, owner, s, updated))
            })
            .boxed(),
        _ => (hlc(), any::<bool>(), 0u64..3, 1u8..3)
            .prop_map(move |(h, live, n, shard)| {
                // Evictions are never deleted: a tombstone for one is not a valid entry.
                if !live && key.kind != RecordKind::Eviction {
                    return Entry::tombstone(h);
                }
                let record = match key.kind {
                    RecordKind::Dataset => dataset(&key.name, key.version, n, shard),
                    RecordKind::Eviction => Record::Eviction(EvictionRecord {
                        node: key.name.as_str().into(),
                        evicted_by: h.node.clone(),
                        evicted_at_ms: n,
                    }),
                    RecordKind::ModelAlias => {
                        alias(key.name.split_once('/').map_or("x", |(_, a)| a), n + 1)
                    }
                    _ => deployment(n as u32 + 1),
                };
                Entry::write(h, record)
            })
            .boxed(),
    }
}

/// A valid entry for a key, sealed by whichever test node wrote each part.
fn keyed() -> impl Strategy<Value = (CatalogKey, Entry)> {
    key()
        .prop_flat_map(|k| (Just(k.clone()), entry_for(k)))
        .prop_map(|(k, mut e)| {
            for n in ["n1", "n2", "n3"] {
                crate::catalog::Keys::from_seed(n).seal(&k, &mut e);
            }
            (k, e)
        })
}

fn catalog() -> impl Strategy<Value = Catalog> {
    prop::collection::vec(keyed(), 0..20).prop_map(|items| {
        let mut c = replica("x");
        for (k, e) in items {
            c.merge(k, e);
        }
        c
    })
}

fn joined(a: &Catalog, b: &Catalog) -> Catalog {
    let mut c = a.clone();
    c.merge_catalog(b);
    c
}

proptest! {
    #[test]
    fn entry_merge_is_commutative_associative_idempotent(
        (a, b, c) in key().prop_flat_map(|k| (entry_for(k.clone()), entry_for(k.clone()), entry_for(k)))
    ) {
        let j = |x: &Entry, y: &Entry| { let mut z = x.clone(); z.merge(y.clone()); z };
        prop_assert_eq!(j(&a, &b), j(&b, &a));
        prop_assert_eq!(j(&j(&a, &b), &c), j(&a, &j(&b, &c)));
        prop_assert_eq!(j(&a, &a), a.clone());
        // `merge` reports a change exactly when there was one.
        let mut z = a.clone();
        prop_assert_eq!(z.merge(b.clone()), z != a);
    }

    #[test]
    fn catalog_merge_is_commutative_associative_idempotent(x in catalog(), y in catalog(), z in catalog()) {
        prop_assert_eq!(state(&joined(&x, &y)), state(&joined(&y, &x)));
        prop_assert_eq!(joined(&x, &y).digest(), joined(&y, &x).digest());
        prop_assert_eq!(state(&joined(&joined(&x, &y), &z)), state(&joined(&x, &joined(&y, &z))));
        prop_assert_eq!(state(&joined(&x, &x)), state(&x));
    }

    #[test]
    fn any_delivery_order_with_duplicates_converges(
        (deltas, shuffled) in prop::collection::vec(keyed(), 1..30)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut ordered = replica("r1");
        for (k, e) in deltas.clone() {
            ordered.merge_remote(WALL, Delta { entries: vec![(k, e)] });
        }
        let mut other = replica("r2");
        let mut delivery = shuffled.clone();
        for d in &dups {
            delivery.push(d.get(&shuffled).clone());
        }
        for (k, e) in delivery {
            let report = other.merge_remote(WALL, Delta { entries: vec![(k, e)] });
            prop_assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        }
        prop_assert_eq!(state(&ordered), state(&other));
        prop_assert_eq!(ordered.digest(), other.digest());
    }

    #[test]
    fn entries_of_a_kind_are_exactly_that_kind_in_key_order(c in catalog()) {
        for kind in [
            RecordKind::Dataset,
            RecordKind::Model,
            RecordKind::ModelAlias,
            RecordKind::Deployment,
            RecordKind::Job,
            RecordKind::Eviction,
        ] {
            let ranged: Vec<_> = c.entries_of(kind).collect();
            let filtered: Vec<_> = c.entries().filter(|(k, _)| k.kind == kind).collect();
            prop_assert_eq!(ranged, filtered);
        }
    }

    #[test]
    fn one_anti_entropy_round_each_way_makes_replicas_equal(a in catalog(), b in catalog()) {
        let expected = joined(&a, &b);
        let (mut a, mut b) = (a, b);
        let reply = b.answer_sync(&a.digest());
        let (report, pushes) = a.complete_sync(WALL, reply);
        prop_assert!(report.rejected.is_empty());
        for d in pushes {
            b.merge_remote(WALL, d);
        }
        prop_assert_eq!(state(&a), state(&expected));
        prop_assert_eq!(state(&b), state(&expected));
        prop_assert_eq!(a.digest(), b.digest());
        prop_assert!(Catalog::diff(&a.digest(), &b.digest()).is_empty());
    }

    #[test]
    fn small_message_budgets_still_converge_over_alternating_rounds(a in catalog(), b in catalog()) {
        let expected = joined(&a, &b);
        let small = Config { max_message_bytes: 600, ..Config::default() };
        let (mut a, mut b) = (a, b);
        a.config = small.clone();
        b.config = small;
        for round in 0..64 {
            if Catalog::diff(&a.digest(), &b.digest()).is_empty() {
                break;
            }
            let (x, y) = if round % 2 == 0 { (&mut a, &mut b) } else { (&mut b, &mut a) };
            let reply = y.answer_sync(&x.digest());
            prop_assert!(encoded_len(&reply).unwrap() <= 600 + 64);
            let (_, pushes) = x.complete_sync(WALL, reply);
            for d in pushes {
                y.merge_remote(WALL, d);
            }
        }
        prop_assert_eq!(state(&a), state(&expected));
        prop_assert_eq!(state(&b), state(&expected));
    }
}
