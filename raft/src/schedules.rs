//! Apply's rules for schedules (see [`Command::FireSchedule`](crate::Command)).
//!
//! `apply` never evaluates a cron expression: the leader computes due times and proposes
//! one `FireSchedule` per fire. Apply refuses a due time that is not after the last
//! recorded one, so whichever leader proposes, and however often, a due time is fired at
//! most once and in order. The overlap policy is decided here, from the previous fire's
//! runs as of this log index, and the runs are created in the same entry as the fire.

use windflow_protocol::schedule::FIRE_LOG_MAX;
use windflow_protocol::{
    FireOutcome, JobId, JobType, NodeId, OverlapPolicy, Run, RunStatus, Schedule, ScheduleFire,
    ScheduleId, ScheduleSpec, ScheduleTarget, TargetLaunch, Timestamp,
};

use crate::StoreError;
use crate::command::{Applied, ApplyError, Response};
use crate::state::{Pending, key};

fn schedule_key(id: ScheduleId) -> Vec<u8> {
    key::id(key::SCHEDULE, id.0)
}

pub(crate) fn fire_key(id: ScheduleId, seq: u64) -> Vec<u8> {
    key::pair(key::SCHEDULE_FIRE, id.0, seq)
}

fn changed(p: &mut Pending<'_>) -> Result<(), StoreError> {
    p.next(key::SCHEDULE_VERSION).map(|_| ())
}

pub(crate) fn create(
    p: &mut Pending<'_>,
    spec: ScheduleSpec,
    at: Timestamp,
) -> Result<Response, StoreError> {
    if let Err(e) = crate::namespaces::require(p, &spec.namespace)? {
        return Ok(Err(e));
    }
    let name_key = key::ns_name(key::SCHEDULE_NAME, &spec.namespace, &spec.name);
    if p.get(&name_key)?.is_some() {
        return Ok(Err(ApplyError::NameTaken {
            kind: "schedule".into(),
            name: spec.name,
        }));
    }
    let id = ScheduleId(p.next(key::NEXT_SCHEDULE)?);
    let schedule = Schedule {
        id,
        spec,
        enabled: true,
        created_at: at,
        updated_at: at,
        fires_after: at,
        last_due: None,
        last_runs: Vec::new(),
        fires: 0,
    };
    p.put(name_key, id.0.to_be_bytes().to_vec());
    p.put_as(schedule_key(id), &schedule)?;
    changed(p)?;
    Ok(Ok(Applied::Schedule(schedule)))
}

pub(crate) fn set_enabled(
    p: &mut Pending<'_>,
    id: ScheduleId,
    enabled: bool,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(mut s) = p.get_as::<Schedule>(&schedule_key(id), "schedule")? else {
        return Ok(Err(ApplyError::not_found("schedule", id)));
    };
    if s.enabled == enabled {
        return Ok(Ok(Applied::Schedule(s)));
    }
    s.enabled = enabled;
    s.updated_at = at;
    if enabled {
        s.fires_after = s.fires_after.max(at);
    }
    p.put_as(schedule_key(id), &s)?;
    changed(p)?;
    Ok(Ok(Applied::Schedule(s)))
}

/// Scans the schedule's fire log: never in a batch.
pub(crate) fn delete(p: &mut Pending<'_>, id: ScheduleId) -> Result<Response, StoreError> {
    let Some(s) = p.get_as::<Schedule>(&schedule_key(id), "schedule")? else {
        return Ok(Err(ApplyError::not_found("schedule", id)));
    };
    p.del(schedule_key(id));
    p.del(key::ns_name(
        key::SCHEDULE_NAME,
        &s.spec.namespace,
        &s.spec.name,
    ));
    let fires: Vec<Vec<u8>> = p
        .tree()
        .scan_prefix(key::id(key::SCHEDULE_FIRE, id.0))
        .keys()
        .map(|k| k.map(|k| k.to_vec()))
        .collect::<Result<_, _>>()?;
    for k in fires {
        p.del(k);
    }
    changed(p)?;
    Ok(Ok(Applied::Schedule(s)))
}

