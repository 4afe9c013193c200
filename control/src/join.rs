//! A new server's side of joining with a join token: before anything else starts, it asks
//! a running server (pinned by the token's CA fingerprint) for its certificate and the
//! cluster CA, and keeps them in its data dir. Its key never leaves it. The exchange itself
//! is the agent's ([`windflow_agent::enroll`]).

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context as _, bail};
use windflow_agent::enroll::ask_servers;
use windflow_certs::{CertRequest, ClusterCa};
use windflow_protocol::enroll::{EnrollRequest, EnrollResponse, JoinKind, JoinToken};
use windflow_protocol::messages::VersionRange;

/// Where a joining server finds the cluster, and the token that lets it in.
#[derive(Debug, Clone)]
pub struct JoinWithToken {
    pub token: JoinToken,
    /// QUIC `host:port` of running servers, tried in order.
    pub via: Vec<String>,
}

/// Enrolls server `name` and writes the CA to `ca_dir` and the server certificate to
/// `tls_dir` (`server.crt`, `server.key`). Tries each server of `join.via` until one
/// answers; a refusal (a bad token) is final.
pub async fn enroll_server(
    join: &JoinWithToken,
    name: &str,
    ips: &[IpAddr],
    ca_dir: &Path,
    tls_dir: &Path,
) -> anyhow::Result<ClusterCa> {
    let request_key = CertRequest::new(&format!("server-{name}"))?;
    let request = EnrollRequest {
        versions: VersionRange::SUPPORTED,
        secret: join.token.secret.clone(),
        kind: JoinKind::Server,
        name: name.to_owned(),
        csr_pem: request_key.csr_pem.clone(),
        ips: ips.iter().map(ToString::to_string).collect(),
    };
    let (via, answer) = ask_servers(&join.token, &join.via, &request, None).await?;
    match answer {
        EnrollResponse::Server {
            cert_pem,
            ca_cert_pem,
            ca_key_pem,
        } => {
            let ca = ClusterCa::install(ca_dir, &ca_cert_pem, &ca_key_pem)
                .context("keeping the cluster CA")?;
            request_key
                .into_issued(cert_pem)
                .write(tls_dir, "server")
                .context("keeping the server certificate")?;
            tracing::info!(%via, fingerprint = %ca.fingerprint_sha256(), "enrolled with a join token");
            Ok(ca)
        }
        EnrollResponse::Refused { reason } => {
            bail!("server {via} refused to enroll this server: {reason}")
        }
        EnrollResponse::Node { .. } => {
            bail!("server {via} answered with a node certificate, not a server's")
        }
    }
}
