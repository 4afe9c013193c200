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
    let jobs = cluster.jobs(i, token)?;
    Some(
        jobs.iter()
            .filter_map(|j| j["id"].as_str().map(str::to_owned))
            .collect(),
    )
}

#[test]
fn killing_the_leader_mid_stream_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start_with(3, windflow_tests::UNLIMITED_TOKEN_RATE).unwrap();
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

fn members(cluster: &Cluster, i: usize, token: &str) -> Vec<serde_json::Value> {
    let (status, body) = http_json(
        cluster.servers[i].http_addr,
        "GET",
        "/v1/cluster/members",
        Some(token),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

#[test]
fn a_server_joins_as_learner_then_voter_and_another_leaves() {
    let mut cluster = Cluster::start(3).unwrap();
    let token = cluster.token();
    let mut target = 0;
    let ids: BTreeSet<String> = (0..30)
        .filter_map(
            |i| match create(&cluster, &token, &format!("before-join-{i}"), &mut target) {
                Outcome::Acknowledged(id) => Some(id),
                Outcome::AlreadyThere => None,
            },
        )
        .collect();

    let s4 = cluster.start_joining("s4").unwrap();
    let (status, _) = http_json(
        cluster.servers[s4].http_addr,
        "GET",
        "/v1/jobs",
        Some(&token),
        None,
    )
    .unwrap();
    assert_eq!(
        status, 401,
        "a server not yet joined has no state, not even the token"
    );
    let (status, answer) = cluster.join(1, &token, s4);
    assert_eq!(status, 201, "{answer}\n{}", cluster.logs());
    let (status, again) = cluster.join(0, &token, s4);
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("already_member"))
    );

    let leader = cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    let voters = |ms: &[serde_json::Value]| ms.iter().filter(|m| m["role"] == "voter").count();
    assert_eq!(voters(&members(&cluster, leader, &token)), 4);
    wait_for(
        "s4 to hold the cluster's jobs",
        Duration::from_secs(30),
        || job_ids(&cluster, s4, &token).filter(|got| got.is_superset(&ids)),
    )
    .unwrap();

    // s2 leaves (through s4, to show any member takes the change); s1, s3, s4 go on.
    let (status, body) = http_json(
        cluster.servers[s4].http_addr,
        "DELETE",
        "/v1/cluster/members/s2",
        Some(&token),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}\n{}", cluster.logs());
    cluster.stop(1).unwrap();
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    let after = members(&cluster, leader, &token);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after.iter().all(|m| m["name"] != "s2"));
    let mut target = s4;
    assert!(matches!(
        create(&cluster, &token, "after-the-change", &mut target),
        Outcome::Acknowledged(_)
    ));
    let (status, _) = http_json(
        cluster.servers[0].http_addr,
        "DELETE",
        "/v1/cluster/members/nobody",
        Some(&token),
        None,
    )
    .unwrap();
    assert_eq!(status, 404);
}
