//! A single-server raft group on disk: initialisation once, writes that survive a restart,
//! and snapshots with log compaction.

use std::collections::BTreeMap;
use std::time::Duration;

use windflow_certs::{ClusterCa, TlsIdentity};
use windflow_protocol::messages::ALPN_RAFT;
use windflow_protocol::{
    DriverConfig, ExecConfig, JobId, JobSpec, RetryPolicy, TaskSpec, Timestamp,
};
use windflow_raft::{Applied, BasicNode, Command, QuicNetwork, RaftConfig, RaftNode};

fn network(dir: &std::path::Path) -> (QuicNetwork, String) {
    let ca = ClusterCa::load_or_create(&dir.join("ca")).unwrap();
    let identity = TlsIdentity {
        ca_pem: ca.cert_pem().into(),
        cert: ca.issue_server("s1", &[], &[]).unwrap(),
    };
    let server = windflow_certs::quinn_server_config(&identity, &[ALPN_RAFT]).unwrap();
    let client = windflow_certs::quinn_client_config(&identity, ALPN_RAFT).unwrap();
    let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap().to_string();
    (QuicNetwork::new(endpoint, client), addr)
}

async fn open(dir: &std::path::Path, snapshot_after_logs: u64) -> (RaftNode, bool) {
    let (net, addr) = network(dir);
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

fn create(name: &str) -> Command {
    let task = TaskSpec {
        name: name.into(),
        driver: DriverConfig::Exec(ExecConfig {
            command: "true".into(),
            workdir: None,
        }),
        env: Default::default(),
        timeout: None,
        retry: RetryPolicy::default(),
    };
    Command::CreateJob {
        spec: JobSpec::exec(name, task),
        at: Timestamp::now(),
    }
}

async fn write_job(node: &RaftNode, name: &str) -> JobId {
    match node.write(create(name)).await.unwrap() {
        Applied::Job(j) => j.id,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_survive_a_restart_and_the_group_initialises_once() {
    let dir = tempfile::tempdir().unwrap();
    let (node, initialized) = open(dir.path(), 10_000).await;
    assert!(initialized);
    for i in 1..=20u64 {
        assert_eq!(write_job(&node, &format!("job-{i}")).await, JobId(i));
    }
    assert!(matches!(
        node.write(create("job-1")).await,
        Err(windflow_raft::WriteError::Rejected(_))
    ));
    node.linearizable().await.unwrap();
    node.shutdown().await.unwrap();
    drop(node);

    let (node, initialized) = open(dir.path(), 10_000).await;
    assert!(!initialized, "a restart must not initialise again");
    assert_eq!(node.reader().job_count().unwrap(), 20);
    assert_eq!(write_job(&node, "after-restart").await, JobId(21));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_compact_the_log_and_restore_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _) = open(dir.path(), 50).await;
    for i in 0..200 {
        write_job(&node, &format!("j{i}")).await;
    }
    let metrics = node
        .raft()
        .wait(Some(Duration::from_secs(30)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= 150),
            "a snapshot past entry 150",
        )
        .await
        .unwrap();
    assert!(
        metrics.purged.is_some(),
        "the log is purged behind the snapshot"
    );
    node.shutdown().await.unwrap();
    drop(node);

    let (node, _) = open(dir.path(), 50).await;
    assert_eq!(node.reader().job_count().unwrap(), 200);
    assert_eq!(
        node.reader().job_by_name("j0").unwrap().unwrap().id,
        JobId(1)
    );
    assert_eq!(write_job(&node, "next").await, JobId(201));
    node.shutdown().await.unwrap();
}
