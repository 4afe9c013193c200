//! Serving the servers' requests for logs and stats: each arrives on a bi-directional
//! stream the server opens on this agent's connection (the control stream carries no bulk
//! data). One request frame in; [`AgentReply::Accepted`] or [`AgentReply::Refused`] out,
//! then the answer, then the stream is finished. A server that drops its end (its HTTP
//! client went away) stops the stream, which ends the follower here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tracing::Instrument;
use windflow_certs::wire::{WireError, read_frame, write_frame};
use windflow_protocol::messages::{AgentReply, AgentRequest, LogsRequest, StatsRequest, TaskStats};
use windflow_protocol::{AllocId, DriverKind, Timestamp};

use super::LogRoot;
use super::reader::{Cut, Follower, render};
use crate::drivers::docker::{Container, DockerDriver, LABEL_ALLOC, LABEL_TASK, LogQuery};

/// How long a server has to send its request once it opened a stream.
const REQUEST_WITHIN: Duration = Duration::from_secs(10);
/// How often a followed log file is looked at for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// The most bytes read from the files before they are sent on.
const READ_BATCH: usize = 1 << 20;
/// The largest chunk frame.
const CHUNK_MAX: usize = 256 * 1024;

/// What serving needs of the agent.
pub(crate) struct Served {
    pub logs: LogRoot,
    /// `DATA_DIR/allocs`: the allocations' task directories (`AL<n>/task-<k>`).
    pub allocs_dir: PathBuf,
    pub docker: Arc<DockerDriver>,
    /// Whether this agent holds an allocation now.
    pub holds: Box<dyn Fn(AllocId) -> bool + Send + Sync>,
    /// Whether an allocation's tasks run here now: following its logs ends when not.
    pub running: Box<dyn Fn(AllocId) -> bool + Send + Sync>,
}

/// Accepts the streams the server opens on `conn` and serves each on its own task, until
/// the connection ends.
pub(crate) async fn serve_requests(conn: quinn::Connection, served: Arc<Served>) {
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                tracing::debug!(error = %e, "no more request streams on this connection");
                return;
            }
        };
        let served = served.clone();
        tokio::spawn(
            async move {
                if let Err(e) = serve_one(send, recv, &served).await {
                    tracing::debug!(error = %e, "a request stream ended early");
                }
            }
            .instrument(tracing::info_span!("request")),
        );
    }
}

async fn serve_one(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    served: &Served,
) -> Result<(), WireError> {
    let request =
        match tokio::time::timeout(REQUEST_WITHIN, read_frame::<AgentRequest>(&mut recv)).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return refuse(&mut send, "no request within 10s".into(), false).await,
        };
    match request {
        AgentRequest::Logs(req) => {
            tracing::info!(alloc = %req.alloc, task = %req.task, stream = ?req.stream, follow = req.follow, "serving logs");
            match req.driver {
                DriverKind::Docker => docker_logs(&mut send, served, &req).await?,
                _ => exec_logs(&mut send, served, &req).await?,
            }
            tracing::info!(alloc = %req.alloc, task = %req.task, "logs served");
        }
        AgentRequest::Stats(req) => stats(&mut send, served, &req).await?,
    }
    let _ = send.finish();
    Ok(())
}

async fn refuse(
    send: &mut quinn::SendStream,
    reason: String,
    missing: bool,
) -> Result<(), WireError> {
    write_frame(send, &AgentReply::Refused { reason, missing }).await?;
    let _ = send.finish();
    Ok(())
}

/// Sends `bytes` as chunk frames.
async fn send_bytes(send: &mut quinn::SendStream, bytes: &[u8]) -> Result<(), WireError> {
    for chunk in bytes.chunks(CHUNK_MAX) {
        write_frame(send, &AgentReply::Chunk(chunk.to_vec())).await?;
    }
    Ok(())
}

