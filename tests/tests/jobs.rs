//! The job path end to end: the `windflow` CLI → HTTP API → raft → QUIC/mTLS → agent's
//! exec driver → raft → context, against a real `windflow dev` process.

use std::time::Duration;

use serde_json::Value;
use windflow_tests::{DevServer, http_json, process_is_dead, stderr, stdout, wait_for};

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

#[test]
fn echo_hello_runs_and_its_output_becomes_the_context() {
    let dev = DevServer::start().unwrap();
    let created = dev.cli(&[
        "job",
        "create",
        "hello",
        "--cmd",
        "echo hello",
        "--output",
        "json",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let job = json(&created);
    assert_eq!(job["id"], "J1");

    let before = dev.cli(&["context", "show", "hello"]);
    assert_eq!(
        stdout(&before),
        "",
        "a context is empty before the first run"
    );

    let run = dev.cli(&["job", "run", "hello", "--wait"]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&run),
        dev.log()
    );
    assert_eq!(stdout(&run), "hello\n");

    for key in ["hello", "J1", "CJ1"] {
        let ctx = dev.cli(&["context", "show", key]);
        assert_eq!(stdout(&ctx), "hello\n", "context by {key}");
    }
    let ctx = json(&dev.cli(&["context", "show", "CJ1", "--output", "json"]));
    assert_eq!(ctx["exit_code"], 0);
    assert_eq!(ctx["attempts"], 1);
    assert_eq!(ctx["source"]["job"], "J1");
    assert!(ctx["node"].as_str().is_some_and(|n| n.starts_with('N')));

    let nodes = json(&dev.cli(&["node", "list", "--output", "json"]));
    assert_eq!(nodes[0]["status"], "ready");
    let list = stdout(&dev.cli(&["job", "list"]));
    assert!(
        list.contains("hello") && list.contains("echo hello"),
        "{list}"
    );
}

#[test]
fn a_failing_command_is_retried_then_fails_with_its_exit_code() {
    let dev = DevServer::start().unwrap();
    let created = dev.cli(&[
        "job",
        "create",
        "flaky",
        "--cmd",
        "echo nope >&2; exit 7",
        "--retries",
        "2",
        "--retry-delay",
        "10ms",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let run = dev.cli(&["job", "run", "flaky", "--wait"]);
    assert_eq!(run.status.code(), Some(7), "{}", stderr(&run));
    assert!(stderr(&run).contains("nope"), "{}", stderr(&run));

    let runs = json(&dev.cli(&["job", "runs", "flaky", "--output", "json"]));
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[0]["exit_code"], 7);
    assert_eq!(runs[0]["attempts"], 3, "max_retries + 1 attempts");
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let dev = DevServer::start().unwrap();
    let pidfile = dev.home.path().join("child.pid");
    let cmd = format!("sleep 300 & echo $! > {}; sleep 300", pidfile.display());
    let created = dev.cli(&["job", "create", "slow", "--cmd", &cmd, "--timeout", "1s"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let run = dev.cli(&["job", "run", "slow", "--wait"]);
    assert_eq!(run.status.code(), Some(124), "{}", stderr(&run));
    assert!(stderr(&run).contains("timed_out"), "{}", stderr(&run));

    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(
        "the background sleep to die",
        Duration::from_secs(10),
        || process_is_dead(pid).then_some(()),
    )
    .unwrap();
}

#[test]
fn a_missing_workdir_fails_naming_it() {
    let dev = DevServer::start().unwrap();
    let created = dev.cli(&[
        "job",
        "create",
        "lost",
        "--cmd",
        "true",
        "--workdir",
        "/no/such/dir-42",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let run = dev.cli(&["job", "run", "lost", "--wait"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(stderr(&run).contains("/no/such/dir-42"), "{}", stderr(&run));
    let runs = json(&dev.cli(&["job", "runs", "lost", "--output", "json"]));
    assert_eq!(runs[0]["status"], "failed");
    assert!(
        runs[0]["error"]
            .as_str()
            .unwrap()
            .contains("/no/such/dir-42")
    );
}

#[test]
fn env_and_workdir_reach_the_command() {
    let dev = DevServer::start().unwrap();
    let dir = dev.home.path().display().to_string();
    let created = dev.cli(&[
        "job",
        "create",
        "where",
        "--cmd",
        "echo \"$GREETING from $(pwd)\"",
        "--workdir",
        &dir,
        "--env",
        "GREETING=hi",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let run = dev.cli(&["job", "run", "where", "--wait"]);
    assert_eq!(stdout(&run), format!("hi from {dir}\n"), "{}", stderr(&run));
}

#[test]
fn bad_bodies_get_400_naming_the_field() {
    let dev = DevServer::start().unwrap();
    let cases = [
        (r#"{"name":"x"}"#, "command"),
        (r#"{"command":"true"}"#, "name"),
        (r#"{"name":5,"command":"true"}"#, "name"),
        (
            r#"{"name":"x","command":"true","max_retries":"two"}"#,
            "max_retries",
        ),
        (r#"{"name":"x","command":"true","timeout":30}"#, "timeout"),
        (r#"{"name":"x","command":"true","env":["A"]}"#, "env"),
        (r#"{"name":"x","command":"true","retries":1}"#, "retries"),
    ];
    for (body, field) in cases {
        let (status, answer) = http_json(
            dev.http_addr,
            "POST",
            "/v1/jobs",
            Some(&dev.token),
            Some(body),
        )
        .unwrap();
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}`")), "{body}: {message}");
        assert!(answer["error"]["code"].is_string());
    }
    let (status, _) = http_json(
        dev.http_addr,
        "POST",
        "/v1/jobs",
        Some(&dev.token),
        Some("{not json"),
    )
    .unwrap();
    assert_eq!(status, 400);
    // Nothing was created by the refused bodies.
    let (_, jobs) = http_json(dev.http_addr, "GET", "/v1/jobs", Some(&dev.token), None).unwrap();
    assert_eq!(jobs, serde_json::json!([]));
}

#[test]
fn the_api_wants_a_valid_token() {
    let dev = DevServer::start().unwrap();
    for token in [None, Some("wf_not-a-real-token")] {
        let (status, answer) = http_json(dev.http_addr, "GET", "/v1/jobs", token, None).unwrap();
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(answer["error"]["code"], "unauthorized");
    }
    let (status, _) = http_json(dev.http_addr, "GET", "/v1/jobs", Some(&dev.token), None).unwrap();
    assert_eq!(status, 200);
    let (status, _) = http_json(dev.http_addr, "GET", "/healthz", None, None).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn names_are_unique_and_unknown_jobs_are_404() {
    let dev = DevServer::start().unwrap();
    assert!(
        dev.cli(&["job", "create", "once", "--cmd", "true"])
            .status
            .success()
    );
    let again = dev.cli(&["job", "create", "once", "--cmd", "true"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let (status, answer) =
        http_json(dev.http_addr, "GET", "/v1/jobs/J99", Some(&dev.token), None).unwrap();
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = http_json(
        dev.http_addr,
        "DELETE",
        "/v1/jobs/once",
        Some(&dev.token),
        None,
    )
    .unwrap();
    assert_eq!(status, 200);
    let (status, _) = http_json(
        dev.http_addr,
        "GET",
        "/v1/jobs/once",
        Some(&dev.token),
        None,
    )
    .unwrap();
    assert_eq!(status, 404);
}

#[test]
fn metrics_report_jobs_runs_raft_and_agents() {
    let dev = DevServer::start().unwrap();
    assert!(
        dev.cli(&["job", "create", "m", "--cmd", "true"])
            .status
            .success()
    );
    assert!(dev.cli(&["job", "run", "m", "--wait"]).status.success());
    let (status, body) = http_json(dev.http_addr, "GET", "/metrics", None, None).unwrap();
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    for line in [
        "windflow_jobs 1",
        "windflow_runs_total{status=\"succeeded\"} 1",
        "windflow_agents_connected 1",
        "windflow_raft_is_leader 1",
    ] {
        assert!(
            text.lines().any(|l| l.trim() == line),
            "missing `{line}` in:\n{text}"
        );
    }
    assert!(text.contains("windflow_raft_term "), "{text}");
    for histogram in [
        "windflow_raft_commit_latency_seconds_count",
        "windflow_raft_apply_latency_seconds_count",
    ] {
        let count: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(histogram).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("no {histogram} in:\n{text}"));
        assert!(count >= 3, "{histogram} counted {count}");
    }
    assert!(text.contains("windflow_raft_last_applied_index "), "{text}");
}
