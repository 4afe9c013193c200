//! A real QUIC server endpoint made with the cluster CA, speaking the protocol the way
//! the servers do, and the agent under test; shared by the agent's suites.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use windflow_agent::drivers::exec::SupervisorCommand;
use windflow_agent::{AgentConfig, AgentError};
use windflow_certs::{ClusterCa, PeerIdentity, TlsIdentity};
use windflow_protocol::codec::{self, HEADER_LEN};
use windflow_protocol::messages::{
    ALPN_AGENT, AgentMessage, Hello, PROTOCOL_VERSION, ServerMessage, TaskFinished, VersionRange,
    Welcome,
};
use windflow_protocol::{HumanDuration, NodeId, RunId};

/// How long any one expected thing may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A CA, a server identity and an agent identity (node 1).
pub struct Pki {
    pub _dir: tempfile::TempDir,
    pub server: TlsIdentity,
    pub agent: TlsIdentity,
}

pub fn pki() -> Pki {
    windflow_certs::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(&dir.path().join("ca")).unwrap();
    let server = TlsIdentity {
        ca_pem: ca.cert_pem().to_owned(),
        cert: ca
            .issue_server("s1", &[], &[Ipv4Addr::LOCALHOST.into()])
            .unwrap(),
    };
    let agent = TlsIdentity {
        ca_pem: ca.cert_pem().to_owned(),
        cert: ca.issue_node(NodeId(1)).unwrap(),
    };
    Pki {
        _dir: dir,
        server,
        agent,
    }
}

pub fn server_endpoint(identity: &TlsIdentity) -> (quinn::Endpoint, SocketAddr) {
    let config = windflow_certs::quinn_server_config(identity, &[ALPN_AGENT]).unwrap();
    let endpoint = quinn::Endpoint::server(config, (Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    (endpoint, addr)
}

/// The agent under test, running until `stop` is cancelled.
pub struct Agent {
    pub stop: CancellationToken,
    pub handle: JoinHandle<Result<(), AgentError>>,
    /// The data dir the agent was given, unless the test chose its own.
    _data: tempfile::TempDir,
}

pub fn start_agent(pki: &Pki, servers: Vec<SocketAddr>) -> Agent {
    start_agent_with(pki, servers, |_| {})
}

/// An agent on `data_dir` (the next agent on the same dir takes back what it left).
pub fn start_agent_in(pki: &Pki, servers: Vec<SocketAddr>, data_dir: &Path) -> Agent {
    start_agent_with(pki, servers, |c| c.data_dir = Some(data_dir.to_owned()))
}

/// The agent, with its config changed by `configure` first.
pub fn start_agent_with(
    pki: &Pki,
    servers: Vec<SocketAddr>,
    configure: impl FnOnce(&mut AgentConfig),
) -> Agent {
    let mut config = AgentConfig::new(servers, pki.agent.clone(), "test-host");
    config.reconnect_max_backoff = Duration::from_secs(1);
    let data = tempfile::tempdir().unwrap();
    config.data_dir = Some(data.path().to_owned());
    // Tasks run under the real binary's supervisor (this test binary has no such mode).
    config.supervisor = Some(SupervisorCommand::new(
        env!("CARGO_BIN_EXE_windflow-agent").into(),
    ));
    configure(&mut config);
    let stop = CancellationToken::new();
    let handle = tokio::spawn(windflow_agent::run(config, stop.clone()));
    Agent {
        stop,
        handle,
        _data: data,
    }
}

impl Agent {
    pub async fn stop(self) {
        self.stop.cancel();
        let result = within("the agent to stop", self.handle).await.unwrap();
        assert!(result.is_ok(), "the agent stopped with {result:?}");
    }
}

/// The server's side of one agent session.
pub struct Session {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub hello: Hello,
}

/// Accepts the next agent connection and reads its Hello.
pub async fn accept(endpoint: &quinn::Endpoint) -> Session {
    let incoming = within("a connection", endpoint.accept())
        .await
        .expect("endpoint closed");
    let conn = within("the TLS handshake", incoming.accept().unwrap())
        .await
        .unwrap();
    assert_eq!(
        windflow_certs::peer_identity(&conn).unwrap(),
        PeerIdentity::Node(NodeId(1))
    );
    let (send, recv) = within("the control stream", conn.accept_bi())
        .await
        .unwrap();
    let mut session = Session {
        conn,
        send,
        recv,
        hello: Hello {
            versions: VersionRange { min: 0, max: 0 },
            hostname: String::new(),
            agent_version: String::new(),
            drivers: Vec::new(),
            fingerprint: Default::default(),
            alloc_index: 0,
        },
    };
    match session.recv().await {
        AgentMessage::Hello(hello) => session.hello = hello,
        other => panic!("expected Hello, got {other:?}"),
    }
    session
}

impl Session {
    pub async fn send(&mut self, msg: ServerMessage) {
        self.send
            .write_all(&codec::encode(&msg).unwrap())
            .await
            .unwrap();
    }

    pub async fn recv(&mut self) -> AgentMessage {
        within("a message from the agent", async {
            let mut header = [0u8; HEADER_LEN];
            self.recv.read_exact(&mut header).await.unwrap();
            let mut payload = vec![0u8; codec::decode_len(header).unwrap()];
            self.recv.read_exact(&mut payload).await.unwrap();
            codec::decode_payload(&payload).unwrap()
        })
        .await
    }

    pub async fn welcome(&mut self) {
        self.send(ServerMessage::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            node: NodeId(1),
            heartbeat_interval: HumanDuration::from_millis(100),
        }))
        .await;
    }

    /// Reads messages until `pick` takes one; returns it and everything read before it.
    pub async fn until<T>(
        &mut self,
        mut pick: impl FnMut(&AgentMessage) -> Option<T>,
    ) -> (T, Vec<AgentMessage>) {
        let mut before = Vec::new();
        loop {
            let msg = self.recv().await;
            if let Some(t) = pick(&msg) {
                return (t, before);
            }
            before.push(msg);
        }
    }

    pub async fn finished(&mut self, run: RunId) -> (TaskFinished, Vec<AgentMessage>) {
        self.until(|m| match m {
            AgentMessage::Finished(f) if f.run == run => Some(f.clone()),
            _ => None,
        })
        .await
    }
}

pub fn wait_until(
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> impl std::future::Future<Output = ()> {
    let deadline = Instant::now() + DEADLINE;
    let what = what.to_owned();
    async move {
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn process_is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
