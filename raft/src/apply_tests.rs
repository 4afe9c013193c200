//! `apply`'s rules, on a real sled tree.

use windflow_protocol::{
    ContextId, HumanDuration, JobId, JobSpec, NodeId, RunId, RunOutcome, RunStatus, TaskSpec,
    Timestamp,
};

use crate::command::{Applied, ApplyError, Command, Response};
use crate::reader::StateReader;
use crate::state::{self, Pending};

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) reader: StateReader,
}

/// A state tree of its own, and the reader over it.
pub(crate) fn store() -> (tempfile::TempDir, StateReader) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let reader = StateReader::new(db.open_tree("state").unwrap());
    (dir, reader)
}

/// Applies one command and commits its writes, as the state machine does.
pub(crate) fn apply(reader: &StateReader, cmd: Command) -> Response {
    let mut p = Pending::new(reader.tree());
    let response = state::apply(&mut p, cmd).unwrap();
    reader.commit(p).unwrap();
    response
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let (_dir, reader) = store();
        Fixture { _dir, reader }
    }

    pub(crate) fn apply(&self, cmd: Command) -> Response {
        apply(&self.reader, cmd)
    }

    fn job(&self, name: &str) -> JobId {
        match self.apply(Command::CreateJob {
            spec: spec(name),
            at: Timestamp(1),
        }) {
            Ok(Applied::Job(j)) => j.id,
            other => panic!("{other:?}"),
        }
    }

    fn run(&self, job: JobId) -> RunId {
        match self.apply(Command::CreateRun {
            job,
            at: Timestamp(2),
        }) {
            Ok(Applied::Run(r)) => r.id,
            other => panic!("{other:?}"),
        }
    }

    fn finish(&self, run: RunId, stdout: &str) -> Response {
        self.apply(Command::RunFinished {
            run,
            node: NodeId(1),
            outcome: RunOutcome::Succeeded,
            exit_code: Some(0),
            attempts: 1,
            started_at: Timestamp(3),
            duration: HumanDuration::from_millis(5),
            stdout: stdout.into(),
            stdout_truncated: false,
            stderr_tail: String::new(),
            error: None,
            at: Timestamp(4),
        })
    }

    fn count(&self, status: RunStatus) -> u64 {
        self.reader
            .run_counts()
            .unwrap()
            .into_iter()
            .find(|(s, _)| *s == status)
            .unwrap()
            .1
    }
}

fn spec(name: &str) -> JobSpec {
    JobSpec::exec(name, TaskSpec::exec(name, "true"))
}

