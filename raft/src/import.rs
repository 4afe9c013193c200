//! Apply's rules for [`Command::Import`](crate::Command): a whole import file in one
//! entry, all or nothing.
//!
//! Entries go in by kind (jobs, pipelines, schedules, webhooks) and in the file's order,
//! each through the rules its own command applies (`CreateJob`, `UpdateJob`,
//! `CreatePipeline`, …), so an import accepts nothing the endpoints would refuse. Names
//! are resolved here, after the entries before them are written (reads see this entry's
//! own writes), which is what lets one file create jobs and the pipelines naming them.
//! Every refusal is collected, naming its entry; if there is one, every write of the
//! import is dropped and the answer lists them all.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use windflow_protocol::export::{
    EntryAction, EntryKind, EntryOutcome, EntryRef, ImportOutcome, NamedPipeline, NamedSchedule,
    NamedTarget,
};
use windflow_protocol::{
    Job, JobId, JobSpec, JobType, Namespace, Pipeline, PipelineId, PipelineSpec, PipelineStep,
    Schedule, ScheduleSpec, ScheduleTarget, Sealed, Timestamp, Webhook, WebhookSpec,
};

use crate::StoreError;
use crate::command::{Applied, ApplyError, Response};
use crate::state::{Pending, id_of, key};

/// The fields of [`Command::Import`](crate::Command): the file's entries, checked by the
/// proposer (secret values sealed), in the file's order within each kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSet {
    pub jobs: Vec<JobSpec>,
    pub pipelines: Vec<NamedPipeline>,
    pub schedules: Vec<NamedSchedule>,
    pub webhooks: Vec<ImportWebhook>,
    pub at: Timestamp,
}

/// A webhook to import, and the secret to give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportWebhook {
    pub spec: WebhookSpec,
    /// Its HMAC secret, sealed: required for a new webhook; `None` (or the stored sealed
    /// value itself) keeps an existing one's own.
    pub secret: Option<Sealed>,
}

/// One entry's result: what was done and the object's ID and version, or why it was
/// refused.
type EntryResult = Result<(EntryAction, String, Option<u64>), String>;

pub(crate) fn import(p: &mut Pending<'_>, set: ImportSet) -> Result<Response, StoreError> {
    let saved = p.checkpoint();
    let at = set.at;
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let mut record =
        |kind: EntryKind, index: usize, name: &str, namespace: &Namespace, result: EntryResult| {
            match result {
                Ok((action, id, version)) => entries.push(EntryOutcome {
                    kind,
                    index,
                    name: name.to_owned(),
                    namespace: namespace.clone(),
                    action,
                    id,
                    version,
                }),
                Err(why) => {
                    let entry = EntryRef {
                        kind,
                        index,
                        name: Some(name.to_owned()),
                    };
                    errors.push(format!("{entry}: {why}"));
                }
            }
        };
    for (i, spec) in set.jobs.into_iter().enumerate() {
        let (name, ns) = (spec.name.clone(), spec.namespace.clone());
        record(EntryKind::Job, i, &name, &ns, job(p, spec, at)?);
    }
    for (i, named) in set.pipelines.into_iter().enumerate() {
        let (name, ns) = (named.name.clone(), named.namespace.clone());
        record(EntryKind::Pipeline, i, &name, &ns, pipeline(p, named, at)?);
    }
    for (i, named) in set.schedules.into_iter().enumerate() {
        let (name, ns) = (named.name.clone(), named.namespace.clone());
        record(EntryKind::Schedule, i, &name, &ns, schedule(p, named, at)?);
    }
    for (i, hook) in set.webhooks.into_iter().enumerate() {
        let (name, ns) = (hook.spec.name.clone(), hook.spec.namespace.clone());
        record(EntryKind::Webhook, i, &name, &ns, webhook(p, hook, at)?);
    }
    if !errors.is_empty() {
        p.rollback(saved);
        return Ok(Err(ApplyError::Refused(format!(
            "the import changed nothing: {}",
            errors.join("; ")
        ))));
    }
    Ok(Ok(Applied::Imported(ImportOutcome { entries })))
}

