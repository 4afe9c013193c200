//! The agent against a real QUIC server endpoint, made here with the cluster CA, that speaks
//! the protocol the way the servers do.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::*;
use windflow_agent::AgentError;
use windflow_protocol::messages::{
    AgentMessage, OutputStream, RunTask, ServerMessage, VersionRange,
};
use windflow_protocol::{DriverKind, JobId, RunId, RunOutcome, TaskSpec};

fn exec(command: &str) -> TaskSpec {
    TaskSpec::exec("t", command)
}

fn run_task(run: u64, command: &str) -> ServerMessage {
    ServerMessage::RunTask(RunTask {
        run: RunId(run),
        job: JobId(1),
        task: exec(command),
    })
}

fn stdout_of(events: &[AgentMessage], run: RunId) -> Vec<u8> {
    events
        .iter()
        .filter_map(|m| match m {
            AgentMessage::Output(c) if c.run == run && c.stream == OutputStream::Stdout => {
                Some(c.data.clone())
            }
            _ => None,
        })
        .flatten()
        .collect()
}

fn attempts_started(events: &[AgentMessage], run: RunId) -> usize {
    events
        .iter()
        .filter(|m| matches!(m, AgentMessage::AttemptStarted { run: r, .. } if *r == run))
        .count()
}

#[tokio::test]
async fn the_agent_runs_a_task_and_reports_its_output_and_result() {
    let pki = pki();
    let (endpoint, addr) = server_endpoint(&pki.server);
    let agent = start_agent(&pki, vec![addr]);

    let mut s = accept(&endpoint).await;
    assert_eq!(s.hello.versions, VersionRange::SUPPORTED);
    assert_eq!(s.hello.hostname, "test-host");
    // Exec always; docker exactly when the engine answered the fingerprint.
    assert_eq!(s.hello.drivers[0], DriverKind::Exec);
    let docker = s.hello.drivers.contains(&DriverKind::Docker);
    let attributes = &s.hello.fingerprint.attributes;
    assert_eq!(
        docker,
        attributes.contains_key("driver.docker.version"),
        "{attributes:?}"
    );
    assert_eq!(
        docker,
        attributes.contains_key("driver.docker.agent"),
        "{attributes:?}"
    );
    assert!(!s.hello.agent_version.is_empty());
    s.welcome().await;
    s.send(run_task(7, "echo hi")).await;

    let (f, before) = s.finished(RunId(7)).await;
    assert_eq!(f.outcome, RunOutcome::Succeeded);
    assert_eq!((f.exit_code, f.attempts), (Some(0), 1));
    assert_eq!(f.stdout, b"hi\n");
    assert_eq!(attempts_started(&before, RunId(7)), 1);
    assert_eq!(
        stdout_of(&before, RunId(7)),
        b"hi\n",
        "live output comes before the result"
    );
    s.send(ServerMessage::FinishedAck { run: RunId(7) }).await;

    // Heartbeats keep coming, numbered in order.
    let mut seqs = Vec::new();
    while seqs.len() < 2 {
        let (seq, _) = s
            .until(|m| match m {
                AgentMessage::Heartbeat(hb) => Some(hb.seq),
                _ => None,
            })
            .await;
        seqs.push(seq);
    }
    assert!(seqs[0] < seqs[1], "{seqs:?}");

    agent.stop().await;
    // The agent says goodbye rather than letting the connection time out.
    within("the agent to close the connection", s.conn.closed()).await;
}

#[tokio::test]
async fn running_work_outlives_the_agent_and_the_next_agent_takes_it_back() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let pidfile = dir.path().join("pid");
    let go = dir.path().join("go");
    let starts = dir.path().join("starts");
    let (endpoint, addr) = server_endpoint(&pki.server);
    let agent = start_agent_in(&pki, vec![addr], &data);

    let mut s = accept(&endpoint).await;
    s.welcome().await;
    // Runs until the test lets it finish; a second start would add a line to `starts`.
    let command = format!(
        "echo $$ >> {starts}; echo $$ > {p}.tmp; mv {p}.tmp {p}; \
         while [ ! -e {go} ]; do sleep 0.05; done; echo done-$$",
        starts = starts.display(),
        p = pidfile.display(),
        go = go.display(),
    );
    s.send(run_task(3, &command)).await;
    s.until(|m| match m {
        AgentMessage::Heartbeat(hb) if hb.running == [RunId(3)] => Some(()),
        _ => None,
    })
    .await;
    wait_until("the task to start", || read_pid(&pidfile).is_some()).await;
    let pid = read_pid(&pidfile).unwrap();

    agent.stop().await;
    within("the agent to close the connection", s.conn.closed()).await;
    assert!(!process_is_dead(pid), "the task died with the agent");

    // The next agent on the same data dir: the run is in its first heartbeat, the server's
    // resent RunTask does not start it again, and its result comes once it ends.
    let agent = start_agent_in(&pki, vec![addr], &data);
    let mut s = accept(&endpoint).await;
    s.welcome().await;
    s.send(run_task(3, &command)).await;
    s.until(|m| match m {
        AgentMessage::Heartbeat(hb) if hb.running == [RunId(3)] => Some(()),
        _ => None,
    })
    .await;
    std::fs::write(&go, b"").unwrap();
    let (f, _) = s.finished(RunId(3)).await;
    assert_eq!(f.outcome, RunOutcome::Succeeded, "{f:?}");
    assert_eq!(f.attempts, 1);
    assert_eq!(f.stdout, format!("done-{pid}\n").into_bytes());
    assert_eq!(
        std::fs::read_to_string(&starts).unwrap(),
        format!("{pid}\n"),
        "the task was started once"
    );
    s.send(ServerMessage::FinishedAck { run: RunId(3) }).await;
    wait_until("the run's files to go once acknowledged", || {
        !data.join("runs").join("R3").exists()
    })
    .await;
    agent.stop().await;
}

