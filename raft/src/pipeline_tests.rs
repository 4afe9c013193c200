//! `apply`'s rules for pipelines, their runs, contexts and run retention.

use windflow_protocol::{
    ContextId, FailurePolicy, HumanDuration, JobId, JobSpec, NodeId, PipelineId, PipelineRun,
    PipelineRunId, PipelineRunStatus, PipelineSpec, PipelineStep, RunId, RunOutcome, RunStatus,
    StepStatus, TaskSpec, Timestamp,
};

use crate::apply_tests::{apply, store};
use crate::command::{Applied, ApplyError, Command, Response};
use crate::reader::StateReader;

struct F {
    _dir: tempfile::TempDir,
    r: StateReader,
}

impl F {
    fn new() -> Self {
        let (_dir, r) = store();
        F { _dir, r }
    }

    fn apply(&self, cmd: Command) -> Response {
        apply(&self.r, cmd)
    }

    fn job(&self, name: &str) -> JobId {
        match self.apply(Command::CreateJob {
            spec: JobSpec::exec(name, TaskSpec::exec(name, "true")),
            at: Timestamp(1),
        }) {
            Ok(Applied::Job(j)) => j.id,
            other => panic!("{other:?}"),
        }
    }

    /// A → (B, C) → D, as jobs 1 to 4.
    fn diamond(&self, on_failure: FailurePolicy) -> PipelineId {
        let [a, b, c, d] = ["A", "B", "C", "D"].map(|n| self.job(n));
        let step = |job, deps: &[JobId]| PipelineStep {
            job,
            depends_on: deps.to_vec(),
        };
        let spec = PipelineSpec {
            name: "diamond".into(),
            namespace: Default::default(),
            // Given out of order: apply keeps them in dependency order.
            steps: vec![step(d, &[b, c]), step(b, &[a]), step(c, &[a]), step(a, &[])],
            on_failure,
        };
        match self.apply(Command::CreatePipeline {
            spec,
            at: Timestamp(1),
        }) {
            Ok(Applied::Pipeline(p)) => {
                let order: Vec<_> = p.spec.steps.iter().map(|s| s.job).collect();
                assert_eq!(order, [a, b, c, d]);
                p.id
            }
            other => panic!("{other:?}"),
        }
    }

