//! The peer gRPC service: receives openraft's RPCs, streamed snapshots, forwarded requests
//! and read-index requests from other replicas.

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

pub struct PeerService {
    pub replica: Replica,
}

fn reply<T: serde::Serialize, E: std::fmt::Display>(
    r: Result<T, E>,
) -> Result<Response<RaftMessage>, Status> {
    let r: Result<T, String> = r.map_err(|e| e.to_string());
    Ok(Response::new(RaftMessage {
        payload: wire::encode(&r)?,
    }))
}

impl PeerService {
    fn check_incoming_dir(&self) -> Result<std::path::PathBuf, Status> {
        let dir = self.replica.store.snapshot_dir.join("incoming");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Status::internal(format!("cannot create {}: {e}", dir.display())))?;
        Ok(dir)
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = wire::decode("append entries", &req.into_inner().payload)?;
        reply(self.replica.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = wire::decode("vote", &req.into_inner().payload)?;
        reply(self.replica.raft.vote(rpc).await)
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = wire::decode("pre-vote", &req.into_inner().payload)?;
        reply(self.replica.raft.pre_vote(rpc).await)
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = wire::decode("transfer leader", &req.into_inner().payload)?;
        reply(self.replica.raft.handle_transfer_leader(rpc).await)
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
            .replica
            .raft
            .install_full_snapshot(vote, crate::raft::Snapshot { meta, snapshot })
            .await;
        let _ = tokio::fs::remove_file(&path).await;
        reply(result)
    }

    async fn forward(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let fwd: wire::ForwardRequest =
            wire::decode("forwarded request", &req.into_inner().payload)?;
        let result: wire::ForwardResult = self.replica.handle_forward(fwd).await;
        Ok(Response::new(RaftMessage {
            payload: wire::encode(&result)?,
        }))
    }

    async fn read_index(
        &self,
        _req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let result: wire::ReadIndexResult = self.replica.leader_read_index().await;
        Ok(Response::new(RaftMessage {
            payload: wire::encode(&result)?,
        }))
    }
}
