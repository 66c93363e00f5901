//! The three phases on in-memory shards give the single-node chain's result on any sharding.

use std::collections::BTreeMap;

use flotilla_protocol::services::data::Decision;

use super::decide::decide;
use super::worker::{apply, summarize, ShardReport};
use super::{is_global, merge_detail};
use crate::data::ops::{apply_chain, augment, split, Detail, Op};
use crate::data::record::Record;

fn corpus() -> Vec<Record> {
    let base = [
        "<b>Email</b> me at John@Example.com please",
        "how do I top up my account with a card",
        "my card 4111 1111 1111 1111 was declined at the shop today",
        "why was my transfer declined yesterday evening",
        "what is the exchange rate for euros today",
    ];
    (0..60u64)
        .map(|i| {
            let mut t = base[(i % 5) as usize].to_string();
            if i % 7 == 0 {
                t = t.to_uppercase();
            } else if i % 3 == 0 {
                t = format!("{t} now {}", i % 2);
            }
            Record::labelled(i * 3 + 1, t, format!("l{}", i % 4))
        })
        .collect()
}

/// Runs the phases over `shards` as the coordinator would, with no network.
fn sharded(
    shards: Vec<Vec<Record>>,
    ops: &[Op],
) -> crate::data::Result<(Vec<Record>, Vec<ShardReport>)> {
    let mut decisions: BTreeMap<u32, Vec<Decision>> =
        (0..shards.len() as u32).map(|i| (i, Vec::new())).collect();
    for op in ops.iter().filter(|o| is_global(o)) {
        let mut sums = BTreeMap::new();
        for (i, s) in shards.iter().enumerate() {
            sums.insert(
                i as u32,
                summarize(s.clone(), ops, &decisions[&(i as u32)])?,
            );
        }
        for (i, d) in decide(op, &sums)?.0 {
            decisions.get_mut(&i).unwrap().push(d);
        }
    }
    let mut out = Vec::new();
    let mut reports = Vec::new();
    for (i, s) in shards.into_iter().enumerate() {
        let (rs, rep) = apply(s, ops, &decisions[&(i as u32)])?;
        out.extend(rs);
        reports.push(rep);
    }
    Ok((out, reports))
}

fn cut(records: &[Record], sizes: &[usize]) -> Vec<Vec<Record>> {
    let mut out = Vec::new();
    let mut at = 0;
    for s in sizes {
        out.push(records[at..(at + s).min(records.len())].to_vec());
        at += s;
    }
    out.push(records[at.min(records.len())..].to_vec());
    out
}

fn chain() -> Vec<Op> {
    serde_json::from_str(
        r#"[{"op":"normalize"},{"op":"pii"},{"op":"dedup-exact"},
            {"op":"dedup-near","threshold":0.7},{"op":"split","label_field":"label","seed":4}]"#,
    )
    .unwrap()
}

#[test]
fn phases_equal_the_single_node_chain_on_any_sharding() {
    let rs = corpus();
    let (want, rep) = apply_chain(rs.clone(), &chain()).unwrap();
    assert!(want.len() < rs.len() && want.len() > 5, "{}", want.len());
    for sizes in [vec![], vec![30], vec![7, 13, 1, 0], vec![1; 59]] {
        let (got, reports) = sharded(cut(&rs, &sizes), &chain()).unwrap();
        assert_eq!(got, want, "sizes {sizes:?}");
        // Per-op counts summed over shards are the chain's counts.
        for (k, l) in rep.lineage.iter().enumerate() {
            let cin: u64 = reports.iter().map(|r| r.counts[k].0).sum();
            let cout: u64 = reports.iter().map(|r| r.counts[k].1).sum();
            assert_eq!((cin, cout), (l.count_in, l.count_out), "op {k}");
        }
        let pii = reports
            .iter()
            .map(|r| r.details[1].clone())
            .reduce(merge_detail)
            .unwrap();
        assert_eq!(pii, rep.details[1]);
    }
}

#[test]
fn augmentation_ids_are_unique_and_match_the_single_node_numbering() {
    let rs = corpus();
    let ops = vec![
        Op::Augment(augment::Params {
            copies: 2,
            seed: 9,
            ..augment::Params::default()
        }),
        Op::Split(split::Params::default()),
    ];
    let (mut want, _) = apply_chain(rs.clone(), &ops).unwrap();
    want.sort();
    let (mut got, reports) = sharded(cut(&rs, &[11, 20]), &ops).unwrap();
    got.sort();
    assert_eq!(got, want);
    let added = reports
        .iter()
        .map(|r| r.details[0].clone())
        .reduce(merge_detail)
        .unwrap();
    assert_eq!(added, Detail::Augment { added: 120 });
}

#[test]
fn missing_fields_and_wrong_decisions_are_clear_errors() {
    let rs = corpus();
    let ops: Vec<Op> = serde_json::from_str(r#"[{"op":"dedup-exact","field":"body"}]"#).unwrap();
    let e = sharded(cut(&rs, &[10]), &ops).unwrap_err().to_string();
    assert!(e.contains("`body`") && e.contains("label, text"), "{e}");
    let ops = chain();
    let e = apply(rs.clone(), &ops, &[]).unwrap_err().to_string();
    assert!(
        e.contains("dedup-exact") && e.contains("no decision"),
        "{e}"
    );
    let e = apply(rs.clone(), &ops, &[Decision::IdBase(3)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit"), "{e}");
    let one: Vec<Op> = serde_json::from_str(r#"[{"op":"dedup-exact"}]"#).unwrap();
    let two = vec![Decision::Drop(vec![]); 2];
    let e = summarize(rs.clone(), &one, &two).unwrap_err().to_string();
    assert!(e.contains("2 decisions for a chain of 1"), "{e}");
    let e = summarize(rs, &one, &two[..1]).unwrap_err().to_string();
    assert!(e.contains("nothing to summarise"), "{e}");
}
