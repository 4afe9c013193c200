//! The agent's side of a supervised execution: start a supervisor, find one again after the
//! agent restarted, follow its output files, and take its result. The agent keeps a
//! [`SupervisedHandle`] in its store; with it, [`Supervised::recover`] tells a supervisor
//! that still runs (same pid *and* start time) from one that is gone.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use windflow_protocol::Timestamp;
use windflow_protocol::messages::OutputStream;

use super::files::{
    Durability, ExecDir, ExecResult, PRIVATE, SuperviseSpec, read_value, write_value,
};
use super::supervise::SUBCOMMAND;
use crate::process::ProcessIdentity;

/// How long after a task's start the next warm supervisor is started.
const WARM_UP_AFTER: Duration = Duration::from_millis(50);
/// How often the output files and the supervisor are looked at.
const POLL: Duration = Duration::from_millis(100);
/// The largest live output chunk handed on at once.
const CHUNK: usize = 64 * 1024;
/// The most bytes read from one output file per look, so one noisy task cannot hold its
/// watcher in a read loop.
const READ_PER_POLL: u64 = 4 * 1024 * 1024;

/// The binary that supervises executions: the agent's own, started with the hidden
/// `supervise` subcommand. One supervisor is kept started ahead of need (see
/// [`WarmSupervisor`]), shared by the clones of this value.
#[derive(Debug, Clone)]
pub struct SupervisorCommand {
    pub program: PathBuf,
    warm: std::sync::Arc<std::sync::Mutex<Option<WarmSupervisor>>>,
}

impl PartialEq for SupervisorCommand {
    fn eq(&self, other: &Self) -> bool {
        self.program == other.program
    }
}

impl Eq for SupervisorCommand {}

/// A supervisor already started (its binary loaded, out of the agent's session) that
/// waits on its stdin for the path of the spec it is to run: starting a task then costs
/// one process start, the task's own, instead of two. When the agent goes away its stdin
/// closes and it exits without doing anything.
#[derive(Debug)]
struct WarmSupervisor {
    child: tokio::process::Child,
    identity: ProcessIdentity,
}

impl SupervisorCommand {
    pub fn new(program: PathBuf) -> SupervisorCommand {
        SupervisorCommand {
            program,
            warm: Default::default(),
        }
    }

    /// This process's own binary (what `windflow-agent` and `windflow dev` use).
    pub fn current_exe() -> io::Result<SupervisorCommand> {
        Ok(SupervisorCommand::new(std::env::current_exe()?))
    }

    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .arg(SUBCOMMAND)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // The agent's own join token is none of the task's business.
            .env_remove("WINDFLOW_AGENT_TOKEN")
            // The point of a supervisor is to outlive the agent.
            .kill_on_drop(false);
        command
    }

    /// Hands `spec` to the warm supervisor, if one is alive and takes it.
    fn take_warm(&self, spec: &Path) -> Option<(tokio::process::Child, ProcessIdentity)> {
        use std::io::Write;
        let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        if !matches!(warm.child.try_wait(), Ok(None)) || !warm.identity.is_alive() {
            return None;
        }
        let stdin = warm.child.stdin.take()?.into_owned_fd().ok()?;
        let mut line = spec.as_os_str().as_encoded_bytes().to_vec();
        line.push(b'\n');
        // Closed right after: the supervisor reads one line, then EOF.
        File::from(stdin).write_all(&line).ok()?;
        Some((warm.child, warm.identity))
    }

    /// [`SupervisorCommand::warm_up`] a moment from now, off the path of the task just
    /// started (at once when there is no runtime to wait on).
    fn warm_up_later(&self) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let command = self.clone();
                runtime.spawn(async move {
                    tokio::time::sleep(WARM_UP_AFTER).await;
                    command.warm_up();
                });
            }
            Err(_) => self.warm_up(),
        }
    }

    /// Starts the next warm supervisor, unless one waits already. Best effort: without
    /// one, the next task starts its supervisor itself.
    pub fn warm_up(&self) {
        let mut slot = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return;
        }
        let mut command = self.command();
        command
            .arg(super::supervise::WAIT_FOR_SPEC)
            .stdin(Stdio::piped())
            .stderr(Stdio::null());
        match command.spawn() {
            Ok(child) => match child.id().and_then(ProcessIdentity::of) {
                Some(identity) => *slot = Some(WarmSupervisor { child, identity }),
                None => tracing::debug!("a warm supervisor ended as it started"),
            },
            Err(e) => tracing::debug!(error = %e, "cannot start a warm supervisor"),
        }
    }
}

