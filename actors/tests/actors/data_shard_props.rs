//! Property tests of shard bodies and the shard builder: any records round-trip through a
//! body whose hash is the catalog hash, no byte string makes the decoder panic, and the
//! builder's shards concatenate to the input in order within their limits.

use std::collections::BTreeMap;

use flotilla_actors::data::record::{shard_hash, Record};
use flotilla_actors::data::shard::{decode_body, encode_body};
use flotilla_actors::data::upload::ShardBuilder;
use proptest::prelude::*;

fn record() -> impl Strategy<Value = Record> {
    (
        any::<u64>(),
        prop::collection::btree_map("[a-z_]{1,6}", "\\PC{0,30}", 0..4),
    )
        .prop_map(|(id, fields): (u64, BTreeMap<String, String>)| Record { id, fields })
}

proptest! {
    #[test]
    fn bodies_round_trip_and_hash_like_the_catalog(rs in prop::collection::vec(record(), 0..20)) {
        let body = encode_body(&rs);
        prop_assert_eq!(decode_body(&body).unwrap(), rs.clone());
        prop_assert_eq!(blake3::hash(&body).to_hex().to_string(), shard_hash(&rs));
    }

    #[test]
    fn the_decoder_refuses_garbage_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_body(&bytes);
    }

    #[test]
    fn shards_concatenate_to_the_input_within_limits(
        rs in prop::collection::vec(record(), 0..60),
        max_records in 1usize..10,
        max_bytes in 64usize..600,
    ) {
        let mut b = ShardBuilder::new("p", 1, max_records, max_bytes).unwrap();
        let mut shards: Vec<_> = rs.iter().flat_map(|r| b.push(r.clone())).collect();
        let (last, built) = b.finish();
        shards.extend(last);
        prop_assert_eq!(built.records, rs.len() as u64);
        let mut back = Vec::new();
        for (i, s) in shards.iter().enumerate() {
            prop_assert_eq!(s.meta.id.index, i as u32);
            prop_assert!(s.meta.records >= 1 && s.meta.records <= max_records as u64);
            // Over the byte limit only when one record alone is bigger than it.
            prop_assert!(s.meta.bytes <= max_bytes as u64 || s.meta.records == 1);
            let records = decode_body(&s.body).unwrap();
            prop_assert_eq!(shard_hash(&records), s.meta.hash.clone());
            back.extend(records);
        }
        prop_assert_eq!(back, rs);
    }
}
