//! Service rollouts: a group's update policy and health checks, an allocation's health as
//! its node judges it, and the deployment that rolls a new job version out.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{DeploymentId, JobId};
use crate::namespace::Namespace;
use crate::time::{HumanDuration, Timestamp};

/// How a service group's allocations are replaced by those of a new job version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePolicy {
    /// How many instances are replaced at once (new ones placed, not yet healthy).
    pub max_parallel: u32,
    /// How long an allocation's checks must all pass (or, without checks, it must run)
    /// before it counts as healthy.
    pub min_healthy_time: HumanDuration,
    /// An allocation not healthy this long after it started is unhealthy.
    pub healthy_deadline: HumanDuration,
    /// The deployment fails when no allocation became healthy for this long.
    pub progress_deadline: HumanDuration,
    /// A failed deployment rolls the job back to its last stable version.
    pub auto_revert: bool,
    /// How many instances of the new version run next to the old ones until the
    /// deployment is promoted (0: no canaries).
    pub canary: u32,
}

impl Default for UpdatePolicy {
    /// One at a time, 10 s healthy within 5 minutes, progress within 10, no revert.
    fn default() -> Self {
        UpdatePolicy {
            max_parallel: 1,
            min_healthy_time: HumanDuration::from_secs(10),
            healthy_deadline: HumanDuration::from_secs(5 * 60),
            progress_deadline: HumanDuration::from_secs(10 * 60),
            auto_revert: false,
            canary: 0,
        }
    }
}

/// One health check of a group's allocations, run by their node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub name: String,
    pub kind: CheckKind,
    /// Between two runs of the check.
    pub interval: HumanDuration,
    /// A run that takes longer fails.
    pub timeout: HumanDuration,
    /// Failures in this long after the allocation started do not count.
    pub grace: HumanDuration,
}

/// What a health check does (externally tagged: the store and the wire are bincode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// `GET path` answers 2xx or 3xx.
    Http {
        path: String,
        /// `None`: the allocation's own port (`WINDFLOW_PORT`).
        port: Option<u16>,
    },
    /// A TCP connection is accepted.
    Tcp { port: Option<u16> },
    /// `sh -c command` in the task's environment exits 0.
    Command { command: String },
    /// The engine's health check of the docker task `task`'s container (its
    /// [`crate::docker::ContainerHealthcheck`]) reports healthy.
    Container { task: String },
}

/// What an allocation's node says of its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Not judged yet (just started, or its checks have not passed long enough).
    #[default]
    Unknown,
    /// Its checks all passed for the minimum healthy time (without checks: it ran that
    /// long).
    Healthy,
    /// A check failed after it was healthy, or it was not healthy by its deadline.
    Unhealthy,
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthStatus::Unknown => "unknown",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        })
    }
}

/// An allocation's health and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct AllocHealth {
    pub status: HealthStatus,
    /// Said for people: which check failed and how.
    pub message: String,
}

/// Where a deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    Running,
    Successful,
    Failed,
    /// A newer version's deployment took over before it ended.
    Cancelled,
}

impl DeploymentStatus {
    pub fn is_active(&self) -> bool {
        *self == DeploymentStatus::Running
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            DeploymentStatus::Running => "running",
            DeploymentStatus::Successful => "successful",
            DeploymentStatus::Failed => "failed",
            DeploymentStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rollout of one version of a service job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: DeploymentId,
    pub job: JobId,
    pub namespace: Namespace,
    /// The job version it rolls out.
    pub version: u64,
    /// The version that ran before (`None`: the job's first).
    pub from_version: Option<u64>,
    pub status: DeploymentStatus,
    /// Said for people: why it failed, what it waits for.
    pub description: String,
    /// Whether its canaries were promoted (always true without canaries).
    pub promoted: bool,
    /// When it fails unless an allocation becomes healthy first.
    pub progress_deadline: Timestamp,
    /// The failed deployment this one rolls back, when it is an automatic revert.
    pub reverts: Option<DeploymentId>,
    pub created_at: Timestamp,
    pub modified_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobSpec, TaskSpec};

    /// The store and the wire are bincode: every rollout type must round-trip through it.
    #[test]
    fn a_spec_with_checks_and_an_update_policy_round_trips_through_bincode() {
        let mut spec = JobSpec::exec("web", TaskSpec::exec("web", "httpd"));
        spec.groups[0].update.canary = 1;
        spec.groups[0].checks = vec![
            HealthCheck {
                name: "h".into(),
                kind: CheckKind::Http {
                    path: "/".into(),
                    port: Some(80),
                },
                interval: HumanDuration::from_secs(1),
                timeout: HumanDuration::from_secs(1),
                grace: HumanDuration::from_secs(0),
            },
            HealthCheck {
                name: "c".into(),
                kind: CheckKind::Command {
                    command: "true".into(),
                },
                interval: HumanDuration::from_secs(1),
                timeout: HumanDuration::from_secs(1),
                grace: HumanDuration::from_secs(0),
            },
        ];
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&spec, cfg).unwrap();
        let (back, _): (JobSpec, _) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, spec);
        let health = AllocHealth {
            status: HealthStatus::Healthy,
            message: "ok".into(),
        };
        let bytes = bincode::serde::encode_to_vec(&health, cfg).unwrap();
        let (back, _): (AllocHealth, _) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, health);
    }
}
