//! The docker driver's task settings, and the host ports an allocation's containers got.
//!
//! CPU and memory limits are not here: they come from the task's
//! [`crate::alloc::Resources`], so what the scheduler counts is what the engine enforces.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A container to run: its image, what it runs, and what of the host it gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerConfig {
    /// `busybox:latest`, `registry.example/app:1.4`; pulled when the engine lacks it.
    pub image: String,
    /// The program to run, replacing the image's `CMD` (with `args` after it).
    #[serde(default)]
    pub command: Option<String>,
    /// Arguments to `command`, or the whole `CMD` when there is no `command`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Replaces the image's `ENTRYPOINT` when given.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// The directory the command starts in, inside the container.
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Extra container labels; the `windflow.` ones are the agent's and cannot be set.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A network of the node to join instead of the engine's default bridge; the agent
    /// makes it (`windflow-<agent>-<network>`) when missing. A stack's services share one.
    #[serde(default)]
    pub network: Option<String>,
    /// Names the container answers to on `network` (a stack's service name).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The engine's own health check, run inside the container.
    #[serde(default)]
    pub healthcheck: Option<ContainerHealthcheck>,
    /// Tasks of the same job on the same node whose containers must run (or be healthy)
    /// before this one is created: a stack's `depends_on`, waited for by the agent.
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
}

/// A container health check the engine runs (compose's `healthcheck`, docker's
/// `HEALTHCHECK`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerHealthcheck {
    /// In the engine's form: `["CMD", prog, args…]`, `["CMD-SHELL", "cmd"]`, or `["NONE"]`
    /// (the image's check turned off).
    pub test: Vec<String>,
    pub interval: Option<crate::time::HumanDuration>,
    pub timeout: Option<crate::time::HumanDuration>,
    /// Failures in this long after the start do not count.
    pub start_period: Option<crate::time::HumanDuration>,
    /// Failures in a row that make the container unhealthy.
    pub retries: Option<u32>,
}

/// One task a container waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// The task's name in the same job.
    pub task: String,
    pub condition: DependencyCondition,
}

/// What a dependency must be before the dependent container is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencyCondition {
    /// Its container runs.
    Started,
    /// Its container's engine health check reports healthy.
    Healthy,
}

impl DependencyCondition {
    pub fn as_str(&self) -> &'static str {
        match self {
            DependencyCondition::Started => "service_started",
            DependencyCondition::Healthy => "service_healthy",
        }
    }
}

impl DockerConfig {
    /// The container's `CMD`, if the task replaces the image's.
    pub fn cmd(&self) -> Option<Vec<String>> {
        match (&self.command, self.args.is_empty()) {
            (None, true) => None,
            (command, _) => Some(command.iter().chain(&self.args).cloned().collect()),
        }
    }
}

/// A container port published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The name the port is reported under (`http`); unique within the task.
    pub label: String,
    pub container_port: u16,
    /// A fixed host port, or `None` for one the engine picks (reported back per allocation).
    #[serde(default)]
    pub host_port: Option<u16>,
    #[serde(default)]
    pub protocol: PortProtocol,
    /// The host address it is published on (`127.0.0.1`); `None`: every address.
    #[serde(default)]
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    #[default]
    Tcp,
    Udp,
}

impl PortProtocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

/// A host directory or a named volume mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub kind: MountKind,
    /// The host path (bind) or the volume's name (volume).
    pub source: String,
    /// Where it appears in the container (absolute).
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path; it must exist on the node.
    Bind,
    /// A named volume, created by the engine when missing.
    Volume,
}

/// A host port a running allocation's container actually got, as its node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AllocPort {
    pub task: String,
    /// The [`PortMapping::label`].
    pub label: String,
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: PortProtocol,
}

/// The most ports an allocation reports (and keeps).
pub const ALLOC_PORTS_MAX: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(command: Option<&str>, args: &[&str]) -> DockerConfig {
        DockerConfig {
            image: "busybox".into(),
            command: command.map(Into::into),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            entrypoint: None,
            workdir: None,
            ports: Vec::new(),
            mounts: Vec::new(),
            labels: BTreeMap::new(),
            network: None,
            aliases: Vec::new(),
            healthcheck: None,
            depends_on: Vec::new(),
        }
    }

    #[test]
    fn cmd_is_command_then_args_or_the_images() {
        assert_eq!(cfg(None, &[]).cmd(), None);
        assert_eq!(
            cfg(Some("httpd"), &["-f"]).cmd(),
            Some(vec!["httpd".to_owned(), "-f".to_owned()])
        );
        assert_eq!(cfg(None, &["-f"]).cmd(), Some(vec!["-f".to_owned()]));
    }
}
