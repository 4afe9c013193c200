//! The leader's scheduling loop: takes pending evaluations in order, plans each one and
//! proposes the plan; when `apply` rejects placements (another plan took the room), plans
//! again from the new state. An evaluation that leaves instances unplaced is `blocked`
//! with the reasons, and is looked at again when the nodes change.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windflow_protocol::{EvalStatus, Evaluation, Resources, Timestamp};
use windflow_raft::{Applied, Command, RaftNode, WriteError};

use super::plan::{ClusterView, plan_job};

/// How many times an evaluation is planned again after `apply` rejected placements.
const MAX_ATTEMPTS: usize = 5;
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a failed evaluation round left behind.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("reading the state: {0}")]
    Read(#[from] windflow_raft::StoreError),
    #[error("proposing: {0}")]
    Write(#[from] WriteError),
    #[error("the store answered {0}")]
    Unexpected(String),
}

/// Places and stops allocations while this server leads.
pub struct Scheduler {
    raft: RaftNode,
}

/// What the nodes offer, in total: when it changes, blocked evaluations are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct NodesSignature {
    nodes: usize,
    capacity: Resources,
}

impl Scheduler {
    pub fn new(raft: RaftNode) -> Self {
        Scheduler { raft }
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut applied = self.raft.reader().subscribe();
        let mut nodes = NodesSignature::default();
        let mut backoff = Duration::from_millis(100);
        loop {
            let round = async {
                let mut view = None;
                self.unblock_if_nodes_changed(&mut nodes, &mut view).await?;
                self.evaluate_pending(&mut view).await
            };
            let wait = match round.await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduling round failed; retrying");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    Some(backoff)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait.unwrap_or(Duration::MAX)), if wait.is_some() => {}
                changed = applied.changed(), if wait.is_none() => if changed.is_err() { return },
            }
        }
    }

    /// Plans every pending evaluation, from one view of the cluster that each plan's
    /// placements are added to as they are chosen: reading thousands of nodes once per
    /// round, not once per evaluation. A rejection means the view was stale: it is read
    /// again.
    async fn evaluate_pending(&self, view: &mut Option<ClusterView>) -> Result<(), ScheduleError> {
        for eval in self.raft.reader().pending_evaluations()? {
            self.evaluate(eval, view).await?;
        }
        Ok(())
    }

    /// Plans one evaluation to its end: complete, or blocked with the reasons.
    #[tracing::instrument(skip_all, fields(eval = %eval.id, job = %eval.job))]
    async fn evaluate(
        &self,
        eval: Evaluation,
        cached: &mut Option<ClusterView>,
    ) -> Result<(), ScheduleError> {
        let reader = self.raft.reader();
        let mut unplaced = Vec::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let job = reader.job(eval.job)?;
            let existing = reader.allocations_of_job(eval.job)?;
            let view = match cached {
                Some(v) => v,
                None => cached.insert(ClusterView::read(reader)?),
            };
            let outcome = plan_job(
                eval.job,
                job.as_ref(),
                &existing,
                view,
                eval.id,
                Timestamp::now(),
            );
            unplaced = outcome.unplaced.clone();
            if outcome.is_empty() {
                break;
            }
            let (places, stops) = (outcome.plan.place.len(), outcome.plan.stop.len());
            let result = match self.raft.write(Command::SubmitPlan(outcome.plan)).await? {
                Applied::Plan(r) => r,
                other => return Err(ScheduleError::Unexpected(format!("{other:?}"))),
            };
            tracing::info!(
                attempt,
                placed = result.placed.len(),
                rejected = result.rejected.len(),
                stopped = stops,
                of = places,
                "plan applied"
            );
            if result.rejected.is_empty() {
                break;
            }
            *cached = None;
        }
        let status = if unplaced.is_empty() {
            EvalStatus::Complete
        } else {
            tracing::info!(reasons = ?unplaced, "evaluation blocked");
            EvalStatus::Blocked
        };
        self.raft
            .write(Command::UpdateEvaluation {
                eval: eval.id,
                status,
                unplaced,
                at: Timestamp::now(),
            })
            .await?;
        Ok(())
    }

    /// Puts blocked evaluations back in the queue when a node came, went or changed size.
    async fn unblock_if_nodes_changed(
        &self,
        last: &mut NodesSignature,
        view: &mut Option<ClusterView>,
    ) -> Result<(), ScheduleError> {
        let reader = self.raft.reader();
        let nodes = match view {
            Some(v) => v,
            None => view.insert(ClusterView::read(reader)?),
        }
        .nodes();
        let now = NodesSignature {
            nodes: nodes.len(),
            capacity: nodes.iter().fold(Resources::default(), |sum, n| {
                sum.saturating_add(n.resources)
            }),
        };
        if now == *last {
            return Ok(());
        }
        *last = now;
        for eval in reader.evaluations()? {
            if eval.status == EvalStatus::Blocked {
                self.raft
                    .write(Command::UpdateEvaluation {
                        eval: eval.id,
                        status: EvalStatus::Pending,
                        unplaced: eval.unplaced,
                        at: Timestamp::now(),
                    })
                    .await?;
            }
        }
        Ok(())
    }
}
