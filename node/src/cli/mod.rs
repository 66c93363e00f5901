//! The `flotilla` command line: the daemon (`up`), client commands that talk HTTP to any node
//! (`status`, `nodes`, `node evict`, `jobs`, `job …`, `data …`, `models`, `deploy`,
//! `deployments`, `undeploy`), `demo`, and `completions`.
//!
//! Every flag can also be set with a `FLOTILLA_*` environment variable; `--config FILE` reads a
//! TOML file. Precedence: defaults < file < environment < flags. Exit codes: 0 ok, 1 error,
//! 2 usage, 3 no reachable node.

pub mod client;
pub mod data;
mod data_ops;
mod data_upload;
pub mod demo;
mod demo_train;
pub mod deploy;
pub mod job;
pub mod node;
pub mod table;
pub mod train;
pub mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{ClientConfig, FileConfig};

/// Exit code when no node could be reached.
pub const EXIT_UNREACHABLE: i32 = 3;

/// Flotilla: a peer-to-peer cluster for the whole life of a model.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file (sections [node] and [client]).
    #[arg(long, global = true, env = "FLOTILLA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Base URL of the node that client commands talk to.
    #[arg(long, global = true, env = "FLOTILLA_PEER", value_name = "URL")]
    pub peer: Option<String>,
    /// File with the API bearer token: required by `up` to bind beyond loopback, sent by client
    /// commands.
    #[arg(
        long,
        global = true,
        env = "FLOTILLA_API_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub api_token_file: Option<PathBuf>,
    /// Output format of read commands.
    #[arg(long, global = true, env = "FLOTILLA_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `flotilla_node=debug`. Defaults
    /// to `info` for `up` and `warn` for every other command.
    #[arg(long, global = true, env = "FLOTILLA_LOG")]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node daemon until SIGINT or SIGTERM.
    Up(Box<up::UpArgs>),
    /// Show the target node's own state and a summary of its view.
    Status,
    /// List the cluster's members as the target node sees them.
    Nodes,
    /// Act on one member: `evict` removes it from the cluster.
    Node(node::NodeArgs),
    /// List every job the cluster's catalog holds.
    Jobs,
    /// Submit, show, follow or cancel a job.
    Job(job::JobArgs),
    /// Train a model from a spec (TOML) as a job on the mesh, following its progress; the
    /// result is registered as a model version.
    Train(train::TrainArgs),
    /// List model versions registered for serving, or register a folder.
    Models(deploy::ModelsArgs),
    /// Deploy a model version: replicas placed on nodes, served on every node's OpenAI API.
    Deploy(deploy::DeployArgs),
    /// List deployments and where their replicas run.
    Deployments,
    /// Remove a deployment; its replicas stop.
    Undeploy {
        /// The deployment's name.
        name: String,
    },
    /// Datasets: upload, list, show, export, rm, and operations run as jobs.
    Data(data::DataArgs),
    /// Start a local cluster on loopback, wait for it to converge and show it.
    Demo(demo::DemoArgs),
    /// Print a shell completion script.
    Completions {
        /// Shell to generate for.
        shell: clap_complete::Shell,
    },
}

impl Cli {
    /// The log filter in force.
    pub fn log_filter(&self) -> &str {
        match (&self.log, &self.command) {
            (Some(f), _) => f,
            (None, Command::Up(_)) => "info",
            (None, _) => "warn",
        }
    }

    /// The config file's contents, or defaults when none is given.
    pub fn file_config(&self) -> anyhow::Result<FileConfig> {
        match &self.config {
            Some(path) => FileConfig::load(path),
            None => Ok(FileConfig::default()),
        }
    }

    /// Client settings after precedence: defaults < file < environment/flags.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let mut c = self.file_config()?.client;
        if let Some(p) = &self.peer {
            c.peer = p.clone();
        }
        if let Some(t) = &self.api_token_file {
            c.api_token_file = Some(t.clone());
        }
        Ok(c)
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Up(args) => up::run(&cli, args).await,
        Command::Status => client::status(&cli).await,
        Command::Nodes => client::nodes(&cli).await,
        Command::Node(args) => node::run(&cli, args).await,
        Command::Jobs => job::list(&cli).await,
        Command::Job(args) => job::run(&cli, args).await,
        Command::Train(args) => train::run(&cli, args).await,
        Command::Models(args) => deploy::models(&cli, args).await,
        Command::Deploy(args) => deploy::deploy(&cli, args).await,
        Command::Deployments => deploy::deployments(&cli).await,
        Command::Undeploy { name } => deploy::undeploy(&cli, name).await,
        Command::Data(args) => data::run(&cli, args).await,
        Command::Demo(args) => demo::run(&cli, args).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "flotilla", &mut std::io::stdout());
            Ok(())
        }
    }
}
