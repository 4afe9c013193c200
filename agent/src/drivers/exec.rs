//! The exec driver: `sh -c COMMAND` in the task's working directory and environment, in a
//! process group of its own so a timeout kills everything it started; retried with backoff;
//! stdout and stderr streamed as they come and captured (stdout capped, stderr's tail).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tracing::Instrument;
use windflow_protocol::messages::{AgentMessage, OutputChunk, OutputStream, TaskFinished};
use windflow_protocol::{
    CONTEXT_MAX_BYTES, DriverConfig, ExecConfig, HumanDuration, RunId, RunOutcome,
    STDERR_TAIL_BYTES, TaskSpec, Timestamp,
};

/// The most bytes read from a pipe at once (and so the largest output chunk).
const READ_CHUNK: usize = 64 * 1024;
/// After the process group is killed, how long its pipes may stay open (held by something
/// that left the group) before the output readers are abandoned.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Runs an exec task with its retries. Live output goes to `output` as it is read (dropped,
/// not waited for, when the channel is full); the result of the last attempt is returned.
pub async fn run_exec(
    run: RunId,
    task: &TaskSpec,
    output: mpsc::Sender<AgentMessage>,
) -> TaskFinished {
    run_exec_capped(run, task, output, CONTEXT_MAX_BYTES).await
}

pub(crate) async fn run_exec_capped(
    run: RunId,
    task: &TaskSpec,
    output: mpsc::Sender<AgentMessage>,
    stdout_cap: usize,
) -> TaskFinished {
    let DriverConfig::Exec(cfg) = &task.driver;
    let started_at = Timestamp::now();
    let clock = Instant::now();
    let finish = |attempts: u32, a: Attempt| TaskFinished {
        run,
        outcome: a.outcome,
        exit_code: a.exit_code,
        attempts,
        started_at,
        duration: HumanDuration(clock.elapsed()),
        stdout: a.stdout,
        stdout_truncated: a.stdout_truncated,
        stderr_tail: a.stderr_tail,
        error: a.error,
    };
    // A missing directory is a mistake in the job, not a passing failure: no retries.
    if let Some(dir) = &cfg.workdir {
        let problem = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some(format!("workdir `{dir}` is not a directory")),
            Err(_) => Some(format!("workdir `{dir}` does not exist")),
        };
        if let Some(why) = problem {
            return finish(1, Attempt::failed(why));
        }
    }
    let attempts = task.retry.max_retries.saturating_add(1);
    let mut last = Attempt::failed("no attempt was made".into());
    for attempt in 1..=attempts {
        let delay = task.retry.delay_before(attempt);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let _ = output.try_send(AgentMessage::AttemptStarted {
            run,
            attempt,
            at: Timestamp::now(),
        });
        let span = tracing::info_span!("exec", %run, attempt);
        last = run_attempt(
            run,
            attempt,
            cfg,
            &task.env,
            task.timeout,
            &output,
            stdout_cap,
        )
        .instrument(span)
        .await;
        tracing::info!(%run, attempt, outcome = ?last.outcome, exit_code = ?last.exit_code, "attempt ended");
        if last.outcome == RunOutcome::Succeeded {
            return finish(attempt, last);
        }
    }
    finish(attempts, last)
}

/// The result of one attempt.
struct Attempt {
    outcome: RunOutcome,
    exit_code: Option<i32>,
    stdout: Vec<u8>,
    stdout_truncated: bool,
    stderr_tail: Vec<u8>,
    error: Option<String>,
}

impl Attempt {
    fn failed(why: String) -> Self {
        Attempt {
            outcome: RunOutcome::Failed,
            exit_code: None,
            stdout: Vec::new(),
            stdout_truncated: false,
            stderr_tail: Vec::new(),
            error: Some(why),
        }
    }
}

fn kill_group(pgid: Option<Pid>) {
    if let Some(pgid) = pgid {
        // ESRCH: the group is already gone, which is what we want.
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

/// Kills an attempt's process group when dropped, so an attempt abandoned midway (the agent
/// stopping, the run aborted) leaves nothing behind. Disarmed once the group has been
/// killed and its leader reaped.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0.take());
    }
}

/// How a signal is called, for error messages: `SIGKILL`, or its number when unknown.
fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_owned())
}

