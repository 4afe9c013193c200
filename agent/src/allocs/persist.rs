//! The allocations' state on disk, so an agent that starts again on the same data dir
//! takes back what the previous one ran. In the store's `allocs` tree: the highest index
//! received, and per allocation what [`super::Allocs`] knows of it (the allocation as last
//! received, its status here, restarts, unacknowledged events, and each task's supervisor
//! handle). The tasks themselves hold opened secrets: they are never in sled, only in an
//! owner-only file in the allocation's directory (`DATA_DIR/allocs/<id>/assignment`), read
//! again when a task must be restarted after an agent restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use windflow_protocol::messages::AllocAssignment;
use windflow_protocol::{AllocEvent, AllocId, Allocation, ClientStatus, codec};

use super::policy::RestartWindow;
use crate::drivers::exec::{Durability, ExecDir, SupervisedHandle, read_value, write_value};
use crate::store::{Store, StoreError};

const INDEX: &[u8] = b"index";
const ALLOC: &[u8] = b"alloc/";
/// Owner only: the assignment holds the tasks' opened secrets.
const PRIVATE: u32 = 0o600;

/// One allocation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Saved {
    pub alloc: Allocation,
    pub client: ClientStatus,
    pub restarts: u32,
    pub unacked: Vec<AllocEvent>,
    pub acked: Option<(ClientStatus, u32)>,
    /// Its tasks were being run here (a runner was alive) when this was written.
    pub active: bool,
    /// Each running task's supervisor, by task name.
    pub handles: BTreeMap<String, SupervisedHandle>,
    /// Each task's restart window, by task name.
    pub windows: BTreeMap<String, RestartWindow>,
    /// Its health, and what a server last acknowledged of it.
    #[serde(default)]
    pub health: windflow_protocol::AllocHealth,
    #[serde(default)]
    pub acked_health: windflow_protocol::AllocHealth,
}

/// The `allocs` tree and the allocations' directories.
pub(crate) struct AllocStore {
    tree: sled::Tree,
    dir: PathBuf,
}

fn key(id: AllocId) -> Vec<u8> {
    let mut k = ALLOC.to_vec();
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

fn corrupt(key: &[u8], error: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        error: error.to_string(),
    }
}

impl AllocStore {
    /// Opens the `allocs` tree of `store`; allocations' directories go under `dir`.
    pub(crate) fn open(store: &Store, dir: &Path) -> Result<AllocStore, StoreError> {
        Ok(AllocStore {
            tree: store.tree("allocs")?,
            dir: dir.to_owned(),
        })
    }

    /// The directory of an allocation (its assignment and its tasks' executions).
    pub(super) fn alloc_dir(&self, id: AllocId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn assignment_path(&self, id: AllocId) -> PathBuf {
        self.alloc_dir(id).join("assignment")
    }

    /// The highest index received, and every stored allocation.
    pub(super) fn load(&self) -> Result<(u64, Vec<Saved>), StoreError> {
        let index = match self.tree.get(INDEX)? {
            Some(v) => {
                let bytes: [u8; 8] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| corrupt(INDEX, "not 8 bytes"))?;
                u64::from_be_bytes(bytes)
            }
            None => 0,
        };
        let saved = self
            .tree
            .scan_prefix(ALLOC)
            .map(|kv| {
                let (k, v) = kv?;
                codec::decode_frame(&v)
                    .map(|(s, _)| s)
                    .map_err(|e| corrupt(&k, e))
            })
            .collect::<Result<_, _>>()?;
        Ok((index, saved))
    }

    /// Writes an allocation's state, on disk before this returns.
    pub(super) fn save(&self, saved: &Saved) -> Result<(), StoreError> {
        let bytes = codec::encode(saved).map_err(|e| StoreError::Encode(e.to_string()))?;
        self.tree.insert(key(saved.alloc.id), bytes)?;
        self.tree.flush()?;
        Ok(())
    }

    /// Records the highest index received. Not waited for: an index lost to a crash only
    /// means changes this agent has are sent again, and it ignores those.
    pub(super) fn save_index(&self, index: u64) -> Result<(), StoreError> {
        self.tree.insert(INDEX, &index.to_be_bytes())?;
        Ok(())
    }

    /// Forgets an allocation: its state and its directory.
    pub(super) fn forget(&self, id: AllocId) -> Result<(), StoreError> {
        self.tree.remove(key(id))?;
        if let Err(e) = ExecDir::new(self.alloc_dir(id)).remove() {
            tracing::warn!(alloc = %id, error = %e, "cannot remove the allocation's directory");
        }
        Ok(())
    }

    /// Removes the directories of allocations not in `known` (a crash came between writing
    /// one's assignment and storing it).
    pub(super) fn remove_strays(&self, known: impl Fn(AllocId) -> bool) {
        let Ok(dirs) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for dir in dirs.flatten() {
            let id = dir
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<AllocId>().ok());
            if !id.is_some_and(&known) {
                tracing::info!(dir = %dir.path().display(), "removing a directory no allocation owns");
                let _ = ExecDir::new(dir.path()).remove();
            }
        }
    }

    /// Keeps the assignment (with its tasks' secrets) owner-only in the allocation's
    /// directory, for restarting its tasks after an agent restart.
    pub(super) fn write_assignment(&self, a: &AllocAssignment) -> std::io::Result<()> {
        ExecDir::new(self.alloc_dir(a.alloc.id)).create()?;
        write_value(
            &self.assignment_path(a.alloc.id),
            a,
            PRIVATE,
            Durability::PowerLoss,
        )
    }

    pub(super) fn read_assignment(&self, id: AllocId) -> Result<AllocAssignment, String> {
        match read_value(&self.assignment_path(id)) {
            Ok(Some(a)) => Ok(a),
            Ok(None) => Err("its assignment file is missing".into()),
            Err(e) => Err(format!("its assignment file cannot be read: {e}")),
        }
    }
}
