//! The docker driver against this machine's real Docker Engine (never a fake; a missing
//! engine fails these tests): a service of busybox `httpd` containers answering on the
//! host ports the engine gave them, `docker kill` meeting the restart policy and then the
//! scheduler, an agent restart that re-attaches to its containers by label (same IDs, a
//! later exit still reported), a batch run's stdout as the job's context, and an image
//! that cannot be pulled (no registry is reachable here) failing with a clear error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};
use windflow_tests::docker::{self, Cleanup, INDEX_HTML};
use windflow_tests::fleet::{Fleet, PATIENT};
use windflow_tests::{stderr, stdout};

fn id(a: &Value) -> String {
    a["id"].as_str().unwrap().to_owned()
}

/// A fleet of `n` docker-capable agents; the cleanup removes their containers at the end.
fn fleet(n: usize, cleanup: &Cleanup) -> (Fleet, Vec<String>) {
    docker::image();
    let f = Fleet::start(n, PATIENT);
    let nodes = f.nodes();
    for node in &nodes {
        let drivers = node["drivers"].as_array().unwrap();
        assert!(drivers.iter().any(|d| d == "docker"), "{node}");
        assert!(
            node["attributes"]["driver.docker.version"]
                .as_str()
                .is_some(),
            "{node}"
        );
        assert!(
            node["attributes"]["driver.docker.cgroup_driver"]
                .as_str()
                .is_some(),
            "{node}"
        );
    }
    let agents = cleanup.watch_nodes(&nodes);
    (f, agents)
}

/// A service of busybox `httpd` on container port 8080, published on a host port the
/// engine picks; its job ID.
fn httpd_service(f: &Fleet, name: &str, count: usize, restart: Value) -> String {
    let (status, job) = f.call(
        "POST",
        "/v1/jobs",
        Some(json!({
            "name": name, "type": "service", "count": count, "driver": "docker",
            "docker": {
                "image": docker::IMAGE, "command": "httpd",
                "args": ["-f", "-p", "8080", "-h", "/www"],
                "ports": [{"label": "http", "container_port": 8080}],
                "labels": {"suite": "docker"}
            },
            "resources": {"cpu_mhz": 10, "memory_mb": 32},
            "restart": restart,
            "reschedule": {"unlimited": true, "delay": "1s", "max_delay": "2s"}
        })),
    );
    assert_eq!(status, 201, "{job}");
    id(&job)
}

/// The job's desired-`run` allocations once `count` of them run with a host port each.
fn running_with_ports(f: &Fleet, job: &str, count: usize) -> Vec<Value> {
    f.wait(
        &format!("{count} allocations of {job} running with ports"),
        |f| {
            let live: Vec<Value> = f
                .allocs(job)
                .into_iter()
                .filter(|a| a["desired"] == "run")
                .collect();
            (live.len() == count
                && live.iter().all(|a| {
                    a["client"] == "running" && a["ports"].as_array().is_some_and(|p| p.len() == 1)
                }))
            .then_some(live)
        },
    )
}

fn host_port(a: &Value) -> u16 {
    let p = &a["ports"][0];
    assert_eq!(p["label"], "http", "{a}");
    assert_eq!(p["container_port"], 8080, "{a}");
    u16::try_from(p["host_port"].as_u64().unwrap()).unwrap()
}

/// `GET /` on 127.0.0.1:`port`: the whole answer, if one came.
fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// The one running container of allocation `alloc` on the agent `agent`.
fn container_of(f: &Fleet, agent: &str, alloc: &str) -> String {
    f.wait(&format!("the container of {alloc}"), |_| {
        let ids = docker::running_of_alloc(agent, alloc);
        (ids.len() == 1).then(|| ids[0].clone())
    })
}

