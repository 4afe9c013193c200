//! `/v1/jobs`: create, list, show, delete and run jobs.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use windflow_protocol::{
    DriverConfig, ExecConfig, HumanDuration, Job, JobId, JobSpec, JobType, RetryPolicy, Run,
    RunStatus, TaskSpec, Timestamp,
};
use windflow_raft::{Applied, Command};

use super::body::Fields;
use super::namespaces::{self, NsScope};
use super::page::{NameFilter, Paged, newest_run_status_filter, page_request};
use super::placement;
use super::{ApiError, AppState, read_barrier};

/// The most retries a job may ask for.
pub const MAX_RETRIES: u32 = 100;
const MAX_NAME_LEN: usize = 128;

/// The longest secret value accepted, in bytes.
pub const MAX_SECRET_LEN: usize = 64 * 1024;

/// `POST /v1/jobs` with the shorthand form:
/// `{"name", "command", "workdir"?, "env"?, "secret_env"?, "timeout"?, "max_retries"?,
/// "retry_delay"?, "namespace"?, "type"?: "batch"|"service", "count"?, "resources"?:
/// {…}, "driver"?: "exec"|"docker", "docker"?: {"image", "command"?, "args"?, "entrypoint"?,
/// "workdir"?, "ports"?: [{"label"?, "container_port", "host_port"?, "protocol"?}],
/// "mounts"?: [{"type": "bind"|"volume", "source", "target", "read_only"?}], "labels"?}
/// (a docker task has no top-level `command`), "resources"?:
/// {"cpu_mhz", "memory_mb", "disk_mb"}, "constraints"?: [{"attribute", "operator",
/// "value"}], "placement"?: "binpack"|"spread", "restart"?: {…}, "reschedule"?: {…},
/// "target"?, "keep_runs"?, "keep_for"?, "update"?: {…}, "checks"?: […]}` (where runs go and
/// how many are kept, see [`super::batch`]; the policies of a service job, see
/// [`super::policies`]; its rollouts and health, see [`super::rollout_spec`]). A service job
/// is placed by the scheduler
/// and kept running at its count; a batch job runs when asked. Secret env values are sealed
/// here, before the job is proposed; the answer (like every job view) shows them only as
/// redacted markers.
pub async fn create(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    body: Bytes,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let (mut spec, secrets) = parse_job_spec(&body, &scope)?;
    super::batch::check_target(state.raft.reader(), &spec.target)?;
    if !secrets.is_empty() {
        let sealed = secrets
            .iter()
            .map(|(name, value)| {
                state
                    .secrets
                    .seal_env(name, value)
                    .map(|s| (name.clone(), s))
            })
            .collect::<Result<_, _>>()
            .map_err(super::secrets::seal_error)?;
        for task in spec.groups.iter_mut().flat_map(|g| g.tasks.iter_mut()) {
            task.secret_env.clone_from(&sealed);
        }
    }
    let applied = state
        .raft
        .write(Command::CreateJob {
            spec,
            at: Timestamp::now(),
        })
        .await?;
    match applied {
        Applied::Job(job) => Ok((StatusCode::CREATED, Json(job))),
        other => Err(unexpected(other)),
    }
}

/// Plaintext secret env values from a request, until they are sealed. Its `Debug` shows
/// the names only.
#[derive(Default)]
pub(crate) struct SecretEnv(BTreeMap<String, String>);

