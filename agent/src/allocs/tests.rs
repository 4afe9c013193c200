//! The allocation keeper with real processes: restart policy, stop, what is reported.

use std::path::Path;
use std::time::{Duration, Instant};

use windflow_protocol::messages::{AllocAssignment, AllocSync};
use windflow_protocol::{
    AllocEventKind, AllocId, Allocation, ClientStatus, DesiredStatus, EvalId, HumanDuration, JobId,
    JobType, NodeId, Resources, RestartMode, RestartPolicy, TaskSpec, Timestamp,
};

use super::{Allocs, Supervision};
use crate::drivers::exec::SupervisorCommand;
use crate::store::Store;

const DEADLINE: Duration = Duration::from_secs(20);

/// The agent's own binary, which supervises the tasks. The unit tests' binary is
/// `target/<profile>/deps/<name>`; `cargo test -p windflow-agent` builds the agent's binary
/// (for the integration tests) beside `deps/`.
fn supervisor() -> SupervisorCommand {
    let exe = std::env::current_exe().unwrap();
    let program = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("windflow-agent");
    assert!(
        program.exists(),
        "{} is missing: cargo build -p windflow-agent",
        program.display()
    );
    SupervisorCommand::new(program)
}

/// An agent's data dir: its store and its allocations' directories.
struct Data {
    dir: tempfile::TempDir,
    store: Store,
}

fn open(dir: tempfile::TempDir, grace: Duration) -> (std::sync::Arc<Allocs>, Data) {
    let store = Store::open(dir.path()).unwrap();
    let how = Supervision {
        docker: std::sync::Arc::new(crate::drivers::docker::DockerDriver::new(
            "unit-tests".into(),
        )),
        supervisor: supervisor(),
        grace,
        logs: crate::logs::LogRoot::new(dir.path(), crate::logs::LogPolicy::default()),
    };
    let a = Allocs::open(&store, &dir.path().join("allocs"), how).unwrap();
    (a, Data { dir, store })
}

fn keeper(grace: Duration) -> (std::sync::Arc<Allocs>, Data) {
    open(tempfile::tempdir().unwrap(), grace)
}

/// The agent stops (its tasks left running) and a new one opens the same data dir.
async fn restart_agent(a: std::sync::Arc<Allocs>, data: Data) -> (std::sync::Arc<Allocs>, Data) {
    for runner in a.detach_all() {
        let _ = runner.await;
    }
    drop(a);
    let Data { dir, store } = data;
    drop(store);
    open(dir, Duration::from_secs(1))
}

fn alloc(id: u64, desired: DesiredStatus, modify_index: u64) -> Allocation {
    Allocation {
        id: AllocId(id),
        job: JobId(1),
        namespace: Default::default(),
        group: "g".into(),
        index: 0,
        node: NodeId(1),
        resources: Resources::default(),
        desired,
        client: ClientStatus::Pending,
        eval: EvalId(1),
        created_at: Timestamp(1),
        modified_at: Timestamp(1),
        modify_index,
        restarts: 0,
        previous: None,
        reschedules: 0,
        events: Vec::new(),
        ports: Vec::new(),
        job_version: 1,
        deployment: None,
        health: Default::default(),
    }
}

fn restart(attempts: u32, delay_ms: u64) -> RestartPolicy {
    RestartPolicy {
        attempts,
        interval: HumanDuration::from_secs(600),
        delay: HumanDuration::from_millis(delay_ms),
        mode: RestartMode::Fail,
    }
}

fn run(id: u64, index: u64, command: &str, policy: RestartPolicy, job_type: JobType) -> AllocSync {
    AllocSync {
        index,
        allocs: vec![AllocAssignment {
            alloc: alloc(id, DesiredStatus::Run, index),
            tasks: vec![TaskSpec::exec("main", command)],
            restart: policy,
            job_type,
            checks: Vec::new(),
            update: Default::default(),
        }],
    }
}

fn stop(id: u64, index: u64) -> AllocSync {
    AllocSync {
        index,
        allocs: vec![AllocAssignment {
            alloc: alloc(id, DesiredStatus::Stop, index),
            tasks: Vec::new(),
            restart: RestartPolicy::default(),
            job_type: JobType::Service,
            checks: Vec::new(),
            update: Default::default(),
        }],
    }
}

