//! The holder's side of a dataset operation: phases 1 and 3 on one shard.
//!
//! Both phases are stateless: each request carries the whole chain and the decisions made so
//! far, and the holder recomputes from the (unchanged) input shard. A holder keeps nothing
//! between phases, so any holder of a shard can answer any phase, a holder that dies between
//! phases is replaced by the next one, and a failed job leaves nothing behind but the output
//! shards it already wrote. Chains hold few global operations, so recomputing the local ones
//! before each is cheap next to moving records.

use std::collections::BTreeSet;

use flotilla_protocol::services::data::{Decision, Summary};

use super::{is_global, Sketch};
use crate::data::error::{Error, Result};
use crate::data::ops::{self, dedup, split, Detail, Op};
use crate::data::record::Record;

/// What one shard did under the chain: `(count_in, count_out)` and the detail of each op.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardReport {
    pub counts: Vec<(u64, u64)>,
    pub details: Vec<Detail>,
}

/// Parses a chain sent as JSON.
pub fn parse_ops(json: &str) -> Result<Vec<Op>> {
    serde_json::from_str(json).map_err(|e| Error::Config {
        what: "operation chain".into(),
        reason: e.to_string(),
    })
}

/// Walks the chain over `records`, applying local ops and the given decisions; stops before
/// the first global op without a decision and returns its position (or `None` at the end).
fn walk(
    mut records: Vec<Record>,
    ops: &[Op],
    decisions: &[Decision],
    report: &mut ShardReport,
) -> Result<(Vec<Record>, Option<usize>)> {
    let mut next_decision = decisions.iter();
    for (i, op) in ops.iter().enumerate() {
        let count_in = records.len() as u64;
        let detail = if is_global(op) {
            let Some(d) = next_decision.next() else {
                return Ok((records, Some(i)));
            };
            apply_decision(&mut records, op, d)?
        } else {
            let (out, detail) = ops::apply(records, op)?;
            records = out;
            detail
        };
        report.counts.push((count_in, records.len() as u64));
        report.details.push(detail);
    }
    if next_decision.next().is_some() {
        return Err(Error::BadRequest(format!(
            "{} decisions for a chain of {} global operations",
            decisions.len(),
            ops.iter().filter(|o| is_global(o)).count()
        )));
    }
    Ok((records, None))
}

/// Phase 1: the summary of this shard for the first global op that has no decision yet.
pub fn summarize(records: Vec<Record>, ops: &[Op], decisions: &[Decision]) -> Result<Summary> {
    let (records, at) = walk(records, ops, decisions, &mut ShardReport::default())?;
    let Some(i) = at else {
        return Err(Error::BadRequest(
            "every global operation of the chain is decided: nothing to summarise".into(),
        ));
    };
    summary_for(&records, &ops[i])
}

/// The phase-1 summary of `records` for the global op `op`.
pub fn summary_for(records: &[Record], op: &Op) -> Result<Summary> {
    Ok(match op {
        Op::DedupExact(p) => Summary::Exact(dedup::shard_hashes(records, &p.field)?),
        Op::DedupNear(p) => {
            let mh = dedup::MinHasher::new(p.clone())?;
            Summary::Near(
                mh.shard_sketches(records)?
                    .into_iter()
                    .map(Sketch::from)
                    .collect(),
            )
        }
        Op::Split(p) => {
            p.validate()?;
            Summary::Split(
                records
                    .iter()
                    .map(|r| {
                        let label = match &p.label_field {
                            Some(f) => r.field(f)?.to_string(),
                            None => String::new(),
                        };
                        Ok((r.id, label))
                    })
                    .collect::<Result<_>>()?,
            )
        }
        Op::Augment(p) => {
            p.validate()?;
            Summary::Augment {
                records: records.len() as u64,
                max_id: records.iter().map(|r| r.id).max(),
            }
        }
        other => {
            return Err(Error::BadRequest(format!(
                "{} is applied per shard and has no summary",
                other.name()
            )))
        }
    })
}

/// Phase 3: the whole chain over this shard with one decision per global op.
pub fn apply(
    records: Vec<Record>,
    ops: &[Op],
    decisions: &[Decision],
) -> Result<(Vec<Record>, ShardReport)> {
    let mut report = ShardReport::default();
    let (records, at) = walk(records, ops, decisions, &mut report)?;
    if let Some(i) = at {
        return Err(Error::BadRequest(format!(
            "operation {i} ({}) is global and has no decision",
            ops[i].name()
        )));
    }
    Ok((records, report))
}

fn mismatch(op: &Op, d: &Decision) -> Error {
    Error::BadRequest(format!(
        "decision {d:?} does not fit operation {}",
        op.name()
    ))
}

/// Applies a global op's decision to one shard's records.
fn apply_decision(records: &mut Vec<Record>, op: &Op, d: &Decision) -> Result<Detail> {
    match (op, d) {
        (Op::DedupExact(_) | Op::DedupNear(_), Decision::Drop(ids)) => {
            let drop: BTreeSet<u64> = ids.iter().copied().collect();
            let before = records.len();
            records.retain(|r| !drop.contains(&r.id));
            let removed = (before - records.len()) as u64;
            Ok(match op {
                Op::DedupExact(_) => Detail::DedupExact { removed },
                // The cluster count is global; the coordinator fills it in.
                _ => Detail::DedupNear {
                    clusters: 0,
                    removed,
                },
            })
        }
        (Op::Split(p), Decision::Parts(parts)) => {
            let parts: std::collections::BTreeMap<u64, u8> = parts.iter().copied().collect();
            let mut counts = std::collections::BTreeMap::new();
            for r in records.iter_mut() {
                let part = match parts.get(&r.id) {
                    Some(0) => split::Part::Train,
                    Some(1) => split::Part::Val,
                    Some(2) => split::Part::Test,
                    _ => {
                        return Err(Error::BadRequest(format!(
                            "split decision has no valid part for record {}",
                            r.id
                        )))
                    }
                };
                r.fields
                    .insert(p.output_field.clone(), part.as_str().to_string());
                *counts.entry(part).or_default() += 1;
            }
            Ok(Detail::Split(counts))
        }
        (Op::Augment(p), Decision::IdBase(first)) => {
            let added = ops::augment_records(records, p, *first)?;
            Ok(Detail::Augment { added })
        }
        _ => Err(mismatch(op, d)),
    }
}
