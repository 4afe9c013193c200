//! Mutual TLS between real quinn endpoints on loopback: the server learns who the client is
//! from its certificate, and refuses clients from another CA before any byte is exchanged.

use std::time::Duration;

use windflow_certs::{
    ClusterCa, PeerIdentity, SERVER_NAME, TlsIdentity, peer_identity, quinn_client_config,
    quinn_server_config,
};
use windflow_protocol::NodeId;

const ALPN: &[u8] = b"windflow/1";

struct Setup {
    _dir: tempfile::TempDir,
    ca: ClusterCa,
    server: quinn::Endpoint,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(&dir.path().join("ca")).unwrap();
    let identity = TlsIdentity {
        ca_pem: ca.cert_pem().into(),
        cert: ca
            .issue_server("s1", &[], &["127.0.0.1".parse().unwrap()])
            .unwrap(),
    };
    let server = quinn::Endpoint::server(
        quinn_server_config(&identity, &[ALPN]).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    Setup {
        _dir: dir,
        ca,
        server,
    }
}

/// Echoes one stream per accepted connection; answers with what the server saw.
async fn accept_one(server: &quinn::Endpoint) -> Result<PeerIdentity, String> {
    let incoming = server.accept().await.ok_or("endpoint closed")?;
    let conn = incoming.await.map_err(|e| e.to_string())?;
    let who = peer_identity(&conn).map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
    let data = recv.read_to_end(1024).await.map_err(|e| e.to_string())?;
    send.write_all(&data).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let _ = conn.closed().await;
    Ok(who)
}

async fn exchange(
    client: quinn::ClientConfig,
    server: std::net::SocketAddr,
) -> Result<Vec<u8>, String> {
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(client);
    let conn = endpoint
        .connect(server, SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(b"ping").await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let answer = recv.read_to_end(1024).await.map_err(|e| e.to_string())?;
    conn.close(0u32.into(), b"done");
    Ok(answer)
}

async fn run(
    setup: &Setup,
    client: quinn::ClientConfig,
) -> (Result<PeerIdentity, String>, Result<Vec<u8>, String>) {
    let deadline = Duration::from_secs(10);
    let addr = setup.server.local_addr().unwrap();
    let (server, client) = tokio::join!(
        tokio::time::timeout(deadline, accept_one(&setup.server)),
        tokio::time::timeout(deadline, exchange(client, addr)),
    );
    (
        server.unwrap_or(Err("server timed out".into())),
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
    assert_eq!(server.unwrap(), PeerIdentity::Node(NodeId(7)));
    assert_eq!(client.unwrap(), b"ping");
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
    assert!(
        server.is_err(),
        "the server accepted a foreign certificate: {server:?}"
    );
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
    assert!(server.is_err() && client.is_err(), "{server:?} {client:?}");
}
