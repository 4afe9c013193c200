//! Pipelines: named DAGs of jobs, their runs, and the rules that check a DAG.
//!
//! A pipeline's steps are jobs; a step starts once every step it depends on succeeded.
//! [`order`] checks a DAG (duplicate steps, unknown dependencies, cycles) and puts the
//! steps in an order where each comes after what it depends on; it is generic over the
//! step's key so the API checks names (and its errors name jobs as the user wrote them)
//! and `apply` checks IDs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, PipelineId, PipelineRunId, RunId};
use crate::namespace::Namespace;
use crate::time::Timestamp;

/// The most steps a pipeline may have.
pub const MAX_PIPELINE_STEPS: usize = 100;

/// What happens to the rest of a pipeline run when a step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// No further step starts; steps already running finish.
    #[default]
    Stop,
    /// Steps that do not depend on the failed one go on; its dependents are skipped.
    Continue,
}

impl FailurePolicy {
    pub fn as_str(&self) -> &'static str {
        match self {
            FailurePolicy::Stop => "stop",
            FailurePolicy::Continue => "continue",
        }
    }
}

impl std::str::FromStr for FailurePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stop" => Ok(FailurePolicy::Stop),
            "continue" => Ok(FailurePolicy::Continue),
            other => Err(format!("must be `stop` or `continue`, not `{other}`")),
        }
    }
}

/// One step: a job, and the steps (jobs of the same pipeline) it waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStep {
    pub job: JobId,
    #[serde(default)]
    pub depends_on: Vec<JobId>,
}

/// A pipeline as its owner wrote it; steps are kept in dependency order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineSpec {
    /// Unique within its namespace.
    pub name: String,
    #[serde(default)]
    pub namespace: Namespace,
    pub steps: Vec<PipelineStep>,
    #[serde(default)]
    pub on_failure: FailurePolicy,
}

/// A registered pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    pub id: PipelineId,
    pub spec: PipelineSpec,
    pub created_at: Timestamp,
}

/// Where a pipeline run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineRunStatus {
    /// Waits for its start time (`pipeline run --at`); the leader starts it then.
    Scheduled,
    Running,
    Succeeded,
    /// At least one step failed or was skipped (or the run was cancelled before it started).
    Failed,
}

impl PipelineRunStatus {
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            PipelineRunStatus::Succeeded | PipelineRunStatus::Failed
        )
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            PipelineRunStatus::Scheduled => "scheduled",
            PipelineRunStatus::Running => "running",
            PipelineRunStatus::Succeeded => "succeeded",
            PipelineRunStatus::Failed => "failed",
        }
    }
}

/// Where one step of a pipeline run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Waits for the steps it depends on.
    Waiting,
    /// Its job's run is queued or running.
    Running,
    Succeeded,
    /// Its run failed or timed out, or could not start.
    Failed,
    /// It will not run in this attempt; `reason` says why.
    Skipped,
}

impl StepStatus {
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded | StepStatus::Failed | StepStatus::Skipped
        )
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            StepStatus::Waiting => "waiting",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
        }
    }
}

/// One step of one pipeline run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepState {
    pub job: JobId,
    /// Copied from the pipeline when the run was made, so a run is self-contained.
    pub depends_on: Vec<JobId>,
    pub status: StepStatus,
    /// The job run of the current attempt.
    pub run: Option<RunId>,
    /// Why the step was skipped or failed without a run.
    pub reason: Option<String>,
    /// Runs of earlier attempts (before `pipeline retry`), oldest first.
    #[serde(default)]
    pub earlier_runs: Vec<RunId>,
}

/// One run of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineRun {
    pub id: PipelineRunId,
    pub pipeline: PipelineId,
    pub namespace: Namespace,
    pub status: PipelineRunStatus,
    pub on_failure: FailurePolicy,
    /// In the pipeline's dependency order.
    pub steps: Vec<StepState>,
    pub requested_at: Timestamp,
    /// When it is to start, for a run asked for a later time.
    pub start_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// 1, plus one per `pipeline retry`.
    pub attempts: u32,
}

/// Why a DAG of steps is refused; `K` names a step (a job name or ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DagError<K> {
    Empty,
    TooManySteps(usize),
    /// The same job is two steps.
    Duplicate(K),
    /// A step depends on a job that is no step of the pipeline.
    UnknownDependency {
        step: K,
        dependency: K,
    },
    /// The cycle, as a path that ends where it starts.
    Cycle(Vec<K>),
}

