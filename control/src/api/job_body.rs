//! A job as the `POST /v1/jobs` body that makes it: the inverse of
//! [`super::jobs::parse_job_spec`], for export files. Fields at their defaults are left
//! out; every body is read back with that parser before it is used, so a job the body
//! cannot express is refused, never written wrong.

use axum::body::Bytes;
use serde_yaml_ng::{Mapping, Value};
use windflow_protocol::{
    CheckKind, DriverConfig, HumanDuration, JobSpec, JobType, MountKind, Namespace, Operator,
    Placement, PortProtocol, RescheduleLimit, ReschedulePolicy, Resources, RestartMode,
    RestartPolicy, RetryPolicy, RunTarget, UpdatePolicy,
};

use super::namespaces::NsScope;

/// The field of a job entry that lists its secret env vars, whose values stay behind.
pub const SECRET_ENV_OMITTED: &str = "secret_env_omitted";

/// A mapping built in the order fields are set (`name` first).
#[derive(Default)]
pub(super) struct Entry(Mapping);

impl Entry {
    pub(super) fn named(name: &str, namespace: &Namespace) -> Self {
        let mut e = Entry::default();
        e.set("name", name);
        if !namespace.is_default() {
            e.set("namespace", namespace.as_str());
        }
        e
    }

    pub(super) fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.0.insert(Value::from(key), value.into());
    }

    pub(super) fn duration(&mut self, key: &str, d: HumanDuration) {
        self.set(key, d.to_string());
    }

    pub(super) fn list<T: Into<Value>>(&mut self, key: &str, items: impl IntoIterator<Item = T>) {
        self.set(
            key,
            Value::Sequence(items.into_iter().map(Into::into).collect()),
        );
    }

    pub(super) fn map<'a>(
        &mut self,
        key: &str,
        items: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) {
        let m: Mapping = items
            .into_iter()
            .map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str())))
            .collect();
        self.set(key, Value::Mapping(m));
    }

    pub(super) fn done(self) -> Value {
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
    if let DriverConfig::Docker(d) = &task.driver
        && d.network.is_some()
    {
        return Err("it is a stack's job: its compose file is what makes it".into());
    }
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
                    // A stack's compose healthcheck: its job is the stack's, made from its
                    // compose file, and no `POST /v1/jobs` body says it.
                    CheckKind::Container { .. } => {
                        ce.set("type", "container");
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
                    host_ip: None,
                    protocol: PortProtocol::Tcp,
                }],
                mounts: vec![Mount {
                    kind: MountKind::Volume,
                    source: "data".into(),
                    target: "/data".into(),
                    read_only: true,
                }],
                labels: [("team".to_owned(), "web".to_owned())].into(),
                network: None,
                aliases: Vec::new(),
                healthcheck: None,
                depends_on: Vec::new(),
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
