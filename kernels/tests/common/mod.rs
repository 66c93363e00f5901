//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::print_stdout)]

use std::path::PathBuf;

/// A file under the shared data folder (`../../shared` from this crate, or `$FLOTILLA_SHARED`),
/// or `None` with a printed note so the test can skip where the data is not laid out.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let root = std::env::var_os("FLOTILLA_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let p = root.join(rel);
    if p.exists() {
        Some(p)
    } else {
        println!("skipping: {} not found", p.display());
        None
    }
}

/// A committed fixture file.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}
