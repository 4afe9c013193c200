//! Drivers turn a task into something running on this host and back into a result.

pub mod exec;
