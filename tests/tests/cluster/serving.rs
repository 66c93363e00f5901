//! Serving on real in-process clusters: models registered from folders, deployments placed on
//! nodes, a router on every node, and the OpenAI-compatible API driven by the official `openai`
//! Python client; identical requests run once; the cache follows model versions; a replica's
//! death under load costs (almost) no requests and no stream hangs. The router's counters are
//! checked per deployment and per replica, in `/api/v1/serving` and in Prometheus text.
//! (Overload measures the process's memory, so it is `tests/tests/overload.rs`, a process of
//! its own.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_tests::serving::{
    cluster3, deploy, get, post, post_raw, register, replicas, tiny_gpt, url, wait_ready, CORPUS,
    DEADLINE,
};
use flotilla_tests::{wait_until, TestCluster};
use serde_json::{json, Value};

/// As `tests/fixtures/fetch.sh` fetches it.
const MINILM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/models/all-MiniLM-L6-v2"
);

/// The sum of the values of metric `name`'s series whose labels include every `k="v"` of
/// `labels`, in Prometheus text; `None` if there is no such series.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((set, value)) = rest.split_once("} ") else {
            continue;
        };
        let pairs: Vec<&str> = set.split(',').collect();
        if labels
            .iter()
            .all(|(k, v)| pairs.contains(&format!("{k}=\"{v}\"").as_str()))
        {
            *found.get_or_insert(0.0) += value.trim().parse::<f64>().unwrap();
        }
    }
    found
}