/// Status, restarts and event kinds (none acknowledged in these tests: all of them).
fn seen(a: &Allocs, id: u64) -> Option<(ClientStatus, u32, Vec<AllocEventKind>)> {
    let st = a.lock();
    let e = st.entries.get(&AllocId(id))?;
    Some((
        e.client,
        e.restarts,
        e.unacked.iter().map(|e| e.kind).collect(),
    ))
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pid_in(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[tokio::test]
async fn an_exiting_task_is_restarted_attempts_times_after_its_delay_then_fails() {
    use AllocEventKind::*;
    let (a, _data) = keeper(Duration::from_secs(1));
    a.apply(run(1, 5, "exit 3", restart(2, 300), JobType::Service));
    assert_eq!(a.index(), 5);
    until("the allocation to fail", || {
        seen(&a, 1).is_some_and(|(c, ..)| c == ClientStatus::Failed)
    })
    .await;
    let (_, restarts, kinds) = seen(&a, 1).unwrap();
    assert_eq!(restarts, 2);
    assert_eq!(
        kinds,
        [
            Received, Started, Exited, Restarting, Started, Exited, Restarting, Started, Exited,
            Failed
        ]
    );
    let st = a.lock();
    let events = &st.entries[&AllocId(1)].unacked;
    assert!(events[2].message.contains("exit code 3"), "{events:?}");
    assert!(
        events[9].message.contains("past its restart policy"),
        "{events:?}"
    );
    // Each restart waited out the delay after the exit before it.
    for (exited, started) in [(2, 4), (5, 7)] {
        let gap = events[started].at.0 - events[exited].at.0;
        assert!(gap >= 300, "restarted {gap}ms after the exit: {events:?}");
    }
    assert!(st.entries[&AllocId(1)].runner.is_none());
}

#[tokio::test]
async fn a_stop_kills_the_process_group_even_when_it_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let (a, _data) = keeper(Duration::from_millis(300));
    // The shell and its child both ignore SIGTERM: only SIGKILL after the grace ends them.
    let command = format!(
        "trap '' TERM; sleep 300 & echo $! > {p}.tmp; mv {p}.tmp {p}; wait",
        p = pidfile.display()
    );
    a.apply(run(1, 3, &command, restart(2, 10), JobType::Service));
    until("the task's child", || pid_in(&pidfile).is_some()).await;
    let child = pid_in(&pidfile).unwrap();
    assert!(alive(child));
    assert_eq!(a.running(), 1);
    // The task may print its pid before the keeper has recorded that it started.
    until("started: running", || {
        seen(&a, 1).is_some_and(|s| s.0 == ClientStatus::Running)
    })
    .await;

    // A stale version changes nothing; the newer one stops it.
    a.apply(stop(1, 3));
    assert!(alive(child));
    let asked = Instant::now();
    a.apply(stop(1, 4));
    until("the child to be killed", || !alive(child)).await;
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "killed before the grace"
    );
    until("the allocation to be complete", || {
        seen(&a, 1).is_some_and(|(c, ..)| c == ClientStatus::Complete)
    })
    .await;
    let (_, restarts, kinds) = seen(&a, 1).unwrap();
    assert_eq!(restarts, 0, "a stop is not a restart");
    assert_eq!(kinds.last(), Some(&AllocEventKind::Stopped));
    assert_eq!(a.index(), 4);
    assert_eq!(a.running(), 0);
}

#[tokio::test]
async fn a_batch_allocation_that_exits_0_is_complete_and_a_service_one_restarts() {
    let (a, _data) = keeper(Duration::from_secs(1));
    a.apply(run(1, 1, "true", restart(5, 10), JobType::Batch));
    a.apply(run(2, 2, "true", restart(1, 10), JobType::Service));
    until("both to end", || {
        [1, 2]
            .iter()
            .all(|id| seen(&a, *id).is_some_and(|(c, ..)| c.is_terminal()))
    })
    .await;
    let (client, restarts, _) = seen(&a, 1).unwrap();
    assert_eq!((client, restarts), (ClientStatus::Complete, 0));
    let (client, restarts, _) = seen(&a, 2).unwrap();
    assert_eq!((client, restarts), (ClientStatus::Failed, 1));
}

