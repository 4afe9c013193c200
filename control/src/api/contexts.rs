//! `/v1/contexts`: what runs captured, by context ID (`CJ12`, `CP3`), job ID or job name;
//! a context is behind the wall of its job's or pipeline's namespace.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use windflow_protocol::{Context, ContextId, Timestamp};
use windflow_raft::{Applied, Command, StateReader};

use super::namespaces::NsScope;
use super::page::{Paged, page_request};
use super::{ApiError, AppState, read_barrier};

/// The context a user names, if the scope may see it.
fn resolve(scope: &NsScope, reader: &StateReader, id: &str) -> Result<ContextId, ApiError> {
    let not_found = || ApiError::not_found("context", id);
    match id.parse::<ContextId>() {
        Ok(cid) if visible(scope, reader, cid)? => Ok(cid),
        Ok(_) => Err(not_found()),
        Err(_) => Ok(ContextId::of_job(scope.job(reader, id)?.id)),
    }
}

/// Whether the context's job or pipeline is in a namespace the scope admits.
fn visible(
    scope: &NsScope,
    reader: &StateReader,
    id: ContextId,
) -> Result<bool, windflow_raft::StoreError> {
    Ok(match id {
        ContextId::Job(job) => reader
            .job(job)?
            .is_some_and(|j| scope.admits(&j.spec.namespace)),
        ContextId::Pipeline(p) => reader
            .pipeline(p)?
            .is_some_and(|p| scope.admits(&p.spec.namespace)),
    })
}

/// `GET /v1/contexts/{id}`
pub async fn show(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Context>, ApiError> {
    read_barrier(&state, &q).await?;
    let reader = state.raft.reader();
    let cid = resolve(&scope, reader, &id)?;
    reader
        .context(cid)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("context", &id))
}

/// `GET /v1/contexts`: every context the caller may see, jobs' first.
pub async fn list(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Paged<Context, ContextId>, ApiError> {
    read_barrier(&state, &q).await?;
    let req = page_request(&q)?;
    let reader = state.raft.reader();
    let page = reader.contexts_page(req, &mut |ctx| {
        if scope == NsScope::All {
            return Ok(true);
        }
        visible(&scope, reader, ctx.id)
    })?;
    Ok(Paged(page))
}

/// `POST /v1/contexts/{id}/reset`: empties the context, as before its first run.
pub async fn reset(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
) -> Result<Json<Context>, ApiError> {
    let cid = resolve(&scope, state.raft.reader(), &id)?;
    match state
        .raft
        .write(Command::ResetContext {
            context: cid,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::Context(ctx) => Ok(Json(ctx)),
        other => Err(super::jobs::unexpected(other)),
    }
}
