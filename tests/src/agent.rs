//! `windflow-agent` as a real process: enrolling with a join token or starting from the
//! identity in its data dir, from a local address of its own.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;

use crate::wait_for;

/// The `windflow-agent` binary of this build, built on first use if `cargo test` has not.
pub fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| crate::built_bin("windflow-agent", "windflow-agent"))
        .clone()
}

/// How to start one agent.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub servers: Vec<SocketAddr>,
    pub data_dir: PathBuf,
    pub hostname: String,
    /// The local address its QUIC client binds to.
    pub bind: Option<IpAddr>,
    /// A join token, for the first start.
    pub token: Option<String>,
}

/// A running (or exited) agent process; killed when dropped.
pub struct Agent {
    pub spec: AgentSpec,
    /// The extra flags it was started with, kept for [`Agent::restart`].
    args: Vec<String>,
    child: Option<Child>,
    /// Where this start's output begins in the log, which earlier starts share.
    log_start: usize,
}

impl Agent {
    pub fn start(spec: AgentSpec) -> anyhow::Result<Agent> {
        Self::start_with_args(spec, &[])
    }

    /// Starts an agent with more flags (`--memory-mb 512`…).
    pub fn start_with_args(spec: AgentSpec, args: &[&str]) -> anyhow::Result<Agent> {
        let servers: Vec<String> = spec.servers.iter().map(ToString::to_string).collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Self::log_path(&spec))?;
        let log_start = log.metadata()?.len() as usize;
        let mut cmd = Command::new(agent_bin());
        cmd.arg("--servers")
            .arg(servers.join(","))
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .args(["--hostname", &spec.hostname])
            .env_remove("WINDFLOW_AGENT_TOKEN")
            .env("RUST_LOG", "info,quinn=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(ip) = spec.bind {
            cmd.arg("--bind").arg(ip.to_string());
        }
        if let Some(token) = &spec.token {
            cmd.arg("--token").arg(token);
        }
        cmd.args(args);
        let child = cmd.spawn().context("starting windflow-agent")?;
        Ok(Agent {
            spec,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: Some(child),
            log_start,
        })
    }

    fn log_path(spec: &AgentSpec) -> PathBuf {
        spec.data_dir.with_extension("log")
    }

    /// What the agent has logged, across its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(Self::log_path(&self.spec)).unwrap_or_default()
    }

    /// What this start of the agent has logged.
    pub fn log_of_this_start(&self) -> String {
        let log = std::fs::read(Self::log_path(&self.spec)).unwrap_or_default();
        String::from_utf8_lossy(log.get(self.log_start..).unwrap_or_default()).into_owned()
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().context("the agent is not running")?;
        let status = wait_for("the agent to exit", deadline, || {
            child.try_wait().ok().flatten()
        })?;
        self.child = None;
        Ok(status)
    }

    /// The agent process's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then waits for the agent to exit by itself.
    pub fn terminate(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let pid = self.pid().context("the agent is not running")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .context("sending SIGTERM to the agent")?;
        self.wait_exit(deadline)
    }

    /// SIGTERM and a wait for the agent to exit (its tasks keep running under their
    /// supervisors); SIGKILL if it does not within `deadline`.
    pub fn stop(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let exited = self.terminate(deadline);
        if exited.is_err() {
            self.kill();
        }
        exited
    }

    /// Starts the agent again on the same data dir, from the identity it keeps there (no
    /// token) and with the same flags; the previous process must have exited.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "the agent is still running");
        let mut spec = self.spec.clone();
        spec.token = None;
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let again = Agent::start_with_args(spec, &args)?;
        *self = again;
        Ok(())
    }

    /// The pids of the task supervisors this agent's data dir has running: `windflow-agent
    /// supervise --spec DATA_DIR/...` processes, which outlive the agent.
    pub fn supervisors(&self) -> Vec<u32> {
        windflow_agent::drivers::exec::supervisors_under(&self.spec.data_dir)
    }

    /// Stops what the agent left running: SIGTERM to each of its task supervisors (each
    /// stops its task's process group). For a test's end, since stopping or killing an
    /// agent leaves its tasks running.
    pub fn stop_tasks(&self) {
        windflow_agent::drivers::exec::stop_supervisors_under(&self.spec.data_dir);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}
