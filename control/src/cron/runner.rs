//! The leader's cron loop: reads the schedules when their definitions change, asks the
//! [`Planner`] what is due at the clock's time, proposes one `FireSchedulePlaced` per fire
//! (each schedule's in order; different schedules concurrently, so they share raft
//! entries), and sleeps until the next due time or the next change.
//!
//! With a [`Dispatcher`], a fire's job runs are placed before the fire is proposed, as the
//! dispatcher would place them, and are created running on their nodes in the fire's own
//! entry: a thousand schedules due at once take one round of commits, not a round of
//! fires and then a round of dispatch marks. Once the fire is committed their tasks go to
//! the agents. What cannot be placed then (no agent, a failing reference) is created
//! pending and left to the dispatcher, which places it or refuses it saying why.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use windflow_protocol::messages::RunTask;
use windflow_protocol::{
    JobId, JobType, NodeId, Schedule, ScheduleFire, ScheduleId, ScheduleTarget, TaskSpec, Timestamp,
};
use windflow_raft::{Applied, ApplyError, Command, RaftNode, WriteError};

use super::clock::Clock;
use super::plan::{PlannedFire, Planner};
use crate::dispatch::{Choice, Dispatcher, View};

/// The longest sleep without a due time or a change.
const IDLE_WAIT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long before a due time the loop wakes to prepare its fires, so that at the due
/// instant only the proposals are left: a thousand schedules due at once are planned and
/// their runs placed (references resolved, secrets opened) from the state of at most this
/// long before, and all proposed on the dot.
const PREPARE_AHEAD: Duration = Duration::from_millis(50);

/// What became of one schedule's fires in a pass.
enum Outcome {
    /// These due times were recorded (fired, or skipped for overlap).
    Recorded(Vec<Timestamp>),
    /// Apply refused one (another leader recorded it, or the schedule changed): read the
    /// schedule again. The due times before it were recorded.
    Stale(Vec<Timestamp>),
    /// Raft could not take it; try again after a backoff.
    Failed(Vec<Timestamp>, WriteError),
}

pub struct CronLoop<C: Clock> {
    raft: RaftNode,
    clock: Arc<C>,
    planner: Planner,
    /// Places the fires' job runs; without it they are created pending.
    dispatcher: Option<Dispatcher>,
}

impl<C: Clock> CronLoop<C> {
    pub fn new(raft: RaftNode, clock: Arc<C>) -> Self {
        CronLoop {
            raft,
            clock,
            planner: Planner::default(),
            dispatcher: None,
        }
    }

    /// Places each fire's job runs with `dispatcher` (see the module's doc).
    pub fn placing_with(mut self, dispatcher: Dispatcher) -> Self {
        self.dispatcher = Some(dispatcher);
        self
    }

