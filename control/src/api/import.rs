//! `POST /v1/import` (`?dry_run=true`): applies an export file (see [`super::export`]),
//! all or nothing.
//!
//! Every entry is checked first, with the parser of its create endpoint, and so are the
//! references between entries and to what the cluster holds; every problem found is
//! answered at once, each naming its entry (`jobs[3] "backup": field `timeout`: …`), and
//! nothing changes. Then the whole file goes through raft as one `Command::Import`, whose
//! apply checks again and writes every entry in one log entry, or none. What exists by
//! name is updated (a job through a new version), what is the same is left alone, and
//! nothing the file lacks is deleted. A dry run answers what apply would do, from this
//! server's state after a linearizable read, and changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_yaml_ng::Value;
use windflow_protocol::export::{
    EntryAction, EntryKind, EntryRef, FORMAT_VERSION, ImportOutcome, MAX_IMPORT_ENTRIES,
    NamedPipeline, NamedSchedule, NamedTarget,
};
use windflow_protocol::pipeline::order;
use windflow_protocol::{JobId, JobSpec, JobType, Namespace, PipelineId, Role, Timestamp};
use windflow_raft::{Applied, Command, ImportSet, ImportWebhook, StateReader, WriteError};

use super::export::{ExportFile, SECRET_ENV_OMITTED};
use super::jobs::SecretEnv;
use super::namespaces::NsScope;
use super::{ApiError, AppState};
use crate::auth::Caller;

/// The largest import file taken, in bytes.
pub const MAX_IMPORT_BYTES: usize = 8 * 1024 * 1024;

/// The answer: what was done (or would be) per entry.
#[derive(Debug, Serialize)]
pub struct ImportAnswer {
    pub dry_run: bool,
    #[serde(flatten)]
    pub outcome: ImportOutcome,
    /// The secrets generated for webhooks this import created, shown this once.
    pub webhook_secrets: Vec<NewSecret>,
}

/// A created webhook's generated HMAC secret.
#[derive(Debug, Serialize)]
pub struct NewSecret {
    pub webhook: String,
    pub namespace: Namespace,
    pub id: String,
    pub secret: String,
}

/// A job entry, checked, before its secret values are sealed.
struct JobIn {
    spec: JobSpec,
    secrets: SecretEnv,
    /// Secret vars whose sealed values the existing job keeps.
    kept: Vec<String>,
}

/// A webhook entry, checked, and the secret its file gives.
struct WebhookIn {
    spec: windflow_protocol::WebhookSpec,
    secret: Option<String>,
}

/// Everything a file holds, checked against itself and the cluster.
#[derive(Default)]
struct Checked {
    jobs: Vec<JobIn>,
    pipelines: Vec<NamedPipeline>,
    schedules: Vec<NamedSchedule>,
    webhooks: Vec<WebhookIn>,
}

/// `POST /v1/import`
pub async fn import(
    State(state): State<AppState>,
    Extension(scope): Extension<NsScope>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<ImportAnswer>, ApiError> {
    let dry_run = match q.get("dry_run").map(String::as_str) {
        None | Some("false") => false,
        Some("true") | Some("") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`dry_run` must be true or false, not `{other}`"),
            ));
        }
    };
    let file = read_file(&body)?;
    if !file.webhooks.is_empty() && caller.role < Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the file holds webhooks, which only an admin may create or change",
        ));
    }
    // Checked against what the cluster holds now, everywhere.
    state.raft.linearizable().await?;
    let checked = check(&file, &scope, state.raft.reader())?;
    let (set, shown) = seal(&state, checked).await?;
    let cmd = Command::Import(Box::new(set));
    let applied = if dry_run {
        state
            .raft
            .reader()
            .preview(cmd)?
            .map_err(|e| ApiError::from(WriteError::Rejected(e)))?
    } else {
        state.raft.write(cmd).await?
    };
    let Applied::Imported(outcome) = applied else {
        return Err(super::jobs::unexpected(applied));
    };
    tracing::info!(
        dry_run,
        created = outcome.count(EntryAction::Create),
        updated = outcome.count(EntryAction::Update),
        unchanged = outcome.count(EntryAction::Unchanged),
        "import"
    );
    let webhook_secrets = if dry_run {
        Vec::new()
    } else {
        outcome
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Webhook && e.action == EntryAction::Create)
            .filter_map(|e| {
                let secret = shown.get(&(e.namespace.clone(), e.name.clone()))?;
                Some(NewSecret {
                    webhook: e.name.clone(),
                    namespace: e.namespace.clone(),
                    id: e.id.clone(),
                    secret: secret.clone(),
                })
            })
            .collect()
    };
    Ok(Json(ImportAnswer {
        dry_run,
        outcome,
        webhook_secrets,
    }))
}

