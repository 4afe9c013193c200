//! One container's life through the engine: create, start, wait, stop (the engine's grace,
//! then SIGKILL), remove; finding containers again by their labels; the host ports they got.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use windflow_protocol::{AllocPort, DockerConfig, TaskSpec};

use super::spec::{create_body, port_key};
use super::{DockerDriver, DockerError, LABEL_AGENT, Owner, describe, not_found};

/// A container this agent created or found again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
}

impl Container {
    /// The 12-character form `docker ps` shows.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

/// How a container's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerExit {
    pub code: i64,
    /// The kernel's OOM killer ended it (past its memory limit).
    pub oom_killed: bool,
    /// The engine's own error, when it could not run the process at all.
    pub error: Option<String>,
}

/// A container found by its labels.
#[derive(Debug, Clone)]
pub struct Found {
    pub container: Container,
    pub labels: HashMap<String, String>,
    /// `None` while it runs.
    pub exit: Option<ContainerExit>,
    /// When it started, in the engine's RFC 3339 form.
    pub started_at: Option<String>,
    /// The engine's verdict of its health check: `starting`, `healthy`, `unhealthy`;
    /// `None` without one.
    pub health: Option<String>,
}

impl DockerDriver {
    /// Creates the container of `task` for `owner`. A leftover container of the same
    /// name (an earlier try that went no further) is removed first.
    pub async fn create(
        &self,
        task: &TaskSpec,
        cfg: &DockerConfig,
        env: &BTreeMap<String, String>,
        owner: &Owner,
    ) -> Result<Container, DockerError> {
        let docker = self.client().await?;
        let name = owner.container_name(self.agent());
        let body = create_body(task, cfg, env, owner, self.agent());
        let options = || CreateContainerOptionsBuilder::default().name(&name).build();
        let created = match docker.create_container(Some(options()), body.clone()).await {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                self.remove(&name).await?;
                docker.create_container(Some(options()), body).await
            }
            other => other,
        }
        .map_err(DockerError::engine("create the container"))?;
        for warning in created.warnings {
            tracing::warn!(container = %created.id, %warning, "the engine warns");
        }
        Ok(Container { id: created.id })
    }

    /// Starts it; one already running is fine (304).
    pub async fn start(&self, c: &Container) -> Result<(), DockerError> {
        match self.client().await?.start_container(&c.id, None).await {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            other => other.map_err(DockerError::engine("start the container")),
        }
    }

    /// Waits for the container to stop running, however long that takes.
    pub async fn wait(&self, c: &Container) -> Result<ContainerExit, DockerError> {
        let docker = self.client().await?;
        loop {
            let options = WaitContainerOptionsBuilder::default()
                .condition("not-running")
                .build();
            let mut wait = docker.wait_container(&c.id, Some(options));
            match wait.next().await {
                Some(Ok(_))
                | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => {
                    return self.exit_of(c).await;
                }
                Some(Err(e)) if not_found(&e) => {
                    return Err(DockerError::Engine {
                        what: "wait for the container",
                        why: "it was removed".into(),
                    });
                }
                // The request timed out or the stream ended early: look again.
                Some(Err(e)) => tracing::debug!(error = %describe(&e), "waiting again"),
                None => {}
            }
            if let Some(exit) = self.inspect_exit(c).await? {
                return Ok(exit);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The exit of a container that no longer runs.
    async fn exit_of(&self, c: &Container) -> Result<ContainerExit, DockerError> {
        self.inspect_exit(c)
            .await?
            .ok_or_else(|| DockerError::Engine {
                what: "report the container's exit",
                why: "it still runs".into(),
            })
    }

    /// `None` while it runs (or is created, restarting, paused).
    async fn inspect_exit(&self, c: &Container) -> Result<Option<ContainerExit>, DockerError> {
        let docker = self.client().await?;
        let info = docker
            .inspect_container(&c.id, None::<InspectContainerOptions>)
            .await
            .map_err(DockerError::engine("inspect the container"))?;
        let state = info.state.unwrap_or_default();
        let ended = matches!(
            state.status,
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
        );
        Ok(ended.then(|| ContainerExit {
            code: state.exit_code.unwrap_or(-1),
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.filter(|e| !e.is_empty()),
        }))
    }

    /// Stops the container: SIGTERM (or its image's stop signal), then SIGKILL from the
    /// engine after `grace`. One already stopped or gone is fine.
    pub async fn stop(&self, c: &Container, grace: Duration) -> Result<(), DockerError> {
        let docker = self.client().await?;
        let secs = i32::try_from(grace.as_secs().max(1)).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(secs).build();
        match docker.stop_container(&c.id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(DockerError::engine("stop the container")(e)),
        }
    }

    /// SIGKILL now (a run's timeout).
    pub async fn kill(&self, c: &Container) -> Result<(), DockerError> {
        let docker = self.client().await?;
        let options = KillContainerOptionsBuilder::default()
            .signal("KILL")
            .build();
        match docker.kill_container(&c.id, Some(options)).await {
            Ok(()) => Ok(()),
            // 409: not running any more.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(DockerError::engine("kill the container")(e)),
        }
    }

    /// Removes a container (by ID or name), killing it if it runs; one already gone is fine.
    pub async fn remove(&self, id_or_name: &str) -> Result<(), DockerError> {
        let docker = self.client().await?;
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match docker.remove_container(id_or_name, Some(options)).await {
            Err(e) if !not_found(&e) => Err(DockerError::engine("remove the container")(e)),
            _ => Ok(()),
        }
    }

    /// This agent's containers with all of `selector`'s labels, running or not, newest first.
    pub async fn find(&self, selector: &[(&str, String)]) -> Result<Vec<Found>, DockerError> {
        let docker = self.client().await?;
        let mut labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.push(format!("{LABEL_AGENT}={}", self.agent()));
        let filters = HashMap::from([("label".to_owned(), labels)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = docker
            .list_containers(Some(options))
            .await
            .map_err(DockerError::engine("list containers"))?;
        let mut found = Vec::with_capacity(list.len());
        for summary in list {
            let Some(id) = summary.id else { continue };
            let container = Container { id };
            let info = match docker
                .inspect_container(&container.id, None::<InspectContainerOptions>)
                .await
            {
                Ok(info) => info,
                // Removed between the list and now.
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(DockerError::engine("inspect the container")(e)),
            };
            let state = info.state.unwrap_or_default();
            let health = state
                .health
                .as_ref()
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none");
            let running = !matches!(
                state.status,
                Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
            );
            found.push((
                summary.created.unwrap_or(0),
                Found {
                    container,
                    labels: summary.labels.unwrap_or_default(),
                    exit: (!running).then(|| ContainerExit {
                        code: state.exit_code.unwrap_or(-1),
                        oom_killed: state.oom_killed.unwrap_or(false),
                        error: state.error.filter(|e| !e.is_empty()),
                    }),
                    started_at: state.started_at,
                    health,
                },
            ));
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        Ok(found.into_iter().map(|(_, f)| f).collect())
    }

    /// Removes every container of this agent with `selector`'s labels.
    pub async fn remove_all(&self, selector: &[(&str, String)]) -> Result<usize, DockerError> {
        let found = self.find(selector).await?;
        for f in &found {
            self.remove(&f.container.id).await?;
        }
        Ok(found.len())
    }

    /// The host ports the container got for the task's port mappings (IPv4 preferred).
    pub async fn ports(
        &self,
        c: &Container,
        task: &str,
        cfg: &DockerConfig,
    ) -> Result<Vec<AllocPort>, DockerError> {
        let docker = self.client().await?;
        let info = docker
            .inspect_container(&c.id, None::<InspectContainerOptions>)
            .await
            .map_err(DockerError::engine("inspect the container"))?;
        let bound = info
            .network_settings
            .and_then(|n| n.ports)
            .unwrap_or_default();
        let mut ports = Vec::new();
        for p in &cfg.ports {
            let Some(Some(bindings)) = bound.get(&port_key(p)) else {
                continue;
            };
            let mut bindings: Vec<_> = bindings
                .iter()
                .filter_map(|b| {
                    let port = b.host_port.as_deref()?.parse::<u16>().ok()?;
                    Some((b.host_ip.clone().unwrap_or_default(), port))
                })
                .collect();
            bindings.sort_by_key(|(ip, _)| ip.contains(':'));
            if let Some((host_ip, host_port)) = bindings.into_iter().next() {
                ports.push(AllocPort {
                    task: task.to_owned(),
                    label: p.label.clone(),
                    host_ip,
                    host_port,
                    container_port: p.container_port,
                    protocol: p.protocol,
                });
            }
        }
        Ok(ports)
    }
}
