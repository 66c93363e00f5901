//! `flotilla demo`: a local cluster on loopback in one process — real sockets, separate data
//! dirs — that converges, shows itself, and runs a benchmark job across every node (submitted
//! to the last one, which owns it and places one task on each node); uploads a sample of the
//! bundled Banking77 data, trains an intent classifier on it with every node, shows the
//! registered model, deploys it and classifies queries; then trains a tiny GPT, deploys it and
//! answers a chat completion through the OpenAI-compatible endpoint.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::Args;
use flotilla_protocol::MemberState;

use super::client::Client;
use super::{table, Cli, Output};
use crate::config::NodeConfig;
use crate::daemon::RunningNode;

/// Flags of `flotilla demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Number of nodes to start.
    #[arg(long, env = "FLOTILLA_DEMO_NODES", default_value_t = 3)]
    pub nodes: usize,
    /// Parent directory of the nodes' data dirs (a temporary directory by default).
    #[arg(long, env = "FLOTILLA_DEMO_DIR")]
    pub dir: Option<PathBuf>,
    /// How long to wait for the cluster to converge.
    #[arg(long, default_value = "60s")]
    pub timeout: humantime::Duration,
}

/// The cluster key of every node this process configures with [`local_node_config`]: random,
/// made once per process, so local nodes admit each other and no node of another process.
fn local_cluster_token() -> String {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN
        .get_or_init(crate::admission::random_cluster_token)
        .clone()
}

/// A configuration for a demo or test node: loopback only, ephemeral ports, no mDNS, short
/// failure-detection timeouts, and this process's cluster key (as `cluster_token`).
pub fn local_node_config(data_dir: PathBuf, join: Vec<String>) -> NodeConfig {
    let mut c = NodeConfig {
        data_dir,
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        api_listen: "127.0.0.1:0"
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        join,
        cluster_token: Some(local_cluster_token()),
        mdns: false,
        probe_budget: Duration::from_millis(50),
        shutdown: crate::config::ShutdownConfig {
            grace: Duration::from_secs(3),
        },
        ..NodeConfig::default()
    };
    c.membership.heartbeat_interval = Duration::from_millis(250);
    c.membership.suspect_after = Duration::from_millis(1500);
    c.membership.dead_after = Duration::from_secs(3);
    c
}

/// Runs the demo.
pub async fn run(cli: &Cli, args: &DemoArgs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        anyhow::bail!("--nodes must be at least 1");
    }
    let tmp;
    let root = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    eprintln!(
        "starting {} nodes on loopback under {}",
        args.nodes,
        root.display()
    );
    let started = Instant::now();
    // One cluster key for every node, kept next to their data dirs so a `--dir` can be reused.
    let key =
        crate::admission::load_or_create_key_file(&root.join(crate::admission::SWARM_KEY_FILE))?;
    let config = |i: usize, join: Vec<String>| {
        let mut c = local_node_config(root.join(format!("node-{i}")), join);
        c.cluster_token = None;
        c.swarm_key = Some(key.clone());
        c
    };
    let mut nodes = vec![RunningNode::start(config(0, vec![])).await?];
    let bootstrap: Vec<String> = nodes[0]
        .listen_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    for i in 1..args.nodes {
        nodes.push(RunningNode::start(config(i, bootstrap.clone())).await?);
    }

    // Ask the last node over HTTP, as a user would, until it sees every node alive.
    let client = Client::new(&nodes[nodes.len() - 1].api_url(), None)?;
    let deadline = Instant::now() + Duration::from(args.timeout);
    let view = loop {
        let view = client.cluster().await?;
        let alive = view
            .members
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .count();
        if alive == args.nodes {
            break view;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "cluster did not converge within {}: {alive} of {} alive",
                args.timeout,
                args.nodes
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("converged in {:.2?}", started.elapsed());
    let job = run_benchmark(&client, args.nodes, deadline).await?;
    let api = nodes[nodes.len() - 1].api_url();
    let trained = super::demo_train::run(&client, &api, &root, args.nodes).await?;
    let chat = super::deploy::demo_serving(&client, &api, &root, args.nodes, deadline).await?;
    match cli.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "cluster": view, "job": job, "trained": trained, "chat": chat })
            )?
        ),
        Output::Table => {
            print!("{}", table::members(&view.members));
            println!();
            print!("{}", benchmark_table(&job));
            println!();
            let m = &trained.model;
            println!(
                "registered model {}@{} ({}, {} files): {}",
                m["name"].as_str().unwrap_or_default(),
                m["version"],
                m["kind"].as_str().unwrap_or_default(),
                m["artifacts"],
                super::train::summary(&trained.result)
            );
            for (query, label) in &trained.classified {
                println!("POST {api}/api/v1/classify (model demo-intents): {query:?} -> {label}");
            }
            println!();
            println!(
                "POST {api}/v1/chat/completions (model demo-chat) answered: {:?}",
                chat["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
            );
        }
    }
    for n in nodes {
        n.shutdown().await?;
    }
    eprintln!("all nodes stopped gracefully");
    Ok(())
}

/// Submits a benchmark job with one task per node and waits for it to finish.
async fn run_benchmark(
    client: &Client,
    nodes: usize,
    deadline: Instant,
) -> anyhow::Result<crate::http::jobs::JobShow> {
    let spec = serde_json::json!({
        "kind": "benchmark",
        "resources": { "cores": 1, "ram_mib": 64 },
        "benchmark": { "peers": nodes, "matrix_size": 256, "iterations": 20 },
    });
    let submitted: crate::http::jobs::SubmitAnswer =
        client.post_json("/api/v1/jobs", &spec).await?;
    let id = submitted.job.id;
    eprintln!("submitted benchmark job {id}");
    loop {
        let shown: crate::http::jobs::JobShow =
            client.get_json(&format!("/api/v1/jobs/{id}")).await?;
        match shown.job.status.as_str() {
            "succeeded" => return Ok(shown),
            "failed" | "cancelled" => {
                anyhow::bail!(
                    "benchmark job {id} {}: {:?}",
                    shown.job.status,
                    shown.detail.events
                )
            }
            _ => {}
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "benchmark job {id} still {} at the deadline",
                shown.job.status
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One row per task: where it ran and what it measured.
fn benchmark_table(job: &crate::http::jobs::JobShow) -> String {
    let rows: Vec<Vec<String>> = job
        .detail
        .tasks
        .iter()
        .map(|t| {
            let r: serde_json::Value = t
                .result
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or_default();
            vec![
                t.task.to_string(),
                t.node.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                format!("{:.1}", r["gflops"].as_f64().unwrap_or(0.0)),
                format!("{:.0}", r["elapsed_ms"].as_f64().unwrap_or(0.0)),
            ]
        })
        .collect();
    format!(
        "benchmark job {} {} ({} tasks, 256x256 f32 matmul x 20 each):\n{}",
        job.job.id,
        job.job.status,
        rows.len(),
        table::render(&["TASK", "NODE", "GFLOP/S", "MS"], &rows)
    )
}
