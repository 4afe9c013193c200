//! Rolling deployments against real processes: a server and three real agents from
//! 127.0.0.2-4, a service of busybox `httpd`s, each on the port its agent picked for it
//! (`WINDFLOW_PORT`), judged by an HTTP health check run by the agents.
//!
//! - 3 replicas become healthy and their first deployment succeeds; an update (a changed
//!   env) rolls out `max_parallel` (1) at a time, sampled all along: never fewer than
//!   `count - max_parallel` healthy, never more than `max_parallel` new ones unhealthy;
//!   `job scale` then moves the count up and down.
//! - An update whose health check fails fails its deployment, which reverts the job to
//!   the stable version (a new version), whose own deployment then succeeds; the old
//!   version's instances kept serving throughout.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};
use windflow_tests::fleet::{Fleet, PATIENT};
use windflow_tests::stderr;

const COUNT: usize = 3;

/// A service of `count` busybox httpds serving `www`, with its env `V` and an HTTP check.
fn spec(name: &str, www: &Path, count: usize, v: &str, command: Option<&str>) -> Value {
    let httpd = format!(
        "exec busybox httpd -f -p 127.0.0.1:$WINDFLOW_PORT -h {}",
        www.display()
    );
    json!({
        "name": name,
        "command": command.unwrap_or(&httpd),
        "type": "service",
        "count": count,
        "placement": "spread",
        "env": {"V": v},
        "resources": {"cpu_mhz": 10, "memory_mb": 8},
        "update": {"max_parallel": 1, "min_healthy_time": "1s", "healthy_deadline": "8s",
                   "progress_deadline": "40s", "auto_revert": true},
        "checks": [{"type": "http", "path": "/index.html", "interval": "300ms", "timeout": "250ms"}],
    })
}

fn www(f: &Fleet) -> std::path::PathBuf {
    let dir = f.cluster.root.path().join("www");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "ok\n").unwrap();
    dir
}

fn live(f: &Fleet, job: &str) -> Vec<Value> {
    f.allocs(job)
        .into_iter()
        .filter(|a| a["desired"] == "run" && a["client"] != "failed" && a["client"] != "complete")
        .collect()
}

fn healthy(a: &Value) -> bool {
    a["client"] == "running" && a["health"]["status"] == "healthy"
}

