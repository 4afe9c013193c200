//! A fourth server joins a cluster holding 100,000 log entries' worth of state (100,000
//! jobs; concurrent writers share entries, so the log itself is shorter), after the others
//! have snapshotted and purged their logs, and catches up through a snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use windflow_tests::cluster::Cluster;
use windflow_tests::{http_json, wait_for};

const JOBS: usize = 100_000;
const WRITERS: usize = 16;

fn metric(cluster: &Cluster, i: usize, name: &str) -> Option<u64> {
    let (_, body) = http_json(cluster.servers[i].http_addr, "GET", "/metrics", None, None).ok()?;
    let prefix = format!("{name} ");
    body.as_str()?
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Writes `JOBS` jobs with keep-alive connections spread over the servers.
async fn load(urls: Vec<String>, token: String) {
    windflow_certs::install_crypto_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(WRITERS)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, next, token, url) = (
                client.clone(),
                next.clone(),
                token.clone(),
                urls[w % urls.len()].clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= JOBS {
                        return;
                    }
                    // A client retries a 503 (an election under way), as the API's message
                    // says; a retry of a create that had applied meets its own name.
                    let mut attempt = 0;
                    loop {
                        attempt += 1;
                        let res = client
                            .post(format!("{url}/v1/jobs"))
                            .bearer_auth(&token)
                            .json(&json!({"name": format!("bulk-{i}"), "command": "true"}))
                            .send()
                            .await
                            .unwrap();
                        let status = res.status().as_u16();
                        if status == 201 || (status == 409 && attempt > 1) {
                            break;
                        }
                        let body = res.text().await.unwrap_or_default();
                        assert!(
                            status == 503 && attempt < 50,
                            "job {i}, attempt {attempt}: {status} {body}"
                        );
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
}

#[test]
fn a_new_server_catches_up_from_a_snapshot_of_100k_entries() {
    let mut cluster = Cluster::start_with(3, windflow_tests::UNLIMITED_TOKEN_RATE).unwrap();
    let token = cluster.token();
    let urls: Vec<String> = cluster
        .servers
        .iter()
        .map(|s| format!("http://{}", s.http_addr))
        .collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(load(urls, token.clone()));

    let leader = cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    assert_eq!(metric(&cluster, leader, "windflow_jobs"), Some(JOBS as u64));
    let last_log = metric(&cluster, leader, "windflow_raft_last_log_index").unwrap();
    // Every server has snapshotted and purged most of its log: a newcomer cannot replay it.
    for i in 0..3 {
        wait_for("a purged log", Duration::from_secs(60), || {
            metric(&cluster, i, "windflow_raft_purged_index").filter(|p| *p > last_log / 2)
        })
        .unwrap();
    }

    let s4 = cluster.start_joining("s4").unwrap();
    let (status, answer) = cluster.join(leader, &token, s4);
    assert_eq!(status, 201, "{answer}\n{}", cluster.logs());
    // The leader counts the learner caught up once its snapshot is received; s4 may still
    // be writing it to its tree (and counting it) when the join answers.
    wait_for("s4 to install a snapshot", Duration::from_secs(60), || {
        metric(&cluster, s4, "windflow_raft_snapshots_total").filter(|n| *n >= 1)
    })
    .unwrap_or_else(|e| panic!("{e}: s4 installed no snapshot\n{}", cluster.logs()));
    wait_for("s4 to hold every job", Duration::from_secs(60), || {
        metric(&cluster, s4, "windflow_jobs").filter(|n| *n == JOBS as u64)
    })
    .unwrap();
    let (status, job) = http_json(
        cluster.servers[s4].http_addr,
        "GET",
        "/v1/jobs/bulk-99999",
        Some(&token),
        None,
    )
    .unwrap();
    assert_eq!(
        (status, job["spec"]["name"].as_str()),
        (200, Some("bulk-99999"))
    );
}
