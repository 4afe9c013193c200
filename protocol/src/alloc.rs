//! What the scheduler works with: resources, placement constraints, allocations (one task
//! group instance placed on one node) and evaluations (a reason to look at a job again).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{AllocId, EvalId, JobId, NodeId};
use crate::namespace::Namespace;
use crate::time::Timestamp;

/// CPU, memory and disk: what a node offers and what a task asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in MHz (a core of 2 GHz offers 2000).
    pub cpu_mhz: u64,
    pub memory_mb: u64,
    #[serde(default)]
    pub disk_mb: u64,
}

impl Resources {
    /// What a task asks for when it says nothing.
    pub const TASK_DEFAULT: Resources = Resources {
        cpu_mhz: 100,
        memory_mb: 64,
        disk_mb: 0,
    };

    pub fn saturating_add(self, o: Resources) -> Resources {
        Resources {
            cpu_mhz: self.cpu_mhz.saturating_add(o.cpu_mhz),
            memory_mb: self.memory_mb.saturating_add(o.memory_mb),
            disk_mb: self.disk_mb.saturating_add(o.disk_mb),
        }
    }

    pub fn saturating_sub(self, o: Resources) -> Resources {
        Resources {
            cpu_mhz: self.cpu_mhz.saturating_sub(o.cpu_mhz),
            memory_mb: self.memory_mb.saturating_sub(o.memory_mb),
            disk_mb: self.disk_mb.saturating_sub(o.disk_mb),
        }
    }

    /// The first dimension in which `self` does not fit into `free`, if any.
    pub fn exceeds(&self, free: &Resources) -> Option<Dimension> {
        if self.cpu_mhz > free.cpu_mhz {
            Some(Dimension::Cpu)
        } else if self.memory_mb > free.memory_mb {
            Some(Dimension::Memory)
        } else if self.disk_mb > free.disk_mb {
            Some(Dimension::Disk)
        } else {
            None
        }
    }
}

/// One kind of resource, to say which one ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dimension {
    Cpu,
    Memory,
    Disk,
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dimension::Cpu => "cpu",
            Dimension::Memory => "memory",
            Dimension::Disk => "disk",
        })
    }
}

/// How a constraint compares a node's attribute with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    #[serde(rename = "=")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
    /// The attribute matches a regular expression.
    Regex,
    /// The attribute is a version satisfying a requirement such as `>= 1.2, < 2`.
    Version,
    /// The attribute is one of a comma-separated list.
    SetContains,
}

/// A rule a node must satisfy to run a task group, on one of its attributes (`os`,
/// `arch`, `kernel`, `driver.docker.version`…) or labels (`label.zone`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Constraint {
    pub attribute: String,
    pub operator: Operator,
    pub value: String,
}

/// How the scheduler ranks the nodes that can take an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Fill nodes up before using empty ones (fewer, fuller nodes).
    #[default]
    Binpack,
    /// Prefer the emptiest nodes (load spread evenly).
    Spread,
}

/// What the servers want of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredStatus {
    Run,
    Stop,
}

/// What the node last said of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientStatus {
    Pending,
    Running,
    Complete,
    Failed,
    /// Its node went down.
    Lost,
}

impl ClientStatus {
    /// Whether the allocation no longer holds its node's resources.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ClientStatus::Complete | ClientStatus::Failed | ClientStatus::Lost
        )
    }
}

