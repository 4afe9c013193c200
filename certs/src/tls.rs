//! rustls and quinn configs for mutual TLS under the cluster CA (TLS 1.3, ring).

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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

/// A QUIC server config that presents `identity.cert` and *requires* a client certificate
/// chaining to `identity.ca_pem`: a peer without one fails the handshake.
pub fn quinn_server_config(
    identity: &TlsIdentity,
    alpns: &[&[u8]],
) -> Result<quinn::ServerConfig, CertError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(&identity.ca_pem)?, provider.clone())
            .build()
            .map_err(tls_err)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&identity.cert.cert_pem, "the server certificate")?,
            key(&identity.cert.key_pem)?,
        )
        .map_err(tls_err)?;
    tls.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    let quic = QuicServerConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport()?);
    Ok(config)
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
