//! Enrollment (ALPN `windflow-enroll/1`): a newcomer without a certificate presents a join
//! token's secret and a CSR; one use of the token is spent through raft before anything is
//! signed. A server gets its certificate and the cluster CA (servers sign agents'
//! certificates); an agent gets a node certificate valid for `node_cert_validity`, whose
//! serial is recorded so that `windflow node revoke` can put it on the revocation list.

use std::net::IpAddr;
use std::time::Duration;

use windflow_certs::wire::{read_frame, write_frame};
use windflow_certs::{NodeCertPlan, PeerIdentity};
use windflow_protocol::NodeId;
use windflow_protocol::Timestamp;
use windflow_protocol::enroll::{EnrollRequest, EnrollResponse, JoinKind};
use windflow_protocol::messages::VersionRange;
use windflow_raft::{Applied, ApplyError, Command, WriteError};

use super::Gateway;
use crate::auth;
use crate::cluster::server_id;

/// How long a newcomer has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most IP addresses a server certificate may carry.
const MAX_IPS: usize = 16;

impl Gateway {
    /// An agent: the token's use, the node and its certificate's serial go through raft
    /// in one command; then the CA signs the CSR as `node-N<id>`.
    async fn enroll_agent(&self, request: &EnrollRequest) -> Result<EnrollResponse, String> {
        validate_hostname(&request.name)?;
        windflow_certs::check_csr(&request.csr_pem)
            .map_err(|e| format!("unusable certificate request: {e}"))?;
        let plan = NodeCertPlan::new(self.node_cert_validity)
            .map_err(|e| format!("cannot plan a certificate: {e}"))?;
        let applied = self
            .raft
            .write(Command::EnrollNode {
                hash: auth::token_hash(&request.secret),
                hostname: request.name.clone(),
                serial: plan.serial_hex(),
                not_after: Timestamp(plan.not_after_ms()),
                at: Timestamp::now(),
            })
            .await
            .map_err(token_refusal)?;
        let Applied::Node(node) = applied else {
            return Err(format!("enrolling was answered with {applied:?}"));
        };
        let cert_pem = self
            .ca
            .sign_node_csr_planned(node.id, &request.csr_pem, &plan)
            .map_err(|e| format!("cannot sign the request: {e}"))?;
        tracing::info!(node = %node.id, hostname = %node.name, serial = %plan.serial_hex(), "agent enrolled with a join token");
        Ok(EnrollResponse::Node {
            node: node.id,
            cert_pem,
            ca_cert_pem: self.ca.cert_pem().to_owned(),
        })
    }

    /// An enrolled agent renews its certificate, authenticated by the one it holds: a new
    /// serial is recorded (refused for a revoked node), then the CSR is signed.
    async fn renew_agent(
        &self,
        node: NodeId,
        request: &EnrollRequest,
    ) -> Result<EnrollResponse, String> {
        windflow_certs::check_csr(&request.csr_pem)
            .map_err(|e| format!("unusable certificate request: {e}"))?;
        let plan = NodeCertPlan::new(self.node_cert_validity)
            .map_err(|e| format!("cannot plan a certificate: {e}"))?;
        self.raft
            .write(Command::NodeCertIssued {
                node,
                serial: plan.serial_hex(),
                not_after: Timestamp(plan.not_after_ms()),
                at: Timestamp::now(),
            })
            .await
            .map_err(|e| format!("the cluster refused to renew node {node}: {e}"))?;
        let cert_pem = self
            .ca
            .sign_node_csr_planned(node, &request.csr_pem, &plan)
            .map_err(|e| format!("cannot sign the request: {e}"))?;
        tracing::info!(%node, serial = %plan.serial_hex(), "agent certificate renewed");
        Ok(EnrollResponse::Node {
            node,
            cert_pem,
            ca_cert_pem: self.ca.cert_pem().to_owned(),
        })
    }

