//! What raft's integration suites share: a server identity under a test CA, a single-server
//! node on disk, and a job command.
#![allow(dead_code)] // each suite uses its own part

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use windflow_certs::{ClusterCa, TlsIdentity};
use windflow_protocol::messages::ALPN_RAFT;
use windflow_protocol::{JobId, JobSpec, TaskSpec, Timestamp};
use windflow_raft::{Applied, BasicNode, Command, QuicNetwork, RaftConfig, RaftNode};

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

/// A single-server group in `dir`, leading; true when this start initialised it.
pub async fn single_server(dir: &Path, snapshot_after_logs: u64) -> (RaftNode, bool) {
    let (endpoint, net) = network(&server_identity(&dir.join("ca"), "s1"));
    let addr = endpoint.local_addr().unwrap().to_string();
    let config = RaftConfig {
        id: 1,
        data_dir: dir.to_path_buf(),
        advertise_addr: addr.clone(),
        snapshot_after_logs,
    };
    let node = RaftNode::open(config, net).await.unwrap();
    let initialized = node
        .initialize_if_new(BTreeMap::from([(1, BasicNode::new(addr))]))
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
