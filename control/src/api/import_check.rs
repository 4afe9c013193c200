//! The checks of an import file, before anything changes: every entry through its create
//! endpoint's parser (`parse_job_spec`, `pipelines::parse_body`, `schedules::parse_body`,
//! `webhooks::parse_body`), names unique per kind and namespace, namespaces that exist,
//! a job's type kept, and every reference (a step's job, a schedule's target) found in the
//! file or the cluster, by name or ID, and written back as a name. Every problem is kept,
//! named by its entry, and answered together.

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use serde_yaml_ng::Value;
use windflow_protocol::export::{EntryKind, EntryRef, NamedPipeline, NamedSchedule, NamedTarget};
use windflow_protocol::pipeline::order;
use windflow_protocol::{JobId, JobSpec, JobType, Namespace, PipelineId};
use windflow_raft::StateReader;

use super::ApiError;
use super::export::{ExportFile, SECRET_ENV_OMITTED};
use super::jobs::SecretEnv;
use super::namespaces::NsScope;

/// A job entry, checked, before its secret values are sealed.
pub(super) struct JobIn {
    pub(super) spec: JobSpec,
    pub(super) secrets: SecretEnv,
    /// Secret vars whose sealed values the existing job keeps.
    pub(super) kept: Vec<String>,
}

/// A webhook entry, checked, and the secret its file gives.
pub(super) struct WebhookIn {
    pub(super) spec: windflow_protocol::WebhookSpec,
    pub(super) secret: Option<String>,
}

/// Everything a file holds, checked against itself and the cluster.
#[derive(Default)]
pub(super) struct Checked {
    pub(super) jobs: Vec<JobIn>,
    pub(super) pipelines: Vec<NamedPipeline>,
    pub(super) schedules: Vec<NamedSchedule>,
    pub(super) webhooks: Vec<WebhookIn>,
}

fn entry_ref(kind: EntryKind, index: usize, v: &Value) -> EntryRef {
    EntryRef {
        kind,
        index,
        name: v.get("name").and_then(Value::as_str).map(str::to_owned),
    }
}

/// An entry as the JSON body its endpoint's parser reads.
fn body_of(v: &Value) -> Result<Bytes, String> {
    if !v.is_mapping() {
        return Err("must be a mapping of fields (the body its create endpoint takes)".into());
    }
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| format!("cannot be read as a body: {e}"))
}

/// Checks every entry and what it names; all the problems, each naming its entry.
pub(super) fn check(
    file: &ExportFile,
    scope: &NsScope,
    reader: &StateReader,
) -> Result<Checked, ApiError> {
    let mut c = Checker {
        reader,
        errors: Vec::new(),
        seen: HashSet::new(),
        file_jobs: HashMap::new(),
        file_pipelines: HashSet::new(),
    };
    let mut out = Checked::default();
    for (i, v) in file.jobs.iter().enumerate() {
        let entry = entry_ref(EntryKind::Job, i, v);
        match c.job(v, scope) {
            Ok(job) => {
                c.file_jobs.insert(
                    (job.spec.namespace.clone(), job.spec.name.clone()),
                    job.spec.job_type,
                );
                c.claim(&entry, &job.spec.namespace, &job.spec.name);
                out.jobs.push(job);
            }
            Err(why) => c.errors.push(format!("{entry}: {why}")),
        }
    }
    // Pipelines are named by schedules: collect them all before checking any target.
    let mut parsed = Vec::new();
    for (i, v) in file.pipelines.iter().enumerate() {
        let entry = entry_ref(EntryKind::Pipeline, i, v);
        match body_of(v)
            .and_then(|b| super::pipelines::parse_body(&b, scope).map_err(|e| e.message))
        {
            Ok(p) => {
                c.file_pipelines
                    .insert((p.namespace.clone(), p.name.clone()));
                c.claim(&entry, &p.namespace, &p.name);
                parsed.push((entry, p));
            }
            Err(why) => c.errors.push(format!("{entry}: {why}")),
        }
    }
    for (entry, p) in parsed {
        match c.pipeline(p) {
            Ok(p) => out.pipelines.push(p),
            Err(why) => c.errors.push(format!("{entry}: {why}")),
        }
    }
    for (i, v) in file.schedules.iter().enumerate() {
        let entry = entry_ref(EntryKind::Schedule, i, v);
        let checked = body_of(v)
            .and_then(|b| super::schedules::parse_body(&b, scope).map_err(|e| e.message))
            .and_then(|s| {
                c.claim(&entry, &s.namespace, &s.name);
                c.schedule(s)
            });
        match checked {
            Ok(s) => out.schedules.push(s),
            Err(why) => c.errors.push(format!("{entry}: {why}")),
        }
    }
    for (i, v) in file.webhooks.iter().enumerate() {
        let entry = entry_ref(EntryKind::Webhook, i, v);
        let checked = body_of(v)
            .and_then(|b| super::webhooks::parse_body(&b, scope).map_err(|e| e.message))
            .and_then(|(spec, secret)| {
                c.claim(&entry, &spec.namespace, &spec.name);
                c.namespace_exists(&spec.namespace)?;
                Ok(WebhookIn { spec, secret })
            });
        match checked {
            Ok(w) => out.webhooks.push(w),
            Err(why) => c.errors.push(format!("{entry}: {why}")),
        }
    }
    if c.errors.is_empty() {
        return Ok(out);
    }
    let n = c.errors.len();
    Err(ApiError::bad_request(
        "invalid_import",
        format!(
            "{n} invalid entr{}; nothing was changed:\n  {}",
            if n == 1 { "y" } else { "ies" },
            c.errors.join("\n  ")
        ),
    ))
}

