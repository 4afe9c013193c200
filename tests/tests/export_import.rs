//! Export and import end to end, with the real binary: a set of jobs (one with env,
//! timeout, retries and a target), a pipeline A→(B,C)→D, a schedule on a job and the
//! pipeline, and a webhook, exported from one server and imported into a fresh one, give
//! the same specs; the same file again changes nothing (no job version moves); a file
//! with one invalid entry names it and leaves the target server as it was.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use windflow_tests::{DevServer, http_json, stderr, stdout};

fn api(dev: &DevServer, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string());
    let (status, v) = http_json(
        dev.http_addr,
        method,
        path,
        Some(&dev.token),
        body.as_deref(),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {v}"
    );
    v
}

fn json_of(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}\n{}", stdout(out), stderr(out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

fn build_set(dev: &DevServer) {
    api(
        dev,
        "POST",
        "/v1/jobs",
        Some(json!({
            "name": "a", "command": "pg_dump > dump.sql", "workdir": "/tmp",
            "env": {"PGHOST": "db", "PGUSER": "backup"}, "timeout": "10m",
            "max_retries": 3, "retry_delay": "5s", "target": "label:zone=eu",
            "keep_runs": 20
        })),
    );
    for name in ["b", "c", "d"] {
        api(
            dev,
            "POST",
            "/v1/jobs",
            Some(json!({"name": name, "command": format!("echo {name}")})),
        );
    }
    api(
        dev,
        "POST",
        "/v1/pipelines",
        Some(
            json!({"name": "diamond", "on_failure": "continue", "steps": [
                {"job": "a"},
                {"job": "b", "depends_on": ["a"]},
                {"job": "c", "depends_on": ["a"]},
                {"job": "d", "depends_on": ["b", "c"]}
            ]}),
        ),
    );
    api(
        dev,
        "POST",
        "/v1/schedules",
        Some(
            json!({"name": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Paris",
            "targets": [{"job": "a"}, {"pipeline": "diamond"}], "overlap": "forbid",
            "catch_up": "run_once"}),
        ),
    );
    api(
        dev,
        "POST",
        "/v1/webhooks",
        Some(json!({"name": "ops", "url": "http://127.0.0.1:9/hook",
            "events": ["job.failed", "schedule.fired"]})),
    );
}

/// Everything the set is made of, by name, with IDs turned into names: comparable across
/// clusters.
fn specs(dev: &DevServer) -> BTreeMap<String, Value> {
    let jobs = api(dev, "GET", "/v1/jobs?consistent=true", None);
    let job_name: BTreeMap<String, String> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (text(&j["id"]), text(&j["spec"]["name"])))
        .collect();
    let pipelines = api(dev, "GET", "/v1/pipelines", None);
    let pipeline_name: BTreeMap<String, String> = pipelines
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (text(&p["id"]), text(&p["spec"]["name"])))
        .collect();
    let mut all = BTreeMap::new();
    for j in jobs.as_array().unwrap() {
        all.insert(
            format!("job {}", text(&j["spec"]["name"])),
            j["spec"].clone(),
        );
    }
    for p in pipelines.as_array().unwrap() {
        let mut spec = p["spec"].clone();
        for step in spec["steps"].as_array_mut().unwrap() {
            step["job"] = json!(job_name[&text(&step["job"])]);
            for dep in step["depends_on"].as_array_mut().unwrap() {
                *dep = json!(job_name[&text(dep)]);
            }
        }
        all.insert(format!("pipeline {}", text(&spec["name"])), spec);
    }
    for s in api(dev, "GET", "/v1/schedules", None).as_array().unwrap() {
        let mut spec = s["spec"].clone();
        for t in spec["targets"].as_array_mut().unwrap() {
            if let Some(j) = t.get("job") {
                *t = json!({"job": job_name[&text(j)]});
            } else {
                *t = json!({"pipeline": pipeline_name[&text(&t["pipeline"])]});
            }
        }
        all.insert(format!("schedule {}", text(&spec["name"])), spec);
    }
    for w in api(dev, "GET", "/v1/webhooks", None).as_array().unwrap() {
        all.insert(
            format!("webhook {}", text(&w["spec"]["name"])),
            w["spec"].clone(),
        );
    }
    all
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn versions(dev: &DevServer) -> BTreeMap<String, u64> {
    api(dev, "GET", "/v1/jobs?consistent=true", None)
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (text(&j["spec"]["name"]), j["version"].as_u64().unwrap()))
        .collect()
}

fn actions(answer: &Value) -> Vec<String> {
    answer["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {} {}", e["kind"], e["name"], e["action"]))
        .collect()
}

fn import(dev: &DevServer, file: &Path, extra: &[&str]) -> std::process::Output {
    let path = file.to_str().unwrap();
    let mut args = vec!["import", path];
    args.extend_from_slice(extra);
    dev.cli(&args)
}

