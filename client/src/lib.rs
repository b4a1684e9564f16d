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
//! - [`Client`] (`client.rs`): shared state and the key-value requests (get, put,
//!   delete, scan / scan stream, txn, compare-and-swap).
//! - `membership.rs`: member list / add / promote / remove, leader transfer, status,
//!   and the member-list refresh that keeps the endpoints current.
//! - `attempt.rs`: the attempt loop that carries every request across endpoints
//!   (leader first for writes, failover with backoff and jitter, per-attempt and
//!   per-request deadlines) and the session lease around a write.
//! - `session.rs`: the pool of client sessions (one write per session at a time).
//! - `endpoint.rs`: `host:port` normalization, one lazily-dialed channel per endpoint
//!   (configured or discovered), endpoint health, the leader hint and the try order.
//! - `retry.rs`: the pure decision after a failed attempt — next endpoint, back off and
//!   go around again, resend within the session, fail, or fail as ambiguous — tested
//!   without sockets.
//! - [`Error`] (`error.rs`): one variant per outcome a caller handles differently.
//! - `options.rs`: [`ReadOptions`], [`PutOptions`], [`ScanRange`], [`ScanOptions`].
//! - [`txn`]: the [`Txn`] builder and constructors for compares and ops.
//! - [`ClientConfig`], [`ClientBuilder`] (`config.rs`): timeouts, sessions, discovery.
//! - `bin/ferroctl.rs` + `bin/ferroctl/`: the CLI, a thin shell over [`Client`].
//!
//! A request flows: typed method → wire request (`ferrokv_proto`) → (writes) lease a
//! session and take the next sequence → attempt loop: for each endpoint in order, send
//! with the attempt's deadline → on failure, `retry::classify` decides → the response,
//! or an [`Error`].
//!
//! # Retries and ambiguity
//! Reads are resent freely. Puts, deletes and transactions run in a client session
//! (client id + sequence, applied at most once by the state machine), so a write whose
//! outcome is unknown is resent with the same sequence until it is decided; one still
//! undecided at its deadline is [`Error::Ambiguous`]. Without sessions
//! ([`ClientBuilder::exactly_once`]), a write is resent only when it certainly was not
//! applied. The crate's README ("Retries and sessions") explains the choices.

#![warn(missing_docs)]

mod attempt;
mod client;
mod config;
mod endpoint;
mod error;
mod membership;
mod options;
mod retry;
mod session;
pub mod txn;

pub use client::Client;
pub use config::{ClientBuilder, ClientConfig};
pub use error::Error;
pub use membership::EndpointStatus;
pub use options::{PutOptions, ReadOptions, ScanOptions, ScanRange};
pub use txn::Txn;

/// The generated wire types (package `ferrokv.v1`), for what the re-exports below do
/// not cover.
pub use ferrokv_proto::v1 as proto;

pub use ferrokv_proto::v1::{
    AddLearnerRequest, AddLearnerResponse, Compare, DeleteResponse, KeyValue, Member,
    MemberListResponse, PromoteLearnerResponse, PutResponse, RemoveMemberResponse, ResponseHeader,
    ScanResponse, StatusResponse, TransferLeaderResponse, TxnOp, TxnOpResult, TxnRequest,
    TxnResponse,
};

/// The gRPC status code carried by [`Error::Server`].
pub use tonic::Code;
