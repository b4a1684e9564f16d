//! The `Client`: typed requests and the attempt loop that carries each one across the
//! endpoints (failover, backoff, deadline).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferrokv_proto::v1::{
    DeleteRequest, DeleteResponse, GetRequest, KeyValue, MemberListRequest, MemberListResponse,
    PutRequest, PutResponse, ResponseHeader, ScanResponse, StatusRequest, StatusResponse,
    TxnRequest, TxnResponse, cluster_client::ClusterClient, kv_client::KvClient,
    maintenance_client::MaintenanceClient,
};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::endpoint::{EndpointConn, Endpoints, lazy_channel, normalize_endpoint};
use crate::options::scan_request;
use crate::retry::{Decision, Failure, OpKind, Origin, backoff, classify};
use crate::{ClientConfig, Error, PutOptions, ReadOptions, ScanOptions, ScanRange};

/// Largest response the client accepts. The server bounds its pages; this only keeps a
/// confused peer from making the client allocate without limit. Scan pages of large
/// values (up to 1 MiB each by default) need more than tonic's 4 MiB default.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A handle to a ferrokv cluster.
///
/// Cheap to clone (the connections are shared) and safe to use from many tasks at
/// once. Connections are opened lazily, on the first request to each endpoint, and
/// re-opened after a failure.
///
/// Each request tries the endpoint that answered last, then the others in order. Reads
/// move on after any failure to reach an endpoint; writes move on only when nothing was
/// sent (see [`Error::Ambiguous`]). When the servers answer that no leader is known, the
/// client goes around the endpoints again with a short backoff until
/// [`ClientConfig::request_timeout`] runs out.
///
/// ```no_run
/// use ferrokv_client::{Client, ClientConfig, PutOptions, ReadOptions};
///
/// # async fn example() -> Result<(), ferrokv_client::Error> {
/// let client = Client::connect(["10.0.0.1:2379", "10.0.0.2:2379"], ClientConfig::default())?;
/// client.put("greeting", "hello", PutOptions::default()).await?;
/// let (_header, kv) = client.get("greeting", ReadOptions::default()).await?;
/// assert_eq!(kv.map(|kv| kv.value), Some(b"hello".to_vec()));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoints: Endpoints,
    config: ClientConfig,
}

/// One endpoint's answer to [`Client::status_all`].
#[derive(Debug)]
pub struct EndpointStatus {
    /// The endpoint as configured.
    pub endpoint: String,
    /// Its status, or why it could not be had.
    pub status: Result<StatusResponse, Error>,
}

