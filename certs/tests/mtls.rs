//! Mutual TLS between real quinn endpoints on loopback: the server learns who the client is
//! from its certificate, and refuses clients from another CA, expired certificates and
//! revoked ones before any byte is exchanged.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use windflow_certs::{
    CertRequest, ClusterCa, NodeCertPlan, PeerIdentity, RevocationList, SERVER_NAME, TlsIdentity,
    install_crypto_provider, peer_identity, quinn_client_config, quinn_enroll_client_config,
    quinn_gateway_config, quinn_server_config, quinn_server_config_with_enrollment, serial_of,
};
use windflow_protocol::NodeId;
use windflow_protocol::enroll::ALPN_ENROLL;
use windflow_protocol::messages::{ALPN_AGENT as ALPN, ALPN_RAFT};

struct Setup {
    _dir: tempfile::TempDir,
    ca: ClusterCa,
    server: quinn::Endpoint,
}

fn setup() -> Setup {
    setup_with(quinn_server_config)
}

/// A server that also lets certificate-less peers finish the handshake, for enrollment.
fn setup_enrolling() -> Setup {
    setup_with(quinn_server_config_with_enrollment)
}

fn setup_with(
    config: fn(&TlsIdentity, &[&[u8]]) -> Result<quinn::ServerConfig, windflow_certs::CertError>,
) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(&dir.path().join("ca")).unwrap();
    let identity = TlsIdentity {
        ca_pem: ca.cert_pem().into(),
        cert: ca
            .issue_server("s1", &[], &["127.0.0.1".parse().unwrap()])
            .unwrap(),
    };
    let server = quinn::Endpoint::server(
        config(&identity, &[ALPN, ALPN_RAFT, ALPN_ENROLL]).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    Setup {
        _dir: dir,
        ca,
        server,
    }
}

/// What the server side saw of one connection attempt.
#[derive(Debug)]
enum ServerSaw {
    /// The handshake failed: the incoming connection future returned this error.
    Refused(quinn::ConnectionError),
    /// The handshake completed; who the certificate says the client is.
    Connected(Result<PeerIdentity, String>),
    TimedOut,
}

/// Accepts one connection and echoes one bi stream on it, whoever the client turns out to
/// be, so that a refusal can only come from the handshake itself.
async fn accept_one(server: &quinn::Endpoint) -> ServerSaw {
    let Some(incoming) = server.accept().await else {
        panic!("the server endpoint closed");
    };
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => return ServerSaw::Refused(e),
    };
    let who = peer_identity(&conn).map_err(|e| e.to_string());
    if let Ok((mut send, mut recv)) = conn.accept_bi().await
        && let Ok(data) = recv.read_to_end(1024).await
        && send.write_all(&data).await.is_ok()
        && send.finish().is_ok()
    {
        let _ = conn.closed().await;
    }
    ServerSaw::Connected(who)
}

