//! The newcomer's side of enrollment (ALPN `windflow-enroll/1`), shared by agents and by
//! servers joining with a token: connect without a client certificate, trust the server
//! only if its chain holds the CA the join token names, send one request, read one answer.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use windflow_certs::wire::{read_frame, write_frame};
use windflow_certs::{CertRequest, IssuedCert, SERVER_NAME, TlsIdentity};
use windflow_protocol::NodeId;
use windflow_protocol::enroll::{EnrollRequest, EnrollResponse, JoinKind, JoinToken};
use windflow_protocol::messages::VersionRange;

/// How long one attempt at one server may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// A server answered and said no (a used-up, expired, revoked or unknown token): final.
    #[error("server {via} refused the enrollment: {reason}")]
    Refused { via: String, reason: String },
    /// No server could be asked; the last attempt's error.
    #[error("no server could be reached to enroll: {0}")]
    Unreachable(String),
    #[error("the server answered with something else than a node certificate")]
    UnexpectedAnswer,
    #[error("the server sent a CA that is not the one the join token names")]
    WrongCa,
    #[error(transparent)]
    Tls(#[from] windflow_certs::CertError),
}

/// Sends `request` to each of `servers` (`host:port`) in turn until one answers; a refusal
/// is an answer. `bind` is the local address of the QUIC client (any, if `None`).
pub async fn ask_servers(
    token: &JoinToken,
    servers: &[String],
    request: &EnrollRequest,
    bind: Option<IpAddr>,
) -> Result<(String, EnrollResponse), EnrollError> {
    let client = windflow_certs::quinn_enroll_client_config(&token.ca_fingerprint)?;
    let mut last_error = "no server address given".to_owned();
    for via in servers {
        let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, ask(&client, via, request, bind)).await;
        match answer {
            Ok(Ok(response)) => return Ok((via.clone(), response)),
            Ok(Err(e)) => {
                tracing::warn!(%via, error = %e, "enrollment attempt failed");
                last_error = format!("{via}: {e}");
            }
            Err(_) => {
                tracing::warn!(%via, "no enrollment answer within {ATTEMPT_TIMEOUT:?}");
                last_error = format!("{via}: no answer within {ATTEMPT_TIMEOUT:?}");
            }
        }
    }
    Err(EnrollError::Unreachable(last_error))
}

/// Enrolls this host as a node: a fresh key (which never leaves it), a CSR with the
/// token's secret, and back a node certificate. Writes `ca.crt`, `node.crt` and `node.key`
/// (0600, dir 0700) into `data_dir`.
pub async fn enroll_agent(
    token: &JoinToken,
    servers: &[SocketAddr],
    hostname: &str,
    bind: Option<IpAddr>,
    data_dir: &Path,
) -> Result<(NodeId, TlsIdentity), EnrollError> {
    let key = CertRequest::new(hostname)?;
    let request = EnrollRequest {
        versions: VersionRange::SUPPORTED,
        secret: token.secret.clone(),
        kind: JoinKind::Agent,
        name: hostname.to_owned(),
        csr_pem: key.csr_pem.clone(),
        ips: Vec::new(),
    };
    let servers: Vec<String> = servers.iter().map(ToString::to_string).collect();
    let (via, answer) = ask_servers(token, &servers, &request, bind).await?;
    let (node, cert_pem, ca_pem) = match answer {
        EnrollResponse::Node {
            node,
            cert_pem,
            ca_cert_pem,
        } => (node, cert_pem, ca_cert_pem),
        EnrollResponse::Refused { reason } => return Err(EnrollError::Refused { via, reason }),
        EnrollResponse::Server { .. } => return Err(EnrollError::UnexpectedAnswer),
    };
    if windflow_certs::pem_fingerprint(&ca_pem)? != token.ca_fingerprint {
        return Err(EnrollError::WrongCa);
    }
    let identity = TlsIdentity {
        ca_pem,
        cert: key.into_issued(cert_pem),
    };
    identity.write(data_dir, "node")?;
    tracing::info!(%node, %via, "enrolled with a join token");
    Ok((node, identity))
}

/// Whether `data_dir` already holds this agent's identity (so it needs no token).
pub fn has_identity(data_dir: &Path) -> bool {
    IssuedCert::exists(data_dir, "node") && data_dir.join("ca.crt").is_file()
}

/// The local address to bind a QUIC client to for reaching `server`.
pub(crate) fn bind_addr(bind: Option<IpAddr>, server_is_ipv6: bool) -> SocketAddr {
    match (bind, server_is_ipv6) {
        (Some(ip), _) => (ip, 0).into(),
        (None, true) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        (None, false) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
    }
}

pub(crate) async fn ask(
    client: &quinn::ClientConfig,
    via: &str,
    request: &EnrollRequest,
    bind: Option<IpAddr>,
) -> Result<EnrollResponse, String> {
    let addr: SocketAddr = tokio::net::lookup_host(via)
        .await
        .map_err(|e| format!("resolving `{via}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{via}` resolves to no address"))?;
    let mut endpoint = quinn::Endpoint::client(bind_addr(bind, addr.is_ipv6()))
        .map_err(|e| format!("opening a QUIC client: {e}"))?;
    endpoint.set_default_client_config(client.clone());
    let conn = endpoint
        .connect(addr, SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| {
            format!("connecting ({e}; is the join token's CA fingerprint this cluster's?)")
        })?;
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut send, request)
            .await
            .map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        read_frame::<EnrollResponse>(&mut recv)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the server closed the stream without an answer".to_owned())
    };
    let response = exchange.await;
    conn.close(0u32.into(), b"enrolled");
    endpoint.wait_idle().await;
    response
}
