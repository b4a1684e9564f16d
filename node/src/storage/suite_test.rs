//! openraft's own storage test suite, run against the RocksDB store.

use openraft::StorageError;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;

use super::LogStore;
use super::StateMachine;
use super::Store;
use super::StoreOptions;
use crate::raft::TypeConfig;

struct RocksBuilder;

fn sto_err<E: std::error::Error + 'static>(e: &E) -> StorageError<TypeConfig> {
    use openraft::type_config::TypeConfigExt;
    StorageError::read(TypeConfig::err_from_error(e))
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(|e| sto_err(&e))?;
        let store = Store::open(
            dir.path(),
            &StoreOptions {
                block_cache_bytes: 1 << 20,
            },
        )
        .map_err(|e| sto_err(&e))?;
        let (log, sm) = store.split().map_err(|e| sto_err(&e))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_against_rocksdb() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(RocksBuilder).await?;
    Ok(())
}