impl Client {
    /// Creates a client for the cluster reachable at `endpoints` (`host:port`, or
    /// `http://host:port`).
    ///
    /// Nothing is dialed yet: a wrong or unreachable endpoint shows up on the first
    /// request. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::NoEndpoints`] for an empty list, [`Error::InvalidEndpoint`] for an
    /// endpoint that is not `host:port`, [`Error::NoRuntime`] outside a Tokio runtime.
    ///
    /// ```no_run
    /// # fn example() -> Result<(), ferrokv_client::Error> {
    /// use ferrokv_client::{Client, ClientConfig};
    /// let client = Client::connect(["127.0.0.1:2379"], ClientConfig::default())?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        config: ClientConfig,
    ) -> Result<Client, Error> {
        let conns = endpoints
            .into_iter()
            .map(|endpoint| {
                let name = endpoint.into().trim().to_string();
                let uri = normalize_endpoint(&name)?;
                let channel = lazy_channel(&name, &uri, &config)?;
                Ok(EndpointConn { name, channel })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints: Endpoints::new(conns)?,
                config,
            }),
        })
    }

    /// The configured endpoints, in configuration order.
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.inner.endpoints.all().iter().map(|c| c.name.as_str())
    }

    /// The configuration this client was created with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Reads `key`. Returns the header of the answering replica and the key, or `None`
    /// when the key does not exist.
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// use ferrokv_client::ReadOptions;
    /// match client.get("config/mode", ReadOptions::default()).await? {
    ///     (_, Some(kv)) => println!("{}", String::from_utf8_lossy(&kv.value)),
    ///     (header, None) => println!("absent at revision {}", header.revision),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        options: ReadOptions,
    ) -> Result<(ResponseHeader, Option<KeyValue>), Error> {
        let request = GetRequest {
            key: key.into(),
            consistency: options.consistency() as i32,
        };
        let response = self
            .call(OpKind::Read, "get", |channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { kv_client(channel).get(request).await }
            })
            .await?;
        Ok((response.header.unwrap_or_default(), response.kv))
    }

    /// Writes `value` at `key`.
    ///
    /// # Errors
    /// [`Error::Ambiguous`] when the put may or may not have been applied; the client
    /// never resends it by itself.
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// use ferrokv_client::PutOptions;
    /// let response = client.put("k", "v2", PutOptions { prev_kv: true }).await?;
    /// if let Some(prev) = response.prev_kv {
    ///     println!("replaced {:?}", prev.value);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: PutOptions,
    ) -> Result<PutResponse, Error> {
        let request = PutRequest {
            key: key.into(),
            value: value.into(),
            prev_kv: options.prev_kv,
            session: None,
        };
        self.call(OpKind::Write, "put", |channel, timeout| {
            let request = with_timeout(request.clone(), timeout);
            async move { kv_client(channel).put(request).await }
        })
        .await
    }

    /// Deletes `key`; [`DeleteResponse::deleted`] is 1 when it existed, 0 otherwise.
    /// With `prev_kv`, the deleted key is returned too.
    ///
    /// # Errors
    /// [`Error::Ambiguous`] when the delete may or may not have been applied.
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// let deleted = client.delete("k", false).await?.deleted;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
        prev_kv: bool,
    ) -> Result<DeleteResponse, Error> {
        let request = DeleteRequest {
            key: key.into(),
            prev_kv,
            session: None,
        };
        self.call(OpKind::Write, "delete", |channel, timeout| {
            let request = with_timeout(request.clone(), timeout);
            async move { kv_client(channel).delete(request).await }
        })
        .await
    }

    /// Reads the first page of `range`: at most `limit` keys (0: the server's default
    /// page size), with values. When [`ScanResponse::more`] is set, pass
    /// [`ScanResponse::next_token`] as [`ScanOptions::continuation`] to
    /// [`Client::scan_page`] for the next page, or use [`Client::scan_all`].
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// use ferrokv_client::{ReadOptions, ScanRange};
    /// let page = client.scan(ScanRange::prefix("users/"), 100, ReadOptions::default()).await?;
    /// for kv in &page.kvs {
    ///     println!("{}", String::from_utf8_lossy(&kv.key));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn scan(
        &self,
        range: ScanRange,
        limit: u32,
        options: ReadOptions,
    ) -> Result<ScanResponse, Error> {
        let options = ScanOptions {
            limit,
            read: options,
            ..ScanOptions::default()
        };
        self.scan_page(&range, &options).await
    }

    /// Reads one page of `range` as `options` say (page size, keys only, where to
    /// resume).
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// use ferrokv_client::{ScanOptions, ScanRange};
    /// let range = ScanRange::range("a", "m");
    /// let mut options = ScanOptions { limit: 500, keys_only: true, ..ScanOptions::default() };
    /// loop {
    ///     let page = client.scan_page(&range, &options).await?;
    ///     println!("{} keys", page.kvs.len());
    ///     if !page.more {
    ///         break;
    ///     }
    ///     options.continuation = page.next_token;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn scan_page(
        &self,
        range: &ScanRange,
        options: &ScanOptions,
    ) -> Result<ScanResponse, Error> {
        let request = scan_request(range, options);
        self.call(OpKind::Read, "scan", |channel, timeout| {
            let request = with_timeout(request.clone(), timeout);
            async move { kv_client(channel).scan(request).await }
        })
        .await
    }

    /// Reads every key of `range`, page after page (`options.limit` is the page size),
    /// and returns them with the header of the last page.
    ///
    /// Each page is its own request with its own timeout and consistency: the result
    /// is not one snapshot — a key written during the scan may or may not appear.
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// use ferrokv_client::{ScanOptions, ScanRange};
    /// let (_, kvs) = client.scan_all(ScanRange::prefix("jobs/"), ScanOptions::default()).await?;
    /// println!("{} jobs", kvs.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn scan_all(
        &self,
        range: ScanRange,
        options: ScanOptions,
    ) -> Result<(ResponseHeader, Vec<KeyValue>), Error> {
        let mut options = options;
        let mut kvs = Vec::new();
        loop {
            let page = self.scan_page(&range, &options).await?;
            kvs.extend(page.kvs);
            let header = page.header.unwrap_or_default();
            match next_continuation(page.more, page.next_token, &options.continuation)? {
                Some(token) => options.continuation = token,
                None => return Ok((header, kvs)),
            }
        }
    }

    /// Runs a transaction: if every compare holds the success ops run, else the failure
    /// ops, atomically. See [`crate::txn`] for building one.
    ///
    /// # Errors
    /// [`Error::Ambiguous`] when the transaction may or may not have been applied.
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// use ferrokv_client::txn::{self, CompareOp};
    /// use ferrokv_client::TxnRequest;
    /// let response = client
    ///     .txn(TxnRequest {
    ///         compares: vec![txn::version("counter", CompareOp::Equal, 7)],
    ///         success: vec![txn::put("counter", "8")],
    ///         failure: vec![txn::get("counter")],
    ///     })
    ///     .await?;
    /// println!("swapped: {}", response.succeeded);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, Error> {
        // A transaction of gets only changes nothing, but it still goes through the
        // log like any Txn, so it is treated as a write: never resent blindly.
        self.call(OpKind::Write, "txn", |channel, timeout| {
            let request = with_timeout(request.clone(), timeout);
            async move { kv_client(channel).txn(request).await }
        })
        .await
    }

    /// Lists the cluster's members (voters and learners).
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// for member in client.member_list().await?.members {
    ///     println!("{} {} learner={}", member.id, member.name, member.is_learner);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn member_list(&self) -> Result<MemberListResponse, Error> {
        self.call(OpKind::Read, "member list", |channel, timeout| {
            let request = with_timeout(MemberListRequest {}, timeout);
            async move {
                ClusterClient::new(channel)
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .member_list(request)
                    .await
            }
        })
        .await
    }

    /// Asks one endpoint (`host:port`, configured or not) for its own status, through
    /// the Maintenance service. No failover: the point is to hear from that replica.
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// let status = client.status("127.0.0.1:2379").await?;
    /// println!("{} is {} in term {}", status.name, status.role, status.term);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn status(&self, endpoint: &str) -> Result<StatusResponse, Error> {
        let name = endpoint.trim();
        let uri = normalize_endpoint(name)?;
        let configured = self.inner.endpoints.all().iter().find(|conn| {
            conn.name == name || normalize_endpoint(&conn.name).is_ok_and(|u| u == uri)
        });
        let channel = match configured {
            Some(conn) => conn.channel.clone(),
            None => lazy_channel(name, &uri, &self.inner.config)?,
        };
        self.status_of(name, channel).await
    }

    /// Asks every configured endpoint for its status, concurrently, and returns one
    /// entry per endpoint in configuration order (for `ferroctl endpoint status`).
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) {
    /// for entry in client.status_all().await {
    ///     match entry.status {
    ///         Ok(status) => println!("{}: leader {}", entry.endpoint, status.leader_id),
    ///         Err(err) => println!("{}: {err}", entry.endpoint),
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn status_all(&self) -> Vec<EndpointStatus> {
        let requests = self.inner.endpoints.all().iter().map(|conn| async move {
            EndpointStatus {
                endpoint: conn.name.clone(),
                status: self.status_of(&conn.name, conn.channel.clone()).await,
            }
        });
        futures::future::join_all(requests).await
    }

    /// One Status request to one endpoint, no retries.
    async fn status_of(&self, name: &str, channel: Channel) -> Result<StatusResponse, Error> {
        let timeout = self.inner.config.request_timeout;
        let deadline = Instant::now() + timeout;
        let result = MaintenanceClient::new(channel)
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .status(with_timeout(StatusRequest::default(), timeout))
            .await;
        result.map(tonic::Response::into_inner).map_err(|status| {
            let failure = Failure::from_status(&status).at_deadline(Instant::now() >= deadline);
            final_error("status", name, timeout, failure)
        })
    }

    /// Carries one request across the endpoints until it succeeds, fails for good, or
    /// the request timeout runs out. `attempt` sends it once on a channel, with the
    /// time left as its deadline.
    async fn call<T, F, Fut>(&self, op: OpKind, what: &str, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let timeout = self.inner.config.request_timeout;
        let deadline = Instant::now() + timeout;
        let endpoints = &self.inner.endpoints;
        let mut round = 0;
        loop {
            let mut failures = RoundFailures::default();
            for index in endpoints.order() {
                let conn = endpoints.get(index);
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(failures.into_error(what, timeout));
                }
                let status = match attempt(conn.channel.clone(), left).await {
                    Ok(response) => {
                        endpoints.succeeded(index);
                        return Ok(response.into_inner());
                    }
                    Err(status) => status,
                };
                let failure = Failure::from_status(&status).at_deadline(Instant::now() >= deadline);
                let decision = classify(op, &failure);
                tracing::debug!(endpoint = %conn.name, what, ?failure, ?decision, "attempt failed");
                match decision {
                    Decision::NextEndpoint => {
                        failures.unreachable.push((conn.name.clone(), failure))
                    }
                    Decision::RetryWithBackoff => {
                        failures.unavailable = Some((conn.name.clone(), failure))
                    }
                    Decision::Fail => return Err(final_error(what, &conn.name, timeout, failure)),
                    Decision::FailAmbiguous => {
                        return Err(Error::Ambiguous(format!(
                            "{what} sent to {} may or may not have been applied: {}",
                            conn.name,
                            describe(&failure)
                        )));
                    }
                }
            }
            if failures.unavailable.is_none() {
                // Every endpoint was unreachable: fail now rather than wait out the
                // timeout, so a wrong endpoint list is reported at once.
                return Err(failures.into_error(what, timeout));
            }
            let pause = jittered(backoff(round));
            if deadline.saturating_duration_since(Instant::now()) <= pause {
                return Err(failures.into_error(what, timeout));
            }
            tokio::time::sleep(pause).await;
            round += 1;
        }
    }
}

