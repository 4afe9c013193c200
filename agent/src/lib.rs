//! The Windflow node agent.
//!
//! It dials out to a server over mutual-TLS QUIC, says Hello, sends heartbeats, runs the
//! tasks it is given with its drivers, streams their output, and reports each result until
//! the server acknowledges it, across reconnects.

pub mod drivers;
mod error;
mod frames;
mod session;

use std::net::SocketAddr;
use std::time::Duration;

pub use error::AgentError;
pub use session::run;

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Servers' QUIC addresses, tried in order; the agent moves to the next on failure.
    pub servers: Vec<SocketAddr>,
    pub identity: windflow_certs::TlsIdentity,
    pub hostname: String,
    /// The longest wait between reconnection attempts (starting at 200ms, doubling).
    pub reconnect_max_backoff: Duration,
}
