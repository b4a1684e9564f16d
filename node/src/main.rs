//! The `ferrokv` binary: runs one replica, or a local 3-replica cluster for trying ferrokv.

use clap::Parser;
use clap::Subcommand;
use ferrokv_node::config::LogFormat;
use ferrokv_node::config::NodeConfig;
use ferrokv_node::local_cluster::LocalClusterArgs;

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::LocalCluster(args)) => {
            init_tracing(LogFormat::Text, "info");
            ferrokv_node::local_cluster::run(args, shutdown_signal()).await
        }
        None => {
            init_tracing(cli.node.log_format, &cli.node.log);
            ferrokv_node::server::run(cli.node, shutdown_signal()).await
        }
    }
}
