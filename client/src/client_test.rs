//! The client against in-process fake servers, over real sockets on 127.0.0.1:
//! failover, backoff, deadlines, leader routing, member discovery, and sessions — a
//! write resent within its session is applied once; a plain write is never resent.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrokv_proto::v1::cluster_server::{Cluster, ClusterServer};
use ferrokv_proto::v1::kv_server::{Kv, KvServer};
use ferrokv_proto::v1::maintenance_server::{Maintenance, MaintenanceServer};
use ferrokv_proto::v1::{
    AddLearnerRequest, AddLearnerResponse, DeleteRequest, GetRequest, GetResponse, Member,
    MemberListRequest, MemberListResponse, OpenSessionRequest, OpenSessionResponse,
    PromoteLearnerRequest, PromoteLearnerResponse, PutRequest, RemoveMemberRequest,
    RemoveMemberResponse, ScanRequest, SnapshotChunk, SnapshotRequest, StatusRequest,
    StatusResponse, TransferLeaderRequest, TransferLeaderResponse,
};
use futures::TryStreamExt;
use tonic::{Code, Request, Response, Status};

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
    /// Requests received (KV and Maintenance methods but OpenSession).
    calls: AtomicUsize,
    store: Mutex<Store>,
    /// Sessions opened here.
    sessions_opened: AtomicU64,
    /// Per session: last applied sequence and its answer (puts only).
    sessions: Mutex<HashMap<u64, (u64, PutResponse)>>,
    /// Puts applied (not answered from a session).
    applied: AtomicUsize,
    /// The next this many puts are applied, then answered "outcome unknown".
    drop_after_apply: AtomicUsize,
    /// `leader_client_addr` in every header.
    leader_addr: Mutex<String>,
    /// What MemberList answers.
    members: Mutex<Vec<Member>>,
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
            leader_client_addr: self
                .leader_addr
                .lock()
                .map(|a| a.clone())
                .unwrap_or_default(),
            ..ResponseHeader::default()
        })
    }

    fn applied(&self) -> usize {
        self.applied.load(Ordering::SeqCst)
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
        let session = request.session;
        if let Some(s) = session {
            let sessions = self
                .sessions
                .lock()
                .map_err(|_| Status::internal("poisoned"))?;
            match sessions.get(&s.client_id) {
                None if s.client_id > self.sessions_opened.load(Ordering::SeqCst) => {
                    return Err(Status::failed_precondition(format!(
                        "session expired: session {} expired or is unknown",
                        s.client_id
                    )));
                }
                Some((last, answer)) if *last == s.sequence => {
                    return Ok(Response::new(answer.clone()));
                }
                Some((last, _)) if *last > s.sequence => {
                    return Err(Status::failed_precondition("stale sequence: older"));
                }
                _ => {}
            }
        }
        let prev = self.store()?.insert(request.key.clone(), request.value);
        self.applied.fetch_add(1, Ordering::SeqCst);
        let answer = PutResponse {
            header: self.header(),
            prev_kv: prev
                .filter(|_| request.prev_kv)
                .map(|value| FakeNode::kv(&request.key, &value)),
        };
        if let Some(s) = session {
            let mut sessions = self
                .sessions
                .lock()
                .map_err(|_| Status::internal("poisoned"))?;
            sessions.insert(s.client_id, (s.sequence, answer.clone()));
        }
        let drop_it = self
            .drop_after_apply
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if drop_it {
            return Err(Status::unknown(
                "outcome unknown: the fake dropped the answer",
            ));
        }
        Ok(Response::new(answer))
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
        request: Request<OpenSessionRequest>,
    ) -> Result<Response<OpenSessionResponse>, Status> {
        let client_id = self.sessions_opened.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Response::new(OpenSessionResponse {
            header: self.header(),
            client_id,
            ttl_ms: request.into_inner().ttl_ms,
        }))
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

