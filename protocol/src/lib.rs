//! Windflow's shared language.
//!
//! Everything that crosses a crate or a process boundary is defined here: typed IDs,
//! the domain objects the servers replicate (jobs, runs, contexts, nodes), the messages
//! agents and servers exchange, and the frame codec that carries them. This crate depends
//! on serde and bincode only, so both the agent and the servers can link it.

pub mod alloc;
pub mod batch;
pub mod codec;
pub mod deploy;
pub mod docker;
pub mod enroll;
pub mod export;
pub mod identity;
pub mod ids;
pub mod job;
pub mod messages;
pub mod namespace;
pub mod node;
pub mod pipeline;
pub mod run;
pub mod schedule;
pub mod secret;
pub mod time;
pub mod webhook;

pub use alloc::{
    ALLOC_EVENTS_MAX, AllocEvent, AllocEventKind, Allocation, ClientStatus, Constraint,
    DesiredStatus, Dimension, EvalStatus, EvalTrigger, Evaluation, Operator, Placement, Resources,
};
pub use batch::{RunRetention, RunTarget};
pub use codec::CodecError;
pub use deploy::{
    AllocHealth, CheckKind, Deployment, DeploymentStatus, HealthCheck, HealthStatus, UpdatePolicy,
};
pub use docker::{
    ALLOC_PORTS_MAX, AllocPort, ContainerHealthcheck, Dependency, DependencyCondition,
    DockerConfig, Mount, MountKind, PortMapping, PortProtocol,
};
pub use identity::{AuditEntry, AuditOutcome, Role, TokenKind, TokenView, UserView};
pub use ids::{
    AllocId, AuditId, ContextId, DeploymentId, EvalId, IdParseError, JobId, JoinTokenId, NodeId,
    PipelineId, PipelineRunId, RunId, ScheduleId, TokenId, UserId, WebhookId,
};
pub use job::{
    DriverConfig, ExecConfig, Job, JobSpec, JobType, RescheduleLimit, ReschedulePolicy,
    RestartMode, RestartPolicy, RetryPolicy, TaskGroup, TaskSpec,
};
pub use namespace::{Namespace, NamespaceInfo};
pub use node::{DrainStrategy, DriverKind, Eligibility, Fingerprint, Node, NodeStatus};
pub use pipeline::{
    FailurePolicy, Pipeline, PipelineRun, PipelineRunStatus, PipelineSpec, PipelineStep, StepState,
    StepStatus,
};
pub use run::{Context, ContextPart, ContextSource, Run, RunOutcome, RunStatus};
pub use schedule::{
    CatchUp, FireOutcome, OverlapPolicy, Schedule, ScheduleFire, ScheduleSpec, ScheduleTarget,
    TargetLaunch,
};
pub use secret::{KeyId, Sealed};
pub use time::{HumanDuration, Timestamp};
pub use webhook::{Delivery, DeliveryOutcome, Event, EventKind, Webhook, WebhookSpec};

/// The most stdout a run keeps as its context. Longer output is cut to this many bytes
/// (at a UTF-8 boundary) and the context is marked `truncated`.
pub const CONTEXT_MAX_BYTES: usize = 1024 * 1024;

/// The most stderr a run keeps, from the end of the stream, for its error report.
pub const STDERR_TAIL_BYTES: usize = 16 * 1024;
