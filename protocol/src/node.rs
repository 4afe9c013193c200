//! Agent hosts as the servers know them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::time::Timestamp;

/// A kind of driver an agent can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    Exec,
    Docker,
    Libvirt,
    Proxmox,
    Kubernetes,
}

impl DriverKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            DriverKind::Exec => "exec",
            DriverKind::Docker => "docker",
            DriverKind::Libvirt => "libvirt",
            DriverKind::Proxmox => "proxmox",
            DriverKind::Kubernetes => "kubernetes",
        }
    }
}

/// What an agent found out about its host: what it can offer and the facts constraints
/// match on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub resources: crate::alloc::Resources,
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// A registered node: what it told the servers when it last said Hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub drivers: Vec<DriverKind>,
    pub registered_at: Timestamp,
    /// When the node last opened a session (replicated; heartbeats are not).
    pub last_seen_at: Option<Timestamp>,
    pub agent_version: Option<String>,
    /// What the node offers to allocations (fingerprinted by its agent).
    #[serde(default)]
    pub resources: crate::alloc::Resources,
    /// Fingerprinted facts constraints match on: `os`, `arch`, `kernel`,
    /// `driver.<name>.version`…
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// Labels given by the join token the node enrolled with (`--labels k=v`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When `windflow node revoke` revoked its certificates: its agent is refused at the
    /// TLS handshake from then on.
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
    /// Whether its agent is heard from: `down` once heartbeats stop for the grace period.
    #[serde(default)]
    pub status: NodeStatus,
    /// Whether the scheduler may place new work on it.
    #[serde(default)]
    pub eligibility: Eligibility,
    /// Set while `windflow node drain` moves its work away.
    #[serde(default)]
    pub drain: Option<DrainStrategy>,
}

/// Whether a node's agent is heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Registered, no session yet.
    #[default]
    Initializing,
    Ready,
    /// Missed its heartbeats for the grace period; its allocations are `lost`.
    Down,
}

/// Whether the scheduler may place new allocations (and the dispatcher new runs) on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Eligibility {
    #[default]
    Eligible,
    Ineligible,
}

/// A drain in progress: service allocations move elsewhere, batch work finishes; past
/// `deadline`, what is left is stopped. The node ends ineligible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStrategy {
    pub started_at: Timestamp,
    pub deadline: Option<Timestamp>,
}
