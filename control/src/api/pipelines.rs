//! `/v1/pipelines` and `/v1/pipeline-runs`: named DAGs of jobs and their runs.
//!
//! Bodies name jobs as the user does (name or ID); the DAG is checked here on those names
//! first, so a cycle or an unknown step is reported in the user's words, then again by
//! `apply` on IDs.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use windflow_protocol::export::{NamedPipeline, NamedStep};
use windflow_protocol::pipeline::{MAX_PIPELINE_STEPS, order};
use windflow_protocol::{
    FailurePolicy, Pipeline, PipelineId, PipelineRun, PipelineRunId, PipelineRunStatus,
    PipelineSpec, PipelineStep, Timestamp,
};
use windflow_raft::{Applied, Command, StateReader};

use super::body::Fields;
use super::jobs::{unexpected, validate_name};
use super::namespaces::{self, NsScope};
use super::page::{NameFilter, Paged, newest_run_status_filter, page_request, status_filter};
use super::{ApiError, AppState, read_barrier};

/// A pipeline by ID (`P3`) or by name in the scope's home namespace.
pub(crate) fn find(scope: &NsScope, reader: &StateReader, key: &str) -> Result<Pipeline, ApiError> {
    let found = match key.parse() {
        Ok(id) => reader.pipeline(id)?,
        Err(_) => reader.pipeline_by_name(&scope.home(), key)?,
    };
    found
        .filter(|p| scope.admits(&p.spec.namespace))
        .ok_or_else(|| ApiError::not_found("pipeline", key))
}

fn find_run(scope: &NsScope, reader: &StateReader, key: &str) -> Result<PipelineRun, ApiError> {
    let id: PipelineRunId = key
        .parse()
        .map_err(|e| ApiError::bad_request("invalid_id", format!("{e}")))?;
    reader
        .pipeline_run(id)?
        .filter(|r| scope.admits(&r.namespace))
        .ok_or_else(|| ApiError::not_found("pipeline run", key))
}

/// `{"name", "namespace"?, "on_failure"?: "stop"|"continue", "steps": [{"job",
/// "depends_on"?: [job, …]}]}`: jobs by name or ID, in the pipeline's namespace.
fn parse_spec(
    body: &Bytes,
    scope: &NsScope,
    reader: &StateReader,
) -> Result<PipelineSpec, ApiError> {
    let NamedPipeline {
        name,
        namespace,
        steps,
        on_failure,
    } = parse_body(body, scope)?;
    let named: Vec<(String, Vec<String>)> =
        steps.into_iter().map(|s| (s.job, s.depends_on)).collect();
    resolve(name, namespace, named, on_failure, reader)
}

/// The body's own rules, before any job is looked up: the steps name jobs as written
/// (names or IDs). Import checks its entries with this.
pub(crate) fn parse_body(body: &Bytes, scope: &NsScope) -> Result<NamedPipeline, ApiError> {
    let mut f = Fields::parse(body)?;
    let name = f.required_str("name")?;
    validate_name(&name)?;
    if name.parse::<windflow_protocol::PipelineId>().is_ok() {
        return Err(ApiError::invalid_field(
            "name",
            format!("`{name}` looks like a pipeline ID; pick another name"),
        ));
    }
    let namespace = scope.target(namespaces::optional_field(&mut f, "namespace")?)?;
    let on_failure = match f.optional_str("on_failure")? {
        None => FailurePolicy::default(),
        Some(s) => s
            .parse()
            .map_err(|e: String| ApiError::invalid_field("on_failure", e))?,
    };
    let raw = f.optional_object_list("steps")?;
    if raw.is_empty() {
        return Err(ApiError::invalid_field("steps", "needs at least one step"));
    }
    if raw.len() > MAX_PIPELINE_STEPS {
        return Err(ApiError::invalid_field(
            "steps",
            format!("has {} steps; at most {MAX_PIPELINE_STEPS}", raw.len()),
        ));
    }
    let mut named = Vec::with_capacity(raw.len());
    for (i, mut step) in raw.into_iter().enumerate() {
        let job = step.required_str("job")?;
        let deps = step.optional_string_list("depends_on")?;
        step.finish()?;
        if job.trim().is_empty() {
            return Err(ApiError::invalid_field(
                &format!("steps[{i}].job"),
                "must not be empty",
            ));
        }
        named.push(NamedStep {
            job,
            depends_on: deps,
        });
    }
    f.finish()?;
    Ok(NamedPipeline {
        name,
        namespace,
        steps: named,
        on_failure,
    })
}

