//! Three `windflow server` processes as one cluster: a kill -9 of the leader in the middle of
//! a stream of writes loses no acknowledged write, and a full stop and start keeps the state.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;
use windflow_tests::cluster::Cluster;
use windflow_tests::{http_json, wait_for};

/// How a create ended, as the client saw it.
enum Outcome {
    Acknowledged(String),
    /// The name exists: an earlier attempt committed but its answer was lost.
    AlreadyThere,
}

/// Creates job `name` through any server, moving on when one is down or not leader.
fn create(cluster: &Cluster, token: &str, name: &str, start: &mut usize) -> Outcome {
    let body = json!({"name": name, "command": "true"}).to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "no server took `{name}` within 60s\n{}",
            cluster.logs()
        );
        let server = &cluster.servers[*start % cluster.servers.len()];
        if server.is_running() {
            match http_json(
                server.http_addr,
                "POST",
                "/v1/jobs",
                Some(token),
                Some(&body),
            ) {
                Ok((201, job)) => {
                    return Outcome::Acknowledged(job["id"].as_str().unwrap().to_owned());
                }
                Ok((409, _)) => return Outcome::AlreadyThere,
                Ok((status, answer)) if status >= 500 => {
                    let _ = answer; // not leader, no quorum yet: try the next server
                }
                Ok((status, answer)) => panic!("`{name}` refused with {status}: {answer}"),
                Err(_) => {} // connection refused or reset: the server is down
            }
        }
        *start += 1;
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn job_ids(cluster: &Cluster, i: usize, token: &str) -> Option<BTreeSet<String>> {
    let (status, jobs) = http_json(
        cluster.servers[i].http_addr,
        "GET",
        "/v1/jobs",
        Some(token),
        None,
    )
    .ok()?;
    (status == 200).then(|| {
        jobs.as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["id"].as_str().map(str::to_owned))
            .collect()
    })
}

#[test]
fn killing_the_leader_mid_stream_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3).unwrap();
    let token = cluster.token();
    let old_leader = cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    let mut acked = BTreeSet::new();
    let mut target = old_leader;
    let total = 5_000;
    for i in 0..total {
        if i == total / 2 {
            cluster.kill(old_leader);
        }
        if let Outcome::Acknowledged(id) =
            create(&cluster, &token, &format!("job-{i}"), &mut target)
        {
            acked.insert(id);
        }
    }
    assert!(
        acked.len() >= total - 10,
        "only {} of {total} writes were acknowledged",
        acked.len()
    );

    let new_leader = cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    assert_ne!(new_leader, old_leader);
    cluster.restart(old_leader).unwrap();
    for i in 0..cluster.servers.len() {
        wait_for(
            &format!("{} to hold every acknowledged job", cluster.servers[i].name),
            Duration::from_secs(60),
            || job_ids(&cluster, i, &token).filter(|ids| ids.is_superset(&acked)),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    }
    // And the cluster still takes writes.
    let mut target = 0;
    assert!(matches!(
        create(&cluster, &token, "after-the-crash", &mut target),
        Outcome::Acknowledged(_)
    ));
}

fn term(cluster: &Cluster, i: usize) -> Option<u64> {
    let (_, metrics) =
        http_json(cluster.servers[i].http_addr, "GET", "/metrics", None, None).ok()?;
    let text = metrics.as_str()?.to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("windflow_raft_term "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_full_stop_and_start_keeps_state_and_term() {
    let mut cluster = Cluster::start(3).unwrap();
    let token = cluster.token();
    cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    let mut target = 0;
    let ids: BTreeSet<String> = (0..50)
        .filter_map(
            |i| match create(&cluster, &token, &format!("keep-{i}"), &mut target) {
                Outcome::Acknowledged(id) => Some(id),
                Outcome::AlreadyThere => None,
            },
        )
        .collect();
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    let term_before = term(&cluster, leader).unwrap();
    for i in 0..3 {
        cluster.stop(i).unwrap();
    }
    for i in 0..3 {
        cluster.restart(i).unwrap();
    }
    cluster.wait_ready().unwrap();
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    assert!(term(&cluster, leader).unwrap() >= term_before);
    for i in 0..3 {
        wait_for("the jobs after restart", Duration::from_secs(30), || {
            job_ids(&cluster, i, &token).filter(|got| *got == ids)
        })
        .unwrap();
    }
    let mut target = leader;
    let Outcome::Acknowledged(next) = create(&cluster, &token, "after-restart", &mut target) else {
        panic!("the restarted cluster refused a new job");
    };
    assert_eq!(next, "J51", "IDs continue after a full restart");
}
