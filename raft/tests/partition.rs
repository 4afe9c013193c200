//! Network partitions, injected in the raft transport ([`windflow_raft::Faults`]): a leader
//! cut off from the other two commits nothing and its writes fail with a clear error; the
//! majority elects a new leader and commits; after healing the old leader follows the new
//! one, every log converges and no acknowledged write is lost. (The history of a register
//! across a partition is checked against real processes in `tests/tests/partition.rs`.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod common;

use common::{Server, WAIT, applied, leader_among, three_servers};
use windflow_raft::{Applied, ServerId, WriteError};

/// How long a write may take to fail: the leader's 5 s commit wait, and some slack.
const WRITE_DEADLINE: Duration = Duration::from_secs(15);

fn server(servers: &[Server], id: ServerId) -> &Server {
    servers.iter().find(|s| s.id == id).unwrap()
}

/// Cuts server `cut` off from every other server, both ways.
fn isolate(servers: &[Server], cut: ServerId) {
    let isolated = server(servers, cut);
    for s in servers.iter().filter(|s| s.id != cut) {
        s.node().faults().block(cut, isolated.name());
        isolated.node().faults().block(s.id, s.name());
    }
}

fn heal(servers: &[Server]) {
    for s in servers {
        s.node().faults().heal();
    }
}

fn term(s: &Server) -> u64 {
    s.node().metrics().borrow().current_term
}

/// Waits until the servers other than `old` agree on a leader that is not `old`.
async fn new_leader_among(servers: &[&Server], old: ServerId) -> ServerId {
    tokio::time::timeout(WAIT, async {
        loop {
            let l = leader_among(servers).await;
            if l != old {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the majority elected a new leader")
}

/// Creates job `name` on `s`, within [`WRITE_DEADLINE`]; the job's ID if acknowledged.
async fn try_write(s: &Server, name: &str) -> Result<u64, WriteError> {
    let result = tokio::time::timeout(WRITE_DEADLINE, s.node().write(common::create_job(name)))
        .await
        .unwrap_or_else(|_| panic!("a write on server {} hung past {WRITE_DEADLINE:?}", s.id));
    match result? {
        Applied::Job(j) => Ok(j.id.0),
        other => panic!("{other:?}"),
    }
}

/// The jobs `s` holds, by name.
fn jobs(s: &Server) -> BTreeMap<String, u64> {
    s.node()
        .reader()
        .jobs()
        .unwrap()
        .into_iter()
        .map(|j| (j.spec.name, j.id.0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_leader_commits_nothing_and_steps_down_after_healing() {
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path()).await;
    let old = leader_among(&servers.iter().collect::<Vec<_>>()).await;
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..5 {
        let name = format!("before-{i}");
        let id = try_write(server(&servers, old), &name).await.unwrap();
        acked.insert(name, id);
    }
    let old_term = term(server(&servers, old));

    isolate(&servers, old);
    let isolated = server(&servers, old);
    let applied_before = isolated.node().reader().last_applied_index();

    // A write on the isolated leader fails, in time and with a clear error.
    let started = Instant::now();
    let err = try_write(isolated, "lost-0").await.unwrap_err();
    eprintln!(
        "isolated leader's write failed after {:?}: {err}",
        started.elapsed()
    );
    assert!(
        matches!(&err, WriteError::Raft(m) if m.contains("majority")),
        "unexpected error: {err:?}"
    );
    // So does a linearizable read: it cannot confirm its leadership.
    let read = tokio::time::timeout(WRITE_DEADLINE, isolated.node().linearizable())
        .await
        .expect("a linearizable read on the isolated leader hung");
    assert!(
        read.is_err(),
        "the isolated leader served a linearizable read"
    );

    // The majority elects a new leader in a higher term and commits, through the leader
    // and forwarded from the follower.
    let majority: Vec<&Server> = servers.iter().filter(|s| s.id != old).collect();
    let new = new_leader_among(&majority, old).await;
    assert!(term(server(&servers, new)) > old_term);
    for (i, s) in majority.iter().cycle().take(6).enumerate() {
        let name = format!("majority-{i}");
        let id = try_write(s, &name).await.unwrap();
        acked.insert(name, id);
    }
    // A second write on the isolated side, while the majority has moved on: it fails too.
    let err = try_write(isolated, "lost-1").await.unwrap_err();
    assert!(matches!(err, WriteError::Raft(_)), "{err:?}");

    // The isolated side committed (and applied) nothing.
    assert_eq!(
        isolated.node().reader().last_applied_index(),
        applied_before
    );
    assert_eq!(isolated.node().reader().job_count().unwrap(), 5);

    heal(&servers);
    // The old leader steps down and follows the new one.
    let refs: Vec<&Server> = servers.iter().collect();
    let leader = leader_among(&refs).await;
    assert_ne!(leader, old, "the old leader took back the lead");
    assert!(!server(&servers, old).node().is_leader());
    assert!(term(server(&servers, old)) > old_term);

    // A write on the old leader now goes to the new one.
    let id = try_write(server(&servers, old), "after-heal")
        .await
        .unwrap();
    acked.insert("after-heal".into(), id);

    // Every server converges to the same jobs: every acknowledged one, none of the lost.
    let index = server(&servers, leader)
        .node()
        .reader()
        .last_applied_index()
        .unwrap();
    let mut states = Vec::new();
    for s in &servers {
        s.node().linearizable().await.unwrap();
        applied(s.node(), index).await;
        let held = jobs(s);
        for (name, id) in &acked {
            assert_eq!(
                held.get(name),
                Some(id),
                "server {} lost acknowledged {name}",
                s.id
            );
        }
        assert!(!held.contains_key("lost-0") && !held.contains_key("lost-1"));
        states.push(held);
    }
    assert!(states.windows(2).all(|w| w[0] == w[1]), "{states:#?}");
    assert_eq!(states[0].len(), acked.len());

    for s in &mut servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_follower_cannot_forward_to_the_leader() {
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path()).await;
    let leader = leader_among(&servers.iter().collect::<Vec<_>>()).await;
    let cut = servers.iter().find(|s| s.id != leader).unwrap().id;
    isolate(&servers, cut);

    // Forwarding is cut as well: the write fails fast instead of reaching the leader.
    let started = Instant::now();
    let err = try_write(server(&servers, cut), "lost").await.unwrap_err();
    assert!(started.elapsed() < WRITE_DEADLINE);
    assert!(
        matches!(&err, WriteError::Raft(_) | WriteError::NotLeader { .. }),
        "{err:?}"
    );
    assert!(try_write(server(&servers, leader), "kept").await.is_ok());

    heal(&servers);
    let refs: Vec<&Server> = servers.iter().collect();
    leader_among(&refs).await;
    for s in &servers {
        s.node().linearizable().await.unwrap();
        let held = jobs(s);
        assert!(held.contains_key("kept") && !held.contains_key("lost"));
    }
    for s in &mut servers {
        s.stop().await;
    }
}
