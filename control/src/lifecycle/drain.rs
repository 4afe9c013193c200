//! The leader's drain loop. A draining node's service allocations are moved by the
//! scheduler (a replacement elsewhere first; the old one stops once the replacement runs);
//! this loop asks for that evaluation when a replacement starts running, and ends the
//! drain: `complete` when no live allocation and no running batch run is left on the node,
//! or at the deadline, when what is left is told to stop.

use std::collections::HashSet;

use tokio_util::sync::CancellationToken;
use windflow_protocol::{ClientStatus, EvalTrigger, JobId, Node, RunStatus, Timestamp};
use windflow_raft::{ApplyError, Command, DrainEnd, RaftNode, WriteError};

use super::{Liveness, next_wait};
use crate::dispatch::DispatchError;

/// Ends drains while this server leads.
pub struct DrainWatcher {
    raft: RaftNode,
    liveness: Liveness,
}

impl DrainWatcher {
    pub fn new(raft: RaftNode, liveness: Liveness) -> Self {
        DrainWatcher { raft, liveness }
    }

    pub async fn run(self, stop: CancellationToken) {
        let tick = self.liveness.tick();
        let mut backoff = tick;
        let mut wait = tick;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let ok = match self.check().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "checking drains failed; retrying");
                    false
                }
            };
            wait = next_wait(ok, tick, &mut backoff);
        }
    }

    #[tracing::instrument(skip(self))]
    async fn check(&self) -> Result<(), DispatchError> {
        let reader = self.raft.reader();
        let draining: Vec<Node> = reader
            .nodes()?
            .into_iter()
            .filter(|n| n.drain.is_some())
            .collect();
        if draining.is_empty() {
            return Ok(());
        }
        let running = reader.runs_with_status(RunStatus::Running)?;
        let queued: HashSet<JobId> = reader
            .pending_evaluations()?
            .into_iter()
            .map(|e| e.job)
            .collect();
        let now = Timestamp::now();
        for node in draining {
            let deadline = node.drain.and_then(|d| d.deadline);
            let live: Vec<_> = reader
                .allocations_of_node(node.id)?
                .into_iter()
                .filter(|a| a.is_live())
                .collect();
            let runs = running.iter().filter(|r| r.node == Some(node.id)).count();
            let end = if deadline.is_some_and(|d| now >= d) {
                Some(DrainEnd::Deadline)
            } else if live.is_empty() && runs == 0 {
                Some(DrainEnd::Complete)
            } else {
                None
            };
            if let Some(end) = end {
                match self
                    .raft
                    .write(Command::FinishDrain {
                        node: node.id,
                        end,
                        at: now,
                    })
                    .await
                {
                    Ok(_) => tracing::info!(node = %node.id, ?end, "drain finished"),
                    // Something was placed meanwhile, or the drain was cancelled.
                    Err(WriteError::Rejected(ApplyError::Refused(why))) => {
                        tracing::debug!(node = %node.id, %why, "drain not finished yet");
                    }
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            // A replacement that runs now lets its old allocation stop: the scheduler
            // decides that, so its job is evaluated (once).
            let mut due = HashSet::new();
            for a in &live {
                if queued.contains(&a.job) || due.contains(&a.job) {
                    continue;
                }
                let replaced = reader.allocations_of_job(a.job)?.iter().any(|r| {
                    r.previous == Some(a.id) && r.is_live() && r.client == ClientStatus::Running
                });
                if replaced {
                    due.insert(a.job);
                }
            }
            for job in due {
                self.raft
                    .write(Command::CreateEvaluation {
                        job,
                        trigger: EvalTrigger::NodeDrain,
                        at: now,
                    })
                    .await?;
            }
        }
        Ok(())
    }
}
