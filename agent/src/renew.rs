//! Certificate renewal: at two thirds of its lifetime, the agent asks a server for a new
//! certificate over the enrollment ALPN, authenticated by the certificate it still holds
//! (no token: a revoked or expired certificate does not get past the handshake). The new
//! key and certificate replace the files, and the next connection presents them.

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use windflow_certs::{CertRequest, TlsIdentity};
use windflow_protocol::enroll::{ALPN_ENROLL, EnrollRequest, EnrollResponse, JoinKind};
use windflow_protocol::messages::{ALPN_AGENT, VersionRange};

use crate::AgentConfig;
use crate::enroll::{ATTEMPT_TIMEOUT, EnrollError, ask};

/// The first wait after a failed renewal; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// When a certificate should be renewed: two thirds into its validity.
pub fn renew_at(cert_pem: &str) -> Result<SystemTime, windflow_certs::CertError> {
    let (not_before, not_after) = windflow_certs::validity_of(cert_pem)?;
    let life = not_after.duration_since(not_before).unwrap_or_default();
    Ok(not_before + life * 2 / 3)
}

/// Asks each server in turn for a new certificate for this node.
pub async fn renew_once(
    identity: &TlsIdentity,
    config: &AgentConfig,
) -> Result<TlsIdentity, EnrollError> {
    let key = CertRequest::new(&config.hostname)?;
    let request = EnrollRequest {
        versions: VersionRange::SUPPORTED,
        secret: String::new(),
        kind: JoinKind::Agent,
        name: config.hostname.clone(),
        csr_pem: key.csr_pem.clone(),
        ips: Vec::new(),
    };
    let client = windflow_certs::quinn_client_config(identity, ALPN_ENROLL)?;
    let mut last_error = "no server address given".to_owned();
    for server in &config.servers {
        let via = server.to_string();
        let answer =
            tokio::time::timeout(ATTEMPT_TIMEOUT, ask(&client, &via, &request, config.bind)).await;
        match answer {
            Ok(Ok(EnrollResponse::Node { cert_pem, .. })) => {
                return Ok(TlsIdentity {
                    ca_pem: identity.ca_pem.clone(),
                    cert: key.into_issued(cert_pem),
                });
            }
            Ok(Ok(EnrollResponse::Refused { reason })) => {
                return Err(EnrollError::Refused { via, reason });
            }
            Ok(Ok(EnrollResponse::Server { .. })) => return Err(EnrollError::UnexpectedAnswer),
            Ok(Err(e)) => last_error = format!("{via}: {e}"),
            Err(_) => last_error = format!("{via}: no answer within {ATTEMPT_TIMEOUT:?}"),
        }
    }
    Err(EnrollError::Unreachable(last_error))
}

/// Renews the certificate before each one ends, until `shutdown`: writes the new files (if
/// the agent has a data dir) and makes `endpoint` present the new certificate from its
/// next connection.
pub(crate) async fn run(
    config: AgentConfig,
    mut endpoint: quinn::Endpoint,
    shutdown: CancellationToken,
) {
    let mut identity = config.identity.clone();
    let mut retry = FIRST_RETRY;
    loop {
        let wait = match renew_at(&identity.cert.cert_pem) {
            Ok(at) => at.duration_since(SystemTime::now()).unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read this node's certificate; not renewing it");
                return;
            }
        };
        tracing::debug!(in_secs = wait.as_secs(), "next certificate renewal");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match renew_once(&identity, &config).await.and_then(|fresh| {
            if let Some(dir) = &config.data_dir {
                fresh.write(dir, "node")?;
            }
            let client = windflow_certs::quinn_client_config(&fresh, ALPN_AGENT)?;
            Ok((fresh, client))
        }) {
            Ok((fresh, client)) => {
                endpoint.set_default_client_config(client);
                identity = fresh;
                retry = FIRST_RETRY;
                tracing::info!("certificate renewed");
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_secs = retry.as_secs(), "certificate renewal failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use windflow_certs::{CertRequest, ClusterCa, NodeCertPlan};
    use windflow_protocol::NodeId;

    use super::*;

    #[test]
    fn renewal_comes_two_thirds_into_the_validity() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create(dir.path()).unwrap();
        let validity = Duration::from_secs(3000);
        let plan = NodeCertPlan::new(validity).unwrap();
        let request = CertRequest::node(NodeId(1)).unwrap();
        let pem = ca
            .sign_node_csr_planned(NodeId(1), &request.csr_pem, &plan)
            .unwrap();
        let (not_before, not_after) = windflow_certs::validity_of(&pem).unwrap();
        let end = not_after.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert_eq!(end / 1000, plan.not_after_ms() / 1000);
        // Back-dated by a tenth of a short validity, not by a whole hour.
        let span = not_after.duration_since(not_before).unwrap();
        assert_eq!(span, Duration::from_secs(3300));
        let at = renew_at(&pem).unwrap();
        assert_eq!(
            at.duration_since(not_before).unwrap(),
            Duration::from_secs(2200)
        );
    }
}
