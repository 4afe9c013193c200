//! What agents and servers say to each other on the `windflow/1` control stream.
//!
//! A session opens with [`AgentMessage::Hello`]; the server answers [`ServerMessage::Welcome`]
//! or [`ServerMessage::Refused`]. After that the agent sends heartbeats, output and results;
//! the server sends work and acknowledgements. Every message is one frame (see [`crate::codec`]).

use serde::{Deserialize, Serialize};

use crate::alloc::{AllocEvent, Allocation, ClientStatus};
use crate::ids::{AllocId, JobId, NodeId, RunId};
use crate::job::{JobType, RestartPolicy, TaskSpec};
use crate::node::DriverKind;
use crate::run::RunOutcome;
use crate::time::{HumanDuration, Timestamp};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The ALPN of agent sessions.
pub const ALPN_AGENT: &[u8] = b"windflow/1";
/// The ALPN of server-to-server raft traffic.
pub const ALPN_RAFT: &[u8] = b"windflow-raft/1";
/// The ALPN on which a server relays an [`AgentRequest`] to an agent connected to it, for
/// another server (servers' certificates only).
pub const ALPN_RELAY: &[u8] = b"windflow-relay/1";

/// An inclusive range of protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRange {
    pub min: u32,
    pub max: u32,
}

impl VersionRange {
    /// What this build supports.
    pub const SUPPORTED: VersionRange = VersionRange {
        min: PROTOCOL_VERSION,
        max: PROTOCOL_VERSION,
    };

    /// The highest version both sides speak, if any.
    pub fn negotiate(&self, other: &VersionRange) -> Option<u32> {
        let hi = self.max.min(other.max);
        let lo = self.min.max(other.min);
        (lo <= hi).then_some(hi)
    }
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

/// Agent → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMessage {
    Hello(Hello),
    Heartbeat(Heartbeat),
    /// An attempt of a run has started on the node.
    AttemptStarted {
        run: RunId,
        attempt: u32,
        at: Timestamp,
    },
    Output(OutputChunk),
    Finished(TaskFinished),
    /// What the node's allocation is doing now; sent on every change and again after a
    /// reconnect until acknowledged with [`ServerMessage::AllocUpdateAck`].
    AllocUpdate(AllocUpdate),
}

/// An allocation's state on its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocUpdate {
    pub alloc: AllocId,
    pub client: ClientStatus,
    pub restarts: u32,
    /// What happened since the last update the server acknowledged, oldest first.
    pub events: Vec<AllocEvent>,
    /// The host ports its running containers got now (docker tasks; empty otherwise).
    #[serde(default)]
    pub ports: Vec<crate::docker::AllocPort>,
    /// What its health checks say now.
    #[serde(default)]
    pub health: crate::deploy::AllocHealth,
}

/// The first message of every session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub versions: VersionRange,
    pub hostname: String,
    pub agent_version: String,
    pub drivers: Vec<DriverKind>,
    pub fingerprint: crate::node::Fingerprint,
    /// The highest [`Allocation::modify_index`] this agent has seen (0: none): the server
    /// sends the node's allocation changes after it.
    pub alloc_index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub seq: u64,
    /// Runs the agent is executing right now.
    pub running: Vec<RunId>,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Live output of a running attempt, in the order it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    pub run: RunId,
    pub attempt: u32,
    pub stream: OutputStream,
    #[serde(with = "crate::codec::bytes")]
    pub data: Vec<u8>,
}

/// The end of a run, after its last attempt. The agent sends it again after a reconnect
/// until the server acknowledges it with [`ServerMessage::FinishedAck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFinished {
    pub run: RunId,
    pub outcome: RunOutcome,
    /// The last attempt's exit code; `None` when it was killed or never started.
    pub exit_code: Option<i32>,
    pub attempts: u32,
    pub started_at: Timestamp,
    pub duration: HumanDuration,
    /// The last attempt's stdout, at most [`crate::CONTEXT_MAX_BYTES`] (see `stdout_truncated`).
    #[serde(with = "crate::codec::bytes")]
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    /// The end of the last attempt's stderr, at most [`crate::STDERR_TAIL_BYTES`].
    #[serde(with = "crate::codec::bytes")]
    pub stderr_tail: Vec<u8>,
    /// Why the run failed when it is not just an exit code (missing workdir, timeout…).
    pub error: Option<String>,
}

