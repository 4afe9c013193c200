//! The agent's link to the servers: connect, Hello, then heartbeats and results up and work
//! down on one control stream; reconnect with capped backoff when it drops.
//!
//! Per session, one writer task owns the `SendStream` and drains an mpsc of messages, one
//! reader task owns the `RecvStream` and hands whole messages over (reading a frame is not
//! cancel-safe), and the session loop in between sends heartbeats, forwards live output,
//! starts tasks and sends results. Tasks run independently of the link and of the agent
//! process itself (each under its own supervisor): their live output is dropped while there
//! is no link, their results wait in the outbox (kept on disk) until acknowledged, and an
//! agent that starts again takes back the runs the previous one left.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use windflow_protocol::messages::{
    ALPN_AGENT, AgentMessage, Heartbeat, Hello, ServerMessage, Welcome,
};

use crate::config::FIRST_RECONNECT_BACKOFF;
use crate::drivers::exec::SupervisorCommand;
use crate::work::Work;
use crate::{AgentConfig, AgentError, drivers};
use windflow_certs::wire::{read_frame, write_frame};

/// Connecting, Hello and Welcome together must take no longer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Live output and attempt events waiting for the session loop; beyond this they are dropped.
const EVENT_BUFFER: usize = 256;
/// Messages waiting for the writer.
const WRITE_BUFFER: usize = 64;
/// A result unacknowledged this long within one session is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(30);
/// Heartbeats are never sent more often than this, whatever a server asks.
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);
/// How often ended allocations' logs are looked at for removal.
const LOG_SWEEP_EVERY: Duration = Duration::from_secs(60);
/// On shutdown, how long the last messages get to leave.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why a session that was established ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
}

/// Runs the agent until `shutdown` is cancelled: connect, Hello, heartbeats, run tasks,
/// report; reconnects with capped exponential backoff when the link drops, moving to the
/// next server when one cannot be reached. Returns an error only for fatal conditions:
/// a server refusing the agent, no servers, or a TLS config that cannot be built.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    if config.servers.is_empty() {
        return Err(AgentError::NoServers);
    }
    let data_dir = config.data_dir.clone().ok_or(AgentError::NoDataDir)?;
    let supervisor = match &config.supervisor {
        Some(s) => s.clone(),
        None => SupervisorCommand::current_exe().map_err(AgentError::OwnBinary)?,
    };
    let (events_tx, mut events) = mpsc::channel(EVENT_BUFFER);
    let work = Work::open(
        &data_dir,
        supervisor,
        events_tx,
        config.kill_grace,
        config.logs,
    )?;
    windflow_certs::install_crypto_provider();
    let client = windflow_certs::quinn_client_config(&config.identity, ALPN_AGENT)?;
    let bind =
        crate::enroll::bind_addr(config.bind, config.servers.iter().any(SocketAddr::is_ipv6));
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(client);
    let renewal = tokio::spawn(crate::renew::run(
        config.clone(),
        endpoint.clone(),
        shutdown.child_token(),
    ));

    let sweeper = tokio::spawn(sweep_logs(work.clone()));

    let max_backoff = config.reconnect_max_backoff.max(FIRST_RECONNECT_BACKOFF);
    let mut backoff = FIRST_RECONNECT_BACKOFF;
    let mut next = 0usize;
    let mut session_no = 0u64;
    let result = loop {
        let server = config.servers[next % config.servers.len()];
        session_no += 1;
        let span = tracing::info_span!("session", %server, session = session_no);
        let ended = session(
            &endpoint,
            server,
            &config,
            &work,
            &mut events,
            &shutdown,
            session_no,
        )
        .instrument(span)
        .await;
        match ended {
            Ok(SessionEnd::Shutdown) => break Ok(()),
            Ok(SessionEnd::Lost(reason)) => {
                tracing::warn!(%server, %reason, "lost the server; reconnecting");
                backoff = FIRST_RECONNECT_BACKOFF;
            }
            Err(AgentError::Refused { reason }) => {
                tracing::error!(%server, %reason, "the server refused this agent; stopping");
                break Err(AgentError::Refused { reason });
            }
            Err(e) if e.certificate_refusal().is_some() => {
                let reason = e.certificate_refusal().unwrap_or_default().to_owned();
                tracing::error!(%server, error = %e, %reason, "refused at the TLS handshake; stopping");
                break Err(AgentError::Refused { reason });
            }
            Err(e) => {
                next += 1;
                tracing::warn!(
                    %server,
                    error = %e,
                    retry_in_ms = backoff.as_millis() as u64,
                    next = %config.servers[next % config.servers.len()],
                    "cannot open a session"
                );
            }
        }
        let wait = backoff;
        backoff = (backoff * 2).min(max_backoff);
        if !pause(wait, &mut events, &shutdown).await {
            break Ok(());
        }
    };
    for watcher in work.stop_all() {
        let _ = watcher.await;
    }
    for runner in work.allocs.detach_all() {
        let _ = runner.await;
    }
    renewal.abort();
    sweeper.abort();
    endpoint.close(0u32.into(), b"agent stopping");
    let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
    tracing::info!(unacknowledged = work.outbox.len(), "agent stopped");
    result
}

