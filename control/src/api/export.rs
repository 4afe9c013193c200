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

use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};
use windflow_protocol::export::FORMAT_VERSION;
use windflow_protocol::{
    CheckKind, DriverConfig, HumanDuration, JobId, JobSpec, JobType, MountKind, Namespace,
    Operator, Pipeline, PipelineId, Placement, PortProtocol, RescheduleLimit, ReschedulePolicy,
    Resources, RestartMode, RestartPolicy, RetryPolicy, RunTarget, Schedule, ScheduleTarget,
    UpdatePolicy, Webhook,
};

use super::namespaces::NsScope;
use super::{ApiError, AppState, read_barrier};

/// The field of a job entry that lists its secret env vars, whose values stay behind.
pub const SECRET_ENV_OMITTED: &str = "secret_env_omitted";

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

/// A mapping built in the order fields are set (`name` first).
#[derive(Default)]
struct Entry(Mapping);

impl Entry {
    fn named(name: &str, namespace: &Namespace) -> Self {
        let mut e = Entry::default();
        e.set("name", name);
        if !namespace.is_default() {
            e.set("namespace", namespace.as_str());
        }
        e
    }

    fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.0.insert(Value::from(key), value.into());
    }

    fn duration(&mut self, key: &str, d: HumanDuration) {
        self.set(key, d.to_string());
    }

    fn list<T: Into<Value>>(&mut self, key: &str, items: impl IntoIterator<Item = T>) {
        self.set(
            key,
            Value::Sequence(items.into_iter().map(Into::into).collect()),
        );
    }

    fn map<'a>(&mut self, key: &str, items: impl IntoIterator<Item = (&'a String, &'a String)>) {
        let m: Mapping = items
            .into_iter()
            .map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str())))
            .collect();
        self.set(key, Value::Mapping(m));
    }

    fn done(self) -> Value {
        Value::Mapping(self.0)
    }
}