    fn start(&self, pipeline: PipelineId, start_at: Option<Timestamp>) -> PipelineRun {
        match self.apply(Command::CreatePipelineRun {
            pipeline,
            start_at,
            at: Timestamp(10),
        }) {
            Ok(Applied::PipelineRun(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn prun(&self, id: PipelineRunId) -> PipelineRun {
        self.r.pipeline_run(id).unwrap().unwrap()
    }

    fn step_run(&self, id: PipelineRunId, job: u64) -> RunId {
        let pr = self.prun(id);
        let step = pr.steps.iter().find(|s| s.job == JobId(job)).unwrap();
        step.run.unwrap()
    }

    fn finish(&self, run: RunId, ok: bool, stdout: &str, at: u64) {
        let r = self.apply(Command::RunFinished {
            run,
            node: NodeId(1),
            outcome: if ok {
                RunOutcome::Succeeded
            } else {
                RunOutcome::Failed
            },
            exit_code: Some(if ok { 0 } else { 3 }),
            attempts: 1,
            started_at: Timestamp(at - 1),
            duration: HumanDuration::from_millis(1),
            stdout: stdout.into(),
            stdout_truncated: false,
            stderr_tail: String::new(),
            error: None,
            at: Timestamp(at),
        });
        assert!(r.is_ok(), "{r:?}");
    }

    fn statuses(&self, id: PipelineRunId) -> Vec<StepStatus> {
        self.prun(id).steps.iter().map(|s| s.status).collect()
    }
}

use StepStatus::{Running, Skipped, Succeeded, Waiting};

#[test]
fn a_finished_step_starts_its_dependents_in_the_same_entry() {
    let f = F::new();
    let p = f.diamond(FailurePolicy::Stop);
    let pr = f.start(p, None);
    assert_eq!(pr.status, PipelineRunStatus::Running);
    assert_eq!(f.statuses(pr.id), [Running, Waiting, Waiting, Waiting]);
    let a = f.step_run(pr.id, 1);
    assert_eq!(f.r.run(a).unwrap().unwrap().pipeline_run, Some(pr.id));
    f.finish(a, true, "a", 20);
    // B and C are both queued at once: independent branches run in parallel.
    assert_eq!(f.statuses(pr.id), [Succeeded, Running, Running, Waiting]);
    assert_eq!(f.r.runs_with_status(RunStatus::Pending).unwrap().len(), 2);
    f.finish(f.step_run(pr.id, 2), true, "b", 30);
    assert_eq!(f.statuses(pr.id), [Succeeded, Succeeded, Running, Waiting]);
    f.finish(f.step_run(pr.id, 3), true, "c", 31);
    assert_eq!(
        f.statuses(pr.id),
        [Succeeded, Succeeded, Succeeded, Running]
    );
    f.finish(f.step_run(pr.id, 4), true, "d", 40);
    let done = f.prun(pr.id);
    assert_eq!(done.status, PipelineRunStatus::Succeeded);
    assert_eq!(done.finished_at, Some(Timestamp(40)));
    let ctx = f.r.context(ContextId::of_pipeline(p)).unwrap().unwrap();
    let parts: Vec<_> = ctx.parts.iter().map(|c| c.value.as_str()).collect();
    assert_eq!(parts, ["a", "b", "c", "d"]);
    assert_eq!(ctx.value, "d");
    assert_eq!(ctx.pipeline_run, Some(pr.id));
    assert_eq!(ctx.duration, Some(HumanDuration::from_millis(30)));
}

#[test]
fn continue_skips_dependents_and_retry_runs_only_those_again() {
    let f = F::new();
    let p = f.diamond(FailurePolicy::Continue);
    let pr = f.start(p, None);
    f.finish(f.step_run(pr.id, 1), true, "a", 20);
    let b = f.step_run(pr.id, 2);
    f.finish(b, false, "", 30);
    // C still runs; D is skipped, naming B.
    assert_eq!(
        f.statuses(pr.id),
        [Succeeded, StepStatus::Failed, Running, Skipped]
    );
    let d = &f.prun(pr.id).steps[3];
    assert_eq!(d.reason.as_deref(), Some("depends on `B`, which failed"));
    let c = f.step_run(pr.id, 3);
    f.finish(c, true, "c", 31);
    assert_eq!(f.prun(pr.id).status, PipelineRunStatus::Failed);

    let retried = match f.apply(Command::RetryPipelineRun {
        run: pr.id,
        at: Timestamp(50),
    }) {
        Ok(Applied::PipelineRun(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(retried.attempts, 2);
    assert_eq!(f.statuses(pr.id), [Succeeded, Running, Succeeded, Waiting]);
    let b2 = f.step_run(pr.id, 2);
    assert_ne!(b2, b);
    assert_eq!(f.prun(pr.id).steps[1].earlier_runs, [b]);
    // A and C keep their runs.
    assert_eq!(f.step_run(pr.id, 3), c);
    f.finish(b2, true, "b2", 60);
    f.finish(f.step_run(pr.id, 4), true, "d", 70);
    assert_eq!(f.prun(pr.id).status, PipelineRunStatus::Succeeded);
    let counts = f.r.pipeline_run_counts().unwrap();
    assert!(
        counts.contains(&(PipelineRunStatus::Succeeded, 1)),
        "{counts:?}"
    );
    assert!(
        counts.contains(&(PipelineRunStatus::Failed, 0)),
        "{counts:?}"
    );
    assert!(
        counts.contains(&(PipelineRunStatus::Running, 0)),
        "{counts:?}"
    );
    assert_eq!(f.r.pipeline_count().unwrap(), 1);
    // Only a failed run can be retried.
    assert!(matches!(
        f.apply(Command::RetryPipelineRun {
            run: pr.id,
            at: Timestamp(80)
        }),
        Err(ApplyError::Refused(m)) if m.contains("succeeded")
    ));
}

#[test]
fn stop_skips_every_step_not_started() {
    let f = F::new();
    let p = f.diamond(FailurePolicy::Stop);
    let pr = f.start(p, None);
    f.finish(f.step_run(pr.id, 1), true, "a", 20);
    f.finish(f.step_run(pr.id, 2), false, "", 30);
    // C was already running and finishes; D never starts.
    assert_eq!(
        f.statuses(pr.id),
        [Succeeded, StepStatus::Failed, Running, Skipped]
    );
    f.finish(f.step_run(pr.id, 3), true, "c", 31);
    assert_eq!(f.prun(pr.id).status, PipelineRunStatus::Failed);
}

#[test]
fn a_refused_step_fails_with_its_reason() {
    let f = F::new();
    let p = f.diamond(FailurePolicy::Continue);
    let pr = f.start(p, None);
    let a = f.step_run(pr.id, 1);
    let r = f.apply(Command::RunRefused {
        run: a,
        error: "context `X` is empty".into(),
        at: Timestamp(12),
    });
    assert!(r.is_ok(), "{r:?}");
    let done = f.prun(pr.id);
    assert_eq!(done.status, PipelineRunStatus::Failed);
    assert_eq!(
        done.steps[0].reason.as_deref(),
        Some("context `X` is empty")
    );
    assert!(done.steps[1..].iter().all(|s| s.status == Skipped));
    // A run refused twice, or after it started, is an invalid transition.
    assert!(matches!(
        f.apply(Command::RunRefused {
            run: a,
            error: "again".into(),
            at: Timestamp(13)
        }),
        Err(ApplyError::InvalidTransition { .. })
    ));
}

#[test]
fn a_scheduled_run_starts_once() {
    let f = F::new();
    let p = f.diamond(FailurePolicy::Stop);
    let pr = f.start(p, Some(Timestamp(1000)));
    assert_eq!(pr.status, PipelineRunStatus::Scheduled);
    assert_eq!(
        f.r.scheduled_pipeline_runs(10).unwrap(),
        [(Timestamp(1000), pr.id)]
    );
    assert!(f.r.runs_with_status(RunStatus::Pending).unwrap().is_empty());
    for at in [1000, 1001] {
        let r = f.apply(Command::StartPipelineRun {
            run: pr.id,
            at: Timestamp(at),
        });
        assert!(r.is_ok(), "{r:?}");
    }
    assert_eq!(f.r.runs_with_status(RunStatus::Pending).unwrap().len(), 1);
    assert!(f.r.scheduled_pipeline_runs(10).unwrap().is_empty());
    // A start time already past starts at once.
    assert_eq!(
        f.start(p, Some(Timestamp(5))).status,
        PipelineRunStatus::Running
    );
}

#[test]
fn pipelines_are_checked_and_their_jobs_kept() {
    let f = F::new();
    let p = f.diamond(FailurePolicy::Stop);
    let step = |job: u64, deps: &[u64]| PipelineStep {
        job: JobId(job),
        depends_on: deps.iter().map(|d| JobId(*d)).collect(),
    };
    let create = |name: &str, steps| {
        f.apply(Command::CreatePipeline {
            spec: PipelineSpec {
                name: name.into(),
                namespace: Default::default(),
                steps,
                on_failure: FailurePolicy::Stop,
            },
            at: Timestamp(2),
        })
    };
    assert!(matches!(
        create("diamond", vec![step(1, &[])]),
        Err(ApplyError::NameTaken { .. })
    ));
    assert!(matches!(
        create("ghost", vec![step(9, &[])]),
        Err(ApplyError::NotFound { .. })
    ));
    assert!(matches!(
        create("loop", vec![step(1, &[2]), step(2, &[1])]),
        Err(ApplyError::Refused(m)) if m.contains("cycle")
    ));
    // A job that is a step cannot be deleted while the pipeline exists.
    assert!(matches!(
        f.apply(Command::DeleteJob { job: JobId(2), at: Timestamp(3) }),
        Err(ApplyError::Refused(m)) if m.contains("diamond")
    ));
    let scheduled = f.start(p, Some(Timestamp(1000)));
    assert!(
        f.apply(Command::DeletePipeline {
            pipeline: p,
            at: Timestamp(4)
        })
        .is_ok()
    );
    assert_eq!(f.prun(scheduled.id).status, PipelineRunStatus::Failed);
    assert!(f.r.scheduled_pipeline_runs(10).unwrap().is_empty());
    assert!(f.r.context(ContextId::of_pipeline(p)).unwrap().is_none());
    assert!(
        f.apply(Command::DeleteJob {
            job: JobId(2),
            at: Timestamp(5)
        })
        .is_ok()
    );
}

#[test]
fn contexts_reset_and_runs_prune() {
    let f = F::new();
    let j = f.job("a");
    let mut runs = Vec::new();
    for i in 0..3 {
        let Ok(Applied::Run(r)) = f.apply(Command::CreateRun {
            job: j,
            at: Timestamp(10 + i),
        }) else {
            panic!()
        };
        runs.push(r.id);
    }
    f.finish(runs[0], true, "out", 20);
    let reset = f.apply(Command::ResetContext {
        context: ContextId::of_job(j),
        at: Timestamp(21),
    });
    assert!(matches!(reset, Ok(Applied::Context(c)) if c.value.is_empty() && c.run.is_none()));
    // The pending ones are kept.
    assert_eq!(
        f.apply(Command::PruneRuns {
            runs: runs.clone(),
            at: Timestamp(22)
        }),
        Ok(Applied::Pruned(1))
    );
    let left: Vec<_> = f.r.runs_of_job(j).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(left, runs[1..]);
    let counts = f.r.run_counts().unwrap();
    // Counts are of runs that ended, kept or not.
    assert!(counts.contains(&(RunStatus::Succeeded, 1)), "{counts:?}");
    assert!(counts.contains(&(RunStatus::Pending, 2)), "{counts:?}");
}
