//! What can change in the cluster, and what `apply` answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use windflow_protocol::enroll::JoinKind;
use windflow_protocol::{
    AllocEvent, AllocHealth, AllocId, Allocation, AuditEntry, AuditId, ClientStatus, Deployment,
    DeploymentId, DriverKind, Eligibility, EvalId, EvalStatus, EvalTrigger, Evaluation,
    Fingerprint, HumanDuration, Job, JobId, JobSpec, JoinTokenId, Namespace, NamespaceInfo, Node,
    NodeId, Resources, Role, Run, RunId, RunOutcome, Sealed, Timestamp, TokenId, TokenKind,
    TokenView, UserView,
};
use windflow_protocol::{
    Context, ContextId, Pipeline, PipelineId, PipelineRun, PipelineRunId, PipelineSpec,
    RunRetention,
};
// Schedules and webhooks (issue 7).
use windflow_protocol::{
    Delivery, DeliveryOutcome, Schedule, ScheduleFire, ScheduleId, ScheduleSpec, Webhook,
    WebhookId, WebhookSpec,
};

/// One change to cluster state. Times are stamped by the proposer, never read in `apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// An API token. Names of [`TokenKind::Api`] tokens are unique. A token acting for a
    /// user may not have a larger role than the user. Assigns the next [`TokenId`].
    CreateToken(NewToken),
    /// The token opens nothing from then on.
    RevokeToken { id: TokenId, at: Timestamp },
    /// Replaces a token's secret; the old one stops working at once. Name, role, user and
    /// expiry stay.
    RotateToken {
        id: TokenId,
        hash: Vec<u8>,
        prefix: String,
        at: Timestamp,
    },
    /// A user; `password_hash` is an argon2id PHC string made by the proposer. Names are
    /// unique. Assigns the next [`windflow_protocol::UserId`].
    CreateUser {
        name: String,
        role: Role,
        /// The namespace the role holds in (it must exist); `None` for the whole cluster.
        namespace: Option<Namespace>,
        password_hash: String,
        at: Timestamp,
    },
    SetUserPassword {
        name: String,
        password_hash: String,
        at: Timestamp,
    },
    /// Removes a user and revokes every token acting for it.
    DeleteUser { name: String, at: Timestamp },
    /// Appends one entry to the audit log (its `id` is assigned here).
    RecordAudit(AuditEntry),
    /// Drops audit entries older than `before` (retention).
    PruneAudit { before: Timestamp },
    /// A namespace; `default` always exists.
    CreateNamespace {
        name: Namespace,
        description: String,
        at: Timestamp,
    },
    /// Removes an empty namespace (not `default`).
    DeleteNamespace { name: Namespace },
    /// A reason for the scheduler to look at a job; assigns the next [`EvalId`] and queues it.
    CreateEvaluation {
        job: JobId,
        trigger: EvalTrigger,
        at: Timestamp,
    },
    /// What came of an evaluation; one that is no longer pending leaves the queue.
    UpdateEvaluation {
        eval: EvalId,
        status: EvalStatus,
        unplaced: Vec<String>,
        at: Timestamp,
    },
    /// The scheduler's plan for an evaluation. Each placement is re-checked against its
    /// node's free resources; those that no longer fit are rejected, the rest applied.
    SubmitPlan(Plan),
    /// What a node says of an allocation: refused unless the allocation is on that node;
    /// a terminal client status stays.
    AllocStatus(AllocReport),
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
        fingerprint: Fingerprint,
        at: Timestamp,
    },
    /// Assigns the next [`JobId`] and creates the job's empty context. The job's namespace
    /// must exist.
    CreateJob { spec: JobSpec, at: Timestamp },
    /// Replaces the sealed values of task `task`'s secret env (key rotation re-encrypts
    /// through this). Refused unless it names exactly the vars the task has.
    ResealSecretEnv {
        job: JobId,
        task: String,
        secret_env: BTreeMap<String, Sealed>,
        at: Timestamp,
    },
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
    /// A join token for servers or agents (see [`crate::join_tokens`]); `hash` is the
    /// SHA-256 of its secret. Assigns the next [`JoinTokenId`].
    CreateJoinToken {
        kind: JoinKind,
        hash: Vec<u8>,
        expires_at: Option<Timestamp>,
        /// How many enrollments it allows; `None` for no limit.
        uses: Option<u32>,
        /// Given to every node an agent token enrolls.
        labels: BTreeMap<String, String>,
        at: Timestamp,
    },
    /// Spends one use of the join token whose secret hashes to `hash`, for a party of
    /// `kind` named `by`; refused when the token is unknown, revoked, expired (at `at`),
    /// used up, or of another kind.
    UseJoinToken {
        kind: JoinKind,
        hash: Vec<u8>,
        by: String,
        at: Timestamp,
    },
    /// Revokes a join token: it enrolls nobody from then on.
    RevokeJoinToken { id: JoinTokenId, at: Timestamp },
    /// An agent enrolls (see [`crate::node_certs`]): spends one use of the agent join
    /// token whose secret hashes to `hash`, registers a node with the token's labels, and
    /// records the certificate the proposer is about to sign for it (`serial`, lowercase
    /// hex). Answers [`Applied::Node`].
    EnrollNode {
        hash: Vec<u8>,
        hostname: String,
        serial: String,
        not_after: Timestamp,
        at: Timestamp,
    },
    /// A node's certificate was renewed; refused for a revoked or unknown node.
    NodeCertIssued {
        node: NodeId,
        serial: String,
        not_after: Timestamp,
        at: Timestamp,
    },
    /// Puts every certificate issued to `node` on the revocation list: its agent is
    /// refused at the TLS handshake from then on, and it gets no new certificate.
    RevokeNode { node: NodeId, at: Timestamp },
    /// Several commands in one entry, applied in order in one atomic batch (see
    /// [`crate::batch`]). Only [`Command::batchable`] commands go in one.
    Batch(Vec<Command>),
    /// Replaces the whole replicated state with a backup's (see [`crate::backup`]); raft's
    /// own bookkeeping (last applied, membership) is kept.
    RestoreState { pairs: Vec<KeyValue> },
    /// Every heartbeat interval, each server lists the nodes whose agents it heard from
    /// and when it last did (see [`crate::nodes`]): one entry per server, not per node.
    NodeHeartbeats {
        nodes: Vec<(NodeId, Timestamp)>,
        at: Timestamp,
    },
    /// The leader found these nodes not heard from since `cutoff` or before: each still
    /// silent is `down`, its live allocations `lost`, and their jobs evaluated again.
    NodesDown {
        nodes: Vec<NodeId>,
        cutoff: Timestamp,
        at: Timestamp,
    },
    /// Starts or cancels a node's drain.
    SetNodeDrain {
        node: NodeId,
        change: DrainChange,
        at: Timestamp,
    },
    /// Whether the scheduler may place new work on a node; refused as `eligible` while
    /// the node drains.
    SetNodeEligibility {
        node: NodeId,
        eligibility: Eligibility,
        at: Timestamp,
    },
    /// A drain ends: nothing is left on the node, or its deadline passed (what is left is
    /// told to stop). The node stays ineligible.
    FinishDrain {
        node: NodeId,
        end: DrainEnd,
        at: Timestamp,
    },
    /// A pending evaluation waits until `until` (a replacement's reschedule delay): it
    /// stays in the queue, and the scheduler plans it again then.
    WaitEvaluation {
        eval: EvalId,
        until: Timestamp,
        unplaced: Vec<String>,
        at: Timestamp,
    },
    // Pipelines, contexts and run retention (issue 7; see `crate::pipelines`).
    /// A pipeline: its steps' jobs must exist, be batch jobs of its namespace and form a
    /// DAG. Assigns the next [`PipelineId`] and creates its empty context.
    CreatePipeline { spec: PipelineSpec, at: Timestamp },
    /// Removes a pipeline, its name and its context; its scheduled runs are cancelled,
    /// running ones finish from their own copy of the steps.
    DeletePipeline { pipeline: PipelineId, at: Timestamp },
    /// A run of a pipeline: started at once (its first steps' runs queued in the same
    /// entry), or `scheduled` when `start_at` is after `at`. The one way to start a
    /// pipeline run (the API and schedules use it).
    CreatePipelineRun {
        pipeline: PipelineId,
        start_at: Option<Timestamp>,
        at: Timestamp,
    },
    /// The leader starts a scheduled run whose time came; a run already started is left
    /// as it is, so a repeated fire starts nothing twice.
    StartPipelineRun { run: PipelineRunId, at: Timestamp },
    /// Resumes a failed pipeline run: its failed and skipped steps wait again, the
    /// succeeded ones stay.
    RetryPipelineRun { run: PipelineRunId, at: Timestamp },
    /// A pending run that cannot start (a `$$(…)` reference is missing or empty) fails
    /// with `error`, before any node sees it.
    RunRefused {
        run: RunId,
        error: String,
        at: Timestamp,
    },
    /// Empties a context, as before its source's first run.
    ResetContext { context: ContextId, at: Timestamp },
    /// Drops these runs (retention); a listed run that has not finished is kept.
    PruneRuns { runs: Vec<RunId>, at: Timestamp },
    /// The cluster's run retention, for jobs that set none.
    SetRunRetention {
        retention: RunRetention,
        at: Timestamp,
    },
    // Job versions, scaling and deployments (issue 6, rolling updates): see
    // `crate::deployments`.
    /// A new spec for a job (same name, namespace and type): its version + 1, the old
    /// one kept; nothing when the spec is the same. A service whose tasks or policies
    /// change gets a deployment (cancelling the one under way) and an evaluation.
    /// Answers [`Applied::JobUpdated`].
    UpdateJob {
        job: JobId,
        spec: JobSpec,
        at: Timestamp,
    },
    /// A service group's count, changed in place (no new version: see
    /// `crate::deployments`), and an evaluation.
    ScaleJob {
        job: JobId,
        group: String,
        count: u32,
        at: Timestamp,
    },
    /// A running deployment ends (the leader's watcher, or `deployment fail`).
    EndDeployment {
        deployment: DeploymentId,
        outcome: DeploymentEnd,
        reason: String,
        at: Timestamp,
    },
    /// A deployment's canaries are promoted: its version replaces every instance.
    PromoteDeployment {
        deployment: DeploymentId,
        at: Timestamp,
    },
    // --- Schedules and webhooks (issue 7; see `crate::schedules`, `crate::webhooks`) ---
    /// A schedule; names are unique within a namespace, the namespace must exist. It
    /// fires for due times after `at`. Assigns the next [`ScheduleId`].
    CreateSchedule { spec: ScheduleSpec, at: Timestamp },
    /// Enables or disables a schedule; enabling counts due times from `at` on (what was
    /// due while disabled is not caught up).
    SetScheduleEnabled {
        schedule: ScheduleId,
        enabled: bool,
        at: Timestamp,
    },
    /// Removes a schedule and its fire log; runs it started stay.
    DeleteSchedule { schedule: ScheduleId, at: Timestamp },
    /// The leader's fire of `schedule` for due time `due`: refused unless `due` is after
    /// the last recorded fire, so no due time is fired twice whoever leads. Applies the
    /// overlap policy and creates the runs in the same entry, pending. The leader proposes
    /// [`Command::FireSchedulePlaced`]; this one stays for the entries written before it.
    FireSchedule {
        schedule: ScheduleId,
        due: Timestamp,
        /// Due times before `due` that the catch-up policy leaves out.
        missed: u32,
        at: Timestamp,
    },
    /// A webhook; `secret` is its HMAC key, sealed by the proposer. Events from now on are
    /// delivered to it. Assigns the next [`WebhookId`].
    CreateWebhook {
        spec: WebhookSpec,
        secret: Sealed,
        at: Timestamp,
    },
    /// Removes a webhook and its delivery log.
    DeleteWebhook { webhook: WebhookId, at: Timestamp },
    /// One delivery attempt (the leader's); a final one (delivered or given up) marks the
    /// event done for the webhook. Refused for an event already done.
    WebhookAttempt {
        webhook: WebhookId,
        event: u64,
        attempt: u32,
        status: Option<u16>,
        error: Option<String>,
        outcome: DeliveryOutcome,
        at: Timestamp,
    },
    /// An import file's jobs, pipelines, schedules and webhooks, all or nothing: each is
    /// created, or updated when one of its name exists and differs (a job through a new
    /// version), or left alone when the same. References are by name, resolved after the
    /// file's jobs and pipelines are in. Any refused entry refuses the whole command, and
    /// the answer names every refused entry. Answers [`Applied::Imported`].
    Import(Box<crate::import::ImportSet>),
    /// [`Command::FireSchedule`] with the leader's placement of the job runs it launches:
    /// a run of a job in `placed` is created running on that node, dispatched at `at`, so
    /// a fire and its runs' dispatch take one commit rather than two. Its jobs' runs that
    /// are not in `placed` (no agent could take them) are created pending, as are a
    /// pipeline's steps. (Appended last: the log's encoding numbers variants in order.)
    FireSchedulePlaced {
        schedule: ScheduleId,
        due: Timestamp,
        missed: u32,
        at: Timestamp,
        placed: Vec<(JobId, NodeId)>,
    },
}

