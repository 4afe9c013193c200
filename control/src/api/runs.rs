//! `/v1/runs`: a run's state (optionally waiting for it to end) and its live output.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use windflow_protocol::{HumanDuration, Run, RunId, RunStatus};

use super::namespaces::NsScope;
use super::page::{Paged, page_request, status_filter};
use super::{ApiError, AppState, read_barrier};

/// The longest `?wait=` a request may hold.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

fn parse_run_id(id: &str) -> Result<RunId, ApiError> {
    id.parse()
        .map_err(|e| ApiError::bad_request("invalid_id", format!("{e}")))
}

/// `GET /v1/runs/{id}[?wait=30s]`: with `wait`, holds the request until the run has ended
/// or the wait is over, then answers with the run as it is.
pub async fn show(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Run>, ApiError> {
    let id = parse_run_id(&id)?;
    read_barrier(&state, &q).await?;
    let wait = match q.get("wait") {
        None => Duration::ZERO,
        Some(w) => w
            .parse::<HumanDuration>()
            .map_err(|e| ApiError::bad_request("invalid_query", format!("`wait`: {e}")))?
            .0
            .min(MAX_WAIT),
    };
    let deadline = tokio::time::Instant::now() + wait;
    let reader = state.raft.reader();
    let mut applied = reader.subscribe();
    loop {
        let run = reader
            .run(id)?
            .filter(|r| scope.admits(&r.namespace))
            .ok_or_else(|| ApiError::not_found("run", &id.to_string()))?;
        if run.status.is_finished() {
            return Ok(Json(run));
        }
        match tokio::time::timeout_at(deadline, applied.changed()).await {
            Ok(Ok(())) => continue,
            // Deadline reached, or the store is shutting down: answer with what we have.
            _ => return Ok(Json(run)),
        }
    }
}

/// `GET /v1/jobs/{id}/runs`
pub async fn list_for_job(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Paged<Run, RunId>, ApiError> {
    read_barrier(&state, &q).await?;
    let req = page_request(&q)?;
    let status = status_filter::<RunStatus>(&q, super::jobs::RUN_STATUSES)?;
    let job = scope.job(state.raft.reader(), &id)?;
    let page = state
        .raft
        .reader()
        .runs_of_job_page(job.id, req, &mut |r| {
            Ok(status.is_none_or(|s| s == r.status))
        })?;
    Ok(Paged(page))
}

/// `GET /v1/runs/{id}/output`: what the run has printed so far, as this server received it
/// from the agent (kept in memory, bounded; the context keeps the final stdout).
pub async fn output(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
) -> Result<String, ApiError> {
    let id = parse_run_id(&id)?;
    let run = state.raft.reader().run(id)?;
    if !run.is_some_and(|r| scope.admits(&r.namespace)) {
        return Err(ApiError::not_found("run", &id.to_string()));
    }
    Ok(state.outputs.text(id))
}
