//! The `Client`: its shared state and the key-value requests (get, put, delete, scan,
//! txn). Membership and status requests are in `membership.rs`; the attempt loop that
//! carries every request across endpoints is in `attempt.rs`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ferrokv_proto::v1::{
    DeleteRequest, DeleteResponse, GetRequest, KeyValue, PutRequest, PutResponse, ResponseHeader,
    ScanResponse, TxnRequest, TxnResponse, kv_client::KvClient, txn_op_result,
};
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

use crate::config::{ClientBuilder, Settings};
use crate::endpoint::{Endpoints, Route};
use crate::options::scan_request;
use crate::retry::OpKind;
use crate::session::SessionPool;
use crate::txn::{self, Txn};
use crate::{ClientConfig, Error, PutOptions, ReadOptions, ScanOptions, ScanRange};

/// Largest response the client accepts. The server bounds its pages; this only keeps a
/// confused peer from making the client allocate without limit. Scan pages of large
/// values (up to 1 MiB each by default) need more than tonic's 4 MiB default.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A handle to a ferrokv cluster.
///
/// Cheap to clone (clones share connections, sessions and what the client learned
/// about the cluster) and safe to use from many tasks at once (`Send + Sync`).
/// Connections are opened lazily, on the first request to each endpoint, and re-opened
/// (resolving the name again) after a failure.
///
/// Writes go to the leader named in the last response header, reads to the endpoint
/// that answered last; either fails over to the other endpoints, with backoff and
/// jitter, until the request timeout. Endpoints are the configured ones plus the
/// members' client addresses, refreshed from the member list. Puts, deletes and
/// transactions run in client sessions, so a write whose outcome is unknown is resent
/// without risk of applying it twice; see [`Error::Ambiguous`] for what is left.
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
    pub(crate) inner: Arc<Inner>,
    /// This handle's request timeout (see [`Client::with_timeout`]).
    pub(crate) timeout: Duration,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) endpoints: Endpoints,
    pub(crate) config: ClientConfig,
    pub(crate) settings: Settings,
    pub(crate) sessions: Arc<SessionPool>,
    /// A background member-list refresh is running.
    pub(crate) refreshing: AtomicBool,
    /// When the member list was last asked for (successfully or not).
    pub(crate) last_refresh: std::sync::Mutex<Option<Instant>>,
}

impl Client {
    /// Creates a client for the cluster reachable at `endpoints` (`host:port`, or
    /// `http://host:port`; DNS names are resolved on every new connection).
    ///
    /// Nothing is dialed yet: a wrong or unreachable endpoint shows up on the first
    /// request. Must be called inside a Tokio runtime. For more settings, see
    /// [`Client::builder`].
    ///
    /// # Errors
    /// [`Error::NoEndpoints`] for an empty list, [`Error::InvalidEndpoint`] for an
    /// endpoint that is not `host:port`, [`Error::NoRuntime`] outside a Tokio runtime.
    ///
    /// ```
    /// use ferrokv_client::{Client, ClientConfig, Error};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let client = Client::connect(["127.0.0.1:2379", "ferrokv:2379"], ClientConfig::default());
    /// assert!(client.is_ok());
    /// let bad = Client::connect(["localhost"], ClientConfig::default());
    /// assert!(matches!(bad, Err(Error::InvalidEndpoint { .. })));
    /// # }
    /// ```
    pub fn connect(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        config: ClientConfig,
    ) -> Result<Client, Error> {
        ClientBuilder::new(endpoints).config(config).connect()
    }

