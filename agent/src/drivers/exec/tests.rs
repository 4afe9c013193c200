//! The exec driver's supervisor work against real processes, run in this process (the
//! supervisor as a process of its own is tested in `agent/tests/supervisor.rs`).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use windflow_protocol::messages::OutputStream;
use windflow_protocol::{DriverConfig, HumanDuration, RunOutcome, STDERR_TAIL_BYTES, TaskSpec};

use super::files::{ExecDir, ExecResult, SuperviseSpec};
use super::supervise::run_all;
use super::supervised::{Recovered, Supervised, SupervisedHandle};

fn task(command: &str) -> TaskSpec {
    let mut task = TaskSpec::exec("t", command);
    task.retry.delay = HumanDuration::from_millis(10);
    task
}

async fn run_capped(t: &TaskSpec, stdout_cap: usize) -> (ExecResult, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let exec = ExecDir::new(dir.path());
    let spec = SuperviseSpec {
        task: t.clone(),
        stdout_cap,
        output_file_cap: super::OUTPUT_FILE_CAP,
        stop_grace: None,
        logs: None,
    };
    let result = run_all(&exec, &spec, &CancellationToken::new()).await;
    (result, dir)
}

async fn run_task(t: &TaskSpec) -> (ExecResult, tempfile::TempDir) {
    run_capped(t, windflow_protocol::CONTEXT_MAX_BYTES).await
}

#[tokio::test]
async fn a_command_that_succeeds_reports_its_stdout_and_leaves_it_in_files() {
    let (f, dir) = run_task(&task("echo hello; echo oops >&2")).await;
    assert_eq!(f.outcome, RunOutcome::Succeeded);
    assert_eq!((f.exit_code, f.attempts), (Some(0), 1));
    assert_eq!(f.stdout, b"hello\n");
    assert_eq!(f.stderr_tail, b"oops\n");
    let exec = ExecDir::new(dir.path());
    assert_eq!(
        std::fs::read(exec.output(1, OutputStream::Stdout)).unwrap(),
        b"hello\n"
    );
    assert_eq!(
        std::fs::read(exec.output(1, OutputStream::Stderr)).unwrap(),
        b"oops\n"
    );
    assert!(
        exec.group(1).exists(),
        "the attempt's process group is recorded"
    );
}

