//! The exec driver: `sh -c COMMAND` in the task's working directory and environment, in a
//! process group of its own so a timeout kills everything it started; retried with backoff;
//! stdout and stderr captured (stdout capped, stderr's tail) and followed live.
//!
//! Each execution runs under a supervisor process (the agent's own binary, `supervise`
//! subcommand, in a session of its own), not in the agent: the task outlives an agent
//! restart, and the agent finds it again from the [`SupervisedHandle`] it stored.
//!
//! - [`Supervised::spawn`] starts one; [`Supervised::handle`] is what to store;
//! - [`Supervised::recover`] finds one again after a restart;
//! - [`Supervised::wait`] follows its output and returns its [`ExecResult`];
//! - [`Supervised::stop`] asks it to kill the task (a result is still recorded).

mod attempt;
mod files;
mod supervise;
mod supervised;

pub use files::{Durability, ExecDir, ExecResult, SuperviseSpec, read_value, write_value};
pub use supervise::{SUBCOMMAND, main_if_invoked};
pub use supervised::{
    Progress, Recovered, Supervised, SupervisedHandle, SupervisorCommand, stop_supervisors_under,
    supervisors_under,
};

/// The most bytes an attempt's output file takes per stream: live output stops there (the
/// result's stdout head and stderr tail are kept regardless), and disk use is bounded.
pub const OUTPUT_FILE_CAP: u64 = 16 * 1024 * 1024;

/// The spec of an exec task as the agent runs it: stdout capped at the context's size.
pub fn spec(task: windflow_protocol::TaskSpec) -> SuperviseSpec {
    SuperviseSpec {
        task,
        stdout_cap: windflow_protocol::CONTEXT_MAX_BYTES,
        output_file_cap: OUTPUT_FILE_CAP,
        stop_grace: None,
        logs: None,
    }
}

/// The spec of an allocation's task as the agent runs it: one long-running attempt (no
/// retries or timeout: the allocation's restart policy decides what follows an exit), its
/// output in the execution's files (and, with `logs`, in the task's rotated logs), stopped
/// with SIGTERM and `grace` before SIGKILL.
pub fn service_spec(
    mut task: windflow_protocol::TaskSpec,
    grace: std::time::Duration,
    logs: Option<crate::logs::LogTarget>,
) -> SuperviseSpec {
    task.retry.max_retries = 0;
    task.timeout = None;
    SuperviseSpec {
        task,
        stdout_cap: windflow_protocol::CONTEXT_MAX_BYTES,
        output_file_cap: OUTPUT_FILE_CAP,
        stop_grace: Some(windflow_protocol::HumanDuration(grace)),
        logs,
    }
}

mod process;
pub use process::ProcessExit;

#[cfg(test)]
mod tests;
