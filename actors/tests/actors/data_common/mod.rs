//! Shared helpers of the data tests: the Banking77 training file.

// Test helpers: a missing file or bad data should fail the test loudly.
#![allow(clippy::expect_used)]

pub mod corpus;
pub mod mem;

use std::path::PathBuf;

use flotilla_actors::data::ingest::{parse_all, Format, Options};
use flotilla_actors::data::record::Record;

/// The path of data set `name` in the repository (`node/data/` for Banking77's files,
/// `tests/data/` for the others). Fails (not skips) when it does not exist: these tests
/// must run on the real data.
#[allow(dead_code)]
pub fn shared(name: &str) -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let path = if name.starts_with("banking77-") {
        root.join("node/data").join(name)
    } else {
        root.join("tests/data").join(name)
    };
    assert!(path.exists(), "{name} not found at {}", path.display());
    path
}

/// Banking77's 10,003 training queries as records with `text` and `label`.
#[allow(dead_code)]
pub fn banking77() -> Vec<Record> {
    let f = std::fs::File::open(shared("banking77-train.csv")).expect("open banking77");
    let mut o = Options::new(Format::Csv);
    o.label_field = Some("category".into());
    parse_all(f, o).expect("parse banking77").0
}