/// A job as the `POST /v1/jobs` body that makes it, checked by reading it back with that
/// endpoint's parser: a job the body cannot express is refused, never exported wrong.
pub(crate) fn job_entry(spec: &JobSpec) -> Result<Value, String> {
    let (task, group) = match spec.groups.as_slice() {
        [group] => match group.tasks.as_slice() {
            [task] => (task, group),
            _ => return Err("its group has more than one task".into()),
        },
        _ => return Err("it has more than one task group".into()),
    };
    let mut e = Entry::named(&spec.name, &spec.namespace);
    if spec.job_type == JobType::Service {
        e.set("type", "service");
        if group.count != 1 {
            e.set("count", group.count);
        }
    }
    match &task.driver {
        DriverConfig::Exec(exec) => {
            e.set("command", exec.command.as_str());
            if let Some(dir) = &exec.workdir {
                e.set("workdir", dir.as_str());
            }
        }
        DriverConfig::Docker(d) => {
            e.set("driver", "docker");
            let mut de = Entry::default();
            de.set("image", d.image.as_str());
            if let Some(c) = &d.command {
                de.set("command", c.as_str());
            }
            if !d.args.is_empty() {
                de.list("args", d.args.iter().map(String::as_str));
            }
            if let Some(ep) = &d.entrypoint {
                de.list("entrypoint", ep.iter().map(String::as_str));
            }
            if let Some(dir) = &d.workdir {
                de.set("workdir", dir.as_str());
            }
            if !d.ports.is_empty() {
                de.list(
                    "ports",
                    d.ports.iter().map(|p| {
                        let mut pe = Entry::default();
                        pe.set("label", p.label.as_str());
                        pe.set("container_port", p.container_port);
                        if let Some(h) = p.host_port {
                            pe.set("host_port", h);
                        }
                        if p.protocol != PortProtocol::Tcp {
                            pe.set("protocol", p.protocol.as_str());
                        }
                        pe.done()
                    }),
                );
            }
            if !d.mounts.is_empty() {
                de.list(
                    "mounts",
                    d.mounts.iter().map(|m| {
                        let mut me = Entry::default();
                        me.set(
                            "type",
                            match m.kind {
                                MountKind::Bind => "bind",
                                MountKind::Volume => "volume",
                            },
                        );
                        me.set("source", m.source.as_str());
                        me.set("target", m.target.as_str());
                        if m.read_only {
                            me.set("read_only", true);
                        }
                        me.done()
                    }),
                );
            }
            if !d.labels.is_empty() {
                de.map("labels", &d.labels);
            }
            e.set("docker", de.done());
        }
    }
    if !task.env.is_empty() {
        e.map("env", &task.env);
    }
    if !task.secret_env.is_empty() {
        e.list(
            SECRET_ENV_OMITTED,
            task.secret_env.keys().map(String::as_str),
        );
    }
    if let Some(t) = task.timeout {
        e.duration("timeout", t);
    }
    if task.retry.max_retries != 0 {
        e.set("max_retries", task.retry.max_retries);
    }
    if task.retry.delay != RetryPolicy::default().delay {
        e.duration("retry_delay", task.retry.delay);
    }
    if task.resources != Resources::TASK_DEFAULT {
        let mut r = Entry::default();
        r.set("cpu_mhz", task.resources.cpu_mhz);
        r.set("memory_mb", task.resources.memory_mb);
        r.set("disk_mb", task.resources.disk_mb);
        e.set("resources", r.done());
    }
    if !group.constraints.is_empty() {
        e.list(
            "constraints",
            group.constraints.iter().map(|c| {
                let mut ce = Entry::default();
                ce.set("attribute", c.attribute.as_str());
                ce.set("operator", operator_text(c.operator));
                ce.set("value", c.value.as_str());
                ce.done()
            }),
        );
    }
    if group.placement == Placement::Spread {
        e.set("placement", "spread");
    }
    if group.restart != RestartPolicy::default() {
        let r = group.restart;
        let mut re = Entry::default();
        re.set("attempts", r.attempts);
        re.duration("interval", r.interval);
        re.duration("delay", r.delay);
        re.set(
            "mode",
            match r.mode {
                RestartMode::Fail => "fail",
                RestartMode::Delay => "delay",
            },
        );
        e.set("restart", re.done());
    }
    if group.reschedule != ReschedulePolicy::default() {
        let r = group.reschedule;
        let mut re = Entry::default();
        match r.limit {
            RescheduleLimit::Unlimited => re.set("unlimited", true),
            RescheduleLimit::Attempts { attempts, interval } => {
                re.set("attempts", attempts);
                re.duration("interval", interval);
            }
        }
        re.duration("delay", r.delay);
        re.duration("max_delay", r.max_delay);
        e.set("reschedule", re.done());
    }
    match &spec.target {
        RunTarget::Any => {}
        RunTarget::LeastLoaded => e.set("target", "least_loaded"),
        RunTarget::Node(n) => e.set("target", format!("node:{n}")),
        RunTarget::Label { key, value } => e.set("target", format!("label:{key}={value}")),
    }
    if let Some(r) = spec.retention {
        if let Some(n) = r.keep_last {
            e.set("keep_runs", n);
        }
        if let Some(d) = r.max_age {
            e.duration("keep_for", d);
        }
    }
    if group.update != UpdatePolicy::default() {
        let u = group.update;
        let mut ue = Entry::default();
        ue.set("max_parallel", u.max_parallel);
        ue.duration("min_healthy_time", u.min_healthy_time);
        ue.duration("healthy_deadline", u.healthy_deadline);
        ue.duration("progress_deadline", u.progress_deadline);
        ue.set("auto_revert", u.auto_revert);
        ue.set("canary", u.canary);
        e.set("update", ue.done());
    }
    if !group.checks.is_empty() {
        e.list(
            "checks",
            group.checks.iter().map(|c| {
                let mut ce = Entry::default();
                ce.set("name", c.name.as_str());
                match &c.kind {
                    CheckKind::Http { path, port } => {
                        ce.set("type", "http");
                        ce.set("path", path.as_str());
                        if let Some(p) = port {
                            ce.set("port", *p);
                        }
                    }
                    CheckKind::Tcp { port } => {
                        ce.set("type", "tcp");
                        if let Some(p) = port {
                            ce.set("port", *p);
                        }
                    }
                    CheckKind::Command { command } => {
                        ce.set("type", "command");
                        ce.set("command", command.as_str());
                    }
                }
                ce.duration("interval", c.interval);
                ce.duration("timeout", c.timeout);
                ce.duration("grace", c.grace);
                ce.done()
            }),
        );
    }
    let entry = e.done();
    check_job_entry(&entry, spec)?;
    Ok(entry)
}

/// Reads the entry back as `POST /v1/jobs` would; it must give the spec (less its sealed
/// values, which the file does not carry).
fn check_job_entry(entry: &Value, spec: &JobSpec) -> Result<(), String> {
    let mut body = entry.clone();
    if let Value::Mapping(m) = &mut body {
        m.remove(SECRET_ENV_OMITTED);
    }
    let bytes = serde_json::to_vec(&body).map_err(|e| format!("writing its body: {e}"))?;
    let (back, _) = super::jobs::parse_job_spec(&Bytes::from(bytes), &NsScope::All)
        .map_err(|e| format!("its body does not read back: {}", e.message))?;
    let mut expected = spec.clone();
    for task in expected.groups.iter_mut().flat_map(|g| g.tasks.iter_mut()) {
        task.secret_env.clear();
    }
    if back != expected {
        return Err(
            "its body reads back as a different job (made another way than the API)".into(),
        );
    }
    Ok(())
}

