//! The agent against a real QUIC server endpoint, made here with the cluster CA, that speaks
//! the protocol the way the servers do.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use windflow_agent::drivers::exec::SupervisorCommand;
use windflow_agent::{AgentConfig, AgentError};
use windflow_certs::{ClusterCa, PeerIdentity, TlsIdentity};
use windflow_protocol::codec::{self, HEADER_LEN};
use windflow_protocol::messages::{
    ALPN_AGENT, AgentMessage, Hello, OutputStream, PROTOCOL_VERSION, RunTask, ServerMessage,
    TaskFinished, VersionRange, Welcome,
};
use windflow_protocol::{DriverKind, HumanDuration, JobId, NodeId, RunId, RunOutcome, TaskSpec};

/// How long any one expected thing may take.
const DEADLINE: Duration = Duration::from_secs(20);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A CA, a server identity and an agent identity (node 1).
struct Pki {
    _dir: tempfile::TempDir,
    server: TlsIdentity,
    agent: TlsIdentity,
}

fn pki() -> Pki {
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

fn server_endpoint(identity: &TlsIdentity) -> (quinn::Endpoint, SocketAddr) {
    let config = windflow_certs::quinn_server_config(identity, &[ALPN_AGENT]).unwrap();
    let endpoint = quinn::Endpoint::server(config, (Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    (endpoint, addr)
}

/// The agent under test, running until `stop` is cancelled.
struct Agent {
    stop: CancellationToken,
    handle: JoinHandle<Result<(), AgentError>>,
    _data: Option<tempfile::TempDir>,
}

fn start_agent(pki: &Pki, servers: Vec<SocketAddr>) -> Agent {
    let data = tempfile::tempdir().unwrap();
    let mut agent = start_agent_in(pki, servers, data.path());
    agent._data = Some(data);
    agent
}

/// An agent on `data_dir`, whose tasks run under the real `windflow-agent` binary.
fn start_agent_in(pki: &Pki, servers: Vec<SocketAddr>, data_dir: &Path) -> Agent {
    let mut config = AgentConfig::new(servers, pki.agent.clone(), "test-host");
    config.reconnect_max_backoff = Duration::from_secs(1);
    config.data_dir = Some(data_dir.to_owned());
    config.supervisor = Some(SupervisorCommand {
        program: env!("CARGO_BIN_EXE_windflow-agent").into(),
    });
    let stop = CancellationToken::new();
    let handle = tokio::spawn(windflow_agent::run(config, stop.clone()));
    Agent {
        stop,
        handle,
        _data: None,
    }
}

impl Agent {
    async fn stop(self) {
        self.stop.cancel();
        let result = within("the agent to stop", self.handle).await.unwrap();
        assert!(result.is_ok(), "the agent stopped with {result:?}");
    }
}

/// The server's side of one agent session.
struct Session {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    hello: Hello,
}

/// Accepts the next agent connection and reads its Hello.
async fn accept(endpoint: &quinn::Endpoint) -> Session {
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
    async fn send(&mut self, msg: ServerMessage) {
        self.send
            .write_all(&codec::encode(&msg).unwrap())
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> AgentMessage {
        within("a message from the agent", async {
            let mut header = [0u8; HEADER_LEN];
            self.recv.read_exact(&mut header).await.unwrap();
            let mut payload = vec![0u8; codec::decode_len(header).unwrap()];
            self.recv.read_exact(&mut payload).await.unwrap();
            codec::decode_payload(&payload).unwrap()
        })
        .await
    }

    async fn welcome(&mut self) {
        self.send(ServerMessage::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            node: NodeId(1),
            heartbeat_interval: HumanDuration::from_millis(100),
        }))
        .await;
    }

    /// Reads messages until `pick` takes one; returns it and everything read before it.
    async fn until<T>(
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

    async fn finished(&mut self, run: RunId) -> (TaskFinished, Vec<AgentMessage>) {
        self.until(|m| match m {
            AgentMessage::Finished(f) if f.run == run => Some(f.clone()),
            _ => None,
        })
        .await
    }
}

fn exec(command: &str) -> TaskSpec {
    TaskSpec::exec("t", command)
}

fn run_task(run: u64, command: &str) -> ServerMessage {
    ServerMessage::RunTask(RunTask {
        run: RunId(run),
        job: JobId(1),
        task: exec(command),
    })
}

fn stdout_of(events: &[AgentMessage], run: RunId) -> Vec<u8> {
    events
        .iter()
        .filter_map(|m| match m {
            AgentMessage::Output(c) if c.run == run && c.stream == OutputStream::Stdout => {
                Some(c.data.clone())
            }
            _ => None,
        })
        .flatten()
        .collect()
}

fn attempts_started(events: &[AgentMessage], run: RunId) -> usize {
    events
        .iter()
        .filter(|m| matches!(m, AgentMessage::AttemptStarted { run: r, .. } if *r == run))
        .count()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> impl std::future::Future<Output = ()> {
    let deadline = Instant::now() + DEADLINE;
    let what = what.to_owned();
    async move {
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn process_is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[tokio::test]
async fn the_agent_runs_a_task_and_reports_its_output_and_result() {
    let pki = pki();
    let (endpoint, addr) = server_endpoint(&pki.server);
    let agent = start_agent(&pki, vec![addr]);

    let mut s = accept(&endpoint).await;
    assert_eq!(s.hello.versions, VersionRange::SUPPORTED);
    assert_eq!(s.hello.hostname, "test-host");
    assert_eq!(s.hello.drivers, vec![DriverKind::Exec]);
    assert!(!s.hello.agent_version.is_empty());
    s.welcome().await;
    s.send(run_task(7, "echo hi")).await;

    let (f, before) = s.finished(RunId(7)).await;
    assert_eq!(f.outcome, RunOutcome::Succeeded);
    assert_eq!((f.exit_code, f.attempts), (Some(0), 1));
    assert_eq!(f.stdout, b"hi\n");
    assert_eq!(attempts_started(&before, RunId(7)), 1);
    assert_eq!(
        stdout_of(&before, RunId(7)),
        b"hi\n",
        "live output comes before the result"
    );
    s.send(ServerMessage::FinishedAck { run: RunId(7) }).await;

    // Heartbeats keep coming, numbered in order.
    let mut seqs = Vec::new();
    while seqs.len() < 2 {
        let (seq, _) = s
            .until(|m| match m {
                AgentMessage::Heartbeat(hb) => Some(hb.seq),
                _ => None,
            })
            .await;
        seqs.push(seq);
    }
    assert!(seqs[0] < seqs[1], "{seqs:?}");

    agent.stop().await;
    // The agent says goodbye rather than letting the connection time out.
    within("the agent to close the connection", s.conn.closed()).await;
}

#[tokio::test]
async fn running_work_outlives_the_agent_and_the_next_agent_takes_it_back() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let pidfile = dir.path().join("pid");
    let go = dir.path().join("go");
    let starts = dir.path().join("starts");
    let (endpoint, addr) = server_endpoint(&pki.server);
    let agent = start_agent_in(&pki, vec![addr], &data);

    let mut s = accept(&endpoint).await;
    s.welcome().await;
    // Runs until the test lets it finish; a second start would add a line to `starts`.
    let command = format!(
        "echo $$ >> {starts}; echo $$ > {p}.tmp; mv {p}.tmp {p}; \
         while [ ! -e {go} ]; do sleep 0.05; done; echo done-$$",
        starts = starts.display(),
        p = pidfile.display(),
        go = go.display(),
    );
    s.send(run_task(3, &command)).await;
    s.until(|m| match m {
        AgentMessage::Heartbeat(hb) if hb.running == [RunId(3)] => Some(()),
        _ => None,
    })
    .await;
    wait_until("the task to start", || read_pid(&pidfile).is_some()).await;
    let pid = read_pid(&pidfile).unwrap();

    agent.stop().await;
    within("the agent to close the connection", s.conn.closed()).await;
    assert!(!process_is_dead(pid), "the task died with the agent");

    // The next agent on the same data dir: the run is in its first heartbeat, the server's
    // resent RunTask does not start it again, and its result comes once it ends.
    let agent = start_agent_in(&pki, vec![addr], &data);
    let mut s = accept(&endpoint).await;
    s.welcome().await;
    s.send(run_task(3, &command)).await;
    s.until(|m| match m {
        AgentMessage::Heartbeat(hb) if hb.running == [RunId(3)] => Some(()),
        _ => None,
    })
    .await;
    std::fs::write(&go, b"").unwrap();
    let (f, _) = s.finished(RunId(3)).await;
    assert_eq!(f.outcome, RunOutcome::Succeeded, "{f:?}");
    assert_eq!(f.attempts, 1);
    assert_eq!(f.stdout, format!("done-{pid}\n").into_bytes());
    assert_eq!(
        std::fs::read_to_string(&starts).unwrap(),
        format!("{pid}\n"),
        "the task was started once"
    );
    s.send(ServerMessage::FinishedAck { run: RunId(3) }).await;
    wait_until("the run's files to go once acknowledged", || {
        !data.join("runs").join("R3").exists()
    })
    .await;
    agent.stop().await;
}

#[tokio::test]
async fn a_result_produced_while_the_agent_was_down_is_sent_by_the_next_one() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let go = dir.path().join("go");
    let (endpoint, addr) = server_endpoint(&pki.server);
    let agent = start_agent_in(&pki, vec![addr], &data);
    let mut s = accept(&endpoint).await;
    s.welcome().await;
    let command = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; echo finished-alone",
        go = go.display()
    );
    s.send(run_task(4, &command)).await;
    s.until(|m| match m {
        AgentMessage::Heartbeat(hb) if hb.running == [RunId(4)] => Some(()),
        _ => None,
    })
    .await;
    agent.stop().await;

    // The task ends while no agent runs.
    std::fs::write(&go, b"").unwrap();
    let result = data.join("runs").join("R4").join("result");
    wait_until("the supervisor to record the result", || result.exists()).await;

    let agent = start_agent_in(&pki, vec![addr], &data);
    let mut s = accept(&endpoint).await;
    s.welcome().await;
    let (f, _) = s.finished(RunId(4)).await;
    assert_eq!((f.outcome, f.attempts), (RunOutcome::Succeeded, 1));
    assert_eq!(f.stdout, b"finished-alone\n");
    // Not acknowledged: the agent after this one sends it again, from its store.
    agent.stop().await;
    let agent = start_agent_in(&pki, vec![addr], &data);
    let mut s = accept(&endpoint).await;
    s.welcome().await;
    let (again, _) = s.finished(RunId(4)).await;
    assert_eq!(again, f);
    s.send(ServerMessage::FinishedAck { run: RunId(4) }).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_refused_agent_stops_with_the_reason() {
    let pki = pki();
    let (endpoint, addr) = server_endpoint(&pki.server);
    let agent = start_agent(&pki, vec![addr]);

    let mut s = accept(&endpoint).await;
    let reason = "protocol version mismatch: agent speaks 1..=1, server speaks 2..=2";
    s.send(ServerMessage::Refused {
        reason: reason.into(),
    })
    .await;
    s.send.finish().unwrap();

    let result = within("the agent to give up", agent.handle).await.unwrap();
    match result {
        Err(AgentError::Refused { reason: r }) => assert_eq!(r, reason),
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unacknowledged_result_is_sent_again_after_a_reconnect_and_not_rerun() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let (endpoint, addr) = server_endpoint(&pki.server);
    let agent = start_agent(&pki, vec![addr]);

    let mut s1 = accept(&endpoint).await;
    s1.welcome().await;
    let command = format!("echo once >> {}; echo done", ran.display());
    s1.send(run_task(9, &command)).await;
    let (first, _) = s1.finished(RunId(9)).await;
    assert_eq!(first.stdout, b"done\n");
    // The server goes away before acknowledging.
    s1.conn.close(0u32.into(), b"server restarting");

    let mut s2 = accept(&endpoint).await;
    s2.welcome().await;
    // The server sends its running work again, as servers do after a reconnect.
    s2.send(run_task(9, &command)).await;
    match s2.recv().await {
        AgentMessage::Finished(again) => assert_eq!(again, first, "the same result"),
        other => panic!("expected the unacknowledged result first, got {other:?}"),
    }
    // A run that takes a while, started after the resent RunTask 9 was handled: by the
    // time it ends, a second run of 9 would long have written its marker.
    s2.send(run_task(10, "sleep 0.5")).await;
    let (ten, before) = s2.finished(RunId(10)).await;
    assert_eq!(ten.outcome, RunOutcome::Succeeded);
    assert_eq!(
        attempts_started(&before, RunId(9)),
        0,
        "run 9 was run again"
    );
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "once\n");
    s2.send(ServerMessage::FinishedAck { run: RunId(9) }).await;
    s2.send(ServerMessage::FinishedAck { run: RunId(10) }).await;

    agent.stop().await;
}

#[tokio::test]
async fn a_server_that_drops_the_session_makes_the_agent_try_the_next() {
    let pki = pki();
    let (bad, bad_addr) = server_endpoint(&pki.server);
    let dropped = Arc::new(AtomicUsize::new(0));
    let count = dropped.clone();
    let bad_server = tokio::spawn(async move {
        while let Some(incoming) = bad.accept().await {
            if let Ok(conn) = incoming.await {
                count.fetch_add(1, Ordering::SeqCst);
                conn.close(1u32.into(), b"go away");
            }
        }
    });
    let (good, good_addr) = server_endpoint(&pki.server);
    let agent = start_agent(&pki, vec![bad_addr, good_addr]);

    let mut s = accept(&good).await;
    assert!(
        dropped.load(Ordering::SeqCst) >= 1,
        "the first server was tried first"
    );
    s.welcome().await;
    s.send(run_task(1, "echo failover")).await;
    let (f, _) = s.finished(RunId(1)).await;
    assert_eq!(f.stdout, b"failover\n");

    agent.stop().await;
    bad_server.abort();
}
