//! The attempt loop against in-process fake servers: failover, backoff, deadlines and
//! the never-resend-an-ambiguous-write rule, over real sockets on 127.0.0.1.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrokv_proto::v1::kv_server::{Kv, KvServer};
use ferrokv_proto::v1::maintenance_server::{Maintenance, MaintenanceServer};
use ferrokv_proto::v1::{
    DeleteRequest, GetRequest, GetResponse, PutRequest, ScanRequest, SnapshotChunk, SnapshotRequest,
};
use tonic::{Request, Response};

use super::*;

/// A one-replica stand-in for a ferrokv node: a map, plus scripted failures.
#[derive(Default)]
struct FakeNode {
    id: u64,
    /// Answers for the next requests, one per request, before serving normally.
    scripted: Mutex<VecDeque<(Code, &'static str)>>,
    /// When set, every request fails with this.
    always: Option<(Code, &'static str)>,
    /// How long each request takes.
    delay: Duration,
    /// Requests received (any method).
    calls: AtomicUsize,
    store: Mutex<Store>,
}

type Store = BTreeMap<Vec<u8>, Vec<u8>>;

impl FakeNode {
    fn with_id(id: u64) -> FakeNode {
        FakeNode {
            id,
            ..FakeNode::default()
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Counts the request, waits `delay`, and fails it if the script says so.
    async fn enter(&self) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if let Some((code, message)) = self.always {
            return Err(Status::new(code, message));
        }
        let scripted = self
            .scripted
            .lock()
            .map_err(|_| Status::internal("poisoned"))?
            .pop_front();
        match scripted {
            Some((code, message)) => Err(Status::new(code, message)),
            None => Ok(()),
        }
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            member_id: self.id,
            leader_id: 1,
            ..ResponseHeader::default()
        })
    }

    fn kv(key: &[u8], value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
        }
    }

    fn store(&self) -> Result<std::sync::MutexGuard<'_, Store>, Status> {
        self.store.lock().map_err(|_| Status::internal("poisoned"))
    }
}

#[tonic::async_trait]
impl Kv for FakeNode {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.enter().await?;
        let key = request.into_inner().key;
        let kv = self
            .store()?
            .get(&key)
            .map(|value| FakeNode::kv(&key, value));
        Ok(Response::new(GetResponse {
            header: self.header(),
            kv,
        }))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.enter().await?;
        let request = request.into_inner();
        let prev = self.store()?.insert(request.key.clone(), request.value);
        Ok(Response::new(PutResponse {
            header: self.header(),
            prev_kv: prev
                .filter(|_| request.prev_kv)
                .map(|value| FakeNode::kv(&request.key, &value)),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.enter().await?;
        let removed = self.store()?.remove(&request.into_inner().key);
        Ok(Response::new(DeleteResponse {
            header: self.header(),
            deleted: u64::from(removed.is_some()),
            prev_kv: None,
        }))
    }

    async fn open_session(
        &self,
        _request: Request<ferrokv_proto::v1::OpenSessionRequest>,
    ) -> Result<Response<ferrokv_proto::v1::OpenSessionResponse>, Status> {
        Err(Status::unimplemented("the fake node has no sessions"))
    }

    /// Pages over the prefix; the token is the last key returned.
    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanResponse>, Status> {
        self.enter().await?;
        let request = request.into_inner();
        let limit = if request.limit == 0 {
            2
        } else {
            request.limit as usize
        };
        let store = self.store()?;
        let matching: Vec<KeyValue> = store
            .iter()
            .filter(|(key, _)| key.starts_with(&request.prefix))
            .filter(|(key, _)| request.continuation.is_empty() || **key > request.continuation)
            .map(|(key, value)| FakeNode::kv(key, value))
            .collect();
        let more = matching.len() > limit;
        let kvs: Vec<KeyValue> = matching.into_iter().take(limit).collect();
        let next_token = if more {
            kvs.last().map(|kv| kv.key.clone()).unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(Response::new(ScanResponse {
            header: self.header(),
            kvs,
            more,
            next_token,
        }))
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.enter().await?;
        Ok(Response::new(TxnResponse {
            header: self.header(),
            succeeded: true,
            results: Vec::new(),
        }))
    }
}

#[tonic::async_trait]
impl Maintenance for FakeNode {
    type SnapshotStream = futures::stream::Empty<Result<SnapshotChunk, Status>>;

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.enter().await?;
        Ok(Response::new(StatusResponse {
            header: self.header(),
            id: self.id,
            leader_id: 1,
            ..StatusResponse::default()
        }))
    }
}

/// Serves `node` on a fresh port of 127.0.0.1 and returns its `host:port`.
async fn serve(node: Arc<FakeNode>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a test port");
    let address = listener
        .local_addr()
        .expect("test port address")
        .to_string();
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    });
    let server = tonic::transport::Server::builder()
        .add_service(KvServer::from_arc(node.clone()))
        .add_service(MaintenanceServer::from_arc(node))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    address
}

/// A `host:port` where nothing listens: connections to it are refused.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a test port");
    listener
        .local_addr()
        .expect("test port address")
        .to_string()
}

