//! A partition across real `windflow server` processes (their raft links cut through
//! `--fault-injection`): the isolated leader commits nothing and says so, the majority goes
//! on, and after healing everyone converges with every acknowledged write. A history of
//! the register (the set of jobs) recorded by a client per server across the partition is
//! checked to be linearizable.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use windflow_tests::cluster::Cluster;
use windflow_tests::history::{Op, OpKind, check_grow_only_set};
use windflow_tests::{http_json, http_json_within, wait_for};

fn isolate(cluster: &Cluster, i: usize, token: &str, from: &[&str]) {
    let body = json!({ "isolate_from": from }).to_string();
    let (status, answer) = http_json(
        cluster.servers[i].http_addr,
        "PUT",
        "/v1/debug/faults",
        Some(token),
        Some(&body),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
}

fn create(cluster: &Cluster, i: usize, token: &str, name: &str) -> (u16, serde_json::Value) {
    let body = json!({"name": name, "command": "true"}).to_string();
    http_json(
        cluster.servers[i].http_addr,
        "POST",
        "/v1/jobs",
        Some(token),
        Some(&body),
    )
    .unwrap()
}

fn names(cluster: &Cluster, i: usize, token: &str) -> Option<BTreeSet<String>> {
    let jobs = cluster.jobs(i, token)?;
    Some(
        jobs.iter()
            .filter_map(|j| j["spec"]["name"].as_str().map(str::to_owned))
            .collect(),
    )
}

#[test]
fn an_isolated_leader_commits_nothing_and_the_majority_goes_on() {
    let cluster = Cluster::start_with(
        3,
        &[
            "--fault-injection",
            "--rate-limit",
            "1000000",
            "--rate-burst",
            "1000000",
        ],
    )
    .unwrap();
    let token = cluster.token();
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let mut acked = BTreeSet::new();
    for i in 0..10 {
        let name = format!("before-{i}");
        assert_eq!(create(&cluster, leader, &token, &name).0, 201);
        acked.insert(name);
    }

    let other_names: Vec<&str> = others
        .iter()
        .map(|&i| cluster.servers[i].name.as_str())
        .collect();
    isolate(&cluster, leader, &token, &other_names);
    for &i in &others {
        isolate(
            &cluster,
            i,
            &token,
            &[cluster.servers[leader].name.as_str()],
        );
    }

    // The isolated side: the write fails, with a reason, within the commit timeout.
    let started = Instant::now();
    let (status, answer) = create(&cluster, leader, &token, "isolated-write");
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("majority"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    // The majority elects one of its own and commits.
    wait_for(
        "a leader among the majority",
        Duration::from_secs(30),
        || others.iter().copied().find(|&i| cluster.is_leader(i)),
    )
    .unwrap();
    for i in 0..10 {
        let name = format!("during-{i}");
        let (status, answer) = create(&cluster, others[i % 2], &token, &name);
        assert_eq!(status, 201, "{answer}");
        acked.insert(name);
    }

    // Heal: the old leader steps down and every server holds exactly the acknowledged jobs.
    for i in 0..3 {
        isolate(&cluster, i, &token, &[]);
    }
    wait_for(
        "the old leader to step down",
        Duration::from_secs(30),
        || (!cluster.is_leader(leader)).then_some(()),
    )
    .unwrap();
    for i in 0..3 {
        wait_for(
            &format!("{} to converge", cluster.servers[i].name),
            Duration::from_secs(30),
            || names(&cluster, i, &token).filter(|n| *n == acked),
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", names(&cluster, i, &token), cluster.logs()));
    }
    assert!(cluster.wait_for_leader(Duration::from_secs(30)).is_ok());
    let (status, _) = create(&cluster, leader, &token, "after-heal");
    assert_eq!(status, 201, "the old leader forwards to the new one");
}

/// Clients, one per server, alternating an add (a job with a unique name) and a
/// linearizable read of every name, until `stop`.
fn record_history(cluster: &Cluster, token: &str, stop: &AtomicBool, history: &Mutex<Vec<Op>>) {
    std::thread::scope(|scope| {
        for client in 0..cluster.servers.len() {
            let addr = cluster.servers[client].http_addr;
            scope.spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("c{client}-{k}");
                    k += 1;
                    let body = json!({"name": name, "command": "true"}).to_string();
                    let invoke = Instant::now();
                    let added = http_json_within(
                        addr,
                        "POST",
                        "/v1/jobs",
                        Some(token),
                        Some(&body),
                        OP_DEADLINE,
                    );
                    let complete = Instant::now();
                    let acked = matches!(added, Ok((201, _)));
                    history.lock().unwrap().push(Op {
                        client,
                        invoke,
                        complete,
                        kind: OpKind::Add { name, acked },
                    });

                    let invoke = Instant::now();
                    let read = http_json_within(
                        addr,
                        "GET",
                        "/v1/jobs?consistent=true",
                        Some(token),
                        None,
                        OP_DEADLINE,
                    );
                    let complete = Instant::now();
                    let set = match read {
                        Ok((200, jobs)) => jobs.as_array().map(|jobs| {
                            jobs.iter()
                                .filter_map(|j| j["spec"]["name"].as_str().map(str::to_owned))
                                .collect()
                        }),
                        _ => None,
                    };
                    history.lock().unwrap().push(Op {
                        client,
                        invoke,
                        complete,
                        kind: OpKind::Read(set),
                    });
                }
            });
        }
    });
}

