//! Phase 2 of a dataset operation: one deterministic decision over every shard's summary.
//!
//! The decision sees the union of the summaries keyed by shard index and breaks every tie by
//! record id (the dedup merges keep the smallest id, split orders by a keyed hash of the id),
//! so it depends only on the records, never on which node summarised which shard or in what
//! order the summaries arrived.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_protocol::services::data::{Decision, Summary};

use crate::data::error::{Error, Result};
use crate::data::ops::{dedup, split, Op};
use crate::data::record::Record;

/// What the decision found beyond the per-shard answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    None,
    /// Near dedup's verified pairs and clusters.
    Near(dedup::NearResult),
}

fn wrong(op: &Op, shard: u32) -> Error {
    Error::BadRequest(format!(
        "shard {shard} sent a summary that does not fit operation {}",
        op.name()
    ))
}

/// The per-shard decisions of global op `op` from the summaries of all shards.
pub fn decide(
    op: &Op,
    summaries: &BTreeMap<u32, Summary>,
) -> Result<(BTreeMap<u32, Decision>, Finding)> {
    match op {
        Op::DedupExact(_) => {
            let mut lists = Vec::new();
            for (shard, s) in summaries {
                let Summary::Exact(l) = s else {
                    return Err(wrong(op, *shard));
                };
                lists.push(l.clone());
            }
            let keep = dedup::merge_exact(lists);
            let out = summaries
                .iter()
                .map(|(shard, s)| {
                    let drop = match s {
                        Summary::Exact(l) => l
                            .iter()
                            .map(|(_, id)| *id)
                            .filter(|id| !keep.contains(id))
                            .collect(),
                        _ => Vec::new(),
                    };
                    (*shard, Decision::Drop(drop))
                })
                .collect();
            Ok((out, Finding::None))
        }
        Op::DedupNear(p) => {
            let mh = dedup::MinHasher::new(p.clone())?;
            let mut all = Vec::new();
            let mut ids: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            for (shard, s) in summaries {
                let Summary::Near(sk) = s else {
                    return Err(wrong(op, *shard));
                };
                ids.insert(*shard, sk.iter().map(|k| k.id).collect());
                all.extend(sk.iter().cloned().map(dedup::Sketch::from));
            }
            let res = mh.merge(all);
            let out = ids
                .into_iter()
                .map(|(shard, ids)| {
                    let drop = ids.into_iter().filter(|id| res.removed.contains(id));
                    (shard, Decision::Drop(drop.collect()))
                })
                .collect();
            Ok((out, Finding::Near(res)))
        }
        Op::Split(p) => {
            // Rebuild the records split needs (id and stratum) and let split's own rule assign
            // parts, so the sharded result is the single-node result.
            let mut stand_ins = Vec::new();
            let mut ids: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            for (shard, s) in summaries {
                let Summary::Split(l) = s else {
                    return Err(wrong(op, *shard));
                };
                ids.insert(*shard, l.iter().map(|(id, _)| *id).collect());
                for (id, label) in l {
                    let mut r = Record::text(*id, "");
                    if let Some(f) = &p.label_field {
                        r.fields.insert(f.clone(), label.clone());
                    }
                    stand_ins.push(r);
                }
            }
            let unique: BTreeSet<u64> = stand_ins.iter().map(|r| r.id).collect();
            if unique.len() != stand_ins.len() {
                return Err(Error::BadRequest(
                    "split: a record id appears in more than one shard".into(),
                ));
            }
            let parts = split::assign(&stand_ins, p)?;
            let code = |part: split::Part| match part {
                split::Part::Train => 0u8,
                split::Part::Val => 1,
                split::Part::Test => 2,
            };
            let out = ids
                .into_iter()
                .map(|(shard, ids)| {
                    let ps = ids
                        .into_iter()
                        .filter_map(|id| parts.get(&id).map(|p| (id, code(*p))))
                        .collect();
                    (shard, Decision::Parts(ps))
                })
                .collect();
            Ok((out, Finding::None))
        }
        Op::Augment(p) => {
            let mut max = None::<u64>;
            for (shard, s) in summaries {
                let Summary::Augment { max_id, .. } = s else {
                    return Err(wrong(op, *shard));
                };
                max = max.max(*max_id);
            }
            // Shards in index order take consecutive id ranges after the largest input id:
            // with one shard this is exactly the single-node numbering.
            let mut next = max.map_or(0, |m| m + 1);
            let mut out = BTreeMap::new();
            for (shard, s) in summaries {
                if let Summary::Augment { records, .. } = s {
                    out.insert(*shard, Decision::IdBase(next));
                    next += records * p.copies as u64;
                }
            }
            Ok((out, Finding::None))
        }
        other => Err(Error::BadRequest(format!(
            "{} is applied per shard and needs no decision",
            other.name()
        ))),
    }
}
