//! Apply's rules for schedules and webhooks, on a real sled tree.

use windflow_protocol::{
    CatchUp, DeliveryOutcome, EventKind, FireOutcome, HumanDuration, JobId, Namespace, NodeId,
    OverlapPolicy, PipelineId, RunOutcome, RunStatus, ScheduleFire, ScheduleId, ScheduleSpec,
    ScheduleTarget, Sealed, Timestamp, WebhookId, WebhookSpec,
};

use crate::apply_tests::Fixture;
use crate::command::{Applied, ApplyError, Command};

fn job(f: &Fixture, name: &str) -> JobId {
    let task = windflow_protocol::TaskSpec::exec(name, "true");
    match f.apply(Command::CreateJob {
        spec: windflow_protocol::JobSpec::exec(name, task),
        at: Timestamp(1),
    }) {
        Ok(Applied::Job(j)) => j.id,
        other => panic!("{other:?}"),
    }
}

fn schedule(f: &Fixture, targets: Vec<ScheduleTarget>, overlap: OverlapPolicy) -> ScheduleId {
    let spec = ScheduleSpec {
        name: "nightly".into(),
        namespace: Namespace::default(),
        cron: "* * * * * *".into(),
        timezone: "UTC".into(),
        targets,
        overlap,
        catch_up: CatchUp::RunAll,
    };
    match f.apply(Command::CreateSchedule {
        spec,
        at: Timestamp(1_000),
    }) {
        Ok(Applied::Schedule(s)) => s.id,
        other => panic!("{other:?}"),
    }
}

fn fire(f: &Fixture, s: ScheduleId, due: u64) -> Result<ScheduleFire, ApplyError> {
    f.apply(Command::FireSchedule {
        schedule: s,
        due: Timestamp(due),
        missed: 0,
        at: Timestamp(due + 5),
    })
    .map(|a| match a {
        Applied::Fire(fire) => fire,
        other => panic!("{other:?}"),
    })
}

fn fire_placed(
    f: &Fixture,
    s: ScheduleId,
    due: u64,
    at: u64,
    placed: Vec<(JobId, NodeId)>,
) -> ScheduleFire {
    match f.apply(Command::FireSchedulePlaced {
        schedule: s,
        due: Timestamp(due),
        missed: 0,
        at: Timestamp(at),
        placed,
    }) {
        Ok(Applied::Fire(fire)) => fire,
        other => panic!("{other:?}"),
    }
}

fn finish(f: &Fixture, run: windflow_protocol::RunId) {
    f.apply(Command::RunDispatched {
        run,
        node: NodeId(1),
        at: Timestamp(3),
    })
    .unwrap();
    f.apply(Command::RunFinished {
        run,
        node: NodeId(1),
        outcome: RunOutcome::Succeeded,
        exit_code: Some(0),
        attempts: 1,
        started_at: Timestamp(3),
        duration: HumanDuration::from_secs(1),
        stdout: "ok".into(),
        stdout_truncated: false,
        stderr_tail: String::new(),
        error: None,
        at: Timestamp(4),
    })
    .unwrap();
}

#[test]
fn a_due_time_fires_once_and_in_order() {
    let f = Fixture::new();
    let (a, b) = (job(&f, "a"), job(&f, "b"));
    let s = schedule(
        &f,
        vec![ScheduleTarget::Job(a), ScheduleTarget::Job(b)],
        OverlapPolicy::Allow,
    );
    // Not after the creation.
    assert!(matches!(fire(&f, s, 1_000), Err(ApplyError::Refused(_))));
    let first = fire(&f, s, 2_000).unwrap();
    assert_eq!(first.seq, 1);
    assert_eq!(first.launches.len(), 2, "both targets in the same entry");
    assert!(first.launches.iter().all(|l| l.run.is_some()));
    // A second leader proposing the same due time, or an older one, is refused.
    assert!(matches!(fire(&f, s, 2_000), Err(ApplyError::Refused(_))));
    assert!(matches!(fire(&f, s, 1_500), Err(ApplyError::Refused(_))));
    assert_eq!(fire(&f, s, 3_000).unwrap().seq, 2);
    let log = f.reader.schedule_fires(s, 10).unwrap();
    assert_eq!(
        log.iter().map(|x| x.due.0).collect::<Vec<_>>(),
        [3_000, 2_000]
    );
    let pending = f.reader.runs_with_status(RunStatus::Pending).unwrap();
    assert_eq!(pending.len(), 4);
}

