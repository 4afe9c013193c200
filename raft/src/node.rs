//! [`RaftNode`]: the handle a server holds on its raft group.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{Config, RaftMetrics, SnapshotPolicy};
use tokio::sync::watch;

use crate::command::{Applied, Command};
use crate::leader::{self, ForwardError, MembershipChange};
use crate::log_store::LogStore;
use crate::network::{PeerRequest, PeerResponse, QuicNetwork};
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

/// How often the leader tells followers it is alive.
const HEARTBEAT_MS: u64 = 100;
/// A follower's election timeout is drawn from this range, in ms. openraft 0.9 first waits
/// out the leader's lease (the range's maximum) after the last heartbeat, so a follower
/// calls an election 1.0–1.2 s after the leader died: failover stays well under 2 s while a
/// stall of up to 10 heartbeats (a loaded 2-core machine) does not depose a live leader.
const ELECTION_TIMEOUT_MS: (u64, u64) = (400, 600);

/// The deadline of one snapshot chunk's RPC, in ms.
const SNAPSHOT_CHUNK_TIMEOUT_MS: u64 = 10_000;
/// The size of one snapshot chunk.
const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;

/// How long a linearizable read on a follower waits to apply up to the leader's read index.
const READ_APPLY_WAIT: Duration = Duration::from_secs(10);

/// A member of the raft group, as [`RaftNode::members`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: ServerId,
    /// Its QUIC `host:port`.
    pub addr: String,
    pub role: MemberRole,
    pub is_leader: bool,
    /// The last log index the leader knows this member holds; `None` when the server asked
    /// is not the leader (only the leader tracks replication), or nothing matched yet.
    pub matched_index: Option<u64>,
}

/// Whether a member votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberRole {
    Voter,
    Learner,
}

/// A server's raft group member: openraft over the sled log and state machine.
///
/// Any server answers: on a follower, writes, linearizable reads and membership changes
/// are forwarded to the leader over the peer link (`windflow-raft/1`).
#[derive(Clone)]
pub struct RaftNode {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) id: ServerId,
    pub(crate) raft: Raft,
    reader: StateReader,
    db: sled::Db,
    pub(crate) network: QuicNetwork,
    /// Connections to the leaders this server forwarded to, by address.
    pub(crate) peers: Mutex<HashMap<String, quinn::Connection>>,
    /// Where batchable writes queue for [`crate::batch`].
    batcher: crate::batch::Queues,
}

impl From<ForwardError> for WriteError {
    fn from(e: ForwardError) -> Self {
        match e {
            ForwardError::NotLeader { leader } => WriteError::NotLeader { leader },
            ForwardError::Raft(e) => WriteError::Raft(e),
        }
    }
}

impl From<ForwardError> for RaftNodeError {
    fn from(e: ForwardError) -> Self {
        match e {
            ForwardError::NotLeader { leader } => RaftNodeError::NotLeader { leader },
            ForwardError::Raft(e) => RaftNodeError::Raft(e),
        }
    }
}