/// What the agent keeps to find an execution again after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisedHandle {
    /// The execution's directory (spec, output, result).
    pub dir: PathBuf,
    /// The supervisor, once started (the supervisor also writes itself into `dir`).
    pub supervisor: Option<ProcessIdentity>,
    pub started_at: Timestamp,
}

/// Something that happened in a running execution, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    AttemptStarted {
        attempt: u32,
    },
    Output {
        attempt: u32,
        stream: OutputStream,
        data: Vec<u8>,
    },
}

/// What [`Supervised::recover`] found.
pub enum Recovered {
    /// The supervisor still runs: wait for it.
    Running(Supervised),
    /// It is over: with its own result, or failed because its supervisor vanished.
    Ended(ExecResult),
}

/// A running execution under its supervisor.
pub struct Supervised {
    dir: ExecDir,
    supervisor: ProcessIdentity,
    started_at: Timestamp,
    /// Set when this agent process started the supervisor, which is then its child to reap.
    child: Option<tokio::process::Child>,
    tail: Tail,
}

impl Supervised {
    /// Starts a supervisor for `spec` in `dir`, a directory of its own (created here). The
    /// spec, which holds the task's opened secrets, is written owner-only; the supervisor
    /// deletes it once read. Nothing is left behind when this fails.
    pub fn spawn(
        command: &SupervisorCommand,
        dir: ExecDir,
        spec: &SuperviseSpec,
    ) -> io::Result<Supervised> {
        let spawned = (|| {
            dir.create()?;
            write_value(&dir.spec(), spec, PRIVATE, Durability::ProcessCrash)?;
            if let Some(warm) = command.take_warm(&dir.spec()) {
                return Ok(warm);
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.supervisor_log())?;
            let child = command
                .command()
                .arg("--spec")
                .arg(dir.spec())
                .stderr(log)
                .spawn()?;
            let supervisor = child
                .id()
                .and_then(ProcessIdentity::of)
                .ok_or_else(|| io::Error::other("the supervisor ended as it started"))?;
            Ok::<_, io::Error>((child, supervisor))
        })();
        // For the next task, once this one is on its way: started at once, the next
        // supervisor's own start competes for the CPU with this task's.
        command.warm_up_later();
        match spawned {
            Ok((child, supervisor)) => Ok(Supervised {
                dir,
                supervisor,
                started_at: Timestamp::now(),
                child: Some(child),
                tail: Tail::default(),
            }),
            Err(e) => {
                let _ = dir.remove();
                Err(e)
            }
        }
    }

    /// What to keep to find this execution again.
    pub fn handle(&self) -> SupervisedHandle {
        SupervisedHandle {
            dir: self.dir.path().to_owned(),
            supervisor: Some(self.supervisor),
            started_at: self.started_at,
        }
    }

    /// Finds an execution again after the agent restarted: re-attached when its supervisor
    /// still runs (its output followed from where the files end now), its result when it
    /// ended, or a failure when its supervisor vanished without one (whatever that left of
    /// the task is killed).
    pub fn recover(handle: &SupervisedHandle) -> Recovered {
        let dir = ExecDir::new(&handle.dir);
        if let Some(ended) = read_result(&dir) {
            return Recovered::Ended(ended);
        }
        let supervisor = handle
            .supervisor
            .or_else(|| read_value(&dir.supervisor()).ok().flatten());
        match supervisor {
            Some(supervisor) if supervisor.is_alive() => {
                let tail = Tail::at_end_of(&dir);
                Recovered::Running(Supervised {
                    dir,
                    supervisor,
                    started_at: handle.started_at,
                    child: None,
                    tail,
                })
            }
            _ => Recovered::Ended(vanished(
                &dir,
                handle.started_at,
                "the task's supervisor died while the agent was down",
            )),
        }
    }