#[test]
fn forbid_skips_while_the_last_runs_go_on() {
    let f = Fixture::new();
    let a = job(&f, "a");
    let s = schedule(&f, vec![ScheduleTarget::Job(a)], OverlapPolicy::Forbid);
    let first = fire(&f, s, 2_000).unwrap();
    let run = first.launches[0].run.unwrap();
    let second = fire(&f, s, 3_000).unwrap();
    assert_eq!(
        second.outcome,
        FireOutcome::SkippedOverlap { running: vec![run] }
    );
    assert!(second.launches.is_empty());
    finish(&f, run);
    let third = fire(&f, s, 4_000).unwrap();
    assert_eq!(third.outcome, FireOutcome::Fired);
    assert!(third.launches[0].run.is_some());
}

#[test]
fn replace_fails_the_pending_runs_of_the_last_fire() {
    let f = Fixture::new();
    let (a, b) = (job(&f, "a"), job(&f, "b"));
    let s = schedule(
        &f,
        vec![ScheduleTarget::Job(a), ScheduleTarget::Job(b)],
        OverlapPolicy::Replace,
    );
    let first = fire(&f, s, 2_000).unwrap();
    let (ra, rb) = (
        first.launches[0].run.unwrap(),
        first.launches[1].run.unwrap(),
    );
    // One of them runs already: it is left to finish.
    f.apply(Command::RunDispatched {
        run: ra,
        node: NodeId(1),
        at: Timestamp(2_100),
    })
    .unwrap();
    let second = fire(&f, s, 3_000).unwrap();
    assert_eq!(second.replaced, vec![rb]);
    assert_eq!(second.launches.len(), 2);
    let old = f.reader.run(rb).unwrap().unwrap();
    assert_eq!(old.status, RunStatus::Failed);
    assert!(old.error.unwrap().contains("replaced"));
    assert_eq!(
        f.reader.run(ra).unwrap().unwrap().status,
        RunStatus::Running
    );
}

#[test]
fn targets_that_cannot_start_say_why() {
    let f = Fixture::new();
    let a = job(&f, "a");
    let s = schedule(
        &f,
        vec![
            ScheduleTarget::Job(a),
            ScheduleTarget::Pipeline(PipelineId(1)),
        ],
        OverlapPolicy::Allow,
    );
    f.apply(Command::DeleteJob {
        job: a,
        at: Timestamp(1_500),
    })
    .unwrap();
    let fire = fire(&f, s, 2_000).unwrap();
    assert!(
        fire.launches[0]
            .error
            .as_deref()
            .unwrap()
            .contains("no longer exists")
    );
    assert!(
        fire.launches[1]
            .error
            .as_deref()
            .unwrap()
            .contains("no longer exists"),
        "{:?}",
        fire.launches[1]
    );
}

#[test]
fn disabled_schedules_do_not_fire_and_enabling_skips_what_was_due_meanwhile() {
    let f = Fixture::new();
    let a = job(&f, "a");
    let s = schedule(&f, vec![ScheduleTarget::Job(a)], OverlapPolicy::Allow);
    f.apply(Command::SetScheduleEnabled {
        schedule: s,
        enabled: false,
        at: Timestamp(1_500),
    })
    .unwrap();
    assert!(matches!(fire(&f, s, 2_000), Err(ApplyError::Refused(_))));
    f.apply(Command::SetScheduleEnabled {
        schedule: s,
        enabled: true,
        at: Timestamp(5_000),
    })
    .unwrap();
    assert!(matches!(fire(&f, s, 4_000), Err(ApplyError::Refused(_))));
    assert!(fire(&f, s, 6_000).is_ok());
    let v = f.reader.schedules_version().unwrap();
    f.apply(Command::DeleteSchedule {
        schedule: s,
        at: Timestamp(7_000),
    })
    .unwrap();
    assert!(f.reader.schedule(s).unwrap().is_none());
    assert!(f.reader.schedule_fires(s, 10).unwrap().is_empty());
    assert!(f.reader.schedules_version().unwrap() > v);
}

