//! An allocation's docker task: a container of the local engine, started (its image pulled
//! first when missing, the steps in the allocation's events), followed to its exit for the
//! restart policy, stopped with the agent's grace period before the engine kills it.
//!
//! The engine keeps the container running while the agent is away. A runner resuming
//! after an agent restart finds it again by its labels (allocation, task, this agent) and
//! follows it, or hands the exit it had meanwhile to the restart policy; it never creates
//! a second one.

use std::sync::Arc;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windflow_protocol::{AllocEventKind, DependencyCondition, DockerConfig, TaskSpec};

use super::runner::{Change, Report, Supervision};
use crate::drivers::docker::{Container, ContainerExit, DockerError, Owner};
use crate::drivers::exec::ProcessExit;

/// How often the containers a task depends on are looked at while it waits for them.
const DEPENDENCY_POLL: Duration = Duration::from_millis(500);

/// A docker task of an allocation and how to run it.
pub(super) struct ContainerTask {
    pub owner: Owner,
    pub cfg: Box<DockerConfig>,
    pub spec: TaskSpec,
    pub how: Arc<Supervision>,
    pub report: Report,
}

/// How a container's end reads to the restart policy.
fn process_exit(exit: ContainerExit) -> ProcessExit {
    if exit.oom_killed {
        return ProcessExit::Error(format!(
            "out of memory: killed past its memory_mb (exit code {})",
            exit.code
        ));
    }
    match (exit.error, i32::try_from(exit.code)) {
        (Some(why), _) => ProcessExit::Error(why),
        (None, Ok(code)) => ProcessExit::Code(code),
        (None, Err(_)) => ProcessExit::Error(format!("exit status {}", exit.code)),
    }
}