    /// Starts building a client with more than timeouts: sessions, member discovery.
    /// See [`ClientBuilder`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), ferrokv_client::Error> {
    /// let client = ferrokv_client::Client::builder(["127.0.0.1:2379"])
    ///     .member_refresh_interval(None)
    ///     .connect()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(endpoints: impl IntoIterator<Item = impl Into<String>>) -> ClientBuilder {
        ClientBuilder::new(endpoints)
    }

    pub(crate) fn from_builder(builder: ClientBuilder) -> Result<Client, Error> {
        let ClientBuilder {
            endpoints,
            config,
            settings,
        } = builder;
        let endpoints = Endpoints::new(endpoints, &config)?;
        Ok(Client {
            timeout: config.request_timeout,
            inner: Arc::new(Inner {
                endpoints,
                sessions: Arc::new(SessionPool::new(settings.max_sessions)),
                config,
                settings,
                refreshing: AtomicBool::new(false),
                last_refresh: std::sync::Mutex::new(None),
            }),
        })
    }

    /// A handle to the same client (same connections and sessions) whose requests have
    /// `timeout` as their budget instead of [`ClientConfig::request_timeout`]: the
    /// per-request deadline.
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// use std::time::Duration;
    /// use ferrokv_client::ReadOptions;
    /// let quick = client.with_timeout(Duration::from_millis(300));
    /// let (_, kv) = quick.get("feature-flag", ReadOptions::default()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: self.inner.clone(),
            timeout,
        }
    }

    /// Every endpoint the client currently knows: the configured ones, then members
    /// learned from the cluster (member list, response headers).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), ferrokv_client::Error> {
    /// use ferrokv_client::{Client, ClientConfig};
    /// let client = Client::connect(["127.0.0.1:2379"], ClientConfig::default())?;
    /// assert_eq!(client.endpoints(), ["127.0.0.1:2379"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.names()
    }

    /// The leader's client address as the last response header named it, if any:
    /// where writes go first.
    pub fn leader_endpoint(&self) -> Option<String> {
        self.inner.endpoints.leader()
    }

    /// The configuration this client was created with (this handle's request timeout
    /// may differ; see [`Client::with_timeout`]).
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The deadline of a request starting now.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
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
            .call(
                OpKind::Read,
                Route::AnyMember,
                "get",
                self.deadline(),
                |channel, timeout| {
                    let request = with_timeout(request.clone(), timeout);
                    async move { kv_client(channel).get(request).await }
                },
            )
            .await?;
        Ok((response.header.unwrap_or_default(), response.kv))
    }

    /// Writes `value` at `key`, exactly once: in a session, resent within it while the
    /// outcome is unknown (see the crate's README, "Retries and sessions").
    ///
    /// # Errors
    /// [`Error::Ambiguous`] when the put was still undecided at the deadline;
    /// [`Error::SessionExpired`] when the session expired (the put was not applied).
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
        self.write("put", |channel, timeout, session| {
            let request = with_timeout(
                PutRequest {
                    session,
                    ..request.clone()
                },
                timeout,
            );
            async move { kv_client(channel).put(request).await }
        })
        .await
    }

    /// Deletes `key`, exactly once; [`DeleteResponse::deleted`] is 1 when it existed, 0
    /// otherwise. With `prev_kv`, the deleted key is returned too.
    ///
    /// # Errors
    /// As [`Client::put`].
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
        self.write("delete", |channel, timeout, session| {
            let request = with_timeout(
                DeleteRequest {
                    session,
                    ..request.clone()
                },
                timeout,
            );
            async move { kv_client(channel).delete(request).await }
        })
        .await
    }

    /// Reads the first page of `range`: at most `limit` keys (0: the server's default
    /// page size), with values. When [`ScanResponse::more`] is set, pass
    /// [`ScanResponse::next_token`] as [`ScanOptions::continuation`] to
    /// [`Client::scan_page`] for the next page, or use [`Client::scan_all`] or
    /// [`Client::scan_stream`].
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
        self.call(
            OpKind::Read,
            Route::AnyMember,
            "scan",
            self.deadline(),
            |channel, timeout| {
                let request = with_timeout(request.clone(), timeout);
                async move { kv_client(channel).scan(request).await }
            },
        )
        .await
    }

    /// Reads every key of `range`, page after page (`options.limit` is the page size),
    /// and returns them with the header of the last page. For ranges too large to hold
    /// in memory, use [`Client::scan_stream`].
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

    /// Streams every key of `range`, fetching the next page (`options.limit` keys; 0:
    /// the server's default) only when the previous one has been consumed. Stops at
    /// the first error, which it yields. Like [`Client::scan_all`], pages are separate
    /// reads, not one snapshot.
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// use futures::TryStreamExt;
    /// use ferrokv_client::{ScanOptions, ScanRange};
    /// let options = ScanOptions { limit: 1000, keys_only: true, ..ScanOptions::default() };
    /// let mut keys = std::pin::pin!(client.scan_stream(ScanRange::all(), options));
    /// let mut count = 0u64;
    /// while let Some(kv) = keys.try_next().await? {
    ///     count += 1;
    /// }
    /// println!("{count} keys");
    /// # Ok(())
    /// # }
    /// ```
    pub fn scan_stream(
        &self,
        range: ScanRange,
        options: ScanOptions,
    ) -> impl Stream<Item = Result<KeyValue, Error>> + Send + 'static {
        // The state: `None` once the last page was read.
        let state = Some((self.clone(), range, options));
        futures::stream::try_unfold(state, |state| async move {
            let Some((client, range, mut options)) = state else {
                return Ok::<_, Error>(None);
            };
            let page = client.scan_page(&range, &options).await?;
            let next = next_continuation(page.more, page.next_token, &options.continuation)?;
            let state = next.map(|token| {
                options.continuation = token;
                (client, range, options)
            });
            Ok(Some((page.kvs, state)))
        })
        .map_ok(|kvs| futures::stream::iter(kvs.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    /// Runs a transaction, exactly once: if every compare holds the success ops run,
    /// else the failure ops, atomically. Takes a [`Txn`] (the builder) or a
    /// [`TxnRequest`].
    ///
    /// # Errors
    /// As [`Client::put`]. A compare that does not hold is not an error: see
    /// [`TxnResponse::succeeded`].
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// use ferrokv_client::txn::{self, CompareOp, Txn};
    /// let response = client
    ///     .txn(
    ///         Txn::new()
    ///             .when([txn::version("counter", CompareOp::Equal, 7)])
    ///             .and_then([txn::put("counter", "8")])
    ///             .or_else([txn::get("counter")]),
    ///     )
    ///     .await?;
    /// println!("swapped: {}", response.succeeded);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn txn(&self, request: impl Into<TxnRequest>) -> Result<TxnResponse, Error> {
        let request: TxnRequest = request.into();
        // A transaction of gets only changes nothing, but it goes through the log like
        // any Txn, so it is a write like the others.
        self.write("txn", |channel, timeout, session| {
            let request = with_timeout(
                TxnRequest {
                    session,
                    ..request.clone()
                },
                timeout,
            );
            async move { kv_client(channel).txn(request).await }
        })
        .await
    }

    /// Writes `new_value` at `key` only if the key currently holds `expected` (`None`:
    /// only if the key does not exist), in one transaction. Returns the header of the
    /// write.
    ///
    /// # Errors
    /// [`Error::CompareFailed`] with the key's current state when it did not hold
    /// `expected` (nothing was written); otherwise as [`Client::put`].
    ///
    /// ```no_run
    /// # async fn example(client: ferrokv_client::Client) -> Result<(), ferrokv_client::Error> {
    /// use ferrokv_client::Error;
    /// match client.compare_and_swap("leader", None, "me").await {
    ///     Ok(_) => println!("elected"),
    ///     Err(Error::CompareFailed { current, .. }) => {
    ///         let holder = current.map(|kv| kv.value).unwrap_or_default();
    ///         println!("{} leads", String::from_utf8_lossy(&holder));
    ///     }
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Vec<u8>>,
        expected: Option<&[u8]>,
        new_value: impl Into<Vec<u8>>,
    ) -> Result<ResponseHeader, Error> {
        let key = key.into();
        let compare = match expected {
            Some(value) => txn::value(key.clone(), txn::CompareOp::Equal, value),
            None => txn::exists(key.clone(), false),
        };
        let request = Txn::new()
            .when([compare])
            .and_then([txn::put(key.clone(), new_value)])
            .or_else([txn::get(key.clone())]);
        let response = self.txn(request).await?;
        if response.succeeded {
            return Ok(response.header.unwrap_or_default());
        }
        let current = response.results.into_iter().find_map(|r| match r.result {
            Some(txn_op_result::Result::Get(get)) => get.kv,
            _ => None,
        });
        Err(Error::CompareFailed {
            key,
            current: current.map(Box::new),
        })
    }
}

/// Decides whether paging goes on: `Some(token)` for the next page, `None` when done.
pub(crate) fn next_continuation(
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

pub(crate) fn kv_client(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// Wraps `message` in a request whose gRPC deadline is `timeout`: tonic enforces it on
/// the client and sends it to the server, which gives up at the same moment.
pub(crate) fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

#[cfg(test)]
#[path = "client_test.rs"]
mod tests;