#[tonic::async_trait]
impl Cluster for FakeNode {
    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: self
                .members
                .lock()
                .map_err(|_| Status::internal("poisoned"))?
                .clone(),
        }))
    }

    async fn add_learner(
        &self,
        _: Request<AddLearnerRequest>,
    ) -> Result<Response<AddLearnerResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn promote_learner(
        &self,
        _: Request<PromoteLearnerRequest>,
    ) -> Result<Response<PromoteLearnerResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn remove_member(
        &self,
        _: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn transfer_leader(
        &self,
        _: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
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
        .add_service(MaintenanceServer::from_arc(node.clone()))
        .add_service(ClusterServer::from_arc(node))
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

/// A client without background member refresh, so call counts are exact.
fn builder(endpoints: &[&str], request_timeout: Duration) -> ClientBuilder {
    Client::builder(endpoints.iter().copied())
        .dial_timeout(Duration::from_secs(1))
        .request_timeout(request_timeout)
        .member_refresh_interval(None)
}

fn client(endpoints: &[&str], request_timeout: Duration) -> Client {
    builder(endpoints, request_timeout)
        .connect()
        .expect("valid endpoints")
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
async fn plain_write_answered_unavailable_without_the_not_applied_prefix_is_ambiguous_and_not_resent()
 {
    let first = Arc::new(FakeNode {
        always: Some((Code::Unavailable, "no quorum within the deadline")),
        ..FakeNode::with_id(1)
    });
    let second = Arc::new(FakeNode::with_id(2));
    let (a, b) = (serve(first.clone()).await, serve(second.clone()).await);
    let client = builder(&[&a, &b], PATIENT)
        .exactly_once(false)
        .connect()
        .expect("client");
    let result = client.put("k", "v", PutOptions::default()).await;
    assert!(matches!(result, Err(Error::Ambiguous(_))), "{result:?}");
    assert_eq!((first.calls(), second.calls()), (1, 0));
}

#[tokio::test]
async fn session_write_with_an_unknown_outcome_is_resent_elsewhere_in_its_session() {
    let first = Arc::new(FakeNode {
        always: Some((Code::Unavailable, "no quorum within the deadline")),
        ..FakeNode::with_id(1)
    });
    let second = Arc::new(FakeNode::with_id(2));
    // The fakes do not replicate: let the second know the session the first opens.
    second.sessions_opened.store(1, Ordering::SeqCst);
    let (a, b) = (serve(first.clone()).await, serve(second.clone()).await);
    let client = client(&[&a, &b], PATIENT);
    client
        .put("k", "v", PutOptions::default())
        .await
        .expect("resent and applied");
    assert_eq!((first.calls(), second.calls()), (1, 1));
}

#[tokio::test]
async fn a_dropped_answer_is_recovered_by_the_retry_and_the_put_applies_once() {
    let node = Arc::new(FakeNode::with_id(1));
    let address = serve(node.clone()).await;
    let client = client(&[&address], PATIENT);
    client
        .put("k", "v1", PutOptions::default())
        .await
        .expect("first put");
    node.drop_after_apply.store(1, Ordering::SeqCst);
    let response = client
        .put("k", "v2", PutOptions { prev_kv: true })
        .await
        .expect("the retry gets the stored answer");
    // The stored (first) answer: v1 was replaced. Applying twice would say v2.
    assert_eq!(response.prev_kv.map(|kv| kv.value), Some(b"v1".to_vec()));
    assert_eq!(node.applied(), 2, "two puts, each applied once");
    assert_eq!(node.calls(), 3, "the second put was sent twice");
    assert_eq!(
        node.sessions_opened.load(Ordering::SeqCst),
        1,
        "one session reused"
    );
}

#[tokio::test]
async fn session_write_still_undecided_at_its_deadline_is_ambiguous() {
    let slow = Arc::new(FakeNode {
        delay: Duration::from_secs(2),
        ..FakeNode::with_id(1)
    });
    let fast = Arc::new(FakeNode::with_id(2));
    let (a, b) = (serve(slow.clone()).await, serve(fast.clone()).await);
    let client = client(&[&a, &b], Duration::from_millis(300));
    let started = std::time::Instant::now();
    let result = client.txn(TxnRequest::default()).await;
    assert!(matches!(result, Err(Error::Ambiguous(_))), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        fast.calls(),
        0,
        "the whole budget went to the first attempt"
    );
}

#[tokio::test]
async fn an_expired_session_fails_the_write_unapplied_and_the_next_write_opens_a_new_one() {
    let node = Arc::new(FakeNode::with_id(1));
    let address = serve(node.clone()).await;
    let client = client(&[&address], PATIENT);
    client
        .put("k", "v", PutOptions::default())
        .await
        .expect("put");
    node.scripted.lock().expect("lock").push_back((
        Code::FailedPrecondition,
        "session expired: session 1 expired or is unknown",
    ));
    let result = client.put("k", "v", PutOptions::default()).await;
    assert!(
        matches!(result, Err(Error::SessionExpired(_))),
        "{result:?}"
    );
    assert!(result.as_ref().is_err_and(Error::is_definite));
    client
        .put("k", "v", PutOptions::default())
        .await
        .expect("put in a new session");
    assert_eq!(node.sessions_opened.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_writes_share_a_bounded_pool_of_sessions() {
    let node = Arc::new(FakeNode {
        delay: Duration::from_millis(20),
        ..FakeNode::with_id(1)
    });
    let address = serve(node.clone()).await;
    let client = builder(&[&address], PATIENT)
        .max_sessions(2)
        .connect()
        .expect("client");
    let writes = (0..10).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .put(format!("k{i}"), "v", PutOptions::default())
                .await
        })
    });
    for write in futures::future::join_all(writes).await {
        write.expect("task").expect("put");
    }
    assert_eq!(node.applied(), 10);
    assert!(node.sessions_opened.load(Ordering::SeqCst) <= 2);
}

#[tokio::test]
async fn writes_go_straight_to_the_leader_named_in_headers() {
    let leader = Arc::new(FakeNode::with_id(1));
    let follower = Arc::new(FakeNode::with_id(2));
    let leader_address = serve(leader.clone()).await;
    let follower_address = serve(follower.clone()).await;
    *follower.leader_addr.lock().expect("lock") = leader_address.clone();
    *leader.leader_addr.lock().expect("lock") = leader_address.clone();
    let client = client(&[&follower_address], PATIENT);
    client.get("k", ReadOptions::default()).await.expect("get");
    assert_eq!(client.leader_endpoint(), Some(leader_address.clone()));
    assert_eq!(
        client.endpoints(),
        [follower_address.clone(), leader_address]
    );
    client
        .put("k", "v", PutOptions::default())
        .await
        .expect("put");
    assert_eq!(
        (leader.calls(), follower.calls()),
        (1, 1),
        "the put skipped the follower"
    );
}

#[tokio::test]
async fn members_learned_from_the_member_list_are_used_when_the_configured_endpoint_dies() {
    let seed = Arc::new(FakeNode::with_id(1));
    let other = Arc::new(FakeNode::with_id(2));
    let (seed_address, other_address) = (serve(seed.clone()).await, serve(other.clone()).await);
    *seed.members.lock().expect("lock") = vec![
        Member {
            id: 1,
            client_addr: seed_address.clone(),
            ..Member::default()
        },
        Member {
            id: 2,
            client_addr: other_address.clone(),
            ..Member::default()
        },
    ];
    let client = client(&[&seed_address], PATIENT);
    let endpoints = client.refresh_endpoints().await.expect("refresh");
    assert_eq!(endpoints, [seed_address.clone(), other_address]);
    // The seed now answers nothing useful: the learned member serves.
    seed.scripted
        .lock()
        .expect("lock")
        .extend([(Code::Unavailable, "no leader: shutting down"); 4]);
    let (header, _) = client.get("k", ReadOptions::default()).await.expect("get");
    assert_eq!(header.member_id, 2);
}

#[tokio::test]
async fn scan_stream_yields_every_key_page_by_page() {
    let node = Arc::new(FakeNode::with_id(1));
    {
        let mut store = node.store.lock().expect("lock");
        for key in ["a/1", "a/2", "a/3", "a/4", "a/5", "b/1"] {
            store.insert(key.as_bytes().to_vec(), b"x".to_vec());
        }
    }
    let address = serve(node.clone()).await;
    let client = client(&[&address], PATIENT);
    let kvs: Vec<KeyValue> = client
        .scan_stream(ScanRange::prefix("a/"), ScanOptions::default())
        .try_collect()
        .await
        .expect("scan");
    assert_eq!(kvs.len(), 5);
    assert_eq!(node.calls(), 3, "three pages of two");
}

#[tokio::test]
async fn a_per_request_timeout_overrides_the_configured_one() {
    let slow = Arc::new(FakeNode {
        delay: Duration::from_secs(2),
        ..FakeNode::with_id(1)
    });
    let address = serve(slow).await;
    let client = client(&[&address], PATIENT);
    let started = std::time::Instant::now();
    let result = client
        .with_timeout(Duration::from_millis(200))
        .get("k", ReadOptions::default())
        .await;
    assert!(
        matches!(result, Err(Error::DeadlineExceeded(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
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
