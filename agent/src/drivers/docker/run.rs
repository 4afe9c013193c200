//! A batch run of a docker task: each attempt is a container run to its exit (killed at
//! the task's timeout), its output followed live and kept for the result, then removed;
//! failed attempts are retried per the task's retry policy, as the exec driver does.
//!
//! The containers outlive the agent. A restarted agent re-attaches to the run's latest
//! attempt by its `windflow.run` label ([`resume`]) and reports how that attempt ends; it
//! starts no further attempt (the task, with its secrets, is not kept on the node).

use std::time::{Duration, Instant};

use windflow_protocol::{
    CONTEXT_MAX_BYTES, DockerConfig, DriverConfig, HumanDuration, JobId, RunId, RunOutcome,
    TaskSpec, Timestamp,
};

use super::logs::Captured;
use super::{Container, ContainerExit, DockerDriver, DockerError, LABEL_ATTEMPT, Owner};
use crate::drivers::exec::{ExecResult, OUTPUT_FILE_CAP, Progress};

/// Whose run it is.
#[derive(Debug, Clone)]
pub struct RunOwner {
    pub run: RunId,
    pub job: JobId,
    pub task: String,
}

impl RunOwner {
    fn attempt(&self, attempt: u32) -> Owner {
        Owner::Run {
            run: self.run,
            job: self.job,
            task: self.task.clone(),
            attempt,
        }
    }
}

/// How one attempt ended.
struct Attempt {
    outcome: RunOutcome,
    exit_code: Option<i32>,
    captured: Captured,
    error: Option<String>,
}

impl Attempt {
    fn failed(e: DockerError) -> Attempt {
        Attempt {
            outcome: RunOutcome::Failed,
            exit_code: None,
            captured: Captured::default(),
            error: Some(e.to_string()),
        }
    }

    fn of_exit(exit: ContainerExit, captured: Captured) -> Attempt {
        let code = i32::try_from(exit.code).ok();
        let error = if exit.oom_killed {
            Some("the container ran out of memory (its task's memory_mb) and was killed".into())
        } else {
            exit.error
        };
        Attempt {
            outcome: if exit.code == 0 && error.is_none() {
                RunOutcome::Succeeded
            } else {
                RunOutcome::Failed
            },
            exit_code: code,
            captured,
            error,
        }
    }
}

/// Runs `task` (a docker task) to its end: its attempts, their retries and timeouts.
pub async fn run_to_end(
    driver: &DockerDriver,
    owner: RunOwner,
    task: TaskSpec,
    mut progress: impl FnMut(Progress),
) -> ExecResult {
    let started_at = Timestamp::now();
    let began = Instant::now();
    let DriverConfig::Docker(cfg) = &task.driver else {
        return ExecResult::failed(0, started_at, "not a docker task".into());
    };
    let attempts = task.retry.max_retries.saturating_add(1);
    let mut last = None;
    let mut made = 0;
    for attempt in 1..=attempts {
        tokio::time::sleep(task.retry.delay_before(attempt)).await;
        made = attempt;
        progress(Progress::AttemptStarted { attempt });
        let a = run_attempt(driver, &owner, attempt, &task, cfg, &mut progress).await;
        let done = a.outcome == RunOutcome::Succeeded;
        last = Some(a);
        if done {
            break;
        }
    }
    let a = last.unwrap_or_else(|| Attempt::failed(DockerError::Unreachable("no attempt".into())));
    result(a, made, started_at, began.elapsed())
}

fn result(a: Attempt, attempts: u32, started_at: Timestamp, took: Duration) -> ExecResult {
    ExecResult {
        outcome: a.outcome,
        exit_code: a.exit_code,
        attempts,
        started_at,
        duration: HumanDuration(took),
        stdout: a.captured.stdout,
        stdout_truncated: a.captured.stdout_truncated,
        stderr_tail: a.captured.stderr_tail,
        error: a.error,
    }
}

