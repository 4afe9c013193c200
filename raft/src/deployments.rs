//! Apply's rules for job versions, scaling and deployments.
//!
//! Every version of a job's spec is kept (`jobversion/<job><version>`), the current one
//! too, so allocations run their own version's tasks and a failed deployment can go back
//! to the last stable one. A service job's spec change (other than its counts) starts a
//! deployment (`deployment/<id>`, the job's latest in `jobdeployment/<job>`), which the
//! leader's scheduler rolls out and its deployment watcher ends; a running one is
//! cancelled by the next. Scaling changes a group's count in place: a count is not what
//! runs, so it starts no rollout and no revert undoes it (a revert keeps the counts).

use windflow_protocol::{
    AllocHealth, DeploymentId, DeploymentStatus, EvalTrigger, HealthStatus, Job, JobId, JobSpec,
    JobType, Timestamp,
};
use windflow_protocol::{Allocation, Deployment};

use crate::StoreError;
use crate::command::{Applied, ApplyError, DeploymentEnd, Response};
use crate::state::{Pending, id_of, key};

/// Key prefixes of this module's tables.
pub(crate) mod keys {
    /// `jobversion/<job><version>` → the job's spec at that version.
    pub const JOB_VERSION: &[u8] = b"jobversion/";
    pub const DEPLOYMENT: &[u8] = b"deployment/";
    /// `jobdeployment/<job>` → its latest deployment's ID.
    pub const JOB_DEPLOYMENT: &[u8] = b"jobdeployment/";
    pub const NEXT_DEPLOYMENT: &[u8] = b"counter/deployment";
}

fn job(p: &Pending<'_>, id: JobId) -> Result<Option<Job>, StoreError> {
    p.get_as(&key::id(key::JOB, id.0), "job")
}

pub(crate) fn deployment(
    p: &Pending<'_>,
    id: DeploymentId,
) -> Result<Option<Deployment>, StoreError> {
    p.get_as(&key::id(keys::DEPLOYMENT, id.0), "deployment")
}

fn put_deployment(p: &mut Pending<'_>, d: &Deployment) -> Result<(), StoreError> {
    p.put_as(key::id(keys::DEPLOYMENT, d.id.0), d)
}

fn version(p: &Pending<'_>, job: JobId, v: u64) -> Result<Option<JobSpec>, StoreError> {
    p.get_as(&key::pair(keys::JOB_VERSION, job.0, v), "job version")
}

/// A new job's first version (from `CreateJob`): kept, and for a service rolled out by
/// a first deployment, which marks it stable once it is healthy.
pub(crate) fn created(p: &mut Pending<'_>, job: &mut Job, at: Timestamp) -> Result<(), StoreError> {
    job.version = 1;
    p.put_as(key::pair(keys::JOB_VERSION, job.id.0, 1), &job.spec)?;
    if job.spec.job_type == JobType::Service {
        start(p, job, None, None, at)?;
    }
    Ok(())
}

/// A deleted job's versions go with it. Only from `DeleteJob`, which goes alone.
pub(crate) fn forget_job(p: &mut Pending<'_>, job: JobId) -> Result<(), StoreError> {
    let keys: Vec<Vec<u8>> = p
        .tree()
        .scan_prefix(key::id(keys::JOB_VERSION, job.0))
        .keys()
        .filter_map(|k| k.ok().map(|k| k.to_vec()))
        .collect();
    for k in keys {
        p.del(k);
    }
    Ok(())
}

/// The longest progress deadline of a spec's groups.
fn progress_span(spec: &JobSpec) -> u64 {
    spec.groups
        .iter()
        .map(|g| g.update.progress_deadline.0.as_millis() as u64)
        .max()
        .unwrap_or(0)
}

/// Starts the deployment of `job`'s current version, cancelling the one under way.
fn start(
    p: &mut Pending<'_>,
    job: &Job,
    from_version: Option<u64>,
    reverts: Option<DeploymentId>,
    at: Timestamp,
) -> Result<Deployment, StoreError> {
    if let Some(mut running) = latest(p, job.id)?.filter(|d| d.status.is_active()) {
        running.status = DeploymentStatus::Cancelled;
        running.description = format!("superseded by the deployment of version {}", job.version);
        running.modified_at = at;
        put_deployment(p, &running)?;
    }
    // Canaries stand next to a version that runs; a revert goes back to a known one at once.
    let canaries = job.spec.groups.iter().any(|g| g.update.canary > 0)
        && from_version.is_some()
        && reverts.is_none();
    let d = Deployment {
        id: DeploymentId(p.next(keys::NEXT_DEPLOYMENT)?),
        job: job.id,
        namespace: job.spec.namespace.clone(),
        version: job.version,
        from_version,
        status: DeploymentStatus::Running,
        description: if canaries {
            "placing canaries; waiting for them to be promoted".into()
        } else {
            "rolling out".into()
        },
        promoted: !canaries,
        progress_deadline: Timestamp(at.0.saturating_add(progress_span(&job.spec))),
        reverts,
        created_at: at,
        modified_at: at,
    };
    put_deployment(p, &d)?;
    p.put(
        key::id(keys::JOB_DEPLOYMENT, job.id.0),
        d.id.0.to_be_bytes().to_vec(),
    );
    Ok(d)
}

