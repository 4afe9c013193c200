//! [`RaftNode`]: the handle a server holds on its raft group.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{Config, RaftMetrics, SnapshotPolicy};
use tokio::sync::watch;

use crate::command::{Applied, Command};
use crate::log_store::LogStore;
use crate::network::QuicNetwork;
use crate::reader::StateReader;
use crate::state_machine::StateMachine;
use crate::{BasicNode, Raft, RaftNodeError, ServerId, StoreError, WriteError};

/// How a raft node starts.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub id: ServerId,
    /// sled lives in `data_dir/raft`.
    pub data_dir: PathBuf,
    /// This server's QUIC `host:port`, as peers reach it.
    pub advertise_addr: String,
    /// Take a snapshot (and purge the log behind it) after this many entries.
    pub snapshot_after_logs: u64,
}

/// A server's raft group member: openraft over the sled log and state machine.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
}

struct Inner {
    id: ServerId,
    raft: Raft,
    reader: StateReader,
    db: sled::Db,
}

impl RaftNode {
    /// Opens (or creates) the store and starts openraft.
    pub async fn open(config: RaftConfig, network: QuicNetwork) -> Result<RaftNode, RaftNodeError> {
        let db = sled::open(config.data_dir.join("raft")).map_err(StoreError::from)?;
        let log_store = LogStore::open(&db)?;
        let state_machine = StateMachine::open(&db)?;
        let reader = state_machine.reader().clone();
        let raft_config = Config {
            cluster_name: "windflow".into(),
            heartbeat_interval: 250,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after_logs),
            // Enough for a lagging follower to catch up without a snapshot, no more.
            max_in_snapshot_log_to_keep: config.snapshot_after_logs.min(1000),
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftNodeError::Config(e.to_string()))?;
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| RaftNodeError::Raft(e.to_string()))?;
        Ok(RaftNode {
            inner: Arc::new(Inner {
                id: config.id,
                raft,
                reader,
                db,
            }),
        })
    }

    /// Initialises a new cluster with `members`. On a server that was already initialised
    /// (a restart) it does nothing and returns false.
    pub async fn initialize_if_new(
        &self,
        members: BTreeMap<ServerId, BasicNode>,
    ) -> Result<bool, RaftNodeError> {
        if self
            .inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| RaftNodeError::Raft(e.to_string()))?
        {
            return Ok(false);
        }
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(RaftNodeError::Raft(e.to_string())),
        }
    }

    /// Proposes `cmd` and returns what `apply` made of it, once it is committed and applied.
    #[tracing::instrument(level = "debug", skip_all, fields(command = cmd.kind()))]
    pub async fn write(&self, cmd: Command) -> Result<Applied, WriteError> {
        match self.inner.raft.client_write(cmd).await {
            Ok(response) => Ok(response.data?),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(WriteError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                })
            }
            Err(e) => Err(WriteError::Raft(e.to_string())),
        }
    }

    /// Returns once this server's state reflects every write committed before the call.
    pub async fn linearizable(&self) -> Result<(), WriteError> {
        match self.inner.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(WriteError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                })
            }
            Err(e) => Err(WriteError::Raft(e.to_string())),
        }
    }

    /// Waits until this server knows a leader, and returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<ServerId, RaftNodeError> {
        let metrics = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .map_err(|_| RaftNodeError::NoLeader(timeout))?;
        metrics
            .current_leader
            .ok_or(RaftNodeError::NoLeader(timeout))
    }

    pub fn reader(&self) -> &StateReader {
        &self.inner.reader
    }

    pub fn id(&self) -> ServerId {
        self.inner.id
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<ServerId, BasicNode>> {
        self.inner.raft.metrics()
    }

    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().current_leader == Some(self.inner.id)
    }

    /// Stops openraft and flushes the store.
    pub async fn shutdown(&self) -> Result<(), RaftNodeError> {
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| RaftNodeError::Raft(e.to_string()))?;
        self.inner
            .db
            .flush_async()
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }
}
