//! What raft's integration suites share: a server identity under a test CA, a single-server
//! node on disk, a job command, and a three-server group over real QUIC.
#![allow(dead_code)] // each suite uses its own part

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use windflow_certs::{ClusterCa, TlsIdentity};
use windflow_protocol::messages::ALPN_RAFT;
use windflow_protocol::{JobId, JobSpec, TaskSpec, Timestamp};
use windflow_raft::{Applied, BasicNode, Command, QuicNetwork, RaftConfig, RaftNode, ServerId};

/// The identity of server `name` under the CA kept in `ca_dir` (created on first use).
pub fn server_identity(ca_dir: &Path, name: &str) -> TlsIdentity {
    let ca = ClusterCa::load_or_create(ca_dir).unwrap();
    TlsIdentity {
        ca_pem: ca.cert_pem().into(),
        cert: ca
            .issue_server(name, &[], &["127.0.0.1".parse().unwrap()])
            .unwrap(),
    }
}

/// A QUIC endpoint on 127.0.0.1 for `identity`, and the raft network over it.
pub fn network(identity: &TlsIdentity) -> (quinn::Endpoint, QuicNetwork) {
    let server = windflow_certs::quinn_server_config(identity, &[ALPN_RAFT]).unwrap();
    let client = windflow_certs::quinn_client_config(identity, ALPN_RAFT).unwrap();
    let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    (endpoint.clone(), QuicNetwork::new(endpoint, client))
}

/// The single server's raft ID: as large as the IDs servers derive from their names, so
/// encodings that only work for small numbers fail here too.
pub const SINGLE_SERVER_ID: u64 = 0x3a2f_058f_20bb_e030;

/// A single-server group in `dir`, leading; true when this start initialised it.
pub async fn single_server(dir: &Path, snapshot_after_logs: u64) -> (RaftNode, bool) {
    let (endpoint, net) = network(&server_identity(&dir.join("ca"), "s1"));
    let addr = endpoint.local_addr().unwrap().to_string();
    let config = RaftConfig {
        id: SINGLE_SERVER_ID,
        data_dir: dir.to_path_buf(),
        advertise_addr: addr.clone(),
        snapshot_after_logs,
    };
    // A node just shut down in this process may still be letting go of its store (its
    // tasks drop their handles as they end): a reopen waits for that, with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let node = loop {
        match RaftNode::open(config.clone(), net.clone()).await {
            Ok(node) => break node,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("reopening {}: {e}; trying again", dir.display());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("opening {}: {e}", dir.display()),
        }
    };
    let initialized = node
        .initialize_if_new(BTreeMap::from([(SINGLE_SERVER_ID, BasicNode::new(addr))]))
        .await
        .unwrap();
    node.wait_for_leader(Duration::from_secs(30)).await.unwrap();
    (node, initialized)
}

/// `CreateJob` for a shorthand job running `true`.
pub fn create_job(name: &str) -> Command {
    Command::CreateJob {
        spec: JobSpec::exec(name, TaskSpec::exec(name, "true")),
        at: Timestamp(1_000),
    }
}

/// Creates job `name` through raft and returns the ID apply gave it.
pub async fn write_job(node: &RaftNode, name: &str) -> JobId {
    match node.write(create_job(name)).await.unwrap() {
        Applied::Job(j) => j.id,
        other => panic!("{other:?}"),
    }
}

pub const WAIT: Duration = Duration::from_secs(30);
pub const SNAPSHOT_AFTER: u64 = 40;

/// One server of a test group: its QUIC endpoint, data dir and (while running) raft node.
pub struct Server {
    pub id: ServerId,
    pub dir: PathBuf,
    pub endpoint: quinn::Endpoint,
    pub client: quinn::ClientConfig,
    pub addr: SocketAddr,
    pub node: Option<RaftNode>,
    pub accept: Option<JoinHandle<()>>,
}