/// The job's latest deployment.
fn latest(p: &Pending<'_>, job: JobId) -> Result<Option<Deployment>, StoreError> {
    match id_of(p.get(&key::id(keys::JOB_DEPLOYMENT, job.0))?) {
        Some(id) => deployment(p, DeploymentId(id)),
        None => Ok(None),
    }
}

/// Whether two specs differ in more than their groups' counts (what runs changes).
fn changes_what_runs(a: &JobSpec, b: &JobSpec) -> bool {
    let uncounted = |s: &JobSpec| {
        let mut s = s.clone();
        for g in &mut s.groups {
            g.count = 0;
        }
        s
    };
    uncounted(a) != uncounted(b)
}

/// Makes `spec` the job's next version and, for a service whose tasks or policies changed,
/// rolls it out. Answers the job and the deployment started, if any.
fn new_version(
    p: &mut Pending<'_>,
    mut job: Job,
    spec: JobSpec,
    reverts: Option<DeploymentId>,
    at: Timestamp,
) -> Result<(Job, Option<Deployment>), StoreError> {
    let from = job.version;
    let rolls = changes_what_runs(&job.spec, &spec);
    job.version += 1;
    job.spec = spec;
    job.updated_at = at;
    p.put_as(
        key::pair(keys::JOB_VERSION, job.id.0, job.version),
        &job.spec,
    )?;
    p.put_as(key::id(key::JOB, job.id.0), &job)?;
    let mut started = None;
    if job.spec.job_type == JobType::Service {
        if rolls {
            started = Some(start(p, &job, Some(from), reverts, at)?);
        }
        crate::allocs::create_eval(p, job.id, EvalTrigger::JobRegister, at)?;
    }
    Ok((job, started))
}

/// `Command::UpdateJob`.
pub(crate) fn update(
    p: &mut Pending<'_>,
    id: JobId,
    spec: JobSpec,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(job) = job(p, id)? else {
        return Ok(Err(ApplyError::not_found("job", id)));
    };
    if spec.name != job.spec.name || spec.namespace != job.spec.namespace {
        return Ok(Err(ApplyError::Refused(format!(
            "job {} is `{}` in namespace `{}`: an update keeps its name and namespace",
            job.id, job.spec.name, job.spec.namespace
        ))));
    }
    if spec.job_type != job.spec.job_type {
        return Ok(Err(ApplyError::Refused(format!(
            "job {} is a {:?} job: an update cannot change its type (delete it and create it again)",
            job.id, job.spec.job_type
        ))));
    }
    if spec == job.spec {
        return Ok(Ok(Applied::JobUpdated {
            job,
            deployment: None,
        }));
    }
    let (job, deployment) = new_version(p, job, spec, None, at)?;
    Ok(Ok(Applied::JobUpdated { job, deployment }))
}

/// `Command::ScaleJob`: the count of the current version, in place.
pub(crate) fn scale(
    p: &mut Pending<'_>,
    id: JobId,
    group: String,
    count: u32,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(mut job) = job(p, id)? else {
        return Ok(Err(ApplyError::not_found("job", id)));
    };
    if job.spec.job_type != JobType::Service {
        return Ok(Err(ApplyError::Refused(format!(
            "job {} is a batch job: only service jobs have a count to scale",
            job.id
        ))));
    }
    let Some(g) = job.spec.groups.iter_mut().find(|g| g.name == group) else {
        return Ok(Err(ApplyError::not_found("group", &group)));
    };
    if g.count == count {
        return Ok(Ok(Applied::Job(job)));
    }
    g.count = count;
    job.updated_at = at;
    p.put_as(
        key::pair(keys::JOB_VERSION, job.id.0, job.version),
        &job.spec,
    )?;
    p.put_as(key::id(key::JOB, job.id.0), &job)?;
    crate::allocs::create_eval(p, job.id, EvalTrigger::Scale, at)?;
    Ok(Ok(Applied::Job(job)))
}