/// An exec task's log from its files: the cut, then (with `follow`) new lines as they
/// come, until the server stops the stream or the allocation no longer runs here (its
/// last lines sent).
async fn exec_logs(
    send: &mut quinn::SendStream,
    served: &Served,
    req: &LogsRequest,
) -> Result<(), WireError> {
    let dir = served.logs.task_dir(req.alloc, &req.task);
    if !dir.exists() && !(served.holds)(req.alloc) {
        let reason = format!(
            "no logs of task `{}` of {} on this node (never run here, or removed after the allocation ended)",
            req.task, req.alloc
        );
        return refuse(send, reason, true).await;
    }
    write_frame(send, &AgentReply::Accepted).await?;
    let tail = req.tail.map(|t| t as usize);
    let mut follower = Follower::for_cut(&dir, req.stream, req.since, tail);
    let mut cut = Cut::new(req.since, tail);
    loop {
        let (records, caught_up) = follower.poll(READ_BATCH);
        send_bytes(send, &cut.take(&records)).await?;
        if caught_up {
            break;
        }
    }
    send_bytes(send, &cut.finish()).await?;
    if !req.follow {
        return Ok(());
    }
    let stopped = send.stopped();
    tokio::pin!(stopped);
    loop {
        // Looked at before the last read: what it wrote before it ended is sent.
        let ended = !(served.running)(req.alloc);
        loop {
            let (records, caught_up) = follower.poll(READ_BATCH);
            send_bytes(send, &render(&records)).await?;
            if caught_up {
                break;
            }
        }
        if ended {
            return Ok(());
        }
        tokio::select! {
            _ = &mut stopped => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
}

/// The container of an allocation's task: the running one, else the newest.
async fn container_of(
    docker: &DockerDriver,
    alloc: AllocId,
    task: &str,
) -> Result<Option<Container>, String> {
    let selector = [
        (LABEL_ALLOC, alloc.to_string()),
        (LABEL_TASK, task.to_owned()),
    ];
    let found = docker.find(&selector).await.map_err(|e| e.to_string())?;
    let running = found.iter().find(|f| f.exit.is_none());
    Ok(running.or(found.first()).map(|f| f.container.clone()))
}

/// A docker task's log from the engine, cut exactly: the engine's `since` is whole seconds,
/// so lines are cut again by their own timestamps, and its `tail` counts stdout and stderr
/// together, so the tail is taken here. Following goes on from the last line the history
/// saw.
async fn docker_logs(
    send: &mut quinn::SendStream,
    served: &Served,
    req: &LogsRequest,
) -> Result<(), WireError> {
    let container = match container_of(&served.docker, req.alloc, &req.task).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            let reason = format!(
                "no container of task `{}` of {} on this node (an allocation's containers are removed when it ends)",
                req.task, req.alloc
            );
            return refuse(send, reason, true).await;
        }
        Err(why) => return refuse(send, why, false).await,
    };
    let since_ns = req.since.map(|s| u128::from(s.0) * 1_000_000);
    let asked_at_ns = u128::from(Timestamp::now().0) * 1_000_000;
    let history = LogQuery {
        stream: req.stream,
        follow: false,
        since_secs: req.since.map(|s| s.0 / 1000),
        // The engine's tail counts both streams' lines together: the tail is taken here.
        tail: None,
    };
    let mut lines = match served.docker.log_lines(&container, history).await {
        Ok(lines) => lines,
        Err(e) => return refuse(send, e.to_string(), false).await,
    };
    write_frame(send, &AgentReply::Accepted).await?;
    let mut kept = std::collections::VecDeque::new();
    let mut seen_upto = None;
    while let Some(line) = lines.next().await {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "reading the container's log");
                break;
            }
        };
        seen_upto = seen_upto.max(Some(line.at_ns));
        if since_ns.is_some_and(|s| line.at_ns < s) {
            continue;
        }
        kept.push_back(line.bytes);
        if let Some(n) = req.tail
            && kept.len() > n as usize
        {
            kept.pop_front();
        }
    }
    let history: Vec<u8> = kept.into_iter().flatten().collect();
    send_bytes(send, &history).await?;
    if !req.follow {
        return Ok(());
    }
    let after_ns = seen_upto.unwrap_or(asked_at_ns.saturating_sub(1));
    let follow = LogQuery {
        stream: req.stream,
        follow: true,
        since_secs: Some((after_ns / 1_000_000_000) as u64),
        tail: None,
    };
    let mut lines = match served.docker.log_lines(&container, follow).await {
        Ok(lines) => lines,
        Err(e) => {
            tracing::warn!(error = %e, "following the container's log");
            return Ok(());
        }
    };
    let stopped = send.stopped();
    tokio::pin!(stopped);
    loop {
        let line = tokio::select! {
            _ = &mut stopped => return Ok(()),
            line = lines.next() => line,
        };
        match line {
            Some(Ok(line)) if line.at_ns > after_ns => send_bytes(send, &line.bytes).await?,
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "following the container's log");
                return Ok(());
            }
            // The container ended (or was removed).
            None => return Ok(()),
        }
    }
}

/// One sample of each task's resource use.
async fn stats(
    send: &mut quinn::SendStream,
    served: &Served,
    req: &StatsRequest,
) -> Result<(), WireError> {
    write_frame(send, &AgentReply::Accepted).await?;
    let mut all = Vec::with_capacity(req.tasks.len());
    for (k, (task, driver)) in req.tasks.iter().enumerate() {
        let stats = match driver {
            DriverKind::Docker => match container_of(&served.docker, req.alloc, task).await {
                Ok(Some(c)) => served
                    .docker
                    .stats(&c, task)
                    .await
                    .unwrap_or_else(|e| TaskStats {
                        task: task.clone(),
                        error: Some(e.to_string()),
                        ..TaskStats::default()
                    }),
                Ok(None) => TaskStats {
                    task: task.clone(),
                    error: Some("no container of this task on the node".into()),
                    ..TaskStats::default()
                },
                Err(why) => TaskStats {
                    task: task.clone(),
                    error: Some(why),
                    ..TaskStats::default()
                },
            },
            _ => {
                let dir = served
                    .allocs_dir
                    .join(req.alloc.to_string())
                    .join(format!("task-{k}"));
                super::stats::exec_stats(task, &dir).await
            }
        };
        all.push(stats);
    }
    write_frame(send, &AgentReply::Stats(all)).await
}