#[tokio::test]
async fn an_unknown_allocation_told_to_stop_is_reported_complete() {
    let (a, _data) = keeper(Duration::from_secs(1));
    a.apply(stop(7, 9));
    let (client, _, kinds) = seen(&a, 7).unwrap();
    assert_eq!(client, ClientStatus::Complete);
    assert_eq!(kinds, [AllocEventKind::Stopped]);
    assert_eq!(a.running(), 0);
    // One already ended by the servers' account is not even remembered.
    let mut ended = stop(8, 10);
    ended.allocs[0].alloc.client = ClientStatus::Failed;
    a.apply(ended);
    assert!(seen(&a, 8).is_none());
}

#[tokio::test]
async fn one_update_in_flight_until_acknowledged_and_resent_in_a_new_session() {
    let (a, _data) = keeper(Duration::from_secs(1));
    a.apply(stop(7, 9));
    let t0 = Instant::now();
    let resend = Duration::from_secs(30);
    let first = a.due(1, t0, resend);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].client, ClientStatus::Complete);
    assert_eq!(first[0].events.len(), 1);
    assert!(a.due(1, t0, resend).is_empty(), "in flight");
    // Late: sent again in the same session; a new session sends it at once.
    assert_eq!(a.due(1, t0 + resend, resend).len(), 1);
    assert_eq!(a.due(2, t0 + resend, resend), first);
    // An ack for another status is not this one's.
    a.ack(AllocId(7), ClientStatus::Running);
    assert!(seen(&a, 7).is_some());
    a.ack(AllocId(7), ClientStatus::Complete);
    assert!(a.due(3, t0, resend).is_empty());
    let (client, _, kinds) = seen(&a, 7).unwrap();
    assert_eq!(client, ClientStatus::Complete);
    assert!(kinds.is_empty(), "acknowledged events are dropped");
    // Once the servers have it ended too, it is forgotten.
    let mut ended = stop(7, 11);
    ended.allocs[0].alloc.client = ClientStatus::Complete;
    a.apply(ended);
    assert!(seen(&a, 7).is_none());
    assert_eq!(a.index(), 11);
    // A server behind the others (a lagging follower) never moves the index back.
    a.apply(AllocSync {
        index: 4,
        allocs: Vec::new(),
    });
    assert_eq!(a.index(), 11);
}

#[tokio::test]
async fn an_allocation_the_servers_marked_lost_is_stopped_here() {
    let (a, _data) = keeper(Duration::from_millis(300));
    a.apply(run(
        1,
        1,
        "exec sleep 300",
        restart(2, 10),
        JobType::Service,
    ));
    until("it runs", || {
        seen(&a, 1).is_some_and(|(c, ..)| c == ClientStatus::Running)
    })
    .await;
    // The node was away; the servers marked it lost (still desired `run`).
    let mut lost = run(1, 2, "exec sleep 300", restart(2, 10), JobType::Service);
    lost.allocs[0].alloc.client = ClientStatus::Lost;
    a.apply(lost);
    until("it to stop", || a.running() == 0).await;
    let (client, _, kinds) = seen(&a, 1).unwrap();
    assert_eq!(client, ClientStatus::Complete);
    assert_eq!(kinds.last(), Some(&AllocEventKind::Stopped));
}

