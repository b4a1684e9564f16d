//! A tour of ferrokv-client against a running cluster:
//!
//! ```text
//! cargo run -p ferrokv-client --example quickstart -- --endpoints 127.0.0.1:2379,127.0.0.1:2479
//! ```
//!
//! Writes a few keys, reads them back, scans them as a stream, runs a compare-and-swap,
//! lists the members, and shows how to tell "failed" from "outcome unknown".

use std::time::Duration;

use clap::Parser;
use ferrokv_client::txn::{self, CompareOp, Txn};
use ferrokv_client::{Client, Error, PutOptions, ReadOptions, ScanOptions, ScanRange};
use futures::TryStreamExt;

#[derive(Debug, Parser)]
struct Args {
    /// Cluster endpoints, host:port, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let client = Client::builder(args.endpoints)
        .request_timeout(Duration::from_secs(5))
        .connect()?;

    // Writes run in a client session: if an answer is lost, the client resends the
    // write with the same sequence number and the cluster applies it once.
    for i in 0..5 {
        match client
            .put(
                format!("quickstart/{i}"),
                format!("value {i}"),
                PutOptions::default(),
            )
            .await
        {
            Ok(response) => {
                let header = response.header.unwrap_or_default();
                println!(
                    "put quickstart/{i} at revision {} (member {})",
                    header.revision, header.member_id
                );
            }
            // Still undecided at the deadline: read the key back before deciding.
            Err(Error::Ambiguous(why)) => println!("quickstart/{i}: outcome unknown: {why}"),
            Err(other) => return Err(other),
        }
    }

    let (_, kv) = client.get("quickstart/0", ReadOptions::default()).await?;
    println!(
        "get quickstart/0 -> {:?}",
        kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    );

    // Large ranges: a stream fetches page after page as it is consumed.
    let options = ScanOptions {
        limit: 2,
        ..ScanOptions::default()
    };
    let mut keys = std::pin::pin!(client.scan_stream(ScanRange::prefix("quickstart/"), options));
    while let Some(kv) = keys.try_next().await? {
        println!("scan: {}", String::from_utf8_lossy(&kv.key));
    }

    // Compare-and-swap, and the same with the Txn builder.
    match client
        .compare_and_swap("quickstart/0", Some(b"value 0"), "swapped")
        .await
    {
        Ok(_) => println!("swapped quickstart/0"),
        Err(Error::CompareFailed { current, .. }) => println!("not swapped; current {current:?}"),
        Err(other) => return Err(other),
    }
    let response = client
        .txn(
            Txn::new()
                .when([txn::version("quickstart/1", CompareOp::Equal, 1)])
                .and_then([txn::put("quickstart/1", "second version")])
                .or_else([txn::get("quickstart/1")]),
        )
        .await?;
    println!("txn succeeded: {}", response.succeeded);

    // Per-request deadline.
    let quick = client.with_timeout(Duration::from_millis(500));
    let members = quick.member_list().await?.members;
    for member in &members {
        println!(
            "member {} {} client {} learner={}",
            member.id, member.name, member.client_addr, member.is_learner
        );
    }
    println!("endpoints in use: {}", client.endpoints().join(", "));
    Ok(())
}
