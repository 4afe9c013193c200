//! `GET /v1/allocations/{id}/logs` and `/stats`: asked of the agent holding the allocation,
//! over a stream of its own on the agent's connection to this server. Logs come back as a
//! chunked `text/plain` body, written as they arrive (`follow=true` keeps it open until
//! the client goes away, which cancels the agent's side).
//!
//! An agent connected to another server of the cluster is reached through that server
//! (`gateway::requests`); one no server has a session with is a 503 naming the node and
//! the servers asked.

use std::collections::HashMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use windflow_protocol::messages::{
    AgentReply, AgentRequest, LOG_TAIL_MAX, LogsRequest, OutputStream, StatsRequest, TaskStats,
};
use windflow_protocol::{AllocId, Allocation, DriverKind, HumanDuration, Timestamp};

use super::namespaces::NsScope;
use super::{ApiError, AppState};
use crate::gateway::{AgentAnswer, AskError};

/// The query parameters `logs` knows (`namespace` is the guard's).
const LOG_PARAMS: &[&str] = &["task", "stream", "follow", "since", "tail", "namespace"];

/// What a logs request asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogsQuery {
    task: Option<String>,
    stream: OutputStream,
    follow: bool,
    since: Option<Timestamp>,
    tail: Option<u32>,
}

fn invalid(param: &str, problem: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_query", format!("`{param}`: {problem}"))
}

impl LogsQuery {
    /// Checks every parameter, naming the one that is wrong; `now` anchors `since=10m`.
    fn parse(q: &HashMap<String, String>, now: Timestamp) -> Result<LogsQuery, ApiError> {
        let mut unknown: Vec<&String> = q
            .keys()
            .filter(|k| !LOG_PARAMS.contains(&k.as_str()))
            .collect();
        unknown.sort();
        if let Some(k) = unknown.first() {
            return Err(invalid(
                k,
                "unknown parameter; known are task, stream, follow, since and tail",
            ));
        }
        let task = match q.get("task").map(String::as_str) {
            None | Some("") => None,
            Some(t) => Some(t.to_owned()),
        };
        let stream = match q.get("stream").map(String::as_str) {
            None | Some("stdout") => OutputStream::Stdout,
            Some("stderr") => OutputStream::Stderr,
            Some(other) => {
                return Err(invalid(
                    "stream",
                    format!("must be stdout or stderr, not `{other}`"),
                ));
            }
        };
        let follow = match q.get("follow").map(String::as_str) {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") | Some("") => true,
            Some(other) => {
                return Err(invalid(
                    "follow",
                    format!("must be true or false, not `{other}`"),
                ));
            }
        };
        let since = match q.get("since").map(String::as_str) {
            None | Some("") => None,
            Some(s) => Some(parse_since(s, now).map_err(|e| invalid("since", e))?),
        };
        let tail = match q.get("tail").map(String::as_str) {
            None | Some("") => None,
            Some(t) => match t.parse::<u32>() {
                Ok(n) if n <= LOG_TAIL_MAX => Some(n),
                _ => {
                    return Err(invalid(
                        "tail",
                        format!("must be a number of lines from 0 to {LOG_TAIL_MAX}, not `{t}`"),
                    ));
                }
            },
        };
        Ok(LogsQuery {
            task,
            stream,
            follow,
            since,
            tail,
        })
    }
}

/// `since`: an RFC 3339 instant (`2026-12-02T17:00:00Z`), or a duration back from now
/// (`10m`, `1h30m`).
fn parse_since(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Ok(ago) = s.parse::<HumanDuration>() {
        let ms = u64::try_from(ago.0.as_millis()).unwrap_or(u64::MAX);
        return Ok(Timestamp(now.0.saturating_sub(ms)));
    }
    Timestamp::parse_rfc3339(s).map_err(|_| {
        format!(
            "`{s}` is neither a duration like 10m nor an RFC 3339 time like 2026-12-02T17:00:00Z"
        )
    })
}

/// The allocation's tasks, by name with their driver, from the job version it runs;
/// `None` once its job is gone.
fn known_tasks(
    state: &AppState,
    alloc: &Allocation,
) -> Result<Option<Vec<(String, DriverKind)>>, ApiError> {
    match tasks_of(state, alloc) {
        Ok(tasks) => Ok(Some(tasks)),
        Err(e) if e.status == StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}

/// The allocation's tasks, by name with their driver, from the job version it runs.
fn tasks_of(state: &AppState, alloc: &Allocation) -> Result<Vec<(String, DriverKind)>, ApiError> {
    let reader = state.raft.reader();
    let spec = match reader.job_version(alloc.job, alloc.job_version)? {
        Some(spec) if alloc.job_version > 0 => Some(spec),
        _ => reader.job(alloc.job)?.map(|j| j.spec),
    };
    let group = spec
        .as_ref()
        .and_then(|s| s.groups.iter().find(|g| g.name == alloc.group));
    let Some(group) = group else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "the tasks of {} are unknown: its job {} (group `{}`) is gone",
                alloc.id, alloc.job, alloc.group
            ),
        ));
    };
    Ok(group
        .tasks
        .iter()
        .map(|t| (t.name.clone(), t.driver.kind()))
        .collect())
}

/// The task a request names, or the only one.
fn pick_task(
    alloc: &Allocation,
    tasks: &[(String, DriverKind)],
    asked: Option<&str>,
) -> Result<(String, DriverKind), ApiError> {
    let names = || {
        tasks
            .iter()
            .map(|(n, _)| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match asked {
        Some(name) => tasks
            .iter()
            .find(|(n, _)| n == name)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!(
                        "task `{name}` is not a task of {}; its tasks: {}",
                        alloc.id,
                        names()
                    ),
                )
            }),
        None => match tasks {
            [only] => Ok(only.clone()),
            _ => Err(invalid(
                "task",
                format!("{} has several tasks ({}); name one", alloc.id, names()),
            )),
        },
    }
}

