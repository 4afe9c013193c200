//! The agent's allocations against a fake server over real QUIC: started, restarted per
//! their policy, stopped, reported until acknowledged, and resumed by index on reconnect.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;
use windflow_protocol::messages::{
    AgentMessage, AllocAssignment, AllocSync, AllocUpdate, ServerMessage,
};
use windflow_protocol::{
    AllocEventKind, AllocId, Allocation, ClientStatus, DesiredStatus, EvalId, HumanDuration, JobId,
    JobType, NodeId, Resources, RestartMode, RestartPolicy, TaskSpec, Timestamp,
};

fn alloc(id: u64, desired: DesiredStatus, modify_index: u64) -> Allocation {
    Allocation {
        id: AllocId(id),
        job: JobId(1),
        namespace: Default::default(),
        group: "web".into(),
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

fn sync(index: u64, allocs: Vec<AllocAssignment>) -> ServerMessage {
    ServerMessage::Allocations(AllocSync { index, allocs })
}

fn running(id: u64, modify_index: u64, command: &str, restart: RestartPolicy) -> AllocAssignment {
    AllocAssignment {
        alloc: alloc(id, DesiredStatus::Run, modify_index),
        tasks: vec![TaskSpec::exec("main", command)],
        restart,
        job_type: JobType::Service,
        checks: Vec::new(),
        update: Default::default(),
    }
}

fn stopped(id: u64, modify_index: u64) -> AllocAssignment {
    AllocAssignment {
        alloc: alloc(id, DesiredStatus::Stop, modify_index),
        tasks: Vec::new(),
        restart: RestartPolicy::default(),
        job_type: JobType::Service,
        checks: Vec::new(),
        update: Default::default(),
    }
}

/// Writes the shell's pid (the process group) to `pidfile`, then sleeps in its place.
fn sleeper(pidfile: &Path) -> String {
    format!(
        "echo $$ > {p}.tmp; mv {p}.tmp {p}; exec sleep 300",
        p = pidfile.display()
    )
}

/// Reads messages, acknowledging every allocation update, until `pick` takes one (which
/// is acknowledged too, unless `ack_last` is false).
async fn updates_until(
    s: &mut Session,
    ack_last: bool,
    mut pick: impl FnMut(&AllocUpdate) -> bool,
) -> (AllocUpdate, Vec<AllocUpdate>) {
    let mut seen = Vec::new();
    loop {
        let AgentMessage::AllocUpdate(u) = s.recv().await else {
            continue;
        };
        let hit = pick(&u);
        if !hit || ack_last {
            s.send(ServerMessage::AllocUpdateAck {
                alloc: u.alloc,
                client: u.client,
            })
            .await;
        }
        if hit {
            return (u, seen);
        }
        seen.push(u);
    }
}

fn kinds(updates: &[AllocUpdate]) -> Vec<AllocEventKind> {
    updates
        .iter()
        .flat_map(|u| u.events.iter().map(|e| e.kind))
        .collect()
}

#[tokio::test]
async fn allocations_run_stop_and_resume_by_index_across_reconnects() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let (endpoint, addr) = server_endpoint(&pki.server);
    let agent = start_agent_with(&pki, vec![addr], |c| c.kill_grace = Duration::from_secs(2));

    let mut s1 = accept(&endpoint).await;
    assert_eq!(s1.hello.alloc_index, 0, "a new agent has seen nothing");
    s1.welcome().await;
    s1.send(sync(
        5,
        vec![running(1, 5, &sleeper(&pidfile), RestartPolicy::default())],
    ))
    .await;
    let (up, before) = updates_until(&mut s1, true, |u| u.client == ClientStatus::Running).await;
    let mut all = before;
    all.push(up);
    let events = kinds(&all);
    assert!(
        events.starts_with(&[AllocEventKind::Received, AllocEventKind::Started]),
        "{events:?}"
    );
    wait_until("the task's pid", || read_pid(&pidfile).is_some()).await;
    let pid = read_pid(&pidfile).unwrap();
    assert!(!process_is_dead(pid));

    // The server goes away: the next Hello names index 5, and nothing is started again.
    s1.conn.close(0u32.into(), b"server restarting");
    let mut s2 = accept(&endpoint).await;
    assert_eq!(s2.hello.alloc_index, 5);
    s2.welcome().await;
    s2.send(sync(
        5,
        vec![running(1, 5, &sleeper(&pidfile), RestartPolicy::default())],
    ))
    .await;
    // Told to stop while a change it has already seen is replayed: it stops once.
    s2.send(sync(8, vec![stopped(1, 8)])).await;
    let (done, between) =
        updates_until(&mut s2, false, |u| u.client == ClientStatus::Complete).await;
    // The first session's last ack may not have made it before the link closed: then its
    // update comes again, with the same start (same pid), never a new one.
    let started = format!("(pid {pid})");
    for e in between.iter().chain([&done]).flat_map(|u| &u.events) {
        if e.kind == AllocEventKind::Started {
            assert!(
                e.message.contains(&started),
                "restarted on reconnect: {e:?}"
            );
        }
    }
    assert_eq!(done.events.last().unwrap().kind, AllocEventKind::Stopped);
    assert_eq!(read_pid(&pidfile), Some(pid), "the same process all along");
    wait_until("the stopped task to die", || process_is_dead(pid)).await;

    // Not acknowledged before the link dropped: sent again in the next session.
    s2.conn.close(0u32.into(), b"server restarting");
    let mut s3 = accept(&endpoint).await;
    assert_eq!(s3.hello.alloc_index, 8);
    s3.welcome().await;
    let (again, _) = updates_until(&mut s3, true, |u| u.alloc == AllocId(1)).await;
    assert_eq!(again, done);

    // An allocation it never ran, told to stop, is reported complete.
    s3.send(sync(9, vec![stopped(2, 9)])).await;
    let (unknown, _) = updates_until(&mut s3, true, |u| u.alloc == AllocId(2)).await;
    assert_eq!(unknown.client, ClientStatus::Complete);
    agent.stop().await;
}

#[tokio::test]
async fn a_crash_looping_task_is_restarted_per_its_policy_then_failed() {
    let pki = pki();
    let (endpoint, addr) = server_endpoint(&pki.server);
    let agent = start_agent(&pki, vec![addr]);
    let mut s = accept(&endpoint).await;
    s.welcome().await;
    let policy = RestartPolicy {
        attempts: 3,
        interval: HumanDuration::from_secs(600),
        delay: HumanDuration::from_millis(200),
        mode: RestartMode::Fail,
    };
    s.send(sync(3, vec![running(4, 3, "exit 7", policy)])).await;
    let (failed, before) = updates_until(&mut s, true, |u| u.client == ClientStatus::Failed).await;
    assert_eq!(failed.restarts, 3);
    let mut all = before;
    all.push(failed);
    let events: Vec<_> = all.iter().flat_map(|u| u.events.iter()).collect();
    let count = |k: AllocEventKind| events.iter().filter(|e| e.kind == k).count();
    assert_eq!(count(AllocEventKind::Started), 4, "{events:?}");
    assert_eq!(count(AllocEventKind::Exited), 4, "{events:?}");
    assert_eq!(count(AllocEventKind::Restarting), 3, "{events:?}");
    assert_eq!(count(AllocEventKind::Failed), 1, "{events:?}");
    // Acknowledged events are not sent twice, and each restart waited out its delay.
    let starts: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == AllocEventKind::Started)
        .map(|e| e.at.0)
        .collect();
    assert!(starts.windows(2).all(|w| w[1] - w[0] >= 200), "{starts:?}");
    agent.stop().await;
}