/// How [`Command::EndDeployment`] ends a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeploymentEnd {
    /// Every instance runs its version, healthy: the version becomes stable.
    Successful,
    /// It failed (an unhealthy allocation, its progress deadline, or a person said so);
    /// with `auto_revert` the job goes back to its stable version.
    Failed,
    /// Its job is gone.
    Cancelled,
}

/// What [`Command::SetNodeDrain`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DrainChange {
    /// Starts a drain (or moves the deadline of the one under way).
    Start { deadline: Option<Timestamp> },
    /// Cancels the drain; the node stays ineligible until made eligible again.
    Cancel,
}

/// How a drain ends ([`Command::FinishDrain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DrainEnd {
    /// No live allocation (and no running batch run) is left on the node.
    Complete,
    /// The deadline passed: what is left is stopped.
    Deadline,
}

/// A key and its value in the state tree.
pub type KeyValue = (Vec<u8>, Vec<u8>);

impl Command {
    /// Whether the command may share an entry with others. Apply's scans read committed
    /// state, not the batch's pending writes, so commands that scan go alone.
    pub fn batchable(&self) -> bool {
        !matches!(
            self,
            Command::DeleteJob { .. }
                | Command::RestoreState { .. }
                | Command::Batch(_)
                // Rare, and two uses of one token must see each other's count.
                | Command::UseJoinToken { .. }
                | Command::EnrollNode { .. }
                // Scans the node's certificates.
                | Command::RevokeNode { .. }
                // These scan the tree, which does not hold a batch's earlier writes.
                | Command::DeleteUser { .. }
                | Command::PruneAudit { .. }
                // These scan a node's allocations.
                | Command::NodesDown { .. }
                | Command::SetNodeDrain { .. }
                | Command::FinishDrain { .. }
                // Scans the pipeline's runs.
                | Command::DeletePipeline { .. }
                // These scan their fire or delivery logs.
                | Command::DeleteSchedule { .. }
                | Command::DeleteWebhook { .. }
                // All or nothing: it rolls back its own writes, so it goes alone.
                | Command::Import(_)
        )
    }

