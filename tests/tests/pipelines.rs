//! Pipelines end to end, on a real `windflow server` and a real `windflow-agent`: the
//! `windflow` CLI → API → raft (apply moves the DAG on) → the leader's dispatcher →
//! QUIC → the agent's exec driver → raft. Also `$$(NAME)` references, job copies, run
//! retention and a pipeline run at a given time.

use std::process::Output;

use serde_json::{Value, json};
use windflow_protocol::Timestamp;
use windflow_tests::fleet::{Fleet, PATIENT};
use windflow_tests::{stderr, stdout};

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

fn job(f: &Fleet, name: &str, command: &str) -> String {
    let (status, j) = f.call(
        "POST",
        "/v1/jobs",
        Some(json!({"name": name, "command": command})),
    );
    assert_eq!(status, 201, "{j}");
    j["id"].as_str().unwrap().to_owned()
}

/// The one run of job `name` (it must have exactly one).
fn only_run(f: &Fleet, name: &str) -> Value {
    let runs = f.get(&format!("/v1/jobs/{name}/runs"));
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "{name}: {runs:?}");
    runs[0].clone()
}

fn ts(v: &Value) -> Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

fn context(f: &Fleet, id: &str) -> Value {
    f.get(&format!("/v1/contexts/{id}"))
}

fn step<'a>(run: &'a Value, f: &Fleet, job: &str) -> &'a Value {
    let id = f.get(&format!("/v1/jobs/{job}"))["id"].clone();
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["job"] == id)
        .unwrap_or_else(|| panic!("no step {job} in {run}"))
}

