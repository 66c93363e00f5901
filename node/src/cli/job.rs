//! `flotilla jobs` and `flotilla job submit|show|logs|cancel`: jobs through any node's API.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use flotilla_protocol::services::jobs::JobEvent;

use super::client::Client;
use super::{table, Cli, Output};
use crate::http::jobs::{CancelAnswer, JobShow, JobView, SubmitAnswer};
use crate::jobs::SpecDoc;

/// How often `logs --follow` asks for new events.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// `flotilla job …`.
#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(subcommand)]
    pub command: JobCommand,
}

/// Job subcommands.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a job spec (TOML) to the node; it owns and drives the job.
    Submit {
        /// The spec file.
        spec: PathBuf,
    },
    /// Show a job: status, owner, tasks and their results.
    Show { id: String },
    /// Print a job's events, merged from every node that drove it.
    Logs {
        id: String,
        /// Keep printing new events until the job finishes.
        #[arg(long)]
        follow: bool,
    },
    /// Cancel a job (a no-op with a message if it already finished).
    Cancel { id: String },
}

/// Runs a job subcommand.
pub async fn run(cli: &Cli, args: &JobArgs) -> anyhow::Result<()> {
    let client = Client::from_cli(cli)?;
    match &args.command {
        JobCommand::Submit { spec } => submit(cli, &client, spec).await,
        JobCommand::Show { id } => show(cli, &client, id).await,
        JobCommand::Logs { id, follow } => logs(cli, &client, id, *follow).await,
        JobCommand::Cancel { id } => {
            let a: CancelAnswer = client
                .post_json(&format!("/api/v1/jobs/{id}/cancel"), &serde_json::json!({}))
                .await?;
            match cli.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&a)?),
                Output::Table => println!("{}", a.message),
            }
            Ok(())
        }
    }
}

async fn submit(cli: &Cli, client: &Client, path: &PathBuf) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read job spec {}: {e}", path.display()))?;
    let doc = SpecDoc::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("{}: invalid job spec: {e}", path.display()))?;
    let a: SubmitAnswer = client
        .post_json("/api/v1/jobs", &serde_json::to_value(&doc)?)
        .await?;
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&a)?),
        Output::Table => {
            let verb = if a.created {
                "submitted"
            } else {
                "already submitted"
            };
            println!(
                "{} {verb}: {} (owner {})",
                a.job.id, a.job.status, a.job.owner
            );
        }
    }
    Ok(())
}

/// `flotilla jobs`.
pub async fn list(cli: &Cli) -> anyhow::Result<()> {
    let v: serde_json::Value = Client::from_cli(cli)?.get_json("/api/v1/jobs").await?;
    let jobs: Vec<JobView> = serde_json::from_value(v["jobs"].clone())?;
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&jobs)?),
        Output::Table => print!("{}", jobs_table(&jobs)),
    }
    Ok(())
}

fn jobs_table(jobs: &[JobView]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.kind.clone(),
                j.priority.clone(),
                j.status.clone(),
                j.tasks.to_string(),
                table::short_id(&j.owner),
                j.epoch.to_string(),
            ]
        })
        .collect();
    table::render(
        &[
            "ID", "KIND", "PRIORITY", "STATUS", "TASKS", "OWNER", "EPOCH",
        ],
        &rows,
    )
}

async fn show(cli: &Cli, client: &Client, id: &str) -> anyhow::Result<()> {
    let s: JobShow = client.get_json(&format!("/api/v1/jobs/{id}")).await?;
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&s)?),
        Output::Table => {
            print!("{}", jobs_table(std::slice::from_ref(&s.job)));
            if let Some(why) = &s.owner_unreachable {
                println!("(owner unreachable: {why}; showing what this node knows)");
            }
            let rows: Vec<Vec<String>> = s
                .detail
                .tasks
                .iter()
                .map(|t| {
                    vec![
                        t.task.to_string(),
                        t.node
                            .as_ref()
                            .map(|n| table::short_id(n.as_str()))
                            .unwrap_or_default(),
                        t.attempt.to_string(),
                        t.state.clone(),
                        t.result.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            println!();
            print!(
                "{}",
                table::render(&["TASK", "NODE", "ATTEMPT", "STATE", "RESULT"], &rows)
            );
        }
    }
    Ok(())
}

fn print_event(cli: &Cli, e: &JobEvent) -> anyhow::Result<()> {
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string(e)?),
        Output::Table => println!(
            "{}  {}  {}{}",
            table::utc_ms(e.at_ms),
            table::short_id(e.node.as_str()),
            progress_bar(&e.text),
            e.text
        ),
    }
    Ok(())
}

/// `[######--------------]  30% ` for a training progress event (`step N/M …`), else nothing.
fn progress_bar(text: &str) -> String {
    const WIDTH: u64 = 20;
    let Some((step, total)) = crate::train::metrics::parse_progress(text) else {
        return String::new();
    };
    let total = total.max(1);
    let done = step.min(total);
    let filled = (done * WIDTH / total) as usize;
    format!(
        "[{}{}] {:>3}% ",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled),
        done * 100 / total
    )
}

pub(super) async fn logs(cli: &Cli, client: &Client, id: &str, follow: bool) -> anyhow::Result<()> {
    // Ask again from the last millisecond seen (another event may share it) and skip repeats.
    let mut after = 0u64;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let since = after.saturating_sub(1);
        let v: serde_json::Value = client
            .get_json(&format!("/api/v1/jobs/{id}/events?after_ms={since}"))
            .await?;
        let fetched: Vec<JobEvent> = serde_json::from_value(v["events"].clone())?;
        let job: JobView = serde_json::from_value(v["job"].clone())?;
        let events: Vec<JobEvent> = fetched
            .into_iter()
            .filter(|e| seen.insert(e.clone()))
            .collect();
        for e in &events {
            print_event(cli, e)?;
            after = after.max(e.at_ms);
        }
        let finished = matches!(job.status.as_str(), "succeeded" | "failed" | "cancelled");
        if !follow || (finished && events.is_empty()) {
            if follow && matches!(cli.output, Output::Table) {
                println!("job {id} {}", job.status);
            }
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::progress_bar;

    #[test]
    fn training_events_get_a_progress_bar() {
        assert_eq!(
            progress_bar("step 3/10 loss 1.0"),
            "[######--------------]  30% "
        );
        assert_eq!(
            progress_bar("step 12/10 loss 1.0"),
            "[####################] 100% "
        );
        assert_eq!(progress_bar("task 0 started"), "");
    }
}
