//! Windflow's benches live in `benches/benches/`; this library holds what they share.

/// The allocator the `windflow` binary uses, so in-process benches measure the same.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod cluster;
pub mod server;
pub mod sim_agent;

use std::collections::BTreeMap;

use windflow_protocol::messages::{
    AgentMessage, OutputChunk, OutputStream, RunTask, ServerMessage,
};
use windflow_protocol::{
    DriverConfig, ExecConfig, HumanDuration, JobId, RetryPolicy, RunId, TaskSpec,
};

/// A run-task message as the dispatcher sends it.
pub fn sample_run_task() -> ServerMessage {
    ServerMessage::RunTask(RunTask {
        run: RunId(123_456),
        job: JobId(42),
        task: TaskSpec {
            name: "backup".into(),
            driver: DriverConfig::Exec(ExecConfig {
                command: "pg_dump --format=custom shop > /srv/backup/shop.dump".into(),
                workdir: Some("/srv".into()),
            }),
            env: BTreeMap::from([
                ("PGHOST".into(), "db.internal".into()),
                ("PGUSER".into(), "backup".into()),
            ]),
            secret_env: BTreeMap::new(),
            timeout: Some(HumanDuration::from_secs(600)),
            retry: RetryPolicy {
                max_retries: 3,
                delay: HumanDuration::from_secs(5),
            },
            resources: windflow_protocol::Resources::TASK_DEFAULT,
        },
    })
}

/// An output chunk of `len` bytes.
pub fn sample_output(len: usize) -> AgentMessage {
    AgentMessage::Output(OutputChunk {
        run: RunId(123_456),
        attempt: 1,
        stream: OutputStream::Stdout,
        data: vec![b'x'; len],
    })
}

/// A single-server raft node in `dir`, initialised and leading.
pub async fn single_server(dir: &std::path::Path) -> windflow_raft::RaftNode {
    use windflow_raft::{BasicNode, QuicNetwork, RaftConfig, RaftNode};
    let ca = windflow_certs::ClusterCa::load_or_create(&dir.join("ca")).expect("CA");
    let identity = windflow_certs::TlsIdentity {
        ca_pem: ca.cert_pem().into(),
        cert: ca.issue_server("bench", &[], &[]).expect("server cert"),
    };
    let alpn = windflow_protocol::messages::ALPN_RAFT;
    let server = windflow_certs::quinn_server_config(&identity, &[alpn]).expect("server config");
    let client = windflow_certs::quinn_client_config(&identity, alpn).expect("client config");
    let endpoint = quinn::Endpoint::server(server, ([127, 0, 0, 1], 0).into()).expect("endpoint");
    let addr = endpoint.local_addr().expect("addr").to_string();
    let config = RaftConfig {
        id: 1,
        data_dir: dir.to_path_buf(),
        advertise_addr: addr.clone(),
        snapshot_after_logs: 10_000,
    };
    let node = RaftNode::open(config, QuicNetwork::new(endpoint, client))
        .await
        .expect("open raft");
    node.initialize_if_new(BTreeMap::from([(1, BasicNode::new(addr))]))
        .await
        .expect("initialise");
    node.wait_for_leader(std::time::Duration::from_secs(30))
        .await
        .expect("leader");
    node
}

/// A `CreateJob` command with a unique name, as `POST /v1/jobs` proposes it.
pub fn create_job_command() -> windflow_raft::Command {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = format!("bench-{}", SEQ.fetch_add(1, Ordering::Relaxed));
    let ServerMessage::RunTask(RunTask { mut task, .. }) = sample_run_task() else {
        unreachable!()
    };
    task.name = name.clone();
    windflow_raft::Command::CreateJob {
        spec: windflow_protocol::JobSpec::exec(name, task),
        at: windflow_protocol::Timestamp::now(),
    }
}