    /// The supervisor's process.
    pub fn supervisor(&self) -> ProcessIdentity {
        self.supervisor
    }

    /// Asks the supervisor to stop the task (SIGTERM: it kills the task's process group
    /// and records a failed result). False when the supervisor is already gone.
    pub fn stop(&self) -> bool {
        self.supervisor.signal(Signal::SIGTERM)
    }

    /// Follows the execution to its end, handing its attempts and output to `progress` as
    /// they appear, and returns its result. Dropping this future leaves the execution
    /// running; [`Supervised::recover`] finds it again.
    pub async fn wait(mut self, mut progress: impl FnMut(Progress)) -> ExecResult {
        loop {
            let result = read_result(&self.dir);
            self.tail.follow(&self.dir, &mut progress);
            if let Some(result) = result {
                self.reap().await;
                return result;
            }
            let exited = match &mut self.child {
                Some(child) => tokio::select! {
                    status = child.wait() => {
                        self.child = None;
                        if let Ok(status) = status && !status.success() {
                            tracing::warn!(%status, dir = %self.dir.path().display(), "the task's supervisor failed");
                        }
                        true
                    }
                    _ = tokio::time::sleep(POLL) => false,
                },
                None => {
                    tokio::time::sleep(POLL).await;
                    !self.supervisor.is_alive()
                }
            };
            if exited {
                // It writes its result before it exits.
                if let Some(result) = read_result(&self.dir) {
                    self.tail.follow(&self.dir, &mut progress);
                    return result;
                }
                let why = format!(
                    "the task's supervisor (pid {}) died without recording a result",
                    self.supervisor.pid
                );
                return vanished(&self.dir, self.started_at, &why);
            }
        }
    }

    async fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait().await;
        }
    }
}

/// The execution's result, when it has one; a result that cannot be read is a failure.
fn read_result(dir: &ExecDir) -> Option<ExecResult> {
    match read_value::<ExecResult>(&dir.result()) {
        Ok(r) => r,
        Err(e) => Some(ExecResult::failed(
            0,
            Timestamp::now(),
            format!("the task's result cannot be read: {e}"),
        )),
    }
}

/// The result of an execution whose supervisor is gone without one: failed with `why`,
/// after killing what its last attempt may have left running.
fn vanished(dir: &ExecDir, started_at: Timestamp, why: &str) -> ExecResult {
    let attempt = last_attempt(dir);
    if attempt > 0
        && let Ok(Some(group)) = read_value::<ProcessIdentity>(&dir.group(attempt))
        && group.signal_group(Signal::SIGKILL)
    {
        tracing::warn!(
            pgid = group.pid,
            "killed the process group its dead supervisor left"
        );
    }
    let mut result = ExecResult::failed(attempt, started_at, why.to_owned());
    // What the last attempt printed before it was lost, as far as the context keeps.
    if let Ok(file) = File::open(dir.output(attempt.max(1), OutputStream::Stdout)) {
        let cap = windflow_protocol::CONTEXT_MAX_BYTES as u64;
        let _ = file.take(cap).read_to_end(&mut result.stdout);
        result.stdout_truncated = std::fs::metadata(dir.output(attempt, OutputStream::Stdout))
            .is_ok_and(|m| m.len() > cap);
    }
    result
}

/// The highest attempt that has started (0: none).
fn last_attempt(dir: &ExecDir) -> u32 {
    let mut attempt = 0;
    while dir.output(attempt + 1, OutputStream::Stdout).exists() {
        attempt += 1;
    }
    attempt
}