/// `Command::EndDeployment`. A successful one makes its version the job's stable one; a
/// failed one whose groups ask for `auto_revert` puts the job back on its stable version
/// (as a new version, with the current counts, rolled out by a new deployment).
pub(crate) fn end(
    p: &mut Pending<'_>,
    id: DeploymentId,
    outcome: DeploymentEnd,
    reason: String,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(mut d) = deployment(p, id)? else {
        return Ok(Err(ApplyError::not_found("deployment", id)));
    };
    if !d.status.is_active() {
        return Ok(Err(ApplyError::Refused(format!(
            "deployment {id} has ended already ({})",
            d.status
        ))));
    }
    d.modified_at = at;
    d.description = reason;
    let job = job(p, d.job)?;
    match outcome {
        DeploymentEnd::Successful => {
            d.status = DeploymentStatus::Successful;
            if let Some(mut job) = job {
                job.stable_version = Some(job.stable_version.unwrap_or(0).max(d.version));
                p.put_as(key::id(key::JOB, job.id.0), &job)?;
            }
        }
        DeploymentEnd::Cancelled => d.status = DeploymentStatus::Cancelled,
        DeploymentEnd::Failed => {
            d.status = DeploymentStatus::Failed;
            if let Some(job) = job {
                put_deployment(p, &d)?;
                if let Some(note) = revert(p, job, &d, at)? {
                    d.description = format!("{}; {note}", d.description);
                }
            }
        }
    }
    put_deployment(p, &d)?;
    Ok(Ok(Applied::Deployment(d)))
}

/// Rolls a failed deployment's job back to its stable version, when the failed version
/// asks for it and the job has not moved on since. Says what it did.
fn revert(
    p: &mut Pending<'_>,
    job: Job,
    failed: &Deployment,
    at: Timestamp,
) -> Result<Option<String>, StoreError> {
    let wants = version(p, job.id, failed.version)?
        .is_some_and(|s| s.groups.iter().any(|g| g.update.auto_revert));
    if !wants || job.version != failed.version {
        return Ok(None);
    }
    let Some(stable) = job.stable_version.filter(|s| *s != failed.version) else {
        return Ok(Some("no stable version to revert to".into()));
    };
    let Some(mut spec) = version(p, job.id, stable)? else {
        return Ok(Some(format!("version {stable} is not kept: not reverted")));
    };
    for g in &mut spec.groups {
        if let Some(now) = job.spec.groups.iter().find(|n| n.name == g.name) {
            g.count = now.count;
        }
    }
    let (job, started) = new_version(p, job, spec, Some(failed.id), at)?;
    Ok(Some(match started {
        Some(d) => format!(
            "reverted to version {stable} as version {} ({})",
            job.version, d.id
        ),
        None => format!("reverted to version {stable} as version {}", job.version),
    }))
}

/// `Command::PromoteDeployment`: its canaries' version rolls out to every instance.
pub(crate) fn promote(
    p: &mut Pending<'_>,
    id: DeploymentId,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(mut d) = deployment(p, id)? else {
        return Ok(Err(ApplyError::not_found("deployment", id)));
    };
    if !d.status.is_active() {
        return Ok(Err(ApplyError::Refused(format!(
            "deployment {id} has ended already ({})",
            d.status
        ))));
    }
    if d.promoted {
        return Ok(Err(ApplyError::Refused(format!(
            "deployment {id} has no canaries waiting for promotion"
        ))));
    }
    d.promoted = true;
    d.description = "promoted; rolling out".into();
    d.modified_at = at;
    put_deployment(p, &d)?;
    crate::allocs::create_eval(p, d.job, EvalTrigger::Deployment, at)?;
    Ok(Ok(Applied::Deployment(d)))
}

/// An allocation's node reported new health (from `AllocStatus`): while its deployment
/// runs, the scheduler looks at the job again (the next instance may move), and one that
/// turns healthy is progress, so the progress deadline moves on.
pub(crate) fn health_changed(
    p: &mut Pending<'_>,
    a: &Allocation,
    before: &AllocHealth,
    at: Timestamp,
) -> Result<(), StoreError> {
    let Some(id) = a.deployment else {
        return Ok(());
    };
    if a.health.status == before.status {
        return Ok(());
    }
    let Some(mut d) = deployment(p, id)?.filter(|d| d.status.is_active()) else {
        return Ok(());
    };
    crate::allocs::create_eval(p, a.job, EvalTrigger::Deployment, at)?;
    if a.health.status != HealthStatus::Healthy {
        return Ok(());
    }
    let span = version(p, d.job, d.version)?
        .as_ref()
        .and_then(|s| s.groups.iter().find(|g| g.name == a.group))
        .map_or(0, |g| g.update.progress_deadline.0.as_millis() as u64);
    d.progress_deadline = Timestamp(at.0.saturating_add(span)).max(d.progress_deadline);
    d.modified_at = at;
    put_deployment(p, &d)
}
