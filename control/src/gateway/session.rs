//! One agent's session: Hello and version check, then heartbeats, output and results up,
//! work down. Everything an agent sends is checked before it reaches the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::Instrument;
use windflow_certs::PeerIdentity;
use windflow_protocol::messages::{
    AgentMessage, Hello, RunTask, ServerMessage, TaskFinished, VersionRange, Welcome,
};
use windflow_protocol::run::{capped_text, tail_text};
use windflow_protocol::{
    CONTEXT_MAX_BYTES, Fingerprint, NodeId, RunStatus, STDERR_TAIL_BYTES, Timestamp,
};
use windflow_raft::{Command, RaftNode, WriteError};

use super::Gateway;
use super::alloc_feed::AllocFeed;
use windflow_certs::wire::{WireError, read_frame, write_frame};

/// How long an agent has to say Hello after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest failure reason kept from an agent.
const MAX_ERROR_LEN: usize = 4096;
/// The most results of one agent being recorded at once; the session reads on meanwhile.
const MAX_RECORDING: usize = 256;

static SESSION_SEQ: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("{0}")]
    Refused(String),
}

impl Gateway {
    pub(super) async fn serve_agent(&self, conn: quinn::Connection, feed: AllocFeed) {
        let node = match windflow_certs::peer_identity(&conn) {
            Ok(PeerIdentity::Node(node)) => node,
            Ok(other) => {
                tracing::warn!(?other, "a non-agent certificate opened an agent session");
                conn.close(2u32.into(), b"not an agent certificate");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "unreadable peer certificate");
                conn.close(2u32.into(), b"unreadable certificate");
                return;
            }
        };
        tracing::Span::current().record("node", tracing::field::display(node));
        // A certificate revoked mid-session loses its connection (the session then ends
        // as on any loss); the verifier refuses its next handshake.
        let serial = windflow_certs::peer_serial(&conn).unwrap_or_default();
        let revocations = self.revocations.clone();
        let watched = conn.clone();
        let watch = tokio::spawn(async move {
            revocations.revoked(&serial).await;
            tracing::warn!(%node, %serial, "closing the session of a revoked certificate");
            watched.close(3u32.into(), b"certificate revoked");
        });
        match self.agent_session(&conn, node, feed).await {
            Ok(()) => tracing::info!(%node, "agent session ended"),
            Err(e) => tracing::info!(%node, error = %e, "agent session ended"),
        }
        watch.abort();
    }

    async fn agent_session(
        &self,
        conn: &quinn::Connection,
        node: NodeId,
        feed: AllocFeed,
    ) -> Result<(), SessionError> {
        let (mut send, mut recv) = conn.accept_bi().await?;
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_frame::<AgentMessage>(&mut recv))
            .await
        {
            Ok(Ok(Some(AgentMessage::Hello(hello)))) => hello,
            Ok(Ok(Some(_))) => {
                return self
                    .refuse(&mut send, "the first message must be Hello")
                    .await;
            }
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return self.refuse(&mut send, "no Hello within 10s").await,
        };
        let Some(version) = VersionRange::SUPPORTED.negotiate(&hello.versions) else {
            let reason = format!(
                "protocol version mismatch: agent speaks {}, server speaks {}",
                hello.versions,
                VersionRange::SUPPORTED
            );
            return self.refuse(&mut send, &reason).await;
        };
        if let Err(e) = self.record_hello(node, &hello).await {
            let reason = match e {
                WriteError::Rejected(r) => format!("this node is not registered: {r}"),
                other => format!("the server cannot record the session now: {other}"),
            };
            return self.refuse(&mut send, &reason).await;
        }
        write_frame(
            &mut send,
            &ServerMessage::Welcome(Welcome {
                version,
                node,
                heartbeat_interval: self.heartbeat_interval.into(),
            }),
        )
        .await?;
        tracing::info!(%node, hostname = %hello.hostname, version, alloc_index = hello.alloc_index, "agent connected");

        let (tx, mut rx) = mpsc::channel::<ServerMessage>(256);
        let session = SESSION_SEQ.fetch_add(1, Ordering::Relaxed);
        self.sessions.insert(
            node,
            session,
            tx.clone(),
            Some(conn.clone()),
            hello.drivers.clone(),
        );
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if write_frame(&mut send, &msg).await.is_err() {
                    break;
                }
            }
        });
        self.resend_running(node, &tx).await;
        // Subscribed before the first read of the node's changes: none falls in between.
        let allocs = tokio::spawn({
            let gateway = self.clone();
            let feed = feed.subscribe(node);
            let tx = tx.clone();
            async move { gateway.sync_allocs(node, hello.alloc_index, feed, tx).await }
                .instrument(tracing::Span::current())
        });
        let result = self.read_loop(node, &mut recv, &tx).await;
        self.sessions.remove(node, session);
        allocs.abort();
        writer.abort();
        result
    }

    async fn refuse(&self, send: &mut quinn::SendStream, reason: &str) -> Result<(), SessionError> {
        tracing::warn!(reason, "refusing agent session");
        write_frame(
            send,
            &ServerMessage::Refused {
                reason: reason.to_owned(),
            },
        )
        .await?;
        let _ = send.finish();
        let _ = send.stopped().await;
        Err(SessionError::Refused(reason.to_owned()))
    }

    async fn record_hello(&self, node: NodeId, hello: &Hello) -> Result<(), WriteError> {
        self.raft
            .write(Command::NodeHello {
                node,
                hostname: truncate(&hello.hostname, 255),
                drivers: hello.drivers.clone(),
                agent_version: truncate(&hello.agent_version, 64),
                fingerprint: checked_fingerprint(&hello.fingerprint),
                at: Timestamp::now(),
            })
            .await
            .map(|_| ())
    }

    /// Runs this node holds according to the store are sent again: the agent ignores the
    /// ones it already has, and picks up any that were lost in a dropped connection.
    async fn resend_running(&self, node: NodeId, tx: &mpsc::Sender<ServerMessage>) {
        let reader = self.raft.reader();
        let running = match reader.runs_with_status(RunStatus::Running) {
            Ok(runs) => runs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list running runs");
                return;
            }
        };
        for run in running.into_iter().filter(|r| r.node == Some(node)) {
            let Ok(Some(job)) = reader.job(run.job) else {
                continue;
            };
            if let Some(task) = job.spec.tasks().next() {
                // References are resolved again: the run may never have reached the agent.
                let task = match crate::refs::resolve_task(reader, &run.namespace, task) {
                    Ok(task) => task,
                    Err(e) => {
                        tracing::warn!(run = %run.id, error = %e, "cannot resolve the run's context references to send it again");
                        continue;
                    }
                };
                let task = match self.secrets.reveal(&task).await {
                    Ok(task) => task,
                    Err(e) => {
                        tracing::error!(run = %run.id, error = %e, "cannot open the task's secret env to send it again");
                        continue;
                    }
                };
                let _ = tx
                    .send(ServerMessage::RunTask(RunTask {
                        run: run.id,
                        job: job.id,
                        task,
                    }))
                    .await;
            }
        }
    }

    async fn read_loop(
        &self,
        node: NodeId,
        recv: &mut quinn::RecvStream,
        tx: &mpsc::Sender<ServerMessage>,
    ) -> Result<(), SessionError> {
        // Results are recorded concurrently, so an agent's many results share raft
        // entries instead of taking a commit round each, one after another.
        let mut recording = tokio::task::JoinSet::new();
        while let Some(msg) = read_frame::<AgentMessage>(recv).await? {
            while recording.try_join_next().is_some() {}
            match msg {
                AgentMessage::Heartbeat(hb) => {
                    // Liveness: what the heartbeat reporter tells raft (crate::heartbeats).
                    self.sessions.heard(node);
                    let _ = tx.send(ServerMessage::HeartbeatAck { seq: hb.seq }).await;
                }
                AgentMessage::AttemptStarted { run, attempt, .. } => {
                    tracing::debug!(%node, %run, attempt, "attempt started");
                }
                AgentMessage::Output(chunk) => {
                    if self.run_is_on(chunk.run, node) {
                        self.outputs.append(chunk.run, &chunk.data);
                    }
                }
                AgentMessage::Finished(finished) => {
                    if recording.len() >= MAX_RECORDING {
                        recording.join_next().await;
                    }
                    let (raft, tx) = (self.raft.clone(), tx.clone());
                    recording.spawn(
                        async move {
                            let run = finished.run;
                            if record_finished(&raft, node, finished).await {
                                let _ = tx.send(ServerMessage::FinishedAck { run }).await;
                            }
                        }
                        .in_current_span(),
                    );
                }
                AgentMessage::AllocUpdate(update) => {
                    let (alloc, client) = (update.alloc, update.client);
                    if self.record_alloc_update(node, update).await {
                        let _ = tx
                            .send(ServerMessage::AllocUpdateAck { alloc, client })
                            .await;
                    }
                }
                AgentMessage::Hello(_) => {
                    tracing::warn!(%node, "ignoring a second Hello in one session");
                }
            }
        }
        // The agent keeps what was not acknowledged, and sends it again next session.
        while recording.join_next().await.is_some() {}
        Ok(())
    }

    fn run_is_on(&self, run: windflow_protocol::RunId, node: NodeId) -> bool {
        run_is_on(&self.raft, run, node)
    }
}

