//! Schedules end to end: a real every-second schedule on two jobs fires both at once on a
//! real agent (`windflow dev`); in a 3-server cluster, kill -9 of the leader under an
//! every-second `run_all` schedule neither doubles nor skips a due time.

use std::time::Duration;

use serde_json::{Value, json};
use windflow_protocol::Timestamp;
use windflow_tests::cluster::Cluster;
use windflow_tests::{DevServer, http_json, stderr, stdout, wait_for};

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

fn ts(v: &Value) -> Timestamp {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
}

fn api(
    addr: std::net::SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    http_json(addr, method, path, Some(token), body.as_deref())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[test]
fn an_every_second_schedule_launches_both_jobs_at_once() {
    let dev = DevServer::start().unwrap();
    for name in ["left", "right"] {
        let out = dev.cli(&[
            "job",
            "create",
            name,
            "--cmd",
            &format!("sleep 2; echo {name}"),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // Refusals name the field.
    let bad = dev.cli(&[
        "schedule",
        "create",
        "p",
        "--cron",
        "* * * * * *",
        "--pipeline",
        "P1",
    ]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("targets[0].pipeline"),
        "{}",
        stderr(&bad)
    );
    let bad = dev.cli(&[
        "schedule", "create", "c", "--cron", "* * *", "--job", "left",
    ]);
    assert!(stderr(&bad).contains("`cron`"), "{}", stderr(&bad));
    let bad = dev.cli(&[
        "schedule",
        "create",
        "z",
        "--cron",
        "@daily",
        "--timezone",
        "Mars/Base",
        "--job",
        "left",
    ]);
    assert!(stderr(&bad).contains("`timezone`"), "{}", stderr(&bad));
    let bad = dev.cli(&[
        "schedule", "create", "j", "--cron", "@daily", "--job", "nope",
    ]);
    assert!(stderr(&bad).contains("targets[0].job"), "{}", stderr(&bad));

    let created = dev.cli(&[
        "schedule",
        "create",
        "both",
        "--cron",
        "* * * * * *",
        "--job",
        "left",
        "--job",
        "right",
        "--overlap",
        "forbid",
        "--output",
        "json",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let s = json_of(&created);
    assert_eq!(s["id"], "S1");
    assert_eq!(s["spec"]["targets"], json!([{"job": "J1"}, {"job": "J2"}]));

    let next = json_of(&dev.cli(&["schedule", "next", "S1", "--count", "5", "--output", "json"]));
    let next: Vec<Timestamp> = next
        .as_array()
        .unwrap()
        .iter()
        .map(|d| ts(&d["at"]))
        .collect();
    assert_eq!(next.len(), 5);
    assert!(next.windows(2).all(|w| w[1].0 - w[0].0 == 1000), "{next:?}");

    // The first fire that launched both, once both runs have finished.
    let runs = wait_for(
        "a fire whose two runs both finished",
        Duration::from_secs(60),
        || {
            let shown = json_of(&dev.cli(&[
                "schedule", "show", "S1", "--fires", "50", "--output", "json",
            ]));
            let fires = shown["recent_fires"].as_array()?.clone();
            fires.iter().rev().find_map(|f| {
                if f["outcome"] != "fired" {
                    return None;
                }
                let fired_at = ts(&f["at"]);
                let ids: Vec<String> = f["launches"]
                    .as_array()?
                    .iter()
                    .map(|l| l["run"].as_str().map(str::to_owned))
                    .collect::<Option<_>>()?;
                let runs: Vec<Value> = ids
                    .iter()
                    .map(|id| json_of(&dev.cli(&["run", "show", id, "--output", "json"])))
                    .collect();
                runs.iter()
                    .all(|r| r["status"] == "succeeded")
                    .then_some((runs, fired_at))
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.log()));
    let (runs, fired_at) = runs;
    // Placed in the fire's own entry, on the one agent.
    for r in &runs {
        assert_eq!(ts(&r["requested_at"]), fired_at, "{r}");
        assert_eq!(r["node"], "N1", "{r}");
    }
    assert_eq!(runs.len(), 2);
    assert_ne!(runs[0]["job"], runs[1]["job"]);
    let (a, b) = (&runs[0], &runs[1]);
    let (a0, b0) = (ts(&a["started_at"]), ts(&b["started_at"]));
    let (a1, b1) = (ts(&a["finished_at"]), ts(&b["finished_at"]));
    assert!(
        a0 < b1 && b0 < a1,
        "the two runs of one fire overlap in time: {a} {b}"
    );

    // Forbid: while those ran, fires were recorded as skipped, not launched.
    let shown = json_of(&dev.cli(&[
        "schedule", "show", "S1", "--fires", "50", "--output", "json",
    ]));
    let fires = shown["recent_fires"].as_array().unwrap();
    assert!(
        fires
            .iter()
            .any(|f| f["outcome"].get("skipped_overlap").is_some()),
        "{shown}"
    );
    let table = stdout(&dev.cli(&["schedule", "list"]));
    assert!(
        table.contains("both") && table.contains("* * * * * *"),
        "{table}"
    );

    // A run the leader cannot place (its reference fails) is refused before it starts,
    // saying why, as a run started by hand would be.
    let out = dev.cli(&["job", "create", "needs", "--cmd", "echo $$(nothing-here)"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = dev.cli(&[
        "schedule",
        "create",
        "refs",
        "--cron",
        "* * * * * *",
        "--job",
        "needs",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let refused = wait_for(
        "the scheduled run with a missing reference refused",
        Duration::from_secs(30),
        || {
            let runs = json_of(&dev.cli(&["job", "runs", "needs", "--output", "json"]));
            runs.as_array()?
                .iter()
                .find(|r| r["status"] == "failed")
                .cloned()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", dev.log()));
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("nothing-here")),
        "{refused}"
    );
    assert!(dev.cli(&["schedule", "rm", "refs"]).status.success());

    let off = json_of(&dev.cli(&["schedule", "disable", "both", "--output", "json"]));
    assert_eq!(off["enabled"], false);
    assert!(off["next_due"].is_null());
    let rm = dev.cli(&["schedule", "rm", "S1"]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    let gone = dev.cli(&["schedule", "show", "S1"]);
    assert!(!gone.status.success());
}

/// The fire log as server `i` has it, oldest first.
fn fires(cluster: &Cluster, i: usize, token: &str) -> Option<Vec<Value>> {
    let (status, body) = http_json(
        cluster.servers[i].http_addr,
        "GET",
        "/v1/schedules/S1/fires?limit=500",
        Some(token),
        None,
    )
    .ok()?;
    let mut all = (status == 200).then(|| body.as_array().cloned())??;
    all.reverse();
    Some(all)
}

#[test]
fn killing_the_leader_neither_doubles_nor_skips_a_fire() {
    let mut cluster = Cluster::start(3).unwrap();
    let token = cluster.token();
    let addr = cluster.servers[0].http_addr;
    let (status, job) = api(
        addr,
        &token,
        "POST",
        "/v1/jobs",
        Some(json!({"name": "tick", "command": "true"})),
    );
    assert_eq!(status, 201, "{job}");
    let (status, s) = api(
        addr,
        &token,
        "POST",
        "/v1/schedules",
        Some(json!({
            "name": "every-second",
            "cron": "* * * * * *",
            "targets": [{"job": "tick"}],
            "catch_up": "run_all",
        })),
    );
    assert_eq!(status, 201, "{s}");

    let leader = cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    let survivor = (leader + 1) % 3;
    wait_for("three fires", Duration::from_secs(60), || {
        fires(&cluster, survivor, &token).filter(|f| f.len() >= 3)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    assert!(
        cluster.is_leader(leader),
        "the leadership moved before the kill"
    );
    cluster.kill(leader);
    let killed_at = Timestamp::now();
    cluster
        .wait_for_leader(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    // Fires for due times well after the kill, from the new leader.
    wait_for(
        "fires due 3 s after the kill",
        Duration::from_secs(90),
        || {
            fires(&cluster, survivor, &token).filter(|f| {
                f.last()
                    .is_some_and(|last| ts(&last["due"]).0 >= killed_at.0 + 3_000)
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));

    // Then the whole cluster goes down and comes back: what was due meanwhile is fired
    // late (catch-up `run_all`), after the restart.
    for i in 0..3 {
        cluster.kill(i);
    }
    let down_at = Timestamp::now();
    // The outage is the test's input: three seconds with no server up.
    wait_for("a 3 s outage", Duration::from_secs(10), || {
        (Timestamp::now().0 >= down_at.0 + 3_000).then_some(())
    })
    .unwrap();
    for i in 0..3 {
        cluster.restart(i).unwrap();
    }
    cluster
        .wait_for_leader(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let back_at = Timestamp::now();
    let log = wait_for(
        "fires due 3 s after the restart",
        Duration::from_secs(90),
        || {
            fires(&cluster, survivor, &token).filter(|f| {
                f.last()
                    .is_some_and(|last| ts(&last["due"]).0 >= back_at.0 + 3_000)
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));

    let dues: Vec<Timestamp> = log.iter().map(|f| ts(&f["due"])).collect();
    for (i, w) in dues.windows(2).enumerate() {
        assert_eq!(
            w[1].0 - w[0].0,
            1000,
            "fires {i} and {} are not consecutive seconds: {dues:?}",
            i + 1
        );
    }
    let seqs: Vec<u64> = log.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // Every fire launched its own run.
    let mut runs: Vec<String> = log
        .iter()
        .map(|f| f["launches"][0]["run"].as_str().unwrap().to_owned())
        .collect();
    let n = runs.len();
    runs.sort();
    runs.dedup();
    assert_eq!(runs.len(), n, "a run launched twice");
    // The seconds due while the cluster was down were fired, late, once it was back.
    let caught_up: Vec<&Value> = log
        .iter()
        .filter(|f| ts(&f["due"]) > down_at && ts(&f["due"]).0 + 1_000 < back_at.0)
        .collect();
    assert!(
        !caught_up.is_empty(),
        "nothing was due while down? {dues:?}"
    );
    assert!(
        caught_up
            .iter()
            .all(|f| ts(&f["at"]) >= ts(&f["due"]).max(down_at)),
        "{caught_up:?}"
    );
}