/// Where the watcher is in the output files: the attempt and how far each stream was read.
#[derive(Debug, Default)]
struct Tail {
    attempt: u32,
    stdout: u64,
    stderr: u64,
}

impl Tail {
    /// Positioned at the current end of the latest attempt's files: what was written while
    /// no agent watched is in the result, not sent live again.
    fn at_end_of(dir: &ExecDir) -> Tail {
        let attempt = last_attempt(dir);
        let len = |s| std::fs::metadata(dir.output(attempt, s)).map_or(0, |m| m.len());
        Tail {
            attempt,
            stdout: len(OutputStream::Stdout),
            stderr: len(OutputStream::Stderr),
        }
    }

    /// Hands on what the files gained since the last look, attempt by attempt.
    fn follow(&mut self, dir: &ExecDir, progress: &mut impl FnMut(Progress)) {
        loop {
            // Looked at before reading: once the next attempt exists, this one's files are
            // complete, so reading them after this check gets all of it.
            let next_started = dir.output(self.attempt + 1, OutputStream::Stdout).exists();
            if self.attempt > 0 {
                for (stream, offset) in [
                    (OutputStream::Stdout, &mut self.stdout),
                    (OutputStream::Stderr, &mut self.stderr),
                ] {
                    read_new(dir, self.attempt, stream, offset, progress);
                }
            }
            if !next_started {
                return;
            }
            self.attempt += 1;
            self.stdout = 0;
            self.stderr = 0;
            progress(Progress::AttemptStarted {
                attempt: self.attempt,
            });
        }
    }
}

fn read_new(
    dir: &ExecDir,
    attempt: u32,
    stream: OutputStream,
    offset: &mut u64,
    progress: &mut impl FnMut(Progress),
) {
    let Ok(mut file) = File::open(dir.output(attempt, stream)) else {
        return;
    };
    if file.seek(SeekFrom::Start(*offset)).is_err() {
        return;
    }
    let mut new = Vec::new();
    if file.take(READ_PER_POLL).read_to_end(&mut new).is_err() {
        return;
    }
    *offset += new.len() as u64;
    for data in new.chunks(CHUNK) {
        progress(Progress::Output {
            attempt,
            stream,
            data: data.to_vec(),
        });
    }
}

/// The pids of running supervisors whose spec lies under `dir` (an agent's data dir), read
/// from `/proc/*/cmdline` (`<binary> supervise --spec <path>`), or, for one started warm
/// (`supervise --spec-from-stdin`), whose open files (its log) lie under it: what an agent
/// left running, found without its store.
pub fn supervisors_under(dir: &Path) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| {
            let pid: u32 = p.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if args.get(1) != Some(&SUBCOMMAND.as_bytes()) {
                return None;
            }
            let ours = match args.get(2).copied() {
                Some(b"--spec") => args.get(3).is_some_and(|spec| {
                    std::str::from_utf8(spec).is_ok_and(|s| Path::new(s).starts_with(dir))
                }),
                Some(flag) if flag == super::supervise::WAIT_FOR_SPEC.as_bytes() => {
                    std::fs::read_dir(p.path().join("fd")).is_ok_and(|fds| {
                        fds.flatten().any(|fd| {
                            std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(dir))
                        })
                    })
                }
                _ => false,
            };
            ours.then_some(pid)
        })
        .collect()
}

/// SIGTERM to every supervisor under `dir`; each stops its task's process group (a grace,
/// then SIGKILL) before it exits. For an agent whose data dir is going away (`windflow dev`
/// on a temporary dir), since stopping an agent otherwise leaves its tasks running.
/// Returns how many were told.
pub fn stop_supervisors_under(dir: &Path) -> usize {
    let pids = supervisors_under(dir);
    for pid in &pids {
        // ESRCH: it ended meanwhile, which is what we want.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    pids.len()
}