impl ContainerTask {
    /// Runs the container once: found again by its labels when `resume`, else created and
    /// started. How it exited, or `None` when it was stopped.
    pub(super) async fn once(&self, resume: bool, stop: &CancellationToken) -> Option<ProcessExit> {
        let docker = &self.how.docker;
        if resume {
            match docker.find(&self.owner.selector()).await {
                Ok(found) => {
                    if let Some(f) = found.into_iter().next() {
                        match f.exit {
                            None => {
                                tracing::info!(
                                    container = f.container.short_id(),
                                    "re-attached to the running container"
                                );
                                (self.report)(Change::Reattached);
                                self.report_ports(&f.container).await;
                                return self.follow(f.container, stop).await;
                            }
                            Some(exit) => {
                                tracing::info!(
                                    container = f.container.short_id(),
                                    code = exit.code,
                                    "the container ended while the agent was down"
                                );
                                return Some(process_exit(exit));
                            }
                        }
                    }
                }
                Err(e) => return Some(ProcessExit::Error(e.to_string())),
            }
        }
        match self.wait_for_dependencies(stop).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(ProcessExit::Error(e.to_string())),
        }
        if stop.is_cancelled() {
            return None;
        }
        match self.start().await {
            Ok(c) => self.follow(c, stop).await,
            Err(e) => Some(ProcessExit::Error(e.to_string())),
        }
    }

    /// Waits until the containers of the tasks this one depends on (same job, this agent)
    /// run, or are healthy, as each dependency asks; `false` when stopped first.
    async fn wait_for_dependencies(&self, stop: &CancellationToken) -> Result<bool, DockerError> {
        for dep in &self.cfg.depends_on {
            let selector = self.owner.sibling_selector(&dep.task);
            let mut told = false;
            loop {
                let found = self.how.docker.find(&selector).await?;
                let ready = found.iter().any(|f| {
                    f.exit.is_none()
                        && match dep.condition {
                            DependencyCondition::Started => true,
                            DependencyCondition::Healthy => f.health.as_deref() == Some("healthy"),
                        }
                });
                if ready {
                    if told {
                        tracing::info!(dependency = %dep.task, "dependency ready");
                    }
                    break;
                }
                if !told {
                    told = true;
                    let what = match dep.condition {
                        DependencyCondition::Started => "to run",
                        DependencyCondition::Healthy => "to be healthy",
                    };
                    (self.report)(Change::Note {
                        kind: AllocEventKind::TaskSetup,
                        message: format!(
                            "task {}: waiting for {} {what} ({})",
                            self.spec.name,
                            dep.task,
                            dep.condition.as_str()
                        ),
                    });
                }
                tokio::select! {
                    _ = stop.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(DEPENDENCY_POLL) => {}
                }
            }
        }
        Ok(true)
    }

    /// A fresh container: the previous one (an earlier exit's) removed, the image pulled
    /// when missing, then created and started.
    async fn start(&self) -> Result<Container, DockerError> {
        let docker = &self.how.docker;
        docker.remove_all(&self.owner.selector()).await?;
        let report = self.report.clone();
        docker
            .ensure_image(&self.cfg.image, |step| {
                report(Change::Note {
                    kind: AllocEventKind::TaskSetup,
                    message: format!("task {}: {step}", self.spec.name),
                })
            })
            .await?;
        // The network stays until the container has joined it (at its start).
        let joining = match &self.cfg.network {
            Some(network) => {
                let guard = docker.network_lock().await;
                docker.ensure_network(network).await?;
                Some(guard)
            }
            None => None,
        };
        let c = docker
            .create(&self.spec, &self.cfg, &self.spec.env, &self.owner)
            .await?;
        if let Err(e) = docker.start(&c).await {
            let _ = docker.remove(&c.id).await;
            return Err(e);
        }
        drop(joining);
        tracing::info!(container = c.short_id(), "container started");
        (self.report)(Change::Started {
            task: self.spec.name.clone(),
            what: format!("container {}", c.short_id()),
        });
        self.report_ports(&c).await;
        Ok(c)
    }

    async fn report_ports(&self, c: &Container) {
        if self.cfg.ports.is_empty() {
            return;
        }
        match self.how.docker.ports(c, &self.spec.name, &self.cfg).await {
            Ok(ports) => (self.report)(Change::Ports {
                task: self.spec.name.clone(),
                ports,
            }),
            Err(e) => tracing::warn!(error = %e, "cannot read the container's host ports"),
        }
    }

    fn clear_ports(&self) {
        if !self.cfg.ports.is_empty() {
            (self.report)(Change::Ports {
                task: self.spec.name.clone(),
                ports: Vec::new(),
            });
        }
    }

    /// Follows the container to its exit, or stops and removes it when `stop` is
    /// cancelled (SIGTERM, the grace period, then SIGKILL from the engine).
    async fn follow(&self, c: Container, stop: &CancellationToken) -> Option<ProcessExit> {
        let docker = &self.how.docker;
        let ended = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                if let Err(e) = docker.stop(&c, self.how.grace).await {
                    tracing::warn!(error = %e, "cannot stop the container");
                }
                if let Err(e) = docker.remove(&c.id).await {
                    tracing::warn!(error = %e, "cannot remove the container");
                }
                if let Some(network) = &self.cfg.network {
                    docker.remove_network_if_unused(network).await;
                }
                tracing::info!(container = c.short_id(), "container stopped");
                None
            }
            exit = docker.wait(&c) => Some(match exit {
                Ok(exit) => process_exit(exit),
                Err(e) => ProcessExit::Error(e.to_string()),
            }),
        };
        self.clear_ports();
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containers_end_reads_as_the_policy_expects() {
        let exit = |code, oom_killed, error: Option<&str>| ContainerExit {
            code,
            oom_killed,
            error: error.map(Into::into),
        };
        assert_eq!(process_exit(exit(0, false, None)), ProcessExit::Code(0));
        assert_eq!(process_exit(exit(137, false, None)), ProcessExit::Code(137));
        let oom = process_exit(exit(137, true, None)).to_string();
        assert!(oom.contains("out of memory"), "{oom}");
        assert_eq!(
            process_exit(exit(127, false, Some("exec: no such file"))),
            ProcessExit::Error("exec: no such file".into())
        );
    }
}
