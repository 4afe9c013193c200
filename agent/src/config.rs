//! How an agent runs.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use windflow_protocol::messages::VersionRange;

use crate::drivers::exec::SupervisorCommand;

/// The longest wait between reconnection attempts unless configured otherwise.
pub const DEFAULT_RECONNECT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The first wait before reconnecting; it doubles up to `reconnect_max_backoff`.
pub const FIRST_RECONNECT_BACKOFF: Duration = Duration::from_millis(200);

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Servers' QUIC addresses, tried in order; the agent moves to the next on failure.
    pub servers: Vec<SocketAddr>,
    /// The cluster CA and this node's certificate.
    pub identity: windflow_certs::TlsIdentity,
    /// The name this host reports in its Hello.
    pub hostname: String,
    /// The longest wait between reconnection attempts (starting at 200ms, doubling).
    pub reconnect_max_backoff: Duration,
    /// The local address the QUIC client binds to (any, if `None`).
    pub bind: Option<IpAddr>,
    /// The agent's own directory: renewed certificates (`node.crt`, `node.key`), its state
    /// store and its runs' files. Required by [`crate::run`].
    pub data_dir: Option<PathBuf>,
    /// What to report instead of the fingerprinted CPU, memory and disk.
    pub resources: ResourceOverride,
    /// When an allocation's task is stopped: the wait between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// The binary that supervises each task (the `supervise` subcommand); `None`: this
    /// process's own binary, which must answer to it (`windflow-agent` and `windflow` do).
    pub supervisor: Option<SupervisorCommand>,
    /// The protocol versions offered in Hello; [`VersionRange::SUPPORTED`] unless testing
    /// how servers treat agents of other versions.
    pub versions: VersionRange,
    /// How much of each allocation task's output is kept, and how long after it ended.
    pub logs: crate::logs::LogPolicy,
}

/// The default wait between SIGTERM and SIGKILL when a task is stopped.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// Capacity given by the operator rather than read from the host (like Nomad's
/// `cpu_total_compute` and `memory_total_mb`): what the scheduler may place here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceOverride {
    pub cpu_mhz: Option<u64>,
    pub memory_mb: Option<u64>,
    pub disk_mb: Option<u64>,
}

impl ResourceOverride {
    /// The fingerprint with the given figures in place of the measured ones.
    pub fn apply(&self, mut f: windflow_protocol::Fingerprint) -> windflow_protocol::Fingerprint {
        let r = &mut f.resources;
        r.cpu_mhz = self.cpu_mhz.unwrap_or(r.cpu_mhz);
        r.memory_mb = self.memory_mb.unwrap_or(r.memory_mb);
        r.disk_mb = self.disk_mb.unwrap_or(r.disk_mb);
        f
    }
}

impl AgentConfig {
    /// A config with the default reconnection backoff.
    pub fn new(
        servers: Vec<SocketAddr>,
        identity: windflow_certs::TlsIdentity,
        hostname: impl Into<String>,
    ) -> Self {
        AgentConfig {
            servers,
            identity,
            hostname: hostname.into(),
            reconnect_max_backoff: DEFAULT_RECONNECT_MAX_BACKOFF,
            bind: None,
            data_dir: None,
            resources: ResourceOverride::default(),
            kill_grace: DEFAULT_KILL_GRACE,
            supervisor: None,
            versions: VersionRange::SUPPORTED,
            logs: crate::logs::LogPolicy::default(),
        }
    }
}