#[test]
fn export_then_import_into_a_fresh_server_gives_the_same_set_and_twice_changes_nothing() {
    let source = DevServer::start().unwrap();
    build_set(&source);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cfg.yaml");
    let out = source.cli(&["export", "--file", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let yaml = std::fs::read_to_string(&file).unwrap();
    // By name, not by ID; no secret.
    for id in ["J1", "P1", "S1", "W1", "secret"] {
        assert!(!yaml.contains(&format!(": {id}")), "{id} in\n{yaml}");
    }
    assert!(yaml.contains("- job: a"), "{yaml}");
    // Without --file, the same file goes to stdout.
    let out = source.cli(&["export"]);
    assert_eq!(stdout(&out), yaml);

    let target = DevServer::start().unwrap();
    let plan = json_of(&import(&target, &file, &["--dry-run", "--output", "json"]));
    assert_eq!(plan["dry_run"], true);
    assert_eq!(actions(&plan).len(), 7, "{plan}");
    assert!(
        actions(&plan).iter().all(|a| a.ends_with("\"create\"")),
        "{plan}"
    );
    assert!(specs(&target).is_empty(), "a dry run changed something");

    let done = json_of(&import(&target, &file, &["--output", "json"]));
    assert!(
        actions(&done).iter().all(|a| a.ends_with("\"create\"")),
        "{done}"
    );
    let secrets = done["webhook_secrets"].as_array().unwrap();
    assert_eq!(secrets.len(), 1, "{done}");
    assert_eq!(secrets[0]["webhook"], "ops");
    assert_eq!(specs(&target), specs(&source));

    // The same file again: every entry unchanged, no job version moved.
    let before = versions(&target);
    assert!(before.values().all(|v| *v == 1), "{before:?}");
    let again = import(&target, &file, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    let table = stdout(&again);
    assert_eq!(table.matches("unchanged").count(), 8, "{table}");
    assert!(
        table.contains("0 created, 0 updated, 7 unchanged"),
        "{table}"
    );
    assert_eq!(versions(&target), before);

    // A changed job is updated through a new version; the rest stays.
    let changed = dir.path().join("changed.yaml");
    std::fs::write(&changed, yaml.replace("echo b", "echo b2")).unwrap();
    let answer = json_of(&import(&target, &changed, &["--output", "json"]));
    let updated: Vec<_> = actions(&answer)
        .into_iter()
        .filter(|a| !a.ends_with("\"unchanged\""))
        .collect();
    assert_eq!(updated, ["\"job\" \"b\" \"update\""], "{answer}");
    assert_eq!(versions(&target)["b"], 2);
}

#[test]
fn a_file_with_one_invalid_entry_names_it_and_changes_nothing() {
    let source = DevServer::start().unwrap();
    build_set(&source);
    let exported = json_of(&source.cli(&["export", "--output", "json"]));
    let target = DevServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();

    // A bad cron among otherwise good entries: nothing of the file goes in.
    let mut bad_cron = exported.clone();
    bad_cron["schedules"][0]["cron"] = json!("61 * * * *");
    let file = dir.path().join("bad-cron.json");
    std::fs::write(&file, bad_cron.to_string()).unwrap();
    let out = import(&target, &file, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(r#"schedules[0] "nightly": field `cron`"#),
        "{err}"
    );
    assert!(err.contains("1 invalid entry"), "{err}");
    assert!(
        specs(&target).is_empty(),
        "the target changed: {:?}",
        specs(&target)
    );

    // Imported once, then a file whose pipeline names a job that exists nowhere.
    let good = dir.path().join("good.json");
    std::fs::write(&good, exported.to_string()).unwrap();
    assert!(import(&target, &good, &[]).status.success());
    let before = specs(&target);
    let versions_before = versions(&target);
    let mut missing = exported.clone();
    missing["jobs"][1]["command"] = json!("echo changed");
    missing["pipelines"][0]["steps"][3]["job"] = json!("ghost");
    let file = dir.path().join("missing-job.json");
    std::fs::write(&file, missing.to_string()).unwrap();
    let out = import(&target, &file, &["--dry-run"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(r#"pipelines[0] "diamond": field `steps[3].job`: no job `ghost`"#),
        "{err}"
    );
    let out = import(&target, &file, &[]);
    assert!(!out.status.success());
    assert_eq!(specs(&target), before, "the job's change went in");
    assert_eq!(versions(&target), versions_before);
}

/// What server `i` of `cluster` answers for `path`, read locally.
fn count_on(cluster: &windflow_tests::cluster::Cluster, i: usize, path: &str) -> Option<usize> {
    let token = cluster.token();
    let (status, v) = http_json(
        cluster.servers[i].http_addr,
        "GET",
        path,
        Some(&token),
        None,
    )
    .ok()?;
    (status == 200).then(|| v.as_array().map_or(0, Vec::len))
}

#[test]
fn an_import_through_a_follower_is_one_entry_that_every_server_applies() {
    use std::time::Duration;
    use windflow_tests::wait_for;

    let mut cluster = windflow_tests::cluster::Cluster::start(3).unwrap();
    let token = cluster.token();
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    let follower = (leader + 1) % 3;
    let file = "jobs:\n  - name: a\n    command: echo a\n  - name: b\n    command: echo b\n\
                pipelines:\n  - name: ab\n    steps:\n      - job: a\n      - job: b\n        depends_on: [a]\n\
                schedules:\n  - name: s\n    cron: '@daily'\n    targets: [{pipeline: ab}]\n";
    let import = |addr: std::net::SocketAddr| {
        let (status, v) = http_json(addr, "POST", "/v1/import", Some(&token), Some(file)).unwrap();
        assert_eq!(status, 200, "{v}");
        v
    };
    let done = import(cluster.servers[follower].http_addr);
    assert_eq!(actions(&done).len(), 4, "{done}");
    for i in 0..3 {
        wait_for(
            &format!("server {i} to hold the import"),
            Duration::from_secs(30),
            || {
                (count_on(&cluster, i, "/v1/jobs")? == 2
                    && count_on(&cluster, i, "/v1/pipelines")? == 1
                    && count_on(&cluster, i, "/v1/schedules")? == 1)
                    .then_some(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    }

    // The leader goes; under the next one the same file changes nothing.
    cluster.kill(leader);
    let next = wait_for("a new leader", Duration::from_secs(60), || {
        cluster.leader().filter(|l| *l != leader)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let survivor = (0..3).find(|i| *i != leader && *i != next).unwrap();
    let again = import(cluster.servers[survivor].http_addr);
    assert!(
        actions(&again).iter().all(|a| a.ends_with("\"unchanged\"")),
        "{again}"
    );
}