fn client(endpoints: &[&str], request_timeout: Duration) -> Client {
    let config = ClientConfig {
        dial_timeout: Duration::from_secs(1),
        request_timeout,
    };
    Client::connect(endpoints.iter().copied(), config).expect("valid endpoints")
}

const PATIENT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn missing_key_is_none_not_an_error() {
    let node = Arc::new(FakeNode::with_id(1));
    let address = serve(node).await;
    let client = client(&[&address], PATIENT);
    let (header, kv) = client
        .get("nope", ReadOptions::default())
        .await
        .expect("get");
    assert_eq!(kv, None);
    assert_eq!(header.member_id, 1);
}

#[tokio::test]
async fn put_then_get_round_trips() {
    let address = serve(Arc::new(FakeNode::with_id(1))).await;
    let client = client(&[&address], PATIENT);
    client
        .put("k", "v1", PutOptions::default())
        .await
        .expect("put");
    let response = client
        .put("k", "v2", PutOptions { prev_kv: true })
        .await
        .expect("put");
    assert_eq!(response.prev_kv.map(|kv| kv.value), Some(b"v1".to_vec()));
    let (_, kv) = client
        .get("k", ReadOptions::serializable())
        .await
        .expect("get");
    assert_eq!(kv.map(|kv| kv.value), Some(b"v2".to_vec()));
    assert_eq!(client.delete("k", false).await.expect("delete").deleted, 1);
    assert_eq!(client.delete("k", false).await.expect("delete").deleted, 0);
}

#[tokio::test]
async fn write_fails_over_when_the_first_endpoint_refuses_connections() {
    let refused = closed_port().await;
    let node = Arc::new(FakeNode::with_id(2));
    let address = serve(node.clone()).await;
    let client = client(&[&refused, &address], PATIENT);
    client
        .put("k", "v", PutOptions::default())
        .await
        .expect("put fails over");
    assert_eq!(node.calls(), 1);
}