/// The file as YAML (JSON is YAML too).
fn read_file(body: &Bytes) -> Result<ExportFile, ApiError> {
    let bad = |why: String| ApiError::bad_request("invalid_file", why);
    let text =
        std::str::from_utf8(body).map_err(|e| bad(format!("the file is not UTF-8 text: {e}")))?;
    if text.trim().is_empty() {
        return Err(bad("the file is empty".into()));
    }
    let file: ExportFile = serde_yaml_ng::from_str(text)
        .map_err(|e| bad(format!("the file is not an export file: {e}")))?;
    if file.version != FORMAT_VERSION {
        return Err(bad(format!(
            "field `version`: this server reads version {FORMAT_VERSION}, not {}",
            file.version
        )));
    }
    let entries = file.jobs.len() + file.pipelines.len() + file.schedules.len();
    if entries + file.webhooks.len() > MAX_IMPORT_ENTRIES {
        return Err(bad(format!(
            "the file holds more than {MAX_IMPORT_ENTRIES} entries; split it"
        )));
    }
    Ok(file)
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
fn check(file: &ExportFile, scope: &NsScope, reader: &StateReader) -> Result<Checked, ApiError> {
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

/// Seals the file's secret values (an equal value keeps its stored sealed form, so the
/// same file twice changes nothing) and new webhooks' secrets; answers the command's set
/// and the generated webhook secrets to show, by (namespace, name).
async fn seal(
    state: &AppState,
    checked: Checked,
) -> Result<(ImportSet, HashMap<(Namespace, String), String>), ApiError> {
    let reader = state.raft.reader();
    let mut jobs = Vec::with_capacity(checked.jobs.len());
    for JobIn {
        mut spec,
        secrets,
        kept,
    } in checked.jobs
    {
        let current = reader.job_by_name(&spec.namespace, &spec.name)?;
        let mut sealed: BTreeMap<String, windflow_protocol::Sealed> = match &current {
            Some(job) => super::deployments::seal_reusing(state, &secrets, &job.spec).await?,
            None => secrets
                .iter()
                .map(|(name, value)| {
                    state
                        .secrets
                        .seal_env(name, value)
                        .map(|s| (name.clone(), s))
                })
                .collect::<Result<_, _>>()
                .map_err(super::secrets::seal_error)?,
        };
        if let Some(stored) = current
            .as_ref()
            .and_then(|j| j.spec.tasks().next())
            .map(|t| &t.secret_env)
        {
            for name in kept {
                if let Some(s) = stored.get(&name) {
                    sealed.insert(name, s.clone());
                }
            }
        }
        for task in spec.groups.iter_mut().flat_map(|g| g.tasks.iter_mut()) {
            task.secret_env.clone_from(&sealed);
        }
        jobs.push(spec);
    }
    let mut shown = HashMap::new();
    let mut webhooks = Vec::with_capacity(checked.webhooks.len());
    for WebhookIn { spec, secret } in checked.webhooks {
        let place = crate::webhooks::secret_place(&spec.namespace, &spec.name);
        let current = reader.webhook_by_name(&spec.namespace, &spec.name)?;
        let seal = |value: &str| {
            state
                .secrets
                .seal_at(&place, value)
                .map_err(super::secrets::seal_error)
        };
        let sealed = match (current, secret) {
            (Some(w), Some(given)) => match state.secrets.open_at(&place, &w.secret).await {
                Ok(opened) if opened == given => None,
                _ => Some(seal(&given)?),
            },
            // An existing webhook keeps its own secret.
            (Some(_), None) => None,
            (None, Some(given)) => Some(seal(&given)?),
            (None, None) => {
                let fresh = super::webhooks::new_secret()?;
                let sealed = seal(&fresh)?;
                shown.insert((spec.namespace.clone(), spec.name.clone()), fresh);
                Some(sealed)
            }
        };
        webhooks.push(ImportWebhook {
            spec,
            secret: sealed,
        });
    }
    Ok((
        ImportSet {
            jobs,
            pipelines: checked.pipelines,
            schedules: checked.schedules,
            webhooks,
            at: Timestamp::now(),
        },
        shown,
    ))
}