#[tokio::test]
async fn tasks_outlive_the_agent_and_are_taken_back_running_not_restarted() {
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pid");
    let command = format!(
        "echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 300",
        p = pidfile.display()
    );
    let (a, data) = keeper(Duration::from_secs(1));
    a.apply(run(1, 6, &command, restart(2, 10), JobType::Service));
    until("it runs", || pid_in(&pidfile).is_some()).await;
    until("it is running", || {
        seen(&a, 1).is_some_and(|(c, ..)| c == ClientStatus::Running)
    })
    .await;
    let pid = pid_in(&pidfile).unwrap();
    let events_before = seen(&a, 1).unwrap().2;
    // What a crash between writing an assignment and storing it would leave.
    let stray = data.dir.path().join("allocs/AL99");
    std::fs::create_dir_all(&stray).unwrap();

    let (a, data) = restart_agent(a, data).await;
    assert!(!stray.exists(), "a directory no allocation owns is removed");
    assert!(data.dir.path().join("allocs/AL1/assignment").exists());
    assert!(alive(pid), "the agent stopping left the task running");
    assert_eq!(a.index(), 6, "the index survives for the next Hello");
    assert_eq!(a.running(), 1, "re-attached");
    let (client, restarts, kinds) = seen(&a, 1).unwrap();
    assert_eq!((client, restarts), (ClientStatus::Running, 0));
    assert_eq!(kinds, events_before, "the unacknowledged events are kept");
    // Still watched: it is not started again, and it exits when the servers say so.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pid_in(&pidfile), Some(pid), "not started again");
    a.apply(stop(1, 7));
    until("the task to be stopped", || !alive(pid)).await;
    until("the allocation to be complete", || {
        seen(&a, 1).is_some_and(|(c, ..)| c == ClientStatus::Complete)
    })
    .await;
    assert_eq!(seen(&a, 1).unwrap().1, 0, "a stop is not a restart");
    drop(data);
}

#[tokio::test]
async fn a_task_that_exited_while_the_agent_was_down_goes_through_its_policy() {
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pid");
    let command = format!(
        "echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 300",
        p = pidfile.display()
    );
    let (a, data) = keeper(Duration::from_secs(1));
    a.apply(run(1, 2, &command, restart(2, 10), JobType::Service));
    until("it runs", || pid_in(&pidfile).is_some()).await;
    let first = pid_in(&pidfile).unwrap();
    for runner in a.detach_all() {
        let _ = runner.await;
    }
    // The task dies while no agent watches.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), nix::sys::signal::SIGKILL).unwrap();
    until("the task to die", || !alive(first)).await;
    let (a, data) = restart_agent(a, data).await;
    let deadline = Instant::now() + DEADLINE;
    while !(pid_in(&pidfile).is_some_and(|p| p != first)
        && seen(&a, 1).is_some_and(|(c, restarts, _)| restarts == 1 && c == ClientStatus::Running))
    {
        assert!(
            Instant::now() < deadline,
            "not restarted: pid {:?} (first {first}), allocation {:?}",
            pid_in(&pidfile),
            seen(&a, 1)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (client, _, kinds) = seen(&a, 1).unwrap();
    assert_eq!(client, ClientStatus::Running);
    assert!(kinds.contains(&AllocEventKind::Restarting), "{kinds:?}");
    a.apply(stop(1, 3));
    let second = pid_in(&pidfile).unwrap();
    until("the restarted task to be stopped", || !alive(second)).await;
    drop(data);
}

#[tokio::test]
async fn the_restart_policy_counts_across_an_agent_restart() {
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pid");
    let command = format!(
        "echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 300",
        p = pidfile.display()
    );
    let kill = |pid: i32| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap()
    };
    // One restart allowed in the interval.
    let (a, data) = keeper(Duration::from_secs(1));
    a.apply(run(1, 2, &command, restart(1, 10), JobType::Service));
    until("it runs", || pid_in(&pidfile).is_some()).await;
    let first = pid_in(&pidfile).unwrap();
    kill(first);
    until("its restart", || {
        pid_in(&pidfile).is_some_and(|p| p != first)
            && seen(&a, 1)
                .is_some_and(|(c, restarts, _)| restarts == 1 && c == ClientStatus::Running)
    })
    .await;
    let second = pid_in(&pidfile).unwrap();
    for runner in a.detach_all() {
        let _ = runner.await;
    }
    kill(second);
    until("the task to die", || !alive(second)).await;
    // The next agent knows the restart was used: this exit fails the allocation.
    let (a, data) = restart_agent(a, data).await;
    until("the allocation to fail", || {
        seen(&a, 1).is_some_and(|(c, ..)| c == ClientStatus::Failed)
    })
    .await;
    assert_eq!(seen(&a, 1).unwrap().1, 1);
    assert_eq!(pid_in(&pidfile), Some(second), "not started again");
    drop(data);
}
