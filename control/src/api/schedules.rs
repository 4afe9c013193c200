//! `/v1/schedules`: cron schedules that launch jobs (pipelines once they can be started):
//! create, list, show (with the recent fires), enable, disable, delete, and the next due
//! times. The expression and zone are checked here; the leader's cron loop fires them.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use windflow_protocol::{
    CatchUp, JobId, JobType, Namespace, OverlapPolicy, PipelineId, Schedule, ScheduleFire,
    ScheduleId, ScheduleSpec, ScheduleTarget, Timestamp,
};
use windflow_raft::{Applied, Command, StateReader};

use super::body::Fields;
use super::jobs::unexpected;
use super::namespaces::{self, NsScope};
use super::page::{NameFilter, Paged, page_request};
use super::{ApiError, AppState, read_barrier};
use crate::cron::CronExpr;
use windflow_protocol::export::{NamedSchedule, NamedTarget};

/// The most targets one schedule launches.
pub const MAX_TARGETS: usize = 100;
/// The most due times `next` previews.
const MAX_PREVIEW: usize = 100;

/// A schedule as the API shows it: the stored one and its next due time.
#[derive(Debug, Serialize)]
pub struct ScheduleView {
    #[serde(flatten)]
    pub schedule: Schedule,
    /// `None` when disabled, or when the expression has no future occurrence.
    pub next_due: Option<Timestamp>,
}

/// `show` adds the most recent fires, newest first.
#[derive(Debug, Serialize)]
pub struct ScheduleDetail {
    #[serde(flatten)]
    pub view: ScheduleView,
    pub recent_fires: Vec<ScheduleFire>,
}

fn view(schedule: Schedule) -> ScheduleView {
    let next_due = schedule
        .enabled
        .then(|| CronExpr::parse(&schedule.spec.cron, &schedule.spec.timezone).ok())
        .flatten()
        .and_then(|e| e.next_after(schedule.next_after().max(Timestamp::now())));
    ScheduleView { schedule, next_due }
}

