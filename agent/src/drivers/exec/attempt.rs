//! One attempt of an exec task, inside the supervisor: `sh -c COMMAND` in the task's
//! working directory and environment, in a process group of its own so that a timeout (or
//! a stop) kills everything it started. Its stdout and stderr go to the attempt's files,
//! which the agent tails for live output, and their head and tail are kept for the result.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;
use windflow_protocol::messages::OutputStream;
use windflow_protocol::{ExecConfig, HumanDuration, RunOutcome, STDERR_TAIL_BYTES};

use super::files::{Durability, ExecDir, PRIVATE, write_value};
use crate::process::ProcessIdentity;

/// The most bytes read from a pipe at once.
const READ_CHUNK: usize = 64 * 1024;
/// After the process group is killed, how long its pipes may stay open (held by something
/// that left the group) before the output readers are abandoned.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// The result of one attempt.
pub(super) struct Attempt {
    pub outcome: RunOutcome,
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_tail: Vec<u8>,
    pub error: Option<String>,
    /// The attempt was cut short by a stop: no further attempt may follow.
    pub stopped: bool,
}

impl Attempt {
    pub fn failed(why: String) -> Self {
        Attempt {
            outcome: RunOutcome::Failed,
            exit_code: None,
            stdout: Vec::new(),
            stdout_truncated: false,
            stderr_tail: Vec::new(),
            error: Some(why),
            stopped: false,
        }
    }
}

/// What one attempt needs.
pub(super) struct AttemptPlan<'a> {
    pub cfg: &'a ExecConfig,
    pub env: &'a BTreeMap<String, String>,
    pub timeout: Option<HumanDuration>,
    pub stdout_cap: usize,
    pub output_file_cap: u64,
    /// SIGTERM first and this long before SIGKILL, when a stop ends the attempt.
    pub stop_grace: Option<Duration>,
    /// The task's logs for people, which every attempt appends to.
    pub logs: Option<&'a crate::logs::LogTarget>,
}

/// SIGKILL to a whole process group.
pub(super) fn kill_group(pgid: Pid) {
    // ESRCH: the group is already gone, which is what we want.
    let _ = killpg(pgid, Signal::SIGKILL);
}

/// How a signal is called, for error messages: `SIGKILL`, or its number when unknown.
pub(super) fn signal_name(sig: i32) -> String {
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

fn output_file(dir: &ExecDir, attempt: u32, stream: OutputStream) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE)
        .open(dir.output(attempt, stream))
}