    /// A short name for logs and spans.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateToken(_) => "create_token",
            Command::RevokeToken { .. } => "revoke_token",
            Command::RotateToken { .. } => "rotate_token",
            Command::CreateUser { .. } => "create_user",
            Command::CreateNamespace { .. } => "create_namespace",
            Command::DeleteNamespace { .. } => "delete_namespace",
            Command::SetUserPassword { .. } => "set_user_password",
            Command::DeleteUser { .. } => "delete_user",
            Command::RecordAudit(_) => "record_audit",
            Command::PruneAudit { .. } => "prune_audit",
            Command::RegisterNode { .. } => "register_node",
            Command::CreateEvaluation { .. } => "create_evaluation",
            Command::UpdateEvaluation { .. } => "update_evaluation",
            Command::SubmitPlan(_) => "submit_plan",
            Command::AllocStatus(_) => "alloc_status",
            Command::NodeHello { .. } => "node_hello",
            Command::CreateJob { .. } => "create_job",
            Command::ResealSecretEnv { .. } => "reseal_secret_env",
            Command::DeleteJob { .. } => "delete_job",
            Command::CreateRun { .. } => "create_run",
            Command::RunDispatched { .. } => "run_dispatched",
            Command::RunFinished { .. } => "run_finished",
            Command::CreateJoinToken { .. } => "create_join_token",
            Command::UseJoinToken { .. } => "use_join_token",
            Command::RevokeJoinToken { .. } => "revoke_join_token",
            Command::EnrollNode { .. } => "enroll_node",
            Command::NodeCertIssued { .. } => "node_cert_issued",
            Command::RevokeNode { .. } => "revoke_node",
            Command::RestoreState { .. } => "restore_state",
            Command::Batch(_) => "batch",
            Command::NodeHeartbeats { .. } => "node_heartbeats",
            Command::NodesDown { .. } => "nodes_down",
            Command::SetNodeDrain { .. } => "set_node_drain",
            Command::SetNodeEligibility { .. } => "set_node_eligibility",
            Command::FinishDrain { .. } => "finish_drain",
            Command::WaitEvaluation { .. } => "wait_evaluation",
            Command::CreatePipeline { .. } => "create_pipeline",
            Command::DeletePipeline { .. } => "delete_pipeline",
            Command::CreatePipelineRun { .. } => "create_pipeline_run",
            Command::StartPipelineRun { .. } => "start_pipeline_run",
            Command::RetryPipelineRun { .. } => "retry_pipeline_run",
            Command::RunRefused { .. } => "run_refused",
            Command::ResetContext { .. } => "reset_context",
            Command::PruneRuns { .. } => "prune_runs",
            Command::SetRunRetention { .. } => "set_run_retention",
            Command::UpdateJob { .. } => "update_job",
            Command::ScaleJob { .. } => "scale_job",
            Command::EndDeployment { .. } => "end_deployment",
            Command::PromoteDeployment { .. } => "promote_deployment",
            Command::CreateSchedule { .. } => "create_schedule",
            Command::SetScheduleEnabled { .. } => "set_schedule_enabled",
            Command::DeleteSchedule { .. } => "delete_schedule",
            Command::FireSchedule { .. } => "fire_schedule",
            Command::FireSchedulePlaced { .. } => "fire_schedule_placed",
            Command::CreateWebhook { .. } => "create_webhook",
            Command::DeleteWebhook { .. } => "delete_webhook",
            Command::WebhookAttempt { .. } => "webhook_attempt",
            Command::Import(_) => "import",
        }
    }
}

