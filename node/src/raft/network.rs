//! The peer network client: openraft's RPCs to other replicas over gRPC, and the channels
//! the node uses to forward requests to the leader.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use ferrokv_proto::v1::RaftMessage;
use ferrokv_proto::v1::SnapshotPart;
use ferrokv_proto::v1::raft_peer_client::RaftPeerClient;
use openraft::RaftNetworkFactory;
use openraft::RaftNetworkV2;
use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use super::MemberInfo;
use super::NodeId;
use super::Snapshot;
use super::TypeConfig;
use super::Vote;
use super::wire;
use crate::storage::SnapshotFile;

/// Bytes of snapshot data per gRPC message: bounded, so a large store never sits in memory.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Lazily connected gRPC channels to peers, by peer address, shared by the Raft network and
/// the forwarding paths (one HTTP/2 connection per peer, reused).
#[derive(Clone, Default)]
pub struct PeerChannels {
    inner: Arc<Mutex<HashMap<String, Channel>>>,
    max_message_bytes: usize,
    /// Outgoing connections bind this source IP when set (--peer-source-ip).
    source_ip: Option<std::net::IpAddr>,
}

impl PeerChannels {
    pub fn new(max_message_bytes: usize, source_ip: Option<std::net::IpAddr>) -> Self {
        Self {
            inner: Arc::default(),
            max_message_bytes,
            source_ip,
        }
    }

    pub fn client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, tonic::Status> {
        let channel = {
            let mut map = self
                .inner
                .lock()
                .map_err(|_| tonic::Status::internal("peer channel lock poisoned"))?;
            match map.get(addr) {
                Some(c) => c.clone(),
                None => {
                    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                        .map_err(|e| {
                            tonic::Status::invalid_argument(format!(
                                "bad peer address {addr:?}: {e}"
                            ))
                        })?
                        .connect_timeout(Duration::from_secs(1))
                        .local_address(self.source_ip)
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(5))
                        .keep_alive_timeout(Duration::from_secs(5));
                    let c = endpoint.connect_lazy();
                    map.insert(addr.to_string(), c.clone());
                    c
                }
            }
        };
        // Snapshots and large appends are chunked, but one AppendEntries may carry up to
        // max_payload_entries full-size values.
        Ok(RaftPeerClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }
}

/// Creates one [`PeerNetwork`] per target for openraft.
#[derive(Clone)]
pub struct PeerNetworkFactory {
    pub channels: PeerChannels,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &MemberInfo) -> Self::Network {
        PeerNetwork {
            target,
            addr: node.peer_addr.clone(),
            channels: self.channels.clone(),
        }
    }
}

/// openraft's connection to one peer.
pub struct PeerNetwork {
    target: NodeId,
    addr: String,
    channels: PeerChannels,
}

fn rpc_error(target: NodeId, status: tonic::Status) -> RPCError<TypeConfig> {
    let err = std::io::Error::other(format!(
        "peer {target}: {}: {}",
        status.code(),
        status.message()
    ));
    // A refused or failed connection means the peer is down: openraft backs off from it.
    if status.code() == tonic::Code::Unavailable {
        RPCError::Unreachable(Unreachable::new(&err))
    } else {
        RPCError::Network(NetworkError::new(&err))
    }
}

impl PeerNetwork {
    fn client(&self) -> Result<RaftPeerClient<Channel>, RPCError<TypeConfig>> {
        self.channels
            .client(&self.addr)
            .map_err(|s| rpc_error(self.target, s))
    }

    async fn call<Req, Resp, F, Fut>(
        &self,
        req: &Req,
        option: &RPCOption,
        f: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let payload = wire::encode(req).map_err(|s| rpc_error(self.target, s))?;
        let mut request = tonic::Request::new(RaftMessage {
            payload,
            target_id: self.target,
        });
        request.set_timeout(option.soft_ttl());
        let reply = f(self.client()?, request)
            .await
            .map_err(|s| rpc_error(self.target, s))?;
        let result: Result<Resp, String> = wire::decode("reply", &reply.into_inner().payload)
            .map_err(|s| rpc_error(self.target, s))?;
        result.map_err(|msg| rpc_error(self.target, tonic::Status::unavailable(msg)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, r| async move { c.pre_vote(r).await })
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&req, &option, |mut c, r| async move {
            c.transfer_leader(r).await
        })
        .await
    }

    /// Streams the snapshot file in chunks of [`SNAPSHOT_CHUNK_BYTES`]; the first part carries
    /// the vote and metadata.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let target = self.target;
        let net_err =
            |msg: String| StreamingError::Network(NetworkError::new(&std::io::Error::other(msg)));
        let header =
            wire::encode(&(vote, snapshot.meta.clone())).map_err(|s| net_err(s.to_string()))?;
        let file = snapshot
            .snapshot
            .file
            .try_clone()
            .map_err(|e| net_err(e.to_string()))?;
        let mut file = tokio::fs::File::from_std(file);
        use tokio::io::AsyncSeekExt;
        file.rewind().await.map_err(|e| net_err(e.to_string()))?;

        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotPart>(2);
        let reader = tokio::spawn(async move {
            let mut first = Some(header);
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                let mut filled = 0;
                while filled < buf.len() {
                    let n = file.read(&mut buf[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                buf.truncate(filled);
                let part = SnapshotPart {
                    header: first.take().unwrap_or_default().to_vec(),
                    data: buf,
                    target_id: target,
                };
                if tx.send(part).await.is_err() {
                    return Ok::<(), std::io::Error>(());
                }
                if filled < SNAPSHOT_CHUNK_BYTES {
                    return Ok(());
                }
            }
        });

        let mut client = self.client().map_err(|e| net_err(e.to_string()))?;
        let send = client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        let reply = tokio::select! {
            closed = cancel => {
                reader.abort();
                return Err(StreamingError::Closed(closed));
            }
            r = send => r,
        };
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(net_err(format!(
                    "reading snapshot file for peer {target}: {e}"
                )));
            }
            Err(e) => return Err(net_err(format!("snapshot reader task: {e}"))),
        }
        let reply = reply.map_err(|s| match rpc_error(target, s) {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            other => net_err(other.to_string()),
        })?;
        let result: Result<SnapshotResponse<TypeConfig>, String> =
            wire::decode("snapshot reply", &reply.into_inner().payload)
                .map_err(|s| net_err(s.to_string()))?;
        result.map_err(net_err)
    }
}