    pub async fn run(mut self, stop: CancellationToken) {
        let reader = self.raft.reader().clone();
        let mut applied = reader.subscribe();
        let mut version = None;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut failed = false;
            match reader.schedules_version() {
                Ok(v) if Some(v) != version => match reader.schedules() {
                    Ok(all) => {
                        for (id, e) in self.planner.load(all) {
                            tracing::error!(schedule = %id, error = %e, "schedule not fired: its expression does not parse");
                        }
                        version = Some(v);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading schedules failed");
                        failed = true;
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading the schedules' version failed");
                    failed = true;
                }
            }
            if !failed {
                let now = self.clock.now();
                let due_at = match self.planner.next_wake() {
                    Some(next) if next.saturating_since(now) <= PREPARE_AHEAD => next.max(now),
                    _ => now,
                };
                failed = !self.fire_due(due_at).await;
            }
            let wait = if failed {
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            } else {
                backoff = FIRST_BACKOFF;
                let now = self.clock.now();
                self.planner
                    .next_wake()
                    .map_or(IDLE_WAIT, |next| {
                        next.saturating_since(now).saturating_sub(PREPARE_AHEAD)
                    })
                    .min(IDLE_WAIT)
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                changed = applied.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Proposes what is due at `due_at` (now, or a due time less than [`PREPARE_AHEAD`]
    /// away: the fires are planned and their runs placed first, and proposed once it
    /// comes); false if raft refused to take some of it.
    async fn fire_due(&mut self, due_at: Timestamp) -> bool {
        let fires = self.planner.due(due_at);
        if fires.is_empty() {
            return true;
        }
        let mut by_schedule: std::collections::BTreeMap<ScheduleId, Vec<PlannedFire>> =
            Default::default();
        for f in fires {
            by_schedule.entry(f.schedule).or_default().push(f);
        }
        // One view of the nodes for the pass, shared by its placements.
        let placer = match &self.dispatcher {
            Some(d) => match d.view() {
                Ok(view) => Some(Arc::new(Placer {
                    dispatcher: d.clone(),
                    view: Mutex::new(view),
                })),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the nodes failed; this pass's runs are left to the dispatcher");
                    None
                }
            },
            None => None,
        };
        let mut prepared = Vec::with_capacity(by_schedule.len());
        for (id, fires) in by_schedule {
            let mut placed = Vec::with_capacity(fires.len());
            for f in fires {
                let runs = match (&placer, self.planner.schedule(id)) {
                    (Some(placer), Some(schedule)) => placer.place(schedule).await,
                    _ => Vec::new(),
                };
                placed.push((f, runs));
            }
            prepared.push((id, placed));
        }
        // Nothing is proposed before its due time.
        loop {
            let early = due_at.saturating_since(self.clock.now());
            if early.is_zero() {
                break;
            }
            tokio::time::sleep(early.max(Duration::from_millis(1))).await;
        }
        let mut tasks = JoinSet::new();
        for (id, fires) in prepared {
            let raft = self.raft.clone();
            let clock = self.clock.clone();
            let placer = placer.clone();
            tasks.spawn(async move {
                (
                    id,
                    propose(&raft, clock.as_ref(), fires, placer.as_deref()).await,
                )
            });
        }
        let mut ok = true;
        while let Some(joined) = tasks.join_next().await {
            let Ok((id, outcome)) = joined else {
                ok = false;
                continue;
            };
            let recorded = match &outcome {
                Outcome::Recorded(d) | Outcome::Stale(d) | Outcome::Failed(d, _) => d,
            };
            for due in recorded {
                self.planner.fired(id, *due);
            }
            match outcome {
                Outcome::Recorded(_) => {}
                Outcome::Stale(_) => {
                    let stored = self.raft.reader().schedule(id).ok().flatten();
                    self.planner.reload(id, stored);
                }
                Outcome::Failed(_, e) => {
                    tracing::warn!(schedule = %id, error = %e, "recording a fire failed; retrying");
                    ok = false;
                }
            }
        }
        ok
    }
}

/// The placements of one pass of fires.
struct Placer {
    dispatcher: Dispatcher,
    view: Mutex<View>,
}

/// A job run of a fire, placed before the fire is proposed.
struct Placed {
    job: JobId,
    node: NodeId,
    /// Secrets opened: what the agent is sent.
    task: TaskSpec,
}

impl Placer {
    /// A node for each of the schedule's job targets that can start now. Targets apply
    /// will not start (gone, another namespace, a service) and runs that cannot be placed
    /// now are left out: they are created pending, for the dispatcher.
    async fn place(&self, s: &Schedule) -> Vec<Placed> {
        let reader = self.dispatcher.raft().reader();
        let mut placed = Vec::new();
        for target in &s.spec.targets {
            let ScheduleTarget::Job(id) = *target else {
                continue;
            };
            let job = match reader.job(id) {
                Ok(Some(job))
                    if job.spec.namespace == s.spec.namespace
                        && job.spec.job_type != JobType::Service =>
                {
                    job
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "reading the job failed; its run is left to the dispatcher");
                    continue;
                }
            };
            let choice = {
                let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
                self.dispatcher
                    .choose_for(&mut view, &job, &s.spec.namespace)
            };
            let (node, task) = match choice {
                Ok(Choice::Place { node, task }) => (node, task),
                Ok(Choice::Wait | Choice::Refuse(_)) => continue,
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "placing the run failed; it is left to the dispatcher");
                    continue;
                }
            };
            if let Some(task) = self.dispatcher.reveal(id, &task).await {
                placed.push(Placed {
                    job: id,
                    node,
                    task,
                });
            }
        }
        placed
    }

    /// Sends the committed fire's placed runs to their agents.
    async fn send(&self, record: &ScheduleFire, placed: &[Placed]) {
        for launch in &record.launches {
            let (ScheduleTarget::Job(job), Some(run)) = (launch.target, launch.run) else {
                continue;
            };
            let Some(p) = placed.iter().find(|p| p.job == job) else {
                continue;
            };
            let task = RunTask {
                run,
                job,
                task: p.task.clone(),
            };
            self.dispatcher.send(p.node, task).await;
        }
    }
}

/// One schedule's fires, in order, each through raft with the runs placed for it, which
/// the placer sends once the fire is committed.
async fn propose<C: Clock>(
    raft: &RaftNode,
    clock: &C,
    fires: Vec<(PlannedFire, Vec<Placed>)>,
    placer: Option<&Placer>,
) -> Outcome {
    let mut done = Vec::with_capacity(fires.len());
    for (f, placed) in fires {
        let at = clock.now();
        let span = tracing::info_span!("fire", schedule = %f.schedule, due = %f.due);
        match raft
            .write(Command::FireSchedulePlaced {
                schedule: f.schedule,
                due: f.due,
                missed: f.missed,
                at,
                placed: placed.iter().map(|p| (p.job, p.node)).collect(),
            })
            .instrument(span)
            .await
        {
            Ok(Applied::Fire(record)) => {
                if let Some(placer) = placer {
                    placer.send(&record, &placed).await;
                }
                tracing::debug!(
                    schedule = %f.schedule,
                    due = %f.due,
                    delay_ms = at.0.saturating_sub(f.due.0),
                    runs = record.launches.iter().filter(|l| l.run.is_some()).count(),
                    missed = f.missed,
                    outcome = ?record.outcome,
                    "schedule fired"
                );
                done.push(f.due);
            }
            Ok(other) => {
                tracing::error!(schedule = %f.schedule, ?other, "a fire got an unexpected answer");
                done.push(f.due);
            }
            Err(WriteError::Rejected(
                ApplyError::Refused(why) | ApplyError::NotFound { kind: why, .. },
            )) => {
                tracing::info!(schedule = %f.schedule, due = %f.due, %why, "fire refused; reading the schedule again");
                return Outcome::Stale(done);
            }
            Err(e) => return Outcome::Failed(done, e),
        }
    }
    Outcome::Recorded(done)
}
