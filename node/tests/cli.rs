//! The `flotilla` binary as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use flotilla_node::cli::demo::local_node_config;
use flotilla_node::RunningNode;

fn flotilla() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    // Tests must not pick up a developer's environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOTILLA_") {
            c.env_remove(k);
        }
    }
    c.env("FLOTILLA_LOG", "warn");
    c
}

fn run(mut c: Command) -> Output {
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn run_async(c: Command) -> Output {
    tokio::task::spawn_blocking(move || run(c)).await.unwrap()
}

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
        let out = run_async(c).await;
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
    let out = run_async(c).await;
    let table = text(&out.stdout);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("alive") && table.contains(&b.peer_id.to_string()),
        "{table}"
    );
    let mut c = flotilla();
    c.env("FLOTILLA_PEER", a.api_url()).arg("status");
    let out = run_async(c).await;
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
    let out = run(c);
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
    assert_eq!(run(c).status.code(), Some(2));
}

#[test]
fn completions_are_generated() {
    let mut c = flotilla();
    c.args(["completions", "bash"]);
    let out = run(c);
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
    let out = run(c);
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
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("max_conections"),
        "{}",
        text(&out.stderr)
    );

    let mut c = flotilla();
    c.args(["up", "--dry-run", "--join", "not-a-multiaddr"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("join"), "{}", text(&out.stderr));
}

#[test]
fn binding_the_api_beyond_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = flotilla();
    c.args([
        "up",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--api-listen",
        "0.0.0.0:0",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
    ]);
    let out = run(c);
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
    let out = run(c);
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
    let out = run(c);
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
    assert!(run(c).status.success());

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
