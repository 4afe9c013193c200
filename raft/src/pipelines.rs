//! Apply's rules for pipelines and their runs.
//!
//! A pipeline run is driven here, never by a loop that could start a step twice: a run
//! starts its first steps' job runs in the entry that creates (or starts) it, and a step's
//! job run ending ([`run_ended`]) records the step and starts (or skips) its dependents in
//! the same entry. The leader's dispatcher only places the `pending` job runs this queues.
//! A pipeline run holds its own copy of the steps, so it is self-contained.

use windflow_protocol::pipeline::{self, StepChange};
use windflow_protocol::run::capped_text;
use windflow_protocol::{
    CONTEXT_MAX_BYTES, Context, ContextId, ContextPart, Job, JobId, JobType, Namespace, Pipeline,
    PipelineId, PipelineRun, PipelineRunId, PipelineRunStatus, PipelineSpec, Run, RunStatus,
    StepState, StepStatus, Timestamp,
};

use crate::StoreError;
use crate::command::{Applied, ApplyError, Response};
use crate::state::{Pending, id_of, key};

/// `pipelinename/<namespace>/<name>`.
pub(crate) fn name_key(ns: &Namespace, name: &str) -> Vec<u8> {
    [
        key::PIPELINE_NAME,
        ns.as_str().as_bytes(),
        b"/",
        name.as_bytes(),
    ]
    .concat()
}

fn scheduled_key(at: Timestamp, run: PipelineRunId) -> Vec<u8> {
    key::pair(key::PIPELINE_RUN_SCHEDULED, at.0, run.0)
}

/// Every pipeline run status, in the order their counters are keyed.
pub const RUN_STATUSES: [PipelineRunStatus; 4] = [
    PipelineRunStatus::Scheduled,
    PipelineRunStatus::Running,
    PipelineRunStatus::Succeeded,
    PipelineRunStatus::Failed,
];

/// `count/prun/<status>`.
pub(crate) fn count_key(status: PipelineRunStatus) -> Vec<u8> {
    let i = RUN_STATUSES.iter().position(|s| *s == status).unwrap_or(0) as u8;
    key::named(key::PIPELINE_RUN_COUNT, &[i])
}

/// Stores a pipeline run, keeping the per-status counts in step (`before`: its status as
/// stored, `None` for a new one).
fn put_run(
    p: &mut Pending<'_>,
    run: &PipelineRun,
    before: Option<PipelineRunStatus>,
) -> Result<(), StoreError> {
    if before != Some(run.status) {
        if let Some(old) = before {
            p.add(count_key(old), -1)?;
        }
        p.add(count_key(run.status), 1)?;
    }
    p.put_as(key::id(key::PIPELINE_RUN, run.id.0), run)
}

fn refused(why: impl Into<String>) -> Response {
    Err(ApplyError::Refused(why.into()))
}

pub(crate) fn create(
    p: &mut Pending<'_>,
    mut spec: PipelineSpec,
    at: Timestamp,
) -> Result<Response, StoreError> {
    if let Err(e) = crate::namespaces::require(p, &spec.namespace)? {
        return Ok(Err(e));
    }
    let name = name_key(&spec.namespace, &spec.name);
    if p.get(&name)?.is_some() {
        return Ok(Err(ApplyError::NameTaken {
            kind: "pipeline".into(),
            name: spec.name,
        }));
    }
    if let Err(e) = checked_steps(p, &mut spec)? {
        return Ok(Err(e));
    }
    let id = PipelineId(p.next(key::NEXT_PIPELINE)?);
    for step in &spec.steps {
        p.put(
            key::pair(key::PIPELINE_BY_JOB, step.job.0, id.0),
            Vec::new(),
        );
    }
    p.put(name, id.0.to_be_bytes().to_vec());
    p.put_as(
        key::context(ContextId::of_pipeline(id)),
        &Context::empty_for_pipeline(id, at),
    )?;
    let pipeline = Pipeline {
        id,
        spec,
        created_at: at,
    };
    p.put_as(key::id(key::PIPELINE, id.0), &pipeline)?;
    p.add(key::PIPELINE_COUNT.to_vec(), 1)?;
    Ok(Ok(Applied::Pipeline(pipeline)))
}