#[tokio::test]
async fn a_result_produced_while_the_agent_was_down_is_sent_by_the_next_one() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let go = dir.path().join("go");
    let (endpoint, addr) = server_endpoint(&pki.server);
    let agent = start_agent_in(&pki, vec![addr], &data);
    let mut s = accept(&endpoint).await;
    s.welcome().await;
    let command = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; echo finished-alone",
        go = go.display()
    );
    s.send(run_task(4, &command)).await;
    s.until(|m| match m {
        AgentMessage::Heartbeat(hb) if hb.running == [RunId(4)] => Some(()),
        _ => None,
    })
    .await;
    agent.stop().await;

    // The task ends while no agent runs.
    std::fs::write(&go, b"").unwrap();
    let result = data.join("runs").join("R4").join("result");
    wait_until("the supervisor to record the result", || result.exists()).await;

    let agent = start_agent_in(&pki, vec![addr], &data);
    let mut s = accept(&endpoint).await;
    s.welcome().await;
    let (f, _) = s.finished(RunId(4)).await;
    assert_eq!((f.outcome, f.attempts), (RunOutcome::Succeeded, 1));
    assert_eq!(f.stdout, b"finished-alone\n");
    // Not acknowledged: the agent after this one sends it again, from its store.
    agent.stop().await;
    let agent = start_agent_in(&pki, vec![addr], &data);
    let mut s = accept(&endpoint).await;
    s.welcome().await;
    let (again, _) = s.finished(RunId(4)).await;
    assert_eq!(again, f);
    s.send(ServerMessage::FinishedAck { run: RunId(4) }).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_refused_agent_stops_with_the_reason() {
    let pki = pki();
    let (endpoint, addr) = server_endpoint(&pki.server);
    let agent = start_agent(&pki, vec![addr]);

    let mut s = accept(&endpoint).await;
    let reason = "protocol version mismatch: agent speaks 1..=1, server speaks 2..=2";
    s.send(ServerMessage::Refused {
        reason: reason.into(),
    })
    .await;
    s.send.finish().unwrap();

    let result = within("the agent to give up", agent.handle).await.unwrap();
    match result {
        Err(AgentError::Refused { reason: r }) => assert_eq!(r, reason),
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unacknowledged_result_is_sent_again_after_a_reconnect_and_not_rerun() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let (endpoint, addr) = server_endpoint(&pki.server);
    let agent = start_agent(&pki, vec![addr]);

    let mut s1 = accept(&endpoint).await;
    s1.welcome().await;
    let command = format!("echo once >> {}; echo done", ran.display());
    s1.send(run_task(9, &command)).await;
    let (first, _) = s1.finished(RunId(9)).await;
    assert_eq!(first.stdout, b"done\n");
    // The server goes away before acknowledging.
    s1.conn.close(0u32.into(), b"server restarting");

    let mut s2 = accept(&endpoint).await;
    s2.welcome().await;
    // The server sends its running work again, as servers do after a reconnect.
    s2.send(run_task(9, &command)).await;
    match s2.recv().await {
        AgentMessage::Finished(again) => assert_eq!(again, first, "the same result"),
        other => panic!("expected the unacknowledged result first, got {other:?}"),
    }
    // A run that takes a while, started after the resent RunTask 9 was handled: by the
    // time it ends, a second run of 9 would long have written its marker.
    s2.send(run_task(10, "sleep 0.5")).await;
    let (ten, before) = s2.finished(RunId(10)).await;
    assert_eq!(ten.outcome, RunOutcome::Succeeded);
    assert_eq!(
        attempts_started(&before, RunId(9)),
        0,
        "run 9 was run again"
    );
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "once\n");
    s2.send(ServerMessage::FinishedAck { run: RunId(9) }).await;
    s2.send(ServerMessage::FinishedAck { run: RunId(10) }).await;

    agent.stop().await;
}

#[tokio::test]
async fn a_server_that_drops_the_session_makes_the_agent_try_the_next() {
    let pki = pki();
    let (bad, bad_addr) = server_endpoint(&pki.server);
    let dropped = Arc::new(AtomicUsize::new(0));
    let count = dropped.clone();
    let bad_server = tokio::spawn(async move {
        while let Some(incoming) = bad.accept().await {
            if let Ok(conn) = incoming.await {
                count.fetch_add(1, Ordering::SeqCst);
                conn.close(1u32.into(), b"go away");
            }
        }
    });
    let (good, good_addr) = server_endpoint(&pki.server);
    let agent = start_agent(&pki, vec![bad_addr, good_addr]);

    let mut s = accept(&good).await;
    assert!(
        dropped.load(Ordering::SeqCst) >= 1,
        "the first server was tried first"
    );
    s.welcome().await;
    s.send(run_task(1, "echo failover")).await;
    let (f, _) = s.finished(RunId(1)).await;
    assert_eq!(f.stdout, b"failover\n");

    agent.stop().await;
    bad_server.abort();
}
