//! What the agent is doing: the runs it executes and the results it has not reported yet,
//! shared by the sessions and the watchers of running tasks. Each run executes under its
//! own supervisor process ([`drivers::exec`]); a run is recorded in the store before its
//! supervisor starts, and its record gives way to its result in one batch, so an agent
//! that starts again on the same data dir takes back exactly what the previous one left.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tracing::Instrument;
use windflow_protocol::messages::{AgentMessage, OutputChunk, RunTask, TaskFinished};
use windflow_protocol::{DriverConfig, DriverKind, RunId, Timestamp};

use crate::allocs::{Allocs, Supervision};
use crate::drivers::docker::{self, DockerDriver, RunOwner};
use crate::drivers::exec::{
    ExecDir, ExecResult, Progress, Recovered, Supervised, SupervisedHandle, SupervisorCommand,
};
use crate::logs::{LogPolicy, LogRoot, Served};
use crate::outbox::Outbox;
use crate::store::{RunRecord, Store};
use crate::{AgentError, drivers};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the agent is doing. What is here watches the supervisors; what the store holds lets
/// the next agent process watch them again.
pub(crate) struct Work {
    /// The watchers of running executions, by run.
    running: Mutex<HashMap<RunId, JoinHandle<()>>>,
    /// Results not yet acknowledged by a server.
    pub(crate) outbox: Outbox,
    /// A run has finished and its result is in the outbox.
    pub(crate) finished: Notify,
    /// Live output and attempt events from the drivers.
    pub(crate) events: mpsc::Sender<AgentMessage>,
    store: Store,
    supervisor: SupervisorCommand,
    /// `DATA_DIR/runs`: one directory per execution.
    runs_dir: PathBuf,
    /// The node's allocations (their updates wait there until acknowledged), taken back
    /// from the store when the agent starts.
    pub(crate) allocs: Arc<Allocs>,
    /// The docker driver, for runs and allocations alike.
    pub(crate) docker: Arc<DockerDriver>,
    /// What the servers' requests for logs and stats are served from.
    pub(crate) served: Arc<Served>,
}

impl Work {
    /// Opens the agent's store and takes back what the previous agent process left: runs
    /// still executing are watched again, runs that ended meanwhile are reported.
    pub(crate) fn open(
        data_dir: &Path,
        supervisor: SupervisorCommand,
        events: mpsc::Sender<AgentMessage>,
        kill_grace: std::time::Duration,
        log_policy: LogPolicy,
    ) -> Result<Arc<Work>, AgentError> {
        let store = Store::open(data_dir)?;
        let docker = Arc::new(DockerDriver::new(store.agent_id()?));
        let logs = LogRoot::new(data_dir, log_policy);
        let allocs = Allocs::open(
            &store,
            &data_dir.join("allocs"),
            Supervision {
                supervisor: supervisor.clone(),
                grace: kill_grace,
                docker: docker.clone(),
                logs: logs.clone(),
            },
        )?;
        let held = Arc::downgrade(&allocs);
        let live = held.clone();
        let served = Arc::new(Served {
            logs,
            allocs_dir: data_dir.join("allocs"),
            docker: docker.clone(),
            holds: Box::new(move |id| held.upgrade().is_some_and(|a| a.holds(id))),
            running: Box::new(move |id| live.upgrade().is_some_and(|a| a.is_running(id))),
        });
        let work = Arc::new(Work {
            running: Mutex::default(),
            outbox: Outbox::open(store.clone())?,
            finished: Notify::new(),
            events,
            store,
            supervisor,
            runs_dir: data_dir.join("runs"),
            allocs,
            docker,
            served,
        });
        work.recover()?;
        Ok(work)
    }

    fn recover(self: &Arc<Self>) -> Result<(), AgentError> {
        for record in self.store.runs()? {
            let run = record.run;
            let _span =
                tracing::info_span!("run", %run, job = %record.job, task = %record.task).entered();
            if self.outbox.contains(run) {
                self.store.remove_run(run)?;
                continue;
            }
            if record.driver == DriverKind::Docker {
                tracing::info!("finding the run's container again");
                let mut running = lock(&self.running);
                running.insert(run, self.watch_container(record, None));
                continue;
            }
            match Supervised::recover(&record.exec) {
                Recovered::Running(exec) => {
                    tracing::info!(
                        supervisor = exec.supervisor().pid,
                        "re-attached to the running task"
                    );
                    // Held across the spawn: the watcher's end removes the run from it.
                    let mut running = lock(&self.running);
                    running.insert(run, self.watch(record, exec));
                }
                Recovered::Ended(result) => {
                    tracing::info!(outcome = ?result.outcome, error = ?result.error, "the task ended while the agent was down");
                    self.complete(&record.exec.dir, result.into_finished(run));
                }
            }
        }
        // Directories no run refers to any more (an ack came just before a crash).
        let running = lock(&self.running);
        if let Ok(dirs) = std::fs::read_dir(&self.runs_dir) {
            for dir in dirs.flatten() {
                let name = dir.file_name();
                let known = name
                    .to_str()
                    .and_then(|n| n.parse::<RunId>().ok())
                    .is_some_and(|r| running.contains_key(&r) || self.outbox.contains(r));
                if !known {
                    let _ = ExecDir::new(dir.path()).remove();
                }
            }
        }
        if !running.is_empty() || self.outbox.len() > 0 {
            tracing::info!(
                running = running.len(),
                unacknowledged = self.outbox.len(),
                "took back the previous agent's work"
            );
        }
        Ok(())
    }