fn named_id(p: &Pending<'_>, k: &[u8]) -> Result<Option<u64>, StoreError> {
    Ok(id_of(p.get(k)?))
}

fn job_named(p: &Pending<'_>, ns: &Namespace, name: &str) -> Result<Option<Job>, StoreError> {
    match named_id(p, &key::job_name(ns, name))? {
        Some(id) => p.get_as(&key::id(key::JOB, id), "job"),
        None => Ok(None),
    }
}

fn refusal(r: Response) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(other) => format!("unexpected answer {other:?}"),
    }
}

fn job(p: &mut Pending<'_>, spec: JobSpec, at: Timestamp) -> Result<EntryResult, StoreError> {
    let Some(existing) = job_named(p, &spec.namespace, &spec.name)? else {
        return Ok(match crate::state::create_job(p, spec, at)? {
            Ok(Applied::Job(j)) => Ok((EntryAction::Create, j.id.to_string(), Some(j.version))),
            other => Err(refusal(other)),
        });
    };
    if existing.spec == spec {
        return Ok(Ok((
            EntryAction::Unchanged,
            existing.id.to_string(),
            Some(existing.version),
        )));
    }
    Ok(
        match crate::deployments::update(p, existing.id, spec, at)? {
            Ok(Applied::JobUpdated { job, .. }) => {
                Ok((EntryAction::Update, job.id.to_string(), Some(job.version)))
            }
            other => Err(refusal(other)),
        },
    )
}

/// A pipeline's DAG as a comparable shape: the same steps with the same dependencies,
/// whatever the order they are written in.
fn shape(spec: &PipelineSpec) -> BTreeMap<JobId, BTreeSet<JobId>> {
    spec.steps
        .iter()
        .map(|s| (s.job, s.depends_on.iter().copied().collect()))
        .collect()
}

fn pipeline(
    p: &mut Pending<'_>,
    named: NamedPipeline,
    at: Timestamp,
) -> Result<EntryResult, StoreError> {
    let ns = named.namespace.clone();
    let mut ids = BTreeMap::new();
    for step in &named.steps {
        for name in std::iter::once(&step.job).chain(&step.depends_on) {
            if ids.contains_key(name.as_str()) {
                continue;
            }
            let Some(job) = job_named(p, &ns, name)? else {
                return Ok(Err(format!("no job `{name}` in namespace `{ns}`")));
            };
            ids.insert(name.clone(), job.id);
        }
    }
    let mut spec = PipelineSpec {
        name: named.name,
        namespace: named.namespace,
        steps: named
            .steps
            .iter()
            .map(|s| PipelineStep {
                job: ids[s.job.as_str()],
                depends_on: s.depends_on.iter().map(|d| ids[d.as_str()]).collect(),
            })
            .collect(),
        on_failure: named.on_failure,
    };
    let pipeline_key = crate::pipelines::name_key(&spec.namespace, &spec.name);
    let Some(id) = named_id(p, &pipeline_key)? else {
        return Ok(match crate::pipelines::create(p, spec, at)? {
            Ok(Applied::Pipeline(pl)) => Ok((EntryAction::Create, pl.id.to_string(), None)),
            other => Err(refusal(other)),
        });
    };
    let Some(mut stored) = p.get_as::<Pipeline>(&key::id(key::PIPELINE, id), "pipeline")? else {
        return Ok(Err(format!("pipeline P{id} is missing")));
    };
    if let Err(e) = crate::pipelines::checked_steps(p, &mut spec)? {
        return Ok(Err(e.to_string()));
    }
    if shape(&stored.spec) == shape(&spec) && stored.spec.on_failure == spec.on_failure {
        return Ok(Ok((EntryAction::Unchanged, stored.id.to_string(), None)));
    }
    // Running pipeline runs keep their own copy of the steps; new runs take these.
    for step in &stored.spec.steps {
        p.del(key::pair(key::PIPELINE_BY_JOB, step.job.0, id));
    }
    for step in &spec.steps {
        p.put(key::pair(key::PIPELINE_BY_JOB, step.job.0, id), Vec::new());
    }
    stored.spec = spec;
    p.put_as(key::id(key::PIPELINE, id), &stored)?;
    Ok(Ok((EntryAction::Update, PipelineId(id).to_string(), None)))
}

