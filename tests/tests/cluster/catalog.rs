//! The replicated catalog on real in-process clusters: concurrent writes converge, a restarted
//! node reloads its entries, a node that missed writes catches up by anti-entropy, and the
//! HTTP API reports bad input by field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_node::config::NodeConfig;
use flotilla_protocol::catalog::{CatalogKey, Entry, Lineage, ModelVersion, Record};
use flotilla_protocol::hlc::Hlc;
use flotilla_protocol::services::catalog::{Delta, Digest};
use flotilla_protocol::MemberState;
use flotilla_tests::{wait_until, TestCluster};
use serde_json::{json, Value};

/// Anti-entropy every 500 ms so tests do not wait for the 5 s default.
async fn cluster(n: usize) -> anyhow::Result<TestCluster> {
    TestCluster::start_with(
        n,
        Some(Box::new(|_, c: &mut NodeConfig| {
            c.catalog_sync_interval = Duration::from_millis(500)
        })),
    )
    .await
}

fn hash_of(tag: u64) -> String {
    format!("{tag:064x}")
}

fn model_body(tag: u64, writer: &str) -> Value {
    json!({
        "metadata": { "writer": writer },
        "artifact_hashes": { "weights.bin": hash_of(tag) },
    })
}

async fn put_model(
    cluster: &TestCluster,
    i: usize,
    name: &str,
    version: u64,
    body: &Value,
) -> anyhow::Result<()> {
    let url = format!(
        "{}/api/v1/catalog/models/{name}/{version}",
        cluster.node(i).api_url()
    );
    let resp = reqwest::Client::new().put(url).json(body).send().await?;
    let status = resp.status();
    anyhow::ensure!(
        status == 200,
        "PUT at node {i}: {status} {}",
        resp.text().await?
    );
    Ok(())
}

/// Node `i`'s digest and every entry, tombstones and timestamps included.
async fn replica(
    cluster: &TestCluster,
    i: usize,
) -> anyhow::Result<(Digest, Vec<(CatalogKey, Entry)>)> {
    let c = &cluster.node(i).catalog;
    Ok((c.digest().await?, c.list(None).await?))
}

/// Whether the replicas of `nodes` hold exactly `len` entries and are equal.
async fn equal_replicas(cluster: &TestCluster, nodes: &[usize], len: usize) -> bool {
    let mut first = None;
    for &i in nodes {
        let Ok(r) = replica(cluster, i).await else {
            return false;
        };
        if r.1.len() != len {
            return false;
        }
        match &first {
            None => first = Some(r),
            Some(f) if *f != r => return false,
            Some(_) => {}
        }
    }
    true
}

async fn listing(cluster: &TestCluster, i: usize, query: &str) -> anyhow::Result<Value> {
    let url = format!("{}/api/v1/catalog{query}", cluster.node(i).api_url());
    Ok(reqwest::get(url).await?.error_for_status()?.json().await?)
}