#[test]
fn a_diamond_runs_its_branches_in_parallel_and_passes_contexts_on() {
    let f = Fleet::start(1, PATIENT);
    job(&f, "A", "printf a");
    // Long enough that the two branches overlap on any machine.
    job(&f, "B", "sleep 2; printf b");
    job(&f, "C", "sleep 2; printf c");
    job(&f, "D", "printf 'd:$$(B)+$$(C)'");
    let created = f.cli(&[
        "pipeline", "create", "diamond", "--step", "D:B,C", "--step", "B:A", "--step", "C:A",
        "--step", "A",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(stdout(&created).contains("diamond"), "{}", stdout(&created));

    let out = f.cli(&["pipeline", "run", "diamond", "--wait", "--output", "json"]);
    let run = json_of(&out);
    assert!(out.status.success(), "{run}\n{}", f.logs());
    assert_eq!(run["status"], "succeeded", "{run}");

    let [a, b, c, d] = ["A", "B", "C", "D"].map(|n| only_run(&f, n));
    for r in [&a, &b, &c, &d] {
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["pipeline_run"], run["id"], "{r}");
    }
    // B and C ran at the same time: each started before the other finished.
    assert!(ts(&b["started_at"]) < ts(&c["finished_at"]), "{b}\n{c}");
    assert!(ts(&c["started_at"]) < ts(&b["finished_at"]), "{b}\n{c}");
    // Both came after A, and D only after both.
    assert!(ts(&b["requested_at"]) >= ts(&a["finished_at"]));
    assert!(ts(&c["requested_at"]) >= ts(&a["finished_at"]));
    let both = ts(&b["finished_at"]).max(ts(&c["finished_at"]));
    assert!(ts(&d["requested_at"]) >= both, "{d}");
    assert!(ts(&d["started_at"]) >= both, "{d}");

    // D's command read B's and C's contexts.
    let d_ctx = context(&f, "D");
    assert_eq!(d_ctx["value"], "d:b+c");
    assert_eq!(d_ctx["run"], d["id"]);

    // The pipeline's context: all four in order, ending with D's output, and how it was made.
    let p = f.get("/v1/pipelines/diamond");
    let cp = format!("C{}", p["id"].as_str().unwrap());
    let ctx = context(&f, &cp);
    let parts: Vec<&str> = ctx["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_str().unwrap())
        .collect();
    assert_eq!(parts, ["a", "b", "c", "d:b+c"], "{ctx}");
    assert_eq!(ctx["value"], "d:b+c");
    assert_eq!(ctx["source"]["pipeline"], p["id"]);
    assert_eq!(ctx["pipeline_run"], run["id"]);
    assert_eq!(ctx["attempts"], 1);
    assert_eq!(ctx["exit_code"], 0);
    assert!(
        ctx["node"].as_str().is_some_and(|n| n.starts_with('N')),
        "{ctx}"
    );
    assert!(!ctx["duration"].is_null(), "{ctx}");
    let shown = f.cli(&["context", "show", &cp]);
    assert_eq!(stdout(&shown), "d:b+c");
    let listed = stdout(&f.cli(&["context", "list"]));
    assert!(listed.contains(&cp) && listed.contains("CJ4"), "{listed}");

    let (status, body) = windflow_tests::http_json(
        f.cluster.servers[0].http_addr,
        "GET",
        "/metrics",
        None,
        None,
    )
    .unwrap();
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    for line in [
        "windflow_pipelines 1",
        "windflow_pipeline_runs{status=\"succeeded\"} 1",
        "windflow_pipeline_runs{status=\"running\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
}

#[test]
fn continue_skips_what_depends_on_a_failure_and_retry_runs_only_that() {
    let f = Fleet::start(1, PATIENT);
    let flag = f.cluster.root.path().join("b-may-succeed");
    job(&f, "A", "printf a");
    job(
        &f,
        "B",
        &format!("test -f {} || exit 3; printf b", flag.display()),
    );
    job(&f, "C", "printf c");
    job(&f, "D", "printf 'd:$$(B)'");
    let created = f.cli(&[
        "pipeline",
        "create",
        "nightly",
        "--on-failure",
        "continue",
        "--step",
        "A",
        "--step",
        "B:A",
        "--step",
        "C:A",
        "--step",
        "D:B,C",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));

    let out = f.cli(&["pipeline", "run", "nightly", "--wait", "--output", "json"]);
    assert!(
        !out.status.success(),
        "a failed pipeline run exits non-zero"
    );
    let run = json_of(&out);
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(step(&run, &f, "A")["status"], "succeeded");
    assert_eq!(step(&run, &f, "B")["status"], "failed");
    assert_eq!(
        step(&run, &f, "C")["status"],
        "succeeded",
        "C does not depend on B"
    );
    let d = step(&run, &f, "D");
    assert_eq!(d["status"], "skipped");
    assert_eq!(d["reason"], "depends on `B`, which failed");
    assert!(d["run"].is_null(), "{d}");
    assert!(f.get("/v1/jobs/D/runs").as_array().unwrap().is_empty());
    let status = stdout(&f.cli(&["pipeline", "status", run["id"].as_str().unwrap()]));
    assert!(status.contains("depends on `B`, which failed"), "{status}");

    std::fs::write(&flag, "").unwrap();
    let id = run["id"].as_str().unwrap();
    let out = f.cli(&["pipeline", "retry", id, "--wait", "--output", "json"]);
    let retried = json_of(&out);
    assert!(out.status.success(), "{retried}\n{}", f.logs());
    assert_eq!(retried["status"], "succeeded");
    assert_eq!(retried["attempts"], 2);
    // Only B and D ran again: A and C kept their one run.
    let runs = |job: &str| {
        f.get(&format!("/v1/jobs/{job}/runs"))
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(
        [runs("A"), runs("B"), runs("C"), runs("D")],
        [1, 2, 1, 1],
        "{retried}"
    );
    assert_eq!(
        step(&retried, &f, "B")["earlier_runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(context(&f, "D")["value"], "d:b");
    let cp = format!(
        "C{}",
        f.get("/v1/pipelines/nightly")["id"].as_str().unwrap()
    );
    let ctx = context(&f, &cp);
    assert_eq!(ctx["attempts"], 2);
    assert_eq!(ctx["value"], "d:b");
    assert_eq!(ctx["parts"].as_array().unwrap().len(), 4, "{ctx}");
    let listed = stdout(&f.cli(&["pipeline", "runs", "nightly"]));
    assert!(
        listed.contains(id) && listed.contains("succeeded"),
        "{listed}"
    );
}

#[test]
fn references_copies_retention_and_a_run_at_a_time() {
    let f = Fleet::start(1, PATIENT);
    job(&f, "empty", "printf x");
    job(&f, "reader", "printf '$$(empty)'");
    job(&f, "lost", "printf '$$(nowhere)'");

    // A reference to a context nothing filled, or to none at all, fails before it starts.
    let out = f.cli(&["job", "run", "reader", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let run = only_run(&f, "reader");
    assert_eq!(run["status"], "failed");
    assert!(run["node"].is_null(), "it never reached a node: {run}");
    let why = run["error"].as_str().unwrap();
    assert!(
        why.contains("$$(empty)") && why.contains("is empty"),
        "{why}"
    );
    let out = f.cli(&["job", "run", "lost", "--wait"]);
    assert!(
        stderr(&out).contains("no context `nowhere`"),
        "{}",
        stderr(&out)
    );

    let out = f.cli(&["job", "run", "empty", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = f.cli(&["job", "run", "reader", "--wait"]);
    assert_eq!(stdout(&out), "x", "{}", stderr(&out));
    // Reset empties it again.
    let reset = f.cli(&["context", "reset", "empty"]);
    assert!(reset.status.success(), "{}", stderr(&reset));
    assert_eq!(context(&f, "empty")["value"], "");

    // A copy runs the same command under its own name, with its own context.
    let copied = f.cli(&["job", "copy", "empty", "full", "--output", "json"]);
    assert!(copied.status.success(), "{}", stderr(&copied));
    assert_eq!(json_of(&copied)["spec"]["name"], "full");
    assert_eq!(stdout(&f.cli(&["job", "run", "full", "--wait"])), "x");
    assert_eq!(context(&f, "full")["value"], "x");

    // Keep the last two runs: the leader prunes the older ones.
    let created = f.cli(&["job", "create", "kept", "--cmd", "true", "--keep-runs", "2"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let shown = stdout(&f.cli(&["job", "show", "kept"]));
    assert!(
        shown.contains("Runs on: any node")
            && shown.contains("The last 2 finished runs of each job are kept"),
        "{shown}"
    );
    let set = f.cli(&["job", "retention", "--keep-for", "30d"]);
    assert!(set.status.success(), "{}", stderr(&set));
    let shown = stdout(&f.cli(&["job", "retention"]));
    assert_eq!(shown, "Finished runs are kept for 720h.\n");
    for _ in 0..4 {
        assert!(f.cli(&["job", "run", "kept", "--wait"]).status.success());
    }
    f.wait("runs of `kept` past its retention to go", |f| {
        (f.get("/v1/jobs/kept/runs").as_array().unwrap().len() == 2).then_some(())
    });

    // A pipeline run at a time given with an offset: scheduled, then fired by the leader.
    let created = f.cli(&["pipeline", "create", "later", "--step", "full"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let soon = Timestamp(Timestamp::now().0 + 2_000);
    // The same instant written at UTC+01:00.
    let local = Timestamp(soon.0 + 3_600_000).to_string();
    let at = format!("{}+01:00", local.trim_end_matches('Z'));
    let out = f.cli(&["pipeline", "run", "later", "--at", &at, "--output", "json"]);
    let run = json_of(&out);
    assert_eq!(run["status"], "scheduled", "{run}");
    assert_eq!(ts(&run["start_at"]), soon);
    let id = run["id"].as_str().unwrap().to_owned();
    let done = f.wait("the scheduled pipeline run to finish", |f| {
        let r = f.get(&format!("/v1/pipeline-runs/{id}"));
        (r["status"] == "succeeded").then_some(r)
    });
    assert!(ts(&done["started_at"]) >= soon, "{done}");

    // Bad input names the field.
    let (status, e) = f.call(
        "POST",
        "/v1/pipelines/later/run",
        Some(json!({"at": "2026-12-01 02:00"})),
    );
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("`at`"),
        "{e}"
    );

    // Deleting a pipeline cancels its scheduled runs.
    let far = Timestamp(Timestamp::now().0 + 3_600_000).to_string();
    let run = json_of(&f.cli(&["pipeline", "run", "later", "--at", &far, "--output", "json"]));
    assert_eq!(run["status"], "scheduled", "{run}");
    let deleted = f.cli(&["pipeline", "delete", "later"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let cancelled = f.get(&format!(
        "/v1/pipeline-runs/{}",
        run["id"].as_str().unwrap()
    ));
    assert_eq!(cancelled["status"], "failed", "{cancelled}");
}

#[test]
fn references_stop_at_the_namespace_wall() {
    let f = Fleet::start(1, PATIENT);
    let (status, ns) = f.call("POST", "/v1/namespaces", Some(json!({"name": "other"})));
    assert_eq!(status, 201, "{ns}");
    let (status, hidden) = f.call(
        "POST",
        "/v1/jobs",
        Some(json!({"name": "hidden", "command": "printf secret", "namespace": "other"})),
    );
    assert_eq!(status, 201, "{hidden}");
    let id = hidden["id"].as_str().unwrap();
    let (status, run) = f.call("POST", &format!("/v1/jobs/{id}/run"), None);
    assert_eq!(status, 202, "{run}");
    let run = f.get(&format!(
        "/v1/runs/{}?wait=30s",
        run["id"].as_str().unwrap()
    ));
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(context(&f, &format!("C{id}"))["value"], "secret");

    // A job of `default` names it by context ID, job ID and name: none is found.
    for name in [format!("C{id}"), id.to_owned(), "hidden".to_owned()] {
        let job_name = format!("peek-{}", name.to_lowercase());
        job(&f, &job_name, &format!("printf '$$({name})'"));
        let out = f.cli(&["job", "run", &job_name, "--wait"]);
        assert!(!out.status.success(), "{}", stdout(&out));
        assert!(
            stderr(&out).contains(&format!("no context `{name}` in namespace `default`")),
            "{}",
            stderr(&out)
        );
        assert!(!stdout(&out).contains("secret"));
    }
}

#[test]
fn a_job_for_a_named_node_runs_only_there() {
    let f = Fleet::start(2, PATIENT);
    let created = f.cli(&[
        "job", "create", "pinned", "--cmd", "true", "--node", "host-1",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let node = f
        .nodes()
        .into_iter()
        .find(|n| n["name"] == "host-1")
        .unwrap()["id"]
        .clone();
    let shown = stdout(&f.cli(&["job", "show", "pinned"]));
    assert!(
        shown.contains(&format!("Runs on: node {}", node.as_str().unwrap())),
        "{shown}"
    );
    for _ in 0..3 {
        let out = f.cli(&["job", "run", "pinned", "--wait"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let runs = f.get("/v1/jobs/pinned/runs");
    assert!(
        runs.as_array().unwrap().iter().all(|r| r["node"] == node),
        "{runs}"
    );
    // A node that does not exist is refused when the job is made, naming the field.
    let (status, e) = f.call(
        "POST",
        "/v1/jobs",
        Some(json!({"name": "nowhere", "command": "true", "target": "node:N99"})),
    );
    assert_eq!(status, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("`target`"),
        "{e}"
    );
}

#[test]
fn a_run_at_a_time_fires_once_across_a_leader_change() {
    use std::time::Duration;
    use windflow_tests::cluster::Cluster;
    use windflow_tests::{http_json, wait_for};

    let mut cluster = Cluster::start(3).unwrap();
    let token = cluster.token();
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    let call = |cluster: &Cluster, i: usize, method: &str, path: &str, body: Option<Value>| {
        let body = body.map(|b| b.to_string());
        http_json(
            cluster.servers[i].http_addr,
            method,
            path,
            Some(&token),
            body.as_deref(),
        )
        .ok()
    };
    let (status, j) = call(
        &cluster,
        leader,
        "POST",
        "/v1/jobs",
        Some(json!({"name": "nightly-step", "command": "true"})),
    )
    .unwrap();
    assert_eq!(status, 201, "{j}");
    let (status, p) = call(
        &cluster,
        leader,
        "POST",
        "/v1/pipelines",
        Some(json!({"name": "nightly", "steps": [{"job": "nightly-step"}]})),
    )
    .unwrap();
    assert_eq!(status, 201, "{p}");
    let soon = Timestamp(Timestamp::now().0 + 3_000);
    let (status, run) = call(
        &cluster,
        leader,
        "POST",
        "/v1/pipelines/nightly/run",
        Some(json!({ "at": soon.to_string() })),
    )
    .unwrap();
    assert_eq!(status, 202, "{run}");
    assert_eq!(run["status"], "scheduled");
    let id = run["id"].as_str().unwrap().to_owned();

    // The leader that took the request dies before the run is due.
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(30)).unwrap();
    assert_ne!(new_leader, leader);
    let started = wait_for(
        "the new leader to fire the run",
        Duration::from_secs(60),
        || {
            let (_, r) = call(
                &cluster,
                new_leader,
                "GET",
                &format!("/v1/pipeline-runs/{id}?consistent=true"),
                None,
            )?;
            (r["status"] == "running").then_some(r)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    assert!(ts(&started["started_at"]) >= soon, "{started}");
    // One start, one step run (no agent here, so it waits for a node).
    let (_, runs) = call(
        &cluster,
        new_leader,
        "GET",
        "/v1/jobs/nightly-step/runs?consistent=true",
        None,
    )
    .unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    // The old leader comes back and catches up: still one.
    cluster.restart(leader).unwrap();
    wait_for(
        "the old leader to catch up",
        Duration::from_secs(60),
        || {
            let (_, r) = call(
                &cluster,
                leader,
                "GET",
                &format!("/v1/pipeline-runs/{id}"),
                None,
            )?;
            (r["status"] == "running").then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let (_, runs) = call(&cluster, leader, "GET", "/v1/jobs/nightly-step/runs", None).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
}
