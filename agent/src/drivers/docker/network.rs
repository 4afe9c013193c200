//! The per-agent networks a stack's containers share: made when the first container needs
//! one, removed once its last container is gone. Containers on one reach each other by
//! their aliases (the engine's DNS), as compose's services do.

use std::collections::HashMap;

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::InspectNetworkOptions;

use super::spec::network_name;
use super::{DockerDriver, DockerError, LABEL_AGENT, describe, not_found};

impl DockerDriver {
    /// Held by whoever makes, joins or removes a network, from the look-up to the
    /// container's start (or the removal): the engine may accept two networks of one name
    /// made at once (a stack's replicas start together), and a network removed between
    /// its look-up and a container's start would fail that start.
    pub async fn network_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.networks.lock().await
    }

    /// Makes this agent's network `network` (a bridge) unless the engine has it; call it
    /// holding [`DockerDriver::network_lock`].
    pub async fn ensure_network(&self, network: &str) -> Result<(), DockerError> {
        let docker = self.client().await?;
        let name = network_name(self.agent(), network);
        match docker
            .inspect_network(&name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(DockerError::engine("inspect the network")(e)),
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(
                LABEL_AGENT.to_owned(),
                self.agent().to_owned(),
            )])),
            ..Default::default()
        };
        match docker.create_network(request).await {
            Ok(_) => {
                tracing::info!(network = %name, "network created");
                Ok(())
            }
            // Made meanwhile by another task of the stack.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(DockerError::engine("create the network")(e)),
        }
    }

    /// Removes this agent's network `network` if no container is attached any more; one
    /// in use or already gone is left as it is.
    pub async fn remove_network_if_unused(&self, network: &str) {
        let Ok(docker) = self.client().await else {
            return;
        };
        let name = network_name(self.agent(), network);
        let _one_at_a_time = self.network_lock().await;
        let in_use = match docker
            .inspect_network(&name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(info) => info.containers.is_some_and(|c| !c.is_empty()),
            Err(_) => return,
        };
        if in_use {
            return;
        }
        match docker.remove_network(&name).await {
            Ok(()) => tracing::info!(network = %name, "network removed"),
            Err(e) if not_found(&e) => {}
            // Another container joined it meanwhile (403/409): it stays.
            Err(e) => tracing::debug!(network = %name, error = %describe(&e), "network kept"),
        }
    }
}
