//! `GET /v1/export`: the jobs, pipelines, schedules and webhooks a caller may see, as one
//! YAML file (`?format=json` for JSON) that `POST /v1/import` reads back.
//!
//! Each entry is the body its create endpoint takes (`POST /v1/jobs`, …), with the fields
//! that hold their defaults left out, and names instead of IDs: a pipeline's steps and a
//! schedule's targets name jobs and pipelines of their namespace, so the file can go into
//! a fresh cluster. Secrets never leave: a webhook's HMAC secret is not written, and a
//! job's secret env vars are listed by name only, under `secret_env_omitted`. Every job
//! entry is read back with the create endpoint's own parser before it is written, so an
//! export is known to import to the same spec; what cannot be written is listed under
//! `left_out`, with why.

use std::collections::HashMap;

use axum::extract::{Extension, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;
use windflow_protocol::export::FORMAT_VERSION;
use windflow_protocol::{JobId, Pipeline, PipelineId, Schedule, ScheduleTarget, Webhook};

pub use super::job_body::SECRET_ENV_OMITTED;
use super::job_body::{Entry, job_entry};
use super::namespaces::NsScope;
use super::{ApiError, AppState, read_barrier};

/// The file: its format version, then one section per kind, each entry a create body.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportFile {
    #[serde(default = "format_version")]
    pub version: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipelines: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Value>,
    /// What the export could not write, and why (a schedule's deleted target, a job made
    /// another way than the API); import reads past it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
}

fn format_version() -> u32 {
    FORMAT_VERSION
}

const HEADER: &str = "# Windflow export: jobs, pipelines, schedules and webhooks.\n\
# Apply with `windflow import FILE` (creates or updates by name; deletes nothing).\n\
# Secrets are not included: webhooks get a new secret when created, and a job's\n\
# `secret_env_omitted` names secret env vars whose values stay in the cluster.\n";

/// `GET /v1/export?format=yaml|json`
pub async fn export(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let json = match q.get("format").map(String::as_str) {
        None | Some("yaml") => false,
        Some("json") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`format` must be yaml or json, not `{other}`"),
            ));
        }
    };
    read_barrier(&state, &q).await?;
    let file = build(&state, &scope)?;
    if json {
        return Ok(axum::Json(file).into_response());
    }
    let yaml = serde_yaml_ng::to_string(&file)
        .map_err(|e| ApiError::internal(format!("writing the export as YAML: {e}")))?;
    let mut res = format!("{HEADER}{yaml}").into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml; charset=utf-8"),
    );
    Ok(res)
}

fn build(state: &AppState, scope: &NsScope) -> Result<ExportFile, ApiError> {
    let reader = state.raft.reader();
    let mut jobs = reader.jobs()?;
    jobs.retain(|j| scope.admits(&j.spec.namespace));
    let mut pipelines = reader.pipelines()?;
    pipelines.retain(|p| scope.admits(&p.spec.namespace));
    let mut schedules = reader.schedules()?;
    schedules.retain(|s| scope.admits(&s.spec.namespace));
    let mut webhooks = reader.webhooks()?;
    webhooks.retain(|w| scope.admits(&w.spec.namespace));

    let job_names: HashMap<JobId, &str> =
        jobs.iter().map(|j| (j.id, j.spec.name.as_str())).collect();
    let pipeline_names: HashMap<PipelineId, &str> = pipelines
        .iter()
        .map(|p| (p.id, p.spec.name.as_str()))
        .collect();
    let mut file = ExportFile {
        version: FORMAT_VERSION,
        ..Default::default()
    };
    for job in &jobs {
        match job_entry(&job.spec) {
            Ok(entry) => file.jobs.push(entry),
            Err(why) => file
                .left_out
                .push(format!("job {} ({}): {why}", job.spec.name, job.id)),
        }
    }
    for p in &pipelines {
        match pipeline_entry(p, &job_names) {
            Ok(entry) => file.pipelines.push(entry),
            Err(why) => file
                .left_out
                .push(format!("pipeline {} ({}): {why}", p.spec.name, p.id)),
        }
    }
    for s in &schedules {
        match schedule_entry(s, &job_names, &pipeline_names, &mut file.left_out) {
            Ok(entry) => file.schedules.push(entry),
            Err(why) => file
                .left_out
                .push(format!("schedule {} ({}): {why}", s.spec.name, s.id)),
        }
    }
    file.webhooks = webhooks.iter().map(webhook_entry).collect();
    Ok(file)
}

fn pipeline_entry(p: &Pipeline, jobs: &HashMap<JobId, &str>) -> Result<Value, String> {
    let name = |id: &JobId| {
        jobs.get(id)
            .copied()
            .ok_or_else(|| format!("its step {id} is no job in sight"))
    };
    let mut e = Entry::named(&p.spec.name, &p.spec.namespace);
    if p.spec.on_failure != Default::default() {
        e.set("on_failure", p.spec.on_failure.as_str());
    }
    let mut steps = Vec::with_capacity(p.spec.steps.len());
    for s in &p.spec.steps {
        let mut se = Entry::default();
        se.set("job", name(&s.job)?);
        if !s.depends_on.is_empty() {
            let deps = s
                .depends_on
                .iter()
                .map(name)
                .collect::<Result<Vec<_>, _>>()?;
            se.list("depends_on", deps);
        }
        steps.push(se.done());
    }
    e.set("steps", Value::Sequence(steps));
    Ok(e.done())
}

/// A schedule by names; a target deleted since is left out (and said so in `notes`).
fn schedule_entry(
    s: &Schedule,
    jobs: &HashMap<JobId, &str>,
    pipelines: &HashMap<PipelineId, &str>,
    notes: &mut Vec<String>,
) -> Result<Value, String> {
    let mut e = Entry::named(&s.spec.name, &s.spec.namespace);
    e.set("cron", s.spec.cron.as_str());
    e.set("timezone", s.spec.timezone.as_str());
    let mut targets = Vec::with_capacity(s.spec.targets.len());
    for t in &s.spec.targets {
        let mut te = Entry::default();
        match t {
            ScheduleTarget::Job(j) => match jobs.get(j) {
                Some(name) => te.set("job", *name),
                // A deleted target has no name to write; its fires record it as gone.
                None => {
                    notes.push(format!(
                        "schedule {} ({}): target {j}, a deleted job",
                        s.spec.name, s.id
                    ));
                    continue;
                }
            },
            ScheduleTarget::Pipeline(p) => match pipelines.get(p) {
                Some(name) => te.set("pipeline", *name),
                None => {
                    notes.push(format!(
                        "schedule {} ({}): target {p}, a deleted pipeline",
                        s.spec.name, s.id
                    ));
                    continue;
                }
            },
        }
        targets.push(te.done());
    }
    if targets.is_empty() {
        return Err("none of its targets exists any more".into());
    }
    e.set("targets", Value::Sequence(targets));
    let overlap = serde_yaml_ng::to_value(s.spec.overlap).map_err(|e| e.to_string())?;
    let catch_up = serde_yaml_ng::to_value(s.spec.catch_up).map_err(|e| e.to_string())?;
    e.set("overlap", overlap);
    e.set("catch_up", catch_up);
    Ok(e.done())
}

fn webhook_entry(w: &Webhook) -> Value {
    let mut e = Entry::named(&w.spec.name, &w.spec.namespace);
    e.set("url", w.spec.url.as_str());
    e.list("events", w.spec.events.iter().map(|k| k.as_str()));
    e.done()
}
