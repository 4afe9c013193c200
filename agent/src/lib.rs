//! The Windflow node agent.
//!
//! It dials out to a server over mutual-TLS QUIC, says Hello, sends heartbeats, runs the
//! tasks and allocations it is given with its drivers, streams their output, and reports
//! each result until the server acknowledges it, across reconnects and across restarts of
//! the agent itself: runs execute under supervisor processes of their own, and the agent
//! keeps what it runs and what it has not reported yet in its store.

mod allocs;
mod config;
pub mod drivers;
pub mod enroll;
mod error;
pub mod fingerprint;
pub mod logs;
mod outbox;
pub mod process;
pub mod renew;
mod session;
pub mod store;
mod work;

pub use config::{
    AgentConfig, DEFAULT_KILL_GRACE, DEFAULT_RECONNECT_MAX_BACKOFF, FIRST_RECONNECT_BACKOFF,
    ResourceOverride,
};
pub use drivers::exec::main_if_invoked as supervise_if_invoked;
pub use error::AgentError;
pub use session::run;
