//! Dataset operations and the chain that applies them with lineage.
//!
//! Each [`Op`] carries its parameters (serde, so a job spec or the CLI can name them) and turns
//! a set of records into a new set. [`apply_chain`] runs ops in order and records, per op, a
//! [`LineageEntry`] `{operation, parameters, count_in, count_out}` that the catalog stores with
//! the new dataset version, so `normalize, pii, dedup-exact, dedup-near` is one call with one
//! report. An op that names a field a record lacks stops the chain with an error naming the
//! field, the record and the fields it has.
//!
//! Modules: [`normalize`], [`filter`], [`pii`], [`dedup`], [`label`], [`augment`], [`split`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::record::{Record, TEXT};

pub mod augment;
pub mod dedup;
pub mod filter;
pub mod label;
pub mod normalize;
pub mod pii;
pub mod split;

fn text_field() -> String {
    TEXT.to_string()
}

/// Parameters of exact dedup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExactParams {
    pub field: String,
}

impl Default for ExactParams {
    fn default() -> Self {
        Self {
            field: text_field(),
        }
    }
}

/// Parameters of rule labelling: the rules inline and the fields the results go to (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelParams {
    pub field: String,
    pub rules: label::Rules,
    pub spans_field: String,
    pub relations_field: String,
}

impl Default for LabelParams {
    fn default() -> Self {
        Self {
            field: text_field(),
            rules: label::Rules::default(),
            spans_field: "entities".into(),
            relations_field: "relations".into(),
        }
    }
}

/// One operation with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    Normalize(normalize::Params),
    Filter(filter::Params),
    Pii(pii::Params),
    DedupExact(ExactParams),
    DedupNear(dedup::NearParams),
    Label(LabelParams),
    Augment(augment::Params),
    Split(split::Params),
}

impl Op {
    /// The operation's name in lineage: `normalize`, `dedup-exact`, ….
    pub fn name(&self) -> &'static str {
        match self {
            Op::Normalize(_) => "normalize",
            Op::Filter(_) => "filter",
            Op::Pii(_) => "pii",
            Op::DedupExact(_) => "dedup-exact",
            Op::DedupNear(_) => "dedup-near",
            Op::Label(_) => "label",
            Op::Augment(_) => "augment",
            Op::Split(_) => "split",
        }
    }

    /// The parameters as a flat map of strings, as catalog lineage stores them: top-level
    /// values as their JSON text (strings unquoted), keys sorted.
    pub fn parameters(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(self) {
            for (k, v) in m {
                if k == "op" {
                    continue;
                }
                let s = match v {
                    serde_json::Value::String(s) => s,
                    v => v.to_string(),
                };
                out.insert(k, s);
            }
        }
        out
    }
}

/// One op's lineage entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageEntry {
    pub operation: String,
    pub parameters: BTreeMap<String, String>,
    pub count_in: u64,
    pub count_out: u64,
}

/// What one op did besides its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Detail {
    None,
    Filter(BTreeMap<filter::Reason, u64>),
    Pii(pii::Counts),
    DedupExact { removed: u64 },
    DedupNear { clusters: usize, removed: u64 },
    Label { spans: u64, relations: u64 },
    Augment { added: u64 },
    Split(BTreeMap<split::Part, u64>),
}

/// The report of a chain: a lineage entry and a detail per op, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub lineage: Vec<LineageEntry>,
    pub details: Vec<Detail>,
}

/// Applies `ops` in order to `records`.
pub fn apply_chain(records: Vec<Record>, ops: &[Op]) -> Result<(Vec<Record>, Report)> {
    let mut records = records;
    let mut report = Report::default();
    for op in ops {
        let count_in = records.len() as u64;
        let (out, detail) = apply(records, op)?;
        records = out;
        report.lineage.push(LineageEntry {
            operation: op.name().to_string(),
            parameters: op.parameters(),
            count_in,
            count_out: records.len() as u64,
        });
        report.details.push(detail);
    }
    Ok((records, report))
}

/// Applies one op.
pub fn apply(records: Vec<Record>, op: &Op) -> Result<(Vec<Record>, Detail)> {
    let mut records = records;
    match op {
        Op::Normalize(p) => {
            for r in &mut records {
                let f = r.field_mut(&p.field)?;
                *f = normalize::normalize(f, p);
            }
            Ok((records, Detail::None))
        }
        Op::Filter(p) => {
            let (out, rep) = filter::Filter::new(p.clone())?.apply(records)?;
            Ok((out, Detail::Filter(rep.dropped)))
        }
        Op::Pii(p) => {
            let mut counts = pii::Counts::new();
            for r in &mut records {
                let f = r.field_mut(&p.field)?;
                *f = pii::mask(f, &p.kinds, &mut counts);
            }
            Ok((records, Detail::Pii(counts)))
        }
        Op::DedupExact(p) => {
            let (mut out, removed) = dedup::exact_dedup(vec![records], &p.field)?;
            Ok((
                out.pop().unwrap_or_default(),
                Detail::DedupExact { removed },
            ))
        }
        Op::DedupNear(p) => {
            let (mut out, res) = dedup::near_dedup(vec![records], p)?;
            Ok((
                out.pop().unwrap_or_default(),
                Detail::DedupNear {
                    clusters: res.clusters.len(),
                    removed: res.removed.len() as u64,
                },
            ))
        }
        Op::Label(p) => {
            let l = label::RuleLabeler::new(&p.rules)?;
            let (mut spans, mut relations) = (0u64, 0u64);
            for r in &mut records {
                let lab = l.label_text(r.field(&p.field)?);
                spans += lab.spans.len() as u64;
                relations += lab.relations.len() as u64;
                let json = |v: &dyn erased::Json| v.to_json();
                r.fields.insert(p.spans_field.clone(), json(&lab.spans)?);
                r.fields
                    .insert(p.relations_field.clone(), json(&lab.relations)?);
            }
            Ok((records, Detail::Label { spans, relations }))
        }
        Op::Augment(p) => {
            // New ids continue after the largest input id, so they never collide with a
            // source record.
            let first = records.iter().map(|r| r.id + 1).max().unwrap_or(0);
            let added = augment_records(&mut records, p, first)?;
            Ok((records, Detail::Augment { added }))
        }
        Op::Split(p) => {
            let counts = split::apply(&mut records, p)?;
            Ok((records, Detail::Split(counts)))
        }
    }
}

