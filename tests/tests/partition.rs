//! A partition across real `windflow server` processes (their raft links cut through
//! `--fault-injection`): the isolated leader commits nothing and says so, the majority goes
//! on, and after healing everyone converges with every acknowledged write.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;
use windflow_tests::cluster::Cluster;
use windflow_tests::{http_json, wait_for};

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
    let cluster = Cluster::start_with(3, &["--fault-injection"]).unwrap();
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
