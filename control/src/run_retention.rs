//! The leader's run retention loop: each job's finished runs past its retention (the job's
//! own, else the cluster's) are dropped through raft (`PruneRuns`). It looks every
//! [`INTERVAL`] if runs finished since its last pass, and every [`FULL_PASS`] anyway (for
//! runs that aged past `keep_for`), so an idle cluster of many jobs is not read over and
//! over.
//! Apply drops only runs that have finished, so a run listed here that is somehow not
//! finished stays.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windflow_protocol::{RunId, Timestamp};
use windflow_raft::{Command, RaftNode, StateReader, StoreError};

const INTERVAL: Duration = Duration::from_secs(5);
const FULL_PASS: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Runs dropped per entry.
const CHUNK: usize = 500;

pub struct RunRetentionLoop {
    raft: RaftNode,
}

/// Every finished run past its job's retention at `now`.
pub fn prunable(reader: &StateReader, now: Timestamp) -> Result<Vec<RunId>, StoreError> {
    let cluster = reader.run_retention()?;
    let mut out = Vec::new();
    for job in reader.jobs()? {
        let retention = job.spec.retention.unwrap_or(cluster);
        if retention.is_unlimited() {
            continue;
        }
        let runs = reader.runs_of_job(job.id)?;
        let finished: Vec<(usize, Timestamp)> = runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status.is_finished())
            .map(|(i, r)| (i, r.finished_at.unwrap_or(r.requested_at)))
            .collect();
        out.extend(
            retention
                .prune(&finished, now)
                .into_iter()
                .map(|i| runs[i].id),
        );
    }
    Ok(out)
}

/// How many finished runs the store holds (from the per-status counts: no scan).
fn finished_runs(reader: &StateReader) -> Result<u64, StoreError> {
    Ok(reader
        .run_counts()?
        .into_iter()
        .filter(|(s, _)| s.is_finished())
        .map(|(_, n)| n)
        .sum())
}

impl RunRetentionLoop {
    pub fn new(raft: RaftNode) -> Self {
        RunRetentionLoop { raft }
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut wait = Duration::ZERO;
        let mut backoff = Duration::from_secs(1);
        // What the last pass saw: finished runs so far, and when.
        let mut last: Option<(u64, std::time::Instant)> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let finished = match finished_runs(self.raft.reader()) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "counting runs failed; retrying");
                    wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            wait = INTERVAL;
            if last.is_some_and(|(n, at)| n == finished && at.elapsed() < FULL_PASS) {
                continue;
            }
            match self.prune_once().await {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(pruned = n, "runs past retention dropped");
                    }
                    // Counted again: the pruned runs are no longer there.
                    last = finished_runs(self.raft.reader())
                        .ok()
                        .map(|n| (n, std::time::Instant::now()));
                    backoff = Duration::from_secs(1);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning runs failed; retrying");
                    wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    #[tracing::instrument(skip(self))]
    async fn prune_once(&self) -> anyhow::Result<u64> {
        let runs = prunable(self.raft.reader(), Timestamp::now())?;
        let mut dropped = 0;
        for chunk in runs.chunks(CHUNK) {
            if let windflow_raft::Applied::Pruned(n) = self
                .raft
                .write(Command::PruneRuns {
                    runs: chunk.to_vec(),
                    at: Timestamp::now(),
                })
                .await?
            {
                dropped += n;
            }
        }
        Ok(dropped)
    }
}