/// The steps' jobs, looked up in the pipeline's namespace, and the DAG checked on the
/// user's names.
fn resolve(
    name: String,
    namespace: windflow_protocol::Namespace,
    named: Vec<(String, Vec<String>)>,
    on_failure: FailurePolicy,
    reader: &StateReader,
) -> Result<PipelineSpec, ApiError> {
    // The jobs, looked up in the pipeline's namespace; names and IDs of one job are the
    // same step.
    let scope_of_ns = NsScope::One(namespace.clone());
    let mut ids = HashMap::new();
    for (i, (job, _)) in named.iter().enumerate() {
        let found = scope_of_ns.job(reader, job).map_err(|_| {
            ApiError::invalid_field(
                &format!("steps[{i}].job"),
                format!("no job `{job}` in namespace `{namespace}`"),
            )
        })?;
        if found.spec.job_type != windflow_protocol::JobType::Batch {
            return Err(ApiError::invalid_field(
                &format!("steps[{i}].job"),
                format!("`{job}` is a service job; pipeline steps are batch jobs"),
            ));
        }
        ids.insert(job.clone(), found);
    }
    // Dependencies are named like steps; each must be one.
    let canonical = |s: &str| -> String {
        match scope_of_ns.job(reader, s) {
            Ok(j) => j.spec.name,
            Err(_) => s.to_owned(),
        }
    };
    let dag: Vec<(String, Vec<String>)> = named
        .iter()
        .map(|(job, deps)| {
            (
                ids[job].spec.name.clone(),
                deps.iter().map(|d| canonical(d)).collect(),
            )
        })
        .collect();
    order(&dag).map_err(|e| ApiError::invalid_field("steps", e))?;
    let by_name: HashMap<&str, windflow_protocol::JobId> =
        ids.values().map(|j| (j.spec.name.as_str(), j.id)).collect();
    let steps = dag
        .iter()
        .map(|(job, deps)| PipelineStep {
            job: by_name[job.as_str()],
            depends_on: deps.iter().map(|d| by_name[d.as_str()]).collect(),
        })
        .collect();
    Ok(PipelineSpec {
        name,
        namespace,
        steps,
        on_failure,
    })
}

