//! `/v1/contexts/{id}`: a job's captured output, by context ID (`CJ12`), job ID or job name.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use windflow_protocol::{Context, ContextId};

use super::{ApiError, AppState, read_barrier, resolve_job};

pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Context>, ApiError> {
    read_barrier(&state, &q).await?;
    let reader = state.raft.reader();
    let context_id = match id.parse::<ContextId>() {
        Ok(cid) => cid,
        Err(_) => ContextId::of_job(resolve_job(reader, &id)?.id),
    };
    reader
        .context(context_id)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("context", &id))
}
