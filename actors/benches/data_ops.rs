//! Throughput of the data cores, each next to a baseline run in the same process.
//!
//! Run: `cargo bench -p flotilla-actors --bench data_ops` (optionally with `-- <repeat>`,
//! default 10: how many copies of Banking77 the parse and per-core passes run over). `-- quick`
//! runs one copy, times each step once instead of best of three, and skips the Python baseline.
//!
//! - parse: MB/s of CSV (Banking77) and JSONL (SGD pairs) through `Ingest`, against reading
//!   the same bytes line by line (the floor any parser pays).
//! - normalize + PII + exact dedup: MB/s on one core.
//! - near dedup: documents/s of sketch + merge, against a straightforward single-threaded
//!   MinHash written below (SipHash per permutation, band keys in a HashMap), and against the
//!   Python `datasketch` package when it is installed (spawned as a subprocess; the bench says
//!   when it is not).
//!
//! - shard building: MB/s of records cut into shards (canonical encoding + blake3), against
//!   blake3 alone over the same number of bytes; shard decode MB/s beside it.
//! - three-phase near dedup (summaries of 10 shards, one decision, apply per shard) against
//!   the single call on all records: the cost of running it cluster-wide, minus the network.
//!
//! Timings are the best of three runs (one in quick mode); numbers depend on the machine, ratios
//! much less.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flotilla_actors::data::ingest::{parse_all, Format, Options};
use flotilla_actors::data::job::{decide::decide, worker};
use flotilla_actors::data::ops::dedup::{MinHasher, NearParams};
use flotilla_actors::data::ops::{apply_chain, ExactParams, Op};
use flotilla_actors::data::record::{Record, TEXT};
use flotilla_actors::data::shard::decode_body;
use flotilla_actors::data::upload::ShardBuilder;

/// Data set `name` in the repository: `node/data/` for Banking77's files, `tests/data/` for
/// the others.
fn shared(name: &str) -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    if name.starts_with("banking77-") {
        root.join("node/data").join(name)
    } else {
        root.join("tests/data").join(name)
    }
}

/// Timed runs of each step: 3, or 1 in quick mode.
static RUNS: AtomicUsize = AtomicUsize::new(3);

fn best<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..RUNS.load(Ordering::Relaxed).max(1) {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        out = Some(v);
    }
    (best, out.unwrap())
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// The baseline MinHash: one SipHash (std's `DefaultHasher`) per (permutation, shingle), word
/// unigrams as in the default parameters, LSH with band tuples as HashMap keys, candidates
/// verified by exact Jaccard. Written plainly, as a first implementation would be.
fn baseline_near_dedup(texts: &[String], num_perm: usize, bands: usize, threshold: f64) -> usize {
    let rows = num_perm / bands;
    let sets: Vec<HashSet<String>> = texts
        .iter()
        .map(|t| {
            t.split_whitespace()
                .map(|w| {
                    w.trim_matches(|c: char| !c.is_alphanumeric())
                        .to_lowercase()
                })
                .filter(|w| !w.is_empty())
                .collect()
        })
        .collect();
    let sigs: Vec<Vec<u64>> = sets
        .iter()
        .map(|s| {
            (0..num_perm)
                .map(|p| {
                    s.iter()
                        .map(|w| {
                            let mut h = std::collections::hash_map::DefaultHasher::new();
                            p.hash(&mut h);
                            w.hash(&mut h);
                            h.finish()
                        })
                        .min()
                        .unwrap_or(u64::MAX)
                })
                .collect()
        })
        .collect();
    let mut buckets: HashMap<(usize, Vec<u64>), Vec<usize>> = HashMap::new();
    for (i, sig) in sigs.iter().enumerate() {
        for b in 0..bands {
            buckets
                .entry((b, sig[b * rows..(b + 1) * rows].to_vec()))
                .or_default()
                .push(i);
        }
    }
    let mut pairs = HashSet::new();
    for m in buckets.values() {
        for (x, &i) in m.iter().enumerate() {
            for &j in &m[x + 1..] {
                let (a, b) = (&sets[i], &sets[j]);
                let inter = a.intersection(b).count() as f64;
                if inter / a.union(b).count().max(1) as f64 >= threshold {
                    pairs.insert((i.min(j), i.max(j)));
                }
            }
        }
    }
    pairs.len()
}