#[tokio::test]
async fn every_endpoint_refusing_is_a_transport_error_at_once() {
    let (a, b) = (closed_port().await, closed_port().await);
    let client = client(&[&a, &b], PATIENT);
    let started = std::time::Instant::now();
    match client.put("k", "v", PutOptions::default()).await {
        Err(Error::Transport { endpoint, message }) => {
            assert_eq!(endpoint, format!("{a}, {b}"));
            assert!(message.contains(&a) && message.contains(&b), "{message}");
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(
        started.elapsed() < PATIENT / 2,
        "did not wait out the timeout"
    );
}

#[tokio::test]
async fn refused_connection_message_names_the_cause() {
    let refused = closed_port().await;
    let client = client(&[&refused], PATIENT);
    match client.get("k", ReadOptions::default()).await {
        Err(Error::Transport { message, .. }) => {
            assert!(message.to_lowercase().contains("refused"), "{message}");
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
}

#[tokio::test]
async fn write_retries_no_leader_answers_until_a_leader_appears() {
    let node = Arc::new(FakeNode::with_id(1));
    node.scripted.lock().expect("lock").extend([
        (Code::Unavailable, "no leader known to member 1"),
        (Code::Unavailable, "not applied: leadership changed"),
    ]);
    let address = serve(node.clone()).await;
    let client = client(&[&address], PATIENT);
    client
        .put("k", "v", PutOptions::default())
        .await
        .expect("put after election");
    assert_eq!(node.calls(), 3);
}

#[tokio::test]
async fn write_is_unavailable_not_ambiguous_when_no_leader_appears_in_time() {
    let node = Arc::new(FakeNode {
        always: Some((Code::Unavailable, "no leader known")),
        ..FakeNode::with_id(1)
    });
    let address = serve(node.clone()).await;
    let client = client(&[&address], Duration::from_millis(400));
    match client.put("k", "v", PutOptions::default()).await {
        Err(Error::Unavailable(message)) => assert!(message.contains("no leader"), "{message}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(node.calls() >= 2, "retried with backoff");
}

#[tokio::test]
async fn write_answered_unavailable_without_the_not_applied_prefix_is_ambiguous_and_not_resent() {
    let first = Arc::new(FakeNode {
        always: Some((Code::Unavailable, "no quorum within the deadline")),
        ..FakeNode::with_id(1)
    });
    let second = Arc::new(FakeNode::with_id(2));
    let (a, b) = (serve(first.clone()).await, serve(second.clone()).await);
    let client = client(&[&a, &b], PATIENT);
    let result = client.put("k", "v", PutOptions::default()).await;
    assert!(matches!(result, Err(Error::Ambiguous(_))), "{result:?}");
    assert_eq!((first.calls(), second.calls()), (1, 0));
}

#[tokio::test]
async fn write_past_its_deadline_is_ambiguous_and_not_resent() {
    let slow = Arc::new(FakeNode {
        delay: Duration::from_secs(2),
        ..FakeNode::with_id(1)
    });
    let fast = Arc::new(FakeNode::with_id(2));
    let (a, b) = (serve(slow.clone()).await, serve(fast.clone()).await);
    let client = client(&[&a, &b], Duration::from_millis(300));
    let result = client.txn(TxnRequest::default()).await;
    assert!(matches!(result, Err(Error::Ambiguous(_))), "{result:?}");
    assert_eq!(fast.calls(), 0);
}

#[tokio::test]
async fn read_past_its_deadline_is_deadline_exceeded() {
    let slow = Arc::new(FakeNode {
        delay: Duration::from_secs(2),
        ..FakeNode::with_id(1)
    });
    let address = serve(slow).await;
    let client = client(&[&address], Duration::from_millis(300));
    let result = client.get("k", ReadOptions::default()).await;
    assert!(
        matches!(result, Err(Error::DeadlineExceeded(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn read_moves_to_another_endpoint_on_unavailable_and_prefers_it_next_time() {
    let leaderless = Arc::new(FakeNode {
        always: Some((Code::Unavailable, "raft: no quorum")),
        ..FakeNode::with_id(1)
    });
    let healthy = Arc::new(FakeNode::with_id(2));
    let (a, b) = (
        serve(leaderless.clone()).await,
        serve(healthy.clone()).await,
    );
    let client = client(&[&a, &b], PATIENT);
    let (header, _) = client.get("k", ReadOptions::default()).await.expect("get");
    assert_eq!(header.member_id, 2);
    client.get("k", ReadOptions::default()).await.expect("get");
    assert_eq!((leaderless.calls(), healthy.calls()), (1, 2));
}

#[tokio::test]
async fn invalid_argument_is_returned_without_retrying() {
    let node = Arc::new(FakeNode {
        always: Some((Code::InvalidArgument, "key is empty")),
        ..FakeNode::with_id(1)
    });
    let other = Arc::new(FakeNode::with_id(2));
    let (a, b) = (serve(node.clone()).await, serve(other.clone()).await);
    let client = client(&[&a, &b], PATIENT);
    let result = client.put("", "v", PutOptions::default()).await;
    assert_eq!(
        result.err(),
        Some(Error::InvalidArgument("key is empty".into()))
    );
    assert_eq!((node.calls(), other.calls()), (1, 0));
}

#[tokio::test]
async fn scan_all_follows_continuation_to_the_end() {
    let node = Arc::new(FakeNode::with_id(1));
    {
        let mut store = node.store.lock().expect("lock");
        for key in ["a/1", "a/2", "a/3", "a/4", "a/5", "b/1"] {
            store.insert(key.as_bytes().to_vec(), b"x".to_vec());
        }
    }
    let address = serve(node.clone()).await;
    let client = client(&[&address], PATIENT);
    let (_, kvs) = client
        .scan_all(ScanRange::prefix("a/"), ScanOptions::default())
        .await
        .expect("scan");
    let keys: Vec<&[u8]> = kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [&b"a/1"[..], b"a/2", b"a/3", b"a/4", b"a/5"]);
    assert_eq!(node.calls(), 3, "three pages of two");

    let page = client
        .scan(ScanRange::prefix("a/"), 4, ReadOptions::default())
        .await
        .expect("scan");
    assert_eq!((page.kvs.len(), page.more), (4, true));
}

#[tokio::test]
async fn status_all_reports_every_endpoint_in_order() {
    let node = Arc::new(FakeNode::with_id(7));
    let (address, refused) = (serve(node).await, closed_port().await);
    let client = client(&[&address, &refused], PATIENT);
    let statuses = client.status_all().await;
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[0].endpoint, address);
    assert_eq!(statuses[0].status.as_ref().map(|s| s.id).ok(), Some(7));
    assert_eq!(statuses[1].endpoint, refused);
    assert!(matches!(statuses[1].status, Err(Error::Transport { .. })));

    let status = client
        .status(&format!("http://{address}"))
        .await
        .expect("status");
    assert_eq!(status.id, 7);
}

#[tokio::test]
async fn connect_rejects_empty_and_invalid_endpoint_lists() {
    let none: [&str; 0] = [];
    assert!(matches!(
        Client::connect(none, ClientConfig::default()),
        Err(Error::NoEndpoints)
    ));
    assert!(matches!(
        Client::connect(["localhost"], ClientConfig::default()),
        Err(Error::InvalidEndpoint { .. })
    ));
}

#[test]
fn paging_stops_when_no_more_and_refuses_a_repeated_token() {
    assert_eq!(next_continuation(false, b"t".to_vec(), b""), Ok(None));
    assert_eq!(
        next_continuation(true, b"t2".to_vec(), b"t1"),
        Ok(Some(b"t2".to_vec()))
    );
    assert!(next_continuation(true, Vec::new(), b"").is_err());
    assert!(next_continuation(true, b"t".to_vec(), b"t").is_err());
}

#[test]
fn durations_print_compactly() {
    assert_eq!(format_duration(Duration::from_secs(10)), "10s");
    assert_eq!(format_duration(Duration::from_millis(300)), "300ms");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1.500s");
}

#[test]
fn jitter_adds_at_most_half() {
    for _ in 0..100 {
        let pause = jittered(Duration::from_millis(100));
        assert!(pause >= Duration::from_millis(100) && pause <= Duration::from_millis(150));
    }
}
