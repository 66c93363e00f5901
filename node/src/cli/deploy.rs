//! `flotilla models [register]`, `flotilla deploy`, `flotilla deployments`, `flotilla undeploy`:
//! model versions and deployments through any node's API.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::client::Client;
use super::{table, Cli, Output};
use crate::http::deployments::{DeploymentInfo, ModelView};

/// `flotilla models …`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: Option<ModelsCommand>,
}

/// Model subcommands; without one, the registered versions are listed.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Register a folder on the target node (a Hugging Face BERT folder or a kernels GPT
    /// checkpoint) as the next version of model NAME; every file is hashed with blake3.
    Register {
        /// The model's name.
        #[arg(long, env = "FLOTILLA_MODEL_NAME")]
        name: String,
        /// An explicit version (default: the next free one).
        #[arg(long = "model-version", env = "FLOTILLA_MODEL_VERSION")]
        model_version: Option<u64>,
        /// The folder, as a path on the target node.
        path: PathBuf,
    },
}

/// `flotilla deploy MODEL[@VERSION] --name N …`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The model, optionally with a version (default: its latest).
    pub model: String,
    /// The deployment's name: what clients pass as `model`.
    #[arg(long, env = "FLOTILLA_DEPLOY_NAME")]
    pub name: String,
    /// Replicas, placed on distinct nodes.
    #[arg(long, env = "FLOTILLA_DEPLOY_REPLICAS", default_value_t = 1)]
    pub replicas: u32,
    /// Largest dynamic batch (and most sequences decoded together).
    #[arg(long, env = "FLOTILLA_DEPLOY_MAX_BATCH", default_value_t = 8)]
    pub max_batch: u32,
    /// Longest a request waits for its batch to fill, e.g. `5ms`.
    #[arg(long, env = "FLOTILLA_DEPLOY_MAX_WAIT", default_value = "5ms", value_parser = humantime::parse_duration)]
    pub max_wait: Duration,
    /// Most requests one replica takes at once (default: 4 × --max-batch); beyond, routers
    /// send elsewhere or answer 429.
    #[arg(long, env = "FLOTILLA_DEPLOY_MAX_INFLIGHT")]
    pub max_inflight: Option<u32>,
    /// Cache deterministic answers (`on` or `off`).
    #[arg(long, env = "FLOTILLA_DEPLOY_CACHE", default_value = "on", value_parser = ["on", "off"])]
    pub cache: String,
    /// Cores each replica reserves; replicas go only to nodes with room, and preempt tasks of
    /// lower priority classes there.
    #[arg(long, env = "FLOTILLA_DEPLOY_CORES", default_value_t = 1)]
    pub cores: u32,
    /// RAM each replica reserves, in MiB.
    #[arg(long, env = "FLOTILLA_DEPLOY_MEMORY_MIB", default_value_t = 512)]
    pub memory_mib: u64,
    /// GPUs each replica reserves.
    #[arg(long, env = "FLOTILLA_DEPLOY_GPUS", default_value_t = 0)]
    pub gpus: u32,
}