/// How long one operation may take: the leader's 5 s commit wait, and slack for a busy
/// machine; an operation that takes longer is recorded as failed (indeterminate).
const OP_DEADLINE: Duration = Duration::from_secs(15);

#[test]
fn a_register_history_across_a_partition_of_processes_is_linearizable() {
    let cluster = Cluster::start_with(
        3,
        &[
            "--fault-injection",
            "--rate-limit",
            "1000000",
            "--rate-burst",
            "1000000",
        ],
    )
    .unwrap();
    let token = cluster.token();
    let old = cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let history = Mutex::new(Vec::<Op>::new());
    let stop = AtomicBool::new(false);
    let (cut_at, healed_at) = std::thread::scope(|scope| {
        scope.spawn(|| record_history(&cluster, &token, &stop, &history));
        let acked_adds = |after: Instant| {
            history
                .lock()
                .unwrap()
                .iter()
                .filter(|op| {
                    op.invoke > after && matches!(op.kind, OpKind::Add { acked: true, .. })
                })
                .count()
        };
        let t0 = Instant::now();
        wait_for("writes before the cut", Duration::from_secs(30), || {
            (acked_adds(t0) >= 6).then_some(())
        })
        .unwrap();

        let cut_at = Instant::now();
        let majority: Vec<&str> = others
            .iter()
            .map(|&i| cluster.servers[i].name.as_str())
            .collect();
        isolate(&cluster, old, &token, &majority);
        for &i in &others {
            isolate(&cluster, i, &token, &[cluster.servers[old].name.as_str()]);
        }
        wait_for(
            "a leader among the majority",
            Duration::from_secs(30),
            || others.iter().copied().find(|&i| cluster.is_leader(i)),
        )
        .unwrap();
        // Hold the partition until the isolated leader's client has seen a write fail and
        // the majority has acknowledged some.
        wait_for(
            "a failed write on the isolated side",
            Duration::from_secs(60),
            || {
                history
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|op| {
                        op.client == old
                            && op.invoke > cut_at
                            && matches!(op.kind, OpKind::Add { acked: false, .. })
                    })
                    .then_some(())
            },
        )
        .unwrap();
        let after_failure = Instant::now();
        wait_for(
            "majority writes in the partition",
            Duration::from_secs(30),
            || (acked_adds(after_failure) >= 4).then_some(()),
        )
        .unwrap();

        let healed_at = Instant::now();
        for i in 0..3 {
            isolate(&cluster, i, &token, &[]);
        }
        wait_for(
            "the old leader to step down",
            Duration::from_secs(30),
            || (!cluster.is_leader(old)).then_some(()),
        )
        .unwrap();
        let after_heal = Instant::now();
        wait_for("writes after healing", Duration::from_secs(30), || {
            (acked_adds(after_heal) >= 6).then_some(())
        })
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        (cut_at, healed_at)
    });

    let history = history.into_inner().unwrap();
    check_grow_only_set(&history).unwrap_or_else(|e| panic!("not linearizable: {e}"));

    // The isolated leader's failed adds during the partition: none was applied anywhere.
    let lost: Vec<&str> = history
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Add { name, acked: false }
                if op.client == old && op.invoke > cut_at && op.complete < healed_at =>
            {
                Some(name.as_str())
            }
            _ => None,
        })
        .collect();
    assert!(!lost.is_empty());
    let majority_reads = history
        .iter()
        .filter(|op| {
            op.client != old
                && op.invoke > cut_at
                && op.complete < healed_at
                && matches!(op.kind, OpKind::Read(Some(_)))
        })
        .count();
    assert!(
        majority_reads > 0,
        "the majority served no read in the partition"
    );
    let acked: BTreeSet<&str> = history
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Add { name, acked: true } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    for i in 0..3 {
        let held = wait_for(
            &format!("{} to hold every acknowledged job", cluster.servers[i].name),
            Duration::from_secs(30),
            || names(&cluster, i, &token).filter(|n| acked.iter().all(|a| n.contains(*a))),
        )
        .unwrap();
        for name in &lost {
            assert!(!held.contains(*name), "server {i} applied the lost {name}");
        }
    }
    eprintln!(
        "{} operations, {} acknowledged adds, {} lost on the isolated leader, {majority_reads} \
         majority reads during the partition",
        history.len(),
        acked.len(),
        lost.len()
    );
}
