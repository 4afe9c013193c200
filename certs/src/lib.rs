//! Windflow's cluster CA and mutual TLS.
//!
//! Every server and agent holds a certificate from the cluster CA; every QUIC connection
//! between them is mutual TLS under that CA. Servers present `server.windflow`; agents are
//! named `node-N<n>` in their certificate, and that name, not anything they say, is who
//! they are ([`peer_identity`]).

mod ca;
mod enroll;
mod error;
mod files;
mod identity;
mod revocation;
mod tls;
pub mod wire;

pub use ca::{CA_VALIDITY, ClusterCa, LEAF_VALIDITY, NODE_CERT_VALIDITY, NodeCertPlan, check_csr};
pub use enroll::CertRequest;
pub use error::CertError;
pub use files::{IssuedCert, TlsIdentity};
pub use identity::{PeerIdentity, peer_identity, peer_serial, validity_of};
pub use revocation::{RevocationList, serial_hex, serial_of};
pub use tls::{
    IDLE_TIMEOUT, KEEP_ALIVE, https_server_config, install_crypto_provider, pem_der,
    pem_fingerprint, pem_fingerprint_sha256, quinn_client_config, quinn_enroll_client_config,
    quinn_gateway_config, quinn_server_config, quinn_server_config_with_enrollment,
};

/// The DNS name every server certificate carries; clients connect with this name.
pub const SERVER_NAME: &str = "server.windflow";