/// Appends `p.copies` augmented copies of every record to `records`, numbering them from
/// `first_id` in record-major, copy-minor order; each copy records where it came from. The
/// number of copies added. Sharded runs pass each shard a `first_id` from the global decision
/// so ids stay unique across shards.
pub fn augment_records(
    records: &mut Vec<Record>,
    p: &augment::Params,
    first_id: u64,
) -> Result<u64> {
    p.validate()?;
    let th = augment::Thesaurus::bundled()?;
    let mut next = first_id;
    let mut added = Vec::new();
    for r in records.iter() {
        let text = r.field(&p.field)?;
        for copy in 0..p.copies as u64 {
            let mut rng = augment::rng_for(p.seed, r.id, copy);
            let mut c = r.clone();
            c.id = next;
            next += 1;
            c.fields.insert(
                p.field.clone(),
                augment::augment_text(text, p, &th, &mut rng),
            );
            c.fields.insert("augmented_from".into(), r.id.to_string());
            added.push(c);
        }
    }
    let n = added.len() as u64;
    records.extend(added);
    Ok(n)
}

/// JSON encoding of label results without naming each type at the call site.
mod erased {
    use super::{Error, Result};

    pub trait Json {
        fn to_json(&self) -> Result<String>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<String> {
            serde_json::to_string(self).map_err(|e| Error::Config {
                what: "label output".into(),
                reason: e.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Record> {
        vec![
            Record::text(0, "<p>Email me at John@Example.com</p>"),
            Record::text(1, "Email me at   john@example.com"),
            Record::text(
                2,
                "my card 4111 1111 1111 1111 was declined at the shop today",
            ),
            Record::text(
                3,
                "my card 5500 0000 0000 0004 was declined at the store today",
            ),
            Record::text(4, "how do I top up my account"),
        ]
    }

    #[test]
    fn normalize_pii_dedup_chain_in_one_call_with_lineage() {
        let ops: Vec<Op> = serde_json::from_str(
            r#"[{"op":"normalize"},{"op":"pii"},{"op":"dedup-exact"},{"op":"dedup-near","threshold":0.7}]"#,
        )
        .unwrap();
        let (out, rep) = apply_chain(records(), &ops).unwrap();
        assert_eq!(out.iter().map(|r| r.id).collect::<Vec<_>>(), vec![0, 2, 4]);
        assert_eq!(out[0].fields[TEXT], "Email me at [EMAIL]");
        assert_eq!(
            out[1].fields[TEXT],
            "my card [CARD] was declined at the shop today"
        );
        let counts: Vec<(&str, u64, u64)> = rep
            .lineage
            .iter()
            .map(|l| (l.operation.as_str(), l.count_in, l.count_out))
            .collect();
        assert_eq!(
            counts,
            vec![
                ("normalize", 5, 5),
                ("pii", 5, 5),
                ("dedup-exact", 5, 4),
                ("dedup-near", 4, 3)
            ]
        );
        assert_eq!(rep.lineage[3].parameters["threshold"], "0.7");
        assert_eq!(rep.lineage[0].parameters["field"], "text");
        assert_eq!(
            rep.details[1],
            Detail::Pii([(pii::Kind::Email, 2), (pii::Kind::Card, 2)].into())
        );
    }

    #[test]
    fn an_op_on_a_missing_field_names_it() {
        let ops = vec![Op::Normalize(normalize::Params {
            field: "body".into(),
            ..normalize::Params::default()
        })];
        let e = apply_chain(records(), &ops).unwrap_err().to_string();
        assert!(
            e.contains("`body`") && e.contains("record 0") && e.contains("text"),
            "{e}"
        );
    }

    #[test]
    fn label_augment_and_split_in_a_chain() {
        let rules = label::Rules::from_toml(
            "[[entity]]\nlabel = \"PRODUCT\"\nterms = [\"card\", \"account\"]\n",
        )
        .unwrap();
        let ops = vec![
            Op::Label(LabelParams {
                rules,
                ..LabelParams::default()
            }),
            Op::Augment(augment::Params {
                copies: 2,
                seed: 3,
                ..augment::Params::default()
            }),
            Op::Split(split::Params::default()),
        ];
        let (out, rep) = apply_chain(records(), &ops).unwrap();
        assert_eq!(out.len(), 15);
        assert!(out[2].fields["entities"].contains("\"PRODUCT\""));
        assert_eq!(out[5].id, 5);
        assert_eq!(out[5].fields["augmented_from"], "0");
        assert!(out
            .iter()
            .all(|r| ["train", "val", "test"].contains(&r.fields["split"].as_str())));
        assert_eq!(rep.details[1], Detail::Augment { added: 10 });
        // Same seed, same chain, same output.
        assert_eq!(apply_chain(records(), &ops).unwrap().0, out);
    }
}
