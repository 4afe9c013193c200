//! What a batch job says about its runs (where they go, how many are kept), `job copy`,
//! and `/v1/run-retention`, the cluster's default retention.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use windflow_protocol::{Job, NodeId, RunRetention, RunTarget, Timestamp};
use windflow_raft::{Applied, Command, StateReader};

use super::body::Fields;
use super::jobs::{unexpected, validate_name};
use super::namespaces::NsScope;
use super::{ApiError, AppState, read_barrier};

/// The most runs a retention may keep (beyond that, say nothing: unlimited).
const MAX_KEEP_RUNS: u32 = 1_000_000;

/// `"target"?: "any" | "least_loaded" | "node:<node ID>" | "label:<key>=<value>"`.
pub(crate) fn parse_target(f: &mut Fields) -> Result<RunTarget, ApiError> {
    let Some(text) = f.optional_str("target")? else {
        return Ok(RunTarget::Any);
    };
    let bad = |why: String| ApiError::invalid_field("target", why);
    match text.split_once(':') {
        None if text == "any" => Ok(RunTarget::Any),
        None if text == "least_loaded" => Ok(RunTarget::LeastLoaded),
        Some(("node", node)) => node
            .parse::<NodeId>()
            .map(RunTarget::Node)
            .map_err(|e| bad(format!("`node:{node}`: {e}"))),
        Some(("label", pair)) => match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() && !value.is_empty() => Ok(RunTarget::Label {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(bad(format!("`label:{pair}` must be label:KEY=VALUE"))),
        },
        _ => Err(bad(format!(
            "`{text}` is none of any, least_loaded, node:<node ID>, label:<key>=<value>"
        ))),
    }
}

/// A job may name only a node that exists (a run for a node that never comes would wait
/// for ever).
pub(crate) fn check_target(reader: &StateReader, target: &RunTarget) -> Result<(), ApiError> {
    if let RunTarget::Node(id) = target
        && reader.node(*id)?.is_none()
    {
        return Err(ApiError::invalid_field("target", format!("no node {id}")));
    }
    Ok(())
}

/// `"keep_runs"?: N, "keep_for"?: "30d"`: `None` when neither is given.
pub(crate) fn parse_retention(f: &mut Fields) -> Result<Option<RunRetention>, ApiError> {
    let keep_last = f.optional_u32("keep_runs")?;
    if keep_last.is_some_and(|n| n == 0 || n > MAX_KEEP_RUNS) {
        return Err(ApiError::invalid_field(
            "keep_runs",
            format!("must be 1 to {MAX_KEEP_RUNS}"),
        ));
    }
    let max_age = f.optional_any_duration("keep_for")?;
    if max_age.is_some_and(|d| d.0.is_zero()) {
        return Err(ApiError::invalid_field(
            "keep_for",
            "must be longer than zero",
        ));
    }
    let r = RunRetention { keep_last, max_age };
    Ok((!r.is_unlimited()).then_some(r))
}

/// `POST /v1/jobs/{id}/copy` with `{"name"}`: the same job under a new name, in the
/// same namespace, with no runs and an empty context.
pub async fn copy(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let source = scope.job(state.raft.reader(), &id)?;
    let mut f = Fields::parse(&body)?;
    let name = f.required_str("name")?;
    f.finish()?;
    validate_name(&name)?;
    let mut spec = source.spec;
    // A shorthand job's group and task are named after the job.
    for group in &mut spec.groups {
        if group.name == spec.name {
            group.name.clone_from(&name);
        }
        for task in &mut group.tasks {
            if task.name == spec.name {
                task.name.clone_from(&name);
            }
        }
    }
    spec.name = name;
    match state
        .raft
        .write(Command::CreateJob {
            spec,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::Job(job) => Ok((StatusCode::CREATED, Json(job))),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/run-retention`
pub async fn show_retention(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<RunRetention>, ApiError> {
    read_barrier(&state, &q).await?;
    Ok(Json(state.raft.reader().run_retention()?))
}

/// `PUT /v1/run-retention` with `{"keep_runs"?, "keep_for"?}`; neither is unlimited.
pub async fn set_retention(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<RunRetention>, ApiError> {
    let mut f = Fields::parse_or_empty(&body)?;
    let retention = parse_retention(&mut f)?.unwrap_or_default();
    f.finish()?;
    match state
        .raft
        .write(Command::SetRunRetention {
            retention,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::RunRetention(r) => Ok(Json(r)),
        other => Err(unexpected(other)),
    }
}
