//! Job versions, scaling and deployments: `PUT /v1/jobs/{id}` (a new version),
//! `POST /v1/jobs/{id}/scale`, `GET /v1/jobs/{id}/versions`, and `/v1/deployments`
//! (list, show with its allocations, fail, promote).

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use serde::Serialize;
use windflow_protocol::{
    Allocation, Deployment, DeploymentId, HealthStatus, Job, JobId, JobSpec, Sealed, Timestamp,
};
use windflow_raft::{Applied, Command, DeploymentEnd};

use super::body::Fields;
use super::jobs::{parse_job_spec, unexpected};
use super::namespaces::NsScope;
use super::{ApiError, AppState, read_barrier};

/// The largest count a group may be scaled to.
pub const MAX_COUNT: u32 = 10_000;

/// What an update did.
#[derive(Debug, Serialize)]
pub struct Updated {
    pub job: Job,
    /// Whether the spec changed (a new version was made).
    pub changed: bool,
    /// The deployment that rolls the new version out, if one started.
    pub deployment: Option<Deployment>,
}

/// `PUT /v1/jobs/{id}` with the same body as `POST /v1/jobs` (every field checked the same
/// way; the name and namespace must stay). A secret value equal to the one stored keeps
/// its sealed form, so an update that changes nothing makes no version.
pub async fn update(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Updated>, ApiError> {
    let job = scope.job(state.raft.reader(), &id)?;
    let (mut spec, secrets) = parse_job_spec(&body, &scope)?;
    if spec.name != job.spec.name {
        return Err(ApiError::invalid_field(
            "name",
            format!(
                "must stay `{}`: an update keeps the job's name",
                job.spec.name
            ),
        ));
    }
    if spec.namespace != job.spec.namespace {
        return Err(ApiError::invalid_field(
            "namespace",
            format!(
                "must stay `{}`: an update keeps the job's namespace",
                job.spec.namespace
            ),
        ));
    }
    let sealed = seal_reusing(&state, &secrets, &job.spec).await?;
    for task in spec.groups.iter_mut().flat_map(|g| g.tasks.iter_mut()) {
        task.secret_env.clone_from(&sealed);
    }
    let before = job.version;
    match state
        .raft
        .write(Command::UpdateJob {
            job: job.id,
            spec,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::JobUpdated { job, deployment } => Ok(Json(Updated {
            changed: job.version != before,
            job,
            deployment,
        })),
        other => Err(unexpected(other)),
    }
}

/// Seals the request's secret values; one equal to the job's stored value of that name
/// keeps the stored sealed form (a new seal would differ, and make a version of nothing).
pub(crate) async fn seal_reusing(
    state: &AppState,
    secrets: &BTreeMap<String, String>,
    current: &JobSpec,
) -> Result<BTreeMap<String, Sealed>, ApiError> {
    let stored = current.tasks().next().map(|t| &t.secret_env);
    let mut sealed = BTreeMap::new();
    for (name, value) in secrets {
        if let Some(old) = stored.and_then(|s| s.get(name))
            && let Ok(opened) = state.secrets.open_env(name, old).await
            && opened == *value
        {
            sealed.insert(name.clone(), old.clone());
            continue;
        }
        let s = state
            .secrets
            .seal_env(name, value)
            .map_err(super::secrets::seal_error)?;
        sealed.insert(name.clone(), s);
    }
    Ok(sealed)
}

/// `POST /v1/jobs/{id}/scale` with `{"count": N, "group"?: NAME}` (the group may be left
/// out when the job has one).
pub async fn scale(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Job>, ApiError> {
    let job = scope.job(state.raft.reader(), &id)?;
    let mut f = Fields::parse(&body)?;
    let count = f
        .optional_u32("count")?
        .ok_or_else(|| ApiError::invalid_field("count", "is required"))?;
    if count > MAX_COUNT {
        return Err(ApiError::invalid_field(
            "count",
            format!("must be at most {MAX_COUNT}"),
        ));
    }
    let group = f.optional_str("group")?;
    f.finish()?;
    let group = match group {
        Some(g) => {
            if !job.spec.groups.iter().any(|x| x.name == g) {
                return Err(ApiError::invalid_field(
                    "group",
                    format!("job {} has no group `{g}`", job.spec.name),
                ));
            }
            g
        }
        None => match job.spec.groups.as_slice() {
            [only] => only.name.clone(),
            _ => {
                return Err(ApiError::invalid_field(
                    "group",
                    "is required: the job has several groups",
                ));
            }
        },
    };
    match state
        .raft
        .write(Command::ScaleJob {
            job: job.id,
            group,
            count,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::Job(job) => Ok(Json(job)),
        other => Err(unexpected(other)),
    }
}

/// One kept version of a job.
#[derive(Debug, Serialize)]
pub struct Version {
    pub version: u64,
    pub stable: bool,
    pub spec: JobSpec,
}

/// `GET /v1/jobs/{id}/versions`, newest first.
pub async fn versions(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Version>>, ApiError> {
    read_barrier(&state, &q).await?;
    let reader = state.raft.reader();
    let job = scope.job(reader, &id)?;
    let mut all: Vec<Version> = reader
        .job_versions(job.id)?
        .into_iter()
        .map(|(version, spec)| Version {
            version,
            stable: job.stable_version == Some(version),
            spec,
        })
        .collect();
    all.reverse();
    Ok(Json(all))
}

/// `GET /v1/deployments[?job=J1|name]`, newest first.
pub async fn list(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Deployment>>, ApiError> {
    read_barrier(&state, &q).await?;
    let reader = state.raft.reader();
    let job = match q.get("job") {
        // By ID even once the job is deleted: its deployments stay as history.
        Some(j) => Some(match j.parse::<JobId>() {
            Ok(id) => id,
            Err(_) => scope.job(reader, j)?.id,
        }),
        None => None,
    };
    let mut all = reader.deployments()?;
    all.retain(|d| scope.admits(&d.namespace) && job.is_none_or(|j| d.job == j));
    all.reverse();
    Ok(Json(all))
}

/// A deployment and where its version stands, per group.
#[derive(Debug, Serialize)]
pub struct DeploymentView {
    #[serde(flatten)]
    pub deployment: Deployment,
    pub groups: Vec<GroupProgress>,
    /// The allocations it placed.
    pub allocations: Vec<Allocation>,
}

/// How far a group is.
#[derive(Debug, Serialize)]
pub struct GroupProgress {
    pub group: String,
    pub desired: u32,
    pub canaries: u32,
    /// Live allocations of its version, those healthy, and those unhealthy.
    pub placed: u32,
    pub healthy: u32,
    pub unhealthy: u32,
    /// Live allocations of older versions.
    pub old: u32,
}

fn deployment_id(id: &str) -> Result<DeploymentId, ApiError> {
    id.parse()
        .map_err(|e| ApiError::bad_request("invalid_id", format!("{e}")))
}

fn find(state: &AppState, scope: &NsScope, id: &str) -> Result<Deployment, ApiError> {
    state
        .raft
        .reader()
        .deployment(deployment_id(id)?)?
        .filter(|d| scope.admits(&d.namespace))
        .ok_or_else(|| ApiError::not_found("deployment", id))
}

/// `GET /v1/deployments/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<DeploymentView>, ApiError> {
    read_barrier(&state, &q).await?;
    let d = find(&state, &scope, &id)?;
    let reader = state.raft.reader();
    let allocs = reader.allocations_of_job(d.job)?;
    let spec = reader.job_version(d.job, d.version)?;
    let current = reader.job(d.job)?;
    let groups = spec
        .iter()
        .flat_map(|s| s.groups.iter())
        .map(|g| {
            let desired = current
                .as_ref()
                .and_then(|j| j.spec.groups.iter().find(|x| x.name == g.name))
                .map_or(g.count, |x| x.count);
            let live = || allocs.iter().filter(|a| a.group == g.name && a.is_live());
            let new = || live().filter(|a| a.job_version >= d.version);
            let count = |it: &mut dyn Iterator<Item = &Allocation>| it.count() as u32;
            GroupProgress {
                group: g.name.clone(),
                desired,
                canaries: g.update.canary,
                placed: count(&mut new()),
                healthy: count(&mut new().filter(|a| a.health.status == HealthStatus::Healthy)),
                unhealthy: count(&mut new().filter(|a| a.health.status == HealthStatus::Unhealthy)),
                old: count(&mut live().filter(|a| a.job_version < d.version)),
            }
        })
        .collect();
    let placed = allocs
        .into_iter()
        .filter(|a| a.deployment == Some(d.id))
        .collect();
    Ok(Json(DeploymentView {
        deployment: d,
        groups,
        allocations: placed,
    }))
}

/// `POST /v1/deployments/{id}/fail`: ends a running deployment as failed (its job is
/// reverted when its update policy says `auto_revert`).
pub async fn fail(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
) -> Result<Json<Deployment>, ApiError> {
    let d = find(&state, &scope, &id)?;
    match state
        .raft
        .write(Command::EndDeployment {
            deployment: d.id,
            outcome: DeploymentEnd::Failed,
            reason: "failed by hand".into(),
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::Deployment(d) => Ok(Json(d)),
        other => Err(unexpected(other)),
    }
}

/// `POST /v1/deployments/{id}/promote`: its canaries' version goes to every instance.
pub async fn promote(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
) -> Result<Json<Deployment>, ApiError> {
    let d = find(&state, &scope, &id)?;
    match state
        .raft
        .write(Command::PromoteDeployment {
            deployment: d.id,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::Deployment(d) => Ok(Json(d)),
        other => Err(unexpected(other)),
    }
}
