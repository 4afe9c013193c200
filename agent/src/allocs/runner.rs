//! Runs one allocation: each of its tasks as a long-running process under its own
//! supervisor (so it outlives the agent), restarted in place per the group's restart
//! policy when it exits. The first task to fail past its policy fails the allocation and
//! stops the others; a stop request stops them all. After an agent restart a runner
//! resumes from the tasks' stored supervisor handles: a task still running is re-attached,
//! one that ended meanwhile is handled as if it had just exited.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use windflow_protocol::messages::AllocAssignment;
use windflow_protocol::{DriverConfig, JobType, RestartPolicy, TaskSpec, Timestamp};

use super::container::ContainerTask;
use super::policy::{Decision, RestartTracker, RestartWindow};
use crate::drivers::docker::{LABEL_ALLOC, Owner};
use crate::drivers::exec::{
    self, ExecDir, ProcessExit, Recovered, Supervised, SupervisedHandle, SupervisorCommand,
    read_value,
};
use crate::process::ProcessIdentity;

/// How long a new supervisor may take to start the task before its start goes unreported.
const ANNOUNCE_WITHIN: Duration = Duration::from_secs(5);

/// What a runner starts from after an agent restart, by task name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resume {
    pub handles: BTreeMap<String, SupervisedHandle>,
    pub windows: BTreeMap<String, RestartWindow>,
    /// The health last judged, which the checks go on from.
    pub health: windflow_protocol::HealthStatus,
}

impl Resume {
    pub(crate) fn is_empty(&self) -> bool {
        self.handles.is_empty() && self.windows.is_empty()
    }
}

/// How this agent runs allocations' tasks.
#[derive(Debug, Clone)]
pub(crate) struct Supervision {
    pub supervisor: SupervisorCommand,
    /// Between SIGTERM and SIGKILL when a task is stopped.
    pub grace: Duration,
    /// Docker tasks run as containers of this engine.
    pub docker: Arc<crate::drivers::docker::DockerDriver>,
    /// Where exec tasks' supervisors keep their output for people.
    pub logs: crate::logs::LogRoot,
}

/// What a runner tells the allocation's keeper, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Started {
        task: String,
        /// What runs it, for people: `pid 123` (its process group's leader) or
        /// `container 1a2b3c4d5e6f`.
        what: String,
    },
    /// The host ports a task's container got now (replacing the task's earlier ones).
    Ports {
        task: String,
        ports: Vec<windflow_protocol::AllocPort>,
    },
    /// Something worth telling about a task on its way to start (an image pull's steps).
    Note {
        kind: windflow_protocol::AllocEventKind,
        message: String,
    },
    /// A task was found still running after an agent restart.
    Reattached,
    /// A task's supervisor, to keep for finding it again after an agent restart.
    Supervised {
        task: String,
        handle: SupervisedHandle,
    },
    Exited {
        task: String,
        exit: ProcessExit,
    },
    /// Counted as a restart; `why` says how long and which attempt.
    Restarting {
        task: String,
        why: String,
        /// The task's restart window now, to keep.
        window: Option<RestartWindow>,
    },
    /// The allocation failed: the runner has ended.
    Failed(String),
    /// Every task ended by itself with success (a batch allocation): the runner has ended.
    Complete,
    /// Stopped on request: the runner has ended.
    Stopped,
    /// Its health checks' verdict changed.
    Health(windflow_protocol::AllocHealth),
}

pub(crate) type Report = Arc<dyn Fn(Change) + Send + Sync>;

/// How a task's supervision ended.
enum TaskEnd {
    Complete,
    Failed(String),
    Stopped,
}

