//! The exec driver's supervisor as the process of its own it is in production (the real
//! `windflow-agent` binary): followed live, found again after its watcher was dropped,
//! stopped, and reported failed when it is killed, with what it left of the task killed.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use windflow_agent::drivers::exec::{
    self, ExecDir, Progress, Recovered, Supervised, SupervisorCommand,
};
use windflow_protocol::messages::OutputStream;
use windflow_protocol::{RunOutcome, TaskSpec};

const DEADLINE: Duration = Duration::from_secs(20);

fn command() -> SupervisorCommand {
    SupervisorCommand::new(env!("CARGO_BIN_EXE_windflow-agent").into())
}

fn spawn(dir: &Path, shell: &str) -> Supervised {
    let task = TaskSpec::exec("t", shell);
    Supervised::spawn(&command(), ExecDir::new(dir), &exec::spec(task)).unwrap()
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
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
async fn a_supervised_task_is_followed_live_and_its_spec_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let exec_dir = dir.path().join("R1");
    let mut t = TaskSpec::exec("t", "echo one; echo two >&2; exit 1");
    t.retry.max_retries = 1;
    t.retry.delay = windflow_protocol::HumanDuration::from_millis(10);
    t.env.insert("SECRET".into(), "s3cret".into());
    let exec = Supervised::spawn(&command(), ExecDir::new(&exec_dir), &exec::spec(t)).unwrap();
    let mut seen = Vec::new();
    let result = tokio::time::timeout(DEADLINE, exec.wait(|p| seen.push(p)))
        .await
        .expect("the execution ended");
    assert_eq!(
        (result.outcome, result.exit_code, result.attempts),
        (RunOutcome::Failed, Some(1), 2)
    );
    assert_eq!(result.stdout, b"one\n");
    let out = |attempt, stream, data: &[u8]| Progress::Output {
        attempt,
        stream,
        data: data.to_vec(),
    };
    for attempt in [1, 2] {
        let at = seen
            .iter()
            .position(|p| *p == Progress::AttemptStarted { attempt })
            .unwrap_or_else(|| panic!("attempt {attempt} not seen: {seen:?}"));
        assert!(
            seen[at..].contains(&out(attempt, OutputStream::Stdout, b"one\n")),
            "{seen:?}"
        );
        assert!(
            seen[at..].contains(&out(attempt, OutputStream::Stderr, b"two\n")),
            "{seen:?}"
        );
    }
    assert!(
        !ExecDir::new(&exec_dir).spec().exists(),
        "the spec (with the task's secrets) outlived its reading"
    );
}

#[tokio::test]
async fn a_dropped_watcher_leaves_the_task_running_and_recover_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let starts = dir.path().join("starts");
    let shell = format!(
        "echo $$ >> {s}; while [ ! -e {g} ]; do sleep 0.05; done; echo late-output; echo done",
        s = starts.display(),
        g = go.display()
    );
    let exec = spawn(&dir.path().join("R2"), &shell);
    let handle = exec.handle();
    wait_until("the task to start", || read_pid(&starts).is_some()).await;
    // The agent stops: its watcher goes, the supervisor stays.
    let watcher = tokio::spawn(exec.wait(|_| {}));
    watcher.abort();
    let _ = watcher.await;
    assert!(handle.supervisor.unwrap().is_alive());

    let Recovered::Running(exec) = Supervised::recover(&handle) else {
        panic!("the running supervisor was not found again");
    };
    std::fs::write(&go, b"").unwrap();
    let mut live = Vec::new();
    let result = tokio::time::timeout(DEADLINE, exec.wait(|p| live.push(p)))
        .await
        .expect("the execution ended");
    assert_eq!(
        (result.outcome, result.attempts),
        (RunOutcome::Succeeded, 1)
    );
    assert_eq!(result.stdout, b"late-output\ndone\n");
    let lines = std::fs::read_to_string(&starts).unwrap();
    assert_eq!(lines.lines().count(), 1, "started again: {lines}");
    let followed: Vec<u8> = live
        .iter()
        .filter_map(|p| match p {
            Progress::Output {
                attempt: 1,
                stream: OutputStream::Stdout,
                data,
            } => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        followed, b"late-output\ndone\n",
        "output after re-attaching is followed live"
    );
    // Ended now: recovering again just reads the result.
    let Recovered::Ended(again) = Supervised::recover(&handle) else {
        panic!("an ended execution was re-attached");
    };
    assert_eq!(again, result);
}

#[tokio::test]
async fn a_killed_supervisor_is_reported_and_its_task_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let shell = format!(
        "sleep 300 & echo $! > {p}.tmp; mv {p}.tmp {p}; wait",
        p = pidfile.display()
    );
    let exec = spawn(&dir.path().join("R3"), &shell);
    let handle = exec.handle();
    let watcher = tokio::spawn(exec.wait(|_| {}));
    wait_until("the task to start", || read_pid(&pidfile).is_some()).await;
    let sleep = read_pid(&pidfile).unwrap();
    let group = ExecDir::new(&handle.dir).group(1);
    wait_until("the attempt's process group to be recorded", || {
        group.exists()
    })
    .await;
    watcher.abort();
    let _ = watcher.await;

    let supervisor = handle.supervisor.unwrap();
    assert!(supervisor.signal(Signal::SIGKILL));
    wait_until("the supervisor to die", || !supervisor.is_alive()).await;
    let Recovered::Ended(result) = Supervised::recover(&handle) else {
        panic!("a dead supervisor was re-attached");
    };
    assert_eq!(result.outcome, RunOutcome::Failed);
    assert_eq!(
        result.error.as_deref(),
        Some("the task's supervisor died while the agent was down")
    );
    assert_eq!(result.attempts, 1);
    wait_until("the orphaned task to be killed", || process_is_dead(sleep)).await;
}

#[tokio::test]
async fn a_stopped_supervisor_kills_its_task_and_records_why() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let shell = format!(
        "sleep 300 & echo $! > {p}.tmp; mv {p}.tmp {p}; wait",
        p = pidfile.display()
    );
    let exec = spawn(&dir.path().join("R4"), &shell);
    wait_until("the task to start", || read_pid(&pidfile).is_some()).await;
    let sleep = read_pid(&pidfile).unwrap();
    assert!(exec.stop());
    let result = tokio::time::timeout(DEADLINE, exec.wait(|_| {}))
        .await
        .expect("the execution ended");
    assert_eq!((result.outcome, result.attempts), (RunOutcome::Failed, 1));
    assert!(result.error.unwrap().contains("stopped"));
    wait_until("the task to be killed", || process_is_dead(sleep)).await;
}
