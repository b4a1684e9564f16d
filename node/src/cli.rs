//! The `ferrokv` command line: runs one replica, or a local cluster for trying ferrokv.

use crate::config::LogFormat;
use crate::config::NodeConfig;
use crate::local_cluster::LocalClusterArgs;
use clap::Parser;
use clap::Subcommand;

#[derive(Parser)]
#[command(
    name = "ferrokv",
    version,
    about = "ferrokv: a replicated key-value store (one replica per process)"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    node: NodeConfig,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster: N replicas as separate processes, each with its own data dir.
    LocalCluster(LocalClusterArgs),
}

fn init_tracing(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGTERM (Kubernetes, kill) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::SignalKind;
    use tokio::signal::unix::signal;
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Entry point of the `ferrokv` binary (and of `ferrokv-faulty`, its fault-injection build).
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::LocalCluster(args)) => {
            init_tracing(LogFormat::Text, "info");
            crate::local_cluster::run(args, shutdown_signal()).await
        }
        None => {
            init_tracing(cli.node.log_format, &cli.node.log);
            crate::server::run(cli.node, shutdown_signal()).await
        }
    }
}
