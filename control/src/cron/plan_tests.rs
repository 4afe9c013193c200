//! The planner driven by a hand-moved clock: time zones, DST, leader changes and the
//! catch-up policies. (The overlap policies are apply's: `raft/src/schedule_tests.rs`.)

use std::time::Duration;

use windflow_protocol::{
    CatchUp, Namespace, OverlapPolicy, Schedule, ScheduleId, ScheduleSpec, Timestamp,
};

use super::*;
use crate::cron::clock::{Clock, ManualClock};

fn ts(text: &str) -> Timestamp {
    let dt = chrono::DateTime::parse_from_rfc3339(text).unwrap();
    Timestamp(dt.timestamp_millis() as u64)
}

fn schedule(id: u64, cron: &str, zone: &str, catch_up: CatchUp, created: Timestamp) -> Schedule {
    Schedule {
        id: ScheduleId(id),
        spec: ScheduleSpec {
            name: format!("s{id}"),
            namespace: Namespace::default(),
            cron: cron.into(),
            timezone: zone.into(),
            targets: Vec::new(),
            overlap: OverlapPolicy::Allow,
            catch_up,
        },
        enabled: true,
        created_at: created,
        updated_at: created,
        fires_after: created,
        last_due: None,
        last_runs: Vec::new(),
        fires: 0,
    }
}

/// One pass of the loop at the clock's time, every planned fire recorded.
fn pass(planner: &mut Planner, clock: &ManualClock) -> Vec<PlannedFire> {
    let fires = planner.due(clock.now());
    for f in &fires {
        planner.fired(f.schedule, f.due);
    }
    fires
}

fn dues(fires: &[PlannedFire]) -> Vec<Timestamp> {
    fires.iter().map(|f| f.due).collect()
}

#[test]
fn an_every_second_schedule_fires_each_second_once() {
    let start = ts("2026-06-01T12:00:00.300Z");
    let clock = ManualClock::at(start);
    let mut p = Planner::default();
    p.load(vec![schedule(
        1,
        "* * * * * *",
        "UTC",
        CatchUp::Skip,
        start,
    )]);
    assert!(pass(&mut p, &clock).is_empty(), "nothing due yet");
    assert_eq!(p.next_wake(), Some(ts("2026-06-01T12:00:01Z")));
    let mut all = Vec::new();
    for _ in 0..5 {
        clock.advance(Duration::from_millis(1000));
        let fires = pass(&mut p, &clock);
        assert_eq!(fires.len(), 1);
        // The same instant seen again plans nothing more.
        assert!(p.due(clock.now()).is_empty());
        all.extend(dues(&fires));
    }
    assert_eq!(
        all,
        (1..=5)
            .map(|s| ts(&format!("2026-06-01T12:00:0{s}Z")))
            .collect::<Vec<_>>()
    );
}

/// A new leader takes over 5 s after the last recorded fire of an every-second schedule.
fn after_failover(catch_up: CatchUp) -> Vec<PlannedFire> {
    let last = ts("2026-06-01T12:00:10Z");
    let mut s = schedule(
        1,
        "* * * * * *",
        "UTC",
        catch_up,
        ts("2026-06-01T12:00:00Z"),
    );
    s.last_due = Some(last);
    let clock = ManualClock::at(ts("2026-06-01T12:00:15.500Z"));
    let mut p = Planner::default();
    p.load(vec![s]);
    let fires = pass(&mut p, &clock);
    assert!(p.due(clock.now()).is_empty(), "decided once");
    fires
}

#[test]
fn after_a_failover_run_all_fires_every_missed_second_and_nothing_twice() {
    let fires = after_failover(CatchUp::RunAll);
    assert_eq!(
        dues(&fires),
        (11..=15)
            .map(|s| ts(&format!("2026-06-01T12:00:{s}Z")))
            .collect::<Vec<_>>()
    );
    assert!(fires.iter().all(|f| f.missed == 0));
}

#[test]
fn after_a_failover_run_once_fires_the_latest_and_counts_the_rest() {
    let fires = after_failover(CatchUp::RunOnce);
    assert_eq!(dues(&fires), [ts("2026-06-01T12:00:15Z")]);
    assert_eq!(fires[0].missed, 4);
}

#[test]
fn after_a_failover_skip_fires_only_what_is_on_time() {
    // Grace 2 s: 12:00:14 and :15 are on time at :15.5; :11 to :13 were missed.
    let fires = after_failover(CatchUp::Skip);
    assert_eq!(
        dues(&fires),
        [ts("2026-06-01T12:00:14Z"), ts("2026-06-01T12:00:15Z")]
    );
    assert_eq!(fires[0].missed, 3);
    assert_eq!(fires[1].missed, 0);
}