pub(crate) fn fire(
    p: &mut Pending<'_>,
    id: ScheduleId,
    due: Timestamp,
    missed: u32,
    at: Timestamp,
    placed: &[(JobId, NodeId)],
) -> Result<Response, StoreError> {
    let Some(mut s) = p.get_as::<Schedule>(&schedule_key(id), "schedule")? else {
        return Ok(Err(ApplyError::not_found("schedule", id)));
    };
    if !s.enabled {
        return Ok(Err(ApplyError::Refused(format!(
            "schedule {id} is disabled"
        ))));
    }
    if due <= s.next_after() {
        return Ok(Err(ApplyError::Refused(format!(
            "schedule {id} already fired up to {}; {due} is not after it",
            s.next_after()
        ))));
    }
    // The previous fire's runs that have not finished yet.
    let mut unfinished: Vec<Run> = Vec::new();
    for run in &s.last_runs {
        if let Some(r) = p.get_as::<Run>(&key::id(key::RUN, run.0), "run")?
            && !r.status.is_finished()
        {
            unfinished.push(r);
        }
    }
    let mut record = ScheduleFire {
        schedule: id,
        seq: s.fires + 1,
        due,
        at,
        outcome: FireOutcome::Fired,
        launches: Vec::new(),
        replaced: Vec::new(),
        missed,
    };
    let overlapping = !unfinished.is_empty();
    match s.spec.overlap {
        OverlapPolicy::Forbid if overlapping => {
            record.outcome = FireOutcome::SkippedOverlap {
                running: unfinished.iter().map(|r| r.id).collect(),
            };
        }
        OverlapPolicy::Replace if overlapping => {
            for mut r in unfinished
                .into_iter()
                .filter(|r| r.status == RunStatus::Pending)
            {
                r.status = RunStatus::Failed;
                r.finished_at = Some(at);
                r.error = Some(format!(
                    "replaced by the fire of schedule {id} due at {due} before it started"
                ));
                p.put_run(&r, Some(RunStatus::Pending))?;
                crate::webhooks::run_ended(p, &r, at)?;
                record.replaced.push(r.id);
            }
            record.launches = launch(p, &s, at, placed)?;
        }
        _ => record.launches = launch(p, &s, at, placed)?,
    }
    // A skipped fire keeps the runs it overlapped as the ones to look at next time.
    if record.outcome == FireOutcome::Fired {
        s.last_runs = record.launches.iter().filter_map(|l| l.run).collect();
    }
    s.last_due = Some(due);
    s.fires = record.seq;
    p.put_as(schedule_key(id), &s)?;
    p.put_as(fire_key(id, record.seq), &record)?;
    if record.seq > FIRE_LOG_MAX {
        p.del(fire_key(id, record.seq - FIRE_LOG_MAX));
    }
    if record.outcome == FireOutcome::Fired {
        crate::webhooks::schedule_fired(p, &s, &record)?;
    }
    Ok(Ok(Applied::Fire(record)))
}

/// Starts every target of the schedule; a target that cannot start is recorded with why.
/// A job's run starts on its node in `placed`, else pending.
fn launch(
    p: &mut Pending<'_>,
    s: &Schedule,
    at: Timestamp,
    placed: &[(JobId, NodeId)],
) -> Result<Vec<TargetLaunch>, StoreError> {
    let mut launches = Vec::with_capacity(s.spec.targets.len());
    for target in &s.spec.targets {
        let mut pipeline_run = None;
        let (run, error) = match *target {
            ScheduleTarget::Job(job) => {
                match p.get_as::<windflow_protocol::Job>(&key::id(key::JOB, job.0), "job")? {
                    None => (None, Some(format!("job {job} no longer exists"))),
                    Some(j) if j.spec.namespace != s.spec.namespace => (
                        None,
                        Some(format!(
                            "job {job} is not in namespace {}",
                            s.spec.namespace
                        )),
                    ),
                    Some(j) if j.spec.job_type == JobType::Service => (
                        None,
                        Some(format!(
                            "job {job} is a service job, kept running by the scheduler"
                        )),
                    ),
                    Some(j) => {
                        let node = placed.iter().find(|(p, _)| *p == job).map(|(_, n)| *n);
                        let run = crate::state::insert_run(p, &j, None, at, node)?;
                        (Some(run.id), None)
                    }
                }
            }
            ScheduleTarget::Pipeline(pipeline) => {
                match p.get_as::<windflow_protocol::Pipeline>(
                    &key::id(key::PIPELINE, pipeline.0),
                    "pipeline",
                )? {
                    None => (None, Some(format!("pipeline {pipeline} no longer exists"))),
                    Some(pl) if pl.spec.namespace != s.spec.namespace => (
                        None,
                        Some(format!(
                            "pipeline {pipeline} is not in namespace {}",
                            s.spec.namespace
                        )),
                    ),
                    // Its first steps' runs are queued in this same entry.
                    Some(_) => match crate::pipelines::create_run(p, pipeline, None, at)? {
                        Ok(Applied::PipelineRun(r)) => {
                            pipeline_run = Some(r.id);
                            (None, None)
                        }
                        Ok(other) => (None, Some(format!("unexpected answer {other:?}"))),
                        Err(e) => (None, Some(e.to_string())),
                    },
                }
            }
        };
        launches.push(TargetLaunch {
            target: *target,
            run,
            pipeline_run,
            error,
        });
    }
    Ok(launches)
}
