//! Apply's rules for imports, on a real sled tree: one entry creates jobs and what names
//! them, the same set again writes nothing, and one refused entry drops every write.

use windflow_protocol::export::{
    EntryAction, EntryKind, ImportOutcome, NamedPipeline, NamedSchedule, NamedStep, NamedTarget,
};
use windflow_protocol::{
    CatchUp, EventKind, FailurePolicy, JobSpec, JobType, KeyId, Namespace, OverlapPolicy, Sealed,
    TaskSpec, Timestamp, WebhookSpec,
};

use crate::apply_tests::Fixture;
use crate::command::{Applied, ApplyError, Command};
use crate::import::{ImportSet, ImportWebhook};

fn job(name: &str, cmd: &str) -> JobSpec {
    JobSpec::exec(name, TaskSpec::exec(name, cmd))
}

fn step(job: &str, deps: &[&str]) -> NamedStep {
    NamedStep {
        job: job.into(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
    }
}

fn set(cmd_of_b: &str) -> ImportSet {
    ImportSet {
        jobs: ["a", "b", "c", "d"]
            .into_iter()
            .map(|n| job(n, if n == "b" { cmd_of_b } else { "true" }))
            .collect(),
        pipelines: vec![NamedPipeline {
            name: "diamond".into(),
            namespace: Namespace::default(),
            // Written out of order: apply orders it.
            steps: vec![
                step("d", &["b", "c"]),
                step("b", &["a"]),
                step("c", &["a"]),
                step("a", &[]),
            ],
            on_failure: FailurePolicy::Continue,
        }],
        schedules: vec![NamedSchedule {
            name: "nightly".into(),
            namespace: Namespace::default(),
            cron: "0 2 * * *".into(),
            timezone: "UTC".into(),
            targets: vec![
                NamedTarget::Job("a".into()),
                NamedTarget::Pipeline("diamond".into()),
            ],
            overlap: OverlapPolicy::Forbid,
            catch_up: CatchUp::Skip,
        }],
        webhooks: vec![ImportWebhook {
            spec: WebhookSpec {
                name: "ops".into(),
                namespace: Namespace::default(),
                url: "http://127.0.0.1:9/hook".into(),
                events: vec![EventKind::JobFailed],
            },
            secret: Some(Sealed::redacted(KeyId(1))),
        }],
        at: Timestamp(10),
    }
}

fn import(f: &Fixture, set: ImportSet) -> Result<ImportOutcome, ApplyError> {
    f.apply(Command::Import(Box::new(set))).map(|a| match a {
        Applied::Imported(o) => o,
        other => panic!("{other:?}"),
    })
}

impl Fixture {
    /// Every key and value of the state.
    fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.reader
            .tree()
            .iter()
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect()
    }
}

fn actions(o: &ImportOutcome) -> Vec<(EntryKind, EntryAction)> {
    o.entries.iter().map(|e| (e.kind, e.action)).collect()
}

#[test]
fn one_entry_creates_everything_and_the_same_set_again_writes_nothing() {
    let f = Fixture::new();
    let first = import(&f, set("true")).unwrap();
    assert_eq!(first.count(EntryAction::Create), 7, "{first:?}");
    let pipeline = f.reader.pipeline_by_name(&Namespace::default(), "diamond");
    let pipeline = pipeline.unwrap().unwrap();
    let order: Vec<String> = pipeline
        .spec
        .steps
        .iter()
        .map(|s| f.reader.job(s.job).unwrap().unwrap().spec.name)
        .collect();
    assert_eq!(order, ["a", "b", "c", "d"]);
    let schedule = f.reader.schedule_by_name(&Namespace::default(), "nightly");
    assert_eq!(schedule.unwrap().unwrap().spec.targets.len(), 2);

    let before = f.dump();
    let again = import(&f, set("true")).unwrap();
    assert!(
        again
            .entries
            .iter()
            .all(|e| e.action == EntryAction::Unchanged),
        "{again:?}"
    );
    assert!(
        f.dump() == before,
        "an import of the same set wrote something"
    );
    let b = f.reader.job_by_name(&Namespace::default(), "b").unwrap();
    assert_eq!(b.unwrap().version, 1, "no new version for the same spec");

    // A changed job is a new version; the rest stays.
    let changed = import(&f, set("echo changed")).unwrap();
    let updated: Vec<_> = changed
        .entries
        .iter()
        .filter(|e| e.action == EntryAction::Update)
        .map(|e| (e.name.as_str(), e.version))
        .collect();
    assert_eq!(updated, [("b", Some(2))]);
}