/// The fields of [`Command::CreateToken`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    pub name: String,
    pub kind: TokenKind,
    pub role: Role,
    /// The user it acts for, if any.
    pub user: Option<String>,
    /// The namespace it is bound to; `None` for the whole cluster. A token for a user
    /// bound to a namespace is bound to the same one.
    pub namespace: Option<Namespace>,
    /// The SHA-256 of its secret.
    pub hash: Vec<u8>,
    /// The secret's first characters, shown in lists.
    pub prefix: String,
    pub expires_at: Option<Timestamp>,
    pub at: Timestamp,
}

/// A plan: allocations to stop and allocations to place, for one evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub eval: EvalId,
    pub stop: Vec<StopAlloc>,
    pub place: Vec<NewAlloc>,
    pub at: Timestamp,
}

/// The fields of [`Command::AllocStatus`]: what an agent reported, checked and capped by
/// the gateway. `node` comes from the agent's certificate, never from its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocReport {
    pub alloc: AllocId,
    pub node: NodeId,
    pub client: ClientStatus,
    /// How many times the node restarted its tasks in place.
    pub restarts: u32,
    /// New events, oldest first; those already recorded (same time, kind and message) are
    /// skipped, so a resent report adds nothing twice.
    pub events: Vec<AllocEvent>,
    /// The host ports its containers got (docker tasks), replacing those recorded.
    #[serde(default)]
    pub ports: Vec<windflow_protocol::AllocPort>,
    pub at: Timestamp,
    /// What its health checks say.
    #[serde(default)]
    pub health: AllocHealth,
}

