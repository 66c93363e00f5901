//! Data-stage throughput through the cluster path, each next to an in-process single-call
//! baseline measured in the same run:
//!
//! - upload MB/s: HTTP upload to a 3-node cluster (spool, ingest, shard, hash, push to two
//!   holders over `/flotilla/data/1`, catalog write) vs parsing and sharding the same bytes in
//!   one call (`ingest::parse_all` + `ShardBuilder`);
//! - normalize + pii + exact dedup MB/s: the chain as a `DataOps` job over the shard holders
//!   (three phases, output replicated) vs `ops::apply_chain` on the same records in one call;
//! - near dedup documents/s: `dedup-near` (threshold 0.8) as a job on the upload vs the same op
//!   in one call.
//!
//! Run: `cargo bench -p flotilla-tests --bench data --profile dev` (the dev profile optimises
//! the data cores; a release build would rebuild rocksdb). `-- quick` runs each input's first
//! 256 KB (whole lines) instead of the whole file; `-- banking`, `sgd` or `shakespeare` runs
//! one input.

// A benchmark reports on stdout and may panic on a broken setup.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use flotilla_actors::data::ingest::{parse_all, Format, Options};
use flotilla_actors::data::ops::{self, Op};
use flotilla_actors::data::upload::ShardBuilder;
use flotilla_tests::{wait_until, TestCluster};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(300);
/// Bytes of each input in quick mode, cut back to the end of a line.
const QUICK_BYTES: usize = 256 << 10;

struct Input {
    name: &'static str,
    file: &'static str,
    format: Format,
    text_field: &'static str,
    label_field: Option<&'static str>,
}

const INPUTS: &[Input] = &[
    Input {
        name: "banking",
        file: "banking77-train.csv",
        format: Format::Csv,
        text_field: "text",
        label_field: Some("category"),
    },
    Input {
        name: "sgd",
        file: "sgd-service-pairs.jsonl",
        format: Format::Jsonl,
        text_field: "prompt",
        label_field: Some("service"),
    },
    Input {
        name: "shakespeare",
        file: "tinyshakespeare.txt",
        format: Format::Text,
        text_field: "text",
        label_field: None,
    },
];

