//! The leader's timer for pipeline runs asked for a later time (`pipeline run --at`):
//! when the soonest one is due it proposes `StartPipelineRun`, which starts a run only
//! while it is still scheduled, so a fire repeated by a new leader starts nothing twice.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windflow_protocol::Timestamp;
use windflow_raft::{Command, RaftNode};

/// Look again at least this often, even without a change to wake us.
const IDLE_RECHECK: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Runs started per pass; more wait for the next one, at once.
const BATCH: usize = 64;

pub struct PipelineTimer {
    raft: RaftNode,
}

impl PipelineTimer {
    pub fn new(raft: RaftNode) -> Self {
        PipelineTimer { raft }
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut applied = self.raft.reader().subscribe();
        let mut backoff = Duration::from_millis(100);
        loop {
            let wait = match self.fire_due().await {
                Ok(wait) => {
                    backoff = Duration::from_millis(100);
                    wait
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "starting scheduled pipeline runs failed");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    backoff
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = applied.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Starts the runs that are due; answers how long until the next one.
    #[tracing::instrument(skip(self))]
    async fn fire_due(&self) -> anyhow::Result<Duration> {
        let scheduled = self.raft.reader().scheduled_pipeline_runs(BATCH)?;
        let now = Timestamp::now();
        for (at, run) in &scheduled {
            if *at > now {
                return Ok(Duration::from_millis(at.0 - now.0).min(IDLE_RECHECK));
            }
            self.raft
                .write(Command::StartPipelineRun {
                    run: *run,
                    at: Timestamp::now(),
                })
                .await?;
            tracing::info!(%run, due = %at, "scheduled pipeline run started");
        }
        Ok(if scheduled.len() == BATCH {
            Duration::ZERO
        } else {
            IDLE_RECHECK
        })
    }
}
