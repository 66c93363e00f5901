//! The `flotilla` binary as the tests run it: one command against a node's API (the CLI
//! tests), or `flotilla up` as a child process for the tests that signal, freeze or kill the
//! real binary (the crash loop, lifecycle and freeze tests).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// The binary with no `FLOTILLA_*` variable of the caller's environment.
pub fn flotilla() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOTILLA_") || k == "NOTIFY_SOCKET" || k.starts_with("WATCHDOG_") {
            c.env_remove(k);
        }
    }
    c.env("FLOTILLA_LOG", "warn");
    c
}

/// The binary talking to the node API at `peer`.
pub fn flotilla_at(peer: &str) -> Command {
    let mut c = flotilla();
    c.env("FLOTILLA_PEER", peer);
    c
}

/// For [`run`] when the command already holds its arguments.
pub const NO_ARGS: [&str; 0] = [];

/// Runs `c` with `args` to its end on a blocking thread, so that the test's runtime (and the
/// nodes it hosts) keep running meanwhile.
pub async fn run<I, S>(mut c: Command, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    c.args(args);
    tokio::task::spawn_blocking(move || c.output().expect("the binary runs"))
        .await
        .expect("the blocking thread finishes")
}

/// `flotilla ARGS` against the node API at `peer`.
pub async fn run_at<I, S>(peer: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(flotilla_at(peer), args).await
}

/// A one-node cluster in this process, its data under `dir/a`, its API on a free loopback port.
pub async fn one_node(dir: &std::path::Path) -> flotilla_node::RunningNode {
    let config = flotilla_node::cli::demo::local_node_config(dir.join("a"), vec![]);
    flotilla_node::RunningNode::start(config)
        .await
        .expect("a one-node cluster starts")
}

/// Output bytes as text, for assertions and their messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A started daemon: its API address, node id and join address.
pub struct Daemon {
    pub child: Child,
    pub api: String,
    pub id: String,
    pub join: String,
    /// Every stdout line after the start-up ones.
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Sends `signal` (`TERM`, `INT`, `STOP`, `CONT`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Waits at most `limit` for the process to exit; its status, or `None` if it still runs.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts `flotilla [global] up --data-dir DIR` on loopback with ephemeral ports, mDNS off and
/// `args` added; waits until it is ready.
pub async fn start(
    data_dir: &std::path::Path,
    global: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
) -> Daemon {
    let mut c = flotilla();
    c.args(global)
        .args(["up", "--data-dir", data_dir.to_str().expect("a UTF-8 path")])
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .args(["--mdns", "false"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("the daemon starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (api, id, join, rx) = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + START_DEADLINE;
        let (mut api, mut id) = (None, None);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("the daemon's start-up lines");
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("node ") {
                if let Some(node) = rest.strip_suffix(" is up") {
                    id = Some(node.to_string());
                }
            } else if let Some(url) = line.strip_prefix("api:") {
                api = Some(url.trim().to_string());
            } else if let Some(addr) = line.strip_prefix("join:") {
                return (
                    api.expect("the api line comes first"),
                    id.expect("the node line comes first"),
                    addr.trim().to_string(),
                    rx,
                );
            }
        }
    })
    .await
    .expect("the reader");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let ready = client
            .get(format!("{api}/health/ready"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Daemon {
        child,
        api,
        id,
        join,
        lines: rx,
    }
}

/// `GET` of `path` as JSON.
pub async fn get_json(api: &str, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{api}{path}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the request")
        .json()
        .await
        .expect("a JSON answer")
}

/// Polls `check` every 100 ms until it holds, at most `limit`; whether it did.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A CSV of `rows` short texts in three categories.
pub fn tiny_csv(rows: usize) -> String {
    let words = ["card", "transfer", "refund"];
    let mut out = String::from("text,category\n");
    for i in 0..rows {
        let c = words[i % 3];
        out += &format!("my {c} question number {i} about the {c},{c}\n");
    }
    out
}

/// Uploads `csv` as dataset `name@1` (label field `label`).
pub async fn upload(api: &str, name: &str, csv: String) {
    let r = reqwest::Client::new()
        .post(format!(
            "{api}/api/v1/data?name={name}&format=csv&text_field=text&label_field=category"
        ))
        .body(csv)
        .send()
        .await
        .expect("the upload");
    let code = r.status().as_u16();
    assert_eq!(code, 201, "{}", r.text().await.unwrap_or_default());
}

/// Submits a job spec; its id.
pub async fn submit(api: &str, spec: &serde_json::Value) -> String {
    let r = reqwest::Client::new()
        .post(format!("{api}/api/v1/jobs"))
        .json(spec)
        .send()
        .await
        .expect("the submission");
    let code = r.status().as_u16();
    let v: serde_json::Value = r.json().await.expect("a JSON answer");
    assert_eq!(code, 201, "{v}");
    v["job"]["id"].as_str().expect("a job id").to_string()
}

/// The texts of job `id`'s events as `api` merges them.
pub async fn event_texts(api: &str, id: &str) -> Vec<String> {
    get_json(api, &format!("/api/v1/jobs/{id}/events")).await["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["text"].as_str().map(str::to_string))
        .collect()
}
