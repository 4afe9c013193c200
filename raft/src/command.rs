//! What can change in the cluster, and what `apply` answers.

use serde::{Deserialize, Serialize};
use windflow_protocol::{
    DriverKind, HumanDuration, Job, JobId, JobSpec, Node, NodeId, Run, RunId, RunOutcome, Timestamp,
};

/// One change to cluster state. Times are stamped by the proposer, never read in `apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// An API token; `hash` is the SHA-256 of its secret. Names are unique.
    CreateToken {
        name: String,
        hash: Vec<u8>,
        at: Timestamp,
    },
    /// A new agent host; assigns the next [`NodeId`].
    RegisterNode {
        name: String,
        drivers: Vec<DriverKind>,
        at: Timestamp,
    },
    /// An agent opened a session.
    NodeHello {
        node: NodeId,
        hostname: String,
        drivers: Vec<DriverKind>,
        agent_version: String,
        at: Timestamp,
    },
    /// Assigns the next [`JobId`] and creates the job's empty context.
    CreateJob { spec: JobSpec, at: Timestamp },
    /// Removes a job, its name and its context; its runs stay as history, and those still
    /// pending fail.
    DeleteJob { job: JobId, at: Timestamp },
    /// Queues a run of a job: `pending`.
    CreateRun { job: JobId, at: Timestamp },
    /// The leader placed a pending run on a node: `running`.
    RunDispatched {
        run: RunId,
        node: NodeId,
        at: Timestamp,
    },
    /// A run ended on its node. Applying it twice changes nothing more.
    RunFinished {
        run: RunId,
        node: NodeId,
        outcome: RunOutcome,
        exit_code: Option<i32>,
        attempts: u32,
        started_at: Timestamp,
        duration: HumanDuration,
        stdout: String,
        stdout_truncated: bool,
        stderr_tail: String,
        error: Option<String>,
        at: Timestamp,
    },
    /// Several commands in one entry, applied in order in one atomic batch (see
    /// [`crate::batch`]). Only [`Command::batchable`] commands go in one.
    Batch(Vec<Command>),
    /// Replaces the whole replicated state with a backup's (see [`crate::backup`]); raft's
    /// own bookkeeping (last applied, membership) is kept.
    RestoreState { pairs: Vec<KeyValue> },
}

/// A key and its value in the state tree.
pub type KeyValue = (Vec<u8>, Vec<u8>);

impl Command {
    /// Whether the command may share an entry with others. Apply's scans read committed
    /// state, not the batch's pending writes, so commands that scan go alone.
    pub fn batchable(&self) -> bool {
        !matches!(
            self,
            Command::DeleteJob { .. } | Command::RestoreState { .. } | Command::Batch(_)
        )
    }

    /// A short name for logs and spans.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateToken { .. } => "create_token",
            Command::RegisterNode { .. } => "register_node",
            Command::NodeHello { .. } => "node_hello",
            Command::CreateJob { .. } => "create_job",
            Command::DeleteJob { .. } => "delete_job",
            Command::CreateRun { .. } => "create_run",
            Command::RunDispatched { .. } => "run_dispatched",
            Command::RunFinished { .. } => "run_finished",
            Command::RestoreState { .. } => "restore_state",
            Command::Batch(_) => "batch",
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Token {
        name: String,
    },
    Node(Node),
    Job(Job),
    Run(Run),
    /// A batch's answers, one per command, in order.
    Batch(Vec<Response>),
    /// A backup replaced the state: how many keys it holds now.
    Restored {
        keys: u64,
    },
    /// Entries that carry no command (blank and membership entries).
    Nothing,
}

/// Why a command was refused. Deterministic: every server refuses the same commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("{kind} `{id}` not found")]
    NotFound { kind: String, id: String },
    #[error("a {kind} named `{name}` already exists")]
    NameTaken { kind: String, name: String },
    #[error("run {run} cannot go from {from} to {to}")]
    InvalidTransition {
        run: RunId,
        from: String,
        to: String,
    },
    #[error("a `{kind}` command cannot be part of a batch")]
    NotBatchable { kind: String },
}

impl ApplyError {
    pub(crate) fn not_found(kind: &str, id: impl std::fmt::Display) -> Self {
        ApplyError::NotFound {
            kind: kind.into(),
            id: id.to_string(),
        }
    }
}

/// `apply`'s answer to one command.
pub type Response = Result<Applied, ApplyError>;

/// What the store keeps of an API token (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    pub created_at: Timestamp,
}