/// What one round over the endpoints ran into, none of it final on its own.
#[derive(Default)]
struct RoundFailures {
    /// Endpoints that could not be reached, with why.
    unreachable: Vec<(String, Failure)>,
    /// The last "no leader" (or other not-applied) answer.
    unavailable: Option<(String, Failure)>,
}

impl RoundFailures {
    /// The error to report when no round is left. Everything in `self` is known not to
    /// have applied a write, so it is never ambiguous.
    fn into_error(self, what: &str, timeout: Duration) -> Error {
        if let Some((endpoint, failure)) = self.unavailable {
            return Error::Unavailable(format!(
                "{what}: {} (answered by {endpoint}; retried until the request timeout of {})",
                failure.message,
                format_duration(timeout)
            ));
        }
        if self.unreachable.is_empty() {
            return Error::DeadlineExceeded(format!(
                "{what}: the request timeout of {} ran out",
                format_duration(timeout)
            ));
        }
        let endpoint = join(self.unreachable.iter().map(|(name, _)| name.as_str()), ", ");
        let message = if let [(_, failure)] = self.unreachable.as_slice() {
            describe(failure)
        } else {
            join(
                self.unreachable
                    .iter()
                    .map(|(name, failure)| format!("{name}: {}", describe(failure))),
                "; ",
            )
        };
        Error::Transport { endpoint, message }
    }
}

