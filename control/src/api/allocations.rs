//! `/v1/allocations` and `/v1/jobs/{id}/evaluations`: where the scheduler put a service
//! job's instances, and why it could not put the rest.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use windflow_protocol::{AllocId, Allocation, Evaluation, JobId, NodeId};

use super::namespaces::NsScope;
use super::{ApiError, AppState, read_barrier};

/// `GET /v1/allocations[?job=J1|name][&node=N2]`, oldest first.
pub async fn list(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Allocation>>, ApiError> {
    read_barrier(&state, &q).await?;
    let reader = state.raft.reader();
    let node = q
        .get("node")
        .map(|n| {
            n.parse::<NodeId>()
                .map_err(|e| ApiError::bad_request("invalid_query", format!("`node`: {e}")))
        })
        .transpose()?;
    let mut allocs = match (q.get("job"), node) {
        // By ID even once the job is deleted: its allocations stay as history.
        (Some(job), _) => match job.parse::<JobId>() {
            Ok(id) => reader.allocations_of_job(id)?,
            Err(_) => reader.allocations_of_job(scope.job(reader, job)?.id)?,
        },
        (None, Some(node)) => reader.allocations_of_node(node)?,
        (None, None) => reader.allocations()?,
    };
    allocs.retain(|a| scope.admits(&a.namespace) && node.is_none_or(|n| a.node == n));
    Ok(Json(allocs))
}

/// `GET /v1/allocations/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Allocation>, ApiError> {
    read_barrier(&state, &q).await?;
    find(&state, &scope, &id).map(Json)
}

/// The allocation `id`, as the request's namespaces admit it.
pub(crate) fn find(state: &AppState, scope: &NsScope, id: &str) -> Result<Allocation, ApiError> {
    let alloc_id: AllocId = id
        .parse()
        .map_err(|e| ApiError::bad_request("invalid_id", format!("{e}")))?;
    state
        .raft
        .reader()
        .allocation(alloc_id)?
        .filter(|a| scope.admits(&a.namespace))
        .ok_or_else(|| ApiError::not_found("allocation", id))
}

/// `GET /v1/jobs/{id}/evaluations`, newest first.
pub async fn evaluations(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Evaluation>>, ApiError> {
    read_barrier(&state, &q).await?;
    let reader = state.raft.reader();
    let job = scope.job(reader, &id)?;
    let mut evals: Vec<Evaluation> = reader
        .evaluations()?
        .into_iter()
        .filter(|e| e.job == job.id)
        .collect();
    evals.reverse();
    Ok(Json(evals))
}