/// Apply's rules for a pipeline's steps (jobs that exist, batch jobs of its namespace, a
/// DAG), which puts them in dependency order.
pub(crate) fn checked_steps(
    p: &Pending<'_>,
    spec: &mut PipelineSpec,
) -> Result<Result<(), ApplyError>, StoreError> {
    for step in &spec.steps {
        let Some(job) = p.get_as::<Job>(&key::id(key::JOB, step.job.0), "job")? else {
            return Ok(Err(ApplyError::not_found("job", step.job)));
        };
        if job.spec.namespace != spec.namespace {
            return Ok(refused_rule(format!(
                "job {} is in namespace `{}`, not `{}`",
                step.job, job.spec.namespace, spec.namespace
            )));
        }
        if job.spec.job_type != JobType::Batch {
            return Ok(refused_rule(format!(
                "job `{}` is a service job; pipeline steps are batch jobs",
                job.spec.name
            )));
        }
    }
    // Checked again here (the API checks names first), and kept in dependency order.
    let dag: Vec<(JobId, Vec<JobId>)> = spec
        .steps
        .iter()
        .map(|s| (s.job, s.depends_on.clone()))
        .collect();
    match pipeline::order(&dag) {
        Ok(order) => spec.steps = order.into_iter().map(|i| spec.steps[i].clone()).collect(),
        Err(e) => return Ok(refused_rule(e.to_string())),
    }
    Ok(Ok(()))
}

fn refused_rule(why: impl Into<String>) -> Result<(), ApplyError> {
    Err(ApplyError::Refused(why.into()))
}

/// Scans the pipeline's runs: never in a batch.
pub(crate) fn delete(
    p: &mut Pending<'_>,
    id: PipelineId,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(pipeline) = p.get_as::<Pipeline>(&key::id(key::PIPELINE, id.0), "pipeline")? else {
        return Ok(Err(ApplyError::not_found("pipeline", id)));
    };
    p.del(key::id(key::PIPELINE, id.0));
    p.add(key::PIPELINE_COUNT.to_vec(), -1)?;
    p.del(name_key(&pipeline.spec.namespace, &pipeline.spec.name));
    p.del(key::context(ContextId::of_pipeline(id)));
    for step in &pipeline.spec.steps {
        p.del(key::pair(key::PIPELINE_BY_JOB, step.job.0, id.0));
    }
    let runs: Vec<u64> = p
        .tree()
        .scan_prefix(key::id(key::PIPELINE_RUN_BY_PIPELINE, id.0))
        .keys()
        .map(|k| k.map(|k| id_of(k.get(k.len() - 8..).map(sled::IVec::from))))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    for run in runs {
        let run_key = key::id(key::PIPELINE_RUN, run);
        let Some(mut pr) = p.get_as::<PipelineRun>(&run_key, "pipeline run")? else {
            continue;
        };
        if pr.status == PipelineRunStatus::Scheduled {
            if let Some(start) = pr.start_at {
                p.del(scheduled_key(start, pr.id));
            }
            pr.status = PipelineRunStatus::Failed;
            pr.finished_at = Some(at);
            for step in &mut pr.steps {
                step.status = StepStatus::Skipped;
                step.reason = Some("the pipeline was deleted before the run started".into());
            }
            put_run(p, &pr, Some(PipelineRunStatus::Scheduled))?;
        }
    }
    Ok(Ok(Applied::Pipeline(pipeline)))
}

/// Refuses to delete a job that is a step of a pipeline (one scan of a small index).
pub(crate) fn job_in_use(p: &Pending<'_>, job: &Job) -> Result<Option<ApplyError>, StoreError> {
    let Some(entry) = p
        .tree()
        .scan_prefix(key::id(key::PIPELINE_BY_JOB, job.id.0))
        .keys()
        .next()
    else {
        return Ok(None);
    };
    let k = entry?;
    let Some(pid) = id_of(k.get(k.len() - 8..).map(sled::IVec::from)) else {
        return Ok(None);
    };
    let name = p
        .get_as::<Pipeline>(&key::id(key::PIPELINE, pid), "pipeline")?
        .map(|pl| pl.spec.name)
        .unwrap_or_default();
    Ok(Some(ApplyError::Refused(format!(
        "job `{}` is a step of pipeline `{name}` (P{pid}); delete the pipeline first",
        job.spec.name
    ))))
}

