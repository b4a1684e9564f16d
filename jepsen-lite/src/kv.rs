//! The few key-value operations the workloads need, over ferrokv's client and etcd's,
//! with every error classified as definitely-not-applied or unknown.

use std::time::Duration;

use ferrokv_client::txn::{self, CompareOp};
use ferrokv_client::{ClientConfig, PutOptions, ReadOptions, ScanOptions, ScanRange, TxnRequest};

use crate::db::DbKind;

/// A failed request. `definite`: certainly not applied (for a write); otherwise the
/// outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KvError {
    pub definite: bool,
    pub message: String,
}

/// A key's value and the revision of its last write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub mod_revision: u64,
}

/// What a compare-and-set expects of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Absent,
    Value(Vec<u8>),
    ModRevision(u64),
}

/// A client bound to some replicas of one cluster.
#[derive(Clone)]
pub enum KvClient {
    Ferrokv(ferrokv_client::Client),
    // Boxed: etcd's client is a few KiB, ferrokv's a pointer.
    Etcd(Box<etcd_client::Client>),
}

fn ferrokv_error(e: ferrokv_client::Error) -> KvError {
    // The client calls a write ambiguous once it may have been sent. A deadline is also
    // read as unknown: being conservative here can only hide anomalies, never invent one.
    let definite = e.is_definite() && !matches!(e, ferrokv_client::Error::DeadlineExceeded(_));
    KvError {
        definite,
        message: e.to_string(),
    }
}

fn etcd_error(e: etcd_client::Error) -> KvError {
    use tonic::Code;
    let definite = match &e {
        etcd_client::Error::GRpcStatus(s) => {
            matches!(
                s.code(),
                Code::InvalidArgument
                    | Code::FailedPrecondition
                    | Code::OutOfRange
                    | Code::PermissionDenied
            ) || (s.code() == Code::Unavailable && is_connect_failure(s))
        }
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => true,
        _ => false,
    };
    KvError {
        definite,
        message: e.to_string(),
    }
}

