//! The QUIC endpoint every server runs: agents arrive with ALPN `windflow/1`, peer servers
//! with `windflow-raft/1` (and `windflow-keys/1`, `windflow-relay/1`), newcomers holding a
//! join token with `windflow-enroll/1`. A
//! certificate from another CA fails the handshake; a peer with no certificate at all gets
//! past it only to enroll, and is closed on any other ALPN before a frame is read.

mod alloc_feed;
mod alloc_sync;
mod enroll;
mod output;
mod relay;
mod requests;
mod revocation;
mod session;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use windflow_certs::ClusterCa;
use windflow_protocol::enroll::ALPN_ENROLL;
use windflow_protocol::messages::{ALPN_AGENT, ALPN_RAFT, ALPN_RELAY};
use windflow_protocol::secret::ALPN_KEYS;
use windflow_raft::RaftNode;

use crate::secrets::Secrets;

pub use enroll::validate_server_name;
pub use output::RunOutputs;
pub use requests::{AgentAnswer, AskError, Relay};
pub use revocation::Revocations;
pub use sessions::Sessions;

/// What the gateway needs to serve agents.
#[derive(Clone)]
pub struct Gateway {
    pub raft: RaftNode,
    pub sessions: Sessions,
    pub outputs: RunOutputs,
    /// How often agents send heartbeats.
    pub heartbeat_interval: Duration,
    /// The cluster CA, which signs what enrollment issues.
    pub ca: Arc<ClusterCa>,
    /// The key ring: handed to peer servers, and opens secret env for agents.
    pub secrets: Arc<Secrets>,
    /// How long the node certificates enrollment issues are valid.
    pub node_cert_validity: Duration,
    /// Revoked certificate serials, refused at the handshake.
    pub revocations: Revocations,
}

impl Gateway {
    /// Accepts connections until `shutdown`, each served on its own task.
    pub async fn serve(self, endpoint: quinn::Endpoint, shutdown: CancellationToken) {
        // One follower of allocation changes for all of this server's agent sessions.
        let feed = alloc_feed::AllocFeed::default();
        tokio::spawn(
            feed.clone()
                .follow(self.raft.reader().clone(), shutdown.clone()),
        );
        loop {
            let incoming = tokio::select! {
                _ = shutdown.cancelled() => break,
                incoming = endpoint.accept() => match incoming {
                    Some(i) => i,
                    None => break,
                },
            };
            let gateway = self.clone();
            let stop = shutdown.clone();
            let feed = feed.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                // A failed handshake (no certificate, another CA, expired) ends here,
                // before a single frame is read.
                let conn = match incoming.await {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::info!(%remote, error = %e, "refused connection at the TLS handshake");
                        return;
                    }
                };
                let alpn = conn
                    .handshake_data()
                    .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                    .and_then(|d| d.protocol);
                let anonymous = conn.peer_identity().is_none();
                match alpn.as_deref() {
                    Some(a) if a == ALPN_ENROLL => {
                        let span = tracing::info_span!("enroll", %remote);
                        tokio::select! {
                            _ = stop.cancelled() => conn.close(0u32.into(), b"server shutting down"),
                            _ = gateway.serve_enrollment(conn.clone()).instrument(span) => {}
                        }
                    }
                    // Only enrollment is served without a certificate.
                    Some(_) if anonymous => {
                        tracing::info!(%remote, "refused connection without a client certificate");
                        conn.close(
                            2u32.into(),
                            b"a client certificate from the cluster CA is required",
                        );
                    }
                    Some(a) if a == ALPN_AGENT => {
                        let span = tracing::info_span!("agent_session", %remote, node = tracing::field::Empty);
                        tokio::select! {
                            _ = stop.cancelled() => conn.close(0u32.into(), b"server shutting down"),
                            _ = gateway.serve_agent(conn.clone(), feed).instrument(span) => {}
                        }
                    }
                    Some(a) if a == ALPN_RAFT => {
                        tokio::select! {
                            _ = stop.cancelled() => conn.close(0u32.into(), b"server shutting down"),
                            _ = windflow_raft::serve_peer_connection_with_faults(gateway.raft.raft().clone(), conn.clone(), gateway.raft.faults().clone()) => {}
                        }
                    }
                    Some(a) if a == ALPN_RELAY => {
                        tokio::select! {
                            _ = stop.cancelled() => conn.close(0u32.into(), b"server shutting down"),
                            _ = gateway.serve_relay(conn.clone()) => {}
                        }
                    }
                    Some(a) if a == ALPN_KEYS => {
                        tokio::select! {
                            _ = stop.cancelled() => conn.close(0u32.into(), b"server shutting down"),
                            _ = crate::secrets::serve_connection(gateway.secrets.clone(), conn.clone()) => {}
                        }
                    }
                    _ => conn.close(1u32.into(), b"unsupported ALPN"),
                }
            });
        }
        endpoint.close(0u32.into(), b"server shutting down");
    }
}