impl<K: fmt::Display> fmt::Display for DagError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DagError::Empty => write!(f, "a pipeline needs at least one step"),
            DagError::TooManySteps(n) => {
                write!(f, "{n} steps; a pipeline has at most {MAX_PIPELINE_STEPS}")
            }
            DagError::Duplicate(k) => write!(f, "job `{k}` is listed twice"),
            DagError::UnknownDependency { step, dependency } => write!(
                f,
                "step `{step}` depends on `{dependency}`, which is no step of this pipeline"
            ),
            DagError::Cycle(path) => {
                let path: Vec<String> = path.iter().map(|k| format!("`{k}`")).collect();
                write!(f, "the steps form a cycle: {}", path.join(" → "))
            }
        }
    }
}

/// Checks a DAG given as `(step, depends_on)` pairs and answers the steps' positions in
/// dependency order (each after all it depends on; otherwise as given). A step depending
/// on itself is a cycle of one.
pub fn order<K: Ord + Clone>(steps: &[(K, Vec<K>)]) -> Result<Vec<usize>, DagError<K>> {
    if steps.is_empty() {
        return Err(DagError::Empty);
    }
    if steps.len() > MAX_PIPELINE_STEPS {
        return Err(DagError::TooManySteps(steps.len()));
    }
    let mut index = BTreeMap::new();
    for (i, (k, _)) in steps.iter().enumerate() {
        if index.insert(k.clone(), i).is_some() {
            return Err(DagError::Duplicate(k.clone()));
        }
    }
    for (k, deps) in steps {
        if let Some(d) = deps.iter().find(|d| !index.contains_key(*d)) {
            return Err(DagError::UnknownDependency {
                step: k.clone(),
                dependency: d.clone(),
            });
        }
    }
    // Depth-first, in the given order: a step is placed once everything it depends on is.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; steps.len()];
    let mut out = Vec::with_capacity(steps.len());
    for start in 0..steps.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // An explicit stack of (step, next dependency to look at).
        let mut stack = vec![(start, 0usize)];
        marks[start] = Mark::OnPath;
        while let Some(&mut (at, ref mut next)) = stack.last_mut() {
            let deps = &steps[at].1;
            if *next < deps.len() {
                let d = index[&deps[*next]];
                *next += 1;
                match marks[d] {
                    Mark::Done => {}
                    Mark::New => {
                        marks[d] = Mark::OnPath;
                        stack.push((d, 0));
                    }
                    Mark::OnPath => {
                        // The cycle: `d` depends on the next on the stack, and so on
                        // down to `at`, which depends on `d`.
                        let from = stack.iter().position(|(s, _)| *s == d).unwrap_or(0);
                        let mut path: Vec<K> = stack[from..]
                            .iter()
                            .map(|(s, _)| steps[*s].0.clone())
                            .collect();
                        path.push(steps[d].0.clone());
                        return Err(DagError::Cycle(path));
                    }
                }
            } else {
                marks[at] = Mark::Done;
                out.push(at);
                stack.pop();
            }
        }
    }
    Ok(out)
}

/// What [`advance`] decided for one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepChange {
    /// Every step it depends on succeeded: start its job.
    Start(usize),
    /// It will not run; the reason names the step that stopped it.
    Skip(usize, String),
}

