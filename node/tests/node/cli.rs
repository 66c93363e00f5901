//! The `flotilla` binary as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_node::cli::demo::local_node_config;
use flotilla_node::RunningNode;

use crate::common::{flotilla, run, text, NO_ARGS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_json_lists_the_members_of_a_running_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let a = RunningNode::start(local_node_config(dir.path().join("a"), vec![]))
        .await
        .unwrap();
    let join = a.listen_addrs().iter().map(|x| x.to_string()).collect();
    let b = RunningNode::start(local_node_config(dir.path().join("b"), join))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Wait until the first node has heard from the second too, so the table below is complete.
    while a.membership.view().await.unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "node a never saw node b");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let mut c = flotilla();
        c.args(["nodes", "--output", "json", "--peer", &b.api_url()]);
        let out = run(c, NO_ARGS).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let members = v["members"].as_array().unwrap();
        let alive = members.iter().filter(|m| m["state"] == "Alive").count();
        if alive == 2 {
            let ids: Vec<&str> = members
                .iter()
                .map(|m| m["info"]["id"].as_str().unwrap())
                .collect();
            assert!(ids.contains(&a.peer_id.to_string().as_str()));
            assert!(ids.contains(&b.peer_id.to_string().as_str()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cluster never showed 2 alive members: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The table and the status command work against the same node.
    let mut c = flotilla();
    c.args(["nodes", "--peer", &a.api_url()]);
    let out = run(c, NO_ARGS).await;
    let table = text(&out.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("alive") && table.contains(&b.peer_id.to_string()),
        "{table}"
    );
    let mut c = flotilla();
    c.env("FLOTILLA_PEER", a.api_url()).arg("status");
    let out = run(c, NO_ARGS).await;
    assert!(
        text(&out.stdout).contains(&a.peer_id.to_string()),
        "{}",
        text(&out.stdout)
    );
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

#[test]
fn no_reachable_node_exits_with_code_3() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = flotilla();
    c.args(["nodes", "--peer", &format!("http://127.0.0.1:{port}")]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("no Flotilla node is reachable"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn usage_errors_exit_with_code_2() {
    let mut c = flotilla();
    c.arg("no-such-command");
    assert_eq!(c.output().unwrap().status.code(), Some(2));
}

#[test]
fn completions_are_generated() {
    let mut c = flotilla();
    c.args(["completions", "bash"]);
    let out = c.output().unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("flotilla"));
}

#[test]
fn precedence_is_defaults_then_file_then_env_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flotilla.toml");
    std::fs::write(&file, "[node]\nmax_connections = 10\ntarget_peers = 7\nmdns = false\n[node.membership]\ndead_after = \"30s\"\n").unwrap();
    let mut c = flotilla();
    c.args([
        "--config",
        file.to_str().unwrap(),
        "up",
        "--dry-run",
        "--max-connections",
        "40",
    ])
    .env("FLOTILLA_MAX_CONNECTIONS", "20")
    .env("FLOTILLA_DEAD_AFTER", "25s");
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cfg: toml::Value = toml::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(
        cfg["max_connections"].as_integer(),
        Some(40),
        "flag beats env and file"
    );
    assert_eq!(
        cfg["membership"]["dead_after"].as_str(),
        Some("25s"),
        "env beats file"
    );
    assert_eq!(
        cfg["target_peers"].as_integer(),
        Some(7),
        "file beats default"
    );
    assert_eq!(cfg["mdns"].as_bool(), Some(false));
    assert_eq!(
        cfg["max_connections_per_peer"].as_integer(),
        Some(2),
        "default kept"
    );
}

#[test]
fn invalid_config_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[node]\nmax_conections = 10\n").unwrap();
    let mut c = flotilla();
    c.args(["--config", file.to_str().unwrap(), "up", "--dry-run"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("max_conections"),
        "{}",
        text(&out.stderr)
    );

    let mut c = flotilla();
    c.args(["up", "--dry-run", "--join", "not-a-multiaddr"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("join"), "{}", text(&out.stderr));
}

#[test]
fn api_limits_and_tls_flags_reach_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut c = flotilla();
    c.args(["up", "--dry-run", "--data-dir", data.to_str().unwrap()])
        .args(["--api-request-timeout", "5s", "--api-max-in-flight", "8"])
        .args([
            "--tls-cert",
            "/etc/flotilla/cert.pem",
            "--tls-key",
            "/etc/flotilla/key.pem",
        ])
        .env("FLOTILLA_API_RATE", "20");
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cfg: toml::Value = toml::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(cfg["api"]["request_timeout"].as_str(), Some("5s"));
    assert_eq!(cfg["api"]["max_in_flight"].as_integer(), Some(8));
    assert_eq!(cfg["api"]["rate_per_sec"].as_float(), Some(20.0));
    assert_eq!(cfg["tls_cert"].as_str(), Some("/etc/flotilla/cert.pem"));

    // One TLS file alone is refused, naming the missing one.
    let mut c = flotilla();
    c.args(["up", "--dry-run", "--data-dir", data.to_str().unwrap()])
        .args(["--tls-cert", "/etc/flotilla/cert.pem"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("tls_key") && err.contains("--tls-key"),
        "{err}"
    );
}

#[test]
fn binding_the_api_beyond_loopback_needs_a_token() {
    // An open node has no generated admin token to fall back on.
    let dir = tempfile::tempdir().unwrap();
    let mut c = flotilla();
    c.args([
        "up",
        "--open",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--api-listen",
        "0.0.0.0:0",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
    ]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("api_listen") && err.contains("--api-token-file"),
        "{err}"
    );
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut c = flotilla();
    c.args([
        "up",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--api-listen",
        &format!("127.0.0.1:{port}"),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--mdns",
        "false",
    ]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already in use"),
        "{}",
        text(&out.stderr)
    );

    let mut c = flotilla();
    c.args([
        "up",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--api-listen",
        "127.0.0.1:0",
        "--listen",
        &format!("/ip4/127.0.0.1/tcp/{port}"),
        "--mdns",
        "false",
    ]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("cannot listen on /ip4/127.0.0.1/tcp/{port}")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn sigterm_shuts_down_gracefully_and_the_api_requires_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut c = flotilla();
    c.args([
        "up",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--api-listen",
        &format!("127.0.0.1:{port}"),
    ])
    .args([
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--mdns",
        "false",
        "--api-token-file",
        token.to_str().unwrap(),
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{url}/health/ready")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "node never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = http
            .get(format!("{url}/api/v1/cluster"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = http
            .get(format!("{url}/api/v1/cluster"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = http
            .get(format!("{url}/api/v1/cluster"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = http
            .get(format!("{url}/metrics"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        let metrics = r.text().await.unwrap();
        assert!(
            metrics.contains("flotilla_membership_members") && metrics.contains("libp2p_"),
            "{metrics}"
        );
    });
    // The CLI with the token file talks to it.
    let mut c = flotilla();
    c.args([
        "nodes",
        "--peer",
        &url,
        "--api-token-file",
        token.to_str().unwrap(),
    ]);
    assert!(c.output().unwrap().status.success());

    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("shutting down"),
        "{}",
        text(&out.stdout)
    );
}

/// `flotilla up` as a child whose stdout is read line by line on a thread.
struct Daemon {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Daemon {
    fn start(data_dir: &std::path::Path) -> Daemon {
        let mut c = flotilla();
        c.args(["up", "--data-dir", data_dir.to_str().unwrap()])
            .args([
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--api-listen",
                "127.0.0.1:0",
            ])
            .args(["--mdns", "false"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon { child, lines }
    }

    /// Lines up to and including the first one `until` accepts.
    fn read_until(&self, until: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = until(&line);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(e) => panic!("{e} before the expected line; stdout so far: {seen:#?}"),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_fresh_data_dir_creates_a_cluster_and_prints_its_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // A dry run shows what would happen and writes nothing.
    let mut c = flotilla();
    c.args(["up", "--dry-run", "--data-dir", data.to_str().unwrap()]);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("(new cluster)"), "{shown}");
    assert!(!shown.contains("quic"), "the key forces TCP: {shown}");
    assert!(!data.exists(), "--dry-run created {}", data.display());

    let first = Daemon::start(&data);
    let lines = first.read_until(|l| l.starts_with("node ") && l.ends_with(" is up"));
    let key_file = data.join("swarm.key");
    let token_file = data.join("api-token");
    #[cfg(unix)]
    {
        assert_eq!(mode(&key_file), 0o600);
        assert_eq!(mode(&token_file), 0o600);
    }
    let key = std::fs::read_to_string(&key_file).unwrap();
    let hex = key.lines().nth(2).unwrap().to_string();
    assert!(
        key.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"),
        "{key}"
    );
    assert_eq!(hex.len(), 64);
    let joined = lines.join("\n");
    assert!(
        lines
            .iter()
            .any(|l| l.trim() == format!("cluster token: {hex}")),
        "{joined}"
    );
    let join = lines
        .iter()
        .find(|l| l.contains("flotilla up --join"))
        .unwrap_or_else(|| panic!("no join command in {joined}"));
    assert!(
        join.contains("flotilla up --join /ip4/127.0.0.1/tcp/")
            && join.contains("/p2p/")
            && join.ends_with(&format!("--cluster-token {hex}")),
        "{join}"
    );
    let api_token = std::fs::read_to_string(&token_file).unwrap();
    assert!(
        joined.contains(&format!("admin API token: {}", api_token.trim())),
        "{joined}"
    );
    drop(first);

    // A restart reuses the key silently.
    let second = Daemon::start(&data);
    let lines = second.read_until(|l| l.starts_with("node ") && l.ends_with(" is up"));
    let joined = lines.join("\n");
    assert!(
        !joined.contains("cluster token") && !joined.contains(&hex),
        "the cluster token was printed again: {joined}"
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), api_token);
    drop(second);

    // A token of another cluster is refused for this data dir, naming the field.
    let mut c = flotilla();
    c.args(["up", "--dry-run", "--data-dir", data.to_str().unwrap()])
        .args(["--cluster-token", &"ab".repeat(32)]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cluster_token") && err.contains("another cluster"),
        "{err}"
    );
    assert!(
        !err.contains(&"ab".repeat(32)),
        "the token is echoed: {err}"
    );
}

#[test]
fn bad_admission_flags_are_config_errors_naming_the_field() {
    for (args, field) in [
        (vec!["--open", "--cluster-token", &"ab".repeat(32)], "open"),
        (vec!["--open", "--swarm-key", "/nonexistent"], "open"),
        (vec!["--cluster-token", "abc"], "cluster_token"),
    ] {
        let mut c = flotilla();
        c.args(["up", "--dry-run"]).args(&args);
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(&format!("{field}:")), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_evict_removes_a_member_and_nodes_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = RunningNode::start(local_node_config(dir.path().join("a"), vec![]))
        .await
        .unwrap();
    let join = a.listen_addrs().iter().map(|x| x.to_string()).collect();
    let b = RunningNode::start(local_node_config(dir.path().join("b"), join))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.membership.view().await.unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "node a never saw node b");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let evict = |id: String| {
        let mut c = flotilla();
        c.args(["node", "evict", &id, "--peer", &a.api_url()]);
        c
    };

    // Its own id and an id it does not know are refused with the node's reason.
    let out = run(evict(a.peer_id.to_string()), NO_ARGS).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot evict itself"),
        "{}",
        text(&out.stderr)
    );
    let out = run(evict(libp2p::PeerId::random().to_string()), NO_ARGS).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a member"),
        "{}",
        text(&out.stderr)
    );

    let out = run(evict(b.peer_id.to_string()), NO_ARGS).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("evicted node {}", b.peer_id)),
        "{}",
        text(&out.stdout)
    );
    let mut c = flotilla();
    c.args(["nodes", "--peer", &a.api_url()]);
    let table = text(&run(c, NO_ARGS).await.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with(&b.peer_id.to_string()))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("evicted"), "{table}");
    assert!(!a.connected_peers().await.contains(&b.node_id()));
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}
