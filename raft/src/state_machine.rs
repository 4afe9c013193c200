//! openraft's state machine over [`crate::state`]: applies entries, builds and installs
//! snapshots (the whole state tree, bincode-encoded).

use std::io::Cursor;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::command::{Applied, Response};
use crate::reader::StateReader;
use crate::state::{self, LAST_APPLIED, MEMBERSHIP, Pending};
use crate::{BasicNode, ServerId, StoreError, TypeConfig, decode, encode};

const SNAPSHOT_META: &[u8] = b"meta";
const SNAPSHOT_DATA: &[u8] = b"data";

/// The state machine: the state tree plus the last snapshot (`raft_snapshot` tree).
#[derive(Clone)]
pub struct StateMachine {
    db: sled::Db,
    reader: StateReader,
    snapshots: sled::Tree,
}

#[derive(Serialize, Deserialize)]
struct SnapshotContents {
    pairs: Vec<KeyValue>,
}

type KeyValue = (Vec<u8>, Vec<u8>);

fn sm_read(e: StoreError) -> StorageError<ServerId> {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write(e: StoreError) -> StorageError<ServerId> {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachine {
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let reader = StateReader::new(db.open_tree("state")?);
        Ok(StateMachine {
            db: db.clone(),
            reader,
            snapshots: db.open_tree("raft_snapshot")?,
        })
    }

    pub fn reader(&self) -> &StateReader {
        &self.reader
    }

    fn tree(&self) -> &sled::Tree {
        self.reader.tree()
    }

    /// openraft builds snapshots in a task of their own, concurrently with `apply`.
    fn commits_paused(&self) -> std::sync::MutexGuard<'_, ()> {
        self.reader.commits_paused()
    }

    /// Keeps `meta` and `data` as the current snapshot, flushed to disk.
    async fn save_snapshot(
        &self,
        meta: &SnapshotMeta<ServerId, BasicNode>,
        data: Vec<u8>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT_META, encode(meta)?);
        batch.insert(SNAPSHOT_DATA, data);
        self.snapshots.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(())
    }

    fn read_meta<T: serde::de::DeserializeOwned + Default>(
        &self,
        k: &[u8],
        what: &'static str,
    ) -> Result<T, StoreError> {
        Ok(self
            .tree()
            .get(k)?
            .map(|v| decode(&v, what))
            .transpose()?
            .unwrap_or_default())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    #[tracing::instrument(level = "info", skip(self))]
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<ServerId>> {
        // A consistent copy: no command commits while the tree is read. Last-applied and
        // membership come from the copy itself, so they describe exactly its contents.
        let pairs = {
            let _paused = self.commits_paused();
            tree_pairs(self.tree()).map_err(sm_read)?
        };
        let find = |k: &[u8]| {
            pairs
                .binary_search_by(|(pk, _)| pk.as_slice().cmp(k))
                .ok()
                .map(|i| pairs[i].1.as_slice())
        };
        let last_applied: Option<LogId<ServerId>> = find(LAST_APPLIED)
            .map(|v| decode::<Option<LogId<ServerId>>>(v, "last applied"))
            .transpose()
            .map_err(sm_read)?
            .flatten();
        let membership: StoredMembership<ServerId, BasicNode> = find(MEMBERSHIP)
            .map(|v| decode(v, "membership"))
            .transpose()
            .map_err(sm_read)?
            .unwrap_or_default();
        // The log is purged behind a snapshot, so the state it covers must be on disk first.
        self.db
            .flush_async()
            .await
            .map_err(|e| sm_write(e.into()))?;
        let data = encode(&SnapshotContents { pairs }).map_err(sm_read)?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, data.len()),
            None => format!("empty-{}", data.len()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.save_snapshot(&meta, data.clone())
            .await
            .map_err(sm_write)?;
        self.reader.count_snapshot();
        tracing::info!(bytes = data.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// Every key and value of a tree, in order.
fn tree_pairs(tree: &sled::Tree) -> Result<Vec<KeyValue>, StoreError> {
    tree.iter()
        .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Into::into))
        .collect()
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<ServerId>>,
            StoredMembership<ServerId, BasicNode>,
        ),
        StorageError<ServerId>,
    > {
        let last: Option<LogId<ServerId>> = self
            .read_meta(LAST_APPLIED, "last applied")
            .map_err(sm_read)?;
        let membership = self.read_meta(MEMBERSHIP, "membership").map_err(sm_read)?;
        Ok((last, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<ServerId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut last_index = None;
        for entry in entries {
            let span = tracing::debug_span!("raft_apply", index = entry.log_id.index);
            let _guard = span.enter();
            let started = std::time::Instant::now();
            let mut pending = Pending::new(self.tree());
            let response = match entry.payload {
                EntryPayload::Blank => Ok(Applied::Nothing),
                EntryPayload::Normal(cmd) => {
                    let kind = cmd.kind();
                    let response = state::apply(&mut pending, cmd).map_err(sm_write)?;
                    if let Err(refused) = &response {
                        tracing::debug!(kind, %refused, "command refused");
                    }
                    response
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m);
                    pending.put(MEMBERSHIP.to_vec(), encode(&stored).map_err(sm_write)?);
                    Ok(Applied::Nothing)
                }
            };
            pending.put(
                LAST_APPLIED.to_vec(),
                encode(&Some(entry.log_id)).map_err(sm_write)?,
            );
            {
                let _paused = self.commits_paused();
                pending.commit().map_err(sm_write)?;
            }
            last_index = Some(entry.log_id.index);
            self.reader
                .timings()
                .apply
                .observe(started.elapsed().as_secs_f64());
            responses.push(response);
        }
        if let Some(index) = last_index {
            self.reader.notify_applied(index);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<ServerId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    #[tracing::instrument(level = "info", skip(self, snapshot))]
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<ServerId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<ServerId>> {
        let data = snapshot.into_inner();
        let contents: SnapshotContents = decode(&data, "snapshot").map_err(sm_read)?;
        // Keep the snapshot first: after a crash before the tree is replaced, openraft
        // still finds it, and the tree's own last-applied says the tree is older.
        self.save_snapshot(meta, data).await.map_err(sm_write)?;
        // One atomic batch replaces the tree: every key removed, the snapshot's written.
        let tree = self.tree();
        let mut batch = sled::Batch::default();
        for key in tree.iter().keys() {
            batch.remove(key.map_err(|e| sm_read(e.into()))?);
        }
        for (k, v) in contents.pairs {
            batch.insert(k, v);
        }
        batch.insert(LAST_APPLIED, encode(&meta.last_log_id).map_err(sm_write)?);
        batch.insert(MEMBERSHIP, encode(&meta.last_membership).map_err(sm_write)?);
        {
            let _paused = self.commits_paused();
            tree.apply_batch(batch).map_err(|e| sm_write(e.into()))?;
        }
        self.db
            .flush_async()
            .await
            .map_err(|e| sm_write(e.into()))?;
        if let Some(l) = meta.last_log_id {
            self.reader.notify_applied(l.index);
        }
        self.reader.count_snapshot();
        tracing::info!("snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<ServerId>> {
        let meta = self
            .snapshots
            .get(SNAPSHOT_META)
            .map_err(|e| sm_read(e.into()))?;
        let data = self
            .snapshots
            .get(SNAPSHOT_DATA)
            .map_err(|e| sm_read(e.into()))?;
        match (meta, data) {
            (Some(meta), Some(data)) => Ok(Some(Snapshot {
                meta: decode(&meta, "snapshot meta").map_err(sm_read)?,
                snapshot: Box::new(Cursor::new(data.to_vec())),
            })),
            _ => Ok(None),
        }
    }
}
