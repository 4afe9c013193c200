//! The exec driver's long-running form, for allocations: `sh -c COMMAND` in its own process
//! group, without capture, timeout or retries (the allocation's restart policy decides what
//! follows an exit), stopped with SIGTERM, a grace period, then SIGKILL.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use windflow_protocol::{DriverConfig, TaskSpec};

use super::attempt::{kill_group, signal_name};

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessExit {
    Code(i32),
    Signal(i32),
    /// It could not be started, or waiting for it failed.
    Error(String),
}

impl ProcessExit {
    pub fn success(&self) -> bool {
        *self == ProcessExit::Code(0)
    }
}

impl fmt::Display for ProcessExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessExit::Code(c) => write!(f, "exit code {c}"),
            ProcessExit::Signal(s) => write!(f, "killed by {}", signal_name(*s)),
            ProcessExit::Error(e) => f.write_str(e),
        }
    }
}

/// A running exec task. Its whole process group is killed (SIGKILL) when this is dropped,
/// so an allocation abandoned midway leaves nothing behind.
pub struct ExecProcess {
    child: tokio::process::Child,
    pid: u32,
    group: GroupGuard,
}

/// Starts an exec task as a long-running process: stdin, stdout and stderr are null.
pub fn spawn_process(task: &TaskSpec) -> Result<ExecProcess, String> {
    let DriverConfig::Exec(cfg) = &task.driver;
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&cfg.command)
        .envs(&task.env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &cfg.workdir {
        cmd.current_dir(dir);
    }
    let child = cmd.spawn().map_err(|e| match &cfg.workdir {
        Some(dir) => format!("cannot start `sh -c` in workdir `{dir}`: {e}"),
        None => format!("cannot start `sh -c`: {e}"),
    })?;
    let pid = child
        .id()
        .ok_or_else(|| "the process ended before its pid was read".to_owned())?;
    Ok(ExecProcess {
        child,
        pid,
        group: GroupGuard(Some(Pid::from_raw(pid as i32))),
    })
}

/// Kills the task's process group when dropped, so an allocation abandoned midway (the
/// agent stopping) leaves nothing behind. Disarmed once the group has been killed.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            kill_group(pgid);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

impl ExecProcess {
    /// The group leader's pid (the `sh`), which is also the process group's id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the group leader to exit, then kills what it left in its group. Cancel
    /// safe: dropping the future leaves the process running.
    pub async fn wait(&mut self) -> ProcessExit {
        let exit = match self.child.wait().await {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => ProcessExit::Code(code),
                (None, Some(sig)) => ProcessExit::Signal(sig),
                (None, None) => ProcessExit::Error("ended without an exit code".into()),
            },
            Err(e) => ProcessExit::Error(format!("waiting for the command failed: {e}")),
        };
        self.group.kill();
        exit
    }

    /// Stops the task: SIGTERM to its process group, up to `grace` for the leader to exit,
    /// then SIGKILL to whatever is left of the group.
    pub async fn stop(mut self, grace: Duration) -> ProcessExit {
        if let Some(pgid) = self.group.0 {
            let _ = killpg(pgid, Signal::SIGTERM);
        }
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(exit) => exit,
            Err(_) => {
                tracing::info!(
                    pid = self.pid,
                    grace_ms = grace.as_millis() as u64,
                    "still running after SIGTERM; sending SIGKILL"
                );
                self.group.kill();
                self.wait().await
            }
        }
    }
}