pub(crate) fn create_run(
    p: &mut Pending<'_>,
    id: PipelineId,
    start_at: Option<Timestamp>,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(pipeline) = p.get_as::<Pipeline>(&key::id(key::PIPELINE, id.0), "pipeline")? else {
        return Ok(Err(ApplyError::not_found("pipeline", id)));
    };
    let later = start_at.filter(|s| *s > at);
    let mut run = PipelineRun {
        id: PipelineRunId(p.next(key::NEXT_PIPELINE_RUN)?),
        pipeline: id,
        namespace: pipeline.spec.namespace.clone(),
        status: PipelineRunStatus::Scheduled,
        on_failure: pipeline.spec.on_failure,
        steps: pipeline
            .spec
            .steps
            .iter()
            .map(|s| StepState {
                job: s.job,
                depends_on: s.depends_on.clone(),
                status: StepStatus::Waiting,
                run: None,
                reason: None,
                earlier_runs: Vec::new(),
            })
            .collect(),
        requested_at: at,
        start_at,
        started_at: None,
        finished_at: None,
        attempts: 1,
    };
    p.put(
        key::pair(key::PIPELINE_RUN_BY_PIPELINE, id.0, run.id.0),
        Vec::new(),
    );
    match later {
        Some(start) => p.put(scheduled_key(start, run.id), Vec::new()),
        None => begin(p, &mut run, at)?,
    }
    put_run(p, &run, None)?;
    Ok(Ok(Applied::PipelineRun(run)))
}

pub(crate) fn start_run(
    p: &mut Pending<'_>,
    id: PipelineRunId,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let run_key = key::id(key::PIPELINE_RUN, id.0);
    let Some(mut run) = p.get_as::<PipelineRun>(&run_key, "pipeline run")? else {
        return Ok(Err(ApplyError::not_found("pipeline run", id)));
    };
    if run.status != PipelineRunStatus::Scheduled {
        return Ok(Ok(Applied::PipelineRun(run)));
    }
    if let Some(start) = run.start_at {
        p.del(scheduled_key(start, id));
    }
    begin(p, &mut run, at)?;
    put_run(p, &run, Some(PipelineRunStatus::Scheduled))?;
    Ok(Ok(Applied::PipelineRun(run)))
}

pub(crate) fn retry_run(
    p: &mut Pending<'_>,
    id: PipelineRunId,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let run_key = key::id(key::PIPELINE_RUN, id.0);
    let Some(mut run) = p.get_as::<PipelineRun>(&run_key, "pipeline run")? else {
        return Ok(Err(ApplyError::not_found("pipeline run", id)));
    };
    if run.status != PipelineRunStatus::Failed {
        return Ok(refused(format!(
            "pipeline run {id} is {}; only a failed run can be retried",
            run.status.as_str()
        )));
    }
    if p.get(&key::id(key::PIPELINE, run.pipeline.0))?.is_none() {
        return Ok(refused(format!(
            "pipeline {} was deleted; its run {id} cannot be retried",
            run.pipeline
        )));
    }
    for step in &mut run.steps {
        if matches!(step.status, StepStatus::Failed | StepStatus::Skipped) {
            step.earlier_runs.extend(step.run.take());
            step.status = StepStatus::Waiting;
            step.reason = None;
        }
    }
    run.attempts += 1;
    run.finished_at = None;
    begin(p, &mut run, at)?;
    put_run(p, &run, Some(PipelineRunStatus::Failed))?;
    Ok(Ok(Applied::PipelineRun(run)))
}

/// A job run ended: if it is a step of a pipeline run, records the step and moves the
/// pipeline run on, in the same entry.
pub(crate) fn run_ended(p: &mut Pending<'_>, run: &Run, at: Timestamp) -> Result<(), StoreError> {
    let Some(id) = run.pipeline_run else {
        return Ok(());
    };
    let run_key = key::id(key::PIPELINE_RUN, id.0);
    let Some(mut pr) = p.get_as::<PipelineRun>(&run_key, "pipeline run")? else {
        return Ok(());
    };
    let Some(step) = pr
        .steps
        .iter_mut()
        .find(|s| s.run == Some(run.id) && s.status == StepStatus::Running)
    else {
        return Ok(());
    };
    if run.status == RunStatus::Succeeded {
        step.status = StepStatus::Succeeded;
    } else {
        step.status = StepStatus::Failed;
        step.reason = Some(match &run.error {
            Some(e) => e.clone(),
            None => match run.exit_code {
                Some(code) => format!("{} with exit code {code}", run.status.as_str()),
                None => run.status.as_str().to_owned(),
            },
        });
    }
    let before = pr.status;
    progress(p, &mut pr, at)?;
    put_run(p, &pr, Some(before))
}

/// The run starts (or resumes): running from `at`, its ready steps started.
fn begin(p: &mut Pending<'_>, run: &mut PipelineRun, at: Timestamp) -> Result<(), StoreError> {
    run.status = PipelineRunStatus::Running;
    run.started_at = Some(at);
    progress(p, run, at)
}

