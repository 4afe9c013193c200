//! The leader's deployment loop: ends running deployments. One fails when an allocation
//! it placed is unhealthy or failed, or when its progress deadline passes with no new
//! healthy allocation (apply then reverts the job when its update policy says so); one
//! succeeds when every instance of every group runs its version, healthy, and no older
//! one is left; one whose job is gone is cancelled.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windflow_protocol::{
    Allocation, ClientStatus, Deployment, DeploymentStatus, HealthStatus, Job, Timestamp,
};
use windflow_raft::{Command, DeploymentEnd, RaftNode, WriteError};

use super::worker::ScheduleError;

const TICK: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Ends deployments while this server leads.
pub struct DeploymentWatcher {
    raft: RaftNode,
}

impl DeploymentWatcher {
    pub fn new(raft: RaftNode) -> Self {
        DeploymentWatcher { raft }
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut wait = TICK;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = match self.check().await {
                Ok(()) => TICK,
                Err(e) => {
                    tracing::warn!(error = %e, "checking deployments failed; retrying");
                    (wait * 2).min(MAX_BACKOFF)
                }
            };
        }
    }

    #[tracing::instrument(skip(self))]
    async fn check(&self) -> Result<(), ScheduleError> {
        let reader = self.raft.reader();
        for d in reader
            .deployments()?
            .into_iter()
            .filter(|d| d.status == DeploymentStatus::Running)
        {
            let job = reader.job(d.job)?;
            let allocs = reader.allocations_of_job(d.job)?;
            let Some((outcome, reason)) = verdict(&d, job.as_ref(), &allocs, Timestamp::now())
            else {
                continue;
            };
            tracing::info!(deployment = %d.id, job = %d.job, ?outcome, %reason, "deployment ends");
            let cmd = Command::EndDeployment {
                deployment: d.id,
                outcome,
                reason,
                at: Timestamp::now(),
            };
            match self.raft.write(cmd).await {
                Ok(_) => {}
                // Ended meanwhile (by a person, or a newer version): nothing to do.
                Err(WriteError::Rejected(e)) => {
                    tracing::debug!(deployment = %d.id, error = %e, "deployment not ended")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Whether a running deployment ends now, how and why.
pub(super) fn verdict(
    d: &Deployment,
    job: Option<&Job>,
    allocs: &[Allocation],
    now: Timestamp,
) -> Option<(DeploymentEnd, String)> {
    let Some(job) = job else {
        return Some((DeploymentEnd::Cancelled, "its job was deleted".into()));
    };
    let placed = allocs.iter().filter(|a| a.deployment == Some(d.id));
    for a in placed {
        if a.client == ClientStatus::Failed {
            return Some((
                DeploymentEnd::Failed,
                format!("allocation {} of version {} failed", a.id, a.job_version),
            ));
        }
        if a.is_live() && a.health.status == HealthStatus::Unhealthy {
            return Some((
                DeploymentEnd::Failed,
                format!(
                    "allocation {} of version {} is unhealthy: {}",
                    a.id, a.job_version, a.health.message
                ),
            ));
        }
    }
    let done = d.promoted
        && job.spec.groups.iter().all(|g| {
            let live = || allocs.iter().filter(|a| a.group == g.name && a.is_live());
            let healthy_new = live()
                .filter(|a| a.job_version >= d.version && a.health.status == HealthStatus::Healthy)
                .count();
            healthy_new >= g.count as usize && live().all(|a| a.job_version >= d.version)
        });
    if done {
        return Some((
            DeploymentEnd::Successful,
            format!("every instance runs version {}, healthy", d.version),
        ));
    }
    if now > d.progress_deadline {
        return Some((
            DeploymentEnd::Failed,
            format!(
                "no allocation became healthy before its progress deadline ({})",
                d.progress_deadline
            ),
        ));
    }
    None
}
