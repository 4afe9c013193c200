//! The leader's audit retention loop: drops audit entries older than the retention, once
//! on gaining leadership and then every interval, backing off on errors.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windflow_protocol::Timestamp;
use windflow_raft::{Applied, Command, RaftNode};

/// Prunes the audit log while this server leads.
pub struct AuditRetention {
    raft: RaftNode,
    retention: Duration,
}

impl AuditRetention {
    pub fn new(raft: RaftNode, retention: Duration) -> Self {
        AuditRetention { raft, retention }
    }

    /// A tenth of the retention, between a second and an hour: an entry outlives the
    /// retention by at most that.
    fn interval(&self) -> Duration {
        (self.retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut wait = Duration::ZERO;
        let mut backoff = Duration::from_secs(1);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let now = Timestamp::now();
            let before = Timestamp(now.0.saturating_sub(self.retention.as_millis() as u64));
            match self.raft.write(Command::PruneAudit { before }).await {
                Ok(Applied::Pruned(n)) => {
                    if n > 0 {
                        tracing::info!(pruned = n, %before, "audit entries past retention dropped");
                    }
                    wait = self.interval();
                    backoff = Duration::from_secs(1);
                }
                Ok(other) => {
                    tracing::error!(?other, "pruning the audit log got an unexpected answer");
                    wait = self.interval();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the audit log failed; retrying");
                    wait = backoff;
                    backoff = (backoff * 2).min(self.interval());
                }
            }
        }
    }
}
