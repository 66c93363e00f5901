//! The HTTP API's hardening on real in-process nodes: a request past its deadline gets `504`
//! while a slow upload (with its own, longer budget) completes; requests beyond the in-flight
//! cap get `503` at once while the health probes still answer; bearer tokens and failed
//! authentications are rate-limited (`429` with `Retry-After`); the API serves HTTPS with a
//! given certificate and refuses plain HTTP there; uploads spool under the data dir and leave
//! nothing behind; and no answer names the node's data dir.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flotilla_node::config::NodeConfig;
use flotilla_node::RunningNode;
use flotilla_tests::{test_config, wait_until, TestCluster};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(60);

async fn one_node(f: impl Fn(&mut NodeConfig) + Send + Sync + 'static) -> TestCluster {
    TestCluster::start_with(1, Some(Box::new(move |_, c: &mut NodeConfig| f(c))))
        .await
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Status, `Retry-After` and JSON body of a request.
async fn call(req: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

/// A request written by hand on its own connection; the body follows in the pieces
/// `send_body` writes.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    async fn open(addr: SocketAddr, method: &str, path: &str, content_length: usize) -> Raw {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        Raw { stream }
    }

    async fn send_body(&mut self, piece: &[u8]) {
        self.stream.write_all(piece).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The response: status and body (read to the end of its `Content-Length`, or of the
    /// connection), within a deadline.
    async fn response(mut self) -> (u16, String) {
        let read = async {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = self.stream.read(&mut chunk).await.unwrap_or(0);
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    });
                    if n == 0 || length.is_some_and(|len| body.len() >= len) {
                        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                        return (status, body.to_string());
                    }
                }
                assert!(n > 0, "the connection closed without a response: {text:?}");
            }
        };
        tokio::time::timeout(DEADLINE, read)
            .await
            .expect("no response within the deadline")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_gets_504_but_a_slow_upload_completes() {
    let cluster = one_node(|c| {
        c.api.request_timeout = Duration::from_secs(1);
        c.api.long_request_timeout = Duration::from_secs(120);
    })
    .await;
    let addr = cluster.node(0).api_addr;

    // A job submission whose body never finishes arriving: an ordinary request.
    let mut stalled = Raw::open(addr, "POST", "/api/v1/jobs", 100).await;
    stalled.send_body(b"{\"kind\":").await;
    let (status, body) = stalled.response().await;
    assert_eq!(status, 504, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("1s"));

    // An upload that takes longer than the ordinary deadline to arrive is not cut.
    let text: String = (0..50).map(|i| format!("line number {i}\n")).collect();
    let (first, rest) = text.as_bytes().split_at(text.len() / 2);
    let mut upload = Raw::open(
        addr,
        "POST",
        "/api/v1/data?name=slow&format=text",
        text.len(),
    )
    .await;
    upload.send_body(first).await;
    // Past the ordinary deadline (a second) before the rest arrives.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    upload.send_body(rest).await;
    let (status, body) = upload.response().await;
    assert_eq!(status, 201, "{body}");
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_in_flight_cap_requests_get_503_at_once_and_probes_still_answer() {
    let cluster = one_node(|c| {
        c.api.max_in_flight = 2;
        c.api.request_timeout = Duration::from_secs(120);
    })
    .await;
    let addr = cluster.node(0).api_addr;
    let url = cluster.node(0).api_url();

    // Two requests stay in flight, waiting for bodies that do not come.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut r = Raw::open(addr, "POST", "/api/v1/jobs", 100).await;
        r.send_body(b"{").await;
        held.push(r);
    }
    let cluster_url = format!("{url}/api/v1/cluster");
    wait_until(DEADLINE, "a third request to be refused", || async {
        client().get(&cluster_url).send().await.unwrap().status() == 503
    })
    .await
    .unwrap();
    let (status, retry, body) = call(client().get(&cluster_url)).await;
    assert_eq!(status, 503);
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    // The OpenAI routes answer in their own error shape.
    let (status, _, body) = call(client().get(format!("{url}/v1/models"))).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    for probe in ["/health/live", "/health/ready", "/metrics"] {
        let status = client()
            .get(format!("{url}{probe}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{probe} is exempt from the cap");
    }

    // The held requests end when their clients go away; their slots come back.
    drop(held);
    wait_until(DEADLINE, "requests to be answered again", || async {
        client().get(&cluster_url).send().await.unwrap().status() == 200
    })
    .await
    .unwrap();
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_failed_authentications_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "the-right-token\n").unwrap();
    let cluster = one_node(move |c| {
        c.api_token_file = Some(token_file.clone());
        // Three at once, then next to nothing: the test never waits for a refill.
        c.api.rate_per_sec = 0.001;
        c.api.rate_burst = 3;
        c.api.auth_failures_per_min = 0.001;
        c.api.auth_failure_burst = 2;
    })
    .await;
    let url = cluster.node(0).api_url();
    let cluster_url = format!("{url}/api/v1/cluster");
    let authed = |u: &str| client().get(u).bearer_auth("the-right-token");

    for _ in 0..3 {
        let (status, _, body) = call(authed(&cluster_url)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, retry, body) = call(authed(&cluster_url)).await;
    assert_eq!(status, 429, "{body}");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let (status, _, body) = call(authed(&format!("{url}/v1/models"))).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    // Probes and metrics are not counted.
    for _ in 0..5 {
        assert_eq!(call(authed(&format!("{url}/metrics"))).await.0, 200);
        assert_eq!(
            call(client().get(format!("{url}/health/live"))).await.0,
            200
        );
    }

    // Wrong tokens: refused, then throttled; a random token never gets a bucket of its own.
    for guess in ["guess-1", "guess-2"] {
        let (status, _, body) = call(client().get(&cluster_url).bearer_auth(guess)).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, retry, body) = call(client().get(&cluster_url).bearer_auth("guess-3")).await;
    assert_eq!(status, 429, "{body}");
    assert!(retry.is_some());
    assert_eq!(
        call(client().get(&cluster_url)).await.0,
        429,
        "no token either"
    );
    // Out of attempts, this address cannot tell a right token from a wrong one.
    assert_eq!(call(authed(&format!("{url}/v1/models"))).await.0, 429);
    cluster.shutdown().await.unwrap();
}

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files in `dir`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key, certified.cert.der().to_vec())
}

