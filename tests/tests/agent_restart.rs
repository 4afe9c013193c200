//! Agent restarts lose nothing, against real processes: a `windflow server`, a real
//! `windflow-agent` enrolled with a token, and a 30-second exec task. The agent is stopped
//! with SIGTERM and started again, then killed with SIGKILL and started again, while the
//! task runs: the task's process is never started again, the run ends `succeeded` with the
//! task's stdout in the job's context, and it is recorded once.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use windflow_tests::agent::{Agent, AgentSpec};
use windflow_tests::cluster::Cluster;
use windflow_tests::{http_json, process_is_dead, strip_ansi, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);

fn get(cluster: &Cluster, token: &str, path: &str) -> Value {
    let (status, body) =
        http_json(cluster.servers[0].http_addr, "GET", path, Some(token), None).unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn post(cluster: &Cluster, token: &str, path: &str, body: Value) -> Value {
    let (status, answer) = http_json(
        cluster.servers[0].http_addr,
        "POST",
        path,
        Some(token),
        Some(&body.to_string()),
    )
    .unwrap();
    assert!(
        (200..300).contains(&status),
        "POST {path}: {status} {answer}"
    );
    answer
}

fn node_ready(cluster: &Cluster, token: &str, name: &str) -> bool {
    get(cluster, token, "/v1/nodes")
        .as_array()
        .is_some_and(|nodes| {
            nodes
                .iter()
                .any(|n| n["name"] == name && n["status"] == "ready")
        })
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Waits until this start of the agent has taken the run back from its store.
fn wait_reattached(agent: &Agent, cluster: &Cluster) {
    wait_for(
        "the restarted agent to re-attach to the task",
        DEADLINE,
        || {
            strip_ansi(&agent.log_of_this_start())
                .contains("re-attached to the running task")
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", agent.log(), cluster.logs()));
}

#[test]
fn a_running_exec_task_survives_sigterm_and_sigkill_of_its_agent_and_is_recorded_once() {
    let cluster = Cluster::start(1).unwrap();
    let admin = cluster.token();
    let token = post(&cluster, &admin, "/v1/agent/tokens", json!({"uses": 1}));
    let mut agent = Agent::start(AgentSpec {
        servers: vec![cluster.servers[0].quic_addr],
        data_dir: cluster.root.path().join("agent"),
        hostname: "restarter".into(),
        bind: None,
        token: token["token"].as_str().map(str::to_owned),
    })
    .unwrap();
    wait_for("the agent to be connected", DEADLINE, || {
        node_ready(&cluster, &admin, "restarter").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", agent.log(), cluster.logs()));

    // The task notes each start of its shell, says which pid it is, sleeps 30 s, and
    // prints its pid: a restarted task would add a start line and print another pid.
    let work = cluster.root.path().join("task");
    std::fs::create_dir_all(&work).unwrap();
    let (starts, pidfile) = (work.join("starts"), work.join("pid"));
    let command = format!(
        "echo $$ >> {starts}; echo $$ > {pid}.tmp; mv {pid}.tmp {pid}; sleep 30; echo done-$$",
        starts = starts.display(),
        pid = pidfile.display()
    );
    let job = post(
        &cluster,
        &admin,
        "/v1/jobs",
        json!({"name": "long", "command": command}),
    );
    let job_id = job["id"].as_str().unwrap().to_owned();
    let run = post(
        &cluster,
        &admin,
        &format!("/v1/jobs/{job_id}/run"),
        json!({}),
    );
    let run_id = run["id"].as_str().unwrap().to_owned();
    let pid = wait_for("the task to start", DEADLINE, || read_pid(&pidfile))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", agent.log(), cluster.logs()));
    assert_eq!(
        get(&cluster, &admin, &format!("/v1/runs/{run_id}"))["status"],
        "running"
    );

    // SIGTERM: the agent stops cleanly and leaves the task to its supervisor.
    let status = agent.terminate(DEADLINE).unwrap();
    assert!(
        status.success(),
        "the agent did not stop cleanly: {status:?}\n{}",
        agent.log()
    );
    assert!(
        !process_is_dead(pid),
        "the task died with the agent (SIGTERM)"
    );
    agent.restart().unwrap();
    wait_reattached(&agent, &cluster);
    assert!(!process_is_dead(pid), "the task died across the restart");

    // SIGKILL: no chance to clean up at all.
    agent.kill();
    assert!(
        !process_is_dead(pid),
        "the task died with the agent (SIGKILL)"
    );
    agent.restart().unwrap();
    wait_reattached(&agent, &cluster);

    let finished = wait_for("the run to end", Duration::from_secs(90), || {
        let run = get(&cluster, &admin, &format!("/v1/runs/{run_id}"));
        (run["status"] != "running" && run["status"] != "pending").then_some(run)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", agent.log(), cluster.logs()));
    assert_eq!(
        finished["status"],
        "succeeded",
        "{finished}\n{}",
        agent.log()
    );
    assert_eq!(finished["attempts"], 1, "{finished}");
    assert_eq!(finished["exit_code"], 0, "{finished}");

    // One process, started once, whose output is the context.
    assert_eq!(
        std::fs::read_to_string(&starts).unwrap(),
        format!("{pid}\n"),
        "the task was started again"
    );
    let ctx = get(&cluster, &admin, &format!("/v1/contexts/C{job_id}"));
    assert_eq!(ctx["value"], format!("done-{pid}\n"), "{ctx}");
    assert_eq!(ctx["run"], run_id.as_str(), "{ctx}");
    assert_eq!(ctx["attempts"], 1, "{ctx}");

    // Recorded once: one run for the job, finished once.
    let runs = get(&cluster, &admin, &format!("/v1/jobs/{job_id}/runs"));
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["id"], run_id.as_str());
    let log = strip_ansi(&agent.log());
    // The agent reported the run's end once, across its three starts.
    let ends = log
        .lines()
        .filter(|l| l.contains(&format!("run{{run={run_id}")) && l.contains(" finished "))
        .count();
    assert_eq!(ends, 1, "the run's end was reported {ends} times:\n{log}");
    // The acknowledged run leaves nothing on the agent's disk.
    let run_dir = agent.spec.data_dir.join("runs").join(&run_id);
    wait_for("the run's files to be removed", DEADLINE, || {
        (!run_dir.exists()).then_some(())
    })
    .unwrap();
}
