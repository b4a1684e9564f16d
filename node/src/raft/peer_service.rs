//! The peer gRPC service: receives openraft's RPCs, streamed snapshots, forwarded requests
//! and read-index requests from other replicas.

use std::sync::Arc;
use std::sync::OnceLock;

use ferrokv_proto::v1::RaftMessage;
use ferrokv_proto::v1::SnapshotPart;
use ferrokv_proto::v1::raft_peer_server::RaftPeer;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use super::SnapshotMeta;
use super::Vote;
use super::wire;
use crate::replica::Replica;
use crate::storage::SnapshotFile;

/// Serves peers. It starts before this replica's Raft does (a replica with an empty volume
/// answers probes while it decides whether to form or join a cluster); every RPC but Probe
/// answers UNAVAILABLE until the replica is set.
pub struct PeerService {
    pub replica: Arc<OnceLock<Replica>>,
}

fn reply<T: serde::Serialize, E: std::fmt::Display>(
    r: Result<T, E>,
) -> Result<Response<RaftMessage>, Status> {
    let r: Result<T, String> = r.map_err(|e| e.to_string());
    Ok(Response::new(RaftMessage {
        payload: wire::encode(&r)?,
        target_id: 0,
    }))
}

impl PeerService {
    fn replica(&self) -> Result<&Replica, Status> {
        self.replica
            .get()
            .ok_or_else(|| Status::unavailable("this replica is starting: Raft is not running yet"))
    }

    /// The replica, if `target_id` (when set) is its id: a message meant for another node id
    /// (an old member whose address this replica now has) must not be answered as if by it.
    fn replica_for(&self, target_id: u64) -> Result<&Replica, Status> {
        let replica = self.replica()?;
        if target_id != 0 && target_id != replica.id {
            return Err(Status::failed_precondition(format!(
                "this replica is node {}, not node {target_id}",
                replica.id
            )));
        }
        Ok(replica)
    }

    fn check_incoming_dir(&self) -> Result<std::path::PathBuf, Status> {
        let dir = self.replica()?.store.snapshot_dir.join("incoming");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Status::internal(format!("cannot create {}: {e}", dir.display())))?;
        Ok(dir)
    }
}

/// The response stream of [`RaftPeer::stream_append`].
type AppendResults =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<RaftMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RaftPeer for PeerService {
    type StreamAppendStream = AppendResults;

    /// Feeds the incoming AppendEntries to openraft's pipelined `stream_append` and sends
    /// each result back as it comes, in order. A message that cannot be decoded, or is
    /// meant for another node id, ends the stream with that error after the results of
    /// the messages before it.
    async fn stream_append(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let replica = self.replica()?.clone();
        let id = replica.id;
        let refused: Arc<std::sync::Mutex<Option<Status>>> = Arc::default();
        let refused_in = refused.clone();
        let requests = req.into_inner().map_while(move |message| {
            let decoded = message.and_then(|m| {
                if m.target_id != 0 && m.target_id != id {
                    return Err(Status::failed_precondition(format!(
                        "this replica is node {id}, not node {}",
                        m.target_id
                    )));
                }
                wire::decode("append entries", &m.payload)
            });
            match decoded {
                Ok(rpc) => Some(rpc),
                Err(status) => {
                    *refused_in.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                    None
                }
            }
        });
        let results = replica.raft.stream_append(requests).map(|result| {
            let result: Result<crate::raft::StreamAppendResult, String> =
                result.map_err(|fatal| fatal.to_string());
            Ok(RaftMessage {
                payload: wire::encode(&result)?,
                target_id: 0,
            })
        });
        let refusal = futures::stream::once(async move {
            refused.lock().unwrap_or_else(|e| e.into_inner()).take()
        })
        .filter_map(|status| status.map(Err));
        Ok(Response::new(Box::pin(results.chain(refusal))))
    }

    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let req = req.into_inner();
        let replica = self.replica_for(req.target_id)?;
        let rpc = wire::decode("append entries", &req.payload)?;
        reply(replica.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req = req.into_inner();
        let replica = self.replica_for(req.target_id)?;
        let rpc = wire::decode("vote", &req.payload)?;
        reply(replica.raft.vote(rpc).await)
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req = req.into_inner();
        let replica = self.replica_for(req.target_id)?;
        let rpc = wire::decode("pre-vote", &req.payload)?;
        reply(replica.raft.pre_vote(rpc).await)
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let req = req.into_inner();
        let replica = self.replica_for(req.target_id)?;
        let rpc = wire::decode("transfer leader", &req.payload)?;
        reply(replica.raft.handle_transfer_leader(rpc).await)
    }

    /// Writes the streamed chunks to a file under snapshots/incoming (never the whole
    /// snapshot in memory), fsyncs it, then hands it to openraft.
    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotPart>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        self.replica_for(first.target_id)?;
        let (vote, meta): (Vote, SnapshotMeta) = wire::decode("snapshot header", &first.header)?;
        let dir = self.check_incoming_dir()?;
        let path = dir.join(format!("recv-{:016x}.part", rand::random::<u64>()));
        let io = |e: std::io::Error| Status::internal(format!("writing received snapshot: {e}"));
        // Read and write: the state machine reads the file back when installing it.
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(io)?;
        let received = async {
            file.write_all(&first.data).await.map_err(io)?;
            while let Some(part) = stream.next().await {
                file.write_all(&part?.data).await.map_err(io)?;
            }
            file.sync_all().await.map_err(io)?;
            Ok::<(), Status>(())
        }
        .await;
        if let Err(e) = received {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
        let snapshot = SnapshotFile {
            file: file.into_std().await,
            path: path.clone(),
        };
        let result = self
            .replica()?
            .raft
            .install_full_snapshot(vote, crate::raft::Snapshot { meta, snapshot })
            .await;
        let _ = tokio::fs::remove_file(&path).await;
        reply(result)
    }

    async fn forward(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let fwd: wire::ForwardRequest =
            wire::decode("forwarded request", &req.into_inner().payload)?;
        let result: wire::ForwardResult = self.replica()?.handle_forward(fwd).await;
        Ok(Response::new(RaftMessage {
            payload: wire::encode(&result)?,
            target_id: 0,
        }))
    }

    async fn probe(&self, _req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let reply = match self.replica.get() {
            None => wire::ProbeReply::default(),
            Some(r) => {
                let m = r.metrics();
                let membership = m.membership_config.membership();
                wire::ProbeReply {
                    id: Some(r.id),
                    initialized: membership.voter_ids().next().is_some(),
                    last_log_index: m.last_log_index.unwrap_or(0),
                    leader: m.current_leader,
                    leader_peer_addr: m
                        .current_leader
                        .and_then(|l| membership.get_node(&l))
                        .map(|n| n.peer_addr.clone()),
                    unstarted: membership
                        .nodes()
                        .filter(|(_, n)| n.name.is_empty())
                        .map(|(id, _)| *id)
                        .collect(),
                }
            }
        };
        Ok(Response::new(RaftMessage {
            payload: wire::encode(&reply)?,
            target_id: 0,
        }))
    }

    async fn read_index(
        &self,
        _req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let result: wire::ReadIndexResult = self.replica()?.leader_read_index().await;
        Ok(Response::new(RaftMessage {
            payload: wire::encode(&result)?,
            target_id: 0,
        }))
    }
}