fn join(items: impl Iterator<Item = impl AsRef<str>>, separator: &str) -> String {
    items
        .map(|item| item.as_ref().to_string())
        .collect::<Vec<_>>()
        .join(separator)
}

/// The error for a failure that ends the request (not an ambiguous write).
fn final_error(what: &str, endpoint: &str, timeout: Duration, failure: Failure) -> Error {
    match failure.origin {
        Origin::ClientDeadline => Error::DeadlineExceeded(format!(
            "{what}: no answer within the request timeout of {} (last tried {endpoint})",
            format_duration(timeout)
        )),
        Origin::NotConnected | Origin::ClientTransport => Error::Transport {
            endpoint: endpoint.to_string(),
            message: describe(&failure),
        },
        Origin::Server => Error::from_code(failure.code, failure.message),
    }
}

/// The failure as one line: the message, and the code when the message alone would
/// not say it.
fn describe(failure: &Failure) -> String {
    match (failure.origin, failure.message.is_empty()) {
        (Origin::Server, true) => format!("{:?} with no message", failure.code),
        (Origin::Server, false) if failure.code != Code::Unavailable => {
            format!("{:?}: {}", failure.code, failure.message)
        }
        _ => failure.message.clone(),
    }
}

/// Decides whether paging goes on: `Some(token)` for the next page, `None` when done.
fn next_continuation(
    more: bool,
    next_token: Vec<u8>,
    previous: &[u8],
) -> Result<Option<Vec<u8>>, Error> {
    if !more {
        return Ok(None);
    }
    // Guard against a server that would have us ask for the same page forever.
    if next_token.is_empty() || next_token == previous {
        return Err(Error::Server {
            code: Code::Internal,
            message: "scan: the server said more keys remain but gave no new next_token"
                .to_string(),
        });
    }
    Ok(Some(next_token))
}

/// Adds up to 50% random jitter, so clients that failed together do not retry in step.
fn jittered(pause: Duration) -> Duration {
    let millis = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
    pause + Duration::from_millis(rand::random_range(0..=millis / 2))
}

/// `1.5s`, `300ms`: for messages.
pub(crate) fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() > 0 {
        format!("{}s", duration.as_secs())
    } else if duration.as_secs() == 0 {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.3}s", duration.as_secs_f64())
    }
}

fn kv_client(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// Wraps `message` in a request whose gRPC deadline is `timeout`: tonic enforces it on
/// the client and sends it to the server, which gives up at the same moment.
fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

#[cfg(test)]
#[path = "client_test.rs"]
mod tests;
