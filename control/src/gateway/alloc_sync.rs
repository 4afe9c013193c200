//! A session's allocations: down, the node's allocation changes after the index the agent
//! named in its Hello, then after every change (woken by [`AllocFeed`]); up, what the agent
//! reports of them, checked and recorded through raft before it is acknowledged.
//!
//! Invariant: an agent gets exactly the allocation changes after the index it names, from
//! any server: the index is the store's (advanced by `apply`, identical everywhere), and a
//! batch's `index` only moves past changes it holds.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use windflow_protocol::messages::{AllocAssignment, AllocSync, AllocUpdate, ServerMessage};
use windflow_protocol::run::capped_text;
use windflow_protocol::{
    ALLOC_EVENTS_MAX, AllocEvent, AllocHealth, Allocation, ClientStatus, DesiredStatus, Job, JobId,
    JobSpec, NodeId, Timestamp,
};
use windflow_raft::{AllocReport, Command, WriteError};

use super::Gateway;
use super::alloc_feed::Subscription;

/// Allocations per `Allocations` frame, well under the frame limit with their tasks.
const ALLOCS_PER_FRAME: usize = 64;
/// After a failed read or a task whose secrets cannot be opened yet, the wait before trying
/// the same changes again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest event message kept from an agent.
const EVENT_MESSAGE_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Store(#[from] windflow_raft::StoreError),
    #[error("cannot open the secret env of job {job}: {error}")]
    Secrets { job: JobId, error: String },
    #[error("the session is gone")]
    Closed,
}