#[test]
fn job_ids_count_up_from_one_and_are_never_reused() {
    let f = Fixture::new();
    assert_eq!(f.job("a"), JobId(1));
    assert_eq!(f.job("b"), JobId(2));
    assert!(
        f.apply(Command::DeleteJob {
            job: JobId(2),
            at: Timestamp(5)
        })
        .is_ok()
    );
    assert_eq!(
        f.job("b"),
        JobId(3),
        "a deleted job's ID is not handed out again"
    );
    assert_eq!(f.reader.job_count().unwrap(), 2);
    let names: Vec<String> = f
        .reader
        .jobs()
        .unwrap()
        .into_iter()
        .map(|j| j.spec.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn job_names_are_unique_and_lookups_follow_deletes() {
    let f = Fixture::new();
    f.job("backup");
    assert_eq!(
        f.apply(Command::CreateJob {
            spec: spec("backup"),
            at: Timestamp(1)
        }),
        Err(ApplyError::NameTaken {
            kind: "job".into(),
            name: "backup".into()
        })
    );
    assert_eq!(
        f.reader
            .job_by_name(&Default::default(), "backup")
            .unwrap()
            .unwrap()
            .id,
        JobId(1)
    );
    assert_eq!(
        f.reader
            .context(ContextId::Job(JobId(1)))
            .unwrap()
            .unwrap()
            .value,
        ""
    );
    f.apply(Command::DeleteJob {
        job: JobId(1),
        at: Timestamp(2),
    })
    .unwrap();
    assert!(
        f.reader
            .job_by_name(&Default::default(), "backup")
            .unwrap()
            .is_none()
    );
    assert!(
        f.reader
            .context(ContextId::Job(JobId(1)))
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        f.apply(Command::DeleteJob {
            job: JobId(1),
            at: Timestamp(3)
        }),
        Err(ApplyError::NotFound { .. })
    ));
}

#[test]
fn a_run_goes_pending_running_finished_and_writes_the_context() {
    let f = Fixture::new();
    let job = f.job("a");
    assert!(matches!(
        f.apply(Command::CreateRun {
            job: JobId(9),
            at: Timestamp(1)
        }),
        Err(ApplyError::NotFound { .. })
    ));
    let run = f.run(job);
    assert_eq!(f.count(RunStatus::Pending), 1);
    assert_eq!(
        f.reader.runs_with_status(RunStatus::Pending).unwrap()[0].id,
        run
    );

    f.apply(Command::RunDispatched {
        run,
        node: NodeId(1),
        at: Timestamp(3),
    })
    .unwrap();
    assert!(matches!(
        f.apply(Command::RunDispatched {
            run,
            node: NodeId(2),
            at: Timestamp(3)
        }),
        Err(ApplyError::InvalidTransition { .. })
    ));
    assert_eq!(
        (f.count(RunStatus::Pending), f.count(RunStatus::Running)),
        (0, 1)
    );
    // The status index agrees with the counts: the dispatcher reads pending runs from it.
    assert!(
        f.reader
            .runs_with_status(RunStatus::Pending)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        f.reader.runs_with_status(RunStatus::Running).unwrap()[0].id,
        run
    );

    let Ok(Applied::Run(done)) = f.finish(run, "out\n") else {
        panic!()
    };
    assert_eq!(
        (done.status, done.exit_code),
        (RunStatus::Succeeded, Some(0))
    );
    let ctx = f.reader.context(ContextId::Job(job)).unwrap().unwrap();
    assert_eq!(
        (ctx.value.as_str(), ctx.run, ctx.node),
        ("out\n", Some(run), Some(NodeId(1)))
    );

    // A result sent again after a reconnect changes nothing.
    let Ok(Applied::Run(again)) = f.finish(run, "different") else {
        panic!()
    };
    assert_eq!(again, done);
    assert_eq!(
        f.reader
            .context(ContextId::Job(job))
            .unwrap()
            .unwrap()
            .value,
        "out\n"
    );
    assert_eq!(
        (f.count(RunStatus::Running), f.count(RunStatus::Succeeded)),
        (0, 1)
    );
    assert!(
        f.reader
            .runs_with_status(RunStatus::Running)
            .unwrap()
            .is_empty()
    );
    assert!(
        f.reader
            .runs_with_status(RunStatus::Pending)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        f.reader.runs_with_status(RunStatus::Succeeded).unwrap()[0].id,
        run
    );
}

#[test]
fn deleting_a_job_fails_its_pending_runs_and_keeps_history() {
    let f = Fixture::new();
    let job = f.job("a");
    let pending = f.run(job);
    let done = f.run(job);
    f.apply(Command::RunDispatched {
        run: done,
        node: NodeId(1),
        at: Timestamp(3),
    })
    .unwrap();
    f.finish(done, "x").unwrap();
    f.apply(Command::DeleteJob {
        job,
        at: Timestamp(9),
    })
    .unwrap();
    let failed = f.reader.run(pending).unwrap().unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(failed.error.unwrap().contains("deleted"));
    assert_eq!(
        f.reader.run(done).unwrap().unwrap().status,
        RunStatus::Succeeded
    );
    assert_eq!(f.reader.runs_of_job(job).unwrap().len(), 2);
    assert_eq!(f.count(RunStatus::Pending), 0);
}

#[test]
fn nodes_register_and_say_hello() {
    let f = Fixture::new();
    let Ok(Applied::Node(n)) = f.apply(Command::RegisterNode {
        name: "h".into(),
        drivers: vec![],
        at: Timestamp(1),
    }) else {
        panic!()
    };
    assert_eq!(n.id, NodeId(1));
    let hello = |node| Command::NodeHello {
        node,
        hostname: "host-a".into(),
        drivers: vec![windflow_protocol::DriverKind::Exec],
        agent_version: "0.1.0".into(),
        fingerprint: Default::default(),
        at: Timestamp(7),
    };
    let Ok(Applied::Node(n)) = f.apply(hello(NodeId(1))) else {
        panic!()
    };
    assert_eq!(
        (n.name.as_str(), n.last_seen_at),
        ("host-a", Some(Timestamp(7)))
    );
    assert!(matches!(
        f.apply(hello(NodeId(5))),
        Err(ApplyError::NotFound { .. })
    ));
}

#[test]
fn apply_caps_oversized_output_itself() {
    let f = Fixture::new();
    let job = f.job("big");
    let run = f.run(job);
    let max = windflow_protocol::CONTEXT_MAX_BYTES;
    let tail_max = windflow_protocol::STDERR_TAIL_BYTES;
    let Ok(Applied::Run(done)) = f.apply(Command::RunFinished {
        run,
        node: NodeId(1),
        outcome: RunOutcome::Failed,
        exit_code: Some(1),
        attempts: 1,
        started_at: Timestamp(3),
        duration: HumanDuration::from_millis(5),
        stdout: "o".repeat(max + 10),
        stdout_truncated: false,
        stderr_tail: format!("{}end", "e".repeat(tail_max)),
        error: None,
        at: Timestamp(4),
    }) else {
        panic!()
    };
    assert_eq!(done.stderr_tail.len(), tail_max);
    assert!(done.stderr_tail.ends_with("end"));
    let ctx = f.reader.context(ContextId::Job(job)).unwrap().unwrap();
    assert_eq!((ctx.value.len(), ctx.truncated), (max, true));
}

#[test]
fn a_backup_restores_the_state_but_not_raft_bookkeeping() {
    let source = Fixture::new();
    source.job("kept");
    let file = source.reader.backup(Timestamp(9)).unwrap();
    let backup = crate::backup::Backup::read(&file).unwrap();
    assert!(!backup.is_empty());

    let target = Fixture::new();
    target.job("replaced");
    target
        .reader
        .tree()
        .insert(crate::state::LAST_APPLIED, b"raft's own".to_vec())
        .unwrap();
    assert!(matches!(
        target.apply(backup.into_command()),
        Ok(Applied::Restored { .. })
    ));
    let names: Vec<String> = target
        .reader
        .jobs()
        .unwrap()
        .into_iter()
        .map(|j| j.spec.name)
        .collect();
    assert_eq!(names, ["kept"]);
    assert!(
        target
            .reader
            .job_by_name(&Default::default(), "replaced")
            .unwrap()
            .is_none()
    );
    assert_eq!(
        target
            .reader
            .tree()
            .get(crate::state::LAST_APPLIED)
            .unwrap()
            .unwrap()
            .as_ref(),
        b"raft's own"
    );
    assert_eq!(
        target.job("next"),
        JobId(2),
        "counters come from the backup"
    );
}

#[test]
fn only_backups_of_this_format_are_read() {
    use crate::backup::{Backup, BackupError};
    assert_eq!(
        Backup::read(b"garbage").unwrap_err(),
        BackupError::NotABackup
    );
    assert_eq!(
        Backup::read(b"WFBACKUP").unwrap_err(),
        BackupError::NotABackup
    );
    let f = Fixture::new();
    let mut file = f.reader.backup(Timestamp(1)).unwrap();
    file[8] = 9; // the format, right after the magic (a small varint)
    assert_eq!(
        Backup::read(&file).unwrap_err(),
        BackupError::Format { found: 9 }
    );
}

#[test]
fn a_batch_applies_in_order_and_answers_each_command() {
    let f = Fixture::new();
    let batch = Command::Batch(vec![
        Command::CreateJob {
            spec: spec("a"),
            at: Timestamp(1),
        },
        Command::CreateJob {
            spec: spec("a"),
            at: Timestamp(1),
        },
        // Sees the job created two commands before, though nothing is committed yet.
        Command::CreateRun {
            job: JobId(1),
            at: Timestamp(2),
        },
        Command::DeleteJob {
            job: JobId(1),
            at: Timestamp(3),
        },
    ]);
    let Ok(Applied::Batch(answers)) = f.apply(batch) else {
        panic!()
    };
    assert!(matches!(&answers[0], Ok(Applied::Job(j)) if j.id == JobId(1)));
    assert!(matches!(&answers[1], Err(ApplyError::NameTaken { .. })));
    assert!(matches!(&answers[2], Ok(Applied::Run(r)) if r.job == JobId(1)));
    assert!(matches!(&answers[3], Err(ApplyError::NotBatchable { .. })));
    assert!(
        f.reader.job(JobId(1)).unwrap().is_some(),
        "the refused delete changed nothing"
    );
    assert_eq!(f.count(RunStatus::Pending), 1);
}
