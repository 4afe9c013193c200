//! openraft's state machine over [`crate::state`]: applies entries, builds and installs
//! snapshots (the whole state tree, bincode-encoded).
//!
//! The current snapshot is a file of its own next to sled's, `raft/state-snapshot`,
//! replaced atomically (written to `state-snapshot.tmp`, synced, renamed, directory
//! synced). Kept in sled, as it was before, one snapshot is one value larger than sled's
//! blob threshold: each new one went into a blob file of its own and the old ones were
//! only deleted when sled consolidated the page, after up to 10 updates, so up to five
//! whole snapshots stayed on disk. A snapshot left in the old `raft_snapshot` tree is still
//! read, until a file snapshot replaces it.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::command::{Applied, Response};
use crate::reader::StateReader;
use crate::state::{self, LAST_APPLIED, MEMBERSHIP, Pending};
use crate::{BasicNode, ServerId, StoreError, TypeConfig, decode, encode};

/// The keys of the snapshot in the `raft_snapshot` tree, where older builds kept it.
const SNAPSHOT_META: &[u8] = b"meta";
const SNAPSHOT_DATA: &[u8] = b"data";

/// The snapshot file's name, in sled's directory; sled's own files are `conf`, `db`,
/// `blobs/` and `snap.*`.
const SNAPSHOT_FILE: &str = "state-snapshot";
/// The snapshot file starts with this, then the encoded meta's length (u64, little
/// endian), the meta, and the data.
const SNAPSHOT_MAGIC: [u8; 8] = *b"WFSNAP01";