/// Runs attempt `attempt`, its output into `dir`. `stop` ends it early (the group killed).
pub(super) async fn run_attempt(
    dir: &ExecDir,
    attempt: u32,
    plan: &AttemptPlan<'_>,
    stop: &CancellationToken,
) -> Attempt {
    let files = output_file(dir, attempt, OutputStream::Stdout)
        .and_then(|o| Ok((o, output_file(dir, attempt, OutputStream::Stderr)?)));
    let (out_file, err_file) = match files {
        Ok(f) => f,
        Err(e) => return Attempt::failed(format!("cannot create the output files: {e}")),
    };
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&plan.cfg.command)
        .envs(plan.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(workdir) = &plan.cfg.workdir {
        cmd.current_dir(workdir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Attempt::failed(format!("cannot start `sh -c`: {e}")),
    };
    let Some(pid) = child.id() else {
        return Attempt::failed("`sh -c` ended before it could be watched".into());
    };
    let pgid = Pid::from_raw(pid as i32);
    // So that an agent finding this supervisor dead can still kill what it started.
    if let Some(leader) = ProcessIdentity::of(pid)
        && let Err(e) = write_value(
            &dir.group(attempt),
            &leader,
            PRIVATE,
            Durability::ProcessCrash,
        )
    {
        tracing::warn!(error = %e, "cannot record the attempt's process group");
    }
    let log = |stream| {
        let target = plan.logs?;
        crate::logs::LogWriter::open(target, stream)
            .inspect_err(|e| tracing::warn!(error = %e, dir = %target.dir.display(), "cannot open the task's log"))
            .ok()
    };
    let stdout = tokio::spawn(pump(
        child.stdout.take(),
        out_file,
        plan.output_file_cap,
        Keep::Head(plan.stdout_cap),
        log(OutputStream::Stdout),
    ));
    let stderr = tokio::spawn(pump(
        child.stderr.take(),
        err_file,
        plan.output_file_cap,
        Keep::Tail(STDERR_TAIL_BYTES),
        log(OutputStream::Stderr),
    ));

    enum Ended {
        Exited(std::io::Result<std::process::ExitStatus>),
        TimedOut,
        Stopped,
    }
    let timeout = plan.timeout.map_or(Duration::MAX, |t| t.0);
    let ended = tokio::select! {
        status = child.wait() => Ended::Exited(status),
        _ = tokio::time::sleep(timeout) => Ended::TimedOut,
        _ = stop.cancelled() => Ended::Stopped,
    };
    if let (Ended::Stopped, Some(grace)) = (&ended, plan.stop_grace) {
        let _ = killpg(pgid, Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            tracing::info!(
                grace_ms = grace.as_millis() as u64,
                "still running after SIGTERM; sending SIGKILL"
            );
        }
    }
    // Whatever ended the attempt, nothing it started may outlive it or hold its pipes.
    kill_group(pgid);
    let (outcome, exit_code, error) = match ended {
        Ended::TimedOut => {
            let _ = child.wait().await;
            let t = plan.timeout.unwrap_or_default();
            (
                RunOutcome::TimedOut,
                None,
                Some(format!("timed out after {t}")),
            )
        }
        Ended::Stopped => {
            let _ = child.wait().await;
            (
                RunOutcome::Failed,
                None,
                Some("stopped: the task's supervisor was told to stop it".into()),
            )
        }
        Ended::Exited(Err(e)) => (
            RunOutcome::Failed,
            None,
            Some(format!("waiting for the command failed: {e}")),
        ),
        Ended::Exited(Ok(status)) => match (status.code(), status.signal()) {
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
    let stopped = stop.is_cancelled();
    let (stdout, stdout_truncated) = drained(stdout).await;
    let (stderr_tail, _) = drained(stderr).await;
    Attempt {
        outcome,
        exit_code,
        stdout,
        stdout_truncated,
        stderr_tail,
        error,
        stopped,
    }
}

/// What to keep of a stream for the result.
#[derive(Clone, Copy)]
enum Keep {
    /// The first N bytes.
    Head(usize),
    /// The last N bytes.
    Tail(usize),
}

/// Reads a pipe to its end, writing it to `file` (up to `file_cap` bytes) and to the
/// task's rotated `log` (stamped with when it was read), and keeping what `keep` says.
/// Returns the kept bytes and whether anything was dropped from them.
async fn pump(
    pipe: Option<impl AsyncRead + Unpin>,
    mut file: File,
    file_cap: u64,
    keep: Keep,
    mut log: Option<crate::logs::LogWriter>,
) -> (Vec<u8>, bool) {
    let Some(mut pipe) = pipe else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut dropped = false;
    let mut in_file = 0u64;
    let mut file_ok = true;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &buf[..n];
        if let Some(writer) = &mut log
            && let Err(e) = writer.write(windflow_protocol::Timestamp::now(), data)
        {
            // A full disk must not end the run either.
            tracing::warn!(error = %e, "cannot write the task's log");
            log = None;
        }
        let room = file_cap.saturating_sub(in_file).min(n as u64) as usize;
        if file_ok && room > 0 {
            // The file is the live view; a full disk must not end the run.
            if let Err(e) = file.write_all(&data[..room]) {
                tracing::warn!(error = %e, "cannot write the task's output file");
                file_ok = false;
            }
            in_file += room as u64;
        }
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
