//! Shared helpers of the data tests: the Banking77 training file.

// Test helpers: a missing file or bad data should fail the test loudly.
#![allow(clippy::expect_used)]

pub mod corpus;
pub mod mem;

use std::path::PathBuf;

use flotilla_actors::data::ingest::{parse_all, Format, Options};
use flotilla_actors::data::record::Record;

/// The path of `shared/data/<name>`: under `FLOTILLA_SHARED_DIR` when set, else beside the
/// checkout. Fails (not skips) when it does not exist: these tests must run on the real data.
#[allow(dead_code)]
pub fn shared(name: &str) -> PathBuf {
    let path = std::env::var_os("FLOTILLA_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")))
        .join("data")
        .join(name);
    assert!(
        path.exists(),
        "{name} not found at {} (set FLOTILLA_SHARED_DIR)",
        path.display()
    );
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