/// The next moves of a pipeline run: which waiting steps start and which are skipped.
/// `name` tells a job's name for the reasons. Skips cascade (a dependent of a skipped step
/// is skipped too) in one call, since steps are in dependency order.
pub fn advance(
    steps: &[StepState],
    policy: FailurePolicy,
    name: impl Fn(JobId) -> String,
) -> Vec<StepChange> {
    let mut status: BTreeMap<JobId, StepStatus> = steps.iter().map(|s| (s.job, s.status)).collect();
    let failed: BTreeSet<JobId> = steps
        .iter()
        .filter(|s| s.status == StepStatus::Failed)
        .map(|s| s.job)
        .collect();
    let mut changes = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if step.status != StepStatus::Waiting {
            continue;
        }
        if policy == FailurePolicy::Stop
            && let Some(f) = failed.iter().next()
        {
            changes.push(StepChange::Skip(
                i,
                format!(
                    "the pipeline stopped: `{}` failed (failure policy `stop`)",
                    name(*f)
                ),
            ));
            status.insert(step.job, StepStatus::Skipped);
            continue;
        }
        let blocked = step.depends_on.iter().find(|d| {
            matches!(
                status.get(*d),
                Some(StepStatus::Failed | StepStatus::Skipped)
            )
        });
        if let Some(d) = blocked {
            let why = if status.get(d) == Some(&StepStatus::Failed) {
                "failed"
            } else {
                "was skipped"
            };
            changes.push(StepChange::Skip(
                i,
                format!("depends on `{}`, which {why}", name(*d)),
            ));
            status.insert(step.job, StepStatus::Skipped);
            continue;
        }
        if step
            .depends_on
            .iter()
            .all(|d| status.get(d) == Some(&StepStatus::Succeeded))
        {
            changes.push(StepChange::Start(i));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(steps: &[(&'static str, &[&'static str])]) -> Vec<(&'static str, Vec<&'static str>)> {
        steps.iter().map(|(k, d)| (*k, d.to_vec())).collect()
    }

    #[test]
    fn order_puts_dependencies_first() {
        let steps = dag(&[("d", &["b", "c"]), ("b", &["a"]), ("c", &["a"]), ("a", &[])]);
        let order = order(&steps).unwrap();
        let names: Vec<_> = order.iter().map(|i| steps[*i].0).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
    }

    #[test]
    fn bad_dags_are_named() {
        assert_eq!(order::<&str>(&[]), Err(DagError::Empty));
        assert_eq!(
            order(&dag(&[("a", &[]), ("a", &[])])),
            Err(DagError::Duplicate("a"))
        );
        let e = order(&dag(&[("a", &["x"])])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "step `a` depends on `x`, which is no step of this pipeline"
        );
        let e = order(&dag(&[
            ("a", &["c"]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("d", &[]),
        ]))
        .unwrap_err();
        let DagError::Cycle(path) = &e else {
            panic!("{e}")
        };
        assert_eq!(path.first(), path.last());
        assert_eq!(path.len(), 4, "{e}");
        for k in ["a", "b", "c"] {
            assert!(path.contains(&k), "{e}");
        }
        assert!(!path.contains(&"d"));
        assert_eq!(
            order(&dag(&[("a", &["a"])])),
            Err(DagError::Cycle(vec!["a", "a"]))
        );
    }

    fn state(job: u64, deps: &[u64], status: StepStatus) -> StepState {
        StepState {
            job: JobId(job),
            depends_on: deps.iter().map(|d| JobId(*d)).collect(),
            status,
            run: None,
            reason: None,
            earlier_runs: Vec::new(),
        }
    }

    fn name(j: JobId) -> String {
        ["?", "A", "B", "C", "D"][j.0 as usize].to_owned()
    }

    #[test]
    fn a_step_starts_when_all_it_depends_on_succeeded() {
        use StepStatus::*;
        let steps = [
            state(1, &[], Succeeded),
            state(2, &[1], Waiting),
            state(3, &[1], Waiting),
            state(4, &[2, 3], Waiting),
        ];
        assert_eq!(
            advance(&steps, FailurePolicy::Stop, name),
            [StepChange::Start(1), StepChange::Start(2)]
        );
        let steps = [
            state(1, &[], Succeeded),
            state(2, &[1], Succeeded),
            state(3, &[1], Running),
            state(4, &[2, 3], Waiting),
        ];
        assert!(advance(&steps, FailurePolicy::Stop, name).is_empty());
    }

    #[test]
    fn continue_skips_only_dependents_of_a_failure() {
        use StepStatus::*;
        let steps = [
            state(1, &[], Succeeded),
            state(2, &[1], Failed),
            state(3, &[1], Waiting),
            state(4, &[2, 3], Waiting),
        ];
        assert_eq!(
            advance(&steps, FailurePolicy::Continue, name),
            [
                StepChange::Start(2),
                StepChange::Skip(3, "depends on `B`, which failed".into())
            ]
        );
        // A dependent of a skipped step is skipped in the same call.
        let chain = [
            state(1, &[], Failed),
            state(2, &[1], Waiting),
            state(3, &[2], Waiting),
        ];
        assert_eq!(
            advance(&chain, FailurePolicy::Continue, name),
            [
                StepChange::Skip(1, "depends on `A`, which failed".into()),
                StepChange::Skip(2, "depends on `B`, which was skipped".into())
            ]
        );
    }

    #[test]
    fn stop_skips_every_waiting_step() {
        use StepStatus::*;
        let steps = [
            state(1, &[], Succeeded),
            state(2, &[1], Failed),
            state(3, &[1], Waiting),
            state(4, &[2, 3], Waiting),
        ];
        let changes = advance(&steps, FailurePolicy::Stop, name);
        assert_eq!(changes.len(), 2);
        assert!(
            changes
                .iter()
                .all(|c| matches!(c, StepChange::Skip(_, why) if why.contains("`B` failed")))
        );
    }
}
