//! The revocation list, enforced at the TLS handshake: a client certificate whose serial is
//! on it fails the handshake exactly like one from another CA, before any frame is read.
//! The list lives in raft; the server keeps a live copy here and refreshes it on apply.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::CertError;

/// A certificate serial as the revocation list keeps it: lowercase hex of its bytes without
/// leading zero bytes (DER may or may not pad a serial with one).
pub fn serial_hex(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].iter().map(|b| format!("{b:02x}")).collect()
}

/// The serial of a certificate (DER), as [`serial_hex`] writes it.
pub fn serial_of(der: &[u8]) -> Result<String, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertError::BadPeerCertificate(e.to_string()))?;
    Ok(serial_hex(cert.raw_serial()))
}

/// The serials a server refuses, shared between the TLS verifier and whoever keeps it in
/// step with the replicated list. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RevocationList {
    serials: Arc<RwLock<HashSet<String>>>,
}

impl RevocationList {
    /// Replaces the whole list.
    pub fn replace(&self, serials: impl IntoIterator<Item = String>) {
        let fresh: HashSet<String> = serials.into_iter().collect();
        *self.serials.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    pub fn contains(&self, serial: &str) -> bool {
        self.serials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(serial)
    }

    pub fn len(&self) -> usize {
        self.serials.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs the CA's own checks (chain, validity period, usage), then refuses revoked serials.
#[derive(Debug)]
pub(crate) struct CheckRevoked {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) revoked: RevocationList,
}

impl ClientCertVerifier for CheckRevoked {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let serial = serial_of(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.revoked.contains(&serial) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_compared_without_padding() {
        assert_eq!(serial_hex(&[0, 0x7f, 0x01]), "7f01");
        assert_eq!(serial_hex(&[0x7f, 0x01]), "7f01");
        let list = RevocationList::default();
        list.replace(["7f01".to_owned()]);
        assert!(list.contains("7f01") && !list.contains("7f02"));
        assert_eq!(list.len(), 1);
    }
}