/// `POST /v1/schedules`: `{"name", "cron", "timezone"?: "UTC", "targets": [{"job": ID or
/// name} | {"pipeline": ID}], "overlap"?: "allow"|"forbid"|"replace", "catch_up"?:
/// "skip"|"run_once"|"run_all", "namespace"?}`.
pub async fn create(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    body: Bytes,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    let spec = parse_spec(&body, &scope, state.raft.reader())?;
    match state
        .raft
        .write(Command::CreateSchedule {
            spec,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::Schedule(s) => Ok((StatusCode::CREATED, Json(view(s)))),
        other => Err(unexpected(other)),
    }
}

pub(crate) fn parse_spec(
    body: &Bytes,
    scope: &NsScope,
    reader: &StateReader,
) -> Result<ScheduleSpec, ApiError> {
    let named = parse_body(body, scope)?;
    let mut targets = Vec::with_capacity(named.targets.len());
    for (i, target) in named.targets.iter().enumerate() {
        let field = format!("targets[{i}]");
        let target = match target {
            NamedTarget::Job(job) => {
                ScheduleTarget::Job(target_job(reader, &named.namespace, job, &field)?)
            }
            NamedTarget::Pipeline(pipeline) => ScheduleTarget::Pipeline(target_pipeline(
                reader,
                &named.namespace,
                pipeline,
                &field,
            )?),
        };
        if targets.contains(&target) {
            return Err(ApiError::invalid_field(
                &field,
                format!("{target} is already a target"),
            ));
        }
        targets.push(target);
    }
    Ok(ScheduleSpec {
        name: named.name,
        namespace: named.namespace,
        cron: named.cron,
        timezone: named.timezone,
        targets,
        overlap: named.overlap,
        catch_up: named.catch_up,
    })
}

/// The body's own rules (name, cron and zone, policies, the targets' shape), before any
/// target is looked up: targets as written (names or IDs). Import checks its entries
/// with this.
pub(crate) fn parse_body(body: &Bytes, scope: &NsScope) -> Result<NamedSchedule, ApiError> {
    let mut f = Fields::parse(body)?;
    let name = f.required_str("name")?;
    validate_name(&name)?;
    let namespace = scope.target(namespaces::optional_field(&mut f, "namespace")?)?;
    let cron = f.required_str("cron")?;
    let timezone = f.optional_str("timezone")?.unwrap_or_else(|| "UTC".into());
    if let Err(e) = CronExpr::parse(&cron, &timezone) {
        let field = match e {
            crate::cron::ExprError::Cron { .. } => "cron",
            crate::cron::ExprError::Zone(_) => "timezone",
        };
        return Err(ApiError::invalid_field(field, e));
    }
    let overlap = match f.optional_str("overlap")?.as_deref() {
        None | Some("allow") => OverlapPolicy::Allow,
        Some("forbid") => OverlapPolicy::Forbid,
        Some("replace") => OverlapPolicy::Replace,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "overlap",
                format!("must be allow, forbid or replace, not `{other}`"),
            ));
        }
    };
    let catch_up = match f.optional_str("catch_up")?.as_deref() {
        None | Some("skip") => CatchUp::Skip,
        Some("run_once") => CatchUp::RunOnce,
        Some("run_all") => CatchUp::RunAll,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "catch_up",
                format!("must be skip, run_once or run_all, not `{other}`"),
            ));
        }
    };
    let items = f.optional_object_list("targets")?;
    if items.is_empty() {
        return Err(ApiError::invalid_field(
            "targets",
            "is required: at least one {\"job\": …} or {\"pipeline\": …}",
        ));
    }
    if items.len() > MAX_TARGETS {
        return Err(ApiError::invalid_field(
            "targets",
            format!("holds at most {MAX_TARGETS} targets"),
        ));
    }
    let mut targets = Vec::with_capacity(items.len());
    for (i, mut item) in items.into_iter().enumerate() {
        let job = item.optional_str("job")?;
        let pipeline = item.optional_str("pipeline")?;
        item.finish()?;
        let field = format!("targets[{i}]");
        let target = match (job, pipeline) {
            (Some(job), None) => NamedTarget::Job(job),
            (None, Some(pipeline)) => NamedTarget::Pipeline(pipeline),
            _ => {
                return Err(ApiError::invalid_field(
                    &field,
                    "must hold exactly one of `job` or `pipeline`",
                ));
            }
        };
        if targets.contains(&target) {
            return Err(ApiError::invalid_field(
                &field,
                format!("{target} is already a target"),
            ));
        }
        targets.push(target);
    }
    f.finish()?;
    Ok(NamedSchedule {
        name,
        namespace,
        cron,
        timezone,
        targets,
        overlap,
        catch_up,
    })
}

/// A batch job of the schedule's namespace, by ID or name.
/// A pipeline of the namespace, by ID or name.
fn target_pipeline(
    reader: &StateReader,
    ns: &Namespace,
    key: &str,
    field: &str,
) -> Result<PipelineId, ApiError> {
    let found = match key.parse::<PipelineId>() {
        Ok(id) => reader.pipeline(id)?,
        Err(_) => reader.pipeline_by_name(ns, key)?,
    }
    .filter(|p| p.spec.namespace == *ns)
    .ok_or_else(|| {
        ApiError::invalid_field(
            &format!("{field}.pipeline"),
            format!("no pipeline `{key}` in namespace {ns}"),
        )
    })?;
    Ok(found.id)
}

fn target_job(
    reader: &StateReader,
    ns: &Namespace,
    key: &str,
    field: &str,
) -> Result<JobId, ApiError> {
    let found = match key.parse::<JobId>() {
        Ok(id) => reader.job(id)?,
        Err(_) => reader.job_by_name(ns, key)?,
    }
    .filter(|j| j.spec.namespace == *ns)
    .ok_or_else(|| {
        ApiError::invalid_field(
            &format!("{field}.job"),
            format!("no job `{key}` in namespace {ns}"),
        )
    })?;
    if found.spec.job_type == JobType::Service {
        return Err(ApiError::invalid_field(
            &format!("{field}.job"),
            format!(
                "{} is a service job (kept running by the scheduler); only batch jobs are scheduled",
                found.spec.name
            ),
        ));
    }
    Ok(found.id)
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    super::jobs::validate_name_of::<ScheduleId>(name, "schedule")
}

/// A schedule by ID (`S3`) or by name in the scope's home namespace; one the scope does
/// not admit is not found.
fn find(reader: &StateReader, scope: &NsScope, key: &str) -> Result<Schedule, ApiError> {
    match key.parse::<ScheduleId>() {
        Ok(id) => reader.schedule(id)?,
        Err(_) => reader.schedule_by_name(&scope.home(), key)?,
    }
    .filter(|s| scope.admits(&s.spec.namespace))
    .ok_or_else(|| ApiError::not_found("schedule", key))
}

