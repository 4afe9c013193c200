//! `/v1/stacks`: a compose file deployed as one service job named after the stack
//! (see [`crate::stacks`]); list, show and remove. A redeploy with a changed file is the
//! job's next version, rolled out by the deployment machinery.
//!
//! A stack's groups are pinned to one node (its containers share a network there and
//! find each other by service name): the node the request names, else the one the stack
//! already runs on, else the ready docker node with the most free memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use windflow_protocol::{
    AllocPort, ClientStatus, Deployment, DesiredStatus, DriverConfig, DriverKind, HealthStatus,
    Job, JobId, Namespace, Sealed, Timestamp,
};
use windflow_raft::{Applied, Command, StateReader};

use super::body::Fields;
use super::jobs::{unexpected, validate_name_of};
use super::namespaces::{self, NsScope};
use super::{ApiError, AppState, read_barrier};
use crate::stacks::{self, Input, StackError};

/// The most `env_files` or `variables` a request carries.
const MAX_ENTRIES: usize = 256;

/// A stack as listed: its job and each service's state.
#[derive(Debug, Serialize)]
pub struct StackView {
    pub name: String,
    pub namespace: Namespace,
    pub job: JobId,
    pub version: u64,
    /// The node its services are pinned to.
    pub node: Option<String>,
    pub services: Vec<ServiceView>,
}

/// One service of a stack.
#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub name: String,
    pub image: String,
    pub replicas: u32,
    /// Allocations wanted and running.
    pub running: u32,
    pub healthy: u32,
    /// The host ports its containers got.
    pub ports: Vec<AllocPort>,
}

/// What a deploy did.
#[derive(Debug, Serialize)]
pub struct Deployed {
    pub stack: StackView,
    /// A new job (else a new version of the stack's job, or nothing when unchanged).
    pub created: bool,
    pub changed: bool,
    pub deployment: Option<Deployment>,
    /// Passwords generated for this deploy, shown this once (a template's).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
}

/// What to deploy, from `POST /v1/stacks` or a template.
pub(super) struct Request {
    pub name: String,
    pub namespace: Namespace,
    pub compose: String,
    pub variables: BTreeMap<String, String>,
    pub secret_variables: BTreeSet<String>,
    pub env_files: BTreeMap<String, String>,
    pub base_dir: Option<String>,
    pub node: Option<String>,
    /// Refuse when the stack exists (a template's deploy).
    pub only_new: bool,
}

/// `POST /v1/stacks` with `{"name", "compose": TEXT, "variables"?: {K: V}, "env_files"?:
/// {PATH: TEXT}, "base_dir"?: DIR, "node"?: NAME, "namespace"?}`: creates the stack's job,
/// or makes its next version.
pub async fn deploy(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    body: Bytes,
) -> Result<(StatusCode, Json<Deployed>), ApiError> {
    let mut f = Fields::parse(&body)?;
    let name = f.required_str("name")?;
    let namespace = scope.target(namespaces::optional_field(&mut f, "namespace")?)?;
    let compose = f.required_str("compose")?;
    let variables = f.optional_string_map("variables")?;
    let env_files = f.optional_string_map("env_files")?;
    let base_dir = f.optional_str("base_dir")?;
    let node = f.optional_str("node")?;
    f.finish()?;
    for (field, n) in [
        ("variables", variables.len()),
        ("env_files", env_files.len()),
    ] {
        if n > MAX_ENTRIES {
            return Err(ApiError::invalid_field(
                field,
                format!("at most {MAX_ENTRIES}"),
            ));
        }
    }
    if let Some(dir) = &base_dir
        && !dir.starts_with('/')
    {
        return Err(ApiError::invalid_field(
            "base_dir",
            "must be an absolute path",
        ));
    }
    let request = Request {
        name,
        namespace,
        compose,
        variables,
        secret_variables: BTreeSet::new(),
        env_files,
        base_dir,
        node,
        only_new: false,
    };
    deploy_request(&state, request, BTreeMap::new()).await
}

