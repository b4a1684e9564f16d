//! The Maintenance service: a streamed, consistent backup of this replica and its status.

use std::pin::Pin;

use ferrokv_proto::v1 as pb;
use ferrokv_proto::v1::maintenance_server::Maintenance;
use futures::Stream;
use tokio::io::AsyncReadExt;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::header;
use crate::raft::network::SNAPSHOT_CHUNK_BYTES;
use crate::replica::Replica;

pub struct MaintenanceService {
    pub replica: Replica,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    type SnapshotStream = ChunkStream;

    /// Writes a snapshot file from a consistent RocksDB view, then streams it in bounded
    /// chunks and deletes it.
    async fn snapshot(
        &self,
        _req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let reader = self.replica.reader.clone();
        let dir = self.replica.store.snapshot_dir.join("backups");
        let path = dir.join(format!("backup-{:016x}.tmp", rand::random::<u64>()));
        let (_, path) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            reader.write_snapshot_file(path)
        })
        .await
        .map_err(|e| Status::internal(format!("backup task failed: {e}")))?
        .map_err(|e| Status::internal(format!("cannot write backup: {e}")))?;

        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        // The file stays readable through the open handle once unlinked.
        let _ = tokio::fs::remove_file(&path).await;
        let total = file
            .metadata()
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .len();
        let hdr = header(&self.replica);
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let mut sent = 0u64;
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                let n = match file.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("reading backup: {e}"))))
                            .await;
                        return;
                    }
                };
                if n == 0 {
                    return;
                }
                buf.truncate(n);
                sent += n as u64;
                let chunk = pb::SnapshotChunk {
                    header: Some(hdr.clone()),
                    data: buf,
                    remaining_bytes: total.saturating_sub(sent),
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(super::cluster::status(
            &self.replica,
            req.get_ref(),
        )?))
    }
}