/// `GET /v1/schedules`
pub async fn list(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Paged<ScheduleView, ScheduleId>, ApiError> {
    read_barrier(&state, &q).await?;
    let req = page_request(&q)?;
    let name = NameFilter::of(&q)?;
    let enabled = match q.get("status").map(String::as_str) {
        None => None,
        Some("enabled") => Some(true),
        Some("disabled") => Some(false),
        Some(other) => {
            return Err(ApiError::invalid_field(
                "status",
                format_args!("`{other}` is not one of enabled, disabled"),
            ));
        }
    };
    let page = state.raft.reader().schedules_page(req, &mut |s| {
        Ok(scope.admits(&s.spec.namespace)
            && name.admits(&s.spec.name)
            && enabled.is_none_or(|e| e == s.enabled))
    })?;
    Ok(Paged(page).map(view))
}

/// `GET /v1/schedules/{id}` (ID or name), with the last `?fires=` (20) fires.
pub async fn show(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ScheduleDetail>, ApiError> {
    read_barrier(&state, &q).await?;
    let limit = count_query(
        &q,
        "fires",
        20,
        windflow_protocol::schedule::FIRE_LOG_MAX as usize,
    )?;
    let reader = state.raft.reader();
    let s = find(reader, &scope, &id)?;
    let recent_fires = reader.schedule_fires(s.id, limit)?;
    Ok(Json(ScheduleDetail {
        view: view(s),
        recent_fires,
    }))
}

/// `GET /v1/schedules/{id}/fires?limit=` (100): the fire log, newest first.
pub async fn fires(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<ScheduleFire>>, ApiError> {
    read_barrier(&state, &q).await?;
    let limit = count_query(
        &q,
        "limit",
        100,
        windflow_protocol::schedule::FIRE_LOG_MAX as usize,
    )?;
    let reader = state.raft.reader();
    let s = find(reader, &scope, &id)?;
    Ok(Json(reader.schedule_fires(s.id, limit)?))
}

/// One previewed due time.
#[derive(Debug, Serialize)]
pub struct DueTime {
    pub at: Timestamp,
    /// The wall time in the schedule's zone.
    pub local: String,
}

/// `GET /v1/schedules/{id}/next?count=5`: the next due times from now (or from after
/// the last fire, if that is later).
pub async fn next(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<DueTime>>, ApiError> {
    let count = count_query(&q, "count", 5, MAX_PREVIEW)?;
    let s = find(state.raft.reader(), &scope, &id)?;
    let expr = CronExpr::parse(&s.spec.cron, &s.spec.timezone)
        .map_err(|e| ApiError::internal(format!("stored schedule {}: {e}", s.id)))?;
    let from = s.next_after().max(Timestamp::now());
    Ok(Json(
        expr.upcoming(from, count)
            .into_iter()
            .map(|at| DueTime {
                at,
                local: expr.local(at),
            })
            .collect(),
    ))
}

fn count_query(
    q: &HashMap<String, String>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("`{name}` must be a whole number from 1 to {max}, not `{v}`"),
                )
            }),
    }
}

async fn set_enabled(
    state: &AppState,
    scope: &NsScope,
    id: &str,
    enabled: bool,
) -> Result<Json<ScheduleView>, ApiError> {
    let s = find(state.raft.reader(), scope, id)?;
    match state
        .raft
        .write(Command::SetScheduleEnabled {
            schedule: s.id,
            enabled,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::Schedule(s) => Ok(Json(view(s))),
        other => Err(unexpected(other)),
    }
}

/// `POST /v1/schedules/{id}/enable`: due times count from now on.
pub async fn enable(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    set_enabled(&state, &scope, &id, true).await
}

/// `POST /v1/schedules/{id}/disable`
pub async fn disable(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    set_enabled(&state, &scope, &id, false).await
}

/// `DELETE /v1/schedules/{id}` answers with the schedule as it was.
pub async fn delete(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    let s = find(state.raft.reader(), &scope, &id)?;
    match state
        .raft
        .write(Command::DeleteSchedule {
            schedule: s.id,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::Schedule(s) => Ok(Json(s)),
        other => Err(unexpected(other)),
    }
}