/// The compose error as the API says it.
fn compose_error(e: StackError) -> ApiError {
    match e {
        StackError::Unsupported(_) => {
            ApiError::bad_request("unsupported_compose_keys", e.to_string())
        }
        other => ApiError::bad_request("invalid_compose", other.to_string()),
    }
}

/// Deploys `r`; `shown` (generated passwords) goes into the answer once.
#[tracing::instrument(skip_all, fields(stack = %r.name, namespace = %r.namespace))]
pub(super) async fn deploy_request(
    state: &AppState,
    r: Request,
    shown: BTreeMap<String, String>,
) -> Result<(StatusCode, Json<Deployed>), ApiError> {
    validate_name_of::<JobId>(&r.name, "job")?;
    let compose = stacks::parse(&Input {
        text: &r.compose,
        variables: &r.variables,
        secret_variables: &r.secret_variables,
        env_files: &r.env_files,
        base_dir: r.base_dir.as_deref(),
    })
    .map_err(compose_error)?;
    let reader = state.raft.reader();
    let existing = reader.job_by_name(&r.namespace, &r.name)?;
    if let Some(job) = &existing {
        if !stacks::is_stack(&job.spec) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_a_stack",
                format!(
                    "job {} ({}) exists and is not a stack; pick another name",
                    r.name, job.id
                ),
            ));
        }
        if r.only_new {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "stack_exists",
                format!(
                    "stack {} exists; change it with `windflow stack deploy`, or remove it first",
                    r.name
                ),
            ));
        }
    }
    let node = match (
        &r.node,
        existing.as_ref().and_then(|j| stacks::pinned_node(&j.spec)),
    ) {
        (Some(asked), _) => {
            let known = reader.nodes()?.into_iter().any(|n| n.name == *asked);
            if !known {
                return Err(ApiError::invalid_field(
                    "node",
                    format!("no node is named `{asked}`"),
                ));
            }
            asked.clone()
        }
        (None, Some(pinned)) => pinned.to_owned(),
        (None, None) => pick_node(reader)?,
    };
    let stacks::StackJob {
        mut spec,
        mut secret_env,
    } = stacks::to_job(&r.name, &r.namespace, &compose, Some(&node)).map_err(compose_error)?;
    for group in &mut spec.groups {
        for task in &mut group.tasks {
            let old = existing
                .as_ref()
                .and_then(|j| j.spec.tasks().find(|t| t.name == task.name))
                .map(|t| &t.secret_env);
            // A variable stored sealed stays sealed, whatever the new file says of it.
            if let Some(old) = old {
                for name in old.keys() {
                    if let Some(value) = task.env.remove(name) {
                        secret_env
                            .entry(task.name.clone())
                            .or_default()
                            .insert(name.clone(), value);
                    }
                }
            }
            if let Some(env) = secret_env.get(&task.name) {
                task.secret_env = seal_reusing(state, env, old).await?;
            }
        }
    }
    let at = Timestamp::now();
    let (job, created, changed, deployment) = match existing {
        None => match state.raft.write(Command::CreateJob { spec, at }).await? {
            Applied::Job(job) => (job, true, true, None),
            other => return Err(unexpected(other)),
        },
        Some(old) => {
            let before = old.version;
            match state
                .raft
                .write(Command::UpdateJob {
                    job: old.id,
                    spec,
                    at,
                })
                .await?
            {
                Applied::JobUpdated { job, deployment } => {
                    let changed = job.version != before;
                    (job, false, changed, deployment)
                }
                other => return Err(unexpected(other)),
            }
        }
    };
    tracing::info!(job = %job.id, version = job.version, created, changed, "stack deployed");
    let stack = view(reader, &job)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Deployed {
            stack,
            created,
            changed,
            deployment,
            secrets: shown,
        }),
    ))
}

/// Seals a task's secret values; one equal to the value already stored under that name
/// keeps its sealed form (a new seal differs, and would make a version of nothing).
async fn seal_reusing(
    state: &AppState,
    env: &BTreeMap<String, String>,
    stored: Option<&BTreeMap<String, Sealed>>,
) -> Result<BTreeMap<String, Sealed>, ApiError> {
    let mut out = BTreeMap::new();
    for (name, value) in env {
        if let Some(old) = stored.and_then(|s| s.get(name))
            && let Ok(opened) = state.secrets.open_env(name, old).await
            && opened == *value
        {
            out.insert(name.clone(), old.clone());
            continue;
        }
        let sealed = state
            .secrets
            .seal_env(name, value)
            .map_err(super::secrets::seal_error)?;
        out.insert(name.clone(), sealed);
    }
    Ok(out)
}

