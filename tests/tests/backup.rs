//! Backup and disaster recovery: `windflow cluster snapshot save` on a 3-server cluster,
//! `restore` into a fresh single server, and the same jobs and contexts come back.

use std::process::Command;

use serde_json::{Value, json};
use windflow_tests::cluster::Cluster;
use windflow_tests::{http_json, stderr, stdout, windflow_bin};

fn cli(url: &str, token: &str, home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(windflow_bin())
        .args(args)
        .env("HOME", home)
        .env("WINDFLOW_ADDR", url)
        .env("WINDFLOW_TOKEN", token)
        .output()
        .unwrap()
}

fn get(cluster: &Cluster, i: usize, token: &str, path: &str) -> (u16, Value) {
    http_json(cluster.servers[i].http_addr, "GET", path, Some(token), None).unwrap()
}

#[test]
fn a_backup_of_a_cluster_restores_into_a_fresh_server() {
    let source = Cluster::start(3).unwrap();
    let token = source.token();
    for i in 0..20 {
        let body =
            json!({"name": format!("nightly-{i}"), "command": format!("echo {i}")}).to_string();
        let (status, answer) = http_json(
            source.servers[0].http_addr,
            "POST",
            "/v1/jobs",
            Some(&token),
            Some(&body),
        )
        .unwrap();
        assert_eq!(status, 201, "{answer}");
    }
    let (_, deleted) = http_json(
        source.servers[0].http_addr,
        "DELETE",
        "/v1/jobs/nightly-3",
        Some(&token),
        None,
    )
    .unwrap();
    assert_eq!(deleted["id"], "J4");

    // Saved through a follower: the copy is linearizable wherever it is taken.
    let file = source.root.path().join("cluster.backup");
    let url = format!("http://{}", source.servers[2].http_addr);
    let saved = cli(
        &url,
        &token,
        source.root.path(),
        &["cluster", "snapshot", "save", file.to_str().unwrap()],
    );
    assert!(saved.status.success(), "{}", stderr(&saved));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let target = Cluster::start(1).unwrap();
    let target_url = format!("http://{}", target.servers[0].http_addr);
    let garbage = target.root.path().join("garbage");
    std::fs::write(&garbage, b"not a backup").unwrap();
    let refused = cli(
        &target_url,
        &target.token(),
        target.root.path(),
        &["cluster", "snapshot", "restore", garbage.to_str().unwrap()],
    );
    assert!(
        !refused.status.success() && stderr(&refused).contains("not a Windflow backup"),
        "{}",
        stderr(&refused)
    );

    let restored = cli(
        &target_url,
        &target.token(),
        target.root.path(),
        &["cluster", "snapshot", "restore", file.to_str().unwrap()],
    );
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert!(
        stdout(&restored).contains("Restored"),
        "{}",
        stdout(&restored)
    );

    // The restored state carries the source's tokens: its admin token works here now.
    let (status, jobs) = get(&target, 0, &token, "/v1/jobs");
    assert_eq!(status, 200, "{jobs}");
    let (_, source_jobs) = get(&source, 0, &token, "/v1/jobs");
    assert_eq!(jobs, source_jobs);
    assert_eq!(jobs.as_array().unwrap().len(), 19);
    for id in ["CJ1", "CJ20", "nightly-7"] {
        assert_eq!(
            get(&target, 0, &token, &format!("/v1/contexts/{id}")),
            get(&source, 0, &token, &format!("/v1/contexts/{id}")),
            "{id}"
        );
    }
    // IDs go on from the backup's counters, and a second restore is refused.
    let body = json!({"name": "after-restore", "command": "true"}).to_string();
    let (status, job) = http_json(
        target.servers[0].http_addr,
        "POST",
        "/v1/jobs",
        Some(&token),
        Some(&body),
    )
    .unwrap();
    assert_eq!((status, job["id"].as_str()), (201, Some("J21")));
    let again = cli(
        &target_url,
        &token,
        target.root.path(),
        &["cluster", "snapshot", "restore", file.to_str().unwrap()],
    );
    assert!(
        !again.status.success() && stderr(&again).contains("already holds jobs"),
        "{}",
        stderr(&again)
    );
}