/// An agent's refusal or silence as an HTTP answer.
fn ask_error(state: &AppState, alloc: &Allocation, e: AskError) -> ApiError {
    match e {
        AskError::NotConnected(node) => not_connected(state, alloc, node, &[state.raft.id()], &[]),
        AskError::NoServerHasIt {
            node,
            asked,
            unreachable,
        } => not_connected(state, alloc, node, &asked, &unreachable),
        AskError::Refused {
            reason,
            missing: true,
        } => ApiError::new(StatusCode::NOT_FOUND, "not_found", reason),
        AskError::Refused { reason, .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "agent_error",
            format!("node {}'s agent: {reason}", alloc.node),
        ),
        e @ AskError::TimedOut { .. } => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "agent_timeout", e.to_string())
        }
        e @ AskError::Unreachable { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "agent_unreachable",
            e.to_string(),
        ),
    }
}

/// The 503 for an allocation whose agent no server asked holds a session with: the node,
/// whether it is down, the servers asked and those that could not be.
fn not_connected(
    state: &AppState,
    alloc: &Allocation,
    node: windflow_protocol::NodeId,
    asked: &[windflow_raft::ServerId],
    unreachable: &[(windflow_raft::ServerId, String)],
) -> ApiError {
    let name = |id: &windflow_raft::ServerId| {
        state
            .server_names
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("server {id}"))
    };
    let known = state.raft.reader().node(node).ok().flatten();
    let who = match &known {
        Some(n) => format!("node {node} ({})", n.name),
        None => format!("node {node}"),
    };
    let mut why = match known.map(|n| n.status) {
        Some(windflow_protocol::NodeStatus::Down) => {
            "its agent is down (not heard from within the grace period); ".to_owned()
        }
        _ => String::new(),
    };
    let asked: Vec<String> = asked.iter().map(name).collect();
    why.push_str(&format!(
        "its agent has no session with {}",
        if asked.len() == 1 {
            format!("this server ({})", asked[0])
        } else {
            format!("any server asked ({})", asked.join(", "))
        }
    ));
    for (id, e) in unreachable {
        why.push_str(&format!("; {} could not be asked: {e}", name(id)));
    }
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "agent_not_connected",
        format!("{who}, which holds {}, cannot be asked: {why}", alloc.id),
    )
}

/// `GET /v1/allocations/{id}/logs?task=&stream=stdout|stderr&follow=&since=&tail=`.
#[tracing::instrument(skip_all, fields(alloc = %id))]
pub async fn logs(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let query = LogsQuery::parse(&q, Timestamp::now())?;
    let alloc = super::allocations::find(&state, &scope, &id)?;
    let (task, driver) = match (known_tasks(&state, &alloc)?, query.task) {
        (Some(tasks), asked) => pick_task(&alloc, &tasks, asked.as_deref())?,
        // A deleted job's allocation: what an exec task left on its node is still there
        // (a container is removed with its allocation).
        (None, Some(asked)) => (asked, DriverKind::Exec),
        (None, None) => {
            return Err(invalid(
                "task",
                format!(
                    "the job of {} is gone, so its tasks are not known here; name one",
                    alloc.id
                ),
            ));
        }
    };
    let request = AgentRequest::Logs(LogsRequest {
        alloc: alloc.id,
        task,
        driver,
        stream: query.stream,
        follow: query.follow,
        since: query.since,
        tail: query.tail,
    });
    let answer = state
        .sessions
        .ask(alloc.node, &request)
        .await
        .map_err(|e| ask_error(&state, &alloc, e))?;
    let body = futures_util::stream::unfold(answer, |mut answer: AgentAnswer| async move {
        loop {
            match answer.next().await {
                Ok(Some(AgentReply::Chunk(bytes))) => {
                    return Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), answer));
                }
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(e) => {
                    // Ends the body: the client sees the answer stop where the agent did.
                    tracing::info!(error = %e, "the agent's log stream ended early");
                    return None;
                }
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// What `GET /v1/allocations/{id}/stats` answers.
#[derive(Debug, Serialize)]
pub struct AllocStats {
    pub alloc: AllocId,
    pub node: windflow_protocol::NodeId,
    pub at: Timestamp,
    pub tasks: Vec<TaskStats>,
}

/// `GET /v1/allocations/{id}/stats`: one sample of each task's resource use.
#[tracing::instrument(skip_all, fields(alloc = %id))]
pub async fn stats(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<AllocStats>, ApiError> {
    if let Some(k) = q.keys().find(|k| k.as_str() != "namespace") {
        return Err(invalid(k, "unknown parameter; stats takes none"));
    }
    let alloc = super::allocations::find(&state, &scope, &id)?;
    let tasks = tasks_of(&state, &alloc)?;
    let request = AgentRequest::Stats(StatsRequest {
        alloc: alloc.id,
        tasks,
    });
    let mut answer = state
        .sessions
        .ask(alloc.node, &request)
        .await
        .map_err(|e| ask_error(&state, &alloc, e))?;
    let unanswered = || {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "agent_error",
            format!("node {}'s agent sent no stats", alloc.node),
        )
    };
    let tasks = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(30), answer.next()).await {
            Ok(Ok(Some(AgentReply::Stats(tasks)))) => break tasks,
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return Err(unanswered()),
        }
    };
    Ok(Json(AllocStats {
        alloc: alloc.id,
        node: alloc.node,
        at: Timestamp::now(),
        tasks,
    }))
}

#[cfg(test)]
#[path = "alloc_logs_tests.rs"]
mod tests;
