//! `flotilla train SPEC.toml`: submits a training spec (the `[model]`, `[dataset]`, `[args]`,
//! `[cluster]`, `[nan]` and `[output]` sections) as a job of kind `train`, follows its progress
//! until it ends and prints the registered model, or fails with the job's reason.

use std::path::PathBuf;

use clap::Args;
use flotilla_protocol::training::TrainSpec;

use super::client::Client;
use super::{Cli, Output};
use crate::http::jobs::{JobShow, SubmitAnswer};

/// `flotilla train …`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The training spec (TOML).
    pub spec: PathBuf,
    /// Return once the job is submitted instead of following it to its end.
    #[arg(long)]
    pub detach: bool,
    /// Resubmitting with the same key returns the same job instead of starting another.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// Reads and checks the spec locally, so mistakes are reported before anything is sent.
fn read_spec(path: &PathBuf) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read training spec {}: {e}", path.display()))?;
    let spec: TrainSpec = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: invalid training spec: {e}", path.display()))?;
    spec.validate()
        .map_err(|e| anyhow::anyhow!("{}: invalid training spec: {e}", path.display()))?;
    let table: toml::Value = toml::from_str(&text)?;
    Ok(serde_json::to_value(table)?)
}

/// Submits `train` (a training spec as JSON) as a `train` job.
pub async fn submit(
    client: &Client,
    train: serde_json::Value,
    idempotency_key: Option<&str>,
) -> anyhow::Result<SubmitAnswer> {
    let body = serde_json::json!({
        "kind": "train",
        "priority": "training",
        "idempotency_key": idempotency_key,
        "train": train,
    });
    client.post_json("/api/v1/jobs", &body).await
}

/// Waits for training job `id` to end: its result (JSON) when it succeeded, else an error with
/// the job's reason.
pub async fn outcome(client: &Client, id: &str) -> anyhow::Result<serde_json::Value> {
    loop {
        let show: JobShow = client.get_json(&format!("/api/v1/jobs/{id}")).await?;
        let task = show.detail.tasks.first();
        match show.job.status.as_str() {
            "succeeded" => {
                return Ok(task
                    .and_then(|t| t.result.as_deref())
                    .map(serde_json::from_str)
                    .transpose()?
                    .unwrap_or_default())
            }
            "failed" | "cancelled" => {
                let reason = task
                    .and_then(|t| t.result.clone())
                    .unwrap_or_else(|| "no reason recorded".to_string());
                anyhow::bail!("training job {id} {}: {reason}", show.job.status)
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

/// `flotilla train`.
pub async fn run(cli: &Cli, args: &TrainArgs) -> anyhow::Result<()> {
    let train = read_spec(&args.spec)?;
    let client = Client::from_cli(cli)?;
    let a = submit(&client, train, args.idempotency_key.as_deref()).await?;
    let id = a.job.id.clone();
    if args.detach {
        match cli.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&a)?),
            Output::Table => println!("training job {id} submitted (owner {})", a.job.owner),
        }
        return Ok(());
    }
    if matches!(cli.output, Output::Table) {
        println!("training job {id} submitted (owner {})", a.job.owner);
        super::job::logs(cli, &client, &id, true).await?;
    }
    let result = outcome(&client, &id).await?;
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&result)?),
        Output::Table => println!("{}", summary(&result)),
    }
    Ok(())
}

/// One line about the registered model.
pub fn summary(r: &serde_json::Value) -> String {
    let num = |k: &str| r[k].as_f64().map_or("-".to_string(), |v| format!("{v:.4}"));
    format!(
        "registered {}: loss {} -> {}, held-out accuracy {}, macro-F1 {} ({} samples on {} workers)",
        r["model"].as_str().unwrap_or("?"),
        num("loss_before"),
        num("loss_after"),
        num("accuracy"),
        num("macro_f1"),
        r["samples"],
        r["workers"],
    )
}
