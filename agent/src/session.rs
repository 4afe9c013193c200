//! The agent's link to the servers: connect, Hello, then heartbeats and results up and work
//! down on one control stream; reconnect with capped backoff when it drops. Tasks run
//! independently of the link, and their results wait in the outbox until acknowledged.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use windflow_protocol::messages::{
    AgentMessage, Heartbeat, Hello, RunTask, ServerMessage, TaskFinished, VersionRange,
};
use windflow_protocol::{DriverKind, RunId};

use crate::frames::{read_frame, write_frame};
use crate::{AgentConfig, AgentError, drivers};

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Live output and attempt events waiting for the link; beyond this they are dropped.
const EVENT_BUFFER: usize = 1024;

/// What the agent is doing, shared by the session and the running tasks.
struct Work {
    running: Mutex<HashSet<RunId>>,
    /// Results not yet acknowledged by a server.
    outbox: Mutex<BTreeMap<RunId, TaskFinished>>,
    finished: Notify,
    events: mpsc::Sender<AgentMessage>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Work {
    /// Starts a task unless it is already running or finished and unacknowledged (a server
    /// sends running work again when a session resumes).
    fn start(self: &Arc<Self>, task: RunTask) {
        if lock(&self.outbox).contains_key(&task.run) || !lock(&self.running).insert(task.run) {
            tracing::debug!(run = %task.run, "already have this run");
            return;
        }
        let work = self.clone();
        let span = tracing::info_span!("run", run = %task.run, job = %task.job);
        tokio::spawn(
            async move {
                tracing::info!("starting");
                let finished = drivers::exec::run_exec(task.run, &task.task, work.events.clone()).await;
                tracing::info!(outcome = ?finished.outcome, attempts = finished.attempts, "finished");
                lock(&work.outbox).insert(task.run, finished);
                lock(&work.running).remove(&task.run);
                work.finished.notify_one();
            }
            .instrument(span),
        );
    }

    fn acknowledged(&self, run: RunId) {
        lock(&self.outbox).remove(&run);
    }
}

enum SessionEnd {
    Shutdown,
    Lost,
}

/// Runs the agent until `shutdown`. Returns an error only when a server refuses the agent.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    if config.servers.is_empty() {
        return Err(AgentError::NoServers);
    }
    windflow_certs::install_crypto_provider();
    let client = windflow_certs::quinn_client_config(
        &config.identity,
        windflow_protocol::messages::ALPN_AGENT,
    )?;
    let bind: SocketAddr = if config.servers[0].is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .map_err(|_| AgentError::Protocol("bad bind address".into()))?;
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(client);

    let (events_tx, mut events) = mpsc::channel(EVENT_BUFFER);
    let work = Arc::new(Work {
        running: Mutex::default(),
        outbox: Mutex::default(),
        finished: Notify::new(),
        events: events_tx,
    });
    let mut backoff = FIRST_BACKOFF;
    let mut next = 0usize;
    let result = loop {
        let server = config.servers[next % config.servers.len()];
        let span = tracing::info_span!("session", %server);
        match session(&endpoint, server, &config, &work, &mut events, &shutdown)
            .instrument(span)
            .await
        {
            Ok(SessionEnd::Shutdown) => break Ok(()),
            Ok(SessionEnd::Lost) => {
                tracing::warn!(%server, "lost the server; reconnecting");
                backoff = FIRST_BACKOFF;
            }
            Err(AgentError::Refused { reason }) => {
                tracing::error!(%server, %reason, "the server refused this agent");
                break Err(AgentError::Refused { reason });
            }
            Err(e) => {
                tracing::warn!(%server, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot hold a session");
                next += 1;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(config.reconnect_max_backoff.max(FIRST_BACKOFF));
    };
    endpoint.close(0u32.into(), b"agent stopping");
    result
}

async fn session(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    config: &AgentConfig,
    work: &Arc<Work>,
    events: &mut mpsc::Receiver<AgentMessage>,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, AgentError> {
    let conn = tokio::select! {
        _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
        conn = endpoint.connect(server, windflow_certs::SERVER_NAME)? => conn?,
    };
    let (mut send, mut recv) = conn.open_bi().await?;
    let hello = Hello {
        versions: VersionRange::SUPPORTED,
        hostname: config.hostname.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        drivers: vec![DriverKind::Exec],
    };
    write_frame(&mut send, &AgentMessage::Hello(hello)).await?;
    let welcome =
        match tokio::time::timeout(WELCOME_TIMEOUT, read_frame::<ServerMessage>(&mut recv)).await {
            Ok(Ok(Some(ServerMessage::Welcome(w)))) => w,
            Ok(Ok(Some(ServerMessage::Refused { reason }))) => {
                return Err(AgentError::Refused { reason });
            }
            Ok(Ok(Some(other))) => {
                return Err(AgentError::Protocol(format!(
                    "expected Welcome, got {other:?}"
                )));
            }
            Ok(Ok(None)) => {
                return Err(AgentError::Protocol(
                    "the server closed the stream before Welcome".into(),
                ));
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(AgentError::Protocol("no Welcome within 10s".into())),
        };
    tracing::info!(node = %welcome.node, version = welcome.version, "connected");

    // Reading a frame is not cancel-safe, so one task reads and hands over whole messages.
    let (incoming_tx, mut incoming) = mpsc::channel(64);
    let reader = tokio::spawn(async move {
        loop {
            match read_frame::<ServerMessage>(&mut recv).await {
                Ok(Some(msg)) => {
                    if incoming_tx.send(msg).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "control stream closed");
                    break;
                }
            }
        }
    });
    let result = session_loop(
        &conn,
        &mut send,
        &mut incoming,
        welcome.heartbeat_interval.0,
        work,
        events,
        shutdown,
    )
    .await;
    reader.abort();
    if matches!(result, Ok(SessionEnd::Shutdown)) {
        conn.close(0u32.into(), b"agent stopping");
    }
    result
}

async fn session_loop(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    incoming: &mut mpsc::Receiver<ServerMessage>,
    heartbeat_every: Duration,
    work: &Arc<Work>,
    events: &mut mpsc::Receiver<AgentMessage>,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, AgentError> {
    // Results from before this session go first.
    let mut sent: HashSet<RunId> = HashSet::new();
    send_unsent(send, work, &mut sent).await?;
    let mut heartbeat = tokio::time::interval(heartbeat_every.max(Duration::from_millis(100)));
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            _ = heartbeat.tick() => {
                seq += 1;
                let running = lock(&work.running).iter().copied().collect();
                write_frame(send, &AgentMessage::Heartbeat(Heartbeat { seq, running })).await?;
            }
            Some(event) = events.recv() => write_frame(send, &event).await?,
            _ = work.finished.notified() => send_unsent(send, work, &mut sent).await?,
            msg = incoming.recv() => match msg {
                None => {
                    let reason = conn.close_reason().map_or_else(|| "stream ended".to_owned(), |r| r.to_string());
                    tracing::info!(%reason, "session ended by the server");
                    return Ok(SessionEnd::Lost);
                }
                Some(ServerMessage::RunTask(task)) => work.start(task),
                Some(ServerMessage::FinishedAck { run }) => work.acknowledged(run),
                Some(ServerMessage::HeartbeatAck { .. }) => {}
                Some(other) => tracing::warn!(?other, "unexpected message in a running session"),
            },
        }
    }
}

async fn send_unsent(
    send: &mut quinn::SendStream,
    work: &Work,
    sent: &mut HashSet<RunId>,
) -> Result<(), AgentError> {
    let pending: Vec<TaskFinished> = lock(&work.outbox)
        .values()
        .filter(|f| !sent.contains(&f.run))
        .cloned()
        .collect();
    for finished in pending {
        let run = finished.run;
        write_frame(send, &AgentMessage::Finished(finished)).await?;
        sent.insert(run);
    }
    Ok(())
}