/// Removes ended allocations' logs past their retention: at start, then every minute.
async fn sweep_logs(work: Arc<Work>) {
    let mut every = tokio::time::interval(LOG_SWEEP_EVERY);
    loop {
        every.tick().await;
        let allocs = work.allocs.clone();
        work.served.logs.sweep(|id| allocs.holds(id));
    }
}

/// Waits between sessions, dropping live output (there is no one to send it to). False when
/// the agent is shutting down.
async fn pause(
    wait: Duration,
    events: &mut mpsc::Receiver<AgentMessage>,
    shutdown: &CancellationToken,
) -> bool {
    let sleep = tokio::time::sleep(wait);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = &mut sleep => return true,
            Some(_) = events.recv() => {}
        }
    }
}

/// Connects, says Hello and waits for the answer.
async fn handshake(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    config: &AgentConfig,
    work: &Work,
) -> Result<
    (
        quinn::Connection,
        quinn::SendStream,
        quinn::RecvStream,
        Welcome,
    ),
    AgentError,
> {
    let conn = endpoint
        .connect(server, windflow_certs::SERVER_NAME)?
        .await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut fingerprint = config.resources.apply(crate::fingerprint::host());
    let docker = match work.docker.fingerprint().await {
        Ok(attributes) => {
            fingerprint.attributes.extend(attributes);
            true
        }
        Err(e) => {
            tracing::info!(error = %e, "the docker driver is not usable here");
            false
        }
    };
    let hello = Hello {
        versions: config.versions,
        hostname: config.hostname.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        drivers: drivers::available(docker),
        fingerprint,
        alloc_index: work.allocs.index(),
    };
    write_frame(&mut send, &AgentMessage::Hello(hello)).await?;
    let welcome = match read_frame::<ServerMessage>(&mut recv).await? {
        Some(ServerMessage::Welcome(w)) => w,
        Some(ServerMessage::Refused { reason }) => {
            conn.close(0u32.into(), b"refused");
            return Err(AgentError::Refused { reason });
        }
        Some(other) => {
            return Err(AgentError::Protocol(format!(
                "expected Welcome, got {other:?}"
            )));
        }
        None => {
            return Err(AgentError::Protocol(
                "the server closed the control stream before Welcome".into(),
            ));
        }
    };
    let supported = config.versions;
    if !(supported.min..=supported.max).contains(&welcome.version) {
        return Err(AgentError::Protocol(format!(
            "the server chose protocol version {}, this agent speaks {supported}",
            welcome.version
        )));
    }
    Ok((conn, send, recv, welcome))
}

/// One session with one server, from connecting until the link drops or the agent stops.
async fn session(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    config: &AgentConfig,
    work: &Arc<Work>,
    events: &mut mpsc::Receiver<AgentMessage>,
    shutdown: &CancellationToken,
    session_no: u64,
) -> Result<SessionEnd, AgentError> {
    let (conn, send, recv, welcome) = tokio::select! {
        _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(endpoint, server, config, work)) => {
            r.map_err(|_| AgentError::HandshakeTimeout(HANDSHAKE_TIMEOUT))??
        }
    };
    tracing::info!(
        node = %welcome.node,
        version = welcome.version,
        heartbeat_interval = %welcome.heartbeat_interval,
        "connected"
    );
    // Output produced while there was no link is stale; the results are in the outbox.
    while events.try_recv().is_ok() {}
    // The servers' requests for logs and stats, each on a stream of its own.
    let requests = AbortOnDrop(tokio::spawn(
        crate::logs::serve_requests(conn.clone(), work.served.clone())
            .instrument(tracing::Span::current()),
    ));

    let (out, out_rx) = mpsc::channel(WRITE_BUFFER);
    let mut writer = tokio::spawn(write_loop(send, out_rx));
    let (incoming_tx, incoming) = mpsc::channel(64);
    let mut reader = tokio::spawn(read_loop(recv, incoming_tx));
    let mut link = Link {
        out,
        writer: &mut writer,
        reader: &mut reader,
        incoming,
        session: session_no,
    };
    let heartbeat_every = welcome.heartbeat_interval.0.max(MIN_HEARTBEAT);
    let result = session_loop(&mut link, heartbeat_every, work, events, shutdown).await;
    drop(link);
    drop(requests);
    reader.abort();
    match &result {
        Ok(SessionEnd::Shutdown) => {
            // The writer ends once its queue is empty, finishing the stream.
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
            writer.abort();
            conn.close(0u32.into(), b"agent stopping");
        }
        _ => {
            writer.abort();
            conn.close(0u32.into(), b"session ended");
        }
    }
    result
}

