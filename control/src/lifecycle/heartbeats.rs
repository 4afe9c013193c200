//! Every server, every heartbeat interval, proposes one `NodeHeartbeats` listing the agents
//! it heard since it last reported, with when: the cluster learns who is alive from one
//! entry per server per interval instead of one per node per heartbeat.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windflow_protocol::{NodeId, Timestamp};
use windflow_raft::{Command, RaftNode};

use super::Liveness;
use crate::gateway::Sessions;

/// Reports this server's agent sessions to raft; runs on every server, leader or not.
pub struct HeartbeatReporter {
    raft: RaftNode,
    sessions: Sessions,
    liveness: Liveness,
    /// What was last reported per node: only newer news is proposed again.
    reported: HashMap<NodeId, Timestamp>,
}

impl HeartbeatReporter {
    pub fn new(raft: RaftNode, sessions: Sessions, liveness: Liveness) -> Self {
        HeartbeatReporter {
            raft,
            sessions,
            liveness,
            reported: HashMap::new(),
        }
    }

    /// Reports every interval. A failed or slow report is not backed off: a report late
    /// by more than the grace period would take live nodes down, so each one gets at most
    /// an interval, and the next tick reports again (apply keeps the newest time, so a
    /// report that commits after all changes nothing).
    pub async fn run(mut self, stop: CancellationToken) {
        let tick = self.liveness.interval.max(Duration::from_millis(100));
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match tokio::time::timeout(tick, self.report()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "reporting heartbeats failed; retrying"),
                Err(_) => tracing::warn!(
                    "reporting heartbeats took longer than the interval (no raft leader?); retrying"
                ),
            }
        }
    }

    /// One report: the agents heard within the grace period whose time moved.
    #[tracing::instrument(skip(self))]
    async fn report(&mut self) -> Result<(), windflow_raft::WriteError> {
        let now = Timestamp::now();
        let since = Timestamp(now.0.saturating_sub(self.liveness.grace.as_millis() as u64));
        let fresh: Vec<(NodeId, Timestamp)> = self
            .sessions
            .heard_since(since)
            .into_iter()
            .filter(|(node, at)| self.reported.get(node).is_none_or(|r| at > r))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        self.raft
            .write(Command::NodeHeartbeats {
                nodes: fresh.clone(),
                at: now,
            })
            .await?;
        tracing::debug!(nodes = fresh.len(), "heartbeats reported");
        self.reported.retain(|_, at| *at >= since);
        self.reported.extend(fresh);
        Ok(())
    }
}
