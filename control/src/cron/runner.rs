//! The leader's cron loop: reads the schedules when their definitions change, asks the
//! [`Planner`] what is due at the clock's time, proposes one `FireSchedule` per fire
//! (each schedule's in order; different schedules concurrently, so they share raft
//! entries), and sleeps until the next due time or the next change.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use windflow_protocol::{ScheduleId, Timestamp};
use windflow_raft::{Applied, ApplyError, Command, RaftNode, WriteError};

use super::clock::Clock;
use super::plan::{PlannedFire, Planner};

/// The longest sleep without a due time or a change.
const IDLE_WAIT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
}

impl<C: Clock> CronLoop<C> {
    pub fn new(raft: RaftNode, clock: Arc<C>) -> Self {
        CronLoop {
            raft,
            clock,
            planner: Planner::default(),
        }
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
                failed = !self.fire_due().await;
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
                    .map_or(IDLE_WAIT, |next| next.saturating_since(now))
                    .min(IDLE_WAIT)
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                changed = applied.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Proposes what is due now; false if raft refused to take some of it.
    async fn fire_due(&mut self) -> bool {
        let fires = self.planner.due(self.clock.now());
        if fires.is_empty() {
            return true;
        }
        let mut by_schedule: std::collections::BTreeMap<ScheduleId, Vec<PlannedFire>> =
            Default::default();
        for f in fires {
            by_schedule.entry(f.schedule).or_default().push(f);
        }
        let mut tasks = JoinSet::new();
        for (id, fires) in by_schedule {
            let raft = self.raft.clone();
            let clock = self.clock.clone();
            tasks.spawn(async move { (id, propose(&raft, clock.as_ref(), fires).await) });
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

/// One schedule's fires, in order, each through raft.
async fn propose<C: Clock>(raft: &RaftNode, clock: &C, fires: Vec<PlannedFire>) -> Outcome {
    let mut done = Vec::with_capacity(fires.len());
    for f in fires {
        let at = clock.now();
        let span = tracing::info_span!("fire", schedule = %f.schedule, due = %f.due);
        match raft
            .write(Command::FireSchedule {
                schedule: f.schedule,
                due: f.due,
                missed: f.missed,
                at,
            })
            .instrument(span)
            .await
        {
            Ok(Applied::Fire(record)) => {
                tracing::info!(
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
