//! How an allocation's long-running task ended, for its restart policy. The task itself
//! runs under a supervisor ([`super::service_spec`]): one attempt, no timeout or retries,
//! stopped with SIGTERM, a grace period, then SIGKILL.

use std::fmt;

use super::attempt::signal_name;

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

impl From<&super::ExecResult> for ProcessExit {
    /// How a supervised long-running task ended, from its result.
    fn from(r: &super::ExecResult) -> Self {
        match (r.exit_code, &r.error) {
            (Some(code), _) => ProcessExit::Code(code),
            (None, Some(why)) => ProcessExit::Error(why.clone()),
            (None, None) => ProcessExit::Error("ended without an exit code".into()),
        }
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
