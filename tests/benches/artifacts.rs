//! Swarm download of a model's files: all-MiniLM-L6-v2 (its 90 MB `model.safetensors` and the
//! small files beside it) fetched by a node that holds none of it, from three holders at once
//! vs from one holder, in the same run, alternating so that both see the same machine.
//!
//! Four in-process nodes with a replication factor of 3: the model is registered on one node,
//! its files are copied to two more by the replicator, and the fourth downloads them with the
//! same code a replica uses (`models::fetch::download_blob`: pieces from every holder at once,
//! each piece checked, the whole blob hashed before it is kept). Between runs the fourth node
//! drops what it fetched. All four nodes share this machine, so the three holders share its
//! cores: the ratio shows what the swarm gains when the holders, not the network, are the
//! limit here; on separate machines each holder brings its own disk and uplink.
//!
//! Run: `cargo bench -p flotilla-tests --bench artifacts --profile dev` (`-- quick`: one run of
//! each instead of three). Reads all-MiniLM-L6-v2 from `tests/fixtures/models/`, where
//! `tests/fixtures/fetch.sh` puts it.

// A benchmark reports on stdout and may panic on a broken setup.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use flotilla_node::models::artifacts::{register_folder, ServedModel};
use flotilla_node::models::fetch::download_blob;
use flotilla_protocol::catalog::Record;
use flotilla_tests::{wait_until, TestCluster};

const DEADLINE: Duration = Duration::from_secs(300);
const NODES: usize = 4;
const FACTOR: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let runs = if quick { 1 } else { 3 };
    let cluster =
        TestCluster::start_with(NODES, Some(Box::new(|_, c| c.model_replication = FACTOR)))
            .await
            .unwrap();
    wait_until(DEADLINE, "convergence", || cluster.converged())
        .await
        .unwrap();

    // Register on node 0 the way `POST /api/v1/models` does, then let the replicator copy it.
    let origin = cluster.node(0);
    let folder = flotilla_tests::shared("models/all-MiniLM-L6-v2");
    let (me, blobs) = (
        origin.serving.me.clone(),
        origin.serving.files.blobs.clone(),
    );
    let record =
        tokio::task::spawn_blocking(move || register_folder("minilm", 1, &folder, &me, &blobs))
            .await
            .unwrap()
            .unwrap();
    let model = ServedModel::from_record(&record).unwrap();
    origin.catalog.put(Record::Model(record)).await.unwrap();
    let hashes: Vec<String> = model.artifacts.values().cloned().collect();
    let holds_all = |i: usize| {
        hashes
            .iter()
            .all(|h| cluster.node(i).serving.files.blobs.contains(h))
    };
    wait_until(DEADLINE, "3 holders of every file", || {
        let n = (0..NODES).filter(|&i| holds_all(i)).count();
        async move { n >= FACTOR }
    })
    .await
    .unwrap();
    let holders: Vec<usize> = (0..NODES).filter(|&i| holds_all(i)).collect();
    let target = (0..NODES).find(|i| !holders.contains(i)).unwrap();
    let holder_ids: Vec<String> = holders
        .iter()
        .map(|&i| cluster.node(i).serving.me.clone())
        .collect();
    let bytes: u64 = model.sizes.values().sum();
    println!(
        "model: {} files, {:.1} MB; holders: nodes {holders:?}; downloading to node {target}",
        model.artifacts.len(),
        bytes as f64 / 1e6
    );

    let node = cluster.node(target);
    let (transport, store) = (
        node.serving.files.transport.clone(),
        node.serving.files.blobs.clone(),
    );
    let fetch_all = |from: Vec<String>| {
        let (transport, store, model) = (transport.clone(), store.clone(), model.clone());
        async move {
            for h in model.artifacts.values() {
                if store.contains(h) {
                    store.remove(h).unwrap();
                }
            }
            let started = Instant::now();
            for (file, h) in &model.artifacts {
                download_blob(
                    &*transport,
                    &store,
                    h,
                    model.sizes.get(file).copied(),
                    &from,
                )
                .await
                .unwrap();
            }
            started.elapsed().as_secs_f64()
        }
    };
    let (mut one, mut swarm) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        one.push(fetch_all(holder_ids[..1].to_vec()).await);
        swarm.push(fetch_all(holder_ids.clone()).await);
    }
    let mb = bytes as f64 / 1e6;
    let (t1, t3) = (median(one), median(swarm));
    println!(
        "from 1 holder:  {t1:.2} s ({:.0} MB/s), median of {runs}",
        mb / t1
    );
    println!(
        "from {} holders: {t3:.2} s ({:.0} MB/s), median of {runs}",
        holder_ids.len(),
        mb / t3
    );
    println!("swarm / one holder: {:.2}x", t1 / t3);
    cluster.shutdown().await.unwrap();
}
