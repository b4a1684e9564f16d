//! `ferrokv local-cluster`: N replicas as separate processes on 127.0.0.1, each with its own
//! data dir under one folder, kept for the next start.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct LocalClusterArgs {
    /// Folder holding one data dir per replica (node-1, node-2, ...); kept across runs.
    #[arg(long, default_value = "./ferrokv-data")]
    pub dir: PathBuf,

    /// Number of replicas.
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,

    /// Client port of replica 1; replica N uses base + 10*(N-1), its peer port +1, metrics +2.
    #[arg(long, default_value_t = 2379)]
    pub base_port: u16,
}

/// Ports of replica `n` (1-based): client, peer, metrics.
pub fn ports(base: u16, n: u16) -> (u16, u16, u16) {
    let client = base + 10 * (n - 1);
    (client, client + 1, client + 2)
}

pub async fn run(args: LocalClusterArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=9).contains(&args.nodes),
        "--nodes must be between 1 and 9"
    );
    anyhow::ensure!(
        u32::from(args.base_port) + 10 * u32::from(args.nodes) < 65_535,
        "--base-port {} leaves no room for {} replicas",
        args.base_port,
        args.nodes
    );
    let exe = std::env::current_exe().context("finding the ferrokv binary")?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let initial_cluster = (1..=args.nodes)
        .map(|n| format!("{n}=127.0.0.1:{}", ports(args.base_port, n).1))
        .collect::<Vec<_>>()
        .join(",");

    let mut children = Vec::new();
    for n in 1..=args.nodes {
        let (client, peer, metrics) = ports(args.base_port, n);
        let data_dir = dir.join(format!("node-{n}"));
        std::fs::create_dir_all(&data_dir)?;
        let log_path = dir.join(format!("node-{n}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = tokio::process::Command::new(&exe)
            .arg("--id")
            .arg(n.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client")
            .arg(format!("127.0.0.1:{client}"))
            .arg("--listen-peer")
            .arg(format!("127.0.0.1:{peer}"))
            .arg("--listen-metrics")
            .arg(format!("127.0.0.1:{metrics}"))
            .arg("--initial-cluster")
            .arg(&initial_cluster)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            // Own process group: Ctrl-C reaches only this command, which then stops the
            // replicas one at a time so each leader can hand over to a live peer.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting replica {n}"))?;
        children.push((n, child, log_path));
    }

    let endpoints = (1..=args.nodes)
        .map(|n| format!("127.0.0.1:{}", ports(args.base_port, n).0))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "ferrokv local cluster: {} replicas, data under {}",
        args.nodes,
        dir.display()
    );
    for (n, _, log) in &children {
        let (client, peer, metrics) = ports(args.base_port, *n);
        println!(
            "  replica {n}: client 127.0.0.1:{client}  peer 127.0.0.1:{peer}  metrics http://127.0.0.1:{metrics}/metrics  log {}",
            log.display()
        );
    }
    println!("try:\n  ferroctl --endpoints {endpoints} put hello world");
    println!("  ferroctl --endpoints {endpoints} get hello");
    println!("  ferroctl --endpoints {endpoints} endpoint status -w table");
    println!("Ctrl-C stops the cluster; the data stays for the next start.");

    let exited = async {
        let waits = children.iter_mut().map(|(n, c, _)| {
            let n = *n;
            Box::pin(async move { (n, c.wait().await) })
        });
        futures::future::select_all(waits).await.0
    };
    tokio::select! {
        _ = shutdown => {}
        (n, status) = exited => {
            eprintln!("replica {n} exited ({status:?}); stopping the others; see its log");
        }
    }

    for (n, child, _) in &mut children {
        if let Some(pid) = child.id() {
            // SAFETY: sending a signal to a child process we spawned and still own.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
            Ok(Ok(status)) => println!("replica {n} stopped ({status})"),
            _ => {
                let _ = child.kill().await;
                println!("replica {n} killed after 15s");
            }
        }
    }
    Ok(())
}