/// Waits for a pipe reader, giving up after [`DRAIN_GRACE`].
async fn drained(pump: tokio::task::JoinHandle<(Vec<u8>, bool)>) -> (Vec<u8>, bool) {
    let abort = pump.abort_handle();
    match tokio::time::timeout(DRAIN_GRACE, pump).await {
        Ok(kept) => kept.unwrap_or_default(),
        Err(_) => {
            tracing::warn!("output pipe still open after the process group was killed");
            abort.abort();
            (Vec::new(), true)
        }
    }
}

async fn run_attempt(
    run: RunId,
    attempt: u32,
    cfg: &ExecConfig,
    env: &BTreeMap<String, String>,
    timeout: Option<HumanDuration>,
    output: &mpsc::Sender<AgentMessage>,
    stdout_cap: usize,
) -> Attempt {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&cfg.command)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &cfg.workdir {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Attempt::failed(format!("cannot start `sh -c`: {e}")),
    };
    let pgid = child.id().map(|pid| Pid::from_raw(pid as i32));
    let mut group = GroupGuard(pgid);
    let stdout = tokio::spawn(pump(
        child.stdout.take(),
        run,
        attempt,
        OutputStream::Stdout,
        output.clone(),
        Keep::Head(stdout_cap),
    ));
    let stderr = tokio::spawn(pump(
        child.stderr.take(),
        run,
        attempt,
        OutputStream::Stderr,
        output.clone(),
        Keep::Tail(STDERR_TAIL_BYTES),
    ));

    let waited = match timeout {
        Some(t) => tokio::time::timeout(t.0, child.wait()).await.ok(),
        None => Some(child.wait().await),
    };
    // Whatever ended the attempt, nothing it started may outlive it or hold its pipes.
    kill_group(pgid);
    let (outcome, exit_code, error) = match waited {
        None => {
            let _ = child.wait().await;
            let t = timeout.unwrap_or_default();
            (
                RunOutcome::TimedOut,
                None,
                Some(format!("timed out after {t}")),
            )
        }
        Some(Err(e)) => (
            RunOutcome::Failed,
            None,
            Some(format!("waiting for the command failed: {e}")),
        ),
        Some(Ok(status)) => match (status.code(), status.signal()) {
            (Some(0), _) => (RunOutcome::Succeeded, Some(0), None),
            (Some(code), _) => (RunOutcome::Failed, Some(code), None),
            (None, Some(sig)) => (
                RunOutcome::Failed,
                None,
                Some(format!("killed by {}", signal_name(sig))),
            ),
            (None, None) => (
                RunOutcome::Failed,
                None,
                Some("ended without an exit code".into()),
            ),
        },
    };
    // The group was killed above and its leader reaped: nothing left for the guard.
    group.0 = None;
    let (stdout, stdout_truncated) = drained(stdout).await;
    let (stderr_tail, _) = drained(stderr).await;
    Attempt {
        outcome,
        exit_code,
        stdout,
        stdout_truncated,
        stderr_tail,
        error,
    }
}

/// What to keep of a stream.
#[derive(Clone, Copy)]
enum Keep {
    /// The first N bytes.
    Head(usize),
    /// The last N bytes.
    Tail(usize),
}

/// Reads a pipe to its end, forwarding chunks and keeping what `keep` says.
/// Returns the kept bytes and whether anything was dropped.
async fn pump(
    pipe: Option<impl AsyncRead + Unpin>,
    run: RunId,
    attempt: u32,
    stream: OutputStream,
    output: mpsc::Sender<AgentMessage>,
    keep: Keep,
) -> (Vec<u8>, bool) {
    let Some(mut pipe) = pipe else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut dropped = false;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &buf[..n];
        let _ = output.try_send(AgentMessage::Output(OutputChunk {
            run,
            attempt,
            stream,
            data: data.to_vec(),
        }));
        match keep {
            Keep::Head(cap) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&data[..room.min(n)]);
                dropped |= n > room;
            }
            Keep::Tail(cap) => {
                kept.extend_from_slice(data);
                if kept.len() > cap {
                    kept.drain(..kept.len() - cap);
                    dropped = true;
                }
            }
        }
    }
    (kept, dropped)
}

mod process;
pub use process::{ExecProcess, ProcessExit, spawn_process};

#[cfg(test)]
mod tests;
