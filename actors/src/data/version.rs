//! Dataset versions: the lineage a version records, its schema, and the walk from a version
//! back to its upload (`flotilla data show N@4`).
//!
//! The catalog's [`Lineage`] holds one operation name and a flat parameter map. A version made
//! by a chain of ops records the chain's names joined by `.` (`normalize.pii.dedup-exact`) and,
//! per step `i`, the keys `i.op`, `i.count_in`, `i.count_out` and `i.<parameter>`, so the
//! counts in and out of every op survive in the catalog and [`steps`] reads them back.

use std::collections::BTreeMap;

use flotilla_protocol::catalog::{
    DatasetRecord, FieldType, Lineage, SchemaField, MAX_MAP_ENTRIES, MAX_TEXT_BYTES,
};
use flotilla_protocol::validation::MAX_NAME_LEN;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::ops::{LineageEntry, Op};

/// The operation name of an upload.
pub const UPLOAD: &str = "upload";

/// `v` cut to fit a catalog parameter value, marked when cut.
pub(crate) fn clip(v: &str) -> String {
    if v.len() <= MAX_TEXT_BYTES {
        return v.to_string();
    }
    const MARK: &str = "…(truncated)";
    let mut end = MAX_TEXT_BYTES - MARK.len();
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &v[..end])
}

/// The lineage of a version produced from `parent` by the ops of `entries`. Parameter values
/// longer than the catalog allows are cut (marked `…(truncated)`); a chain whose entries do not
/// fit the catalog's map is an error.
pub fn ops_lineage(parent: u64, entries: &[LineageEntry]) -> Result<Lineage> {
    let mut parameters = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        parameters.insert(format!("{i}.op"), e.operation.clone());
        parameters.insert(format!("{i}.count_in"), e.count_in.to_string());
        parameters.insert(format!("{i}.count_out"), e.count_out.to_string());
        for (k, v) in &e.parameters {
            parameters.insert(format!("{i}.{k}"), clip(v));
        }
    }
    if parameters.len() > MAX_MAP_ENTRIES {
        return Err(Error::invalid(
            "job",
            "ops",
            format!(
                "the chain needs {} lineage entries; the catalog holds at most {MAX_MAP_ENTRIES}",
                parameters.len()
            ),
        ));
    }
    let joined = entries
        .iter()
        .map(|e| e.operation.as_str())
        .collect::<Vec<_>>()
        .join(".");
    let operation = if joined.is_empty() || joined.len() > MAX_NAME_LEN {
        "ops".to_string()
    } else {
        joined
    };
    Ok(Lineage {
        parent_version: Some(parent),
        operation,
        parameters,
    })
}

/// One step of a version's lineage, read back from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub operation: String,
    pub parameters: BTreeMap<String, String>,
    pub count_in: Option<u64>,
    pub count_out: Option<u64>,
}

/// The steps a lineage records: one per op for a chain, else one step with the lineage's own
/// operation and parameters (an upload).
pub fn steps(l: &Lineage) -> Vec<Step> {
    let mut by_index: BTreeMap<usize, Step> = BTreeMap::new();
    for (k, v) in &l.parameters {
        let Some((i, key)) = k
            .split_once('.')
            .and_then(|(i, key)| Some((i.parse::<usize>().ok()?, key)))
        else {
            continue;
        };
        let s = by_index.entry(i).or_insert_with(|| Step {
            operation: String::new(),
            parameters: BTreeMap::new(),
            count_in: None,
            count_out: None,
        });
        match key {
            "op" => s.operation = v.clone(),
            "count_in" => s.count_in = v.parse().ok(),
            "count_out" => s.count_out = v.parse().ok(),
            _ => {
                s.parameters.insert(key.to_string(), v.clone());
            }
        }
    }
    if by_index.is_empty() || by_index.values().any(|s| s.operation.is_empty()) {
        return vec![Step {
            operation: l.operation.clone(),
            parameters: l.parameters.clone(),
            count_in: None,
            count_out: None,
        }];
    }
    by_index.into_values().collect()
}

