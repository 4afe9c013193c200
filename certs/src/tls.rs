//! rustls and quinn configs for mutual TLS under the cluster CA (TLS 1.3, ring).

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::revocation::{CheckRevoked, RevocationList};
use crate::{CertError, TlsIdentity};

/// QUIC keep-alives, so an idle session is not mistaken for a dead one.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// A peer silent for this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Installs rustls's ring provider as the process default. Idempotent: a provider already
/// installed is kept. The configs built here name ring explicitly; this is for other rustls
/// users in the process (reqwest, axum), which otherwise panic without a default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> CertError {
    CertError::Tls(e.to_string())
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::parse(what, e))?;
    if certs.is_empty() {
        return Err(CertError::parse(what, "no certificate in it"));
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| CertError::parse("the private key", e))
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, CertError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem, "the CA certificate")? {
        roots.add(cert).map_err(tls_err)?;
    }
    Ok(Arc::new(roots))
}

fn transport() -> Result<Arc<quinn::TransportConfig>, CertError> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().map_err(tls_err)?));
    Ok(Arc::new(t))
}

/// Whether a server lets a peer without a client certificate finish the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    Required,
    /// Enrollment (ALPN `windflow-enroll/1`) comes without one; the server then refuses
    /// every other ALPN from such a peer before reading anything.
    OptionalForEnrollment,
}

/// A QUIC server config that presents `identity.cert` and *requires* a client certificate
/// chaining to `identity.ca_pem`: a peer without one fails the handshake.
pub fn quinn_server_config(
    identity: &TlsIdentity,
    alpns: &[&[u8]],
) -> Result<quinn::ServerConfig, CertError> {
    server_config(identity, alpns, ClientAuth::Required, None)
}

/// Like [`quinn_server_config`], but a peer *without* a client certificate also completes
/// the handshake, so that a newcomer holding only a join token can enroll. A certificate
/// that is presented must still chain to the CA (another CA's fails the handshake). The
/// caller must refuse anonymous peers on every ALPN but enrollment: [`peer_identity`]
/// fails for them.
///
/// [`peer_identity`]: crate::peer_identity
pub fn quinn_server_config_with_enrollment(
    identity: &TlsIdentity,
    alpns: &[&[u8]],
) -> Result<quinn::ServerConfig, CertError> {
    server_config(identity, alpns, ClientAuth::OptionalForEnrollment, None)
}

/// The gateway's config: [`quinn_server_config_with_enrollment`], and a client certificate
/// whose serial is on `revoked` fails the handshake. The list is read at every handshake,
/// so changes to it apply to the next connection without rebuilding the config.
pub fn quinn_gateway_config(
    identity: &TlsIdentity,
    alpns: &[&[u8]],
    revoked: RevocationList,
) -> Result<quinn::ServerConfig, CertError> {
    server_config(
        identity,
        alpns,
        ClientAuth::OptionalForEnrollment,
        Some(revoked),
    )
}

fn server_config(
    identity: &TlsIdentity,
    alpns: &[&[u8]],
    auth: ClientAuth,
    revoked: Option<RevocationList>,
) -> Result<quinn::ServerConfig, CertError> {
    let provider = provider();
    let builder =
        WebPkiClientVerifier::builder_with_provider(roots(&identity.ca_pem)?, provider.clone());
    let verifier = match auth {
        ClientAuth::Required => builder,
        ClientAuth::OptionalForEnrollment => builder.allow_unauthenticated(),
    }
    .build()
    .map_err(tls_err)?;
    let verifier: Arc<dyn ClientCertVerifier> = match revoked {
        Some(revoked) => Arc::new(CheckRevoked {
            inner: verifier,
            revoked,
        }),
        None => verifier,
    };
    // The CA goes after the leaf, so that a newcomer can pin it by its fingerprint.
    let mut chain = certs(&identity.cert.cert_pem, "the server certificate")?;
    chain.extend(certs(&identity.ca_pem, "the CA certificate")?);
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key(&identity.cert.key_pem)?)
        .map_err(tls_err)?;
    tls.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    // No session resumption: a resumed handshake skips the client certificate checks, so
    // a certificate revoked or expired since the first connection would get back in.
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport()?);
    Ok(config)
}

/// The rustls config of the HTTPS API: presents `cert_pem` (the leaf, then any chain)
/// with `key_pem`, TLS 1.2 and 1.3, HTTP/1.1, no client certificate (API callers prove
/// who they are with a bearer token). Errors name which PEM is unusable.
pub fn https_server_config(
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(certs(cert_pem, "the HTTPS certificate")?, key(key_pem)?)
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// The lowercase hex SHA-256 of the first certificate (DER) in `pem`: how a CLI shows
/// and pins a CA it was handed over an unverified connection.
pub fn pem_fingerprint_sha256(pem: &str) -> Result<String, CertError> {
    let first = certs(pem, "the certificate")?
        .into_iter()
        .next()
        .ok_or_else(|| CertError::parse("the certificate", "no certificate in it"))?;
    Ok(sha256_hex(&first))
}

/// A QUIC client config that verifies the server against `identity.ca_pem` (connect with
/// [`crate::SERVER_NAME`]) and presents `identity.cert`.
pub fn quinn_client_config(
    identity: &TlsIdentity,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, CertError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_root_certificates(roots(&identity.ca_pem)?)
        .with_client_auth_cert(
            certs(&identity.cert.cert_pem, "the client certificate")?,
            key(&identity.cert.key_pem)?,
        )
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport()?);
    Ok(config)
}

/// A QUIC client config for enrollment: no client certificate, ALPN `windflow-enroll/1`,
/// and the server is trusted only if its chain holds the CA whose SHA-256 fingerprint (of
/// the DER, lowercase hex) is `ca_fingerprint` and its certificate is signed by that CA.
/// Connect with [`crate::SERVER_NAME`].
pub fn quinn_enroll_client_config(ca_fingerprint: &str) -> Result<quinn::ClientConfig, CertError> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            fingerprint: ca_fingerprint.to_ascii_lowercase(),
            provider,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![windflow_protocol::enroll::ALPN_ENROLL.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport()?);
    Ok(config)
}

/// Trusts the CA a join token names, found in the server's own chain.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The DER of the first certificate in `pem`.
pub fn pem_der(pem: &str) -> Result<Vec<u8>, CertError> {
    Ok(certs(pem, "the certificate")?[0].to_vec())
}

/// The SHA-256 fingerprint (lowercase hex of the DER) of the first certificate in `pem`,
/// as join tokens carry it.
pub fn pem_fingerprint(pem: &str) -> Result<String, CertError> {
    let first = certs(pem, "the CA certificate")?;
    Ok(sha256_hex(&first[0]))
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| sha256_hex(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server does not hold the CA named by the join token's fingerprint".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
