//! How an agent runs.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

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
    /// Where renewed certificates are written (`node.crt`, `node.key`); `None` keeps them
    /// in memory only.
    pub data_dir: Option<PathBuf>,
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
        }
    }
}