    pub(super) async fn serve_enrollment(&self, conn: quinn::Connection) {
        let (mut send, mut recv) =
            match tokio::time::timeout(REQUEST_TIMEOUT, conn.accept_bi()).await {
                Ok(Ok(streams)) => streams,
                _ => return,
            };
        let request =
            match tokio::time::timeout(REQUEST_TIMEOUT, read_frame::<EnrollRequest>(&mut recv))
                .await
            {
                Ok(Ok(Some(request))) => request,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "unreadable enrollment request");
                    return;
                }
                Err(_) => {
                    tracing::info!("no enrollment request within 10s");
                    return;
                }
            };
        // A peer that presents a certificate (already verified, and not revoked) renews it.
        let holder = windflow_certs::peer_identity(&conn).ok();
        let response = match self.enroll(&request, holder).await {
            Ok(response) => response,
            Err(reason) => {
                tracing::warn!(name = %request.name, kind = %request.kind, %reason, "enrollment refused");
                EnrollResponse::Refused { reason }
            }
        };
        if write_frame(&mut send, &response).await.is_ok() {
            let _ = send.finish();
            let _ = send.stopped().await;
        }
    }

    /// Checks the request, spends a use of the token and signs; `Err` is the reason given
    /// to the newcomer.
    async fn enroll(
        &self,
        request: &EnrollRequest,
        holder: Option<PeerIdentity>,
    ) -> Result<EnrollResponse, String> {
        if VersionRange::SUPPORTED
            .negotiate(&request.versions)
            .is_none()
        {
            return Err(format!(
                "protocol version mismatch: the newcomer speaks {}, this server speaks {}",
                request.versions,
                VersionRange::SUPPORTED
            ));
        }
        match holder {
            Some(PeerIdentity::Node(node)) => return self.renew_agent(node, request).await,
            Some(PeerIdentity::Server(name)) => {
                return Err(format!("server `{name}` already holds a certificate"));
            }
            None => {}
        }
        if request.kind == JoinKind::Agent {
            return self.enroll_agent(request).await;
        }
        validate_server_name(&request.name)?;
        if request.ips.len() > MAX_IPS {
            return Err(format!(
                "at most {MAX_IPS} IP addresses, not {}",
                request.ips.len()
            ));
        }
        let ips = request
            .ips
            .iter()
            .map(|ip| {
                ip.parse::<IpAddr>()
                    .map_err(|_| format!("`{ip}` is not an IP address"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let id = server_id(&request.name);
        if self.raft.members().iter().any(|m| m.id == id) {
            return Err(format!(
                "server `{}` is already a member of the cluster",
                request.name
            ));
        }
        let spent = self
            .raft
            .write(Command::UseJoinToken {
                kind: JoinKind::Server,
                hash: auth::token_hash(&request.secret),
                by: request.name.clone(),
                at: Timestamp::now(),
            })
            .await;
        spent.map_err(token_refusal)?;
        let cert_pem = self
            .ca
            .sign_server_csr(&request.name, &request.csr_pem, &ips)
            .map_err(|e| format!("cannot sign the request: {e}"))?;
        tracing::info!(name = %request.name, "server enrolled with a join token");
        Ok(EnrollResponse::Server {
            cert_pem,
            ca_cert_pem: self.ca.cert_pem().to_owned(),
            ca_key_pem: self.ca.key_pem(),
        })
    }
}

/// What a refused use of a join token tells the newcomer.
fn token_refusal(e: WriteError) -> String {
    match e {
        WriteError::Rejected(ApplyError::JoinTokenRefused(why)) => {
            format!("the join token was refused: {why}")
        }
        e => format!("the cluster could not record the token's use: {e}"),
    }
}

/// A server name goes into a certificate and a raft ID: short, plain, and not empty.
pub fn validate_server_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "server name `{name}` must be 1 to 63 letters, digits, `-`, `_` or `.`"
        ))
    }
}

/// An agent's hostname becomes the node's name: printable and not too long.
fn validate_hostname(name: &str) -> Result<(), String> {
    if !name.is_empty() && name.len() <= 253 && name.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "hostname `{}` must be 1 to 253 printable characters without spaces",
            name.escape_debug()
        ))
    }
}
