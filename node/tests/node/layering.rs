//! The node crate's folders depend on each other in one direction where it matters: model code
//! (`src/models/`) imports neither serving nor training, and only the daemon, which wires
//! everything together, imports from both `src/serving/` and `src/train/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the source folder is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Whether `text` names module `m` of this crate (`crate::m::…`, `crate::m;`, `crate::{m…`).
fn imports(text: &str, m: &str) -> bool {
    text.contains(&format!("crate::{m}::")) || text.contains(&format!("crate::{m};"))
}

#[test]
fn model_code_imports_neither_serving_nor_training() {
    let files = sources(&src().join("models"));
    assert!(files.len() > 5, "src/models/ holds the model code");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for m in ["serving", "train", "http", "net", "jobs"] {
            assert!(!imports(&text, m), "{} imports crate::{m}", f.display());
        }
    }
}

#[test]
fn only_the_daemon_imports_both_serving_and_training() {
    let root = src();
    for f in sources(&root) {
        let text = std::fs::read_to_string(&f).unwrap();
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let inside = |folder: &str| rel.starts_with(&format!("{folder}/"));
        let serving = inside("serving") || imports(&text, "serving");
        let train = inside("train") || imports(&text, "train");
        if serving && train {
            assert_eq!(
                rel, "daemon.rs",
                "{rel} imports from both serving and training"
            );
        }
    }
}