/// `POST /v1/pipelines`
pub async fn create(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    body: Bytes,
) -> Result<(StatusCode, Json<Pipeline>), ApiError> {
    let spec = parse_spec(&body, &scope, state.raft.reader())?;
    match state
        .raft
        .write(Command::CreatePipeline {
            spec,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::Pipeline(p) => Ok((StatusCode::CREATED, Json(p))),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/pipelines`
/// `GET /v1/pipelines[?limit=&cursor=&name=&status=]`: by ascending ID; `status` is the
/// status of each pipeline's newest run (`never` for one that has not run).
pub async fn list(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Paged<Pipeline, PipelineId>, ApiError> {
    read_barrier(&state, &q).await?;
    let req = page_request(&q)?;
    let name = NameFilter::of(&q)?;
    let status = newest_run_status_filter::<PipelineRunStatus>(&q, PIPELINE_STATUSES)?;
    let reader = state.raft.reader();
    let page = reader.pipelines_page(req, &mut |p| {
        if !(scope.admits(&p.spec.namespace) && name.admits(&p.spec.name)) {
            return Ok(false);
        }
        match status {
            None => Ok(true),
            Some(wanted) => Ok(reader.last_pipeline_run_status(p.id)? == wanted),
        }
    })?;
    Ok(Paged(page))
}

/// The `?status=` of pipeline runs.
const PIPELINE_RUN_STATUSES: &[&str] = &["scheduled", "running", "succeeded", "failed"];

/// The `?status=` of pipelines: their newest run's, or `never`.
const PIPELINE_STATUSES: &[&str] = &["never", "scheduled", "running", "succeeded", "failed"];

/// `GET /v1/pipelines/{id}` (ID or name)
pub async fn show(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Pipeline>, ApiError> {
    read_barrier(&state, &q).await?;
    Ok(Json(find(&scope, state.raft.reader(), &id)?))
}

/// `DELETE /v1/pipelines/{id}` answers with the pipeline as it was.
pub async fn delete(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
) -> Result<Json<Pipeline>, ApiError> {
    let p = find(&scope, state.raft.reader(), &id)?;
    match state
        .raft
        .write(Command::DeletePipeline {
            pipeline: p.id,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::Pipeline(p) => Ok(Json(p)),
        other => Err(unexpected(other)),
    }
}

/// `POST /v1/pipelines/{id}/run` with an optional `{"at": "2026-12-01T02:00:00+01:00"}`:
/// now, or at that time (fired by the leader).
pub async fn run(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<PipelineRun>), ApiError> {
    let p = find(&scope, state.raft.reader(), &id)?;
    let mut f = Fields::parse_or_empty(&body)?;
    let start_at = f
        .optional_str("at")?
        .map(|s| Timestamp::parse_rfc3339(&s).map_err(|e| ApiError::invalid_field("at", e)))
        .transpose()?;
    f.finish()?;
    match state
        .raft
        .write(Command::CreatePipelineRun {
            pipeline: p.id,
            start_at,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::PipelineRun(r) => Ok((StatusCode::ACCEPTED, Json(r))),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/pipelines/{id}/runs`, oldest first.
pub async fn runs(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Paged<PipelineRun, PipelineRunId>, ApiError> {
    read_barrier(&state, &q).await?;
    let req = page_request(&q)?;
    let status = status_filter::<PipelineRunStatus>(&q, PIPELINE_RUN_STATUSES)?;
    let reader = state.raft.reader();
    let p = find(&scope, reader, &id)?;
    let page = reader
        .runs_of_pipeline_page(p.id, req, &mut |r| Ok(status.is_none_or(|s| s == r.status)))?;
    Ok(Paged(page))
}

/// `GET /v1/pipeline-runs/{id}[?wait=30s]`: with `wait`, holds the request until the run
/// has ended or the wait is over.
pub async fn show_run(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<PipelineRun>, ApiError> {
    read_barrier(&state, &q).await?;
    let wait = match q.get("wait") {
        None => std::time::Duration::ZERO,
        Some(w) => w
            .parse::<windflow_protocol::HumanDuration>()
            .map_err(|e| ApiError::bad_request("invalid_query", format!("`wait`: {e}")))?
            .0
            .min(super::runs::MAX_WAIT),
    };
    let deadline = tokio::time::Instant::now() + wait;
    let reader = state.raft.reader();
    let mut applied = reader.subscribe();
    loop {
        let run = find_run(&scope, reader, &id)?;
        if run.status.is_finished() {
            return Ok(Json(run));
        }
        match tokio::time::timeout_at(deadline, applied.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Ok(Json(run)),
        }
    }
}

/// `POST /v1/pipeline-runs/{id}/retry`: the failed and skipped steps run again.
pub async fn retry(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<PipelineRun>), ApiError> {
    let run = find_run(&scope, state.raft.reader(), &id)?;
    match state
        .raft
        .write(Command::RetryPipelineRun {
            run: run.id,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::PipelineRun(r) => Ok((StatusCode::ACCEPTED, Json(r))),
        other => Err(unexpected(other)),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::{Value, json};

    use super::super::tests::Harness;

    async fn with_jobs(names: &[&str]) -> Harness {
        let h = Harness::start().await;
        for n in names {
            let (status, body) = h
                .call(
                    "POST",
                    "/v1/jobs",
                    Some(json!({"name": n, "command": "true"})),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        h
    }

    #[tokio::test]
    async fn steps_are_named_jobs_kept_in_dependency_order() {
        let h = with_jobs(&["a", "b", "c"]).await;
        let (status, p) = h
            .call(
                "POST",
                "/v1/pipelines",
                Some(json!({"name": "p", "on_failure": "continue", "steps": [
                    {"job": "c", "depends_on": ["b", "J1"]},
                    {"job": "a"},
                    {"job": "J2", "depends_on": ["a"]},
                ]})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{p}");
        let order: Vec<&str> = p["spec"]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["job"].as_str().unwrap())
            .collect();
        assert_eq!(order, ["J1", "J2", "J3"]);
        assert_eq!(p["spec"]["on_failure"], "continue");
        let (status, shown) = h.call("GET", "/v1/pipelines/p", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(shown["id"], p["id"]);
        // A job that is a step cannot go while the pipeline exists.
        let (status, e) = h.call("DELETE", "/v1/jobs/a", None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("`p`"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn bad_pipelines_name_the_problem() {
        let h = with_jobs(&["a", "b"]).await;
        let refused = |body: Value| {
            let h = &h;
            async move {
                let (status, e) = h.call("POST", "/v1/pipelines", Some(body)).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
                e["error"]["message"].as_str().unwrap().to_owned()
            }
        };
        let m = refused(json!({"name": "p", "steps": [{"job": "zz"}]})).await;
        assert!(
            m.contains("`steps[0].job`") && m.contains("no job `zz`"),
            "{m}"
        );
        let m = refused(json!({"name": "p", "steps": [
            {"job": "a", "depends_on": ["b"]}, {"job": "b", "depends_on": ["a"]}]}))
        .await;
        assert!(
            m.contains("cycle") && m.contains("`a`") && m.contains("`b`"),
            "{m}"
        );
        let m = refused(json!({"name": "p", "steps": [{"job": "a", "depends_on": ["x"]}]})).await;
        assert!(m.contains("`x`"), "{m}");
        let m = refused(json!({"name": "p", "steps": [{"job": "a"}, {"job": "J1"}]})).await;
        assert!(m.contains("twice"), "{m}");
        let m = refused(json!({"name": "p", "steps": []})).await;
        assert!(m.contains("`steps`"), "{m}");
        let m = refused(json!({"name": "p", "steps": [{"job": "a"}], "on_failure": "maybe"})).await;
        assert!(m.contains("`on_failure`"), "{m}");
        let m = refused(json!({"name": "P4", "steps": [{"job": "a"}]})).await;
        assert!(m.contains("pipeline ID"), "{m}");
        let m = refused(json!({"name": "p", "steps": [{"job": "a", "after": ["b"]}]})).await;
        assert!(m.contains("after"), "{m}");
        let (status, p) = h
            .call(
                "POST",
                "/v1/pipelines",
                Some(json!({"name": "ok", "steps": [{"job": "a"}]})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{p}");
        let (status, e) = h
            .call(
                "POST",
                "/v1/pipelines/ok/run",
                Some(json!({"at": "tomorrow"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("`at`"),
            "{e}"
        );
    }
}
