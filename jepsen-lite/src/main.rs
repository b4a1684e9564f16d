//! `jepsen-lite`: the command-line shell over the library (exit 0 valid, 1 anomaly,
//! 2 the run could not be done; `bench` and `recovery`: 0 done, 2 not).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use jepsen_lite::cli::{CheckArgs, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("jepsen-lite: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Test(args) => {
            let opts = args.options().map_err(anyhow::Error::msg)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let outcome = runtime.block_on(jepsen_lite::runner::run(opts.clone()))?;
            print!("{}", outcome.summary);
            println!("reports: {}", opts.out.display());
            Ok(outcome.exit_code() as u8)
        }
        Command::Check(args) => check(args),
        Command::Bench(args) => {
            let opts = args.options().map_err(anyhow::Error::msg)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let results = runtime.block_on(jepsen_lite::bench::run(&opts))?;
            print!("{}", jepsen_lite::bench::report::text_table(&results));
            println!("reports: {}", opts.out.display());
            Ok(0)
        }
        Command::Recovery(args) => {
            let (opts, recovery) = args.options().map_err(anyhow::Error::msg)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let results = runtime.block_on(jepsen_lite::bench::run_recovery(&opts, &recovery))?;
            print!("{}", jepsen_lite::bench::recovery::markdown(&results));
            println!("reports: {}", opts.out.display());
            Ok(0)
        }
    }
}

fn check(args: CheckArgs) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&args.history)
        .with_context(|| format!("reading {}", args.history.display()))?;
    let events = jepsen_lite::history::from_jsonl(&text)
        .with_context(|| format!("parsing {}", args.history.display()))?;
    let ops = jepsen_lite::history::operations(&events);
    let result = jepsen_lite::analysis::check(args.workload, &ops, args.checker_budget);
    println!("{} operations", ops.len());
    for a in &result.anomalies {
        println!("anomaly: {}", a.describe());
    }
    for u in &result.unknown {
        println!("unknown: {u}");
    }
    Ok(if !result.anomalies.is_empty() {
        println!("valid: false");
        1
    } else if !result.unknown.is_empty() {
        println!("valid: unknown");
        2
    } else {
        println!("valid: true");
        0
    })
}
