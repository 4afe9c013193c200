//! The exec driver against real processes.

use std::time::{Duration, Instant};

use windflow_protocol::TaskSpec;

use super::*;

fn task(command: &str) -> TaskSpec {
    let mut task = TaskSpec::exec("t", command);
    task.retry.delay = HumanDuration::from_millis(10);
    task
}

async fn run_task(t: &TaskSpec) -> (TaskFinished, Vec<AgentMessage>) {
    let (tx, mut rx) = mpsc::channel(1024);
    let finished = run_exec(RunId(1), t, tx).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (finished, events)
}

#[tokio::test]
async fn a_command_that_succeeds_reports_its_stdout() {
    let (f, events) = run_task(&task("echo hello; echo oops >&2")).await;
    assert_eq!(f.outcome, RunOutcome::Succeeded);
    assert_eq!((f.exit_code, f.attempts), (Some(0), 1));
    assert_eq!(f.stdout, b"hello\n");
    assert_eq!(f.stderr_tail, b"oops\n");
    assert!(events.iter().any(|e| matches!(e, AgentMessage::Output(c) if c.data == b"hello\n" && c.stream == OutputStream::Stdout)));
}

#[tokio::test]
async fn a_failing_command_is_retried_and_reports_its_exit_code() {
    let mut t = task("exit 3");
    t.retry.max_retries = 2;
    let (f, events) = run_task(&t).await;
    assert_eq!(f.outcome, RunOutcome::Failed);
    assert_eq!((f.exit_code, f.attempts), (Some(3), 3));
    let starts = events
        .iter()
        .filter(|e| matches!(e, AgentMessage::AttemptStarted { .. }))
        .count();
    assert_eq!(starts, 3);
}

#[tokio::test]
async fn a_retry_that_succeeds_stops_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("tried");
    let mut t = task(&format!(
        "if [ -e {m} ]; then echo ok; else touch {m}; exit 1; fi",
        m = marker.display()
    ));
    t.retry.max_retries = 5;
    let (f, _) = run_task(&t).await;
    assert_eq!((f.outcome, f.attempts), (RunOutcome::Succeeded, 2));
    assert_eq!(f.stdout, b"ok\n");
}

fn process_is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut t = task(&format!(
        "sleep 300 & echo $! > {}; wait",
        pidfile.display()
    ));
    t.timeout = Some(HumanDuration::from_secs(1));
    let started = Instant::now();
    let (f, _) = run_task(&t).await;
    assert_eq!(f.outcome, RunOutcome::TimedOut);
    assert_eq!(f.exit_code, None);
    assert!(f.error.as_deref().unwrap().contains("timed out after 1s"));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the attempt did not end at its timeout"
    );
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process_is_dead(pid) {
        assert!(
            Instant::now() < deadline,
            "the child sleep {pid} outlived its timed-out parent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn background_children_do_not_hold_the_run_open() {
    let (f, _) = run_task(&task("sleep 300 & echo started")).await;
    assert_eq!(f.outcome, RunOutcome::Succeeded);
    assert_eq!(f.stdout, b"started\n");
    assert!(f.duration.0 < Duration::from_secs(60));
}

#[tokio::test]
async fn a_missing_workdir_fails_naming_it() {
    let mut t = task("true");
    t.retry.max_retries = 3;
    let DriverConfig::Exec(cfg) = &mut t.driver;
    cfg.workdir = Some("/no/such/dir".into());
    let (f, events) = run_task(&t).await;
    assert_eq!((f.outcome, f.attempts), (RunOutcome::Failed, 1));
    assert!(f.error.unwrap().contains("/no/such/dir"));
    assert!(events.is_empty(), "nothing was started");
}

#[tokio::test]
async fn workdir_and_env_reach_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = task("echo \"$GREETING\"; pwd");
    t.env.insert("GREETING".into(), "hi there".into());
    let DriverConfig::Exec(cfg) = &mut t.driver;
    cfg.workdir = Some(dir.path().display().to_string());
    let (f, _) = run_task(&t).await;
    let expected = format!(
        "hi there\n{}\n",
        dir.path().canonicalize().unwrap().display()
    );
    assert_eq!(String::from_utf8(f.stdout).unwrap(), expected);
}

#[tokio::test]
async fn stdout_over_the_cap_is_cut_and_flagged() {
    let (tx, _rx) = mpsc::channel(4096);
    let f = run_exec_capped(
        RunId(1),
        &task("head -c 200000 /dev/zero | tr '\\0' 'a'"),
        tx,
        1000,
    )
    .await;
    assert_eq!(f.outcome, RunOutcome::Succeeded);
    assert_eq!(f.stdout.len(), 1000);
    assert!(f.stdout_truncated);
}

#[tokio::test]
async fn stderr_keeps_its_tail() {
    let (f, _) = run_task(&task(
        "head -c 100000 /dev/zero | tr '\\0' 'e' >&2; echo END >&2; exit 1",
    ))
    .await;
    assert_eq!(f.stderr_tail.len(), STDERR_TAIL_BYTES);
    assert!(f.stderr_tail.ends_with(b"END\n"));
}

#[tokio::test]
async fn a_command_killed_by_a_signal_names_it() {
    let (f, _) = run_task(&task("kill -9 $$")).await;
    assert_eq!((f.outcome, f.exit_code), (RunOutcome::Failed, None));
    assert!(
        f.error.as_deref().unwrap().contains("SIGKILL"),
        "{:?}",
        f.error
    );
}

#[tokio::test]
async fn an_abandoned_run_kills_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let t = task(&format!(
        "sleep 300 & echo $! > {}.tmp; mv {0}.tmp {0}; wait",
        pidfile.display()
    ));
    let (tx, _rx) = mpsc::channel(64);
    let handle = tokio::spawn(async move { run_exec(RunId(1), &t, tx).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid: u32 = loop {
        if let Ok(s) = std::fs::read_to_string(&pidfile) {
            break s.trim().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!process_is_dead(pid));
    handle.abort();
    let _ = handle.await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process_is_dead(pid) {
        assert!(
            Instant::now() < deadline,
            "the child sleep {pid} outlived its abandoned run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