/// Connects, sends `ping` on a bi stream and returns the answer and who the server is.
async fn exchange(
    client: quinn::ClientConfig,
    server: std::net::SocketAddr,
) -> Result<(Vec<u8>, PeerIdentity), String> {
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(client);
    let conn = endpoint
        .connect(server, SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let server_is = peer_identity(&conn).map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(b"ping").await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let answer = recv.read_to_end(1024).await.map_err(|e| e.to_string())?;
    conn.close(0u32.into(), b"done");
    // Lets the close reach the server, which waits for it.
    endpoint.wait_idle().await;
    Ok((answer, server_is))
}

/// The server's connection future must itself fail: the handshake, not a later check,
/// is what keeps the client out.
fn assert_refused(server: ServerSaw) {
    match server {
        ServerSaw::Refused(e) => eprintln!("refused as expected: {e}"),
        other => panic!("the server did not refuse the handshake: {other:?}"),
    }
}

async fn run(
    setup: &Setup,
    client: quinn::ClientConfig,
) -> (ServerSaw, Result<(Vec<u8>, PeerIdentity), String>) {
    let deadline = Duration::from_secs(10);
    let addr = setup.server.local_addr().unwrap();
    let (server, client) = tokio::join!(
        tokio::time::timeout(deadline, accept_one(&setup.server)),
        tokio::time::timeout(deadline, exchange(client, addr)),
    );
    (
        server.unwrap_or(ServerSaw::TimedOut),
        client.unwrap_or(Err("client timed out".into())),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_certificate_from_the_ca_is_accepted_and_identified() {
    let s = setup();
    let identity = TlsIdentity {
        ca_pem: s.ca.cert_pem().into(),
        cert: s.ca.issue_node(NodeId(7)).unwrap(),
    };
    let (server, client) = run(&s, quinn_client_config(&identity, ALPN).unwrap()).await;
    let ServerSaw::Connected(who) = server else {
        panic!("the server refused a good client: {server:?}");
    };
    assert_eq!(who.unwrap(), PeerIdentity::Node(NodeId(7)));
    let (answer, server_is) = client.unwrap();
    assert_eq!(answer, b"ping");
    assert_eq!(server_is, PeerIdentity::Server("s1".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let s = setup();
    let other_dir = tempfile::tempdir().unwrap();
    let other = ClusterCa::create(other_dir.path()).unwrap();
    let identity = TlsIdentity {
        ca_pem: s.ca.cert_pem().into(),
        cert: other.issue_node(NodeId(7)).unwrap(),
    };
    let (server, client) = run(&s, quinn_client_config(&identity, ALPN).unwrap()).await;
    assert_refused(server);
    assert!(client.is_err(), "the exchange went through: {client:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_does_not_trust_the_ca_does_not_connect() {
    let s = setup();
    let other_dir = tempfile::tempdir().unwrap();
    let other = ClusterCa::create(other_dir.path()).unwrap();
    let identity = TlsIdentity {
        ca_pem: other.cert_pem().into(),
        cert: s.ca.issue_node(NodeId(7)).unwrap(),
    };
    let (server, client) = run(&s, quinn_client_config(&identity, ALPN).unwrap()).await;
    assert_refused(server);
    assert!(client.is_err(), "the exchange went through: {client:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_certificate_dials_another_server() {
    let s = setup();
    let identity = TlsIdentity {
        ca_pem: s.ca.cert_pem().into(),
        cert: s.ca.issue_server("s2", &[], &[]).unwrap(),
    };
    let (server, client) = run(&s, quinn_client_config(&identity, ALPN_RAFT).unwrap()).await;
    let ServerSaw::Connected(who) = server else {
        panic!("the server refused another server: {server:?}");
    };
    assert_eq!(who.unwrap(), PeerIdentity::Server("s2".into()));
    assert_eq!(client.unwrap().0, b"ping");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_a_certificate_is_refused() {
    install_crypto_provider();
    install_crypto_provider(); // idempotent
    let s = setup();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(s.ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let (server, client) = run(&s, quinn::ClientConfig::new(Arc::new(quic))).await;
    assert_refused(server);
    assert!(client.is_err(), "the exchange went through: {client:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enrolling_client_pins_the_ca_by_its_fingerprint() {
    install_crypto_provider();
    let s = setup_enrolling();
    let client = quinn_enroll_client_config(&s.ca.fingerprint_sha256()).unwrap();
    let (server, client) = run(&s, client).await;
    // The server sees an anonymous peer: nothing but enrollment may be served to it.
    match server {
        ServerSaw::Connected(Err(e)) => assert!(e.contains("no certificate"), "{e}"),
        other => panic!("expected an anonymous connection, got {other:?}"),
    }
    let (answer, server_is) = client.unwrap();
    assert_eq!(answer, b"ping");
    assert_eq!(server_is, PeerIdentity::Server("s1".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enrolling_client_refuses_a_server_of_another_ca() {
    install_crypto_provider();
    let s = setup_enrolling();
    let other = tempfile::tempdir().unwrap();
    let other_ca = ClusterCa::create(other.path()).unwrap();
    let client = quinn_enroll_client_config(&other_ca.fingerprint_sha256()).unwrap();
    let (_, client) = run(&s, client).await;
    let err = client.unwrap_err();
    assert!(err.contains("fingerprint"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_enrollment_open_another_ca_is_still_refused_at_the_handshake() {
    install_crypto_provider();
    let s = setup_enrolling();
    let other = tempfile::tempdir().unwrap();
    let other_ca = ClusterCa::create(other.path()).unwrap();
    let identity = TlsIdentity {
        ca_pem: s.ca.cert_pem().into(),
        cert: other_ca.issue_node(NodeId(1)).unwrap(),
    };
    let (server, client) = run(&s, quinn_client_config(&identity, ALPN).unwrap()).await;
    assert_refused(server);
    assert!(client.is_err());
}

/// A node certificate signed for a fresh key with `plan`'s serial and validity.
fn planned_node(ca: &ClusterCa, node: NodeId, plan: &NodeCertPlan) -> TlsIdentity {
    let request = CertRequest::node(node).unwrap();
    let cert_pem = ca
        .sign_node_csr_planned(node, &request.csr_pem, plan)
        .unwrap();
    TlsIdentity {
        ca_pem: ca.cert_pem().into(),
        cert: request.into_issued(cert_pem),
    }
}

/// The gateway's config: enrollment open, and the revocation list checked.
fn setup_gateway(revoked: &RevocationList) -> Setup {
    let revoked = revoked.clone();
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(&dir.path().join("ca")).unwrap();
    let identity = TlsIdentity {
        ca_pem: ca.cert_pem().into(),
        cert: ca
            .issue_server("s1", &[], &["127.0.0.1".parse().unwrap()])
            .unwrap(),
    };
    let config = quinn_gateway_config(&identity, &[ALPN, ALPN_ENROLL], revoked).unwrap();
    let server = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    Setup {
        _dir: dir,
        ca,
        server,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_node_certificate_is_refused_at_the_handshake() {
    install_crypto_provider();
    let s = setup_gateway(&RevocationList::default());
    let now = time::OffsetDateTime::now_utc();
    let expired =
        NodeCertPlan::between(now - time::Duration::days(2), now - time::Duration::days(1))
            .unwrap();
    let identity = planned_node(&s.ca, NodeId(3), &expired);
    let (server, client) = run(&s, quinn_client_config(&identity, ALPN).unwrap()).await;
    match &server {
        ServerSaw::Refused(e) => assert!(e.to_string().to_lowercase().contains("expired"), "{e}"),
        other => panic!("the server did not refuse an expired certificate: {other:?}"),
    }
    assert!(client.is_err(), "the exchange went through: {client:?}");
    // The same CA's current certificate still gets in.
    let current = planned_node(
        &s.ca,
        NodeId(3),
        &NodeCertPlan::new(Duration::from_secs(3600)).unwrap(),
    );
    let (server, _) = run(&s, quinn_client_config(&current, ALPN).unwrap()).await;
    assert!(
        matches!(
            server,
            ServerSaw::Connected(Ok(PeerIdentity::Node(NodeId(3))))
        ),
        "{server:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_serial_is_refused_at_the_handshake_from_the_next_connection() {
    install_crypto_provider();
    let revoked = RevocationList::default();
    let s = setup_gateway(&revoked);
    let plan = NodeCertPlan::new(Duration::from_secs(3600)).unwrap();
    let identity = planned_node(&s.ca, NodeId(4), &plan);
    let other = planned_node(
        &s.ca,
        NodeId(5),
        &NodeCertPlan::new(Duration::from_secs(3600)).unwrap(),
    );
    // The serial recorded before signing is the one the certificate carries.
    let der = CertificateDer::from_pem_slice(identity.cert.cert_pem.as_bytes()).unwrap();
    assert_eq!(serial_of(&der).unwrap(), plan.serial_hex());

    // One client config throughout, as an agent keeps: it would resume its first TLS
    // session if the server let it, skipping the certificate checks.
    let agent = quinn_client_config(&identity, ALPN).unwrap();
    let (server, client) = run(&s, agent.clone()).await;
    assert!(matches!(server, ServerSaw::Connected(Ok(_))), "{server:?}");
    assert_eq!(client.unwrap().0, b"ping");

    revoked.replace([plan.serial_hex()]);
    let (server, client) = run(&s, agent).await;
    match &server {
        ServerSaw::Refused(e) => assert!(e.to_string().to_lowercase().contains("revoked"), "{e}"),
        other => panic!("the server did not refuse a revoked certificate: {other:?}"),
    }
    assert!(client.is_err(), "the exchange went through: {client:?}");
    // Even on the enrollment ALPN: a revoked certificate is refused whatever it asks for.
    let (server, _) = run(&s, quinn_client_config(&identity, ALPN_ENROLL).unwrap()).await;
    assert_refused(server);
    // Another node of the same CA is not affected.
    let (server, client) = run(&s, quinn_client_config(&other, ALPN).unwrap()).await;
    assert!(
        matches!(
            server,
            ServerSaw::Connected(Ok(PeerIdentity::Node(NodeId(5))))
        ),
        "{server:?}"
    );
    assert_eq!(client.unwrap().0, b"ping");
}