impl std::ops::Deref for SecretEnv {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The spec (secret env not sealed yet, so empty) and the secret env values to seal. The
/// job goes in the body's `namespace` (which `scope` must admit) or in the scope's home
/// namespace.
pub(crate) fn parse_job_spec(
    body: &Bytes,
    scope: &NsScope,
) -> Result<(JobSpec, SecretEnv), ApiError> {
    let mut f = Fields::parse(body)?;
    let name = f.required_str("name")?;
    validate_name(&name)?;
    let namespace = scope.target(namespaces::optional_field(&mut f, "namespace")?)?;
    let driver = match f.optional_str("driver")?.as_deref() {
        None | Some("exec") => DriverConfig::Exec(exec_config(&mut f)?),
        Some("docker") => {
            for exec_only in ["command", "workdir"] {
                if f.optional_str(exec_only)?.is_some() {
                    return Err(ApiError::invalid_field(
                        exec_only,
                        format!("is for exec tasks; a docker task's goes in `docker.{exec_only}`"),
                    ));
                }
            }
            DriverConfig::Docker(Box::new(super::docker::parse(&mut f)?))
        }
        Some(other) => {
            return Err(ApiError::invalid_field(
                "driver",
                format!("must be exec or docker, not `{other}`"),
            ));
        }
    };
    let env = f.optional_string_map("env")?;
    if let Some(key) = env.keys().find(|k| !valid_env_key(k)) {
        return Err(ApiError::invalid_field(
            &format!("env.{key}"),
            "is not a valid variable name (letters, digits and _, not starting with a digit)",
        ));
    }
    let secret_env = SecretEnv(f.optional_string_map("secret_env")?);
    for (key, value) in secret_env.iter() {
        let field = format!("secret_env.{key}");
        if !valid_env_key(key) {
            return Err(ApiError::invalid_field(
                &field,
                "is not a valid variable name (letters, digits and _, not starting with a digit)",
            ));
        }
        if env.contains_key(key) {
            return Err(ApiError::invalid_field(
                &field,
                format!("`{key}` is also in `env`; a variable is either plain or secret"),
            ));
        }
        // Errors name the field, never the value.
        if value.contains('\0') {
            return Err(ApiError::invalid_field(
                &field,
                "must not contain a NUL byte",
            ));
        }
        if value.len() > MAX_SECRET_LEN {
            return Err(ApiError::invalid_field(
                &field,
                format!("must be at most {MAX_SECRET_LEN} bytes"),
            ));
        }
    }
    let timeout = duration_field(&mut f, "timeout")?;
    if timeout.is_some_and(|t| t.0.is_zero()) {
        return Err(ApiError::invalid_field(
            "timeout",
            "must be longer than zero",
        ));
    }
    let max_retries = f.optional_u32("max_retries")?.unwrap_or(0);
    if max_retries > MAX_RETRIES {
        return Err(ApiError::invalid_field(
            "max_retries",
            format!("must be at most {MAX_RETRIES}"),
        ));
    }
    let delay = duration_field(&mut f, "retry_delay")?.unwrap_or(RetryPolicy::default().delay);
    let shape = placement::parse(&mut f)?;
    let policies = super::policies::parse(&mut f, shape.job_type)?;
    let target = super::batch::parse_target(&mut f)?;
    let retention = super::batch::parse_retention(&mut f)?;
    let rollout = super::rollout_spec::parse(&mut f, shape.job_type, shape.count)?;
    f.finish()?;
    let task = TaskSpec {
        name: name.clone(),
        driver,
        env,
        secret_env: BTreeMap::new(),
        timeout,
        retry: RetryPolicy { max_retries, delay },
        resources: shape.resources,
    };
    let mut spec = JobSpec::exec(name, task);
    spec.namespace = namespace;
    spec.job_type = shape.job_type;
    spec.target = target;
    spec.retention = retention;
    let group = &mut spec.groups[0];
    group.count = shape.count;
    group.constraints = shape.constraints;
    group.placement = shape.placement;
    if let Some(restart) = policies.restart {
        group.restart = restart;
    }
    if let Some(reschedule) = policies.reschedule {
        group.reschedule = reschedule;
    }
    if let Some(update) = rollout.update {
        group.update = update;
    }
    group.checks = rollout.checks;
    Ok((spec, secret_env))
}

/// An exec task's `command` and `workdir`.
fn exec_config(f: &mut Fields) -> Result<ExecConfig, ApiError> {
    if f.optional_object("docker")?.is_some() {
        return Err(ApiError::invalid_field(
            "docker",
            "is for docker tasks: add \"driver\": \"docker\"",
        ));
    }
    let command = f.required_str("command")?;
    if command.trim().is_empty() {
        return Err(ApiError::invalid_field("command", "must not be empty"));
    }
    let workdir = f.optional_str("workdir")?;
    if let Some(dir) = &workdir
        && !dir.starts_with('/')
    {
        return Err(ApiError::invalid_field(
            "workdir",
            format!("must be an absolute path, not `{dir}`"),
        ));
    }
    Ok(ExecConfig { command, workdir })
}

fn duration_field(f: &mut Fields, name: &str) -> Result<Option<HumanDuration>, ApiError> {
    f.optional_str(name)?
        .map(|s| {
            s.parse::<HumanDuration>()
                .map_err(|e| ApiError::invalid_field(name, e))
        })
        .transpose()
}

pub(crate) fn validate_name(name: &str) -> Result<(), ApiError> {
    validate_name_of::<JobId>(name, "job")
}

/// The rule for a named resource's `name` (jobs, schedules, webhooks): 1 to
/// [`MAX_NAME_LEN`] letters, digits, `-`, `_` and `.`, and not spelled like an `Id` of its
/// `kind`, since names are accepted wherever IDs are.
pub(crate) fn validate_name_of<Id: std::str::FromStr>(
    name: &str,
    kind: &str,
) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(ApiError::invalid_field(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} characters"),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(ApiError::invalid_field(
            "name",
            "may hold only letters, digits, `-`, `_` and `.`",
        ));
    }
    if name.parse::<Id>().is_ok() {
        return Err(ApiError::invalid_field(
            "name",
            format!("`{name}` looks like a {kind} ID; pick another name"),
        ));
    }
    Ok(())
}

