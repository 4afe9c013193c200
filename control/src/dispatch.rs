//! The leader's dispatcher: sends pending runs to connected agents that can run them,
//! on nodes that take new work (ready, eligible, not draining, not revoked): runs already
//! running on a node that goes down or drains are left to finish.
//!
//! A run is first marked dispatched through raft (so only one leader ever places it), then
//! sent to the agent. If the send is lost, the agent gets it again when its session resumes.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windflow_protocol::messages::{RunTask, ServerMessage};
use windflow_protocol::{NodeId, RunStatus, Timestamp};
use windflow_raft::{ApplyError, Command, RaftNode, StoreError, WriteError};

use crate::gateway::Sessions;
use crate::secrets::Secrets;

/// Re-check pending runs at least this often, even without a change to wake us.
const IDLE_RECHECK: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

pub struct Dispatcher {
    raft: RaftNode,
    sessions: Sessions,
    /// Opens the task's secret env for its agent.
    secrets: std::sync::Arc<Secrets>,
}

impl Dispatcher {
    pub fn new(raft: RaftNode, sessions: Sessions, secrets: std::sync::Arc<Secrets>) -> Self {
        Dispatcher {
            raft,
            sessions,
            secrets,
        }
    }

    /// Dispatches until `stop`: after each change to the store or to the connected agents,
    /// backing off (capped) while dispatch fails.
    pub async fn run(self, stop: CancellationToken) {
        let mut applied = self.raft.reader().subscribe();
        let mut agents = self.sessions.subscribe();
        let mut backoff = Duration::from_millis(100);
        loop {
            let wait = match self.dispatch_pending().await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    IDLE_RECHECK
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "dispatch failed");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    backoff
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = applied.changed() => {}
                _ = agents.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass over the pending runs, oldest first.
    #[tracing::instrument(skip(self))]
    pub async fn dispatch_pending(&self) -> Result<(), DispatchError> {
        let reader = self.raft.reader();
        let pending = reader.runs_with_status(RunStatus::Pending)?;
        if pending.is_empty() {
            return Ok(());
        }
        let mut load: HashMap<NodeId, usize> = HashMap::new();
        for run in reader.runs_with_status(RunStatus::Running)? {
            if let Some(node) = run.node {
                *load.entry(node).or_default() += 1;
            }
        }
        // Nodes that may take new runs now.
        let open: std::collections::HashSet<NodeId> = reader
            .nodes()?
            .iter()
            .filter(|n| crate::scheduler::feasible::unschedulable(n).is_none())
            .map(|n| n.id)
            .collect();
        for run in pending {
            let Some(job) = reader.job(run.job)? else {
                continue;
            };
            let Some(task) = job.spec.tasks().next().cloned() else {
                continue;
            };
            let driver = task.driver.kind();
            // No agent can take it now; a joining agent wakes us.
            let Some(node) = pick(&self.sessions.offering(driver), &open, &load) else {
                continue;
            };
            // Opened before the run is placed: a run whose secrets cannot be opened here
            // (this server lacks a key) stays pending rather than running without them.
            let task = match self.secrets.reveal(&task).await {
                Ok(task) => task,
                Err(e) => {
                    tracing::error!(run = %run.id, job = %job.id, error = %e, "cannot open the task's secret env; the run stays pending");
                    continue;
                }
            };
            match self
                .raft
                .write(Command::RunDispatched {
                    run: run.id,
                    node,
                    at: Timestamp::now(),
                })
                .await
            {
                Ok(_) => {}
                // Already placed (an earlier leader, or a run finished meanwhile).
                Err(WriteError::Rejected(
                    ApplyError::InvalidTransition { .. } | ApplyError::NotFound { .. },
                )) => continue,
                Err(e) => return Err(e.into()),
            }
            *load.entry(node).or_default() += 1;
            tracing::info!(run = %run.id, job = %job.id, %node, "dispatched");
            let sent = self
                .sessions
                .send(
                    node,
                    ServerMessage::RunTask(RunTask {
                        run: run.id,
                        job: job.id,
                        task,
                    }),
                )
                .await;
            if !sent {
                tracing::warn!(run = %run.id, %node, "agent left before the run reached it; it gets the run when it reconnects");
            }
        }
        Ok(())
    }
}

/// The least loaded of the connected `nodes` that is `open` to new work.
fn pick(
    nodes: &[NodeId],
    open: &std::collections::HashSet<NodeId>,
    load: &HashMap<NodeId, usize>,
) -> Option<NodeId> {
    nodes
        .iter()
        .filter(|n| open.contains(n))
        .min_by_key(|n| (load.get(n).copied().unwrap_or(0), **n))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_go_to_the_least_loaded_open_node_only() {
        let connected = [NodeId(1), NodeId(2), NodeId(3)];
        let open = std::collections::HashSet::from([NodeId(2), NodeId(3)]);
        let load = HashMap::from([(NodeId(2), 4), (NodeId(3), 1)]);
        assert_eq!(pick(&connected, &open, &load), Some(NodeId(3)));
        // Node 1 (down, draining or ineligible) is idle but closed.
        let only_one = std::collections::HashSet::from([NodeId(2)]);
        assert_eq!(pick(&connected, &only_one, &load), Some(NodeId(2)));
        assert_eq!(pick(&connected, &Default::default(), &load), None);
    }
}