/// One placement of a plan; `apply` assigns its [`AllocId`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAlloc {
    pub job: JobId,
    pub namespace: Namespace,
    pub group: String,
    pub index: u32,
    pub node: NodeId,
    pub resources: Resources,
    /// The allocation it replaces, and why; `None` for a first placement.
    #[serde(default)]
    pub replaces: Option<Replacement>,
    /// The job version it runs, and the deployment that places it.
    #[serde(default)]
    pub job_version: u64,
    #[serde(default)]
    pub deployment: Option<DeploymentId>,
}

/// An allocation a plan stops, and why (said in its events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopAlloc {
    pub alloc: AllocId,
    pub reason: String,
}

/// What a placement replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    pub alloc: AllocId,
    pub kind: ReplaceKind,
}

/// Why an allocation is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplaceKind {
    /// It failed or was lost: the replacement counts one more reschedule, and the old
    /// one is told to stop at once (its node, if it comes back, stops the duplicate).
    Reschedule,
    /// Its node drains: the old one keeps running until the replacement runs.
    Migrate,
    /// It completed (a service is kept running): placed again, not counted.
    Renew,
}

/// What `apply` made of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanResult {
    /// The placements applied, in the plan's order.
    pub placed: Vec<AllocId>,
    pub rejected: Vec<Rejection>,
}

