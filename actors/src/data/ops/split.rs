//! Train/validation/test splits by fractions, seeded, stratified by label when there is one.
//!
//! Records are ordered by a keyed hash of `(seed, id)` instead of a shuffle: the order depends
//! only on the seed and the ids, so it is the same however records are spread over shards and
//! does not change if a dependency changes its random generator. Within each label (or over all
//! records without labels) the first `round(train × n)` records go to train, the next
//! `round(val × n)` to validation and the rest to test, so each label's proportions are within
//! one record of the target.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::super::error::{Error, Result};
use super::super::record::Record;

/// Which part of the split a record is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Train,
    Val,
    Test,
}

impl Part {
    /// The value written to the record's split field.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        }
    }
}

/// Split parameters; `test` is what is left after `train` and `val`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub train: f64,
    pub val: f64,
    pub seed: u64,
    /// Stratify by this field when set (records without it are an error).
    pub label_field: Option<String>,
    /// The field the part is written to.
    pub output_field: String,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            train: 0.8,
            val: 0.1,
            seed: 0,
            label_field: None,
            output_field: "split".to_string(),
        }
    }
}

impl Params {
    /// Checks that the fractions are in [0, 1] and sum to at most 1.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("train", self.train), ("val", self.val)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::invalid(
                    "split",
                    name,
                    format!("{v} is not in [0, 1]"),
                ));
            }
        }
        if self.train + self.val > 1.0 + 1e-9 {
            return Err(Error::invalid(
                "split",
                "val",
                format!("train {} + val {} exceed 1", self.train, self.val),
            ));
        }
        Ok(())
    }
}

fn order_key(seed: u64, id: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&id.to_le_bytes());
    *h.finalize().as_bytes()
}

/// The part of every record, by id. Works on any subset view as long as it sees all records
/// (of a label) that are being split.
pub fn assign(records: &[Record], p: &Params) -> Result<BTreeMap<u64, Part>> {
    p.validate()?;
    let mut groups: BTreeMap<&str, Vec<([u8; 32], u64)>> = BTreeMap::new();
    for r in records {
        let label = match &p.label_field {
            Some(f) => r.field(f)?,
            None => "",
        };
        groups
            .entry(label)
            .or_default()
            .push((order_key(p.seed, r.id), r.id));
    }
    let mut out = BTreeMap::new();
    for (_, mut g) in groups {
        g.sort_unstable();
        let n = g.len() as f64;
        let n_train = (p.train * n).round() as usize;
        let n_val = ((p.val * n).round() as usize).min(g.len() - n_train);
        for (i, (_, id)) in g.into_iter().enumerate() {
            let part = if i < n_train {
                Part::Train
            } else if i < n_train + n_val {
                Part::Val
            } else {
                Part::Test
            };
            out.insert(id, part);
        }
    }
    Ok(out)
}

/// Writes each record's part into `output_field`.
pub fn apply(records: &mut [Record], p: &Params) -> Result<BTreeMap<Part, u64>> {
    let parts = assign(records, p)?;
    let mut counts = BTreeMap::new();
    for r in records.iter_mut() {
        if let Some(part) = parts.get(&r.id) {
            r.fields
                .insert(p.output_field.clone(), part.as_str().to_string());
            *counts.entry(*part).or_default() += 1;
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Record> {
        // Labels with 1, 7, 10, 33 and 149 records.
        let sizes = [1usize, 7, 10, 33, 149];
        let mut v = Vec::new();
        let mut id = 0;
        for (l, n) in sizes.iter().enumerate() {
            for _ in 0..*n {
                v.push(Record::labelled(
                    id * 7 + 3,
                    format!("t{id}"),
                    format!("L{l}"),
                ));
                id += 1;
            }
        }
        v
    }

    #[test]
    fn stratified_proportions_within_one_record_per_label() {
        let rs = records();
        let p = Params {
            train: 0.7,
            val: 0.15,
            seed: 42,
            label_field: Some("label".into()),
            ..Params::default()
        };
        let parts = assign(&rs, &p).unwrap();
        assert_eq!(parts.len(), rs.len());
        let mut per: BTreeMap<&str, BTreeMap<Part, f64>> = BTreeMap::new();
        for r in &rs {
            *per.entry(&r.fields["label"])
                .or_default()
                .entry(parts[&r.id])
                .or_default() += 1.0;
        }
        for (label, c) in per {
            let n: f64 = c.values().sum();
            for (part, frac) in [(Part::Train, 0.7), (Part::Val, 0.15), (Part::Test, 0.15)] {
                let got = c.get(&part).copied().unwrap_or(0.0);
                assert!(
                    (got - frac * n).abs() <= 1.0,
                    "{label} {part:?}: {got} of {n}"
                );
            }
        }
    }

    #[test]
    fn deterministic_independent_of_order_and_seed_sensitive() {
        let rs = records();
        let p = Params {
            seed: 1,
            ..Params::default()
        };
        let a = assign(&rs, &p).unwrap();
        let mut rev = rs.clone();
        rev.reverse();
        assert_eq!(a, assign(&rev, &p).unwrap());
        let b = assign(
            &rs,
            &Params {
                seed: 2,
                ..Params::default()
            },
        )
        .unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn bad_fractions_and_missing_labels_are_errors() {
        assert!(Params {
            train: 0.9,
            val: 0.2,
            ..Params::default()
        }
        .validate()
        .is_err());
        let e = assign(
            &[Record::text(1, "x")],
            &Params {
                label_field: Some("intent".into()),
                ..Params::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("`intent`"));
    }
}