fn deployments(f: &Fleet, job: &str) -> Vec<Value> {
    f.get(&format!("/v1/deployments?job={job}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits for the job's deployment of `version` to end `status`.
fn deployment_ends(f: &Fleet, job: &str, version: u64, status: &str) -> Value {
    f.wait(
        &format!("the deployment of version {version} to be {status}"),
        |f| {
            deployments(f, job)
                .into_iter()
                .find(|d| d["version"] == version && d["status"] == status)
        },
    )
}

/// Waits for exactly `count` live allocations of `version`, all healthy, and no other.
fn all_healthy_at(f: &Fleet, job: &str, count: usize, version: u64) -> Vec<Value> {
    f.wait(
        &format!("{count} healthy allocations of version {version}"),
        |f| {
            let l = live(f, job);
            (l.len() == count && l.iter().all(|a| healthy(a) && a["job_version"] == version))
                .then_some(l)
        },
    )
}

#[test]
fn replicas_become_healthy_roll_out_one_at_a_time_and_scale() {
    let f = Fleet::start(3, PATIENT);
    let www = www(&f);
    let (status, job) = f.call(
        "POST",
        "/v1/jobs",
        Some(spec("web", &www, COUNT, "1", None)),
    );
    assert_eq!(status, 201, "{job}");
    let job = job["id"].as_str().unwrap().to_owned();
    let first = all_healthy_at(&f, &job, COUNT, 1);
    deployment_ends(&f, &job, 1, "successful");
    // Healthy by their agents' HTTP checks, each on the port its agent picked.
    assert!(first.iter().all(|a| {
        a["health"]["message"]
            .as_str()
            .unwrap()
            .contains("check(s) passing")
    }));

    // The update, through the CLI: the same spec but V=2.
    let out = f.cli(&[
        "job",
        "update",
        "web",
        "--cmd",
        &format!(
            "exec busybox httpd -f -p 127.0.0.1:$WINDFLOW_PORT -h {}",
            www.display()
        ),
        "--type",
        "service",
        "--count",
        "3",
        "--placement",
        "spread",
        "--env",
        "V=2",
        "--cpu",
        "10",
        "--memory",
        "8",
        "--max-parallel",
        "1",
        "--min-healthy-time",
        "1s",
        "--healthy-deadline",
        "8s",
        "--progress-deadline",
        "40s",
        "--auto-revert",
        "--check-http",
        "/index.html",
        "--check-interval",
        "300ms",
        "--check-timeout",
        "250ms",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("version 2"), "{said}");
    let d2 = deployments(&f, &job)
        .into_iter()
        .find(|d| d["version"] == 2)
        .expect("a deployment");

    // Sampled while it rolls.
    let mut samples = 0;
    let mut seen_new = BTreeSet::new();
    f.wait("the rollout to finish", |f| {
        let l = live(f, &job);
        let up = l.iter().filter(|a| healthy(a)).count();
        let in_flight = l
            .iter()
            .filter(|a| a["job_version"] == 2 && !healthy(a))
            .count();
        assert!(
            up >= COUNT - 1,
            "only {up} healthy while rolling: {l:#?}\n{}",
            f.logs()
        );
        assert!(
            in_flight <= 1,
            "{in_flight} new ones in flight at once: {l:#?}"
        );
        for a in l.iter().filter(|a| a["job_version"] == 2) {
            seen_new.insert(a["id"].as_str().unwrap().to_owned());
        }
        samples += 1;
        let d = f.get(&format!("/v1/deployments/{}", d2["id"].as_str().unwrap()));
        (d["status"] == "successful").then_some(())
    });
    assert!(samples > 3, "the rollout was sampled {samples} times only");
    let done = f.get(&format!("/v1/deployments/{}", d2["id"].as_str().unwrap()));
    let at = |k: &str| -> windflow_protocol::Timestamp {
        serde_json::from_value(done[k].clone()).unwrap()
    };
    eprintln!(
        "rolled {COUNT} instances one at a time in {} ms ({samples} samples)",
        at("modified_at").0 - at("created_at").0
    );
    let second = all_healthy_at(&f, &job, COUNT, 2);
    assert_eq!(seen_new.len(), COUNT, "{seen_new:?}");
    // Every old one was stopped, each only after a new one was healthy in its place.
    for old in &first {
        let a = f.alloc(old["id"].as_str().unwrap());
        assert_eq!(a["desired"], "stop", "{a}");
        let why = a["events"].as_array().unwrap().iter().any(|e| {
            e["kind"] == "stop_requested"
                && e["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("(healthy)")
        });
        assert!(why, "{a}");
    }
    let versions = f.get(&format!("/v1/jobs/{job}/versions"));
    assert_eq!(versions[0]["version"], 2, "{versions}");
    assert_eq!(versions[0]["stable"], true, "{versions}");
    assert_eq!(f.get(&format!("/v1/jobs/{job}"))["version"], 2);
    drop(second);

    // Scale up and down: no new version, no rollout.
    let out = f.cli(&["job", "scale", "web", "5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    all_healthy_at(&f, &job, 5, 2);
    let out = f.cli(&["job", "scale", "web", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    all_healthy_at(&f, &job, 2, 2);
    assert_eq!(f.get(&format!("/v1/jobs/{job}"))["version"], 2);
    assert_eq!(deployments(&f, &job).len(), 2);
    let (status, bad) = f.call(
        "POST",
        &format!("/v1/jobs/{job}/scale"),
        Some(json!({"count": -1})),
    );
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"]["message"].as_str().unwrap().contains("count"),
        "{bad}"
    );
}

#[test]
fn an_update_that_fails_its_checks_is_reverted_and_its_deployment_fails() {
    let f = Fleet::start(3, PATIENT);
    let www = www(&f);
    let (status, job) = f.call("POST", "/v1/jobs", Some(spec("api", &www, 2, "1", None)));
    assert_eq!(status, 201, "{job}");
    let job = job["id"].as_str().unwrap().to_owned();
    let first = all_healthy_at(&f, &job, 2, 1);
    deployment_ends(&f, &job, 1, "successful");

    // Version 2 serves nothing: its check never passes.
    let broken = spec("api", &www, 2, "2", Some("exec sleep 1000"));
    let (status, updated) = f.call("PUT", &format!("/v1/jobs/{job}"), Some(broken));
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["changed"], true, "{updated}");
    assert_eq!(updated["job"]["version"], 2, "{updated}");

    // Meanwhile, version 1 keeps serving on both instances.
    let failed = f.wait("the deployment of version 2 to fail", |f| {
        let l = live(f, &job);
        let old_up = l
            .iter()
            .filter(|a| a["job_version"] == 1 && healthy(a))
            .count();
        let reverted = f.get(&format!("/v1/jobs/{job}"))["version"] == 3;
        assert!(
            reverted || old_up >= 1,
            "the failing version took the old one down: {l:#?}"
        );
        deployments(f, &job)
            .into_iter()
            .find(|d| d["version"] == 2 && d["status"] == "failed")
    });
    let why = failed["description"].as_str().unwrap();
    assert!(why.contains("unhealthy"), "{why}");
    assert!(why.contains("reverted to version 1 as version 3"), "{why}");
    let (status, metrics) = windflow_tests::http_json(
        f.cluster.servers[0].http_addr,
        "GET",
        "/metrics",
        None,
        None,
    )
    .unwrap();
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(
        metrics.contains("windflow_deployments{status=\"failed\"} 1"),
        "{metrics}"
    );
    let out = f.cli(&["deployment", "list", "--job", "api"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed"));

    // Version 3 is version 1's spec, rolled out in turn.
    deployment_ends(&f, &job, 3, "successful");
    let now = all_healthy_at(&f, &job, 2, 3);
    let j = f.get(&format!("/v1/jobs/{job}"));
    assert_eq!(j["stable_version"], 3, "{j}");
    assert_eq!(j["spec"]["groups"][0]["tasks"][0]["env"]["V"], "1", "{j}");
    assert_ne!(now[0]["id"], first[0]["id"]);

    // An update that changes nothing makes no version.
    let (status, same) = f.call(
        "PUT",
        &format!("/v1/jobs/{job}"),
        Some(spec("api", &www, 2, "1", None)),
    );
    assert_eq!(status, 200, "{same}");
    assert_eq!(
        (same["changed"].clone(), same["job"]["version"].clone()),
        (json!(false), json!(3)),
        "{same}"
    );
    // And a bad one names its field.
    let mut bad = spec("api", &www, 2, "1", None);
    bad["update"]["max_parallel"] = json!(0);
    let (status, err) = f.call("PUT", &format!("/v1/jobs/{job}"), Some(bad));
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("update.max_parallel"),
        "{err}"
    );
}

#[test]
fn a_canary_runs_next_to_the_old_version_until_promoted() {
    let f = Fleet::start(2, PATIENT);
    let www = www(&f);
    let mut body = spec("shop", &www, 2, "1", None);
    body["update"]["canary"] = json!(1);
    let (status, job) = f.call("POST", "/v1/jobs", Some(body.clone()));
    assert_eq!(status, 201, "{job}");
    let job = job["id"].as_str().unwrap().to_owned();
    all_healthy_at(&f, &job, 2, 1);
    deployment_ends(&f, &job, 1, "successful");

    body["env"]["V"] = json!("2");
    let (status, updated) = f.call("PUT", &format!("/v1/jobs/{job}"), Some(body));
    assert_eq!(status, 200, "{updated}");
    let d = updated["deployment"]["id"].as_str().unwrap().to_owned();
    assert_eq!(updated["deployment"]["promoted"], false, "{updated}");
    // The canary becomes healthy next to both old ones, and nothing more moves.
    f.wait("a healthy canary next to the old version", |f| {
        let l = live(f, &job);
        let canaries = l
            .iter()
            .filter(|a| a["job_version"] == 2 && healthy(a))
            .count();
        let old = l
            .iter()
            .filter(|a| a["job_version"] == 1 && healthy(a))
            .count();
        (canaries == 1 && old == 2).then_some(())
    });
    let shown = f.get(&format!("/v1/deployments/{d}"));
    assert_eq!(shown["status"], "running", "{shown}");
    assert_eq!(live(&f, &job).len(), 3);

    let out = f.cli(&["deployment", "promote", &d]);
    assert!(out.status.success(), "{}", stderr(&out));
    deployment_ends(&f, &job, 2, "successful");
    all_healthy_at(&f, &job, 2, 2);
    let out = f.cli(&["deployment", "promote", &d]);
    assert!(
        !out.status.success(),
        "promoting an ended deployment must fail"
    );
    assert!(stderr(&out).contains("ended"), "{}", stderr(&out));
}