#[test]
fn a_refused_entry_drops_every_write_and_each_refusal_is_named() {
    let f = Fixture::new();
    let mut bad = set("true");
    bad.pipelines[0].steps.push(step("ghost", &[]));
    bad.schedules[0].targets[0] = NamedTarget::Job("nobody".into());
    let e = import(&f, bad).unwrap_err().to_string();
    assert!(
        e.contains(r#"pipelines[0] "diamond": no job `ghost`"#),
        "{e}"
    );
    assert!(
        e.contains(r#"schedules[0] "nightly": no job `nobody`"#),
        "{e}"
    );
    assert!(
        f.reader.jobs().unwrap().is_empty(),
        "the jobs were rolled back"
    );
    assert!(f.reader.webhooks().unwrap().is_empty());
    assert!(f.reader.pipelines().unwrap().is_empty());

    // A type change is refused by the update rule, naming the job.
    import(&f, set("true")).unwrap();
    let mut retyped = set("true");
    retyped.jobs[3].job_type = JobType::Service;
    let e = import(&f, retyped).unwrap_err().to_string();
    assert!(e.contains(r#"jobs[3] "d""#), "{e}");
}

#[test]
fn an_existing_webhook_keeps_its_secret_unless_given_one() {
    let f = Fixture::new();
    import(&f, set("true")).unwrap();
    let mut keep = set("true");
    keep.webhooks[0].secret = None;
    keep.webhooks[0].spec.events.push(EventKind::JobSucceeded);
    let o = import(&f, keep.clone()).unwrap();
    assert_eq!(
        actions(&o).last(),
        Some(&(EntryKind::Webhook, EntryAction::Update))
    );
    let hook = f.reader.webhook_by_name(&Namespace::default(), "ops");
    assert_eq!(hook.unwrap().unwrap().secret, Sealed::redacted(KeyId(1)));
    let o = import(&f, keep).unwrap();
    assert_eq!(o.count(EntryAction::Unchanged), 7);
}

#[test]
fn a_preview_answers_like_apply_and_writes_nothing() {
    let f = Fixture::new();
    let preview = f
        .reader
        .preview(Command::Import(Box::new(set("true"))))
        .unwrap();
    let Ok(Applied::Imported(planned)) = preview else {
        panic!("{preview:?}")
    };
    assert_eq!(planned.count(EntryAction::Create), 7);
    assert!(f.reader.jobs().unwrap().is_empty());
    assert_eq!(
        actions(&import(&f, set("true")).unwrap()),
        actions(&planned)
    );
}

#[test]
fn an_updated_pipeline_moves_its_steps_and_an_updated_schedule_is_reloaded() {
    let f = Fixture::new();
    import(&f, set("true")).unwrap();
    let version = f.reader.schedules_version().unwrap();
    let mut smaller = set("true");
    // `d` is no longer a step; the schedule fires at another time.
    smaller.pipelines[0].steps.retain(|s| s.job != "d");
    smaller.schedules[0].cron = "0 3 * * *".into();
    smaller.at = Timestamp(50);
    let o = import(&f, smaller.clone()).unwrap();
    let changed: Vec<_> = o
        .entries
        .iter()
        .filter(|e| e.action == EntryAction::Update)
        .map(|e| e.kind)
        .collect();
    assert_eq!(changed, [EntryKind::Pipeline, EntryKind::Schedule], "{o:?}");
    assert!(f.reader.schedules_version().unwrap() > version);
    let s = f.reader.schedule_by_name(&Namespace::default(), "nightly");
    assert_eq!(
        s.unwrap().unwrap().fires_after,
        smaller.at,
        "the new expression's due times count from the update"
    );
    let job = |n: &str| {
        f.reader
            .job_by_name(&Namespace::default(), n)
            .unwrap()
            .unwrap()
            .id
    };
    // The step index follows: `d` may go, `a` still may not.
    assert!(
        f.apply(Command::DeleteJob {
            job: job("a"),
            at: Timestamp(20),
        })
        .is_err()
    );
    f.apply(Command::DeleteJob {
        job: job("d"),
        at: Timestamp(20),
    })
    .unwrap();
    // Same set again: nothing moves, the reload counter neither.
    smaller.jobs.retain(|j| j.name != "d");
    let version = f.reader.schedules_version().unwrap();
    let o = import(&f, smaller).unwrap();
    assert_eq!(o.count(EntryAction::Unchanged), o.entries.len(), "{o:?}");
    assert_eq!(f.reader.schedules_version().unwrap(), version);
}