/// A virtual environment with the official `openai` package from PyPI.
fn openai_venv(root: &Path) -> PathBuf {
    let venv = root.join("venv");
    let ok = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 must be installed to run the OpenAI client test");
    assert!(ok.success(), "python3 -m venv failed");
    let pip = std::process::Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "openai"])
        .output()
        .expect("pip must run");
    assert!(
        pip.status.success(),
        "pip install openai failed (is PyPI reachable?): {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    venv.join("bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openai_client_drives_a_three_node_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let python = openai_venv(dir.path());
    let cluster = cluster3().await;
    let gpt = register(&cluster, "tiny-gpt", &tiny_gpt(&dir.path().join("gpt"), 1)).await;
    let bert = register(&cluster, "minilm", Path::new(MINILM)).await;
    deploy(
        &cluster,
        json!({"name": "chat", "model": "tiny-gpt", "replicas": 2}),
    )
    .await;
    deploy(
        &cluster,
        json!({"name": "embed", "model": "minilm", "replicas": 2}),
    )
    .await;
    wait_ready(&cluster, "chat", &gpt, 2).await;
    wait_ready(&cluster, "embed", &bert, 2).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/openai_client.py");
    let bases: Vec<String> = (0..3).map(|i| url(&cluster, i, "/v1")).collect();
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .args(&bases)
        .env("CHAT_MODEL", "chat")
        .env("EMBED_MODEL", "embed")
        .output();
    let out = tokio::time::timeout(DEADLINE, out).await.unwrap().unwrap();
    assert!(
        out.status.success(),
        "the openai client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));

    // Bad input, in OpenAI's error shape.
    let (code, v) = post_raw(&cluster, 1, "/v1/chat/completions", b"{not json".to_vec()).await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let huge = json!({"model": "embed", "input": "x".repeat(5 * 1024 * 1024)});
    let (code, v) = post(&cluster, 2, "/v1/embeddings", &huge).await;
    assert_eq!(code, 413, "{v}");
    assert!(v["error"]["message"].is_string());
    let (code, v) = post(
        &cluster,
        0,
        "/v1/embeddings",
        &json!({"model": "nope", "input": "x"}),
    )
    .await;
    assert_eq!(code, 404, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found");
    let (code, v) = post(
        &cluster,
        0,
        "/v1/completions",
        &json!({"model": "chat", "prompt": "x".repeat(60), "max_tokens": 10}),
    )
    .await;
    assert_eq!(code, 400, "prompt + max_tokens beyond the context: {v}");
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_requests_run_once_and_the_cache_follows_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster3().await;
    let v1 = register(&cluster, "tiny-gpt", &tiny_gpt(&dir.path().join("v1"), 1)).await;
    deploy(
        &cluster,
        json!({"name": "chat", "model": "tiny-gpt", "replicas": 3}),
    )
    .await;
    wait_ready(&cluster, "chat", &v1, 3).await;

    // Every node holds the files in its own artifact store, under their blake3 hashes, byte
    // for byte the registered ones: node 0 copied them in when it registered the folder, the
    // others fetched them by hash and checked them against the catalog.
    let registered = dir.path().join("v1");
    let (_, record) = get(&cluster, 0, "/api/v1/catalog/models/tiny-gpt/1").await;
    let hashes = record["value"]["Model"]["artifact_hashes"]
        .as_object()
        .unwrap()
        .clone();
    assert!(record["value"]["Model"]["metadata"]
        .get("serving.path")
        .is_none());
    for i in 0..3 {
        let blobs = cluster.node(i).config().data_dir.join("artifacts/blobs");
        for f in ["manifest.json", "chars.json"] {
            let hash = hashes[f].as_str().unwrap();
            let (a, b) = (
                std::fs::read(blobs.join(hash)),
                std::fs::read(registered.join(f)),
            );
            assert_eq!(a.unwrap(), b.unwrap(), "{f} held intact by node {i}");
        }
    }

    let body = json!({"model": "chat", "prompt": "the cat", "max_tokens": 30, "temperature": 0});
    let (_, before) = replicas(&cluster, "chat", &v1).await;
    let calls = (0..50).map(|_| post(&cluster, 0, "/v1/completions", &body));
    let answers = futures::future::join_all(calls).await;
    let (_, after) = replicas(&cluster, "chat", &v1).await;
    assert!(answers.iter().all(|(c, _)| *c == 200), "{answers:?}");
    let text = answers[0].1["choices"][0]["text"].clone();
    assert!(answers.iter().all(|(_, v)| v["choices"][0]["text"] == text));
    assert_eq!(
        after - before,
        1,
        "50 identical requests ran the model once"
    );
    let (_, stats) = get(&cluster, 0, "/api/v1/serving").await;
    assert_eq!(
        stats["coalesced"].as_u64().unwrap() + stats["cache_hits"].as_u64().unwrap(),
        49,
        "{stats}"
    );
    assert_eq!(
        answers[0].1["system_fingerprint"],
        format!("fp_{}", &v1[..12])
    );
    // The same counters in Prometheus text: requests per deployment, router outcomes.
    let metrics = reqwest::get(url(&cluster, 0, "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "flotilla_serving_requests_total{deployment=\"chat\",endpoint=\"completions\",status=\"200\"} 50"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("flotilla_serving_request_duration_seconds_bucket"));
    // The router's counters for the deployment: 50 requests, 49 of them answered without
    // running (coalesced, or from the cache once the first answer was in), one attempt at one
    // replica; the same in the node's totals, since this node routed nothing else.
    let chat = &stats["by_deployment"]["chat"];
    assert_eq!(chat["requests"], 50, "{stats}");
    assert_eq!(
        chat["coalesced"].as_u64().unwrap() + chat["cache_hits"].as_u64().unwrap(),
        49,
        "{stats}"
    );
    let attempts: u64 = chat["replicas"]
        .as_object()
        .unwrap()
        .values()
        .map(|r| r["attempts"].as_u64().unwrap())
        .sum();
    assert_eq!(attempts, 1, "{stats}");
    let router = |outcome| {
        metric(
            &metrics,
            "flotilla_serving_router",
            &[("deployment", "chat"), ("outcome", outcome)],
        )
        .unwrap_or_else(|| panic!("no router {outcome} series for chat in:\n{metrics}"))
    };
    assert_eq!(router("requests"), 50.0);
    assert_eq!(router("coalesced") + router("cache_hits"), 49.0);
    assert_eq!(
        router("coalesced"),
        stats["by_deployment"]["chat"]["coalesced"]
            .as_u64()
            .unwrap() as f64
    );
    assert_eq!(
        metric(
            &metrics,
            "flotilla_serving_router_node",
            &[("outcome", "requests")]
        ),
        Some(50.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "flotilla_serving_router_replica",
            &[("deployment", "chat"), ("outcome", "attempts")]
        ),
        Some(1.0),
        "one attempt over chat's replicas:\n{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "flotilla_serving_replica_request_duration_seconds_count",
            &[("deployment", "chat")]
        ),
        Some(1.0),
        "one timed attempt at one of chat's replicas:\n{metrics}"
    );
    // A stream is timed to its first piece against the replica that sent it.
    let streamed = reqwest::Client::new()
        .post(url(&cluster, 0, "/v1/completions"))
        .json(&json!({"model": "chat", "prompt": "the mesh", "max_tokens": 5, "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(streamed.contains("data: [DONE]"), "{streamed}");
    let metrics = reqwest::get(url(&cluster, 0, "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(
            &metrics,
            "flotilla_serving_replica_time_to_first_piece_seconds_count",
            &[("deployment", "chat")]
        ),
        Some(1.0),
        "{metrics}"
    );

    // A new version under the same deployment: the same request is computed again, by it.
    let v2 = register(&cluster, "tiny-gpt", &tiny_gpt(&dir.path().join("v2"), 2)).await;
    assert_ne!(v1, v2);
    deploy(
        &cluster,
        json!({"name": "chat", "model": "tiny-gpt", "version": 2, "replicas": 3}),
    )
    .await;
    wait_ready(&cluster, "chat", &v2, 3).await;
    let (code, answer) = post(&cluster, 0, "/v1/completions", &body).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["system_fingerprint"], format!("fp_{}", &v2[..12]));
    assert_eq!(replicas(&cluster, "chat", &v2).await.1, 1);
    cluster.shutdown().await.unwrap();
}

/// Reads an SSE answer to the end; `Ok(true)` if it ended with `[DONE]`, `Ok(false)` if with
/// an error event.
async fn read_stream(api: String, body: Value) -> Result<bool, String> {
    let resp = reqwest::Client::new()
        .post(format!("{api}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("status {}", resp.status()));
    }
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if text.ends_with("data: [DONE]\n\n") {
        Ok(true)
    } else if text.contains("\"error\"") {
        Ok(false)
    } else {
        Err(format!(
            "stream ended with neither [DONE] nor an error: {text}"
        ))
    }
}

/// Outstanding requests at node `i`'s replica of `deployment`.
async fn outstanding(cluster: &TestCluster, i: usize, deployment: &str) -> u64 {
    let (_, v) = get(cluster, i, "/api/v1/serving").await;
    v["replicas"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|r| r["deployment"] == deployment)
        .map(|r| r["outstanding"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_dies_under_steady_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = cluster3().await;
    // A larger model with a long context, so that long streams are still generating when the
    // node dies.
    let path = dir.path().join("big");
    std::fs::create_dir_all(&path).unwrap();
    flotilla_node::models::toy::create_char_gpt_sized(
        &path,
        &CORPUS.repeat(4),
        2,
        1,
        (512, 256, 4, 6),
    )
    .unwrap();
    let v1 = register(&cluster, "big-gpt", &path).await;
    deploy(
        &cluster,
        json!({"name": "chat", "model": "big-gpt", "replicas": 3, "max_batch": 8}),
    )
    .await;
    wait_ready(&cluster, "chat", &v1, 3).await;

    // Long streams first: once node 2's replica runs one, the load starts, then node 2 dies.
    let api = cluster.node(0).api_url();
    let streams: Vec<_> = (0..6)
        .map(|i| {
            let body = json!({"model": "chat", "messages": [{"role": "user", "content": format!("tell {i}")}],
                "max_tokens": 450, "stream": true});
            tokio::spawn(tokio::time::timeout(DEADLINE, read_stream(api.clone(), body)))
        })
        .collect();
    wait_until(DEADLINE, "a stream running on node 2", || async {
        outstanding(&cluster, 2, "chat").await > 0
    })
    .await
    .unwrap();
    let total = 400usize;
    let load = {
        let api = api.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut failed = Vec::new();
            for chunk in (0..total).collect::<Vec<_>>().chunks(8) {
                let calls = chunk.iter().map(|i| {
                    client
                        .post(format!("{api}/v1/completions"))
                        .json(&json!({"model": "chat", "prompt": format!("n{i}"), "max_tokens": 4}))
                        .send()
                });
                for r in futures::future::join_all(calls).await {
                    match r {
                        Ok(r) if r.status() == 200 => {}
                        Ok(r) => failed.push(format!(
                            "{} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
            }
            failed
        })
    };
    wait_until(DEADLINE, "load under way", || async {
        get(&cluster, 0, "/api/v1/serving").await.1["requests"]
            .as_u64()
            .unwrap_or(0)
            > 30
    })
    .await
    .unwrap();
    let still_running = outstanding(&cluster, 2, "chat").await;
    cluster.kill(2).await;

    let failed = tokio::time::timeout(DEADLINE, load).await.unwrap().unwrap();
    println!("{} of {total} requests failed: {failed:?}", failed.len());
    assert!(failed.len() * 100 < total, "{failed:?}");
    let mut broken = 0;
    for s in streams {
        let ended = s.await.unwrap().expect("a stream hung");
        match ended {
            Ok(true) => {}
            Ok(false) => broken += 1,
            Err(e) => panic!("{e}"),
        }
    }
    println!(
        "{broken} streams ended with an error event ({still_running} requests were at node 2)"
    );
    assert!(
        broken >= 1,
        "the streams on the dead node ended with an error event"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_goes_away_frees_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster3().await;
    let path = dir.path().join("big");
    std::fs::create_dir_all(&path).unwrap();
    flotilla_node::models::toy::create_char_gpt_sized(
        &path,
        &CORPUS.repeat(4),
        2,
        1,
        (512, 256, 4, 6),
    )
    .unwrap();
    let v1 = register(&cluster, "big-gpt", &path).await;
    deploy(
        &cluster,
        json!({"name": "long", "model": "big-gpt", "replicas": 1}),
    )
    .await;
    wait_ready(&cluster, "long", &v1, 1).await;
    let (_, ds) = get(&cluster, 0, "/api/v1/deployments").await;
    let host_id = ds[0]["placed_on"][0].as_str().unwrap().to_string();
    let host = (0..3)
        .find(|i| cluster.node(*i).node_id().to_string() == host_id)
        .unwrap();
    let other = (host + 1) % 3;

    let cancelled = || async {
        let (_, v) = get(&cluster, host, "/api/v1/serving").await;
        v["replicas"][0]["cancelled"].as_u64().unwrap()
    };
    // Through the host's own router (in process), then through another node's (over the mesh):
    // read the first event, hang up, and the replica drops the sequence.
    for (n, via) in [host, other].into_iter().enumerate() {
        let body =
            json!({"model": "long", "prompt": "once upon", "max_tokens": 450, "stream": true});
        let mut resp = reqwest::Client::new()
            .post(url(&cluster, via, "/v1/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let first = tokio::time::timeout(DEADLINE, resp.chunk())
            .await
            .unwrap()
            .unwrap();
        assert!(first.is_some_and(|c| c.starts_with(b"data: ")));
        drop(resp);
        wait_until(DEADLINE, "the sequence is cancelled", || async {
            cancelled().await > n as u64
        })
        .await
        .unwrap();
        wait_until(DEADLINE, "the slot is free", || async {
            outstanding(&cluster, host, "long").await == 0
        })
        .await
        .unwrap();
    }
    cluster.shutdown().await.unwrap();
}

/// Asks node `to` for blob `blob` as node `from` would when fetching it.
async fn fetch_blob_from(
    cluster: &TestCluster,
    from: usize,
    to: usize,
    blob: &str,
) -> Result<
    flotilla_protocol::services::serving::ResponseBody,
    flotilla_protocol::services::serving::ServingError,
> {
    use flotilla_protocol::services::serving::{Request, RequestBody};
    let target = flotilla_node::models::files::artifacts_endpoint(&cluster.node(to).node_id().0);
    let request = Request {
        id: flotilla_protocol::RequestId(1),
        body: RequestBody::FetchBlob {
            blob: blob.to_string(),
            offset: 0,
            len: 1024,
        },
    };
    cluster
        .node(from)
        .serving
        .files
        .transport
        .call(&target, request, Duration::from_secs(15))
        .await?
        .body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn model_files_outlive_their_registering_node_and_a_damaged_copy_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = cluster3().await;
    // Registration answers once the files are on two nodes.
    let (code, v) = post(
        &cluster,
        0,
        "/api/v1/models",
        &json!({"name": "tiny-gpt", "path": tiny_gpt(&dir.path().join("m"), 3)}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let held_by: Vec<String> = serde_json::from_value(v["held_by"].clone()).unwrap();
    assert!(held_by.len() >= 2, "{v}");
    let hash = v["hash"].as_str().unwrap().to_string();
    let (_, record) = get(&cluster, 0, "/api/v1/catalog/models/tiny-gpt/1").await;
    let artifacts = record["value"]["Model"]["artifact_hashes"]
        .as_object()
        .unwrap()
        .clone();
    let blob = artifacts["manifest.json"].as_str().unwrap().to_string();

    // One flipped byte in node 0's copy: node 0 no longer offers or serves it.
    let path = cluster
        .node(0)
        .config()
        .data_dir
        .join("artifacts/blobs")
        .join(&blob);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0x20;
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(&path, &bytes).unwrap();
    let refused = fetch_blob_from(&cluster, 1, 0, &blob).await.unwrap_err();
    assert!(refused.message.contains("damaged"), "{refused:?}");
    let holder = if cluster.node(1).serving.files.blobs.contains(&blob) {
        1
    } else {
        2
    };
    assert!(fetch_blob_from(&cluster, 0, holder, &blob).await.is_ok());

    // The node that registered it dies; the model still deploys from its other holders, and
    // node 0's damaged copy reached no one.
    cluster.kill(0).await;
    let (code, v) = post(
        &cluster,
        1,
        "/api/v1/deployments",
        &json!({"name": "survivor", "model": "tiny-gpt", "replicas": 2}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    wait_until(DEADLINE, "2 ready replicas without node 0", || async {
        let (_, ds) = get(&cluster, 1, "/api/v1/deployments").await;
        ds.as_array().cloned().unwrap_or_default().iter().any(|d| {
            d["name"] == "survivor"
                && d["serving_hash"] == hash.as_str()
                && d["ready_on"].as_array().map_or(0, Vec::len) == 2
        })
    })
    .await
    .unwrap();
    let body = json!({"model": "survivor", "prompt": "the cat", "max_tokens": 5, "temperature": 0});
    let (code, answer) = post(&cluster, 1, "/v1/completions", &body).await;
    assert_eq!(code, 200, "{answer}");
    for i in [1, 2] {
        let copy = cluster
            .node(i)
            .config()
            .data_dir
            .join("artifacts/blobs")
            .join(&blob);
        let got = blake3::hash(&std::fs::read(copy).unwrap())
            .to_hex()
            .to_string();
        assert_eq!(got, blob, "node {i} holds the registered bytes");
    }
    cluster.shutdown().await.unwrap();
}