/// The versions from `version` back to the upload it descends from, newest first, looked up
/// with `get(dataset, version)`. A missing version, or a parent that is not older than its
/// child (which validation forbids, so it would mean a corrupt catalog), is an error naming it.
pub fn chain(
    dataset: &str,
    version: u64,
    get: impl Fn(&str, u64) -> Option<DatasetRecord>,
) -> Result<Vec<DatasetRecord>> {
    let mut out: Vec<DatasetRecord> = Vec::new();
    let mut at = version;
    loop {
        let r = get(dataset, at).ok_or_else(|| Error::VersionNotFound {
            dataset: dataset.to_string(),
            version: at,
            context: out
                .last()
                .map(|c| format!("the parent of {dataset}@{}", c.version)),
        })?;
        let parent = r.lineage.parent_version;
        out.push(r);
        match parent {
            None => return Ok(out),
            Some(p) if p < at => at = p,
            Some(p) => {
                return Err(Error::Corrupt(format!(
                    "{dataset}@{at} names {p} as its parent, which is not older"
                )))
            }
        }
    }
}

/// The schema after `ops`: the parent's fields plus the fields the ops add.
pub fn schema_after(parent: &[SchemaField], ops: &[Op]) -> Vec<SchemaField> {
    let mut fields: Vec<SchemaField> = parent.to_vec();
    let mut add = |name: &str, field_type: FieldType, nullable: bool| {
        if !fields.iter().any(|f| f.name == name) {
            fields.push(SchemaField {
                name: name.to_string(),
                field_type,
                nullable,
            });
        }
    };
    for op in ops {
        match op {
            Op::Label(p) => {
                add(&p.spans_field, FieldType::Json, false);
                add(&p.relations_field, FieldType::Json, false);
            }
            Op::Split(p) => add(&p.output_field, FieldType::Text, false),
            // Only the copies carry it.
            Op::Augment(_) => add("augmented_from", FieldType::Text, true),
            _ => {}
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: u64, lineage: Lineage) -> DatasetRecord {
        DatasetRecord {
            name: "bank".into(),
            version,
            schema: Vec::new(),
            record_count: 0,
            shard_hashes: Vec::new(),
            lineage,
            created_at_ms: 0,
        }
    }

    fn upload() -> Lineage {
        Lineage {
            parent_version: None,
            operation: UPLOAD.into(),
            parameters: [("format".to_string(), "csv".to_string())].into(),
        }
    }

    fn entry(op: &str, cin: u64, cout: u64) -> LineageEntry {
        LineageEntry {
            operation: op.into(),
            parameters: [("field".to_string(), "text".to_string())].into(),
            count_in: cin,
            count_out: cout,
        }
    }

    #[test]
    fn chain_lineage_round_trips_through_the_catalog_map() {
        let entries = vec![entry("normalize", 10, 10), entry("dedup-exact", 10, 7)];
        let l = ops_lineage(3, &entries).unwrap();
        assert_eq!(l.operation, "normalize.dedup-exact");
        assert_eq!(l.parent_version, Some(3));
        let r = record(4, l.clone());
        r.validate().unwrap();
        let s = steps(&l);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[1].operation.as_str(), s[1].count_in, s[1].count_out),
            ("dedup-exact", Some(10), Some(7))
        );
        assert_eq!(s[0].parameters["field"], "text");
        assert_eq!(steps(&upload())[0].operation, "upload");
        // Long values are cut to fit; a chain that cannot fit is refused.
        let mut long = entry("label", 1, 1);
        long.parameters.insert("rules".into(), "é".repeat(5000));
        let l = ops_lineage(1, &[long]).unwrap();
        record(2, l).validate().unwrap();
        let many: Vec<LineageEntry> = (0..100).map(|_| entry("pii", 1, 1)).collect();
        assert!(ops_lineage(1, &many).is_err());
    }

    #[test]
    fn chain_walks_back_to_the_upload_and_names_a_missing_parent() {
        let mut cat = BTreeMap::new();
        cat.insert(1, record(1, upload()));
        cat.insert(2, record(2, ops_lineage(1, &[entry("pii", 5, 5)]).unwrap()));
        cat.insert(
            4,
            record(4, ops_lineage(2, &[entry("filter", 5, 4)]).unwrap()),
        );
        cat.insert(
            6,
            record(6, ops_lineage(5, &[entry("filter", 4, 4)]).unwrap()),
        );
        let get = |_: &str, v: u64| cat.get(&v).cloned();
        let c = chain("bank", 4, get).unwrap();
        assert_eq!(
            c.iter().map(|r| r.version).collect::<Vec<_>>(),
            vec![4, 2, 1]
        );
        let e = chain("bank", 6, get).unwrap_err().to_string();
        assert!(
            e.contains("bank@5") && e.contains("parent of bank@6"),
            "{e}"
        );
        assert!(chain("bank", 9, get)
            .unwrap_err()
            .to_string()
            .contains("bank@9"));
    }
}