struct Checker<'a> {
    reader: &'a StateReader,
    errors: Vec<String>,
    /// Every (kind, namespace, name) the file holds, to refuse the same one twice.
    seen: HashSet<(EntryKind, Namespace, String)>,
    file_jobs: HashMap<(Namespace, String), JobType>,
    file_pipelines: HashSet<(Namespace, String)>,
}

impl Checker<'_> {
    fn claim(&mut self, entry: &EntryRef, ns: &Namespace, name: &str) {
        if !self.seen.insert((entry.kind, ns.clone(), name.to_owned())) {
            self.errors.push(format!(
                "{entry}: the file holds another {} `{name}` in namespace `{ns}`",
                entry.kind.as_str()
            ));
        }
    }

    fn namespace_exists(&self, ns: &Namespace) -> Result<(), String> {
        match self.reader.namespace(ns) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!(
                "namespace `{ns}` does not exist; create it first (`windflow namespace create {ns}`)"
            )),
            Err(e) => Err(format!("reading state: {e}")),
        }
    }

    fn job(&self, v: &Value, scope: &NsScope) -> Result<JobIn, String> {
        let mut v = v.clone();
        let omitted = match v
            .as_mapping_mut()
            .and_then(|m| m.remove(SECRET_ENV_OMITTED))
        {
            None => Vec::new(),
            Some(list) => serde_yaml_ng::from_value::<Vec<String>>(list).map_err(|_| {
                format!("field `{SECRET_ENV_OMITTED}`: must be a list of variable names")
            })?,
        };
        let (spec, secrets) =
            super::jobs::parse_job_spec(&body_of(&v)?, scope).map_err(|e| e.message)?;
        super::batch::check_target(self.reader, &spec.target).map_err(|e| e.message)?;
        self.namespace_exists(&spec.namespace)?;
        let existing = self
            .reader
            .job_by_name(&spec.namespace, &spec.name)
            .map_err(|e| format!("reading state: {e}"))?;
        if let Some(j) = &existing
            && j.spec.job_type != spec.job_type
        {
            return Err(format!(
                "field `type`: `{}` is a {} job in the cluster; an import cannot change a job's type",
                spec.name,
                type_name(j.spec.job_type)
            ));
        }
        let stored = existing
            .as_ref()
            .and_then(|j| j.spec.tasks().next())
            .map(|t| t.secret_env.clone())
            .unwrap_or_default();
        let env = spec.tasks().next().map(|t| &t.env);
        for name in &omitted {
            let field = format!("field `{SECRET_ENV_OMITTED}`");
            if secrets.contains_key(name) || env.is_some_and(|e| e.contains_key(name)) {
                return Err(format!(
                    "{field}: `{name}` is given in the entry too; leave it out of one"
                ));
            }
            if !stored.contains_key(name) {
                return Err(format!(
                    "{field}: `{name}` has no sealed value in this cluster to keep; give it \
                     under `secret_env`, or leave it out"
                ));
            }
        }
        Ok(JobIn {
            spec,
            secrets,
            kept: omitted,
        })
    }

    /// A job of `ns` by name or ID, in the file or in the cluster: its name and type.
    fn job_ref(&self, ns: &Namespace, key: &str) -> Result<Option<(String, JobType)>, String> {
        if let Some(t) = self.file_jobs.get(&(ns.clone(), key.to_owned())) {
            return Ok(Some((key.to_owned(), *t)));
        }
        let found = match key.parse::<JobId>() {
            Ok(id) => self.reader.job(id),
            Err(_) => self.reader.job_by_name(ns, key),
        }
        .map_err(|e| format!("reading state: {e}"))?;
        Ok(found
            .filter(|j| j.spec.namespace == *ns)
            .map(|j| (j.spec.name, j.spec.job_type)))
    }

    fn pipeline(&self, mut p: NamedPipeline) -> Result<NamedPipeline, String> {
        self.namespace_exists(&p.namespace)?;
        let ns = p.namespace.clone();
        for (i, step) in p.steps.iter_mut().enumerate() {
            let field = format!("field `steps[{i}].job`");
            match self.job_ref(&ns, &step.job)? {
                None => {
                    return Err(format!(
                        "{field}: no job `{}` in namespace `{ns}`, in the file or the cluster",
                        step.job
                    ));
                }
                Some((_, JobType::Service)) => {
                    return Err(format!(
                        "{field}: `{}` is a service job; pipeline steps are batch jobs",
                        step.job
                    ));
                }
                Some((name, JobType::Batch)) => step.job = name,
            }
            for dep in &mut step.depends_on {
                if let Some((name, _)) = self.job_ref(&ns, dep)? {
                    *dep = name;
                }
            }
        }
        let dag: Vec<(String, Vec<String>)> = p
            .steps
            .iter()
            .map(|s| (s.job.clone(), s.depends_on.clone()))
            .collect();
        order(&dag).map_err(|e| format!("field `steps`: {e}"))?;
        Ok(p)
    }

    fn pipeline_ref(&self, ns: &Namespace, key: &str) -> Result<Option<String>, String> {
        if self.file_pipelines.contains(&(ns.clone(), key.to_owned())) {
            return Ok(Some(key.to_owned()));
        }
        let found = match key.parse::<PipelineId>() {
            Ok(id) => self.reader.pipeline(id),
            Err(_) => self.reader.pipeline_by_name(ns, key),
        }
        .map_err(|e| format!("reading state: {e}"))?;
        Ok(found
            .filter(|p| p.spec.namespace == *ns)
            .map(|p| p.spec.name))
    }

    fn schedule(&self, mut s: NamedSchedule) -> Result<NamedSchedule, String> {
        self.namespace_exists(&s.namespace)?;
        let ns = s.namespace.clone();
        let mut seen = HashSet::new();
        for (i, target) in s.targets.iter_mut().enumerate() {
            let field = format!("field `targets[{i}]`");
            *target = match target {
                NamedTarget::Job(key) => match self.job_ref(&ns, key)? {
                    Some((name, JobType::Batch)) => NamedTarget::Job(name),
                    Some((_, JobType::Service)) => {
                        return Err(format!(
                            "{field}: `{key}` is a service job; only batch jobs are scheduled"
                        ));
                    }
                    None => {
                        return Err(format!(
                            "{field}: no job `{key}` in namespace `{ns}`, in the file or the cluster"
                        ));
                    }
                },
                NamedTarget::Pipeline(key) => match self.pipeline_ref(&ns, key)? {
                    Some(name) => NamedTarget::Pipeline(name),
                    None => {
                        return Err(format!(
                            "{field}: no pipeline `{key}` in namespace `{ns}`, in the file or the cluster"
                        ));
                    }
                },
            };
            if !seen.insert(target.clone()) {
                return Err(format!("{field}: {target} is already a target"));
            }
        }
        Ok(s)
    }
}

fn type_name(t: JobType) -> &'static str {
    match t {
        JobType::Batch => "batch",
        JobType::Service => "service",
    }
}
