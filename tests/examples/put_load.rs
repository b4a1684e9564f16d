//! A quick put-rate probe (not the benchmark: `jepsen-lite bench` is): N concurrent clients
//! put distinct keys for a fixed time against the given endpoints and print ops/s.
//!
//! `cargo run -p ferrokv-tests --example put_load -- 127.0.0.1:2379,127.0.0.1:2389 64 10`

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use ferrokv_client::Client;
use ferrokv_client::ClientConfig;
use ferrokv_client::PutOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let endpoints: Vec<String> = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:2379".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let clients: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let secs: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let client = Client::connect(endpoints, ClientConfig::default())?;
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, ok, errors) = (client.clone(), ok.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < end {
                let key = format!("load/{c}/{i}");
                match client
                    .put(key, vec![b'x'; 100], PutOptions::default())
                    .await
                {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    println!(
        "{clients} clients, {elapsed:.1} s: {ok} puts ok ({:.0}/s), {} errors",
        ok as f64 / elapsed,
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}
