//! Runs one allocation: each of its tasks as a long-running exec process, restarted in
//! place per the group's restart policy when it exits. The first task to fail past its
//! policy fails the allocation and stops the others; a stop request stops them all.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use windflow_protocol::messages::AllocAssignment;
use windflow_protocol::{JobType, RestartPolicy, TaskSpec};

use super::policy::{Decision, RestartTracker};
use crate::drivers::exec::{self, ProcessExit};

/// What a runner tells the allocation's keeper, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Started {
        task: String,
        pid: u32,
    },
    Exited {
        task: String,
        exit: ProcessExit,
    },
    /// Counted as a restart; `why` says how long and which attempt.
    Restarting {
        task: String,
        why: String,
    },
    /// The allocation failed: the runner has ended.
    Failed(String),
    /// Every task ended by itself with success (a batch allocation): the runner has ended.
    Complete,
    /// Stopped on request: the runner has ended.
    Stopped,
}

pub(crate) type Report = Arc<dyn Fn(Change) + Send + Sync>;

/// How a task's supervision ended.
enum TaskEnd {
    Complete,
    Failed(String),
    Stopped,
}

/// Runs the allocation until it ends by itself or `stop` is cancelled; processes still
/// running when this future is dropped are killed with their groups. Each task gets
/// `WINDFLOW_ALLOC_ID`, `WINDFLOW_ALLOC_INDEX`, `WINDFLOW_JOB_ID` and `WINDFLOW_GROUP`.
pub(crate) async fn run(
    assignment: AllocAssignment,
    grace: Duration,
    report: Report,
    stop: CancellationToken,
) {
    if assignment.tasks.is_empty() {
        report(Change::Failed(
            "the servers sent no tasks for this allocation (its job or group is gone)".into(),
        ));
        return;
    }
    // Cancelled by a stop request, or by the first task that fails.
    let tasks_stop = stop.child_token();
    let mut tasks = JoinSet::new();
    let a = &assignment.alloc;
    let env = [
        ("WINDFLOW_ALLOC_ID", a.id.to_string()),
        ("WINDFLOW_ALLOC_INDEX", a.index.to_string()),
        ("WINDFLOW_JOB_ID", a.job.to_string()),
        ("WINDFLOW_GROUP", a.group.clone()),
    ];
    for mut task in assignment.tasks {
        // Who it is, for the task itself (as Nomad's NOMAD_ALLOC_ID); the job's own env wins.
        for (k, v) in &env {
            task.env.entry((*k).to_owned()).or_insert_with(|| v.clone());
        }
        let span = tracing::info_span!("task", task = %task.name);
        tasks.spawn(
            supervise(
                task,
                assignment.restart,
                assignment.job_type,
                grace,
                report.clone(),
                tasks_stop.clone(),
            )
            .instrument(span),
        );
    }
    let mut failed = None;
    while let Some(end) = tasks.join_next().await {
        match end {
            Ok(TaskEnd::Failed(why)) if failed.is_none() => {
                failed = Some(why);
                tasks_stop.cancel();
            }
            Ok(_) => {}
            Err(e) if failed.is_none() => {
                failed = Some(format!("a task's supervisor failed: {e}"));
                tasks_stop.cancel();
            }
            Err(_) => {}
        }
    }
    report(match failed {
        Some(why) => Change::Failed(why),
        None if stop.is_cancelled() => Change::Stopped,
        None => Change::Complete,
    });
}

/// Runs one task, restarting it per the policy, until it completes (a batch task that
/// exits 0), fails past its policy, or is stopped.
async fn supervise(
    task: TaskSpec,
    policy: RestartPolicy,
    job_type: JobType,
    grace: Duration,
    report: Report,
    stop: CancellationToken,
) -> TaskEnd {
    let mut tracker = RestartTracker::new(policy);
    let name = task.name.clone();
    loop {
        let exit = match exec::spawn_process(&task) {
            Ok(mut process) => {
                tracing::info!(pid = process.pid(), "task started");
                report(Change::Started {
                    task: name.clone(),
                    pid: process.pid(),
                });
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => {
                        let exit = process.stop(grace).await;
                        tracing::info!(%exit, "task stopped");
                        return TaskEnd::Stopped;
                    }
                    exit = process.wait() => exit,
                }
            }
            Err(why) => ProcessExit::Error(why),
        };
        tracing::info!(%exit, "task exited");
        report(Change::Exited {
            task: name.clone(),
            exit: exit.clone(),
        });
        if job_type == JobType::Batch && exit.success() {
            return TaskEnd::Complete;
        }
        let p = policy;
        let (wait, why) = match tracker.on_exit(Instant::now()) {
            Decision::Restart(wait) => (
                wait,
                format!(
                    "task {name} restarts in {}ms (at most {} in {})",
                    wait.as_millis(),
                    p.attempts,
                    p.interval
                ),
            ),
            Decision::WaitInterval(wait) => (
                wait,
                format!(
                    "task {name} used its {} restarts in {}; restarts in {}ms",
                    p.attempts,
                    p.interval,
                    wait.as_millis()
                ),
            ),
            Decision::Fail => {
                return TaskEnd::Failed(format!(
                    "task {name} exited ({exit}) past its restart policy ({} restarts in {})",
                    p.attempts, p.interval
                ));
            }
        };
        report(Change::Restarting {
            task: name.clone(),
            why,
        });
        tokio::select! {
            _ = stop.cancelled() => return TaskEnd::Stopped,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