/// One instance (`index` of the group's `count`) of a job's task group, placed on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub id: AllocId,
    pub job: JobId,
    pub namespace: Namespace,
    pub group: String,
    pub index: u32,
    pub node: NodeId,
    /// The sum of the group's tasks' resources: what it holds on the node while live.
    pub resources: Resources,
    pub desired: DesiredStatus,
    pub client: ClientStatus,
    /// The evaluation whose plan placed it.
    pub eval: EvalId,
    pub created_at: Timestamp,
    pub modified_at: Timestamp,
    /// Advances on every change to the allocation: a cluster-wide sequence kept by `apply`
    /// (never a clock), so an agent that saw changes up to N asks for those after N.
    #[serde(default)]
    pub modify_index: u64,
    /// How many times its node restarted its tasks in place (the restart policy).
    #[serde(default)]
    pub restarts: u32,
    /// The allocation this one replaces, when it was rescheduled from a lost or failed one.
    #[serde(default)]
    pub previous: Option<AllocId>,
    /// How many reschedules led to this one (0 for a first placement).
    #[serde(default)]
    pub reschedules: u32,
    /// What happened to it, oldest first; at most [`ALLOC_EVENTS_MAX`], the oldest dropped.
    #[serde(default)]
    pub events: Vec<AllocEvent>,
    /// The host ports its containers got (docker tasks), as its node last reported them.
    #[serde(default)]
    pub ports: Vec<crate::docker::AllocPort>,
    /// The job version it runs (its tasks are that version's).
    #[serde(default)]
    pub job_version: u64,
    /// The deployment that placed it, if one did.
    #[serde(default)]
    pub deployment: Option<crate::ids::DeploymentId>,
    /// What its node last said of its health checks.
    #[serde(default)]
    pub health: crate::deploy::AllocHealth,
}

/// The most events an allocation keeps.
pub const ALLOC_EVENTS_MAX: usize = 32;

/// One thing that happened to an allocation, for `windflow alloc show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocEvent {
    pub at: Timestamp,
    pub kind: AllocEventKind,
    /// Said for people: an exit code, a reason, the node it moved from.
    pub message: String,
}

/// What kind of thing happened to an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocEventKind {
    /// The scheduler put it on its node.
    Placed,
    /// The node received it.
    Received,
    /// Its tasks started (again, after a restart).
    Started,
    /// A task exited; `message` has the code.
    Exited,
    /// The node restarts it in place per the restart policy.
    Restarting,
    /// Past its restart policy, or it could not start: it ended `failed`.
    Failed,
    /// Its node went down.
    Lost,
    /// It is told to stop (a scale down, a drain, the job deleted, a duplicate).
    StopRequested,
    /// Its tasks stopped on the node.
    Stopped,
    /// A replacement was placed elsewhere.
    Rescheduled,
    /// Its node is draining.
    Draining,
    /// A driver's step on the way to starting a task (an image pull and its progress).
    TaskSetup,
}

impl Allocation {
    /// Records an event, keeping the newest [`ALLOC_EVENTS_MAX`].
    pub fn push_event(&mut self, at: Timestamp, kind: AllocEventKind, message: impl Into<String>) {
        if self.events.len() >= ALLOC_EVENTS_MAX {
            let excess = self.events.len() + 1 - ALLOC_EVENTS_MAX;
            self.events.drain(..excess);
        }
        self.events.push(AllocEvent {
            at,
            kind,
            message: message.into(),
        });
    }

    /// Whether it holds its node's resources: wanted running and not ended.
    pub fn is_live(&self) -> bool {
        self.desired == DesiredStatus::Run && !self.client.is_terminal()
    }
}

/// Why an evaluation was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalTrigger {
    JobRegister,
    JobDeregister,
    Scale,
    NodeUpdate,
    /// A plan lost a race for a node's resources; the job is looked at again.
    PlanRejected,
    /// A node it runs on is draining: its service allocations move first.
    NodeDrain,
    /// An allocation failed or was lost: its replacement is due (the reschedule policy).
    AllocFailed,
    /// A deployment moved on: one of its allocations' health changed, or it was promoted.
    Deployment,
}

/// Where an evaluation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalStatus {
    Pending,
    Complete,
    /// Some allocations could not be placed; it waits for the cluster to change.
    Blocked,
    Failed,
}

/// A reason to look at a job again, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    pub id: EvalId,
    pub job: JobId,
    pub trigger: EvalTrigger,
    pub status: EvalStatus,
    /// Why allocations stayed unplaced: per node, the constraint or resource that
    /// filtered it out.
    pub unplaced: Vec<String>,
    pub created_at: Timestamp,
    pub modified_at: Timestamp,
    /// A pending evaluation waits until then (a replacement's reschedule delay has not
    /// passed yet): the scheduler leaves it in the queue and wakes for it at that time.
    #[serde(default)]
    pub wait_until: Option<Timestamp>,
}