fn operator_text(op: Operator) -> &'static str {
    match op {
        Operator::Equal => "=",
        Operator::NotEqual => "!=",
        Operator::Regex => "regex",
        Operator::Version => "version",
        Operator::SetContains => "set_contains",
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use windflow_protocol::{
        Constraint, DockerConfig, HealthCheck, Mount, PortMapping, RunRetention, TaskSpec,
    };

    fn exec_job() -> JobSpec {
        let mut task = TaskSpec::exec("backup", "pg_dump > /srv/db.sql");
        task.env.insert("PGHOST".into(), "db".into());
        task.timeout = Some(HumanDuration::from_secs(600));
        task.retry = RetryPolicy {
            max_retries: 3,
            delay: HumanDuration::from_secs(5),
        };
        if let DriverConfig::Exec(e) = &mut task.driver {
            e.workdir = Some("/srv".into());
        }
        let mut spec = JobSpec::exec("backup", task);
        spec.target = RunTarget::Label {
            key: "zone".into(),
            value: "eu".into(),
        };
        spec.retention = Some(RunRetention {
            keep_last: Some(20),
            max_age: None,
        });
        spec
    }

    fn service_job() -> JobSpec {
        let task = TaskSpec {
            driver: DriverConfig::Docker(Box::new(DockerConfig {
                image: "busybox:latest".into(),
                command: Some("httpd".into()),
                args: vec!["-f".into()],
                entrypoint: None,
                workdir: None,
                ports: vec![PortMapping {
                    label: "http".into(),
                    container_port: 8080,
                    host_port: None,
                    protocol: PortProtocol::Tcp,
                }],
                mounts: vec![Mount {
                    kind: MountKind::Volume,
                    source: "data".into(),
                    target: "/data".into(),
                    read_only: true,
                }],
                labels: [("team".to_owned(), "web".to_owned())].into(),
            })),
            ..TaskSpec::exec("web", "unused")
        };
        let mut spec = JobSpec::exec("web", task);
        spec.job_type = JobType::Service;
        let g = &mut spec.groups[0];
        g.count = 3;
        g.placement = Placement::Spread;
        g.constraints = vec![Constraint {
            attribute: "os".into(),
            operator: Operator::Equal,
            value: "linux".into(),
        }];
        g.restart.attempts = 5;
        g.reschedule.limit = RescheduleLimit::Attempts {
            attempts: 3,
            interval: HumanDuration::from_secs(3600),
        };
        g.update.max_parallel = 2;
        g.update.canary = 1;
        g.checks = vec![HealthCheck {
            name: "up".into(),
            kind: CheckKind::Http {
                path: "/health".into(),
                port: None,
            },
            interval: HumanDuration::from_secs(10),
            timeout: HumanDuration::from_secs(2),
            grace: HumanDuration::from_secs(0),
        }];
        spec
    }

    #[test]
    fn a_job_entry_reads_back_as_the_same_spec() {
        for spec in [
            exec_job(),
            service_job(),
            JobSpec::exec("t", TaskSpec::exec("t", "true")),
        ] {
            let entry = job_entry(&spec).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
            let yaml = serde_yaml_ng::to_string(&entry).unwrap();
            assert!(yaml.starts_with("name: "), "{yaml}");
            // Through YAML text and back, as a file goes.
            let read: Value = serde_yaml_ng::from_str(&yaml).unwrap();
            check_job_entry(&read, &spec).unwrap_or_else(|e| panic!("{yaml}\n{e}"));
        }
    }

    #[test]
    fn defaults_are_left_out_and_secrets_are_named_only() {
        let mut spec = JobSpec::exec("t", TaskSpec::exec("t", "true"));
        spec.groups[0].tasks[0].secret_env.insert(
            "DB_PASS".into(),
            windflow_protocol::Sealed::redacted(windflow_protocol::KeyId(7)),
        );
        let yaml = serde_yaml_ng::to_string(&job_entry(&spec).unwrap()).unwrap();
        assert_eq!(
            yaml,
            "name: t\ncommand: 'true'\nsecret_env_omitted:\n- DB_PASS\n"
        );
    }

    #[test]
    fn a_job_the_body_cannot_express_is_refused() {
        let mut spec = exec_job();
        spec.groups[0].tasks[0].name = "other".into();
        let e = job_entry(&spec).unwrap_err();
        assert!(e.contains("different job"), "{e}");
        let mut two = exec_job();
        two.groups.push(two.groups[0].clone());
        assert!(
            job_entry(&two)
                .unwrap_err()
                .contains("more than one task group")
        );
    }
}