fn schedule(
    p: &mut Pending<'_>,
    named: NamedSchedule,
    at: Timestamp,
) -> Result<EntryResult, StoreError> {
    let ns = named.namespace.clone();
    let mut targets = Vec::with_capacity(named.targets.len());
    for target in &named.targets {
        let resolved = match target {
            NamedTarget::Job(name) => match job_named(p, &ns, name)? {
                Some(j) if j.spec.job_type == JobType::Batch => ScheduleTarget::Job(j.id),
                Some(_) => {
                    return Ok(Err(format!(
                        "job `{name}` is a service job; only batch jobs are scheduled"
                    )));
                }
                None => return Ok(Err(format!("no job `{name}` in namespace `{ns}`"))),
            },
            NamedTarget::Pipeline(name) => {
                match named_id(p, &crate::pipelines::name_key(&ns, name))? {
                    Some(id) => ScheduleTarget::Pipeline(PipelineId(id)),
                    None => {
                        return Ok(Err(format!("no pipeline `{name}` in namespace `{ns}`")));
                    }
                }
            }
        };
        targets.push(resolved);
    }
    let spec = ScheduleSpec {
        name: named.name,
        namespace: named.namespace,
        cron: named.cron,
        timezone: named.timezone,
        targets,
        overlap: named.overlap,
        catch_up: named.catch_up,
    };
    let name_key = key::ns_name(key::SCHEDULE_NAME, &spec.namespace, &spec.name);
    let Some(id) = named_id(p, &name_key)? else {
        return Ok(match crate::schedules::create(p, spec, at)? {
            Ok(Applied::Schedule(s)) => Ok((EntryAction::Create, s.id.to_string(), None)),
            other => Err(refusal(other)),
        });
    };
    let Some(mut stored) = p.get_as::<Schedule>(&key::id(key::SCHEDULE, id), "schedule")? else {
        return Ok(Err(format!("schedule S{id} is missing")));
    };
    if stored.spec == spec {
        return Ok(Ok((EntryAction::Unchanged, stored.id.to_string(), None)));
    }
    // Where its fires stand (enabled, last due time, fire log) stays; due times count
    // from now, as after an enable, so a new expression never catches up its own past.
    stored.spec = spec;
    stored.updated_at = at;
    stored.fires_after = stored.fires_after.max(at);
    p.put_as(key::id(key::SCHEDULE, id), &stored)?;
    p.next(key::SCHEDULE_VERSION)?;
    Ok(Ok((EntryAction::Update, stored.id.to_string(), None)))
}

fn webhook(
    p: &mut Pending<'_>,
    hook: ImportWebhook,
    at: Timestamp,
) -> Result<EntryResult, StoreError> {
    let name_key = key::ns_name(key::WEBHOOK_NAME, &hook.spec.namespace, &hook.spec.name);
    let Some(id) = named_id(p, &name_key)? else {
        let Some(secret) = hook.secret else {
            return Ok(Err(
                "it no longer exists, and a new webhook needs a secret: import again".into(),
            ));
        };
        return Ok(match crate::webhooks::create(p, hook.spec, secret, at)? {
            Ok(Applied::Webhook(w)) => Ok((EntryAction::Create, w.id.to_string(), None)),
            other => Err(refusal(other)),
        });
    };
    let Some(mut stored) = p.get_as::<Webhook>(&key::id(key::WEBHOOK, id), "webhook")? else {
        return Ok(Err(format!("webhook W{id} is missing")));
    };
    let new_secret = hook.secret.filter(|s| *s != stored.secret);
    if stored.spec == hook.spec && new_secret.is_none() {
        return Ok(Ok((EntryAction::Unchanged, stored.id.to_string(), None)));
    }
    // Its delivery log and how far it got stay.
    stored.spec = hook.spec;
    if let Some(secret) = new_secret {
        stored.secret = secret;
    }
    p.put_as(key::id(key::WEBHOOK, id), &stored)?;
    Ok(Ok((EntryAction::Update, stored.id.to_string(), None)))
}