/// Server → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    Welcome(Welcome),
    /// The session is refused; the server closes the connection after sending this.
    Refused {
        reason: String,
    },
    RunTask(RunTask),
    HeartbeatAck {
        seq: u64,
    },
    FinishedAck {
        run: RunId,
    },
    /// This node's allocations that changed after the agent's index, up to `index`.
    Allocations(AllocSync),
    /// The update with this status was recorded.
    AllocUpdateAck {
        alloc: AllocId,
        client: ClientStatus,
    },
}

/// A batch of allocation changes for one node. The agent keeps `index` and sends it in
/// its next Hello, so a reconnect (to any server) gets exactly what it missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocSync {
    pub index: u64,
    pub allocs: Vec<AllocAssignment>,
}

/// One allocation as its node must run it. For a `run` allocation `tasks` are its group's
/// tasks with their secret env opened into `env` (plaintext, as in [`RunTask`]: never
/// logged or stored); for a `stop` one they are empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocAssignment {
    pub alloc: Allocation,
    pub tasks: Vec<TaskSpec>,
    pub restart: RestartPolicy,
    /// A batch job's allocation that exits 0 is `complete`; a service's is restarted.
    pub job_type: JobType,
    /// The group's health checks, and the update policy's times that judge them.
    #[serde(default)]
    pub checks: Vec<crate::deploy::HealthCheck>,
    #[serde(default)]
    pub update: crate::deploy::UpdatePolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The negotiated protocol version.
    pub version: u32,
    /// Who the server knows this agent as (from its certificate).
    pub node: NodeId,
    pub heartbeat_interval: HumanDuration,
}

/// Run one task of a job. The server opens the task's secret env into `task.env` before it
/// sends this (`task.secret_env` is empty), so this message carries plaintext over the mTLS
/// session: neither side logs it (no `Debug` of it) nor stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTask {
    pub run: RunId,
    pub job: JobId,
    pub task: TaskSpec,
}

/// The most lines a logs request may ask for with `tail`.
pub const LOG_TAIL_MAX: u32 = 100_000;

/// What a server asks of an agent on a bi-directional stream of its own, opened on the
/// agent's connection beside the control stream (bulk data never rides the control
/// stream). The server writes one request frame; the agent answers with
/// [`AgentReply::Accepted`] or [`AgentReply::Refused`], then (logs) [`AgentReply::Chunk`]s,
/// and finishes the stream when it is done. The server cancels by dropping the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentRequest {
    Logs(LogsRequest),
    Stats(StatsRequest),
}

/// What a server asks a peer server on `windflow-relay/1`: pass `request` to node `node`'s
/// agent if it is connected there. The answer is the agent's, frame for frame, or
/// [`AgentReply::NoSession`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRequest {
    pub node: NodeId,
    pub request: AgentRequest,
}

/// One task's output of one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub alloc: AllocId,
    pub task: String,
    /// How the task runs (the agent may no longer hold the allocation's tasks).
    pub driver: DriverKind,
    pub stream: OutputStream,
    /// Keep the stream open and send lines as they are written.
    pub follow: bool,
    /// Only lines written at this instant or later.
    pub since: Option<Timestamp>,
    /// Only the last N lines (of those after `since`) before following.
    pub tail: Option<u32>,
}

/// The resource use of an allocation's tasks, one sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRequest {
    pub alloc: AllocId,
    /// The tasks, by name, with how each runs.
    pub tasks: Vec<(String, DriverKind)>,
}

/// Agent → server on a request's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentReply {
    /// The request is being served; what it asked for follows.
    Accepted,
    /// It cannot be served; `missing` when what it names is not on this node.
    Refused { reason: String, missing: bool },
    /// The next bytes of the output, whole lines except perhaps the last.
    Chunk(#[serde(with = "crate::codec::bytes")] Vec<u8>),
    /// The answer of a [`StatsRequest`], one per task in its order.
    Stats(Vec<TaskStats>),
    /// (A relaying server's answer) the node's agent has no session with it.
    NoSession,
}

/// One task's resource use, as its driver measured it; `None` where it cannot tell.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskStats {
    pub task: String,
    /// CPU time over the sample's wall time, 100 = one core.
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub network_rx_bytes: Option<u64>,
    pub network_tx_bytes: Option<u64>,
    pub block_read_bytes: Option<u64>,
    pub block_write_bytes: Option<u64>,
    /// Why nothing (or not everything) was measured: not running, engine error.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_negotiate_to_the_highest_shared() {
        let a = VersionRange { min: 1, max: 3 };
        assert_eq!(a.negotiate(&VersionRange { min: 2, max: 5 }), Some(3));
        assert_eq!(a.negotiate(&VersionRange { min: 4, max: 5 }), None);
    }
}
