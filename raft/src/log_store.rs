//! The raft log and vote in sled. An append is flushed to disk before openraft hears that it
//! is durable, so an acknowledged write survives kill -9.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};

use crate::{ServerId, StoreError, TypeConfig, decode, encode};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The log (`raft_log` tree, keyed by big-endian index) and raft's own metadata
/// (`raft_meta`). Clones share the trees.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

fn read_err(e: StoreError) -> StorageError<ServerId> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: StoreError) -> StorageError<ServerId> {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(LogStore {
            db: db.clone(),
            log: db.open_tree("raft_log")?,
            meta: db.open_tree("raft_meta")?,
        })
    }

    fn meta_get<T: serde::de::DeserializeOwned>(
        &self,
        k: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        self.meta.get(k)?.map(|v| decode(&v, what)).transpose()
    }

    async fn meta_put<T: serde::Serialize>(&self, k: &[u8], v: &T) -> Result<(), StoreError> {
        self.meta.insert(k, encode(v)?)?;
        self.db.flush_async().await?;
        Ok(())
    }

    fn last_entry_id(&self) -> Result<Option<LogId<ServerId>>, StoreError> {
        match self.log.last()? {
            Some((_, v)) => Ok(Some(decode::<Entry<TypeConfig>>(&v, "log entry")?.log_id)),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<ServerId>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        for item in self.log.range(start.to_be_bytes()..) {
            let (k, v) = item.map_err(|e| read_err(e.into()))?;
            let index = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0xff; 8]));
            if !range.contains(&index) {
                break;
            }
            entries.push(decode(&v, "log entry").map_err(read_err)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<ServerId>> {
        let last_purged: Option<LogId<ServerId>> = self
            .meta_get(LAST_PURGED, "last purged")
            .map_err(read_err)?;
        let last = self.last_entry_id().map_err(read_err)?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<ServerId>) -> Result<(), StorageError<ServerId>> {
        self.meta_put(VOTE, vote)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<ServerId>>, StorageError<ServerId>> {
        self.meta_get(VOTE, "vote")
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<ServerId>>,
    ) -> Result<(), StorageError<ServerId>> {
        // Not flushed: losing it only means re-learning the commit index from the leader.
        let bytes = encode(&committed).map_err(write_err)?;
        self.meta
            .insert(COMMITTED, bytes)
            .map_err(|e| write_err(e.into()))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<ServerId>>, StorageError<ServerId>> {
        Ok(self
            .meta_get::<Option<LogId<ServerId>>>(COMMITTED, "committed")
            .map_err(read_err)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<ServerId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(
                &entry.log_id.index.to_be_bytes(),
                encode(&entry).map_err(write_err)?,
            );
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| write_err(e.into()))?;
        let flushed = self
            .db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(std::io::Error::other);
        callback.log_io_completed(flushed);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<ServerId>) -> Result<(), StorageError<ServerId>> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(log_id.index.to_be_bytes()..) {
            batch.remove(item.map_err(|e| write_err(e.into()))?.0);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| write_err(e.into()))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| write_err(e.into()))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<ServerId>) -> Result<(), StorageError<ServerId>> {
        // Record the purge point first: a crash between the two steps leaves extra
        // entries, never a hole.
        self.meta_put(LAST_PURGED, &log_id)
            .await
            .map_err(write_err)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=log_id.index.to_be_bytes()) {
            batch.remove(item.map_err(|e| write_err(e.into()))?.0);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| write_err(e.into()))?;
        Ok(())
    }
}
