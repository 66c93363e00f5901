//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::print_stdout)]

use std::path::PathBuf;

/// A file under the shared data folder (`../../shared` from this crate, or `$FLOTILLA_SHARED`).
/// The data sets sit beside the repository wherever it is developed or tested, so a missing
/// file fails the test with a clear message rather than letting it pass without running.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let root = std::env::var_os("FLOTILLA_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let p = root.join(rel);
    assert!(
        p.exists(),
        "{} not found: lay the shared data beside the repository or set FLOTILLA_SHARED",
        p.display()
    );
    Some(p)
}

/// A committed fixture file.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A seeded RNG for a randomised test: the seed comes from `FLOTILLA_TEST_SEED` when set (to
/// replay a failure) and is random otherwise; it is printed either way.
pub fn seeded(name: &str) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    let seed = std::env::var("FLOTILLA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("{name}: seed {seed} (replay with FLOTILLA_TEST_SEED={seed})");
    rand::rngs::StdRng::seed_from_u64(seed)
}