/// `bytes` in the largest binary unit that keeps it at least 1.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn print_models(cli: &Cli, models: &[ModelView]) -> anyhow::Result<()> {
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(models)?),
        Output::Table => {
            let rows: Vec<Vec<String>> = models
                .iter()
                .map(|m| {
                    vec![
                        format!("{}@{}", m.name, m.version),
                        m.kind.clone(),
                        m.hash[..16.min(m.hash.len())].to_string(),
                        m.context_length.to_string(),
                        m.artifacts.to_string(),
                        human_bytes(m.bytes),
                        m.origin.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    &[
                        "MODEL",
                        "KIND",
                        "HASH",
                        "CONTEXT",
                        "FILES",
                        "SIZE",
                        "REGISTERED ON"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

/// `flotilla models [register …]`.
pub async fn models(cli: &Cli, args: &ModelsArgs) -> anyhow::Result<()> {
    let client = Client::from_cli(cli)?;
    match &args.command {
        None => {
            let models: Vec<ModelView> = client.get_json("/api/v1/models").await?;
            print_models(cli, &models)
        }
        Some(ModelsCommand::Register {
            name,
            model_version,
            path,
        }) => {
            let body = serde_json::json!({"name": name, "version": model_version, "path": path});
            let m: ModelView = client.post_json("/api/v1/models", &body).await?;
            print_models(cli, &[m])
        }
    }
}

fn print_deployments(cli: &Cli, ds: &[DeploymentInfo]) -> anyhow::Result<()> {
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(ds)?),
        Output::Table => {
            let rows: Vec<Vec<String>> = ds
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        format!("{}@{}", d.model, d.version),
                        d.replicas.to_string(),
                        d.max_batch.to_string(),
                        format!("{}ms", d.max_wait_ms),
                        d.max_inflight.to_string(),
                        if d.cache { "on" } else { "off" }.to_string(),
                        format!("{}c/{}Mi", d.cores, d.memory_mib),
                        d.placed_on
                            .iter()
                            .map(|n| table::short_id(n))
                            .collect::<Vec<_>>()
                            .join(","),
                        d.pending.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    &[
                        "NAME", "MODEL", "REPLICAS", "BATCH", "WAIT", "INFLIGHT", "CACHE",
                        "RESERVES", "NODES", "PENDING",
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

/// `flotilla deploy`.
pub async fn deploy(cli: &Cli, args: &DeployArgs) -> anyhow::Result<()> {
    let client = Client::from_cli(cli)?;
    let (model, version) = match args.model.split_once('@') {
        Some((m, v)) => (
            m.to_string(),
            Some(
                v.parse::<u64>()
                    .map_err(|_| anyhow::anyhow!("{v:?} is not a version number"))?,
            ),
        ),
        None => (args.model.clone(), None),
    };
    let body = serde_json::json!({
        "name": args.name,
        "model": model,
        "version": version,
        "replicas": args.replicas,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait.as_millis().min(u128::from(u32::MAX)) as u32,
        "max_inflight": args.max_inflight,
        "cache": args.cache == "on",
        "cores": args.cores,
        "memory_mib": args.memory_mib,
        "gpus": args.gpus,
    });
    let d: DeploymentInfo = client.post_json("/api/v1/deployments", &body).await?;
    print_deployments(cli, &[d])
}

/// `flotilla deployments`.
pub async fn deployments(cli: &Cli) -> anyhow::Result<()> {
    let client = Client::from_cli(cli)?;
    let ds: Vec<DeploymentInfo> = client.get_json("/api/v1/deployments").await?;
    print_deployments(cli, &ds)
}

/// `flotilla undeploy NAME`.
pub async fn undeploy(cli: &Cli, name: &str) -> anyhow::Result<()> {
    let client = Client::from_cli(cli)?;
    let v: serde_json::Value = client
        .delete_json(&format!("/api/v1/deployments/{name}"))
        .await?;
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        Output::Table => println!("undeployed {name}"),
    }
    Ok(())
}

/// The demo's serving step: trains a tiny character GPT with the kernels, registers it through
/// the API, deploys it on up to two nodes and asks for a chat completion through the
/// OpenAI-compatible endpoint. Returns the answer's JSON.
pub async fn demo_serving(
    client: &Client,
    api: &str,
    dir: &std::path::Path,
    nodes: usize,
    deadline: std::time::Instant,
) -> anyhow::Result<serde_json::Value> {
    let model_dir = dir.join("demo-gpt");
    let corpus =
        "flotilla: a fleet of small boats that sail together. every boat can steer. ".repeat(8);
    let path = model_dir.clone();
    tokio::task::spawn_blocking(move || {
        crate::models::toy::create_char_gpt(&path, &corpus, 200, 7)
    })
    .await??;
    let m: ModelView = client
        .post_json(
            "/api/v1/models",
            &serde_json::json!({"name": "demo-gpt", "path": model_dir}),
        )
        .await?;
    eprintln!(
        "trained and registered demo-gpt@{} ({})",
        m.version,
        &m.hash[..16]
    );
    let _: DeploymentInfo = client
        .post_json(
            "/api/v1/deployments",
            &serde_json::json!({"name": "demo-chat", "model": "demo-gpt", "replicas": nodes.min(2)}),
        )
        .await?;
    let http = reqwest::Client::new();
    let body = serde_json::json!({
        "model": "demo-chat",
        "messages": [{"role": "user", "content": "what is flotilla?"}],
        "max_tokens": 24,
        "temperature": 0,
    });
    loop {
        let r = http
            .post(format!("{api}/v1/chat/completions"))
            .json(&body)
            .send()
            .await?;
        if r.status().is_success() {
            return Ok(r.json().await?);
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "demo-chat did not answer before the deadline: {}",
                r.text().await?
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