#[tokio::test]
async fn a_failing_command_is_retried_and_reports_its_exit_code() {
    let mut t = task("echo try; exit 3");
    t.retry.max_retries = 2;
    let (f, dir) = run_task(&t).await;
    assert_eq!(f.outcome, RunOutcome::Failed);
    assert_eq!((f.exit_code, f.attempts), (Some(3), 3));
    let exec = ExecDir::new(dir.path());
    for attempt in 1..=3 {
        assert_eq!(
            std::fs::read(exec.output(attempt, OutputStream::Stdout)).unwrap(),
            b"try\n"
        );
    }
    assert!(!exec.output(4, OutputStream::Stdout).exists());
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

async fn wait_dead(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process_is_dead(pid) {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_pid(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
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
    let pid = read_pid(&pidfile).unwrap();
    wait_dead(pid, "the child sleep outlived its timed-out parent").await;
}

#[tokio::test]
async fn a_stop_kills_the_process_group_and_ends_the_retries() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut t = task(&format!(
        "sleep 300 & echo $! > {p}.tmp; mv {p}.tmp {p}; wait",
        p = pidfile.display()
    ));
    t.retry.max_retries = 3;
    let exec = ExecDir::new(dir.path().join("exec"));
    exec.create().unwrap();
    let stop = CancellationToken::new();
    let spec = super::spec(t);
    let running = {
        let (exec, stop) = (exec.clone(), stop.clone());
        tokio::spawn(async move { run_all(&exec, &spec, &stop).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(pid) = read_pid(&pidfile) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.cancel();
    let f = running.await.unwrap();
    assert_eq!((f.outcome, f.attempts), (RunOutcome::Failed, 1));
    assert!(f.error.unwrap().contains("stopped"));
    wait_dead(pid, "the child sleep outlived the stop").await;
}

#[tokio::test]
async fn a_service_task_is_stopped_with_sigterm_first_and_ran_once() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("termed");
    let pidfile = dir.path().join("pid");
    let mut t = task(&format!(
        "trap 'echo bye > {m}; exit 7' TERM; echo $$ > {p}.tmp; mv {p}.tmp {p}; while true; do sleep 0.05; done",
        m = marker.display(),
        p = pidfile.display()
    ));
    t.retry.max_retries = 3;
    t.timeout = Some(HumanDuration::from_millis(1));
    let exec = ExecDir::new(dir.path().join("exec"));
    exec.create().unwrap();
    let stop = CancellationToken::new();
    let spec = super::service_spec(t, Duration::from_secs(5), None);
    let running = {
        let (exec, stop) = (exec.clone(), stop.clone());
        tokio::spawn(async move { run_all(&exec, &spec, &stop).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_pid(&pidfile).is_none() {
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No timeout applies to a long-running task: it is still there well past the 1ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!running.is_finished(), "a service task must not time out");
    stop.cancel();
    let f = running.await.unwrap();
    assert_eq!(f.attempts, 1, "no retries for a service task");
    assert!(
        f.error.clone().unwrap_or_default().contains("stopped"),
        "{f:?}"
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "bye\n");
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
    let DriverConfig::Exec(cfg) = &mut t.driver else {
        unreachable!("TaskSpec::exec makes an exec task")
    };
    cfg.workdir = Some("/no/such/dir".into());
    let (f, dir) = run_task(&t).await;
    assert_eq!((f.outcome, f.attempts), (RunOutcome::Failed, 1));
    assert!(f.error.unwrap().contains("/no/such/dir"));
    assert!(
        !ExecDir::new(dir.path())
            .output(1, OutputStream::Stdout)
            .exists(),
        "nothing was started"
    );
}

#[tokio::test]
async fn workdir_and_env_reach_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = task("echo \"$GREETING\"; pwd");
    t.env.insert("GREETING".into(), "hi there".into());
    let DriverConfig::Exec(cfg) = &mut t.driver else {
        unreachable!("TaskSpec::exec makes an exec task")
    };
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
    let (f, _) = run_capped(&task("head -c 200000 /dev/zero | tr '\\0' 'a'"), 1000).await;
    assert_eq!(f.outcome, RunOutcome::Succeeded);
    assert_eq!(f.stdout.len(), 1000);
    assert!(f.stdout_truncated);
}

#[tokio::test]
async fn an_output_file_stops_at_its_cap_but_the_result_keeps_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let exec = ExecDir::new(dir.path());
    let spec = SuperviseSpec {
        task: task("head -c 100000 /dev/zero | tr '\\0' 'e' >&2; echo END >&2"),
        stdout_cap: 10,
        output_file_cap: 5000,
        stop_grace: None,
        logs: None,
    };
    let f = run_all(&exec, &spec, &CancellationToken::new()).await;
    let in_file = std::fs::metadata(exec.output(1, OutputStream::Stderr))
        .unwrap()
        .len();
    assert_eq!(in_file, 5000);
    assert!(f.stderr_tail.ends_with(b"END\n"));
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
async fn an_execution_whose_supervisor_never_existed_is_reported_failed() {
    let dir = tempfile::tempdir().unwrap();
    let exec = ExecDir::new(dir.path().join("R1"));
    exec.create().unwrap();
    // Output of attempt 1, no supervisor, no result: what a vanished supervisor leaves.
    std::fs::write(exec.output(1, OutputStream::Stdout), b"partial\n").unwrap();
    let handle = SupervisedHandle {
        dir: exec.path().to_owned(),
        supervisor: None,
        started_at: windflow_protocol::Timestamp(1),
    };
    let Recovered::Ended(f) = Supervised::recover(&handle) else {
        panic!("no supervisor, yet re-attached");
    };
    assert_eq!((f.outcome, f.attempts), (RunOutcome::Failed, 1));
    assert_eq!(
        f.error.as_deref(),
        Some("the task's supervisor died while the agent was down")
    );
    assert_eq!(f.stdout, b"partial\n");
}

#[tokio::test]
async fn a_live_process_on_the_supervisors_reused_pid_is_not_re_attached() {
    let dir = tempfile::tempdir().unwrap();
    let exec = ExecDir::new(dir.path().join("R2"));
    exec.create().unwrap();
    // A live process now holds the pid the supervisor had, but it started later.
    let mut other = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let live = crate::process::ProcessIdentity::of(other.id()).unwrap();
    let supervisor = crate::process::ProcessIdentity {
        pid: live.pid,
        start_ticks: live.start_ticks.saturating_sub(1),
    };
    let handle = SupervisedHandle {
        dir: exec.path().to_owned(),
        supervisor: Some(supervisor),
        started_at: windflow_protocol::Timestamp(1),
    };
    let recovered = Supervised::recover(&handle);
    let alive = live.is_alive();
    other.kill().unwrap();
    other.wait().unwrap();
    assert!(alive, "the other process was left alone");
    let Recovered::Ended(f) = recovered else {
        panic!("a process on a reused pid was taken for the supervisor");
    };
    assert_eq!(f.outcome, RunOutcome::Failed);
    assert_eq!(
        f.error.as_deref(),
        Some("the task's supervisor died while the agent was down")
    );
}

#[tokio::test]
async fn an_allocation_tasks_output_goes_to_its_logs_too() {
    let dir = tempfile::tempdir().unwrap();
    let exec = ExecDir::new(dir.path().join("exec"));
    exec.create().unwrap();
    let root = crate::logs::LogRoot::new(dir.path(), crate::logs::LogPolicy::default());
    let target = root.target(windflow_protocol::AllocId(1), "web");
    let t = task("echo one; echo two >&2; printf three");
    let spec = super::service_spec(t, Duration::from_secs(5), Some(target.clone()));
    let before = windflow_protocol::Timestamp::now();
    let f = run_all(&exec, &spec, &CancellationToken::new()).await;
    assert_eq!(f.exit_code, Some(0), "{f:?}");
    let out = crate::logs::history(&target.dir, OutputStream::Stdout, None, None);
    assert_eq!(out, b"one\nthree");
    let err = crate::logs::history(&target.dir, OutputStream::Stderr, None, None);
    assert_eq!(err, b"two\n");
    // Stamped when read: a cut before the run keeps everything, one after it nothing.
    let kept = crate::logs::history(&target.dir, OutputStream::Stdout, Some(before), None);
    assert_eq!(kept, b"one\nthree");
    let later = windflow_protocol::Timestamp(windflow_protocol::Timestamp::now().0 + 1);
    assert!(crate::logs::history(&target.dir, OutputStream::Stdout, Some(later), None).is_empty());
}