async fn metric(cluster: &TestCluster, i: usize, name: &str) -> anyhow::Result<f64> {
    let url = format!("{}/metrics", cluster.node(i).api_url());
    let text = reqwest::get(url).await?.text().await?;
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .ok_or_else(|| anyhow::anyhow!("no metric {name}"))?;
    Ok(line.rsplit(' ').next().unwrap_or("").parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_at_three_nodes_converge_to_one_state() -> anyhow::Result<()> {
    let cluster = cluster(3).await?;
    wait_until(Duration::from_secs(30), "convergence", || {
        cluster.converged()
    })
    .await?;

    // Each node writes its own models and, at the same time, the same key as the others.
    let writes = (0..3).map(|i| {
        let cluster = &cluster;
        async move {
            for v in 1..=3 {
                put_model(cluster, i, &format!("own-{i}"), v, &model_body(v, "own")).await?;
            }
            put_model(
                cluster,
                i,
                "shared",
                1,
                &model_body(100 + i as u64, &format!("node-{i}")),
            )
            .await
        }
    });
    for r in futures::future::join_all(writes).await {
        r?;
    }
    let took = wait_until(
        Duration::from_secs(30),
        "three replicas to hold the same 10 entries",
        || equal_replicas(&cluster, &[0, 1, 2], 10),
    )
    .await?;
    eprintln!("catalog convergence after concurrent writes: {took:?}");

    // One of the three concurrent writes of the shared key won, the same everywhere.
    let (_, entries) = replica(&cluster, 0).await?;
    let shared = entries
        .iter()
        .find(|(k, _)| *k == CatalogKey::model("shared", 1))
        .map(|(_, e)| e.clone());
    let Some(Entry::Register(r)) = shared else {
        anyhow::bail!("shared key missing or not a register: {shared:?}");
    };
    let Some(Record::Model(m)) = r.value else {
        anyhow::bail!("shared key holds no model");
    };
    let writer = m.metadata.get("writer").cloned().unwrap_or_default();
    assert!(
        ["node-0", "node-1", "node-2"].contains(&writer.as_str()),
        "{writer}"
    );
    assert_eq!(
        m.artifact_hashes["weights.bin"],
        hash_of(100 + writer[5..].parse::<u64>()?)
    );

    // The HTTP listing agrees on every node, and ?kind= filters.
    let l0 = listing(&cluster, 0, "").await?;
    assert_eq!(l0["entries"].as_array().map(Vec::len), Some(10));
    for i in 1..3 {
        assert_eq!(listing(&cluster, i, "").await?, l0, "node {i} listing");
    }
    let aliases = listing(&cluster, 1, "?kind=alias").await?;
    assert_eq!(aliases["entries"].as_array().map(Vec::len), Some(0));
    assert_eq!(metric(&cluster, 2, "flotilla_catalog_entries").await?, 10.0);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_reloads_its_entries_and_converges_again() -> anyhow::Result<()> {
    let mut cluster = cluster(3).await?;
    wait_until(Duration::from_secs(30), "convergence", || {
        cluster.converged()
    })
    .await?;
    for i in 0..3 {
        put_model(
            &cluster,
            i,
            &format!("m{i}"),
            1,
            &model_body(i as u64, "first"),
        )
        .await?;
    }
    wait_until(Duration::from_secs(30), "3 equal replicas", || {
        equal_replicas(&cluster, &[0, 1, 2], 3)
    })
    .await?;
    let before = replica(&cluster, 2).await?;

    // Kill every node, then bring node 2 back alone: whatever it holds came from its store.
    for i in 0..3 {
        cluster.kill(i).await;
    }
    cluster.restart(2).await?;
    assert!(cluster.node(2).connected_peers().await.is_empty());
    assert_eq!(
        replica(&cluster, 2).await?,
        before,
        "reloaded replica differs"
    );

    // It writes while alone (the write is acknowledged after a synced save), then the others
    // come back and everything converges.
    put_model(&cluster, 2, "m2", 2, &model_body(22, "alone")).await?;
    cluster.restart(0).await?;
    cluster.restart(1).await?;
    put_model(&cluster, 0, "m0", 2, &model_body(20, "after")).await?;
    wait_until(Duration::from_secs(30), "membership after restarts", || {
        cluster.converged()
    })
    .await?;
    wait_until(
        Duration::from_secs(30),
        "3 equal replicas of 5 entries",
        || equal_replicas(&cluster, &[0, 1, 2], 5),
    )
    .await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_during_writes_catches_up_by_anti_entropy() -> anyhow::Result<()> {
    let mut cluster = cluster(3).await?;
    wait_until(Duration::from_secs(30), "convergence", || {
        cluster.converged()
    })
    .await?;
    let down = cluster.node(2).node_id();
    cluster.kill(2).await;
    wait_until(Duration::from_secs(15), "node 2 declared dead", || async {
        cluster.state_seen_by(0, &down).await == Some(MemberState::Dead)
    })
    .await?;

    for v in 1..=4 {
        put_model(
            &cluster,
            (v % 2) as usize,
            "missed",
            v,
            &model_body(v, "while-down"),
        )
        .await?;
    }
    // Entries merged at node 1 as if from a peer are never gossiped by it: only anti-entropy
    // can carry them to the others.
    let now = flotilla_actors::clock::wall_ms();
    let injected = ModelVersion {
        name: "repaired".into(),
        version: 1,
        metadata: BTreeMap::new(),
        artifact_hashes: BTreeMap::from([("w.bin".to_string(), hash_of(7))]),
        lineage: Lineage {
            parent_version: None,
            operation: "upload".into(),
            parameters: BTreeMap::new(),
        },
        created_at_ms: now,
    };
    let hlc = Hlc {
        physical_ms: now,
        logical: 0,
        node: cluster.node(1).node_id(),
    };
    let key = CatalogKey::model("repaired", 1);
    let merged = cluster
        .node(1)
        .catalog
        .merge(Delta {
            entries: vec![(key.clone(), {
                // Sealed with node 1's own key, as its writer would have.
                let identity =
                    flotilla_node::identity::load_or_create(&cluster.node(1).config().data_dir)?;
                let mut entry = Entry::write(hlc, Record::Model(injected));
                flotilla_node::identity::catalog_keys(&identity)?.seal(&key, &mut entry);
                entry
            })],
        })
        .await?;
    assert_eq!(merged.applied, 1);
    wait_until(Duration::from_secs(30), "nodes 0 and 1 to agree", || {
        equal_replicas(&cluster, &[0, 1], 5)
    })
    .await?;

    cluster.restart(2).await?;
    let took = wait_until(
        Duration::from_secs(30),
        "the restarted node to catch up",
        || equal_replicas(&cluster, &[0, 1, 2], 5),
    )
    .await?;
    eprintln!("catch-up by anti-entropy: {took:?}");
    assert!(cluster.node(2).catalog.get(key).await?.is_some());
    let rounds: f64 = {
        let mut sum = 0.0;
        for i in 0..3 {
            sum += metric(&cluster, i, "flotilla_catalog_sync_rounds_total").await?;
        }
        sum
    };
    assert!(rounds >= 1.0, "no anti-entropy round was counted");
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_api_names_bad_fields_and_unknown_entries() -> anyhow::Result<()> {
    let cluster = cluster(1).await?;
    let base = format!("{}/api/v1/catalog", cluster.node(0).api_url());
    let http = reqwest::Client::new();

    // Several bad fields at once, each named.
    let resp = http
        .put(format!("{base}/models/bad/1"))
        .json(&json!({
            "artifact_hashes": { "w.bin": "not-a-hash" },
            "lineage": { "parent_version": 3 },
        }))
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "invalid");
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert!(fields.contains(&"artifact_hashes.w.bin"), "{body}");
    assert!(fields.contains(&"lineage.parent_version"), "{body}");

    for (url, field) in [
        (format!("{base}/models/bad%2Fname/1"), "name"),
        (format!("{base}/models/ok/zero"), "version"),
        (format!("{base}/models/ok/0"), "version"),
    ] {
        let resp = http.put(&url).json(&model_body(1, "x")).send().await?;
        assert_eq!(resp.status(), 400, "{url}");
        let body: Value = resp.json().await?;
        assert_eq!(body["error"]["fields"][0]["field"], field, "{url}: {body}");
    }
    let resp = http
        .put(format!("{base}/models/ok/1"))
        .json(&json!({ "unknown": 1 }))
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    let resp = http.get(format!("{base}?kind=widgets")).send().await?;
    assert_eq!(resp.status(), 400);

    // Unknown entries are 404 with a JSON body; a deleted one is unknown again.
    let resp = http.get(format!("{base}/models/ok/1")).send().await?;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "not_found");
    put_model(&cluster, 0, "ok", 1, &model_body(1, "x")).await?;
    let resp = http.get(format!("{base}/models/ok/1")).send().await?;
    assert_eq!(resp.status(), 200);
    let resp = http
        .put(format!("{base}/aliases/ok/production"))
        .json(&json!({ "version": 1 }))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let resp = http.delete(format!("{base}/models/ok/1")).send().await?;
    assert_eq!(resp.status(), 200);
    let resp = http.delete(format!("{base}/models/ok/1")).send().await?;
    assert_eq!(resp.status(), 404);
    let l = listing(&cluster, 0, "").await?;
    assert_eq!(l["entries"].as_array().map(Vec::len), Some(1), "{l}");
    assert_eq!(listing(&cluster, 0, "?kind=alias").await?, l);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_catalog_frames_are_counted_and_valid_syncs_answered() -> anyhow::Result<()> {
    use flotilla_protocol::codec;
    use flotilla_protocol::services::catalog;
    use flotilla_protocol::RequestId;
    use flotilla_tests::raw_peer::RawOutcome;

    let cluster = cluster(1).await?;
    let target = cluster.node(0);
    let addr = target.listen_addrs()[0].clone();
    put_model(&cluster, 0, "served", 1, &model_body(5, "x")).await?;
    let rejected = "flotilla_net_rejected_frames_total{service=\"catalog\"}";

    let mut over_cap = (catalog::MAX_MESSAGE_BYTES as u64 + 1)
        .to_be_bytes()
        .to_vec();
    over_cap.extend_from_slice(&[0; 64]);
    let mut hostile = cluster.raw_member(catalog::PROTOCOL)?;
    hostile.connect(addr.clone(), target.peer_id).await?;
    let outcome = hostile.send(target.peer_id, over_cap).await?;
    assert!(matches!(outcome, RawOutcome::Failed(_)), "{outcome:?}");
    assert!(
        !hostile
            .is_connected_after(target.peer_id, Duration::from_millis(500))
            .await,
        "connection left open"
    );
    wait_until(
        Duration::from_secs(5),
        "the rejection to be counted",
        || async { metric(&cluster, 0, rejected).await.unwrap_or(0.0) >= 1.0 },
    )
    .await?;

    // An empty replica's digest is answered with the one entry, under the request's id.
    let empty = flotilla_actors::catalog::Catalog::new(
        Default::default(),
        flotilla_actors::catalog::Keys::from_seed("empty"),
    );
    let frame = codec::encode_frame::<_, { catalog::MAX_MESSAGE_BYTES }>(
        catalog::SERVICE,
        &catalog::Request {
            id: RequestId(9),
            body: catalog::RequestBody::Sync(empty.digest()),
        },
    )?;
    let mut polite = cluster.raw_member(catalog::PROTOCOL)?;
    polite.connect(addr, target.peer_id).await?;
    match polite.send(target.peer_id, frame).await? {
        RawOutcome::Response(bytes) => {
            let resp: catalog::Response =
                codec::decode_frame::<_, { catalog::MAX_MESSAGE_BYTES }>(catalog::SERVICE, &bytes)?;
            assert_eq!(resp.id, RequestId(9));
            let Ok(catalog::ResponseBody::Sync(reply)) = resp.body else {
                anyhow::bail!("not a sync reply: {resp:?}");
            };
            assert_eq!(reply.delta.entries.len(), 1);
            assert_eq!(reply.delta.entries[0].0, CatalogKey::model("served", 1));
        }
        other => anyhow::bail!("valid sync failed: {other:?}"),
    }
    assert_eq!(metric(&cluster, 0, rejected).await?, 1.0);
    cluster.shutdown().await
}