impl Gateway {
    /// Sends the node's allocation changes after `since` (always one batch, so the agent
    /// learns the index even when nothing changed), then each later change, until the
    /// session's queue closes.
    pub(super) async fn sync_allocs(
        &self,
        node: NodeId,
        since: u64,
        mut feed: Subscription,
        tx: mpsc::Sender<ServerMessage>,
    ) {
        let mut sent = since;
        let mut first = true;
        loop {
            match self.send_changes(node, sent, first, &tx).await {
                Ok(upto) => {
                    sent = upto;
                    first = false;
                }
                Err(SyncError::Closed) => return,
                Err(e) => {
                    tracing::warn!(%node, error = %e, "cannot send allocation changes; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                }
            }
            if feed.changed.wait_for(|i| *i > sent).await.is_err() {
                return;
            }
        }
    }

    /// One round: what changed after `since`, in frames whose last one carries the index.
    /// Returns the index the agent now has everything up to.
    async fn send_changes(
        &self,
        node: NodeId,
        since: u64,
        always: bool,
        tx: &mpsc::Sender<ServerMessage>,
    ) -> Result<u64, SyncError> {
        let reader = self.raft.reader();
        let (allocs, upto) = reader.allocations_of_node_since(node, since)?;
        // A server behind the agent (a lagging follower) keeps the agent's index.
        let upto = upto.max(since);
        if allocs.is_empty() && !always {
            return Ok(upto);
        }
        let mut jobs = HashMap::new();
        let mut assignments = Vec::with_capacity(allocs.len());
        for alloc in allocs {
            assignments.push(self.assignment(alloc, &mut jobs).await?);
        }
        let frames = assignments.len().div_ceil(ALLOCS_PER_FRAME).max(1);
        let mut chunks = assignments.chunks(ALLOCS_PER_FRAME);
        for n in 1..=frames {
            let allocs = chunks.next().map(<[_]>::to_vec).unwrap_or_default();
            // Only the last frame moves the agent's index: a link lost midway resends all.
            let index = if n == frames { upto } else { since };
            tracing::debug!(%node, index, allocs = allocs.len(), "sending allocations");
            tx.send(ServerMessage::Allocations(AllocSync { index, allocs }))
                .await
                .map_err(|_| SyncError::Closed)?;
        }
        Ok(upto)
    }

    /// An allocation as its node must run it: a running one with its group's tasks (secret
    /// env opened), restart policy, health checks and job type, all of the job version it
    /// records (a rolling update runs two versions side by side); a stopped one bare.
    async fn assignment(
        &self,
        alloc: Allocation,
        jobs: &mut HashMap<(JobId, u64), Option<JobSpec>>,
    ) -> Result<AllocAssignment, SyncError> {
        let key = (alloc.job, alloc.job_version);
        let spec = match jobs.get(&key) {
            Some(spec) => spec.clone(),
            None => {
                let spec = self.spec_of(&alloc)?;
                jobs.insert(key, spec.clone());
                spec
            }
        };
        let group = spec
            .as_ref()
            .and_then(|s| s.groups.iter().find(|g| g.name == alloc.group));
        let job_type = spec.as_ref().map(|s| s.job_type).unwrap_or_default();
        let restart = group.map(|g| g.restart).unwrap_or_default();
        let checks = group.map(|g| g.checks.clone()).unwrap_or_default();
        let update = group.map(|g| g.update).unwrap_or_default();
        let mut tasks = Vec::new();
        match (alloc.desired, group) {
            (DesiredStatus::Run, Some(group)) => {
                for task in &group.tasks {
                    let task = self
                        .secrets
                        .reveal(task)
                        .await
                        .map_err(|e| SyncError::Secrets {
                            job: alloc.job,
                            error: e.to_string(),
                        })?;
                    tasks.push(task);
                }
            }
            // The agent fails an allocation it has no tasks for, and says why.
            (DesiredStatus::Run, None) => {
                tracing::error!(alloc = %alloc.id, job = %alloc.job, group = %alloc.group, "a running allocation's job or group is gone");
            }
            (DesiredStatus::Stop, _) => {}
        }
        Ok(AllocAssignment {
            alloc,
            tasks,
            restart,
            job_type,
            checks,
            update,
        })
    }

    /// The spec of the version an allocation runs (the current one for allocations placed
    /// before versions were recorded).
    fn spec_of(&self, alloc: &Allocation) -> Result<Option<JobSpec>, SyncError> {
        let reader = self.raft.reader();
        if alloc.job_version > 0
            && let Some(spec) = reader.job_version(alloc.job, alloc.job_version)?
        {
            return Ok(Some(spec));
        }
        Ok(reader.job(alloc.job)?.map(|j: Job| j.spec))
    }

    /// Records what the agent says of one of its allocations. True when the agent may
    /// forget the update: recorded, or not one to record (another node's allocation, an
    /// unknown one, a status agents do not report); false when it must come again.
    pub(super) async fn record_alloc_update(&self, node: NodeId, u: AllocUpdate) -> bool {
        match self.raft.reader().allocation(u.alloc) {
            Ok(Some(a)) if a.node == node => {}
            Ok(_) => {
                tracing::warn!(%node, alloc = %u.alloc, "dropping an update for an allocation not placed on this node");
                return true;
            }
            Err(e) => {
                tracing::warn!(%node, alloc = %u.alloc, error = %e, "cannot read the allocation");
                return false;
            }
        }
        if u.client == ClientStatus::Lost {
            tracing::warn!(%node, alloc = %u.alloc, "dropping an update: only servers mark an allocation lost");
            return true;
        }
        let skip = u.events.len().saturating_sub(ALLOC_EVENTS_MAX);
        let events = u
            .events
            .into_iter()
            .skip(skip)
            .map(|e| AllocEvent {
                at: e.at,
                kind: e.kind,
                message: capped_text(e.message.as_bytes(), EVENT_MESSAGE_MAX).0,
            })
            .collect();
        let cmd = Command::AllocStatus(AllocReport {
            alloc: u.alloc,
            node,
            client: u.client,
            restarts: u.restarts,
            events,
            ports: capped_ports(u.ports),
            at: Timestamp::now(),
            health: AllocHealth {
                status: u.health.status,
                message: capped_text(u.health.message.as_bytes(), EVENT_MESSAGE_MAX).0,
            },
        });
        match self.raft.write(cmd).await {
            Ok(_) => true,
            Err(WriteError::Rejected(e)) => {
                tracing::warn!(%node, alloc = %u.alloc, error = %e, "allocation update rejected by the store");
                true
            }
            Err(e) => {
                tracing::warn!(%node, alloc = %u.alloc, error = %e, "cannot record the allocation update yet");
                false
            }
        }
    }
}

/// An agent's reported ports, bounded: at most [`ALLOC_PORTS_MAX`], names cut to 128 bytes.
fn capped_ports(mut ports: Vec<windflow_protocol::AllocPort>) -> Vec<windflow_protocol::AllocPort> {
    const NAME_MAX: usize = 128;
    ports.truncate(windflow_protocol::ALLOC_PORTS_MAX);
    for p in &mut ports {
        for text in [&mut p.task, &mut p.label, &mut p.host_ip] {
            if text.len() > NAME_MAX {
                *text = capped_text(text.as_bytes(), NAME_MAX).0;
            }
        }
    }
    ports
}
