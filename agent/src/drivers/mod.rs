//! Drivers turn a task into something running on this host and back into a result.

use windflow_protocol::DriverKind;

pub mod docker;
pub mod exec;

/// The drivers this agent offers, as announced in its Hello: exec always, docker when its
/// engine answered the fingerprint.
pub fn available(docker_usable: bool) -> Vec<DriverKind> {
    let mut drivers = vec![DriverKind::Exec];
    if docker_usable {
        drivers.push(DriverKind::Docker);
    }
    drivers
}