fn webhook(f: &Fixture, events: Vec<EventKind>) -> WebhookId {
    match f.apply(Command::CreateWebhook {
        spec: WebhookSpec {
            name: "ops".into(),
            namespace: Namespace::default(),
            url: "http://127.0.0.1:9/".into(),
            events,
        },
        secret: Sealed::redacted(windflow_protocol::KeyId(1)),
        at: Timestamp(10),
    }) {
        Ok(Applied::Webhook(w)) => w.id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn events_are_recorded_once_a_webhook_exists_and_attempts_are_logged() {
    let f = Fixture::new();
    let a = job(&f, "a");
    let s = schedule(&f, vec![ScheduleTarget::Job(a)], OverlapPolicy::Allow);
    // No webhook yet: nothing recorded.
    fire(&f, s, 2_000).unwrap();
    assert_eq!(f.reader.last_event().unwrap(), 0);
    let w = webhook(&f, vec![EventKind::JobSucceeded, EventKind::ScheduleFired]);
    let fired = fire(&f, s, 3_000).unwrap();
    finish(&f, fired.launches[0].run.unwrap());
    let events = f.reader.events_after(0, 10).unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::ScheduleFired, EventKind::JobSucceeded]
    );
    let attempt = |event: u64, attempt: u32, outcome| {
        f.apply(Command::WebhookAttempt {
            webhook: w,
            event,
            attempt,
            status: Some(500),
            error: None,
            outcome,
            at: Timestamp(20),
        })
    };
    attempt(1, 1, DeliveryOutcome::Retrying).unwrap();
    attempt(1, 2, DeliveryOutcome::Delivered).unwrap();
    // Done: a later leader's resend of the same event is refused.
    assert!(matches!(
        attempt(1, 3, DeliveryOutcome::Delivered),
        Err(ApplyError::Refused(_))
    ));
    assert_eq!(f.reader.webhook(w).unwrap().unwrap().delivered_upto, 1);
    let log = f.reader.deliveries(w, 10).unwrap();
    assert_eq!(log.iter().map(|d| d.attempt).collect::<Vec<_>>(), [2, 1]);
    f.apply(Command::DeleteWebhook {
        webhook: w,
        at: Timestamp(30),
    })
    .unwrap();
    assert!(f.reader.deliveries(w, 10).unwrap().is_empty());
}

#[test]
fn a_pipeline_target_starts_a_pipeline_run_in_the_fire_entry() {
    let f = Fixture::new();
    let (a, b) = (job(&f, "a"), job(&f, "b"));
    let spec = windflow_protocol::PipelineSpec {
        name: "nightly".into(),
        namespace: Namespace::default(),
        steps: vec![
            windflow_protocol::PipelineStep {
                job: a,
                depends_on: vec![],
            },
            windflow_protocol::PipelineStep {
                job: b,
                depends_on: vec![a],
            },
        ],
        on_failure: windflow_protocol::FailurePolicy::Stop,
    };
    let pipeline = match f.apply(Command::CreatePipeline {
        spec,
        at: Timestamp(10),
    }) {
        Ok(Applied::Pipeline(p)) => p.id,
        other => panic!("{other:?}"),
    };
    let s = schedule(
        &f,
        vec![ScheduleTarget::Pipeline(pipeline)],
        OverlapPolicy::Allow,
    );
    let fired = fire(&f, s, 2_000).unwrap();
    assert_eq!(fired.launches[0].error, None, "{fired:?}");
    let run = fired.launches[0].pipeline_run.expect("a pipeline run");
    let run = f.reader.pipeline_run(run).unwrap().unwrap();
    assert_eq!(run.pipeline, pipeline);
    // Its first step's job run is queued by the same entry; the second waits for it.
    let first = run.steps[0].run.expect("the first step's run");
    assert_eq!(
        f.reader.run(first).unwrap().unwrap().status,
        RunStatus::Pending
    );
    assert_eq!(run.steps[1].run, None);
}

#[test]
fn a_placed_fire_starts_its_job_runs_on_their_nodes_in_the_same_entry() {
    let f = Fixture::new();
    let (a, b) = (job(&f, "a"), job(&f, "b"));
    let s = schedule(
        &f,
        vec![ScheduleTarget::Job(a), ScheduleTarget::Job(b)],
        OverlapPolicy::Forbid,
    );
    // The leader found a node for `a` only: `b` is queued for the dispatcher.
    let fired = fire_placed(&f, s, 2_000, 2_007, vec![(a, NodeId(7))]);
    let run_of = |job: JobId| {
        let launch = fired
            .launches
            .iter()
            .find(|l| l.target == ScheduleTarget::Job(job));
        let run = launch.and_then(|l| l.run).expect("a run");
        f.reader.run(run).unwrap().unwrap()
    };
    let (ra, rb) = (run_of(a), run_of(b));
    assert_eq!(ra.status, RunStatus::Running);
    assert_eq!(ra.node, Some(NodeId(7)));
    assert_eq!(ra.started_at, Some(Timestamp(2_007)));
    assert_eq!(rb.status, RunStatus::Pending);
    assert_eq!(rb.node, None);
    // The status index and counts know each run once, under its status.
    let ids = |status| {
        f.reader
            .runs_with_status(status)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(RunStatus::Running), [ra.id]);
    assert_eq!(ids(RunStatus::Pending), [rb.id]);
    let counts = f.reader.run_counts().unwrap();
    assert!(counts.contains(&(RunStatus::Running, 1)), "{counts:?}");
    assert!(counts.contains(&(RunStatus::Pending, 1)), "{counts:?}");
    // The placed run counts as the fire's unfinished run for the overlap policy.
    let next = fire_placed(&f, s, 3_000, 3_001, vec![(a, NodeId(7))]);
    assert!(
        matches!(next.outcome, FireOutcome::SkippedOverlap { .. }),
        "{next:?}"
    );
    assert_eq!(ids(RunStatus::Running), [ra.id]);
}
