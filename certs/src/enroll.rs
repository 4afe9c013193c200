//! The agent's side of enrollment: it makes its own key and sends only a CSR, which the
//! CA signs with [`crate::ClusterCa::sign_node_csr`]. The key never crosses the wire.

use rcgen::{CertificateParams, KeyPair};
use windflow_protocol::NodeId;

use crate::{CertError, IssuedCert};

/// A fresh key and a certificate signing request for it.
#[derive(Clone)]
pub struct CertRequest {
    pub csr_pem: String,
    pub key_pem: String,
}

/// Never prints the key.
impl std::fmt::Debug for CertRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertRequest")
            .field("csr_pem", &self.csr_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl CertRequest {
    /// A new key and a CSR naming `name` (informational: the CA decides the name).
    pub fn new(name: &str) -> Result<CertRequest, CertError> {
        let generate = |what| move |source| CertError::Generate { what, source };
        let key = KeyPair::generate().map_err(generate("a request key"))?;
        let params =
            CertificateParams::new(vec![name.to_owned()]).map_err(generate("a request name"))?;
        let csr = params
            .serialize_request(&key)
            .map_err(generate("a certificate signing request"))?;
        Ok(CertRequest {
            csr_pem: csr.pem().map_err(generate("a CSR PEM"))?,
            key_pem: key.serialize_pem(),
        })
    }

    /// A request for `node`'s certificate.
    pub fn node(node: NodeId) -> Result<CertRequest, CertError> {
        Self::new(&node.certificate_name())
    }

    /// Pairs the key with the certificate the CA returned.
    pub fn into_issued(self, cert_pem: String) -> IssuedCert {
        IssuedCert {
            cert_pem,
            key_pem: self.key_pem,
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    use super::*;
    use crate::ClusterCa;

    fn cn_and_key(pem: &str) -> (String, Vec<u8>) {
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        (
            cn.as_str().unwrap().to_owned(),
            cert.public_key().raw.to_vec(),
        )
    }

    #[test]
    fn the_ca_names_the_node_whatever_the_csr_asks_for() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create(dir.path()).unwrap();
        let request = CertRequest::new("server-evil").unwrap();
        assert!(!format!("{request:?}").contains("PRIVATE KEY"));
        let cert_pem = ca.sign_node_csr(NodeId(5), &request.csr_pem).unwrap();
        let (cn, spki) = cn_and_key(&cert_pem);
        assert_eq!(cn, "node-N5");
        // The certificate is for the requester's key.
        let key = KeyPair::from_pem(&request.key_pem).unwrap();
        let issued = request.into_issued(cert_pem);
        assert_eq!(spki, rcgen::PublicKeyData::subject_public_key_info(&key));
        assert!(issued.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn a_garbled_csr_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create(dir.path()).unwrap();
        let request = CertRequest::node(NodeId(5)).unwrap();
        let garbled = request.csr_pem.replacen("MII", "MIJ", 1);
        assert!(ca.sign_node_csr(NodeId(5), &garbled).is_err());
        assert!(ca.sign_node_csr(NodeId(5), "nonsense").is_err());
    }
}
