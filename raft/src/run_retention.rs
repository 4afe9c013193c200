//! Apply's rules for runs that end without a node (`RunRefused`) and for dropping old
//! runs (retention). Which runs to drop is decided by the leader's loop from the jobs'
//! retention; apply only re-checks that each listed run has finished.

use windflow_protocol::{Run, RunId, RunRetention, RunStatus, Timestamp};

use crate::StoreError;
use crate::command::{Applied, ApplyError, Response};
use crate::state::{Pending, key};

/// A pending run that cannot start fails with `error`; a pipeline it is a step of moves on.
pub(crate) fn refuse(
    p: &mut Pending<'_>,
    id: RunId,
    error: String,
    at: Timestamp,
) -> Result<Response, StoreError> {
    let Some(mut run) = p.get_as::<Run>(&key::id(key::RUN, id.0), "run")? else {
        return Ok(Err(ApplyError::not_found("run", id)));
    };
    if run.status != RunStatus::Pending {
        return Ok(Err(ApplyError::InvalidTransition {
            run: id,
            from: run.status.as_str().into(),
            to: "failed".into(),
        }));
    }
    run.status = RunStatus::Failed;
    run.finished_at = Some(at);
    run.error = Some(windflow_protocol::run::capped_text(error.as_bytes(), 4096).0);
    p.put_run(&run, Some(RunStatus::Pending))?;
    crate::pipelines::run_ended(p, &run, at)?;
    Ok(Ok(Applied::Run(run)))
}

/// Drops the listed runs that have finished, with their index entries. The per-status
/// counts stay: they count runs that ended (`windflow_runs` is a counter), not runs kept.
pub(crate) fn prune(p: &mut Pending<'_>, runs: Vec<RunId>) -> Result<Response, StoreError> {
    let mut dropped = 0;
    for id in runs {
        let run_key = key::id(key::RUN, id.0);
        let Some(run) = p.get_as::<Run>(&run_key, "run")? else {
            continue;
        };
        if !run.status.is_finished() {
            continue;
        }
        p.del(run_key);
        p.del(key::pair(
            key::RUN_BY_STATUS,
            key::status(run.status).into(),
            id.0,
        ));
        p.del(key::pair(key::RUN_BY_JOB, run.job.0, id.0));
        dropped += 1;
    }
    Ok(Ok(Applied::Pruned(dropped)))
}

pub(crate) fn set_default(
    p: &mut Pending<'_>,
    retention: RunRetention,
) -> Result<Response, StoreError> {
    p.put_as(key::RUN_RETENTION.to_vec(), &retention)?;
    Ok(Ok(Applied::RunRetention(retention)))
}