async fn run_attempt(
    driver: &DockerDriver,
    owner: &RunOwner,
    attempt: u32,
    task: &TaskSpec,
    cfg: &DockerConfig,
    progress: &mut impl FnMut(Progress),
) -> Attempt {
    let image = driver
        .ensure_image(&cfg.image, |step| tracing::info!(%step, "image"))
        .await;
    if let Err(e) = image {
        return Attempt::failed(e);
    }
    let who = owner.attempt(attempt);
    let container = match driver.create(task, cfg, &task.env, &who).await {
        Ok(c) => c,
        Err(e) => return Attempt::failed(e),
    };
    if let Err(e) = driver.start(&container).await {
        let _ = driver.remove(&container.id).await;
        return Attempt::failed(e);
    }
    tracing::info!(
        container = container.short_id(),
        attempt,
        "container started"
    );
    let a = follow(driver, &container, attempt, task.timeout, progress).await;
    if let Err(e) = driver.remove(&container.id).await {
        tracing::warn!(error = %e, "cannot remove the run's container");
    }
    a
}

/// Follows a started attempt's container to its exit (or its timeout: then it is killed).
async fn follow(
    driver: &DockerDriver,
    c: &Container,
    attempt: u32,
    timeout: Option<HumanDuration>,
    progress: &mut impl FnMut(Progress),
) -> Attempt {
    let run = async {
        let captured = driver
            .follow_output(c, CONTEXT_MAX_BYTES, OUTPUT_FILE_CAP, |stream, data| {
                progress(Progress::Output {
                    attempt,
                    stream,
                    data,
                })
            })
            .await?;
        let exit = driver.wait(c).await?;
        Ok::<_, DockerError>(Attempt::of_exit(exit, captured))
    };
    let limit = timeout.map_or(Duration::MAX, |t| t.0);
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => Attempt::failed(e),
        Err(_) => {
            if let Err(e) = driver.kill(c).await {
                tracing::warn!(error = %e, "cannot kill the timed-out container");
            }
            Attempt {
                outcome: RunOutcome::TimedOut,
                exit_code: None,
                captured: Captured::default(),
                error: Some(format!("timed out after {}", HumanDuration(limit))),
            }
        }
    }
}

/// After an agent restart: the run's latest attempt, followed to its end if it still runs
/// (its timeout counted from when the agent found it again), or its result if it ended.
pub async fn resume(
    driver: &DockerDriver,
    owner: RunOwner,
    started_at: Timestamp,
    timeout: Option<HumanDuration>,
    mut progress: impl FnMut(Progress),
) -> ExecResult {
    let began = Instant::now();
    let selector = owner.attempt(0).selector();
    let found = match driver.find(&selector).await {
        Ok(found) => found,
        Err(e) => return ExecResult::failed(0, started_at, e.to_string()),
    };
    let Some(latest) = found.into_iter().next() else {
        return ExecResult::failed(
            0,
            started_at,
            "the agent restarted before the run's container was created".into(),
        );
    };
    let attempt = latest
        .labels
        .get(LABEL_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    tracing::info!(
        container = latest.container.short_id(),
        attempt,
        "re-attached to the run's container"
    );
    let c = latest.container;
    let a = match latest.exit {
        None => {
            // Created but never started (the agent stopped in between) is started now.
            if let Err(e) = driver.start(&c).await {
                tracing::debug!(error = %e, "start on re-attach");
            }
            follow(driver, &c, attempt, timeout, &mut progress).await
        }
        Some(exit) => {
            let captured = driver
                .follow_output(&c, CONTEXT_MAX_BYTES, 0, |_, _| {})
                .await
                .unwrap_or_default();
            Attempt::of_exit(exit, captured)
        }
    };
    if let Err(e) = driver.remove(&c.id).await {
        tracing::warn!(error = %e, "cannot remove the run's container");
    }
    let mut r = result(a, attempt, started_at, began.elapsed());
    if r.outcome == RunOutcome::Failed && r.error.is_none() && r.exit_code.is_none() {
        r.error = Some("the container ended without an exit code".into());
    }
    r
}