/// The session loop's side of the control stream.
struct Link<'a> {
    out: mpsc::Sender<AgentMessage>,
    writer: &'a mut JoinHandle<Result<(), AgentError>>,
    reader: &'a mut JoinHandle<Result<(), AgentError>>,
    incoming: mpsc::Receiver<ServerMessage>,
    session: u64,
}

impl Link<'_> {
    /// Queues a message for the writer; the reason the link is gone when it cannot.
    async fn send(&mut self, msg: AgentMessage) -> Result<(), String> {
        if self.out.send(msg).await.is_ok() {
            return Ok(());
        }
        Err(match (&mut *self.writer).await {
            Ok(Err(e)) => format!("writing to the control stream: {e}"),
            Ok(Ok(())) => "the control stream closed".into(),
            Err(e) => format!("the writer failed: {e}"),
        })
    }

    /// Sends the results and allocation updates this session has not sent yet, and those
    /// waiting too long for their ack. Queued live output goes first, so a run's last
    /// output always comes before its result.
    async fn send_results(
        &mut self,
        work: &Work,
        events: &mut mpsc::Receiver<AgentMessage>,
    ) -> Result<(), String> {
        while let Ok(event) = events.try_recv() {
            self.send(event).await?;
        }
        for finished in work.outbox.due(self.session, Instant::now(), RESEND_AFTER) {
            tracing::debug!(run = %finished.run, "sending a result");
            self.send(AgentMessage::Finished(finished)).await?;
        }
        for update in work.allocs.due(self.session, Instant::now(), RESEND_AFTER) {
            tracing::debug!(alloc = %update.alloc, client = ?update.client, "sending an allocation update");
            self.send(AgentMessage::AllocUpdate(update)).await?;
        }
        Ok(())
    }

    /// Why the server stopped talking, once the reader has ended.
    async fn read_failure(&mut self) -> String {
        match (&mut *self.reader).await {
            Ok(Ok(())) => "the server ended the control stream".into(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the reader failed: {e}"),
        }
    }
}

async fn session_loop(
    link: &mut Link<'_>,
    heartbeat_every: Duration,
    work: &Arc<Work>,
    events: &mut mpsc::Receiver<AgentMessage>,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, AgentError> {
    macro_rules! lost_on_err {
        ($e:expr) => {
            if let Err(reason) = $e {
                return Ok(SessionEnd::Lost(reason));
            }
        };
    }
    // Results from before this session go first.
    lost_on_err!(link.send_results(work, events).await);
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            msg = link.incoming.recv() => match msg {
                None => return Ok(SessionEnd::Lost(link.read_failure().await)),
                Some(ServerMessage::RunTask(task)) => work.start(task),
                Some(ServerMessage::FinishedAck { run }) => {
                    if work.outbox.ack(run) {
                        tracing::debug!(%run, "result acknowledged");
                    }
                }
                Some(ServerMessage::HeartbeatAck { seq }) => tracing::trace!(seq, "heartbeat acknowledged"),
                Some(ServerMessage::Refused { reason }) => return Err(AgentError::Refused { reason }),
                Some(ServerMessage::Welcome(_)) => tracing::warn!("ignoring a second Welcome"),
                Some(ServerMessage::Allocations(sync)) => work.allocs.apply(sync),
                Some(ServerMessage::AllocUpdateAck { alloc, client }) => work.allocs.ack(alloc, client),
            },
            _ = heartbeat.tick() => {
                seq += 1;
                let running = work.running();
                lost_on_err!(link.send(AgentMessage::Heartbeat(Heartbeat { seq, running })).await);
                lost_on_err!(link.send_results(work, events).await);
            }
            _ = work.finished.notified() => lost_on_err!(link.send_results(work, events).await),
            _ = work.allocs.changed.notified() => lost_on_err!(link.send_results(work, events).await),
            Some(event) = events.recv() => lost_on_err!(link.send(event).await),
        }
    }
}

/// Owns the send side of the control stream: writes what it is given, in order, and
/// finishes the stream when the queue closes.
async fn write_loop(
    mut send: quinn::SendStream,
    mut queue: mpsc::Receiver<AgentMessage>,
) -> Result<(), AgentError> {
    while let Some(msg) = queue.recv().await {
        write_frame(&mut send, &msg).await?;
    }
    let _ = send.finish();
    Ok(())
}

/// Owns the receive side of the control stream: hands whole messages to the session loop.
async fn read_loop(
    mut recv: quinn::RecvStream,
    incoming: mpsc::Sender<ServerMessage>,
) -> Result<(), AgentError> {
    while let Some(msg) = read_frame::<ServerMessage>(&mut recv).await? {
        if incoming.send(msg).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