impl RaftNode {
    /// Opens (or creates) the store and starts openraft.
    pub async fn open(config: RaftConfig, network: QuicNetwork) -> Result<RaftNode, RaftNodeError> {
        let dir = config.data_dir.join("raft");
        let db = sled::open(&dir).map_err(StoreError::from)?;
        let log_store = LogStore::open(&db)?;
        let state_machine = StateMachine::open(&db, &dir)?;
        let reader = state_machine.reader().clone();
        let raft_config = Config {
            cluster_name: "windflow".into(),
            heartbeat_interval: HEARTBEAT_MS,
            election_timeout_min: ELECTION_TIMEOUT_MS.0,
            election_timeout_max: ELECTION_TIMEOUT_MS.1,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after_logs),
            // Enough for a lagging follower to catch up without a snapshot, no more.
            max_in_snapshot_log_to_keep: config.snapshot_after_logs.min(1000),
            max_payload_entries: 64,
            // Each snapshot chunk is one RPC with this deadline. openraft's default (200 ms)
            // is shorter than a loaded 2-core machine takes to move and write a few MiB, and
            // a timed-out chunk is sent again and again: a newcomer never caught up.
            install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT_MS,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftNodeError::Config(e.to_string()))?;
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            network.clone(),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| RaftNodeError::Raft(e.to_string()))?;
        Ok(RaftNode {
            inner: Arc::new_cyclic(|weak| Inner {
                id: config.id,
                raft,
                reader,
                db,
                network,
                peers: Mutex::new(HashMap::new()),
                batcher: crate::batch::spawn(weak.clone()),
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
    ///
    /// On a follower the command is forwarded to the leader, which proposes it and answers.
    /// `NotLeader` comes back only when no leader became known within a short wait (an
    /// election is under way), or the servers kept naming other leaders. A forwarded write
    /// whose answer is lost (the leader died mid-request) fails with `Raft` and is not
    /// retried: it may have been applied. So does a write the leader could not commit
    /// within 5 s (a leader cut off from the majority cannot commit at all).
    ///
    /// Writes that arrive together share one raft entry (see [`crate::batch`]); each gets
    /// its own answer.
    #[tracing::instrument(level = "debug", skip_all, fields(command = cmd.kind()))]
    pub async fn write(&self, cmd: Command) -> Result<Applied, WriteError> {
        self.write_via(cmd, &self.inner.batcher.eager).await
    }

    /// Like [`RaftNode::write`], for bookkeeping nobody waits on (audit entries): the
    /// command shares the next write's entry instead of taking one of its own, and is
    /// proposed alone only when no write comes within a few milliseconds. Under load this
    /// saves an entry (a flush and a replication round) per recorded request.
    #[tracing::instrument(level = "debug", skip_all, fields(command = cmd.kind()))]
    pub async fn write_lazily(&self, cmd: Command) -> Result<Applied, WriteError> {
        self.write_via(cmd, &self.inner.batcher.lazy).await
    }

    async fn write_via(
        &self,
        cmd: Command,
        queue: &tokio::sync::mpsc::Sender<crate::batch::Queued>,
    ) -> Result<Applied, WriteError> {
        let started = std::time::Instant::now();
        let answer = if cmd.batchable() {
            let (reply, answer) = tokio::sync::oneshot::channel();
            queue
                .send(crate::batch::Queued { cmd, reply })
                .await
                .map_err(|_| WriteError::Raft("the node is shutting down".into()))?;
            answer
                .await
                .map_err(|_| WriteError::Raft("the node is shutting down".into()))?
        } else {
            self.propose(cmd).await
        };
        // Refused or not, a command that got an answer was committed and applied.
        if !matches!(
            answer,
            Err(WriteError::NotLeader { .. } | WriteError::Raft(_))
        ) {
            self.inner
                .reader
                .timings()
                .commit
                .observe(started.elapsed().as_secs_f64());
        }
        answer
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        RaftNode { inner }
    }

    /// Proposes one entry (a command or a batch) through the leader.
    pub(crate) async fn propose(&self, cmd: Command) -> Result<Applied, WriteError> {
        let response = self
            .on_leader(
                |raft| {
                    let cmd = cmd.clone();
                    async move { leader::write(&raft, cmd).await }
                },
                || PeerRequest::ClientWrite(cmd.clone()),
                |r| match r {
                    PeerResponse::ClientWrite(r) => Some(r),
                    _ => None,
                },
            )
            .await?;
        Ok(response?)
    }

    /// Returns once this server's state reflects every write committed before the call.
    ///
    /// The leader confirms it still leads and names the log index committed so far (on a
    /// follower, over the peer link); this server then waits, up to 10 s, until it has
    /// applied that index. Reads through [`RaftNode::reader`] after it see those writes.
    pub async fn linearizable(&self) -> Result<(), WriteError> {
        let index = self
            .on_leader(
                |raft| async move { leader::read_index(&raft).await },
                || PeerRequest::ReadIndex,
                |r| match r {
                    PeerResponse::ReadIndex(r) => Some(r),
                    _ => None,
                },
            )
            .await?;
        let Some(index) = index else {
            return Ok(());
        };
        let mut applied = self.inner.reader.subscribe();
        match tokio::time::timeout(READ_APPLY_WAIT, applied.wait_for(|i| *i >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(WriteError::Raft("the state machine stopped".into())),
            Err(_) => Err(WriteError::Raft(format!(
                "this server did not apply up to the leader's read index {index} within \
                 {READ_APPLY_WAIT:?}"
            ))),
        }
    }

    /// Adds server `id`, reachable at `addr` (its QUIC `host:port`), as a learner, and
    /// returns once the leader sees it caught up. Forwarded to the leader from a follower.
    pub async fn add_learner(
        &self,
        id: ServerId,
        addr: impl Into<String>,
    ) -> Result<(), RaftNodeError> {
        self.membership(MembershipChange::AddLearner {
            id,
            addr: addr.into(),
        })
        .await
    }

    /// Makes exactly `voters` the voting members (each must already be a member, e.g. a
    /// learner added with [`RaftNode::add_learner`]). Voters left out stay on as learners;
    /// [`RaftNode::remove_server`] drops them. Forwarded to the leader from a follower.
    pub async fn change_voters(&self, voters: BTreeSet<ServerId>) -> Result<(), RaftNodeError> {
        self.membership(MembershipChange::ChangeVoters(voters))
            .await
    }

    /// Drops server `id` from the voters and the learners (nothing to do if it is neither).
    /// Forwarded to the leader from a follower.
    pub async fn remove_server(&self, id: ServerId) -> Result<(), RaftNodeError> {
        self.membership(MembershipChange::RemoveServer(id)).await
    }

    async fn membership(&self, change: MembershipChange) -> Result<(), RaftNodeError> {
        Ok(self
            .on_leader(
                |raft| {
                    let change = change.clone();
                    async move { leader::change_membership(&raft, change).await }
                },
                || PeerRequest::Membership(change.clone()),
                |r| match r {
                    PeerResponse::Membership(r) => Some(r),
                    _ => None,
                },
            )
            .await?)
    }

    /// The group's members as this server knows them (its effective membership), with
    /// replication progress when this server leads.
    pub fn members(&self) -> Vec<MemberInfo> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<ServerId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| MemberInfo {
                id: *id,
                addr: node.addr.clone(),
                role: if voters.contains(id) {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                },
                is_leader: metrics.current_leader == Some(*id),
                matched_index: metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).copied().flatten())
                    .map(|l| l.index),
            })
            .collect()
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

    /// The fault-injection handle of this server's raft network (see
    /// [`QuicNetwork::faults`]); it exists for fault tests. Blocking a peer here cuts
    /// openraft's RPCs and forwarded requests to it.
    pub fn faults(&self) -> &crate::Faults {
        self.inner.network.faults()
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
