//! The connection to the local engine and what it tells about itself.
//!
//! The engine is found the way the docker CLI finds it (`DOCKER_HOST`, else
//! `/var/run/docker.sock`); the API version is negotiated down to the engine's on first use
//! (an engine older than bollard's default refuses it otherwise), and a connection that
//! fails is tried again on the next call rather than kept broken.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::DockerError;

/// How long a fingerprint may take before the driver is reported unusable.
const FINGERPRINT_WITHIN: Duration = Duration::from_secs(5);

/// The docker driver of one agent; shared by batch runs and allocations.
pub struct DockerDriver {
    /// This agent's own ID ([`super::LABEL_AGENT`]), kept in its store.
    agent: String,
    client: OnceCell<bollard::Docker>,
    /// Held while a network is looked up and made: the engine may accept two networks of
    /// one name made at once (a stack's replicas start together).
    pub(super) networks: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for DockerDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerDriver")
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl DockerDriver {
    pub fn new(agent: String) -> DockerDriver {
        DockerDriver {
            agent,
            client: OnceCell::new(),
            networks: tokio::sync::Mutex::new(()),
        }
    }

    /// The agent ID its containers are labelled with.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    pub(super) async fn client(&self) -> Result<&bollard::Docker, DockerError> {
        self.client
            .get_or_try_init(|| async {
                let docker = bollard::Docker::connect_with_local_defaults()
                    .map_err(|e| DockerError::Unreachable(e.to_string()))?;
                docker
                    .negotiate_version()
                    .await
                    .map_err(|e| DockerError::Unreachable(super::describe(&e)))
            })
            .await
    }

    /// Whether the engine is usable here and what it is: `driver.docker.version`,
    /// `driver.docker.os`, `driver.docker.cgroup_driver` (and `…cgroup_version`,
    /// `…api_version`, and `…agent`: the [`super::LABEL_AGENT`] its containers carry). `Err` says why it is not usable; the agent then does not offer
    /// the driver.
    pub async fn fingerprint(&self) -> Result<BTreeMap<String, String>, DockerError> {
        let probe = async {
            let docker = self.client().await?;
            let version = docker
                .version()
                .await
                .map_err(|e| DockerError::Unreachable(super::describe(&e)))?;
            let info = docker
                .info()
                .await
                .map_err(|e| DockerError::Unreachable(super::describe(&e)))?;
            let mut attrs = BTreeMap::new();
            let mut put = |k: &str, v: Option<String>| {
                if let Some(v) = v.filter(|v| !v.is_empty()) {
                    attrs.insert(format!("driver.docker.{k}"), v);
                }
            };
            put("version", version.version);
            put("api_version", version.api_version);
            put("os", info.operating_system.or(version.os));
            put("os_type", info.os_type);
            put("cgroup_driver", info.cgroup_driver.map(|d| d.to_string()));
            put("cgroup_version", info.cgroup_version.map(|v| v.to_string()));
            // Which containers are this node's: `docker ps --filter label=windflow.agent=…`.
            put("agent", Some(self.agent.clone()));
            Ok(attrs)
        };
        tokio::time::timeout(FINGERPRINT_WITHIN, probe)
            .await
            .unwrap_or_else(|_| {
                Err(DockerError::Unreachable(format!(
                    "no answer within {}s",
                    FINGERPRINT_WITHIN.as_secs()
                )))
            })
    }
}
