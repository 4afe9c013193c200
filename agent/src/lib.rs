//! The Windflow node agent.
//!
//! It dials out to a server over mutual-TLS QUIC, says Hello, sends heartbeats, runs the
//! tasks and allocations it is given with its drivers, streams their output, and reports each result until
//! the server acknowledges it, across reconnects.

mod allocs;
mod config;
pub mod drivers;
pub mod enroll;
mod error;
pub mod fingerprint;
mod outbox;
pub mod renew;
mod session;

pub use config::{
    AgentConfig, DEFAULT_KILL_GRACE, DEFAULT_RECONNECT_MAX_BACKOFF, FIRST_RECONNECT_BACKOFF,
    ResourceOverride,
};
pub use error::AgentError;
pub use session::run;
