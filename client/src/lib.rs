//! Async client for ferrokv, a replicated key-value store, and the library behind the
//! `ferroctl` command line.
//!
//! ```no_run
//! use ferrokv_client::{Client, ClientConfig, Error, PutOptions, ReadOptions};
//!
//! # async fn example() -> Result<(), Error> {
//! let client = Client::connect(["127.0.0.1:2379"], ClientConfig::default())?;
//! match client.put("k", "v", PutOptions::default()).await {
//!     Ok(_) => {}
//!     // The write may or may not have happened: read it back before deciding.
//!     Err(Error::Ambiguous(why)) => eprintln!("unknown outcome: {why}"),
//!     Err(other) => return Err(other),
//! }
//! let (_header, kv) = client.get("k", ReadOptions::default()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`Client`] (`client.rs`): the typed requests (get, put, delete, scan, txn, member
//!   list, status) and the attempt loop that carries each request across endpoints.
//! - `endpoint.rs`: `host:port` normalization, one lazily-dialed gRPC channel per
//!   endpoint, and the order endpoints are tried in (last success first).
//! - `retry.rs`: the pure decision after a failed attempt — next endpoint, back off and
//!   go around again, fail, or fail as ambiguous — tested without sockets.
//! - [`Error`] (`error.rs`): one variant per outcome a caller handles differently.
//! - `options.rs`: [`ReadOptions`], [`PutOptions`], [`ScanRange`], [`ScanOptions`].
//! - [`txn`]: constructors for transaction compares and ops.
//! - [`ClientConfig`] (`config.rs`): dial and request timeouts.
//! - `bin/ferroctl.rs` + `bin/ferroctl/`: the CLI, a thin shell over [`Client`].
//!
//! A request flows: typed method → wire request (`ferrokv_proto`) → attempt loop: for
//! each endpoint in order, send with the time left as gRPC deadline → on failure,
//! `retry::classify` decides → the response, or an [`Error`].
//!
//! # Retries and ambiguity
//! Reads are resent to another endpoint after any failure to reach one. A write is
//! resent only when it certainly was not applied: the connection was never established,
//! or the server answered `UNAVAILABLE` saying it did not propose it (no leader). Any
//! other failure after a write may have been sent is [`Error::Ambiguous`]: the write
//! may or may not take effect, and the client does not resend it.

#![warn(missing_docs)]

mod client;
mod config;
mod endpoint;
mod error;
mod options;
mod retry;
pub mod txn;

pub use client::{Client, EndpointStatus};
pub use config::ClientConfig;
pub use error::Error;
pub use options::{PutOptions, ReadOptions, ScanOptions, ScanRange};

/// The generated wire types (package `ferrokv.v1`), for what the re-exports below do
/// not cover.
pub use ferrokv_proto::v1 as proto;

pub use ferrokv_proto::v1::{
    Compare, DeleteResponse, KeyValue, Member, MemberListResponse, PutResponse, ResponseHeader,
    ScanResponse, StatusResponse, TxnOp, TxnOpResult, TxnRequest, TxnResponse,
};

/// The gRPC status code carried by [`Error::Server`].
pub use tonic::Code;
