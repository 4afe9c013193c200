//! The agent gateway of a real `windflow dev` refuses a client whose certificate comes from
//! another CA at the TLS handshake, and one with no certificate (which may only enroll)
//! right after it, before any frame is read. A client with a certificate from the
//! cluster's own CA gets as far as the protocol.

use std::sync::Arc;
use std::time::Duration;

use windflow_certs::{ClusterCa, TlsIdentity};
use windflow_protocol::codec;
use windflow_protocol::messages::{ALPN_AGENT, AgentMessage, Hello, ServerMessage, VersionRange};
use windflow_protocol::{DriverKind, NodeId};
use windflow_tests::DevServer;

const DEADLINE: Duration = Duration::from_secs(15);

fn hello() -> Vec<u8> {
    codec::encode(&AgentMessage::Hello(Hello {
        versions: VersionRange::SUPPORTED,
        hostname: "intruder".into(),
        agent_version: "0".into(),
        drivers: vec![DriverKind::Exec],
        fingerprint: Default::default(),
        alloc_index: 0,
    }))
    .unwrap()
}

/// Connects, sends Hello and reads the answer frame.
async fn exchange(
    client: quinn::ClientConfig,
    server: std::net::SocketAddr,
) -> anyhow::Result<ServerMessage> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(client);
    let conn = endpoint
        .connect(server, windflow_certs::SERVER_NAME)?
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&hello()).await?;
    let mut header = [0u8; codec::HEADER_LEN];
    recv.read_exact(&mut header).await?;
    let mut payload = vec![0u8; codec::decode_len(header)?];
    recv.read_exact(&mut payload).await?;
    Ok(codec::decode_payload(&payload)?)
}

async fn with_deadline(
    client: quinn::ClientConfig,
    server: std::net::SocketAddr,
) -> anyhow::Result<ServerMessage> {
    tokio::time::timeout(DEADLINE, exchange(client, server)).await?
}

/// The server logs the refusal; the client may see it first, so wait for the line.
fn refused_in_log(dev: &DevServer, line: &str) {
    windflow_tests::wait_for("the refusal in the server log", DEADLINE, || {
        dev.log().contains(line).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.log()));
}

fn server_ca(dev: &DevServer) -> ClusterCa {
    ClusterCa::load(&dev.data_dir.join("ca")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_another_ca_is_refused() {
    let dev = tokio::task::spawn_blocking(DevServer::start)
        .await
        .unwrap()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let foreign = ClusterCa::create(dir.path()).unwrap();
    // Trusts the real server's CA, but presents a certificate the cluster never issued.
    let identity = TlsIdentity {
        ca_pem: server_ca(&dev).cert_pem().to_owned(),
        cert: foreign.issue_node(NodeId(1)).unwrap(),
    };
    let client = windflow_certs::quinn_client_config(&identity, ALPN_AGENT).unwrap();
    let result = with_deadline(client, dev.quic_addr).await;
    assert!(
        result.is_err(),
        "a foreign certificate got an answer: {result:?}"
    );
    refused_in_log(&dev, "refused connection at the TLS handshake");
    // The dev server's own agent connects; the intruder's Hello (hostname `intruder`) is never read.
    assert!(!dev.log().contains("intruder"), "{}", dev.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_a_certificate_is_refused() {
    let dev = tokio::task::spawn_blocking(DevServer::start)
        .await
        .unwrap()
        .unwrap();
    windflow_certs::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = server_ca(&dev).cert_pem().to_owned();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_AGENT.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let client = quinn::ClientConfig::new(Arc::new(quic));
    let result = with_deadline(client, dev.quic_addr).await;
    let err = result.expect_err("an anonymous client got an answer");
    assert!(
        format!("{err:#}").contains("client certificate from the cluster CA is required"),
        "{err:#}"
    );
    refused_in_log(&dev, "refused connection without a client certificate");
    assert!(!dev.log().contains("intruder"), "{}", dev.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_the_cluster_ca_reaches_the_protocol() {
    let dev = tokio::task::spawn_blocking(DevServer::start)
        .await
        .unwrap()
        .unwrap();
    let ca = server_ca(&dev);
    // A well-signed certificate for a node that was never registered: the handshake
    // passes, Hello is read, and the session is refused by name.
    let identity = TlsIdentity {
        ca_pem: ca.cert_pem().to_owned(),
        cert: ca.issue_node(NodeId(999)).unwrap(),
    };
    let client = windflow_certs::quinn_client_config(&identity, ALPN_AGENT).unwrap();
    match with_deadline(client, dev.quic_addr).await.unwrap() {
        ServerMessage::Refused { reason } => assert!(reason.contains("N999"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
