//! Simulated agents for the load benches: real nodes (enrolled through the real exchange
//! with a join token, a key and CSR each) that open real QUIC mutual-TLS sessions and
//! speak the agent protocol, without running anything. `agent_fanout` keeps them
//! heartbeating; `schedule_fire` also has them answer each `RunTask` at once, as an agent
//! whose process started and exited 0, so what is measured is the server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use windflow_certs::wire::{read_frame, write_frame};
use windflow_certs::{CertRequest, TlsIdentity};
use windflow_protocol::enroll::{EnrollRequest, EnrollResponse, JoinKind, JoinToken};
use windflow_protocol::messages::{
    ALPN_AGENT, AgentMessage, Heartbeat, Hello, ServerMessage, TaskFinished, VersionRange,
};
use windflow_protocol::{
    DriverKind, Fingerprint, HumanDuration, Resources, RunId, RunOutcome, Timestamp,
};

/// Enrollments in flight at once: each is a raft write (fsync) and a signature.
const ENROLL_CONCURRENCY: usize = 16;
/// An enrollment refused because its write was not committed in time (a slow disk on a
/// shared machine) is tried again this many times.
pub const ENROLL_ATTEMPTS: usize = 5;

/// `n` node identities named `{prefix}-{i}`, through the real enrollment exchange.
pub async fn enroll_all(
    token: &JoinToken,
    server: SocketAddr,
    prefix: &str,
    n: usize,
) -> Vec<TlsIdentity> {
    let gate = Arc::new(Semaphore::new(ENROLL_CONCURRENCY));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (gate, token, name) = (gate.clone(), token.clone(), format!("{prefix}-{i}"));
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("semaphore");
                enroll(&token, server, name).await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("enrollment task"));
    }
    out
}

async fn enroll(token: &JoinToken, server: SocketAddr, name: String) -> TlsIdentity {
    let key = CertRequest::new(&name).expect("a key and CSR");
    let request = EnrollRequest {
        versions: VersionRange::SUPPORTED,
        secret: token.secret.clone(),
        kind: JoinKind::Agent,
        name: name.clone(),
        csr_pem: key.csr_pem.clone(),
        ips: Vec::new(),
    };
    let mut attempt = 1;
    let answer = loop {
        let (_, answer) =
            windflow_agent::enroll::ask_servers(token, &[server.to_string()], &request, None)
                .await
                .unwrap_or_else(|e| panic!("enrolling {name}: {e}"));
        match answer {
            EnrollResponse::Refused { reason }
                if reason.contains("did not commit") && attempt < ENROLL_ATTEMPTS =>
            {
                eprintln!("enrolling {name}, attempt {attempt}: {reason}; trying again");
                attempt += 1;
            }
            other => break other,
        }
    };
    match answer {
        EnrollResponse::Node {
            cert_pem,
            ca_cert_pem,
            ..
        } => TlsIdentity {
            ca_pem: ca_cert_pem,
            cert: key.into_issued(cert_pem),
        },
        other => panic!("enrolling {name}: {other:?}"),
    }
}

/// An agent session after Welcome: the connection and its control stream.
pub type Session = (quinn::Connection, quinn::SendStream, quinn::RecvStream);

/// Connect with the node's certificate, Hello, Welcome: what a real agent does first.
pub async fn handshake(
    endpoint: &quinn::Endpoint,
    identity: &TlsIdentity,
    server: SocketAddr,
    hostname: String,
) -> Result<Session, String> {
    let config =
        windflow_certs::quinn_client_config(identity, ALPN_AGENT).map_err(|e| e.to_string())?;
    let conn = endpoint
        .connect_with(config, server, windflow_certs::SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = Hello {
        versions: VersionRange::SUPPORTED,
        hostname,
        agent_version: "bench".into(),
        drivers: vec![DriverKind::Exec],
        fingerprint: Fingerprint {
            resources: Resources {
                cpu_mhz: 8 * 2500,
                memory_mb: 32 * 1024,
                disk_mb: 100 * 1024,
            },
            attributes: [("os".to_owned(), "linux".to_owned())].into(),
        },
        alloc_index: 0,
    };
    write_frame(&mut send, &AgentMessage::Hello(hello))
        .await
        .map_err(|e| e.to_string())?;
    match read_frame::<ServerMessage>(&mut recv).await {
        Ok(Some(ServerMessage::Welcome(_))) => Ok((conn, send, recv)),
        other => Err(format!("expected Welcome, got {other:?}")),
    }
}

/// When each run reached a simulated agent.
#[derive(Debug, Default)]
pub struct Received {
    pub runs: Mutex<Vec<(RunId, Timestamp)>>,
}

/// Runs a session as an agent that starts every task it is sent and finishes it at once
/// with exit code 0: heartbeats every second, answers `RunTask` with `AttemptStarted` and
/// `Finished`, and records when each run arrived. Ends when the session does.
pub async fn serve_runs(session: Session, received: Arc<Received>) {
    let (conn, mut send, mut recv) = session;
    let (tx, mut rx) = mpsc::unbounded_channel::<AgentMessage>();
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if write_frame(&mut send, &msg).await.is_err() {
                return;
            }
        }
    });
    let beats = tx.clone();
    let heartbeat = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for seq in 0.. {
            tick.tick().await;
            let hb = Heartbeat {
                seq,
                running: Vec::new(),
            };
            if beats.send(AgentMessage::Heartbeat(hb)).is_err() {
                return;
            }
        }
    });
    while let Ok(Some(msg)) = read_frame::<ServerMessage>(&mut recv).await {
        let ServerMessage::RunTask(task) = msg else {
            continue;
        };
        let at = Timestamp::now();
        received.runs.lock().expect("received").push((task.run, at));
        let started = Instant::now();
        let sent = tx.send(AgentMessage::AttemptStarted {
            run: task.run,
            attempt: 1,
            at,
        });
        let finished = AgentMessage::Finished(TaskFinished {
            run: task.run,
            outcome: RunOutcome::Succeeded,
            exit_code: Some(0),
            attempts: 1,
            started_at: at,
            duration: HumanDuration(started.elapsed()),
            stdout: Vec::new(),
            stdout_truncated: false,
            stderr_tail: Vec::new(),
            error: None,
        });
        if sent.is_err() || tx.send(finished).is_err() {
            break;
        }
    }
    heartbeat.abort();
    writer.abort();
    conn.close(0u32.into(), b"session over");
}
