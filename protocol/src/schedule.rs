//! Schedules: named cron expressions in an IANA time zone that launch jobs (and, later,
//! pipelines) together, and the record of each fire.
//!
//! The cron text and the zone are kept as given; the servers parse them (the protocol
//! crate stays free of calendar code). A fire is identified by its due time.

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, PipelineId, PipelineRunId, RunId, ScheduleId};
use crate::namespace::Namespace;
use crate::time::Timestamp;

/// What a schedule launches at each fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleTarget {
    Job(JobId),
    Pipeline(PipelineId),
}

impl std::fmt::Display for ScheduleTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScheduleTarget::Job(j) => j.fmt(f),
            ScheduleTarget::Pipeline(p) => p.fmt(f),
        }
    }
}

/// What a fire does while the previous fire's runs have not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Start the new runs anyway.
    #[default]
    Allow,
    /// Record the fire as skipped, start nothing.
    Forbid,
    /// Fail the previous fire's runs that are still pending (never dispatched), then start
    /// the new ones. Runs already running on an agent are left to finish: the agent
    /// protocol has no way to stop a batch run.
    Replace,
}

/// What happens to the due times missed while no leader could fire them (downtime, a
/// leader change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Fire only the due times found within the on-time grace; older ones are skipped.
    #[default]
    Skip,
    /// Fire once, for the latest missed due time; the others are counted as missed.
    RunOnce,
    /// Fire every missed due time, oldest first.
    RunAll,
}

/// What a schedule is, as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub name: String,
    #[serde(default)]
    pub namespace: Namespace,
    /// 5 fields (minute first), 6 fields (second first), or an alias such as `@daily`.
    pub cron: String,
    /// An IANA zone name such as `Europe/Paris`; the cron fields are read in it.
    pub timezone: String,
    pub targets: Vec<ScheduleTarget>,
    pub overlap: OverlapPolicy,
    pub catch_up: CatchUp,
}

/// A schedule and where its fires stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: ScheduleId,
    pub spec: ScheduleSpec,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Due times count from after this instant: the creation, or the last enabling (due
    /// times while disabled are not caught up).
    pub fires_after: Timestamp,
    /// The due time of the last recorded fire: a fire is refused unless after it.
    pub last_due: Option<Timestamp>,
    /// The runs the last fire started, which the overlap policy looks at.
    pub last_runs: Vec<RunId>,
    /// How many fires were recorded (fired or skipped for overlap).
    pub fires: u64,
}

impl Schedule {
    /// The instant after which the next due time is looked for.
    pub fn next_after(&self) -> Timestamp {
        self.last_due
            .map_or(self.fires_after, |d| d.max(self.fires_after))
    }
}

/// What one target of a fire got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetLaunch {
    pub target: ScheduleTarget,
    /// The job run a job target started.
    pub run: Option<RunId>,
    /// The pipeline run a pipeline target started.
    #[serde(default)]
    pub pipeline_run: Option<PipelineRunId>,
    /// Why nothing was started for it (a deleted job or pipeline, a service job).
    pub error: Option<String>,
}

/// How a fire went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FireOutcome {
    /// The targets were launched.
    Fired,
    /// `forbid`: the previous fire's runs were still going; nothing was started.
    SkippedOverlap { running: Vec<RunId> },
}

/// The record of one fire of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleFire {
    pub schedule: ScheduleId,
    /// The fire's number within its schedule, from 1.
    pub seq: u64,
    /// The due time it is the fire of.
    pub due: Timestamp,
    /// When the leader recorded it.
    pub at: Timestamp,
    pub outcome: FireOutcome,
    pub launches: Vec<TargetLaunch>,
    /// `replace`: the previous fire's pending runs that this fire failed.
    pub replaced: Vec<RunId>,
    /// Due times before this one that the catch-up policy left out.
    pub missed: u32,
}

/// How many fires a schedule keeps in its log (the oldest are dropped).
pub const FIRE_LOG_MAX: u64 = 500;