/// The ready, eligible node offering docker with the most free memory.
fn pick_node(reader: &StateReader) -> Result<String, ApiError> {
    let mut best: Option<(u64, String)> = None;
    for node in reader.nodes()? {
        if crate::scheduler::feasible::unschedulable(&node).is_some()
            || !node.drivers.contains(&DriverKind::Docker)
        {
            continue;
        }
        let free = node
            .resources
            .saturating_sub(reader.node_used(node.id)?)
            .memory_mb;
        if best.as_ref().is_none_or(|(b, _)| free > *b) {
            best = Some((free, node.name));
        }
    }
    best.map(|(_, name)| name).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_docker_node",
            "no ready node offers the docker driver to run the stack on",
        )
    })
}

/// A stack's job with its services' allocations.
fn view(reader: &StateReader, job: &Job) -> Result<StackView, ApiError> {
    let allocs = reader.allocations_of_job(job.id)?;
    let services = job
        .spec
        .groups
        .iter()
        .map(|g| {
            let live: Vec<_> = allocs
                .iter()
                .filter(|a| {
                    a.group == g.name
                        && a.desired == DesiredStatus::Run
                        && a.client == ClientStatus::Running
                })
                .collect();
            ServiceView {
                name: g.name.clone(),
                image: g
                    .tasks
                    .iter()
                    .find_map(|t| match &t.driver {
                        DriverConfig::Docker(d) => Some(d.image.clone()),
                        DriverConfig::Exec(_) => None,
                    })
                    .unwrap_or_default(),
                replicas: g.count,
                running: live.len() as u32,
                healthy: live
                    .iter()
                    .filter(|a| a.health.status == HealthStatus::Healthy)
                    .count() as u32,
                ports: live.iter().flat_map(|a| a.ports.iter().cloned()).collect(),
            }
        })
        .collect();
    Ok(StackView {
        name: job.spec.name.clone(),
        namespace: job.spec.namespace.clone(),
        job: job.id,
        version: job.version,
        node: stacks::pinned_node(&job.spec).map(str::to_owned),
        services,
    })
}

/// A stack by name (in the scope's home namespace) or by its job's ID.
fn find(reader: &StateReader, scope: &NsScope, key: &str) -> Result<Job, ApiError> {
    scope
        .job(reader, key)
        .ok()
        .filter(|j| stacks::is_stack(&j.spec))
        .ok_or_else(|| ApiError::not_found("stack", key))
}

/// `GET /v1/stacks`
pub async fn list(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<StackView>>, ApiError> {
    read_barrier(&state, &q).await?;
    let reader = state.raft.reader();
    reader
        .jobs()?
        .iter()
        .filter(|j| scope.admits(&j.spec.namespace) && stacks::is_stack(&j.spec))
        .map(|j| view(reader, j))
        .collect::<Result<_, _>>()
        .map(Json)
}

/// A stack with its job.
#[derive(Debug, Serialize)]
pub struct StackDetail {
    #[serde(flatten)]
    pub stack: StackView,
    /// The job as `job show` has it (secret values only as redacted markers).
    pub spec: Job,
}

/// `GET /v1/stacks/{name}`
pub async fn show(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<StackDetail>, ApiError> {
    read_barrier(&state, &q).await?;
    let reader = state.raft.reader();
    let job = find(reader, &scope, &name)?;
    Ok(Json(StackDetail {
        stack: view(reader, &job)?,
        spec: job,
    }))
}

/// `DELETE /v1/stacks/{name}`: deletes the stack's job, which stops its containers.
pub async fn remove(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(name): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let job = find(state.raft.reader(), &scope, &name)?;
    super::jobs::delete_job(&state, job.id).await.map(Json)
}