/// The state machine: the state tree plus the last snapshot (a file; see the module docs).
#[derive(Clone)]
pub struct StateMachine {
    db: sled::Db,
    reader: StateReader,
    /// Where the snapshot was kept before it had a file of its own.
    legacy_snapshots: sled::Tree,
    snapshot_file: PathBuf,
    /// Held while the snapshot file is written: a snapshot built here and one installed
    /// from the leader may be saved at the same time, through the same temporary file.
    snapshot_write: Arc<Mutex<()>>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotContents {
    pairs: Vec<KeyValue>,
}

type KeyValue = (Vec<u8>, Vec<u8>);

/// A snapshot as kept on disk: its meta and its data.
type StoredSnapshot = (SnapshotMeta<ServerId, BasicNode>, Vec<u8>);

fn sm_read(e: StoreError) -> StorageError<ServerId> {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write(e: StoreError) -> StorageError<ServerId> {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachine {
    /// The state machine over `db`, whose directory is `dir`.
    pub fn open(db: &sled::Db, dir: &Path) -> Result<Self, StoreError> {
        let reader = StateReader::new(db.open_tree("state")?);
        let snapshot_file = dir.join(SNAPSHOT_FILE);
        // A snapshot being written when the server stopped: never renamed, so never used.
        if let Err(e) = std::fs::remove_file(snapshot_file.with_extension("tmp"))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(e.into());
        }
        Ok(StateMachine {
            db: db.clone(),
            reader,
            legacy_snapshots: db.open_tree("raft_snapshot")?,
            snapshot_file,
            snapshot_write: Arc::default(),
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

    /// Keeps `meta` and `data` as the current snapshot, on disk when this returns; hands
    /// `data` back.
    async fn save_snapshot(
        &self,
        meta: &SnapshotMeta<ServerId, BasicNode>,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        let meta_bytes = encode(meta)?;
        let (path, lock) = (self.snapshot_file.clone(), self.snapshot_write.clone());
        let data = tokio::task::spawn_blocking(move || {
            let _writing = lock.lock().unwrap_or_else(PoisonError::into_inner);
            write_snapshot_file(&path, &meta_bytes, &data).map(|()| data)
        })
        .await
        .map_err(std::io::Error::other)??;
        // The file supersedes a snapshot an older build left in sled.
        if !self.legacy_snapshots.is_empty() {
            self.legacy_snapshots.clear()?;
        }
        Ok(data)
    }

    /// The snapshot file's meta and data, if there is one.
    fn read_snapshot_file(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        let mut bytes = match std::fs::read(&self.snapshot_file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let corrupt = || StoreError::Decode {
            what: "snapshot file",
            why: "not a snapshot file, or cut short".into(),
        };
        let header = SNAPSHOT_MAGIC.len() + 8;
        if bytes.len() < header || bytes[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
            return Err(corrupt());
        }
        let len_bytes: [u8; 8] = bytes[SNAPSHOT_MAGIC.len()..header]
            .try_into()
            .map_err(|_| corrupt())?;
        let meta_end = usize::try_from(u64::from_le_bytes(len_bytes))
            .ok()
            .and_then(|n| header.checked_add(n))
            .filter(|&end| end <= bytes.len())
            .ok_or_else(corrupt)?;
        let meta = decode(&bytes[header..meta_end], "snapshot meta")?;
        bytes.drain(..meta_end);
        Ok(Some((meta, bytes)))
    }

    /// The snapshot an older build kept in the `raft_snapshot` tree, if any.
    fn read_legacy_snapshot(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        let meta = self.legacy_snapshots.get(SNAPSHOT_META)?;
        let data = self.legacy_snapshots.get(SNAPSHOT_DATA)?;
        match (meta, data) {
            (Some(meta), Some(data)) => Ok(Some((decode(&meta, "snapshot meta")?, data.to_vec()))),
            _ => Ok(None),
        }
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
        // Copying and encoding a large state takes seconds: done plainly on a runtime worker
        // it stalls the tasks queued there (heartbeats among them), so under load the leader
        // was deposed around snapshots. `block_in_place` hands those tasks to another worker
        // first. Not `spawn_blocking`: a detached copy would keep the tree (and sled's file
        // lock) alive past a shutdown.
        let (reader, tree) = (self.reader.clone(), self.tree().clone());
        let copy = move || {
            let pairs = {
                let _paused = reader.commits_paused();
                tree_pairs(&tree)?
            };
            let find = |k: &[u8]| {
                pairs
                    .binary_search_by(|(pk, _)| pk.as_slice().cmp(k))
                    .ok()
                    .map(|i| pairs[i].1.as_slice())
            };
            let last_applied: Option<LogId<ServerId>> = find(LAST_APPLIED)
                .map(|v| decode::<Option<LogId<ServerId>>>(v, "last applied"))
                .transpose()?
                .flatten();
            let membership: StoredMembership<ServerId, BasicNode> = find(MEMBERSHIP)
                .map(|v| decode(v, "membership"))
                .transpose()?
                .unwrap_or_default();
            let data = encode(&SnapshotContents { pairs })?;
            Ok::<_, StoreError>((last_applied, membership, data))
        };
        let copied = match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(copy),
            // A single-threaded runtime (some tests) has no other worker to hand off to.
            _ => copy(),
        };
        let (last_applied, membership, data) = copied.map_err(sm_read)?;
        // The log is purged behind a snapshot, so the state it covers must be on disk first.
        self.db
            .flush_async()
            .await
            .map_err(|e| sm_write(e.into()))?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, data.len()),
            None => format!("empty-{}", data.len()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let data = self.save_snapshot(&meta, data).await.map_err(sm_write)?;
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
                self.reader.commit(pending).map_err(sm_write)?;
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
        self.reader.reset_alloc_changes();
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
        let file = self.read_snapshot_file().map_err(sm_read)?;
        let legacy = self.read_legacy_snapshot().map_err(sm_read)?;
        // Both exist only if an older build ran on this store after a newer one: the
        // snapshot that covers more of the log is the current one.
        let current = match (file, legacy) {
            (Some(f), Some(l)) if l.0.last_log_id > f.0.last_log_id => Some(l),
            (Some(f), _) => Some(f),
            (None, l) => l,
        };
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Writes the snapshot file at `path` through a temporary file, so that `path` always
/// holds a whole snapshot, and syncs the file and the rename.
fn write_snapshot_file(path: &Path, meta: &[u8], data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&SNAPSHOT_MAGIC)?;
    file.write_all(&(meta.len() as u64).to_le_bytes())?;
    file.write_all(meta)?;
    file.write_all(data)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn meta(index: u64) -> SnapshotMeta<ServerId, BasicNode> {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("snapshot-{index}"),
        }
    }

    /// The current snapshot's last index and data.
    async fn current(sm: &mut StateMachine) -> Option<(u64, Vec<u8>)> {
        let s = sm.get_current_snapshot().await.unwrap()?;
        Some((s.meta.last_log_id.unwrap().index, s.snapshot.into_inner()))
    }

    #[tokio::test]
    async fn the_snapshot_is_one_file_that_replaces_one_an_older_build_kept_in_sled() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("raft")).unwrap();
        let raft_dir = dir.path().join("raft");
        let mut sm = StateMachine::open(&db, &raft_dir).unwrap();
        assert_eq!(current(&mut sm).await, None);

        // A snapshot where builds before the snapshot file kept it.
        sm.legacy_snapshots
            .insert(SNAPSHOT_META, encode(&meta(10)).unwrap())
            .unwrap();
        sm.legacy_snapshots
            .insert(SNAPSHOT_DATA, b"in sled".to_vec())
            .unwrap();
        assert_eq!(current(&mut sm).await, Some((10, b"in sled".to_vec())));

        let data = sm.save_snapshot(&meta(20), b"in a file".to_vec()).await;
        assert_eq!(data.unwrap(), b"in a file");
        assert!(sm.legacy_snapshots.is_empty(), "the file supersedes it");
        assert_eq!(current(&mut sm).await, Some((20, b"in a file".to_vec())));

        let big = vec![7u8; 3 << 20];
        sm.save_snapshot(&meta(30), big.clone()).await.unwrap();
        // A write cut short by a crash leaves the temporary file, never a torn snapshot.
        std::fs::write(raft_dir.join("state-snapshot.tmp"), b"WFSNAP01 cut").unwrap();
        drop(sm);
        let mut sm = StateMachine::open(&db, &raft_dir).unwrap();
        assert!(!raft_dir.join("state-snapshot.tmp").exists());
        assert_eq!(current(&mut sm).await, Some((30, big)));
    }

    #[tokio::test]
    async fn an_older_builds_newer_snapshot_wins_over_the_file() {
        // A newer build wrote the file, then an older one ran and kept a later snapshot in
        // sled: the log behind that one may be purged, so it is the current one.
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut sm = StateMachine::open(&db, dir.path()).unwrap();
        sm.save_snapshot(&meta(20), b"file".to_vec()).await.unwrap();
        sm.legacy_snapshots
            .insert(SNAPSHOT_META, encode(&meta(40)).unwrap())
            .unwrap();
        sm.legacy_snapshots
            .insert(SNAPSHOT_DATA, b"sled".to_vec())
            .unwrap();
        assert_eq!(current(&mut sm).await, Some((40, b"sled".to_vec())));
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_snapshot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut sm = StateMachine::open(&db, dir.path()).unwrap();
        sm.save_snapshot(&meta(5), vec![1; 100]).await.unwrap();
        let path = dir.path().join(SNAPSHOT_FILE);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..12]).unwrap();
        assert!(sm.get_current_snapshot().await.is_err());
        std::fs::write(&path, b"something else entirely").unwrap();
        assert!(sm.get_current_snapshot().await.is_err());
    }
}