/// Whether the request never left this process (the connection could not be opened).
fn is_connect_failure(s: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(s);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// An etcd client over `endpoints` (host:port) with a 1 s dial timeout and `timeout` per
/// request; shared by the workloads and the bench so both drive etcd the same way.
pub(crate) async fn connect_etcd(
    endpoints: &[String],
    timeout: Duration,
) -> Result<etcd_client::Client, etcd_client::Error> {
    let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(timeout);
    etcd_client::Client::connect(urls, Some(options)).await
}

impl KvClient {
    /// Connects to `endpoints` (`host:port`); `timeout` bounds each request.
    pub async fn connect(
        kind: DbKind,
        endpoints: &[String],
        timeout: Duration,
    ) -> Result<KvClient, KvError> {
        match kind {
            // No member discovery: a worker stays on the replica it is bound to, so a
            // replica serving stale data shows it to its own workers.
            DbKind::Ferrokv => ferrokv_client::Client::builder(endpoints.to_vec())
                .config(ClientConfig {
                    dial_timeout: Duration::from_secs(1),
                    request_timeout: timeout,
                })
                .member_refresh_interval(None)
                .connect()
                .map(KvClient::Ferrokv)
                .map_err(ferrokv_error),
            DbKind::Etcd => connect_etcd(endpoints, timeout)
                .await
                .map(|c| KvClient::Etcd(Box::new(c)))
                .map_err(etcd_error),
        }
    }

    /// Linearizable read of one key.
    pub async fn get(&self, key: &str) -> Result<Option<Versioned>, KvError> {
        match self {
            KvClient::Ferrokv(c) => {
                let (_, kv) = c
                    .get(key, ReadOptions::default())
                    .await
                    .map_err(ferrokv_error)?;
                Ok(kv.map(|kv| Versioned {
                    value: kv.value,
                    mod_revision: kv.mod_revision,
                }))
            }
            KvClient::Etcd(c) => {
                let resp = (**c).clone().get(key, None).await.map_err(etcd_error)?;
                Ok(resp.kvs().first().map(|kv| Versioned {
                    value: kv.value().to_vec(),
                    mod_revision: u64::try_from(kv.mod_revision()).unwrap_or(0),
                }))
            }
        }
    }

    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        match self {
            KvClient::Ferrokv(c) => c
                .put(key, value.to_vec(), PutOptions::default())
                .await
                .map(|_| ())
                .map_err(ferrokv_error),
            KvClient::Etcd(c) => c
                .clone()
                .put(key, value.to_vec(), None)
                .await
                .map(|_| ())
                .map_err(etcd_error),
        }
    }

    /// Writes `value` at `key` if the key is as `expect` says; returns whether it did.
    pub async fn cas(&self, key: &str, expect: &Expect, value: &[u8]) -> Result<bool, KvError> {
        match self {
            KvClient::Ferrokv(c) => {
                let compare = match expect {
                    Expect::Absent => txn::exists(key, false),
                    Expect::Value(v) => txn::value(key, CompareOp::Equal, v.clone()),
                    Expect::ModRevision(r) => txn::mod_revision(key, CompareOp::Equal, *r),
                };
                let resp = c
                    .txn(TxnRequest {
                        compares: vec![compare],
                        success: vec![txn::put(key, value.to_vec())],
                        failure: vec![],
                        ..TxnRequest::default()
                    })
                    .await
                    .map_err(ferrokv_error)?;
                Ok(resp.succeeded)
            }
            KvClient::Etcd(c) => {
                use etcd_client::{Compare, CompareOp as EOp, Txn, TxnOp};
                let compare = match expect {
                    Expect::Absent => Compare::create_revision(key, EOp::Equal, 0),
                    Expect::Value(v) => Compare::value(key, EOp::Equal, v.clone()),
                    Expect::ModRevision(r) => Compare::mod_revision(
                        key,
                        EOp::Equal,
                        i64::try_from(*r).unwrap_or(i64::MAX),
                    ),
                };
                let txn =
                    Txn::new()
                        .when([compare])
                        .and_then([TxnOp::put(key, value.to_vec(), None)]);
                let resp = (**c).clone().txn(txn).await.map_err(etcd_error)?;
                Ok(resp.succeeded())
            }
        }
    }

    /// Linearizable read of every key under `prefix` (keys only).
    pub async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<Vec<u8>>, KvError> {
        match self {
            KvClient::Ferrokv(c) => {
                let (_, kvs) = c
                    .scan_all(
                        ScanRange::prefix(prefix),
                        ScanOptions {
                            limit: 1000,
                            keys_only: true,
                            ..ScanOptions::default()
                        },
                    )
                    .await
                    .map_err(ferrokv_error)?;
                Ok(kvs.into_iter().map(|kv| kv.key).collect())
            }
            KvClient::Etcd(c) => {
                let resp = c
                    .clone()
                    .get(
                        prefix,
                        Some(
                            etcd_client::GetOptions::new()
                                .with_prefix()
                                .with_keys_only(),
                        ),
                    )
                    .await
                    .map_err(etcd_error)?;
                Ok(resp.kvs().iter().map(|kv| kv.key().to_vec()).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ferrokv_errors_are_unknown_unless_the_client_knows_better() {
        let e = ferrokv_error(ferrokv_client::Error::Ambiguous("x".into()));
        assert!(!e.definite);
        let e = ferrokv_error(ferrokv_client::Error::DeadlineExceeded("x".into()));
        assert!(!e.definite);
        let e = ferrokv_error(ferrokv_client::Error::Unavailable("no leader".into()));
        assert!(e.definite);
    }

    #[test]
    fn etcd_errors_are_unknown_unless_refused_up_front() {
        let e = etcd_error(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
            "etcdserver: request timed out",
        )));
        assert!(!e.definite);
        let e = etcd_error(etcd_client::Error::GRpcStatus(
            tonic::Status::invalid_argument("bad"),
        ));
        assert!(e.definite);
    }
}
