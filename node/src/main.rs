//! The `flotilla` binary.

use clap::Parser;
use flotilla_node::cli::{self, client::Unreachable, Cli};

#[tokio::main]
async fn main() {
    flotilla_node::install_crypto_provider();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(cli.log_filter())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = cli::run(cli).await {
        eprintln!("error: {e:#}");
        let code = if e.downcast_ref::<Unreachable>().is_some() {
            cli::EXIT_UNREACHABLE
        } else {
            1
        };
        std::process::exit(code);
    }
}