/// Starts every step that may start and skips every step that may not, until nothing
/// changes; then ends the run once every step has, and refreshes the pipeline's context.
fn progress(p: &mut Pending<'_>, run: &mut PipelineRun, at: Timestamp) -> Result<(), StoreError> {
    let mut names = std::collections::BTreeMap::new();
    for step in &run.steps {
        let name = p
            .get_as::<Job>(&key::id(key::JOB, step.job.0), "job")?
            .map(|j| j.spec.name)
            .unwrap_or_else(|| step.job.to_string());
        names.insert(step.job, name);
    }
    let name = |j: JobId| names.get(&j).cloned().unwrap_or_else(|| j.to_string());
    loop {
        let changes = pipeline::advance(&run.steps, run.on_failure, name);
        if changes.is_empty() {
            break;
        }
        for change in changes {
            match change {
                StepChange::Skip(i, why) => {
                    run.steps[i].status = StepStatus::Skipped;
                    run.steps[i].reason = Some(why);
                }
                StepChange::Start(i) => {
                    let job = run.steps[i].job;
                    match crate::state::create_run(p, job, Some(run.id), at)? {
                        Ok(Applied::Run(r)) => {
                            run.steps[i].status = StepStatus::Running;
                            run.steps[i].run = Some(r.id);
                        }
                        Ok(_) | Err(_) => {
                            run.steps[i].status = StepStatus::Failed;
                            run.steps[i].reason = Some(format!("job {job} no longer exists"));
                        }
                    }
                }
            }
        }
    }
    if run.status == PipelineRunStatus::Running && run.steps.iter().all(|s| s.status.is_finished())
    {
        run.finished_at = Some(at);
        run.status = if run.steps.iter().all(|s| s.status == StepStatus::Succeeded) {
            PipelineRunStatus::Succeeded
        } else {
            PipelineRunStatus::Failed
        };
    }
    refresh_context(p, run, at)
}

/// The pipeline's context: its steps' job contexts in order (those that ran in this
/// run), capped to [`CONTEXT_MAX_BYTES`] in all; its value is the last one's.
fn refresh_context(
    p: &mut Pending<'_>,
    run: &PipelineRun,
    at: Timestamp,
) -> Result<(), StoreError> {
    let ctx_key = key::context(ContextId::of_pipeline(run.pipeline));
    if p.get(&ctx_key)?.is_none() {
        return Ok(());
    }
    let mut ctx = Context::empty_for_pipeline(run.pipeline, at);
    let mut room = CONTEXT_MAX_BYTES;
    for step in &run.steps {
        if !matches!(step.status, StepStatus::Succeeded | StepStatus::Failed) || step.run.is_none()
        {
            continue;
        }
        let Some(job_ctx) =
            p.get_as::<Context>(&key::context(ContextId::of_job(step.job)), "context")?
        else {
            continue;
        };
        let (value, cut) = capped_text(job_ctx.value.as_bytes(), room);
        room -= value.len();
        ctx.parts.push(ContextPart {
            job: step.job,
            context: job_ctx.id,
            value,
            truncated: job_ctx.truncated || cut,
            run: job_ctx.run,
            node: job_ctx.node,
            exit_code: job_ctx.exit_code,
        });
    }
    if let Some(last) = ctx.parts.last() {
        ctx.value = last.value.clone();
        ctx.truncated = last.truncated;
        ctx.run = last.run;
        ctx.node = last.node;
        ctx.exit_code = last.exit_code;
    }
    ctx.pipeline_run = Some(run.id);
    ctx.started_at = run.started_at;
    ctx.duration = match (run.started_at, run.finished_at) {
        (Some(s), Some(f)) => Some(windflow_protocol::HumanDuration::from_millis(
            f.0.saturating_sub(s.0),
        )),
        _ => None,
    };
    ctx.attempts = run.attempts;
    p.put_as(ctx_key, &ctx)
}

/// Empties a job's or a pipeline's context.
pub(crate) fn reset_context(
    p: &mut Pending<'_>,
    id: ContextId,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let ctx_key = key::context(id);
    if p.get(&ctx_key)?.is_none() {
        return Ok(Err(ApplyError::not_found("context", id)));
    }
    let ctx = match id {
        ContextId::Job(job) => Context::empty_for_job(job, at),
        ContextId::Pipeline(pl) => Context::empty_for_pipeline(pl, at),
    };
    p.put_as(ctx_key, &ctx)?;
    Ok(Ok(Applied::Context(ctx)))
}
