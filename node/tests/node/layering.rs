//! The node crate's modules depend on each other in one direction: no import cycle between its
//! top-level modules (folders and files), model code (`src/models/`) imports neither serving
//! nor training, and no file imports from both `src/serving/` and `src/train/` (the daemon wires
//! training in `daemon/training.rs`, apart from serving). The crates follow the architecture's
//! rules too (`actors` free of the kernels, the numerics a leaf).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
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
fn no_file_imports_both_serving_and_training() {
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
        assert!(
            !(serving && train),
            "{rel} imports from both serving and training"
        );
    }
}

/// The top-level module of `src` each top-level module imports (`crate::m` outside comments).
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in sources(&root) {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let from = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (at, _) in line.match_indices("crate::") {
                let to: String = line[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                let is_module = root.join(&to).is_dir() || root.join(format!("{to}.rs")).is_file();
                if !to.is_empty() && to != from && is_module {
                    graph.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    graph
}

/// A path from `from` back to itself through `graph`, if there is one.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in graph.get(last).into_iter().flatten() {
            if next == from {
                let mut cycle = path.clone();
                cycle.push(from.to_string());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let graph = module_graph();
    assert!(
        graph.get("daemon").is_some_and(|d| d.contains("serving")),
        "the scan sees the daemon's imports: {graph:?}"
    );
    for m in graph.keys() {
        if let Some(cycle) = cycle_through(&graph, m) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        cycle_through(&graph, "a").unwrap(),
        vec!["a", "b", "c", "a"]
    );
    assert!(cycle_through(&graph, "d").is_none());
}

/// The `[dependencies]` of the workspace crate in folder `dir` (relative to the workspace root).
fn crate_dependencies(dir: &str) -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join(dir).join("Cargo.toml")).unwrap();
    let manifest: toml::Table = toml::from_str(&text).unwrap();
    manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

/// The crate rules of the architecture: `actors` (and so the simulator) stays free of the
/// kernels, the shared numerics are a leaf both use, and only the kernels bind dfdx and cudarc.
#[test]
fn crates_depend_on_each_other_as_the_architecture_says() {
    let actors = crate_dependencies("actors");
    assert!(actors.contains("flotilla-numerics"), "{actors:?}");
    assert!(!actors.contains("flotilla-kernels"), "{actors:?}");
    let kernels = crate_dependencies("kernels");
    assert!(kernels.contains("flotilla-numerics"), "{kernels:?}");
    let numerics = crate_dependencies("kernels/numerics");
    assert!(
        numerics.contains("rand"),
        "the manifest was read: {numerics:?}"
    );
    for dir in ["kernels/numerics", "protocol"] {
        let deps = crate_dependencies(dir);
        assert!(
            deps.iter().all(|d| !d.starts_with("flotilla-")),
            "{dir} is a leaf: {deps:?}"
        );
    }
    for dir in [
        "actors",
        "protocol",
        "kernels/numerics",
        "simulations",
        "node",
    ] {
        let deps = crate_dependencies(dir);
        for heavy in ["dfdx", "cudarc"] {
            assert!(!deps.contains(heavy), "{dir} depends on {heavy}");
        }
    }
    for dir in [
        "actors",
        "protocol",
        "kernels",
        "kernels/numerics",
        "simulations",
    ] {
        let deps = crate_dependencies(dir);
        for io in ["libp2p", "rocksdb"] {
            assert!(!deps.contains(io), "{dir} depends on {io}");
        }
    }
}
