//! Which due times to fire now: the schedules as last read from the store, and what this
//! leader already decided. Pure: the time comes in as an argument, so a controlled clock
//! drives it in tests.
//!
//! A due time is *on time* when it is found within [`ON_TIME_GRACE`] of it; older ones
//! were missed (the cluster was down, or leadership moved) and the schedule's catch-up
//! policy says what becomes of them:
//! - `skip`: only the on-time due times fire; the missed ones are counted on the first of
//!   them (or only logged when none is on time);
//! - `run_once`: one fire, for the latest due time, carrying how many were missed before it;
//! - `run_all`: every missed due time fires, oldest first (at most
//!   [`MAX_FIRES_PER_PASS`] per schedule per pass; the next pass goes on).

use std::collections::BTreeMap;
use std::time::Duration;

use windflow_protocol::{CatchUp, Schedule, ScheduleId, Timestamp};

use super::expr::{CronExpr, ExprError};

/// How late a due time may be found and still count as on time.
pub const ON_TIME_GRACE: Duration = Duration::from_secs(2);

/// The most fires one schedule gets in one pass of the loop (a `run_all` backlog).
pub const MAX_FIRES_PER_PASS: usize = 100;

/// Missed due times are counted up to this many.
const MISSED_COUNT_CAP: u32 = 100_000;

/// One fire to propose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedFire {
    pub schedule: ScheduleId,
    pub due: Timestamp,
    /// Due times before this one that the catch-up policy leaves out.
    pub missed: u32,
}

struct Entry {
    schedule: Schedule,
    expr: CronExpr,
    /// Due times at or before this are decided (fired, or skipped by `skip`).
    decided: Timestamp,
    /// The first due time not decided yet.
    next: Option<Timestamp>,
}

impl Entry {
    fn from(&self) -> Timestamp {
        self.schedule.next_after().max(self.decided)
    }

    fn refresh_next(&mut self) {
        self.next = self.expr.next_after(self.from());
    }
}

/// The leader's view of every enabled schedule.
pub struct Planner {
    entries: BTreeMap<ScheduleId, Entry>,
    grace: Duration,
}

impl Default for Planner {
    fn default() -> Self {
        Planner::new(ON_TIME_GRACE)
    }
}

impl Planner {
    pub fn new(grace: Duration) -> Self {
        Planner {
            entries: BTreeMap::new(),
            grace,
        }
    }

    /// Takes the schedules as the store has them now. What this planner already decided
    /// for a schedule it keeps; the store's last fire wins when it is further. Answers the
    /// schedules whose expression does not parse (the API refuses them, so only a store
    /// written by another version could hold one).
    pub fn load(&mut self, schedules: Vec<Schedule>) -> Vec<(ScheduleId, ExprError)> {
        let mut bad = Vec::new();
        let mut entries = BTreeMap::new();
        for schedule in schedules.into_iter().filter(|s| s.enabled) {
            let expr = match CronExpr::parse(&schedule.spec.cron, &schedule.spec.timezone) {
                Ok(e) => e,
                Err(e) => {
                    bad.push((schedule.id, e));
                    continue;
                }
            };
            let decided = self
                .entries
                .get(&schedule.id)
                .map_or(Timestamp(0), |e| e.decided);
            let mut entry = Entry {
                schedule,
                expr,
                decided,
                next: None,
            };
            entry.refresh_next();
            entries.insert(entry.schedule.id, entry);
        }
        self.entries = entries;
        bad
    }

    /// Replaces one schedule with what the store holds now (after a refused fire).
    pub fn reload(&mut self, id: ScheduleId, stored: Option<Schedule>) {
        match (stored, self.entries.get_mut(&id)) {
            (Some(s), Some(entry)) if s.enabled => {
                entry.schedule = s;
                entry.refresh_next();
            }
            _ => {
                self.entries.remove(&id);
            }
        }
    }

    /// A fire of `id` at `due` was recorded.
    pub fn fired(&mut self, id: ScheduleId, due: Timestamp) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.schedule.last_due = Some(entry.schedule.last_due.map_or(due, |d| d.max(due)));
            entry.decided = entry.decided.max(due);
            entry.refresh_next();
        }
    }

    /// The schedule as this planner last read it.
    pub fn schedule(&self, id: ScheduleId) -> Option<&Schedule> {
        self.entries.get(&id).map(|e| &e.schedule)
    }

    /// The earliest due time not decided yet, of any schedule.
    pub fn next_wake(&self) -> Option<Timestamp> {
        self.entries.values().filter_map(|e| e.next).min()
    }

    /// The fires due at `now`, each schedule's in order.
    pub fn due(&mut self, now: Timestamp) -> Vec<PlannedFire> {
        let mut out = Vec::new();
        let grace = self.grace.as_millis() as u64;
        for entry in self.entries.values_mut() {
            if entry.next.is_none_or(|n| n > now) {
                continue;
            }
            let id = entry.schedule.id;
            let from = entry.from();
            match entry.schedule.spec.catch_up {
                CatchUp::RunAll => {
                    let mut at = from;
                    for _ in 0..MAX_FIRES_PER_PASS {
                        let Some(due) = entry.expr.next_after(at).filter(|d| *d <= now) else {
                            break;
                        };
                        out.push(PlannedFire {
                            schedule: id,
                            due,
                            missed: 0,
                        });
                        at = due;
                    }
                }
                CatchUp::RunOnce => {
                    if let Some(latest) = entry.expr.last_at_or_before(now).filter(|l| *l > from) {
                        out.push(PlannedFire {
                            schedule: id,
                            due: latest,
                            missed: count_between(&entry.expr, from, latest),
                        });
                    }
                }
                CatchUp::Skip => {
                    let cutoff = Timestamp(now.0.saturating_sub(grace));
                    let missed = if from < cutoff {
                        // Due times in (from, cutoff]: found too late.
                        entry
                            .expr
                            .last_at_or_before(cutoff)
                            .filter(|l| *l > from)
                            .map_or(0, |last| count_between(&entry.expr, from, last) + 1)
                    } else {
                        0
                    };
                    let mut at = from.max(cutoff);
                    let mut first = true;
                    while let Some(due) = entry.expr.next_after(at).filter(|d| *d <= now) {
                        out.push(PlannedFire {
                            schedule: id,
                            due,
                            missed: if first { missed } else { 0 },
                        });
                        first = false;
                        at = due;
                    }
                    if first {
                        // None on time: the late ones are decided (skipped), nothing fires.
                        tracing::info!(schedule = %id, missed, "missed due times skipped (catch-up: skip)");
                        entry.decided = entry.decided.max(now);
                        entry.refresh_next();
                    }
                }
            }
        }
        out
    }
}

/// How many due times lie strictly between `after` and `before` (capped).
fn count_between(expr: &CronExpr, after: Timestamp, before: Timestamp) -> u32 {
    let mut n = 0;
    let mut at = after;
    while n < MISSED_COUNT_CAP {
        match expr.next_after(at) {
            Some(t) if t < before => {
                n += 1;
                at = t;
            }
            _ => break,
        }
    }
    n
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