/// Runs the allocation until it ends by itself or `stop` is cancelled. Dropping this
/// future leaves its tasks running under their supervisors (the agent is stopping); the
/// next runner finds them again through the handles in `resume`, and goes on with their
/// restart windows. Each task runs in
/// `dir/task-<n>` and gets `WINDFLOW_ALLOC_ID`, `WINDFLOW_ALLOC_INDEX`, `WINDFLOW_JOB_ID`
/// and `WINDFLOW_GROUP`.
pub(crate) async fn run(
    assignment: AllocAssignment,
    how: Arc<Supervision>,
    dir: PathBuf,
    mut resume: Resume,
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
    let alloc_id = a.id;
    let has_containers = assignment
        .tasks
        .iter()
        .any(|t| matches!(t.driver, DriverConfig::Docker(_)));
    let env = [
        ("WINDFLOW_ALLOC_ID", a.id.to_string()),
        ("WINDFLOW_ALLOC_INDEX", a.index.to_string()),
        ("WINDFLOW_JOB_ID", a.job.to_string()),
        ("WINDFLOW_GROUP", a.group.clone()),
    ];
    // The stack networks its containers join, to remove once they are gone.
    let mut networks: Vec<String> = assignment
        .tasks
        .iter()
        .filter_map(|t| match &t.driver {
            DriverConfig::Docker(d) => d.network.clone(),
            DriverConfig::Exec(_) => None,
        })
        .collect();
    networks.dedup();
    let mut health = None;
    for (n, mut task) in assignment.tasks.into_iter().enumerate() {
        // Who it is, for the task itself (as Nomad's NOMAD_ALLOC_ID); the job's own env wins.
        for (k, v) in &env {
            task.env.entry((*k).to_owned()).or_insert_with(|| v.clone());
        }
        // A service is judged by its checks, run with its first task's env and workdir.
        if n == 0 && assignment.job_type == JobType::Service {
            let workdir = match &task.driver {
                windflow_protocol::DriverConfig::Exec(c) => c.workdir.as_ref().map(PathBuf::from),
                // A container's workdir is inside it; its checks run on the node.
                windflow_protocol::DriverConfig::Docker(_) => None,
            };
            let target = super::health::Target {
                checks: assignment.checks.clone(),
                update: assignment.update,
                judged: resume.health,
                env: task.env.clone(),
                workdir,
                containers: has_containers.then(|| (how.docker.clone(), a.id)),
            };
            let watch = super::health::watch(target, report.clone(), tasks_stop.clone());
            health = Some(tokio::spawn(
                watch.instrument(tracing::info_span!("health")),
            ));
        }
        let span = tracing::info_span!("task", task = %task.name);
        let window = resume.windows.remove(&task.name);
        if let DriverConfig::Docker(cfg) = task.driver.clone() {
            let t = ContainerTask {
                owner: Owner::Alloc {
                    alloc: a.id,
                    job: a.job,
                    task: task.name.clone(),
                },
                cfg,
                spec: task,
                how: how.clone(),
                report: report.clone(),
            };
            tasks.spawn(
                supervise(
                    Driven::Docker(t),
                    None,
                    window,
                    assignment.restart,
                    assignment.job_type,
                    tasks_stop.clone(),
                )
                .instrument(span),
            );
            continue;
        }
        let exec_dir = ExecDir::new(dir.join(format!("task-{n}")));
        // A handle lost to a crash right after its supervisor started: the directory
        // names its supervisor too.
        let found = resume.handles.remove(&task.name).or_else(|| {
            exec_dir.path().exists().then(|| SupervisedHandle {
                dir: exec_dir.path().to_owned(),
                supervisor: None,
                started_at: Timestamp::now(),
            })
        });
        let t = Task {
            alloc: alloc_id,
            spec: task,
            dir: exec_dir,
            how: how.clone(),
            report: report.clone(),
        };
        tasks.spawn(
            supervise(
                Driven::Exec(t),
                found,
                window,
                assignment.restart,
                assignment.job_type,
                tasks_stop.clone(),
            )
            .instrument(span),
        );
    }
    // Dropped with the runner (the agent stopping), or stopped with the tasks.
    let _health = health.map(AbortOnDrop);
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
    // Ended for good (not detached: that drops this future): its containers go too.
    if has_containers {
        let mine = [(LABEL_ALLOC, alloc_id.to_string())];
        if let Err(e) = how.docker.remove_all(&mine).await {
            tracing::warn!(error = %e, "cannot remove the allocation's containers");
        }
        for network in &networks {
            how.docker.remove_network_if_unused(network).await;
        }
    }
    report(match failed {
        Some(why) => Change::Failed(why),
        None if stop.is_cancelled() => Change::Stopped,
        None => Change::Complete,
    });
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One task of the allocation and how to run it.
struct Task {
    alloc: windflow_protocol::AllocId,
    spec: TaskSpec,
    dir: ExecDir,
    how: Arc<Supervision>,
    report: Report,
}

impl Task {
    /// Starts the task under a new supervisor, in a fresh directory.
    fn start(&self) -> Result<Supervised, ProcessExit> {
        let name = &self.spec.name;
        let _ = self.dir.remove();
        let logs = self.how.logs.target(self.alloc, name);
        let spec = exec::service_spec(self.spec.clone(), self.how.grace, Some(logs));
        let exec =
            Supervised::spawn(&self.how.supervisor, self.dir.clone(), &spec).map_err(|e| {
                ProcessExit::Error(format!(
                    "cannot start the task's supervisor {}: {e}",
                    self.how.supervisor.program.display()
                ))
            })?;
        tracing::info!(supervisor = exec.supervisor().pid, "task started");
        (self.report)(Change::Supervised {
            task: name.clone(),
            handle: exec.handle(),
        });
        Ok(exec)
    }

    /// Reports the task started once its supervisor has started its process (whose pid,
    /// the process group's, the event names). A supervisor that ends first has its exit
    /// reported instead, by [`follow`].
    async fn announce(&self, exec: &Supervised) {
        let deadline = Instant::now() + ANNOUNCE_WITHIN;
        loop {
            if let Ok(Some(leader)) = read_value::<ProcessIdentity>(&self.dir.group(1)) {
                (self.report)(Change::Started {
                    task: self.spec.name.clone(),
                    what: format!("pid {}", leader.pid),
                });
                return;
            }
            if self.dir.result().exists()
                || !exec.supervisor().is_alive()
                || Instant::now() >= deadline
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Finds the task again after an agent restart: running (re-attached), or ended.
    fn recover(&self, handle: &SupervisedHandle) -> Result<Supervised, ProcessExit> {
        match Supervised::recover(handle) {
            Recovered::Running(exec) => {
                tracing::info!(
                    supervisor = exec.supervisor().pid,
                    "re-attached to the running task"
                );
                (self.report)(Change::Reattached);
                Ok(exec)
            }
            Recovered::Ended(result) => {
                tracing::info!(error = ?result.error, "the task ended while the agent was down");
                Err(ProcessExit::from(&result))
            }
        }
    }
}

impl Task {
    /// Runs the task once (re-attaching to `found` when given): how it exited, or `None`
    /// when it was stopped.
    async fn once(
        &self,
        found: Option<SupervisedHandle>,
        stop: &CancellationToken,
    ) -> Option<ProcessExit> {
        let exec = match found {
            Some(handle) => self.recover(&handle),
            None if stop.is_cancelled() => return None,
            None => match self.start() {
                Ok(exec) => {
                    self.announce(&exec).await;
                    Ok(exec)
                }
                Err(exit) => Err(exit),
            },
        };
        match exec {
            Ok(exec) => match follow(exec, stop).await {
                Ended::Stopped => None,
                Ended::Exited(exit) => Some(exit),
            },
            Err(exit) => Some(exit),
        }
    }
}

/// A task as its driver runs it.
enum Driven {
    Exec(Task),
    Docker(ContainerTask),
}

/// How one task's current process ended.
enum Ended {
    Exited(ProcessExit),
    Stopped,
}

/// Follows a task's supervisor to its end, or stops it (SIGTERM to the supervisor, which
/// stops the task's group with its grace) when `stop` is cancelled.
async fn follow(exec: Supervised, stop: &CancellationToken) -> Ended {
    let supervisor = exec.supervisor();
    let wait = exec.wait(|_| {});
    tokio::pin!(wait);
    tokio::select! {
        biased;
        _ = stop.cancelled() => {
            supervisor.signal(Signal::SIGTERM);
            let result = wait.await;
            tracing::info!(error = ?result.error, "task stopped");
            Ended::Stopped
        }
        result = &mut wait => Ended::Exited(ProcessExit::from(&result)),
    }
}

/// Runs one task, restarting it per the policy, until it completes (a batch task that
/// exits 0), fails past its policy, or is stopped. It starts by re-attaching to `found`
/// when the previous agent left one.
async fn supervise(
    task: Driven,
    mut found: Option<SupervisedHandle>,
    window: Option<RestartWindow>,
    policy: RestartPolicy,
    job_type: JobType,
    stop: CancellationToken,
) -> TaskEnd {
    let mut tracker = RestartTracker::resume(policy, window);
    let (name, report) = match &task {
        Driven::Exec(t) => (t.spec.name.clone(), t.report.clone()),
        Driven::Docker(t) => (t.spec.name.clone(), t.report.clone()),
    };
    let mut first = true;
    loop {
        let exit = match &task {
            Driven::Exec(t) => t.once(found.take(), &stop).await,
            Driven::Docker(t) => t.once(std::mem::take(&mut first), &stop).await,
        };
        let Some(exit) = exit else {
            return TaskEnd::Stopped;
        };
        tracing::info!(%exit, "task exited");
        report(Change::Exited {
            task: name.clone(),
            exit: exit.clone(),
        });
        if job_type == JobType::Batch && exit.success() {
            return TaskEnd::Complete;
        }
        if stop.is_cancelled() {
            return TaskEnd::Stopped;
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
            window: tracker.window(),
        });
        tokio::select! {
            _ = stop.cancelled() => return TaskEnd::Stopped,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
