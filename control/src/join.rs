//! A new server's side of joining with a join token: before anything else starts, it asks
//! a running server (pinned by the token's CA fingerprint) for its certificate and the
//! cluster CA, and keeps them in its data dir. Its key never leaves it.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use windflow_certs::wire::{read_frame, write_frame};
use windflow_certs::{CertRequest, ClusterCa, SERVER_NAME};
use windflow_protocol::enroll::{EnrollRequest, EnrollResponse, JoinKind, JoinToken};
use windflow_protocol::messages::VersionRange;

/// How long one attempt at one server may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

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
    let client = windflow_certs::quinn_enroll_client_config(&join.token.ca_fingerprint)?;
    let mut last_error = None;
    for via in &join.via {
        let answer = match tokio::time::timeout(ATTEMPT_TIMEOUT, ask(&client, via, &request)).await
        {
            Ok(answer) => answer,
            Err(_) => Err(anyhow::anyhow!("no answer within {ATTEMPT_TIMEOUT:?}")),
        };
        match answer {
            Ok(EnrollResponse::Server {
                cert_pem,
                ca_cert_pem,
                ca_key_pem,
            }) => {
                let ca = ClusterCa::install(ca_dir, &ca_cert_pem, &ca_key_pem)
                    .context("keeping the cluster CA")?;
                request_key
                    .into_issued(cert_pem)
                    .write(tls_dir, "server")
                    .context("keeping the server certificate")?;
                tracing::info!(%via, fingerprint = %ca.fingerprint_sha256(), "enrolled with a join token");
                return Ok(ca);
            }
            Ok(EnrollResponse::Refused { reason }) => {
                bail!("server {via} refused to enroll this server: {reason}")
            }
            Err(e) => {
                tracing::warn!(%via, error = %format!("{e:#}"), "enrollment attempt failed");
                last_error = Some(e.context(format!("enrolling through {via}")));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no server address to enroll through")))
}

async fn ask(
    client: &quinn::ClientConfig,
    via: &str,
    request: &EnrollRequest,
) -> anyhow::Result<EnrollResponse> {
    let addr: SocketAddr = tokio::net::lookup_host(via)
        .await
        .with_context(|| format!("resolving `{via}`"))?
        .next()
        .with_context(|| format!("`{via}` resolves to no address"))?;
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint = quinn::Endpoint::client(bind).context("opening a QUIC client")?;
    endpoint.set_default_client_config(client.clone());
    let conn = endpoint
        .connect(addr, SERVER_NAME)?
        .await
        .context("connecting (is the join token's CA fingerprint this cluster's?)")?;
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, request).await?;
    send.finish()?;
    let response = read_frame::<EnrollResponse>(&mut recv)
        .await?
        .context("the server closed the stream without an answer")?;
    conn.close(0u32.into(), b"enrolled");
    endpoint.wait_idle().await;
    Ok(response)
}