fn client_trusting(der: &[u8]) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = self_signed(dir.path());
    let (c2, k2) = (cert.clone(), key.clone());
    let cluster = one_node(move |c| {
        c.tls_cert = Some(c2.clone());
        c.tls_key = Some(k2.clone());
    })
    .await;
    let url = cluster.node(0).api_url();
    assert!(url.starts_with("https://"), "{url}");
    let https = client_trusting(&der);
    let resp = https
        .get(format!("{url}/api/v1/cluster"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["node_id"], cluster.node(0).node_id().0);

    // Plain HTTP on the TLS port gets no answer.
    let plain = format!("http://{}/health/live", cluster.node(0).api_addr);
    assert!(client().get(&plain).send().await.is_err());
    // Nor does a client that does not trust the certificate.
    let untrusting = reqwest::Client::builder()
        .use_preconfigured_tls(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
        .build()
        .unwrap();
    assert!(untrusting
        .get(format!("{url}/health/live"))
        .send()
        .await
        .is_err());
    cluster.shutdown().await.unwrap();

    // A bad certificate stops the start with an error naming the file.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let mut config = test_config(dir.path().join("node-bad"));
    config.tls_cert = Some(bad);
    config.tls_key = Some(key.clone());
    let e = RunningNode::start(config).await.unwrap_err().to_string();
    assert!(
        e.contains("TLS certificate") && e.contains("bad.pem"),
        "{e}"
    );
    // One of the two files alone is a configuration error naming the missing one.
    let mut config = test_config(dir.path().join("node-half"));
    config.tls_cert = Some(cert);
    let e = RunningNode::start(config).await.unwrap_err().to_string();
    assert!(e.contains("tls_key"), "{e}");
}

fn spool_entries(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("spool"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_spool_under_the_data_dir_and_leave_nothing_behind() {
    let mut cluster = one_node(|_| {}).await;
    let data_dir = cluster.data_dir(0);
    let url = cluster.node(0).api_url();
    assert!(data_dir.join("spool").is_dir());

    // While an upload arrives its spool file is in the data dir.
    let mut upload = Raw::open(
        cluster.node(0).api_addr,
        "POST",
        "/api/v1/data?name=pending&format=text",
        1000,
    )
    .await;
    upload.send_body(b"first line\n").await;
    wait_until(
        DEADLINE,
        "the upload to spool under the data dir",
        || async { spool_entries(&data_dir) == 1 },
    )
    .await
    .unwrap();
    // The client goes away: the spool file goes too.
    drop(upload);
    wait_until(
        DEADLINE,
        "the interrupted upload's spool file to go",
        || async { spool_entries(&data_dir) == 0 },
    )
    .await
    .unwrap();

    // A good upload and a refused one leave nothing.
    let (status, _, body) = call(
        client()
            .post(format!("{url}/api/v1/data?name=good&format=text"))
            .body("one\ntwo\nthree\n"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = call(
        client()
            .post(format!(
                "{url}/api/v1/data?name=bad&format=jsonl&on_error=fail"
            ))
            .body("{\"text\": \"ok\"}\nnot json\n"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(spool_entries(&data_dir), 0);

    // Leftovers of a crash are removed when the node starts.
    cluster.stop(0).await.unwrap();
    std::fs::write(data_dir.join("spool").join("upload-left-by-a-crash"), "x").unwrap();
    cluster.restart(0).await.unwrap();
    assert_eq!(spool_entries(&data_dir), 0);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_names_the_data_dir() {
    let cluster = one_node(|_| {}).await;
    let data_dir = cluster.data_dir(0);
    let canonical = std::fs::canonicalize(&data_dir).unwrap();
    let url = cluster.node(0).api_url();
    let c = client();
    let missing_model = data_dir.join("no-such-model");
    let requests = vec![
        c.post(format!("{url}/api/v1/data?name=x&format=yaml"))
            .body("a"),
        c.post(format!("{url}/api/v1/data?format=text")).body("a"),
        c.post(format!(
            "{url}/api/v1/data?name=y&format=jsonl&on_error=fail"
        ))
        .body("{oops\n"),
        c.get(format!("{url}/api/v1/data/nope")),
        c.get(format!("{url}/api/v1/data/nope/0")),
        c.get(format!("{url}/api/v1/data/nope/1/export")),
        c.delete(format!("{url}/api/v1/data/nope")),
        c.post(format!("{url}/api/v1/data/nope/ops"))
            .json(&json!({"ops": []})),
        c.get(format!("{url}/api/v1/jobs/no-such-job")),
        c.get(format!("{url}/api/v1/jobs/no-such-job/events")),
        c.post(format!("{url}/api/v1/jobs/no-such-job/cancel")),
        c.post(format!("{url}/api/v1/jobs")).body("{not json"),
        c.post(format!("{url}/api/v1/models"))
            .json(&json!({"name": "m", "path": missing_model})),
        c.post(format!("{url}/api/v1/models"))
            .json(&json!({"name": "m", "path": data_dir.join("spool")})),
        c.post(format!("{url}/api/v1/deployments"))
            .json(&json!({"name": "d", "model": "no-such-model"})),
        c.get(format!("{url}/v1/models/no-such-model")),
        c.post(format!("{url}/v1/chat/completions")).json(&json!({
            "model": "no-such-model",
            "messages": [{"role": "user", "content": "hi"}]
        })),
        c.post(format!("{url}/v1/embeddings"))
            .json(&json!({"model": "no-such-model", "input": "hi"})),
        c.post(format!("{url}/api/v1/nodes/nobody/evict")),
        c.get(format!("{url}/api/v1/catalog/model/nope/1")),
        c.get(format!("{url}/api/v1/no-such-route")),
    ];
    let needles = [
        data_dir.display().to_string(),
        canonical.display().to_string(),
    ];
    let mut errors = 0;
    for req in requests {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        if status >= 400 {
            errors += 1;
        }
        for n in &needles {
            assert!(!text.contains(n.as_str()), "{status} names {n}: {text}");
        }
    }
    assert!(errors >= 18, "the requests above fail ({errors} did)");
    cluster.shutdown().await.unwrap();
}