#[test]
fn hours_of_downtime_under_each_policy() {
    let created = ts("2026-06-01T00:30:00Z");
    let back = ts("2026-06-01T05:10:00Z"); // 01:00 to 05:00 were due while down
    let clock = ManualClock::at(back);
    let mut p = Planner::default();
    p.load(vec![
        schedule(1, "@hourly", "UTC", CatchUp::Skip, created),
        schedule(2, "@hourly", "UTC", CatchUp::RunOnce, created),
        schedule(3, "@hourly", "UTC", CatchUp::RunAll, created),
    ]);
    let fires = pass(&mut p, &clock);
    let of = |id| {
        fires
            .iter()
            .filter(|f| f.schedule == ScheduleId(id))
            .copied()
            .collect::<Vec<_>>()
    };
    assert!(of(1).is_empty(), "skip: all five were late");
    assert_eq!(dues(&of(2)), [ts("2026-06-01T05:00:00Z")]);
    assert_eq!(of(2)[0].missed, 4);
    assert_eq!(
        dues(&of(3)),
        (1..=5)
            .map(|h| ts(&format!("2026-06-01T0{h}:00:00Z")))
            .collect::<Vec<_>>()
    );
    // All three go on at 06:00, on time.
    assert_eq!(p.next_wake(), Some(ts("2026-06-01T06:00:00Z")));
    clock.set(ts("2026-06-01T06:00:00.200Z"));
    assert_eq!(pass(&mut p, &clock).len(), 3);
}

#[test]
fn a_zone_with_dst_fires_at_local_wall_time() {
    // 02:30 every day in Paris, from the day before spring forward (2026-03-29) to the
    // day after fall back (2026-10-25), an hour at a time.
    let start = ts("2026-03-28T00:00:00Z");
    let clock = ManualClock::at(start);
    let mut p = Planner::default();
    p.load(vec![schedule(
        1,
        "30 2 * * *",
        "Europe/Paris",
        CatchUp::Skip,
        start,
    )]);
    let mut all = Vec::new();
    while clock.now() < ts("2026-10-27T00:00:00Z") {
        // The loop wakes at the next due time, or an hour later at most.
        let hour_later = Timestamp(clock.now().0 + 3_600_000);
        clock.set(p.next_wake().map_or(hour_later, |n| n.min(hour_later)));
        all.extend(dues(&pass(&mut p, &clock)));
    }
    let find = |day: &str| {
        all.iter()
            .filter(|t| t.to_string().starts_with(day))
            .count()
    };
    // Spring forward: 02:30 does not exist; it fires once, at 03:00 CEST (01:00 UTC).
    assert!(all.contains(&ts("2026-03-29T01:00:00Z")));
    assert_eq!(find("2026-03-29"), 1);
    // Summer: 02:30 CEST = 00:30 UTC.
    assert!(all.contains(&ts("2026-07-01T00:30:00Z")));
    // Fall back: 02:30 happens twice; it fires once, on the first pass (CEST).
    assert!(all.contains(&ts("2026-10-25T00:30:00Z")));
    assert!(!all.contains(&ts("2026-10-25T01:30:00Z")));
    assert_eq!(find("2026-10-25"), 1);
    // Winter: 02:30 CET = 01:30 UTC.
    assert!(all.contains(&ts("2026-10-26T01:30:00Z")));
    // One fire a day, none doubled.
    let mut sorted = all.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len());
    assert_eq!(
        all.len(),
        213,
        "every day from 2026-03-28 to 2026-10-26 once"
    );
}

#[test]
fn disabled_schedules_are_not_planned_and_a_refused_fire_reloads() {
    let start = ts("2026-06-01T12:00:00Z");
    let clock = ManualClock::at(start);
    let mut off = schedule(2, "* * * * * *", "UTC", CatchUp::RunAll, start);
    off.enabled = false;
    let mut p = Planner::default();
    p.load(vec![
        schedule(1, "* * * * * *", "UTC", CatchUp::RunAll, start),
        off,
    ]);
    clock.advance(Duration::from_secs(3));
    let fires = p.due(clock.now());
    assert!(fires.iter().all(|f| f.schedule == ScheduleId(1)));
    assert_eq!(fires.len(), 3);
    // Another leader recorded up to :02 meanwhile: the reload plans only :03.
    let mut stored = schedule(1, "* * * * * *", "UTC", CatchUp::RunAll, start);
    stored.last_due = Some(ts("2026-06-01T12:00:02Z"));
    p.reload(ScheduleId(1), Some(stored));
    assert_eq!(dues(&p.due(clock.now())), [ts("2026-06-01T12:00:03Z")]);
    p.reload(ScheduleId(1), None);
    assert!(p.due(clock.now()).is_empty());
    assert_eq!(p.next_wake(), None);
}

#[test]
fn a_run_all_backlog_is_fired_a_bounded_pass_at_a_time() {
    let start = ts("2026-06-01T12:00:00Z");
    let clock = ManualClock::at(start);
    let mut p = Planner::default();
    p.load(vec![schedule(
        1,
        "* * * * * *",
        "UTC",
        CatchUp::RunAll,
        start,
    )]);
    clock.advance(Duration::from_secs(250));
    let mut total = 0;
    loop {
        let fires = pass(&mut p, &clock);
        if fires.is_empty() {
            break;
        }
        assert!(fires.len() <= MAX_FIRES_PER_PASS);
        total += fires.len();
    }
    assert_eq!(total, 250);
}
