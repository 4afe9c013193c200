//! Network partitions, injected in the raft transport ([`windflow_raft::Faults`]): a leader
//! cut off from the other two commits nothing and its writes fail with a clear error; the
//! majority elects a new leader and commits; after healing the old leader follows the new
//! one, every log converges and no acknowledged write is lost. A history of a register
//! (the set of jobs) recorded across a partition is checked to be linearizable.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
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

/// One operation on the register (the set of job names) as a client saw it.
#[derive(Debug, Clone)]
struct Op {
    client: usize,
    invoke: Instant,
    complete: Instant,
    kind: OpKind,
}

#[derive(Debug, Clone)]
enum OpKind {
    /// Adds a job name; `acked` when the write was acknowledged. A failed write is
    /// indeterminate (it may have been applied), except where the test knows better.
    Add { name: String, acked: bool },
    /// A linearizable read of every job name; `None` when the read failed.
    Read(Option<BTreeSet<String>>),
}

/// Checks a history of a grow-only set (adds of unique elements, reads of the whole set)
/// for linearizability:
/// - a read returns only elements whose add was invoked before the read completed;
/// - a read returns every element whose add was acknowledged before the read was invoked;
/// - any two reads return sets ordered by inclusion (the set only grows, in one order),
///   and a read that completed before another was invoked returns a subset of it.
///
/// Together these let the adds and reads be put in one order that respects real time:
/// reads by inclusion, each add just before the first read that holds its element.
fn check_grow_only_set(history: &[Op]) -> Result<(), String> {
    let adds: BTreeMap<&str, &Op> = history
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Add { name, .. } => Some((name.as_str(), op)),
            OpKind::Read(_) => None,
        })
        .collect();
    let reads: Vec<(&Op, &BTreeSet<String>)> = history
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Read(Some(set)) => Some((op, set)),
            _ => None,
        })
        .collect();
    for (read, set) in &reads {
        for name in *set {
            let Some(add) = adds.get(name.as_str()) else {
                return Err(format!("client {} read {name}, never added", read.client));
            };
            if add.invoke > read.complete {
                return Err(format!(
                    "client {} read {name} before its add was invoked",
                    read.client
                ));
            }
        }
        for (name, add) in &adds {
            if matches!(add.kind, OpKind::Add { acked: true, .. })
                && add.complete < read.invoke
                && !set.contains(*name)
            {
                return Err(format!(
                    "client {} missed {name}, acknowledged before the read began",
                    read.client
                ));
            }
        }
    }
    for (a, sa) in &reads {
        for (b, sb) in &reads {
            if !(sa.is_subset(sb) || sb.is_subset(sa)) {
                return Err(format!(
                    "reads by clients {} and {} saw incomparable sets: {:?} vs {:?}",
                    a.client,
                    b.client,
                    sa.symmetric_difference(sb).collect::<Vec<_>>(),
                    sb.len()
                ));
            }
            if a.complete < b.invoke && !sa.is_subset(sb) {
                return Err(format!(
                    "client {} read {:?}, missing from a later read by client {}",
                    a.client,
                    sa.difference(sb).collect::<Vec<_>>(),
                    b.client
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn the_checker_catches_stale_and_lost_reads() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let add = |name: &str, from, to, acked| Op {
        client: 0,
        invoke: at(from),
        complete: at(to),
        kind: OpKind::Add {
            name: name.into(),
            acked,
        },
    };
    let read = |from, to, names: &[&str]| Op {
        client: 1,
        invoke: at(from),
        complete: at(to),
        kind: OpKind::Read(Some(names.iter().map(|n| n.to_string()).collect())),
    };
    let good = vec![
        add("a", 0, 10, true),
        read(5, 8, &[]),
        read(11, 12, &["a"]),
        add("b", 20, 30, false),
        read(25, 26, &["a", "b"]),
    ];
    assert_eq!(check_grow_only_set(&good), Ok(()));
    // An acknowledged add missing from a later read.
    let lost = vec![add("a", 0, 10, true), read(11, 12, &[])];
    assert!(check_grow_only_set(&lost).is_err());
    // A stale read after a read that saw more.
    let stale = vec![
        add("a", 0, 100, false),
        read(10, 20, &["a"]),
        read(30, 40, &[]),
    ];
    assert!(check_grow_only_set(&stale).is_err());
    // Two reads that disagree on the order of two adds.
    let split = vec![
        add("a", 0, 100, false),
        add("b", 0, 100, false),
        read(10, 20, &["a"]),
        read(10, 20, &["b"]),
    ];
    assert!(check_grow_only_set(&split).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_register_history_across_a_partition_is_linearizable() {
    let root = tempfile::tempdir().unwrap();
    let mut servers = three_servers(root.path()).await;
    let old = leader_among(&servers.iter().collect::<Vec<_>>()).await;
    let nodes: Vec<_> = servers.iter().map(|s| s.node().clone()).collect();
    let history = Arc::new(Mutex::new(Vec::<Op>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // One client per server, alternating an add and a linearizable read.
    let mut clients = Vec::new();
    for (client, node) in nodes.into_iter().enumerate() {
        let history = history.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut k = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("c{client}-{k}");
                k += 1;
                let invoke = Instant::now();
                let r = tokio::time::timeout(WRITE_DEADLINE, node.write(common::create_job(&name)))
                    .await
                    .expect("a write hung");
                let op = Op {
                    client,
                    invoke,
                    complete: Instant::now(),
                    kind: OpKind::Add {
                        name,
                        acked: r.is_ok(),
                    },
                };
                history.lock().unwrap().push(op);

                let invoke = Instant::now();
                let read = tokio::time::timeout(WRITE_DEADLINE, node.linearizable())
                    .await
                    .expect("a read hung");
                let set = read.ok().map(|()| {
                    node.reader()
                        .jobs()
                        .unwrap()
                        .into_iter()
                        .map(|j| j.spec.name)
                        .collect()
                });
                let op = Op {
                    client,
                    invoke,
                    complete: Instant::now(),
                    kind: OpKind::Read(set),
                };
                history.lock().unwrap().push(op);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let cut_at = Instant::now();
    isolate(&servers, old);
    let majority: Vec<&Server> = servers.iter().filter(|s| s.id != old).collect();
    new_leader_among(&majority, old).await;
    // Hold the partition until the isolated leader's client has seen a write fail.
    let old_client = servers.iter().position(|s| s.id == old).unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            let failed = history.lock().unwrap().iter().any(|op| {
                op.client == old_client
                    && op.invoke > cut_at
                    && matches!(op.kind, OpKind::Add { acked: false, .. })
            });
            if failed {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a write on the isolated leader failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let healed_at = Instant::now();
    heal(&servers);
    let refs: Vec<&Server> = servers.iter().collect();
    leader_among(&refs).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let history = history.lock().unwrap().clone();
    check_grow_only_set(&history).unwrap_or_else(|e| panic!("not linearizable: {e}"));

    // Adds the isolated leader took during the partition, and failed: none was applied.
    let lost: Vec<&str> = history
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Add { name, acked: false }
                if op.client == old_client && op.invoke > cut_at && op.complete < healed_at =>
            {
                Some(name.as_str())
            }
            _ => None,
        })
        .collect();
    assert!(!lost.is_empty(), "the isolated leader took no write");
    let majority_reads = history
        .iter()
        .filter(|op| {
            op.client != old_client
                && op.invoke > cut_at
                && op.complete < healed_at
                && matches!(op.kind, OpKind::Read(Some(_)))
        })
        .count();
    assert!(
        majority_reads > 0,
        "the majority served no read in the partition"
    );
    eprintln!(
        "{} operations, {} lost adds on the isolated leader, {majority_reads} reads on the \
         majority during the partition",
        history.len(),
        lost.len()
    );
    let acked: Vec<&str> = history
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Add { name, acked: true } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        acked
            .iter()
            .any(|n| !n.starts_with(&format!("c{old_client}-")))
    );
    for s in &servers {
        s.node().linearizable().await.unwrap();
        let held = jobs(s);
        for name in &acked {
            assert!(held.contains_key(*name), "server {} lost {name}", s.id);
        }
        for name in &lost {
            assert!(
                !held.contains_key(*name),
                "server {} applied lost {name}",
                s.id
            );
        }
    }
    for s in &mut servers {
        s.stop().await;
    }
}