/// A placement `apply` refused: the node no longer had room, or no longer exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Its position in [`Plan::place`].
    pub index: u32,
    pub node: NodeId,
    pub reason: String,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Token(TokenView),
    User(UserView),
    Namespace(NamespaceInfo),
    Audit(AuditId),
    /// How many entries a prune removed.
    Pruned(u64),
    Node(Node),
    Job(Job),
    Run(Run),
    Evaluation(Evaluation),
    Plan(PlanResult),
    Allocation(Allocation),
    JoinToken(JoinTokenRecord),
    /// A batch's answers, one per command, in order.
    Batch(Vec<Response>),
    /// A backup replaced the state: how many keys it holds now.
    Restored {
        keys: u64,
    },
    /// Entries that carry no command (blank and membership entries).
    Nothing,
    /// The nodes a command changed.
    Nodes(Vec<Node>),
    Pipeline(Pipeline),
    PipelineRun(PipelineRun),
    Context(Context),
    RunRetention(RunRetention),
    /// A job after an update, and the deployment that rolls it out, if one started.
    JobUpdated {
        job: Job,
        deployment: Option<Deployment>,
    },
    Deployment(Deployment),
    // --- Schedules and webhooks (issue 7) ---
    Schedule(Schedule),
    Fire(ScheduleFire),
    Webhook(Webhook),
    Delivery(Delivery),
    /// What an import did, entry by entry.
    Imported(windflow_protocol::export::ImportOutcome),
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
    #[error("the join token was refused: {0}")]
    JoinTokenRefused(JoinTokenRefusal),
    /// A request that breaks a rule of the state (not a malformed one: those never get
    /// this far).
    #[error("{0}")]
    Refused(String),
}

/// Why a join token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JoinTokenRefusal {
    #[error("no such token (it was never issued, or it was mistyped)")]
    Unknown,
    #[error("token {0} was revoked")]
    Revoked(JoinTokenId),
    #[error("token {id} expired at {expired_at}")]
    Expired {
        id: JoinTokenId,
        expired_at: Timestamp,
    },
    #[error("token {id} is used up (it allowed {uses} use(s))")]
    UsedUp { id: JoinTokenId, uses: u32 },
    #[error("token {id} is a {is} token, not a {wanted} token")]
    WrongKind {
        id: JoinTokenId,
        is: JoinKind,
        wanted: JoinKind,
    },
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

/// What the store keeps of an API token: its view and the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub view: TokenView,
    pub hash: Vec<u8>,
}

/// What the store keeps of a user: its view and its argon2id password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub view: UserView,
    pub password_hash: String,
}

/// What the store keeps of a join token (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub id: JoinTokenId,
    pub kind: JoinKind,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// How many enrollments it allows; `None` for no limit.
    pub uses_allowed: Option<u32>,
    /// How many it has served.
    pub uses: u32,
    /// Who used it last (a server's name or an agent's hostname).
    pub last_used_by: Option<String>,
    pub revoked_at: Option<Timestamp>,
    /// Given to every node an agent token enrolls.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A certificate issued to a node, as the revocation list needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCert {
    pub node: NodeId,
    /// The certificate's serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    pub not_after: Timestamp,
    pub issued_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}
