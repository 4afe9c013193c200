//! The leader's liveness check: a ready node not heard from for the grace period is
//! marked down (its live allocations lost, their jobs evaluated) with one `NodesDown`.
//!
//! A new leader first waits out one full grace period: reports that were in flight while
//! leadership moved land by then, so a failover never takes every node down at once.
//! Heard times are stamped by the server that heard the agent; server clocks are assumed
//! to agree to well within the grace period.

use std::time::Instant;

use tokio_util::sync::CancellationToken;
use windflow_protocol::{NodeId, NodeStatus, Timestamp};
use windflow_raft::{Applied, Command, RaftNode};

use super::{Liveness, next_wait};

/// Marks silent nodes down while this server leads.
pub struct NodeMonitor {
    raft: RaftNode,
    liveness: Liveness,
}

impl NodeMonitor {
    pub fn new(raft: RaftNode, liveness: Liveness) -> Self {
        NodeMonitor { raft, liveness }
    }

    pub async fn run(self, stop: CancellationToken) {
        let leading_since = Instant::now();
        let tick = self.liveness.tick();
        let mut backoff = tick;
        let mut wait = tick;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            // Every node gets a fresh grace period from this leader.
            if leading_since.elapsed() < self.liveness.grace {
                continue;
            }
            let ok = match self.check().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "checking node liveness failed; retrying");
                    false
                }
            };
            wait = next_wait(ok, tick, &mut backoff);
        }
    }

    #[tracing::instrument(skip(self))]
    async fn check(&self) -> Result<(), crate::dispatch::DispatchError> {
        let now = Timestamp::now();
        let cutoff = Timestamp(now.0.saturating_sub(self.liveness.grace.as_millis() as u64));
        let silent = silent_nodes(self.raft.reader(), cutoff)?;
        if silent.is_empty() {
            return Ok(());
        }
        let applied = self
            .raft
            .write(Command::NodesDown {
                nodes: silent,
                cutoff,
                at: now,
            })
            .await?;
        if let Applied::Nodes(down) = applied {
            for n in down {
                tracing::warn!(node = %n.id, name = %n.name, %cutoff, "node down: not heard from within the grace period");
            }
        }
        Ok(())
    }
}

/// The ready nodes last heard at `cutoff` or before (or never).
pub fn silent_nodes(
    reader: &windflow_raft::StateReader,
    cutoff: Timestamp,
) -> Result<Vec<NodeId>, windflow_raft::StoreError> {
    let heard: std::collections::HashMap<NodeId, Option<Timestamp>> = reader
        .node_liveness()?
        .into_iter()
        .map(|(n, l)| (n, l.last_heard))
        .collect();
    Ok(reader
        .nodes()?
        .into_iter()
        .filter(|n| n.status == NodeStatus::Ready)
        .filter(|n| {
            heard
                .get(&n.id)
                .copied()
                .flatten()
                .is_none_or(|h| h <= cutoff)
        })
        .map(|n| n.id)
        .collect())
}