fn run_is_on(raft: &RaftNode, run: windflow_protocol::RunId, node: NodeId) -> bool {
    matches!(raft.reader().run(run), Ok(Some(r)) if r.node == Some(node))
}

/// Writes a result through raft. True when the agent may forget it: recorded, or not
/// ours to record (unknown run, or a run placed on another node).
async fn record_finished(raft: &RaftNode, node: NodeId, f: TaskFinished) -> bool {
    if !run_is_on(raft, f.run, node) {
        tracing::warn!(%node, run = %f.run, "dropping a result for a run not placed on this node");
        return true;
    }
    let (stdout, cut) = capped_text(&f.stdout, CONTEXT_MAX_BYTES);
    let cmd = Command::RunFinished {
        run: f.run,
        node,
        outcome: f.outcome,
        exit_code: f.exit_code,
        attempts: f.attempts,
        started_at: f.started_at,
        duration: f.duration,
        stdout,
        stdout_truncated: f.stdout_truncated || cut,
        stderr_tail: tail_text(&f.stderr_tail, STDERR_TAIL_BYTES),
        error: f.error.map(|e| truncate(&e, MAX_ERROR_LEN)),
        at: Timestamp::now(),
    };
    match raft.write(cmd).await {
        Ok(_) => true,
        Err(WriteError::Rejected(e)) => {
            tracing::warn!(%node, run = %f.run, error = %e, "result rejected by the store");
            true
        }
        // Not committed: keep the agent's copy, it sends it again.
        Err(e) => {
            tracing::warn!(%node, run = %f.run, error = %e, "cannot record result yet");
            false
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    capped_text(s.as_bytes(), max).0
}

/// An agent's fingerprint as the store keeps it: bounded, so a misbehaving agent cannot
/// bloat every server's state.
fn checked_fingerprint(f: &Fingerprint) -> Fingerprint {
    const MAX_ATTRIBUTES: usize = 128;
    Fingerprint {
        resources: f.resources,
        attributes: f
            .attributes
            .iter()
            .take(MAX_ATTRIBUTES)
            .map(|(k, v)| (truncate(k, 128), truncate(v, 256)))
            .collect(),
    }
}