fn opts(i: &Input) -> Options {
    let mut o = Options::new(i.format);
    o.text_field = i.text_field.to_string();
    o.label_field = i.label_field.map(str::to_string);
    o
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

fn chain() -> Vec<Op> {
    serde_json::from_value(json!([{ "op": "normalize" }, { "op": "pii" }, { "op": "dedup-exact" }]))
        .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let cluster = TestCluster::start(3).await.unwrap();
    wait_until(DEADLINE, "membership to converge", || cluster.converged())
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let api = cluster.node(0).api_url();

    let (mut bytes, mut base_upload, mut base_ops) = (0u64, Duration::ZERO, Duration::ZERO);
    let (mut cluster_upload, mut cluster_ops) = (Duration::ZERO, Duration::ZERO);
    let mut near_rows = Vec::new();
    println!(
        "{:<12} {:>8} {:>9} | {:>12} {:>12} | {:>12} {:>12}",
        "input", "MB", "records", "upload MB/s", "baseline", "ops MB/s", "baseline"
    );
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let quick = args.iter().any(|a| a == "quick");
    let only: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| *a != "quick")
        .collect();
    for input in INPUTS
        .iter()
        .filter(|i| only.is_empty() || only.contains(&i.name))
    {
        let path = flotilla_tests::shared(&format!("data/{}", input.file));
        let mut raw = std::fs::read(path).unwrap();
        if quick && raw.len() > QUICK_BYTES {
            let end = raw[..QUICK_BYTES]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(QUICK_BYTES, |i| i + 1);
            raw.truncate(end);
        }
        let size = raw.len() as u64;

        // Baselines: one call each, in this process.
        let t = Instant::now();
        let (records, _) = parse_all(raw.as_slice(), opts(input)).unwrap();
        let mut b = ShardBuilder::new(input.name, 1, 2000, 64 << 20).unwrap();
        for r in records.iter().cloned() {
            b.push(r);
        }
        let _ = b.finish();
        let upload_base = t.elapsed();
        let t = Instant::now();
        let (kept, _) = ops::apply_chain(records.clone(), &chain()).unwrap();
        let ops_base = t.elapsed();

        let near: Vec<Op> =
            serde_json::from_value(json!([{ "op": "dedup-near", "threshold": 0.8 }])).unwrap();
        let t = Instant::now();
        let (near_kept, _) = ops::apply_chain(records.clone(), &near).unwrap();
        let near_base = t.elapsed();
        if std::env::var_os("DATA_BENCH_TRACE").is_some() {
            println!("{}: near dedup in one call took {near_base:?}", input.name);
        }

        // The cluster path over HTTP.
        let mut q = format!(
            "{api}/api/v1/data?name={}&format={}&text_field={}&records_per_shard=2000",
            input.name,
            format!("{:?}", input.format).to_lowercase(),
            input.text_field
        );
        if let Some(l) = input.label_field {
            q.push_str(&format!("&label_field={l}"));
        }
        let t = Instant::now();
        let resp = http.post(&q).body(raw).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        let up: Value = resp.json().await.unwrap();
        let upload_cluster = t.elapsed();
        assert_eq!(up["record"]["record_count"], records.len() as u64);

        let t = Instant::now();
        let resp = http
            .post(format!("{api}/api/v1/data/{}/ops", input.name))
            .json(&json!({ "wait": true, "ops": serde_json::to_value(chain()).unwrap() }))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let done: Value = resp.json().await.unwrap();
        assert_eq!(status, 201, "{done}");
        let ops_cluster = t.elapsed();
        assert_eq!(done["result"]["records"], kept.len() as u64);

        let t = Instant::now();
        let resp = http
            .post(format!("{api}/api/v1/data/{}/ops", input.name))
            .json(
                &json!({ "version": 1, "wait": true, "ops": serde_json::to_value(&near).unwrap() }),
            )
            .send()
            .await
            .unwrap();
        let done: Value = resp.json().await.unwrap();
        let near_cluster = t.elapsed();
        assert_eq!(done["result"]["records"], near_kept.len() as u64, "{done}");
        let docs = records.len() as f64;
        near_rows.push(format!(
            "{:<12} near dedup {:>10.0} docs/s as a job vs {:>10.0} docs/s in one call (ratio {:.3})",
            input.name,
            docs / near_cluster.as_secs_f64(),
            docs / near_base.as_secs_f64(),
            near_base.as_secs_f64() / near_cluster.as_secs_f64()
        ));

        println!(
            "{:<12} {:>8.2} {:>9} | {:>12.2} {:>12.2} | {:>12.2} {:>12.2}",
            input.name,
            size as f64 / 1e6,
            records.len(),
            mbps(size, upload_cluster),
            mbps(size, upload_base),
            mbps(size, ops_cluster),
            mbps(size, ops_base),
        );
        bytes += size;
        base_upload += upload_base;
        base_ops += ops_base;
        cluster_upload += upload_cluster;
        cluster_ops += ops_cluster;
    }
    let (cu, bu) = (mbps(bytes, cluster_upload), mbps(bytes, base_upload));
    let (co, bo) = (mbps(bytes, cluster_ops), mbps(bytes, base_ops));
    println!(
        "total {:.2} MB: upload {cu:.2} MB/s through the cluster vs {bu:.2} MB/s in one call \
         (ratio {:.3}); normalize+pii+dedup-exact {co:.2} MB/s as a job vs {bo:.2} MB/s in one \
         call (ratio {:.3})",
        bytes as f64 / 1e6,
        cu / bu,
        co / bo
    );
    for row in near_rows {
        println!("{row}");
    }
    cluster.shutdown().await.unwrap();
}