fn valid_env_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub(super) fn unexpected(applied: Applied) -> ApiError {
    ApiError::internal(format!("the store answered with an unexpected {applied:?}"))
}

/// `GET /v1/jobs`
/// `GET /v1/jobs[?limit=&cursor=&name=&status=&type=]`: by ascending ID; `status` is the
/// status of each job's newest run (`never` for a job that has not run).
pub async fn list(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Paged<Job, JobId>, ApiError> {
    read_barrier(&state, &q).await?;
    let req = page_request(&q)?;
    let name = NameFilter::of(&q)?;
    let status = newest_run_status_filter::<RunStatus>(&q, JOB_STATUSES)?;
    let job_type = match q.get("type") {
        None => None,
        Some(t) => Some(
            serde_json::from_value::<JobType>(serde_json::Value::String(t.clone())).map_err(
                |_| ApiError::invalid_field("type", format_args!("`{t}` is not batch or service")),
            )?,
        ),
    };
    let reader = state.raft.reader();
    let page = reader.jobs_page(req, &mut |j| {
        if !(scope.admits(&j.spec.namespace)
            && name.admits(&j.spec.name)
            && job_type.is_none_or(|t| t == j.spec.job_type))
        {
            return Ok(false);
        }
        match status {
            None => Ok(true),
            Some(wanted) => Ok(reader.last_run_status(j.id)? == wanted),
        }
    })?;
    Ok(Paged(page))
}

/// The `?status=` of runs.
pub const RUN_STATUSES: &[&str] = &["pending", "running", "succeeded", "failed", "timed_out"];

/// The `?status=` of jobs: their newest run's, or `never`.
pub const JOB_STATUSES: &[&str] = &[
    "never",
    "pending",
    "running",
    "succeeded",
    "failed",
    "timed_out",
];

/// `GET /v1/jobs/{id}` (ID or name)
pub async fn show(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Job>, ApiError> {
    read_barrier(&state, &q).await?;
    Ok(Json(scope.job(state.raft.reader(), &id)?))
}

/// `DELETE /v1/jobs/{id}` answers with the job as it was.
pub async fn delete(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let job = scope.job(state.raft.reader(), &id)?;
    delete_job(&state, job.id).await.map(Json)
}

/// Deletes a job through raft and answers what was deleted (jobs and stacks share it).
pub(crate) async fn delete_job(state: &AppState, job: JobId) -> Result<Job, ApiError> {
    match state
        .raft
        .write(Command::DeleteJob {
            job,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::Job(job) => Ok(job),
        other => Err(unexpected(other)),
    }
}

/// `POST /v1/jobs/{id}/run` queues a run; the leader dispatches it to a node.
pub async fn run(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Run>), ApiError> {
    let job = scope.job(state.raft.reader(), &id)?;
    if job.spec.job_type == JobType::Service {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_runnable",
            format!(
                "{} is a service job: the scheduler keeps it running at its count; see `windflow alloc list --job {}`",
                job.spec.name, job.id
            ),
        ));
    }
    match state
        .raft
        .write(Command::CreateRun {
            job: job.id,
            at: Timestamp::now(),
        })
        .await?
    {
        Applied::Run(run) => Ok((StatusCode::ACCEPTED, Json(run))),
        other => Err(unexpected(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<JobSpec, ApiError> {
        parse_job_spec(&Bytes::from(json.to_owned()), &NsScope::All).map(|(spec, _)| spec)
    }

    fn message(json: &str) -> String {
        parse(json).unwrap_err().message
    }

    #[test]
    fn a_docker_task_is_read_field_by_field() {
        let spec = parse(
            r#"{"name":"web","driver":"docker","type":"service","count":3,
                "docker":{"image":"busybox:latest","command":"httpd","args":["-f","-p","8080"],
                "ports":[{"label":"http","container_port":8080},
                         {"container_port":53,"host_port":5353,"protocol":"udp"}],
                "mounts":[{"type":"volume","source":"data","target":"/data","read_only":true}],
                "labels":{"team":"web"}}}"#,
        )
        .unwrap();
        let task = spec.tasks().next().unwrap();
        let DriverConfig::Docker(d) = &task.driver else {
            panic!("not a docker task: {task:?}");
        };
        assert_eq!(d.image, "busybox:latest");
        assert_eq!(d.cmd().unwrap(), ["httpd", "-f", "-p", "8080"]);
        assert_eq!(d.ports[0].label, "http");
        assert_eq!(d.ports[0].host_port, None);
        assert_eq!(d.ports[1].label, "53");
        assert_eq!(d.ports[1].host_port, Some(5353));
        assert_eq!(d.mounts[0].target, "/data");
        assert_eq!(spec.groups[0].count, 3);
    }

    #[test]
    fn bad_docker_fields_are_named() {
        let cases = [
            (r#"{"name":"w","driver":"docker"}"#, "`docker`"),
            (
                r#"{"name":"w","driver":"podman","command":"x"}"#,
                "`driver`",
            ),
            (
                r#"{"name":"w","driver":"docker","docker":{}}"#,
                "`docker.image`",
            ),
            (
                r#"{"name":"w","driver":"docker","command":"ls","docker":{"image":"b"}}"#,
                "`command`",
            ),
            (
                r#"{"name":"w","command":"ls","docker":{"image":"b"}}"#,
                "`docker`",
            ),
            (
                r#"{"name":"w","driver":"docker","docker":{"image":"a b"}}"#,
                "`docker.image`",
            ),
            (
                r#"{"name":"w","driver":"docker","docker":{"image":"b","ports":[{"container_port":0}]}}"#,
                "`docker.ports[0].container_port`",
            ),
            (
                r#"{"name":"w","driver":"docker","docker":{"image":"b","ports":[{"container_port":80,"host_port":70000}]}}"#,
                "`docker.ports[0].host_port`",
            ),
            (
                r#"{"name":"w","driver":"docker","docker":{"image":"b","ports":[{"container_port":80,"protocol":"sctp"}]}}"#,
                "`docker.ports[0].protocol`",
            ),
            (
                r#"{"name":"w","driver":"docker","docker":{"image":"b","ports":[{"container_port":80},{"container_port":80}]}}"#,
                "`docker.ports[1].label`",
            ),
            (
                r#"{"name":"w","driver":"docker","docker":{"image":"b","mounts":[{"type":"tmpfs","source":"a","target":"/a"}]}}"#,
                "`docker.mounts[0].type`",
            ),
            (
                r#"{"name":"w","driver":"docker","docker":{"image":"b","mounts":[{"type":"bind","source":"rel","target":"/a"}]}}"#,
                "`docker.mounts[0].source`",
            ),
            (
                r#"{"name":"w","driver":"docker","docker":{"image":"b","mounts":[{"type":"volume","source":"v","target":"a"}]}}"#,
                "`docker.mounts[0].target`",
            ),
            (
                r#"{"name":"w","driver":"docker","docker":{"image":"b","labels":{"windflow.alloc":"x"}}}"#,
                "`docker.labels.windflow.alloc`",
            ),
            (
                r#"{"name":"w","driver":"docker","docker":{"image":"b","workdir":"srv"}}"#,
                "`docker.workdir`",
            ),
            (
                r#"{"name":"w","driver":"docker","docker":{"image":"b","args":[1]}}"#,
                "`docker.args[0]`",
            ),
            (
                r#"{"name":"w","driver":"docker","docker":{"image":"b","tty":true}}"#,
                "`docker.tty`",
            ),
        ];
        for (body, field) in cases {
            let m = message(body);
            assert!(m.contains(field), "{body}: {m}");
        }
    }

    #[test]
    fn shorthand_fills_an_exec_task() {
        let spec = parse(r#"{"name":"backup","command":"pg_dump","workdir":"/srv","env":{"K":"V"},"timeout":"30s","max_retries":2}"#).unwrap();
        let (task, exec) = spec.single_exec().unwrap();
        assert_eq!(exec.command, "pg_dump");
        assert_eq!(exec.workdir.as_deref(), Some("/srv"));
        assert_eq!(task.env["K"], "V");
        assert_eq!(task.timeout, Some(HumanDuration::from_secs(30)));
        assert_eq!(task.retry.max_retries, 2);
    }

    #[test]
    fn a_job_goes_where_its_scope_allows() {
        let team = |n: &str| windflow_protocol::Namespace::parse(n).unwrap();
        let body = |json: &str| Bytes::from(json.to_owned());
        let bound = NsScope::One(team("team-a"));
        let (spec, _) = parse_job_spec(&body(r#"{"name":"a","command":"x"}"#), &bound).unwrap();
        assert_eq!(spec.namespace, team("team-a"));
        let e = parse_job_spec(
            &body(r#"{"name":"a","command":"x","namespace":"team-b"}"#),
            &bound,
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND, "{}", e.message);
        let (spec, _) = parse_job_spec(
            &body(r#"{"name":"a","command":"x","namespace":"team-b"}"#),
            &NsScope::All,
        )
        .unwrap();
        assert_eq!(spec.namespace, team("team-b"));
    }

    #[test]
    fn errors_name_the_field() {
        assert!(message(r#"{"name":"a"}"#).contains("`command`: is required"));
        assert!(message(r#"{"command":"x"}"#).contains("`name`: is required"));
        assert!(
            message(r#"{"name":"a","command":"x","max_retries":"3"}"#)
                .contains("`max_retries`: must be a number")
        );
        assert!(message(r#"{"name":"a","command":"x","timeout":"soon"}"#).contains("`timeout`"));
        assert!(message(r#"{"name":"a","command":"x","env":{"K":1}}"#).contains("`env.K`"));
        assert!(message(r#"{"name":"a","command":"x","cmd":"y"}"#).contains("`cmd`"));
        assert!(message(r#"{"name":"J4","command":"x"}"#).contains("looks like a job ID"));
        assert!(message(r#"{"name":"a b","command":"x"}"#).contains("`name`"));
        assert!(message(r#"{"name":"a","command":"x","workdir":"rel"}"#).contains("`workdir`"));
        assert!(message("[1]").contains("JSON object"));
        assert!(message(r#"{"name":"a","command":"x","namespace":"A/B"}"#).contains("`namespace`"));
    }

    #[test]
    fn secret_env_is_kept_apart_from_env_and_checked() {
        let (spec, secrets) = parse_job_spec(
            &Bytes::from(
                r#"{"name":"a","command":"x","env":{"K":"V"},"secret_env":{"DB_PASS":"s3cret"}}"#,
            ),
            &NsScope::All,
        )
        .unwrap();
        assert_eq!(secrets["DB_PASS"], "s3cret");
        let (task, _) = spec.single_exec().unwrap();
        assert!(!task.env.contains_key("DB_PASS"));
        assert!(
            task.secret_env.is_empty(),
            "sealed by the handler, not the parser"
        );
        assert!(!format!("{secrets:?}").contains("s3cret"));

        let bad = |json: &str| {
            let m = message(json);
            assert!(!m.contains("s3cret"), "the error shows the value: {m}");
            m
        };
        assert!(
            bad(r#"{"name":"a","command":"x","secret_env":{"1X":"s3cret"}}"#)
                .contains("`secret_env.1X`")
        );
        assert!(
            bad(r#"{"name":"a","command":"x","secret_env":{"K":5}}"#).contains("`secret_env.K`")
        );
        assert!(
            bad(r#"{"name":"a","command":"x","secret_env":"s3cret"}"#).contains("`secret_env`")
        );
        assert!(
            bad(r#"{"name":"a","command":"x","env":{"K":"v"},"secret_env":{"K":"s3cret"}}"#)
                .contains("`secret_env.K`")
        );
        assert!(
            bad(r#"{"name":"a","command":"x","secret_env":{"K":"s3cret\u0000"}}"#).contains("NUL")
        );
    }
}
