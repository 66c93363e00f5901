//! Property tests of the data cores: CSV export and parse round-trip any text; the reader
//! covers every record once for any shard layout and reader count; exact and near dedup give
//! the same result for any split of the records into shards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use flotilla_actors::data::ingest::{parse_all, write_csv, Format, Options};
use flotilla_actors::data::ops::dedup::{exact_dedup, near_dedup, NearParams};
use flotilla_actors::data::reader::Reader;
use flotilla_actors::data::record::{Record, LABEL, TEXT};
use proptest::prelude::*;

/// Splits records into shards by the given assignment (index modulo shard count).
fn split(records: &[Record], assign: &[usize], n: usize) -> Vec<Vec<Record>> {
    let mut shards = vec![Vec::new(); n];
    for (r, a) in records.iter().zip(assign.iter().cycle()) {
        shards[a % n].push(r.clone());
    }
    shards
}

fn words() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "card", "top", "up", "my", "why", "refund", "PIN", "fee", "atm",
        ]),
        1..8,
    )
    .prop_map(|w| w.join(" "))
}

proptest! {
    #[test]
    fn csv_round_trips_any_text(
        rows in prop::collection::vec(("[^\r]{0,40}", "[a-z_,\"\n ]{0,12}"), 0..30),
    ) {
        // A record whose only field is empty cannot be told from a blank line, so texts are
        // given a first character; everything else (quotes, commas, newlines) is arbitrary.
        let records: Vec<Record> = rows
            .iter()
            .enumerate()
            .map(|(i, (t, l))| Record::labelled(i as u64, format!("x{t}"), l.clone()))
            .collect();
        let mut out = Vec::new();
        write_csv(&records, &mut out, true).unwrap();
        let mut o = Options::new(Format::Csv);
        o.label_field = Some(LABEL.into());
        let (back, rep) = parse_all(&out[..], o).unwrap();
        prop_assert_eq!(rep.malformed, 0);
        prop_assert_eq!(back, records);
    }

    #[test]
    fn reader_covers_every_record_once(
        lens in prop::collection::vec(0u64..30, 0..12),
        k in 1u64..6,
        seed in any::<u64>(),
    ) {
        let mut seen = BTreeSet::new();
        for me in 0..k {
            for r in Reader::new(lens.clone(), seed, k, me).unwrap() {
                prop_assert!(seen.insert(r));
            }
        }
        prop_assert_eq!(seen.len() as u64, lens.iter().sum::<u64>());
    }

    #[test]
    fn dedup_does_not_depend_on_sharding(
        texts in prop::collection::vec(words(), 1..60),
        assign in prop::collection::vec(0usize..16, 1..60),
        n in 2usize..8,
    ) {
        let records: Vec<Record> = texts.iter().enumerate().map(|(i, t)| Record::text(i as u64 * 3, t.clone())).collect();
        let ids = |s: &[Vec<Record>]| s.iter().flatten().map(|r| r.id).collect::<BTreeSet<_>>();
        let (one, r1) = exact_dedup(vec![records.clone()], TEXT).unwrap();
        let (many, rn) = exact_dedup(split(&records, &assign, n), TEXT).unwrap();
        prop_assert_eq!(r1, rn);
        prop_assert_eq!(ids(&one), ids(&many));
        let p = NearParams { threshold: 0.5, ..NearParams::default() };
        let (one, r1) = near_dedup(vec![records.clone()], &p).unwrap();
        let (many, rn) = near_dedup(split(&records, &assign, n), &p).unwrap();
        prop_assert_eq!(r1, rn);
        prop_assert_eq!(ids(&one), ids(&many));
    }
}

const OPS: &str = r#"[{"op":"normalize","field":"text"},{"op":"filter","min_chars":3,"max_chars":200},{"op":"dedup_near","threshold":0.8}]"#;

proptest! {
    /// The operation-chain JSON a data job carries from a peer: random or mutated text is an
    /// error or a chain, never a panic.
    #[test]
    fn operation_chains_survive_random_and_mutated_json(
        text in "\\PC{0,200}", at in any::<usize>(), byte in any::<u8>(),
    ) {
        use flotilla_actors::data::job::worker::parse_ops;
        let _ = parse_ops(&text);
        let mut bytes = OPS.as_bytes().to_vec();
        let i = at % bytes.len();
        bytes[i] ^= byte | 1;
        let _ = parse_ops(&String::from_utf8_lossy(&bytes));
    }

    /// Checkpoint snapshots as read back from a store: damaged bytes are an error, never a
    /// panic.
    #[test]
    fn checkpoint_snapshots_survive_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = flotilla_actors::training::checkpoint::decode_snapshot(&bytes);
    }
}