fn events_of(a: &Value, kind: &str) -> Vec<String> {
    a["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["kind"] == kind)
                .map(|e| e["message"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn three_httpd_replicas_run_and_each_answers_on_its_host_port() {
    let cleanup = Cleanup::default();
    let (f, agents) = fleet(2, &cleanup);
    let job = httpd_service(
        &f,
        "web",
        3,
        json!({"attempts": 2, "interval": "10m", "delay": "1s"}),
    );
    let live = running_with_ports(&f, &job, 3);
    let mut ports: Vec<u16> = live.iter().map(host_port).collect();
    for port in &ports {
        let answer = f.wait(&format!("httpd on host port {port}"), |_| http_get(*port));
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with(INDEX_HTML), "{answer}");
    }
    ports.sort();
    ports.dedup();
    assert_eq!(
        ports.len(),
        3,
        "each replica has its own host port: {live:?}"
    );
    // Each container carries the agent's labels and the task's own.
    let all: Vec<String> = agents
        .iter()
        .flat_map(|a| docker::containers_of(a))
        .collect();
    assert_eq!(all.len(), 3, "{all:?}");
    for c in &all {
        let labels = docker::docker_ok(&["inspect", "--format", "{{json .Config.Labels}}", c]);
        let labels: Value = serde_json::from_str(&labels).unwrap();
        assert_eq!(labels["windflow.job"], job.as_str(), "{labels}");
        assert_eq!(labels["windflow.task"], "web", "{labels}");
        assert_eq!(labels["suite"], "docker", "{labels}");
        let alloc = labels["windflow.alloc"].as_str().unwrap();
        assert!(live.iter().any(|a| a["id"] == alloc), "{labels}");
        let memory = docker::docker_ok(&["inspect", "--format", "{{.HostConfig.Memory}}", c]);
        assert_eq!(memory, (32u64 << 20).to_string());
    }
    // `alloc show` lists the port.
    let shown = f.cli(&["alloc", "show", &id(&live[0])]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = stdout(&shown);
    assert!(
        text.contains(&format!(":{}", host_port(&live[0]))),
        "{text}"
    );
    assert!(text.contains("8080/tcp"), "{text}");
    // Deleting the job stops and removes its containers.
    let out = f.cli(&["job", "delete", &job]);
    assert!(out.status.success(), "{}", stderr(&out));
    f.wait("the containers to be removed", |_| {
        agents
            .iter()
            .all(|a| docker::containers_of(a).is_empty())
            .then_some(())
    });
}

#[test]
fn a_killed_container_restarts_per_policy_then_fails_and_is_placed_again() {
    let cleanup = Cleanup::default();
    let (f, agents) = fleet(1, &cleanup);
    let agent = &agents[0];
    let job = httpd_service(
        &f,
        "flaky",
        1,
        json!({"attempts": 1, "interval": "10m", "delay": "1s", "mode": "fail"}),
    );
    let first = running_with_ports(&f, &job, 1).remove(0);
    let alloc = id(&first);
    let c1 = container_of(&f, agent, &alloc);

    docker::docker_ok(&["kill", &c1]);
    let again = f.wait("the allocation restarted in place", |f| {
        let a = f.alloc(&alloc);
        (a["restarts"] == 1
            && a["client"] == "running"
            && a["ports"].as_array().is_some_and(|p| !p.is_empty()))
        .then_some(a)
    });
    let c2 = container_of(&f, agent, &alloc);
    assert_ne!(c1, c2, "a restart runs a fresh container");
    let exits = events_of(&again, "exited");
    assert!(exits.iter().any(|m| m.contains("exit code 137")), "{again}");
    f.wait("the restarted httpd to answer", |_| {
        http_get(host_port(&again))
    });

    // Past the policy (one restart): the allocation fails, and the scheduler replaces it.
    docker::docker_ok(&["kill", &c2]);
    let failed = f.wait("the allocation to fail", |f| {
        let a = f.alloc(&alloc);
        (a["client"] == "failed").then_some(a)
    });
    assert!(
        events_of(&failed, "failed")
            .iter()
            .any(|m| m.contains("past its restart policy")),
        "{failed}"
    );
    let replacement = running_with_ports(&f, &job, 1).remove(0);
    assert_eq!(replacement["previous"], alloc.as_str(), "{replacement}");
    f.wait("the replacement's httpd to answer", |_| {
        http_get(host_port(&replacement))
    });
    f.wait("the failed allocation's container to be removed", |_| {
        docker::running_of_alloc(agent, &alloc)
            .is_empty()
            .then_some(())
    });
}

#[test]
fn a_restarted_agent_keeps_its_containers_and_reports_their_later_exit() {
    let cleanup = Cleanup::default();
    let (mut f, agents) = fleet(1, &cleanup);
    let agent = &agents[0];
    let job = httpd_service(
        &f,
        "steady",
        2,
        json!({"attempts": 3, "interval": "10m", "delay": "1s"}),
    );
    let live = running_with_ports(&f, &job, 2);
    let before: Vec<(String, String)> = live
        .iter()
        .map(|a| (id(a), container_of(&f, agent, &id(a))))
        .collect();

    // SIGKILL: nothing of the agent's own shutdown runs.
    f.agents[0].kill();
    for (_, c) in &before {
        let state = docker::docker_ok(&["inspect", "--format", "{{.State.Status}}", c]);
        assert_eq!(state, "running", "the container died with its agent");
    }
    f.agents[0].restart().unwrap();
    let log = f.wait("the agent to re-attach to both containers", |f| {
        let log = f.agents[0].log_of_this_start();
        (log.matches("re-attached to the running container").count() == 2).then_some(log)
    });
    assert!(!log.contains("container started"), "{log}");
    let after: Vec<(String, String)> = before
        .iter()
        .map(|(a, _)| (a.clone(), container_of(&f, agent, a)))
        .collect();
    assert_eq!(before, after, "the same containers, not new ones");
    assert_eq!(docker::containers_of(agent).len(), 2);
    for (a, _) in &before {
        let a = f.alloc(a);
        assert_eq!(a["restarts"], 0, "{a}");
        assert_eq!(a["client"], "running", "{a}");
    }

    // The re-attached agent still sees a container's exit, and restarts it per policy.
    let (alloc, c) = &before[0];
    docker::docker_ok(&["kill", c]);
    let a = f.wait("the exit after the restart to be reported", |f| {
        let a = f.alloc(alloc);
        (a["restarts"] == 1 && a["client"] == "running").then_some(a)
    });
    assert!(
        events_of(&a, "exited")
            .iter()
            .any(|m| m.contains("exit code 137")),
        "{a}"
    );
    assert_ne!(&container_of(&f, agent, alloc), c);
}

#[test]
fn a_batch_docker_runs_stdout_becomes_the_jobs_context() {
    let cleanup = Cleanup::default();
    let (f, agents) = fleet(1, &cleanup);
    let script = "echo hello from $WHO; echo to stderr >&2";
    let created = f.cli(&[
        "job",
        "create",
        "hello",
        "--image",
        docker::IMAGE,
        "--cmd",
        "sh",
        "--arg",
        "-c",
        "--arg",
        script,
        "--env",
        "WHO=docker",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let run = f.cli(&["job", "run", "hello", "--wait"]);
    assert_eq!(run.status.code(), Some(0), "{}\n{}", stderr(&run), f.logs());
    assert_eq!(stdout(&run), "hello from docker\n");
    let ctx = f.cli(&["context", "show", "hello"]);
    assert_eq!(stdout(&ctx), "hello from docker\n", "{}", stderr(&ctx));

    // Failed attempts are retried, and the exit code is the run's.
    let created = f.cli(&[
        "job",
        "create",
        "flaky",
        "--image",
        docker::IMAGE,
        "--cmd",
        "sh",
        "--arg",
        "-c",
        "--arg",
        "echo try; exit 3",
        "--retries",
        "1",
        "--retry-delay",
        "1s",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let run = f.cli(&["job", "run", "flaky", "--wait"]);
    assert_eq!(run.status.code(), Some(3), "{}", stderr(&run));
    let runs: Value = serde_json::from_str(&stdout(
        &f.cli(&["job", "runs", "flaky", "--output", "json"]),
    ))
    .unwrap();
    assert_eq!(runs[0]["attempts"], 2, "{runs}");
    assert_eq!(runs[0]["status"], "failed", "{runs}");

    // A timeout kills the container.
    let created = f.cli(&[
        "job",
        "create",
        "slow",
        "--image",
        docker::IMAGE,
        "--cmd",
        "sleep",
        "--arg",
        "600",
        "--timeout",
        "2s",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let run = f.cli(&["job", "run", "slow", "--wait"]);
    assert_ne!(run.status.code(), Some(0));
    let runs: Value = serde_json::from_str(&stdout(
        &f.cli(&["job", "runs", "slow", "--output", "json"]),
    ))
    .unwrap();
    assert_eq!(runs[0]["status"], "timed_out", "{runs}");
    // Runs leave no containers behind.
    f.wait("the runs' containers to be removed", |_| {
        docker::containers_of(&agents[0]).is_empty().then_some(())
    });
}

#[test]
fn an_image_that_cannot_be_pulled_fails_with_a_clear_error() {
    let cleanup = Cleanup::default();
    let (f, _agents) = fleet(1, &cleanup);
    let missing = "windflow-test/not-there:never";
    let (status, job) = f.call(
        "POST",
        "/v1/jobs",
        Some(json!({"name": "ghost", "driver": "docker", "docker": {"image": missing}})),
    );
    assert_eq!(status, 201, "{job}");
    let run = f.cli(&["job", "run", "ghost", "--wait"]);
    assert_ne!(run.status.code(), Some(0));
    let runs: Value = serde_json::from_str(&stdout(
        &f.cli(&["job", "runs", "ghost", "--output", "json"]),
    ))
    .unwrap();
    let error = runs[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(missing) && error.contains("cannot be pulled"),
        "{runs}"
    );

    // A service's allocation says so in its events: the pull it tried, then the failure.
    let (status, job) = f.call(
        "POST",
        "/v1/jobs",
        Some(
            json!({"name": "ghost-svc", "type": "service", "driver": "docker",
                    "docker": {"image": missing},
                    "restart": {"attempts": 0, "interval": "10m", "delay": "1s"},
                    "reschedule": {"attempts": 0, "interval": "1h"}}),
        ),
    );
    assert_eq!(status, 201, "{job}");
    let job = id(&job);
    let failed = f.wait("the allocation to fail", |f| {
        f.allocs(&job).into_iter().find(|a| a["client"] == "failed")
    });
    let setup = events_of(&failed, "task_setup");
    assert!(
        setup
            .iter()
            .any(|m| m.contains(&format!("pulling image {missing}"))),
        "{failed}"
    );
    let why = events_of(&failed, "failed").join("\n");
    assert!(why.contains("cannot be pulled"), "{failed}");
}

#[test]
fn a_batch_run_survives_an_agent_kill_and_its_result_is_recorded_once() {
    let cleanup = Cleanup::default();
    let (mut f, agents) = fleet(1, &cleanup);
    let marker = "the container outlived its agent";
    let (status, job) = f.call(
        "POST",
        "/v1/jobs",
        Some(json!({"name": "long", "driver": "docker",
                    "docker": {"image": docker::IMAGE, "command": "sh",
                               "args": ["-c", format!("sleep 4; echo {marker}")]}})),
    );
    assert_eq!(status, 201, "{job}");
    let (status, run) = f.call("POST", &format!("/v1/jobs/{}/run", id(&job)), None);
    assert_eq!(status, 202, "{run}");
    let run = id(&run);
    let container = f.wait("the run's container", |_| {
        let filter = format!("label=windflow.run={run}");
        let agent = format!("label=windflow.agent={}", agents[0]);
        let out = docker::docker_ok(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &filter,
            "--filter",
            &agent,
        ]);
        (!out.is_empty()).then_some(out)
    });
    f.agents[0].kill();
    f.agents[0].restart().unwrap();
    let done = f.wait("the run to be recorded", |f| {
        let r = f.get(&format!("/v1/runs/{run}"));
        (r["status"] != "running" && r["status"] != "pending").then_some(r)
    });
    assert_eq!(done["status"], "succeeded", "{done}\n{}", f.logs());
    assert_eq!(done["attempts"], 1, "not started again: {done}");
    let log = f.agents[0].log_of_this_start();
    assert!(log.contains("re-attached to the run's container"), "{log}");
    let ctx = f.cli(&["context", "show", "long"]);
    assert_eq!(stdout(&ctx), format!("{marker}\n"), "{}", stderr(&ctx));
    f.wait("the run's container to be removed", |_| {
        let gone = docker::docker(&["inspect", &container]);
        (!gone.status.success()).then_some(())
    });
}