    /// Starts a task unless this agent already has the run, running or finished and
    /// unacknowledged (a server sends its running work again on every session, and a
    /// restarted agent has taken back its runs before its first session).
    pub(crate) fn start(self: &Arc<Self>, task: RunTask) {
        let mut running = lock(&self.running);
        if running.contains_key(&task.run) || self.outbox.contains(task.run) {
            tracing::debug!(run = %task.run, "already have this run");
            return;
        }
        let run = task.run;
        let _span =
            tracing::info_span!("run", %run, job = %task.job, task = %task.task.name).entered();
        let dir = ExecDir::new(self.runs_dir.join(run.to_string()));
        let mut record = RunRecord {
            run,
            job: task.job,
            task: task.task.name.clone(),
            driver: task.task.driver.kind(),
            timeout: task.task.timeout,
            exec: SupervisedHandle {
                dir: dir.path().to_owned(),
                supervisor: None,
                started_at: Timestamp::now(),
            },
        };
        // Recorded before it starts: a run that may be running is never started twice.
        if let Err(e) = self.store.put_run(&record) {
            let why = format!("the agent cannot record the run before starting it: {e}");
            tracing::error!(error = %e, "not starting the run");
            drop(running);
            self.complete(
                dir.path(),
                ExecResult::failed(0, Timestamp::now(), why).into_finished(run),
            );
            return;
        }
        let _ = dir.remove();
        if matches!(task.task.driver, DriverConfig::Docker(_)) {
            running.insert(run, self.watch_container(record, Some(task.task)));
            return;
        }
        let exec = match Supervised::spawn(&self.supervisor, dir, &drivers::exec::spec(task.task)) {
            Ok(exec) => exec,
            Err(e) => {
                let why = format!(
                    "cannot start the task's supervisor {}: {e}",
                    self.supervisor.program.display()
                );
                tracing::error!(error = %e, "not starting the run");
                drop(running);
                self.complete(
                    &record.exec.dir,
                    ExecResult::failed(0, Timestamp::now(), why).into_finished(run),
                );
                return;
            }
        };
        tracing::info!(supervisor = exec.supervisor().pid, "started");
        record.exec = exec.handle();
        if let Err(e) = self.store.update_run(&record) {
            // The supervisor writes its own identity into the run's directory too.
            tracing::warn!(error = %e, "cannot record the run's supervisor");
        }
        running.insert(run, self.watch(record, exec));
    }

    /// Follows an execution to its end, then reports it.
    fn watch(self: &Arc<Self>, record: RunRecord, exec: Supervised) -> JoinHandle<()> {
        let work = self.clone();
        let run = record.run;
        let events = self.events.clone();
        let span = tracing::info_span!("run", %run, job = %record.job, task = %record.task);
        tokio::spawn(
            async move {
                let result = exec
                    .wait(|progress| {
                        // Live output is dropped, not waited for, when the link is slow.
                        let _ = events.try_send(progress_message(run, progress));
                    })
                    .await;
                work.complete(&record.exec.dir, result.into_finished(run));
            }
            .instrument(span),
        )
    }

    /// Runs a docker task to its end (`task`), or follows its container found again after
    /// an agent restart (`None`), then reports it. Aborting this leaves the container to
    /// the engine, for the next agent process to find.
    fn watch_container(
        self: &Arc<Self>,
        record: RunRecord,
        task: Option<windflow_protocol::TaskSpec>,
    ) -> JoinHandle<()> {
        let work = self.clone();
        let run = record.run;
        let span = tracing::info_span!("run", %run, job = %record.job, task = %record.task);
        tokio::spawn(
            async move {
                let owner = RunOwner {
                    run,
                    job: record.job,
                    task: record.task.clone(),
                };
                let events = work.events.clone();
                let progress = move |p: Progress| {
                    let _ = events.try_send(progress_message(run, p));
                };
                let result = match task {
                    Some(task) => docker::run_to_end(&work.docker, owner, task, progress).await,
                    None => {
                        docker::resume_run(
                            &work.docker,
                            owner,
                            record.exec.started_at,
                            record.timeout,
                            progress,
                        )
                        .await
                    }
                };
                work.complete(&record.exec.dir, result.into_finished(run));
            }
            .instrument(span),
        )
    }

    /// A run has ended: its result goes to the outbox (and the store), its directory away.
    fn complete(&self, dir: &Path, finished: TaskFinished) {
        tracing::info!(
            outcome = ?finished.outcome,
            exit_code = ?finished.exit_code,
            attempts = finished.attempts,
            "finished"
        );
        let run = finished.run;
        // Into the outbox before leaving `running`, so a resent RunTask always finds the
        // run in one or the other.
        if self.outbox.insert(finished) {
            let _ = ExecDir::new(dir).remove();
        }
        lock(&self.running).remove(&run);
        self.finished.notify_one();
    }

    pub(crate) fn running(&self) -> Vec<RunId> {
        let mut runs: Vec<RunId> = lock(&self.running).keys().copied().collect();
        runs.sort();
        runs
    }

    /// Stops watching: the tasks keep running under their supervisors, and the next agent
    /// process on this data dir takes them back. Returns the watchers, to wait for.
    pub(crate) fn stop_all(&self) -> Vec<JoinHandle<()>> {
        lock(&self.running)
            .drain()
            .map(|(run, watcher)| {
                tracing::info!(%run, "leaving the run to its supervisor: the agent is stopping");
                watcher.abort();
                watcher
            })
            .collect()
    }
}

/// What a run's progress says to the servers.
fn progress_message(run: RunId, progress: Progress) -> AgentMessage {
    match progress {
        Progress::AttemptStarted { attempt } => AgentMessage::AttemptStarted {
            run,
            attempt,
            at: Timestamp::now(),
        },
        Progress::Output {
            attempt,
            stream,
            data,
        } => AgentMessage::Output(OutputChunk {
            run,
            attempt,
            stream,
            data,
        }),
    }
}
