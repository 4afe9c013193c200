//! The leader's scheduling loop: takes pending evaluations in order, plans each one and
//! proposes the plans; when `apply` rejects placements (the view they were planned from
//! was stale), the evaluation is planned again from the new state. An evaluation that
//! leaves instances unplaced is `blocked` with the reasons, and is looked at again when the
//! nodes change; one whose replacements are not due yet (reschedule delay) waits in the
//! queue with `wait_until`, and the loop wakes for it then; one whose instances may not be
//! rescheduled any more ends `failed`, saying why.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use windflow_protocol::{EvalStatus, Resources, Timestamp};

use super::feasible::unschedulable;
use windflow_raft::{Applied, Command, RaftNode, WriteError};

use super::plan::{ClusterView, plan_job};

/// How many plans are proposed at once.
const PLANS_IN_FLIGHT: usize = 64;
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
    /// Those that may take new work (ready, eligible, not draining or revoked).
    schedulable: usize,
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
            // After an error: back off. Otherwise: the next change, or the first waiting
            // evaluation's due time.
            let (retry, due) = match round.await {
                Ok(due) => {
                    backoff = Duration::from_millis(100);
                    (None, due)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduling round failed; retrying");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    (Some(backoff), None)
                }
            };
            let until_due = due.map(|t| t.saturating_since(Timestamp::now()));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(retry.unwrap_or(Duration::MAX)), if retry.is_some() => {}
                _ = tokio::time::sleep(until_due.unwrap_or(Duration::MAX)), if until_due.is_some() => {}
                changed = applied.changed(), if retry.is_none() => if changed.is_err() { return },
            }
        }
    }

    /// Plans pending evaluations from one view of the cluster, to which each plan's
    /// placements are added as they are chosen (thousands of nodes are read once per round,
    /// not once per evaluation), and proposes up to [`PLANS_IN_FLIGHT`] plans at once so
    /// raft can batch them into shared entries. A plan `apply` rejected part of was made
    /// from a stale view: its evaluation stays pending and is planned again, from a fresh
    /// view, in the next round. Evaluations waiting for a later time are left alone, and
    /// only one evaluation per job is planned in a round (the others see its result in
    /// the next). Answers when the first waiting evaluation is due.
    #[tracing::instrument(skip_all)]
    async fn evaluate_pending(
        &self,
        cached: &mut Option<ClusterView>,
    ) -> Result<Option<Timestamp>, ScheduleError> {
        let reader = self.raft.reader();
        let now = Timestamp::now();
        let mut due: Option<Timestamp> = None;
        let mut jobs = std::collections::HashSet::new();
        let mut pending = reader.pending_evaluations()?;
        pending.retain(|e| match e.wait_until {
            Some(t) if t > now => {
                due = Some(due.map_or(t, |d| d.min(t)));
                false
            }
            _ => jobs.insert(e.job),
        });
        for chunk in pending.chunks(PLANS_IN_FLIGHT) {
            let view = match cached {
                Some(v) => v,
                None => cached.insert(ClusterView::read(reader)?),
            };
            let mut planned = Vec::with_capacity(chunk.len());
            for eval in chunk {
                let job = reader.job(eval.job)?;
                let existing = reader.allocations_of_job(eval.job)?;
                let rollout = reader
                    .latest_deployment(eval.job)?
                    .filter(|d| d.status.is_active());
                let outcome = plan_job(
                    eval.job,
                    job.as_ref(),
                    rollout.as_ref(),
                    &existing,
                    view,
                    eval.id,
                    Timestamp::now(),
                );
                planned.push((eval, outcome));
            }
            let mut writes = JoinSet::new();
            for (i, (_, outcome)) in planned.iter().enumerate() {
                if !outcome.is_empty() {
                    let (raft, plan) = (self.raft.clone(), outcome.plan.clone());
                    writes.spawn(async move { (i, raft.write(Command::SubmitPlan(plan)).await) });
                }
            }
            let mut rejected = vec![false; planned.len()];
            while let Some(done) = writes.join_next().await {
                let (i, written) = done.map_err(|e| ScheduleError::Unexpected(e.to_string()))?;
                let result = match written? {
                    Applied::Plan(r) => r,
                    other => return Err(ScheduleError::Unexpected(format!("{other:?}"))),
                };
                let (eval, outcome) = &planned[i];
                tracing::info!(
                    eval = %eval.id,
                    job = %eval.job,
                    placed = result.placed.len(),
                    rejected = result.rejected.len(),
                    stopped = outcome.plan.stop.len(),
                    "plan applied"
                );
                rejected[i] = !result.rejected.is_empty();
            }
            if rejected.contains(&true) {
                *cached = None;
            }
            let mut updates = JoinSet::new();
            for ((eval, outcome), rejected) in planned.into_iter().zip(rejected) {
                if rejected {
                    continue;
                }
                let update = settle(eval.id, outcome);
                if let Command::WaitEvaluation { until, .. } = &update {
                    due = Some(due.map_or(*until, |d| d.min(*until)));
                }
                let raft = self.raft.clone();
                updates.spawn(async move { raft.write(update).await });
            }
            while let Some(done) = updates.join_next().await {
                done.map_err(|e| ScheduleError::Unexpected(e.to_string()))??;
            }
        }
        Ok(due)
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
            schedulable: nodes.iter().filter(|n| unschedulable(n).is_none()).count(),
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

/// What an evaluation becomes once its plan is applied: waiting for its first due
/// replacement, blocked on what fits nowhere, failed for what may not be rescheduled, or
/// complete. Every reason is kept, for `windflow job show`.
fn settle(eval: windflow_protocol::EvalId, o: super::plan::Outcome) -> Command {
    let at = Timestamp::now();
    let mut reasons = o.unplaced.clone();
    reasons.extend(o.waiting);
    reasons.extend(o.failed.iter().cloned());
    if let Some(until) = o.wait_until {
        tracing::info!(%eval, %until, reasons = ?reasons, "evaluation waits for a reschedule delay");
        return Command::WaitEvaluation {
            eval,
            until,
            unplaced: reasons,
            at,
        };
    }
    let status = if !o.unplaced.is_empty() {
        tracing::info!(%eval, reasons = ?reasons, "evaluation blocked");
        EvalStatus::Blocked
    } else if !o.failed.is_empty() {
        tracing::info!(%eval, reasons = ?reasons, "evaluation failed: reschedule limit");
        EvalStatus::Failed
    } else {
        EvalStatus::Complete
    };
    Command::UpdateEvaluation {
        eval,
        status,
        unplaced: reasons,
        at,
    }
}
