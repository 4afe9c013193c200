//! Who is on the other end of a connection: read from its certificate, never from what it says.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use windflow_protocol::NodeId;

use crate::CertError;

/// The identity a verified peer certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// An agent: CN `node-N<n>`.
    Node(NodeId),
    /// A server: CN `server-<name>`.
    Server(String),
}

/// The identity of the peer of an established (so already verified) connection.
pub fn peer_identity(conn: &quinn::Connection) -> Result<PeerIdentity, CertError> {
    let chain = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(CertError::NoPeerCertificate)?;
    let leaf = chain.first().ok_or(CertError::NoPeerCertificate)?;
    identity_of(leaf)
}

/// The serial of the peer's verified certificate (see [`crate::serial_hex`]).
pub fn peer_serial(conn: &quinn::Connection) -> Result<String, CertError> {
    let chain = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(CertError::NoPeerCertificate)?;
    let leaf = chain.first().ok_or(CertError::NoPeerCertificate)?;
    crate::serial_of(leaf)
}

/// When a certificate (PEM) starts and stops being valid.
pub fn validity_of(cert_pem: &str) -> Result<(SystemTime, SystemTime), CertError> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| CertError::parse("the certificate", e))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CertError::parse("the certificate", e))?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).unwrap_or(0);
        UNIX_EPOCH + Duration::from_secs(secs)
    };
    let validity = cert.validity();
    Ok((at(validity.not_before), at(validity.not_after)))
}

fn identity_of(der: &CertificateDer<'_>) -> Result<PeerIdentity, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertError::BadPeerCertificate(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| CertError::BadPeerCertificate("no common name".into()))?;
    if let Ok(node) = NodeId::from_certificate_name(cn) {
        return Ok(PeerIdentity::Node(node));
    }
    match cn.strip_prefix("server-") {
        Some(name) if !name.is_empty() => Ok(PeerIdentity::Server(name.to_owned())),
        _ => Err(CertError::UnknownPeer {
            name: cn.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterCa;
    use rustls_pki_types::pem::PemObject;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn identities_come_from_the_common_name() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create(dir.path()).unwrap();
        let node = ca.issue_node(NodeId(12)).unwrap();
        assert_eq!(
            identity_of(&der(&node.cert_pem)).unwrap(),
            PeerIdentity::Node(NodeId(12))
        );
        let server = ca.issue_server("s2", &[], &[]).unwrap();
        assert_eq!(
            identity_of(&der(&server.cert_pem)).unwrap(),
            PeerIdentity::Server("s2".into())
        );
        assert!(matches!(
            identity_of(&der(ca.cert_pem())),
            Err(CertError::UnknownPeer { .. })
        ));
    }
}