impl Server {
    pub fn bind(id: ServerId, root: &Path, ca: &ClusterCa) -> Server {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let identity = TlsIdentity {
            ca_pem: ca.cert_pem().into(),
            cert: ca
                .issue_server(&format!("s{id}"), &[], &[loopback])
                .unwrap(),
        };
        let server = windflow_certs::quinn_server_config(&identity, &[ALPN_RAFT]).unwrap();
        let client = windflow_certs::quinn_client_config(&identity, ALPN_RAFT).unwrap();
        let mut endpoint = quinn::Endpoint::server(server, SocketAddr::new(loopback, 0)).unwrap();
        endpoint.set_default_client_config(client.clone());
        let addr = endpoint.local_addr().unwrap();
        Server {
            id,
            dir: root.join(format!("s{id}")),
            endpoint,
            client,
            addr,
            node: None,
            accept: None,
        }
    }

    /// Opens the raft node on this server's data dir and serves peers with it.
    pub async fn start(&mut self) {
        let config = RaftConfig {
            id: self.id,
            data_dir: self.dir.clone(),
            advertise_addr: self.addr.to_string(),
            snapshot_after_logs: SNAPSHOT_AFTER,
        };
        let network = QuicNetwork::new(self.endpoint.clone(), self.client.clone());
        let node = RaftNode::open(config, network).await.unwrap();
        let raft = node.raft().clone();
        let faults = node.faults().clone();
        let endpoint = self.endpoint.clone();
        // Connections are served inside the accept task, so aborting it drops them all.
        self.accept = Some(tokio::spawn(async move {
            let mut peers = JoinSet::new();
            while let Some(incoming) = endpoint.accept().await {
                let raft = raft.clone();
                let faults = faults.clone();
                peers.spawn(async move {
                    if let Ok(conn) = incoming.await {
                        windflow_raft::serve_peer_connection_with_faults(raft, conn, faults).await;
                    }
                });
            }
        }));
        self.node = Some(node);
    }

    pub async fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        if let Some(node) = self.node.take() {
            node.shutdown().await.unwrap();
        }
    }

    pub fn node(&self) -> &RaftNode {
        self.node.as_ref().expect("server is running")
    }

    /// The name in this server's certificate (`server-<name>`).
    pub fn name(&self) -> String {
        format!("s{}", self.id)
    }
}

/// Waits until `node` has applied at least `index`.
pub async fn applied(node: &RaftNode, index: u64) {
    let mut rx = node.reader().subscribe();
    tokio::time::timeout(WAIT, rx.wait_for(|i| *i >= index))
        .await
        .expect("applied in time")
        .unwrap();
}

/// Waits until every server in `servers` names the same leader, and that leader is one of
/// them. (openraft's default leader ids are (term, node), so a brief leader can still be
/// superseded in the same term: agreement is what is waited for, not a first sighting.)
pub async fn leader_among(servers: &[&Server]) -> ServerId {
    let agreed = tokio::time::timeout(WAIT, async {
        loop {
            let leaders: Vec<Option<ServerId>> = servers
                .iter()
                .map(|s| s.node().metrics().borrow().current_leader)
                .collect();
            if let Some(Some(l)) = leaders.first() {
                let leads = servers.iter().any(|s| s.id == *l && s.node().is_leader());
                if leads && leaders.iter().all(|x| *x == Some(*l)) {
                    return *l;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match agreed {
        Ok(leader) => leader,
        Err(_) => {
            for s in servers {
                let m = s.node().metrics().borrow().clone();
                eprintln!(
                    "server {}: {:?} vote {} leader {:?} last log {:?}",
                    s.id, m.state, m.vote, m.current_leader, m.last_log_index
                );
            }
            panic!("the servers did not agree on a leader within {WAIT:?}");
        }
    }
}

pub async fn three_servers(root: &Path) -> Vec<Server> {
    let ca = ClusterCa::create(&root.join("ca")).unwrap();
    let mut servers: Vec<Server> = (1..=3).map(|id| Server::bind(id, root, &ca)).collect();
    let members: BTreeMap<ServerId, BasicNode> = servers
        .iter()
        .map(|s| (s.id, BasicNode::new(s.addr.to_string())))
        .collect();
    for s in &mut servers {
        s.start().await;
    }
    // Every server calls it on every start, as the real server does.
    let mut initialized = 0;
    for s in &servers {
        if s.node().initialize_if_new(members.clone()).await.unwrap() {
            initialized += 1;
        }
    }
    assert!(initialized >= 1);
    servers
}
