//! Shared helpers of the data tests: the Banking77 training file.

// Test helpers: a missing file or bad data should fail the test loudly.
#![allow(clippy::expect_used)]

pub mod corpus;
pub mod mem;

use std::path::PathBuf;

use flotilla_actors::data::ingest::{parse_all, Format, Options};
use flotilla_actors::data::record::Record;

/// The path of `shared/data/<name>`: beside the checkout, else under /work/shared. Fails (not
/// skips) when neither exists: these tests must run on the real data.
#[allow(dead_code)]
pub fn shared(name: &str) -> PathBuf {
    let beside =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")).join(name);
    if beside.exists() {
        return beside;
    }
    let fallback = PathBuf::from("/work/shared/data").join(name);
    assert!(
        fallback.exists(),
        "{name} found neither at {} nor at {}",
        beside.display(),
        fallback.display()
    );
    fallback
}

/// Banking77's 10,003 training queries as records with `text` and `label`.
#[allow(dead_code)]
pub fn banking77() -> Vec<Record> {
    let f = std::fs::File::open(shared("banking77-train.csv")).expect("open banking77");
    let mut o = Options::new(Format::Csv);
    o.label_field = Some("category".into());
    parse_all(f, o).expect("parse banking77").0
}
