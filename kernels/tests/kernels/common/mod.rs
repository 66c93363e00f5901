//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::print_stdout)]

use std::path::PathBuf;

/// A data set or model in the repository: `data/<name>` under `tests/data/` (Banking77's
/// files under `node/data/`), `models/<name>` under `tests/fixtures/models/`, where
/// `tests/fixtures/fetch.sh` puts it. A missing file fails the test with a clear message rather
/// than letting it pass without running.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = match rel {
        r if r.starts_with("data/banking77-") => root.join("node").join(r),
        r => match (r.strip_prefix("data/"), r.strip_prefix("models/")) {
            (Some(data), _) => root.join("tests/data").join(data),
            (_, Some(model)) => root.join("tests/fixtures/models").join(model),
            _ => root.join(r),
        },
    };
    assert!(
        p.exists(),
        "{} not found (models are fetched by tests/fixtures/fetch.sh)",
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
