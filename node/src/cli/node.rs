//! `flotilla node …`: acting on one member of the cluster.

use clap::{Args, Subcommand};

use super::client::Client;
use super::{Cli, Output};
use crate::evict::Evicted;

/// Flags of `flotilla node`.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: NodeCommand,
}

/// Subcommands of `flotilla node`.
#[derive(Debug, Clone, Subcommand)]
pub enum NodeCommand {
    /// Remove a member from the cluster for good: every node closes and refuses its connections
    /// from now on, also nodes that are down now (they learn it when they come back). The node
    /// keeps the cluster key, so to shut out its machine entirely, move the others to a new key.
    Evict {
        /// The node's id (as `flotilla nodes` shows it).
        id: String,
    },
}

/// Runs `flotilla node …`.
pub async fn run(cli: &Cli, args: &NodeArgs) -> anyhow::Result<()> {
    match &args.command {
        NodeCommand::Evict { id } => evict(cli, id).await,
    }
}

async fn evict(cli: &Cli, id: &str) -> anyhow::Result<()> {
    // Ids are base58 (letters and digits): nothing in one needs escaping in a path.
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        anyhow::bail!("{id:?} is not a node id");
    }
    let client = Client::from_cli(cli)?;
    let done: Evicted = client
        .post_json(&format!("/api/v1/nodes/{id}/evict"), &serde_json::json!({}))
        .await?;
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&done)?),
        Output::Table if done.already_evicted => println!(
            "node {} was already evicted (by {})",
            done.eviction.node, done.eviction.evicted_by
        ),
        Output::Table => println!(
            "evicted node {}: every node refuses it from now on",
            done.eviction.node
        ),
    }
    Ok(())
}
