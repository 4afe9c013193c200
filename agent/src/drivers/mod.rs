//! Drivers turn a task into something running on this host and back into a result.

use windflow_protocol::DriverKind;

pub mod exec;

/// The drivers this agent offers, as announced in its Hello.
pub fn available() -> Vec<DriverKind> {
    vec![DriverKind::Exec]
}
