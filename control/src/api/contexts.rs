//! `/v1/contexts/{id}`: a job's captured output, by context ID (`CJ12`), job ID or job name.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use windflow_protocol::{Context, ContextId};

use super::namespaces::NsScope;
use super::{ApiError, AppState, read_barrier};

pub async fn show(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Context>, ApiError> {
    read_barrier(&state, &q).await?;
    let reader = state.raft.reader();
    let not_found = || ApiError::not_found("context", &id);
    let context_id = match id.parse::<ContextId>() {
        // A job's context is behind its job's wall.
        Ok(cid @ ContextId::Job(job)) => match reader.job(job)? {
            Some(j) if scope.admits(&j.spec.namespace) => cid,
            _ => return Err(not_found()),
        },
        // Pipelines do not exist yet; until they carry a namespace, only a cluster-wide
        // caller may read their contexts.
        Ok(cid @ ContextId::Pipeline(_)) if scope == NsScope::All => cid,
        Ok(ContextId::Pipeline(_)) => return Err(not_found()),
        Err(_) => ContextId::of_job(scope.job(reader, &id)?.id),
    };
    reader.context(context_id)?.map(Json).ok_or_else(not_found)
}