const DATASKETCH: &str = r#"
import sys, time
from datasketch import MinHash, MinHashLSH
texts = [l.rstrip("\n") for l in open(sys.argv[1], encoding="utf-8")]
num_perm, threshold = int(sys.argv[2]), float(sys.argv[3])
best = None
for _ in range(3):
    t = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    sigs = []
    for i, s in enumerate(texts):
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch([w.encode() for w in set(x.strip(".,?!;:'\"()").lower() for x in s.split()) if w])
        lsh.insert(i, m)
        sigs.append(m)
    pairs = sum(len(lsh.query(m)) - 1 for m in sigs)
    d = time.perf_counter() - t
    best = d if best is None else min(best, d)
print(best)
"#;

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    if quick {
        RUNS.store(1, Ordering::Relaxed);
    }
    let repeat: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if quick { 1 } else { 10 });
    println!("data_ops bench: Banking77 × {repeat}");
    let one = std::fs::read(shared("banking77-train.csv")).expect("banking77-train.csv");
    let header_end = one.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut csv = one.clone();
    for _ in 1..repeat {
        csv.extend_from_slice(&one[header_end..]);
    }
    let jsonl = std::fs::read(shared("sgd-service-pairs.jsonl")).expect("sgd-service-pairs.jsonl");

    // Parse.
    let (d_lines, n_lines) = best(|| (&csv[..]).lines().count());
    let mut o = Options::new(Format::Csv);
    o.label_field = Some("category".into());
    let (d_csv, (records, _)) = best(|| parse_all(&csv[..], o.clone()).unwrap());
    let mut oj = Options::new(Format::Jsonl);
    oj.text_field = "prompt".into();
    let (d_json, (jrecords, _)) = best(|| parse_all(&jsonl[..], oj.clone()).unwrap());
    println!(
        "parse CSV:   {:>7.1} MB/s ({} records, {:.1} MB); baseline line split {:>7.1} MB/s ({n_lines} lines), ratio {:.2}",
        mbps(csv.len(), d_csv),
        records.len(),
        csv.len() as f64 / 1e6,
        mbps(csv.len(), d_lines),
        mbps(csv.len(), d_csv) / mbps(csv.len(), d_lines)
    );
    println!(
        "parse JSONL: {:>7.1} MB/s ({} records)",
        mbps(jsonl.len(), d_json),
        jrecords.len()
    );

    // normalize + PII + exact dedup on one core.
    let text_bytes: usize = records.iter().map(|r| r.fields[TEXT].len()).sum();
    let chain = vec![
        Op::Normalize(Default::default()),
        Op::Pii(Default::default()),
        Op::DedupExact(ExactParams::default()),
    ];
    let (d_chain, (kept, _)) = best(|| apply_chain(records.clone(), &chain).unwrap());
    let (d_clone, _) = best(|| records.clone());
    let d_chain = d_chain.saturating_sub(d_clone);
    println!(
        "normalize+pii+dedup-exact: {:>7.1} MB/s of text per core ({} → {} records)",
        mbps(text_bytes, d_chain),
        records.len(),
        kept.len()
    );

    // Near dedup on the distinct Banking77 texts and SGD prompts.
    let texts: Vec<String> = records
        .iter()
        .take(10_003)
        .chain(jrecords.iter())
        .map(|r| r.fields[TEXT].clone())
        .collect();
    let params = NearParams::default();
    let mh = MinHasher::new(params.clone()).unwrap();
    let (bands, _) = mh.banding();
    let recs: Vec<Record> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| Record::text(i as u64, t.clone()))
        .collect();
    let (d_near, res) = best(|| mh.merge(mh.shard_sketches(&recs).unwrap()));
    let (d_base, base_pairs) =
        best(|| baseline_near_dedup(&texts, params.num_perm, bands, params.threshold));
    let ours = texts.len() as f64 / d_near.as_secs_f64();
    let base = texts.len() as f64 / d_base.as_secs_f64();
    println!(
        "near dedup ({} docs, {} perms, {bands} bands): {:>9.0} docs/s ({} pairs); baseline Rust MinHash {:>9.0} docs/s ({base_pairs} pairs), ratio {:.1}×",
        texts.len(),
        params.num_perm,
        ours,
        res.pairs.len(),
        base,
        ours / base
    );

    // Shard building and decoding.
    let (d_build, shards) = best(|| {
        let mut b = ShardBuilder::new("bench", 1, 10_000, 64 << 20).unwrap();
        let mut out: Vec<_> = records.iter().flat_map(|r| b.push(r.clone())).collect();
        out.extend(b.finish().0);
        out
    });
    let body_bytes: usize = shards.iter().map(|s| s.body.len()).sum();
    let joined: Vec<u8> = shards.iter().flat_map(|s| s.body.iter().copied()).collect();
    let (d_hash, _) = best(|| blake3::hash(&joined));
    let (d_decode, _) = best(|| {
        shards
            .iter()
            .map(|s| decode_body(&s.body).unwrap().len())
            .sum::<usize>()
    });
    println!(
        "shard build: {:>7.1} MB/s of body ({} shards); baseline blake3 alone {:>7.1} MB/s, ratio {:.2}; decode {:>7.1} MB/s",
        mbps(body_bytes, d_build),
        shards.len(),
        mbps(body_bytes, d_hash),
        mbps(body_bytes, d_build) / mbps(body_bytes, d_hash),
        mbps(body_bytes, d_decode)
    );

    // Near dedup in three phases over 10 shards against the single call.
    let ops = vec![Op::DedupNear(params.clone())];
    let per = recs.len().div_ceil(10);
    let parts: Vec<Vec<Record>> = recs.chunks(per).map(|c| c.to_vec()).collect();
    let (d_phased, kept_phased) = best(|| {
        let sums = parts
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u32, worker::summarize(p.clone(), &ops, &[]).unwrap()))
            .collect();
        let (ds, _) = decide(&ops[0], &sums).unwrap();
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let d = vec![ds[&(i as u32)].clone()];
                worker::apply(p.clone(), &ops, &d).unwrap().0.len()
            })
            .sum::<usize>()
    });
    let (d_single, (kept_single, _)) = best(|| apply_chain(recs.clone(), &ops).unwrap());
    assert_eq!(kept_phased, kept_single.len());
    println!(
        "near dedup in 3 phases over {} shards: {:>9.0} docs/s; single call {:>9.0} docs/s, ratio {:.2}",
        parts.len(),
        recs.len() as f64 / d_phased.as_secs_f64(),
        recs.len() as f64 / d_single.as_secs_f64(),
        d_single.as_secs_f64() / d_phased.as_secs_f64()
    );

    if quick {
        println!("datasketch: not run in quick mode");
        return;
    }
    let path = std::env::temp_dir().join(format!("flotilla-bench-{}.txt", std::process::id()));
    std::fs::write(&path, texts.join("\n")).unwrap();
    let py = std::process::Command::new("python3")
        .arg("-c")
        .arg(DATASKETCH)
        .arg(&path)
        .arg(params.num_perm.to_string())
        .arg(params.threshold.to_string())
        .output();
    let _ = std::fs::remove_file(&path);
    match py {
        Ok(o) if o.status.success() => {
            let secs: f64 = String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .unwrap_or(f64::NAN);
            let ds = texts.len() as f64 / secs;
            println!(
                "datasketch (Python, same docs, {} perms): {ds:>9.0} docs/s, ratio {:.1}×",
                params.num_perm,
                ours / ds
            );
        }
        Ok(o) => println!(
            "datasketch: not installed or failed (`pip install datasketch` to compare): {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => println!("datasketch: python3 not available ({e}); no Python baseline"),
    }
}
