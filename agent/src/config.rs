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
    /// The binary that supervises each task (the `supervise` subcommand); `None`: this
    /// process's own binary, which must answer to it (`windflow-agent` and `windflow` do).
    pub supervisor: Option<SupervisorCommand>,
    /// The protocol versions offered in Hello; [`VersionRange::SUPPORTED`] unless testing
    /// how servers treat agents of other versions.
    pub versions: VersionRange,
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
            supervisor: None,
            versions: VersionRange::SUPPORTED,
        }
    }
}
