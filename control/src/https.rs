//! Serving the HTTP API over TLS: with a certificate and key given as PEM files, or with
//! one issued at start from the cluster CA (which every server holds) for the API's
//! address and the names given. Plain HTTP stays the default.
//!
//! TLS handshakes run in tasks of their own, at most [`MAX_HANDSHAKES`] at once and each
//! within [`HANDSHAKE_TIMEOUT`], so a client that opens a connection and says nothing
//! holds up no one; finished connections are handed to `axum::serve`, which keeps
//! `ConnectInfo<SocketAddr>` (the audit log and the login limiter use it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::serve::ListenerExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use windflow_certs::ClusterCa;

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many handshakes may be under way at once.
pub const MAX_HANDSHAKES: usize = 256;

/// Where the API's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpsSource {
    /// PEM files: the certificate (leaf first, then its chain) and its private key.
    Files { cert: PathBuf, key: PathBuf },
    /// Issued from the cluster CA at every start, naming the API's address, `localhost`
    /// and these extra DNS names or IPs.
    ClusterCa { names: Vec<String> },
}

/// The rustls config the API serves with, from `source`.
pub fn server_tls(
    source: &HttpsSource,
    ca: &ClusterCa,
    server_name: &str,
    http_addr: SocketAddr,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (cert_pem, key_pem) = match source {
        HttpsSource::Files { cert, key } => (
            std::fs::read_to_string(cert)
                .with_context(|| format!("--tls-cert: reading {}", cert.display()))?,
            std::fs::read_to_string(key)
                .with_context(|| format!("--tls-key: reading {}", key.display()))?,
        ),
        HttpsSource::ClusterCa { names } => {
            let (dns, ips) = certificate_names(http_addr, names);
            let issued = ca
                .issue_https(server_name, &dns, &ips)
                .context("--tls-from-ca: issuing the API certificate from the cluster CA")?;
            tracing::info!(
                ?dns,
                ?ips,
                "issued the HTTPS certificate from the cluster CA"
            );
            (issued.cert_pem, issued.key_pem)
        }
    };
    let what = match source {
        HttpsSource::Files { .. } => "--tls-cert/--tls-key",
        HttpsSource::ClusterCa { .. } => "--tls-from-ca",
    };
    windflow_certs::https_server_config(&cert_pem, &key_pem).with_context(|| what.to_owned())
}

/// The names an issued API certificate carries: the address it listens on (or, listening
/// on every address, the loopback ones) and the extra names, IPs parsed as such.
fn certificate_names(http_addr: SocketAddr, extra: &[String]) -> (Vec<String>, Vec<IpAddr>) {
    let mut ips = Vec::new();
    if http_addr.ip().is_unspecified() {
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        ips.push(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));
    } else {
        ips.push(http_addr.ip());
    }
    let mut dns = Vec::new();
    for name in extra.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        match name.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) => dns.push(name.to_owned()),
        }
    }
    (dns, ips)
}

/// Serves `router` on `listener` until `shutdown`: over TLS with `tls`, else plain HTTP.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    let make = router.into_make_service_with_connect_info::<SocketAddr>();
    let stop = shutdown.clone();
    let served = match tls {
        None => {
            axum::serve(listener, make)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
        Some(tls) => {
            let local = match listener.local_addr() {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "HTTPS listener has no address");
                    return;
                }
            };
            let listener = TlsListener::spawn(listener, local, tls, shutdown.clone());
            // `tap_io` is what gives a custom listener `ConnectInfo` in axum.
            axum::serve(listener.tap_io(|_| {}), make)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// A listener whose connections have finished their TLS handshake.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` and runs handshakes in the background until `shutdown`.
    pub fn spawn(
        tcp: TcpListener,
        local: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, TlsAcceptor::from(tls), tx, shutdown));
        TlsListener { ready, local }
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: pause rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTPS connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_certificate_names_the_address_and_the_extra_names() {
        let (dns, ips) = certificate_names(
            "10.1.2.3:7480".parse().unwrap(),
            &[
                "api.example".into(),
                " 10.1.2.3".into(),
                "192.168.0.9".into(),
            ],
        );
        assert_eq!(dns, vec!["api.example".to_owned()]);
        assert_eq!(
            ips,
            vec![
                "10.1.2.3".parse::<IpAddr>().unwrap(),
                "192.168.0.9".parse().unwrap()
            ]
        );
        let (_, ips) = certificate_names("0.0.0.0:7480".parse().unwrap(), &[]);
        assert!(ips.iter().all(|ip| ip.is_loopback()) && ips.len() == 2);
    }
}
