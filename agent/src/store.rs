//! The agent's own state, in sled under `DATA_DIR/state`: the runs it is executing (how to
//! find each one's supervisor again) and the results no server has acknowledged yet. A run
//! moves from one to the other in one atomic batch, so after any crash a run is either
//! still being watched or has its result waiting, never both and never neither. A run is
//! flushed to disk before its supervisor starts and its result before its files go. sled's lock on the directory also keeps a
//! second agent off the same data dir.

use std::path::Path;

use serde::{Deserialize, Serialize};
use windflow_protocol::messages::TaskFinished;
use windflow_protocol::{DriverKind, HumanDuration, JobId, RunId, codec};

use crate::drivers::exec::SupervisedHandle;

const RUN: &[u8] = b"run/";
const OUTBOX: &[u8] = b"outbox/";
/// This agent's own random ID, made once per data dir (see [`Store::agent_id`]).
const AGENT_ID: &[u8] = b"agent_id";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the agent's state store: {0}")]
    Sled(#[from] sled::Error),
    #[error("the agent's state store holds an unreadable entry `{key}`: {error}")]
    Corrupt { key: String, error: String },
    #[error("the agent's state store cannot encode an entry: {0}")]
    Encode(String),
}

/// A run this agent is executing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run: RunId,
    pub job: JobId,
    /// The task's name, for logs. The task itself (with its opened secrets) is not kept
    /// here: only its supervisor needs it, and it gets it once, in its spec file.
    pub task: String,
    /// Exec runs are found again through `exec`; docker runs by their container's label.
    pub driver: DriverKind,
    /// The attempt's timeout, for a docker run re-attached after an agent restart.
    pub timeout: Option<HumanDuration>,
    pub exec: SupervisedHandle,
}

/// The agent's state store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
}

fn key(prefix: &[u8], run: RunId) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&run.0.to_be_bytes());
    k
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    codec::encode(value).map_err(|e| StoreError::Encode(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    codec::decode_frame(bytes)
        .map(|(v, _)| v)
        .map_err(|e| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            error: e.to_string(),
        })
}

impl Store {
    /// Opens (or creates) the store in `data_dir/state`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(data_dir.join("state"))
            .cache_capacity(8 * 1024 * 1024)
            .open()?;
        let tree = db.open_tree("agent")?;
        Ok(Store { db, tree })
    }

    /// Another tree in the same database, for other parts of the agent (allocations).
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.tree.flush()?;
        Ok(())
    }

    fn scan<T: serde::de::DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// This agent's ID: random, made on first use and kept, so the containers it labels
    /// with it are its own across restarts and never another agent's on the same engine.
    pub fn agent_id(&self) -> Result<String, StoreError> {
        if let Some(v) = self.tree.get(AGENT_ID)? {
            return String::from_utf8(v.to_vec()).map_err(|e| StoreError::Corrupt {
                key: "agent_id".into(),
                error: e.to_string(),
            });
        }
        let mut bytes = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .map_err(|e| StoreError::Encode(format!("cannot read /dev/urandom: {e}")))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.tree.insert(AGENT_ID, id.as_bytes())?;
        self.flush()?;
        Ok(id)
    }

    /// Records a run as executing, on disk before this returns.
    pub fn put_run(&self, record: &RunRecord) -> Result<(), StoreError> {
        self.tree.insert(key(RUN, record.run), encode(record)?)?;
        self.flush()
    }

    /// Updates a run's record without waiting for the disk (sled writes it within half a
    /// second): for what the run's directory also says, such as its supervisor.
    pub fn update_run(&self, record: &RunRecord) -> Result<(), StoreError> {
        self.tree.insert(key(RUN, record.run), encode(record)?)?;
        Ok(())
    }

    /// The runs being executed, by run ID.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.scan(RUN)
    }

    /// Forgets a run that left nothing to report (it never started).
    pub fn remove_run(&self, run: RunId) -> Result<(), StoreError> {
        self.tree.remove(key(RUN, run))?;
        self.flush()
    }

    /// A run has ended: its record goes and its result waits for an ack, in one batch.
    pub fn finish_run(&self, finished: &TaskFinished) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.remove(key(RUN, finished.run));
        batch.insert(key(OUTBOX, finished.run), encode(finished)?);
        self.tree.apply_batch(batch)?;
        self.flush()
    }

    /// The results not yet acknowledged, by run ID.
    pub fn outbox(&self) -> Result<Vec<TaskFinished>, StoreError> {
        self.scan(OUTBOX)
    }

    /// Forgets an acknowledged result. Not waited for on disk: a forgotten ack only means
    /// the result is sent once more, and the servers acknowledge a result they already have.
    pub fn ack(&self, run: RunId) -> Result<(), StoreError> {
        self.tree.remove(key(OUTBOX, run))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use windflow_protocol::{HumanDuration, RunOutcome, Timestamp};

    use super::*;
    use crate::process::ProcessIdentity;

    fn record(run: u64) -> RunRecord {
        RunRecord {
            run: RunId(run),
            job: JobId(3),
            task: "t".into(),
            driver: DriverKind::Exec,
            timeout: None,
            exec: SupervisedHandle {
                dir: format!("/data/runs/R{run}").into(),
                supervisor: Some(ProcessIdentity {
                    pid: 4242,
                    start_ticks: 99,
                }),
                started_at: Timestamp(7),
            },
        }
    }

    fn finished(run: u64) -> TaskFinished {
        TaskFinished {
            run: RunId(run),
            outcome: RunOutcome::Succeeded,
            exit_code: Some(0),
            attempts: 1,
            started_at: Timestamp(7),
            duration: HumanDuration::from_millis(5),
            stdout: vec![0, 159, 146, 150],
            stdout_truncated: false,
            stderr_tail: b"err".to_vec(),
            error: None,
        }
    }

    #[test]
    fn runs_and_results_survive_reopening_and_move_atomically() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_run(&record(2)).unwrap();
            store.put_run(&record(1)).unwrap();
            store.put_run(&record(300)).unwrap();
            store.finish_run(&finished(2)).unwrap();
            store.put_run(&record(4)).unwrap();
            store.remove_run(RunId(4)).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let runs: Vec<u64> = store.runs().unwrap().iter().map(|r| r.run.0).collect();
        assert_eq!(
            runs,
            [1, 300],
            "ordered by run, the finished and removed ones gone"
        );
        assert_eq!(store.runs().unwrap()[0], record(1));
        assert_eq!(store.outbox().unwrap(), [finished(2)]);
        store.ack(RunId(2)).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(store.outbox().unwrap().is_empty(), "the ack was kept");
    }

    #[test]
    fn the_agent_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = Store::open(dir.path()).unwrap().agent_id().unwrap();
        assert_eq!(id.len(), 16);
        assert_eq!(Store::open(dir.path()).unwrap().agent_id().unwrap(), id);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(Store::open(other.path()).unwrap().agent_id().unwrap(), id);
    }

    #[test]
    fn a_second_agent_cannot_open_the_same_store() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        assert!(Store::open(dir.path()).is_err());
    }

    #[test]
    fn an_unreadable_entry_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .tree
            .insert(key(RUN, RunId(5)), b"junk".to_vec())
            .unwrap();
        let err = store.runs().unwrap_err().to_string();
        assert!(err.contains("unreadable entry `run/"), "{err}");
    }
}
