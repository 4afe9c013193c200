//! Docker start overhead: from `POST /v1/jobs/{id}/run` of a one-shot busybox container
//! (`true`) to the run's exit being recorded (`GET /v1/runs/{id}?wait=…` answering it
//! finished), against `docker run --rm` of the same image and command, timed by the bench in
//! the same run, interleaved. One real `windflow server` and one real `windflow-agent`
//! (enrolled with a join token) on this machine's Docker Engine; the image is made with
//! `docker import` from Debian's busybox-static (`windflow_tests::docker::image`).
//!
//! Run: `cargo bench -p windflow-benches --bench docker_start`. Environment:
//! `DOCKER_START_RUNS` (20), `DOCKER_START_WARMUP` (2), `WINDFLOW_BIN`,
//! `WINDFLOW_AGENT_BIN` (default `target/release/…`, built if missing).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use windflow_benches::cluster::{
    Procs, env_or, fmt_dur, loadavg, log_tail, percentile, spawn_logged, target_dir,
    try_wait_until, windflow_bin,
};
use windflow_benches::server::{SingleServer, agent_bin};
use windflow_tests::docker;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn main() {
    let runs = env_or("DOCKER_START_RUNS", 20usize);
    let warmup = env_or("DOCKER_START_WARMUP", 2usize);
    let image = docker::image();
    let (bin, agent) = (windflow_bin(), agent_bin());
    let dir = tempfile::tempdir_in(target_dir()).expect("bench dir");
    let server = SingleServer::start(&bin, dir.path());
    let (status, body) = server
        .api("POST", "/v1/agent/tokens", r#"{"uses": 1, "ttl": "1h"}"#)
        .expect("agent token");
    assert_eq!(status, 201, "agent token: {body}");
    let token = json(&body)["token"].as_str().expect("token").to_owned();
    let agent_log = dir.path().join("agent.log");
    let mut procs = Procs::new(1);
    procs.set(
        0,
        spawn_logged(
            Command::new(&agent)
                .args(["--servers", &server.quic.to_string(), "--token", &token])
                .args(["--hostname", "bench-agent", "--data-dir"])
                .arg(dir.path().join("agent"))
                .env("HOME", dir.path()),
            &agent_log,
        ),
    );
    let mut agent_id = String::new();
    let ready = try_wait_until(Duration::from_secs(60), || {
        let Some((200, body)) = server.api("GET", "/v1/nodes", "") else {
            return false;
        };
        let nodes = json(&body);
        let node = &nodes[0];
        let docker = node["drivers"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d == "docker"));
        if let Some(id) = node["attributes"]["driver.docker.agent"].as_str() {
            agent_id = id.to_owned();
        }
        node["status"] == "ready" && docker
    });
    assert!(
        ready,
        "no docker-capable agent:\n{}",
        log_tail(&agent_log, 20)
    );
    let job = serde_json::json!({"name": "oneshot", "driver": "docker",
                                 "docker": {"image": image, "command": "true"}});
    let (status, body) = server
        .api("POST", "/v1/jobs", &job.to_string())
        .expect("job");
    assert_eq!(status, 201, "job: {body}");
    let job = json(&body)["id"].as_str().expect("job id").to_owned();
    println!(
        "docker start: {runs} runs after {warmup} warm-up ones, {}, {}; load average {}",
        bin.display(),
        agent.display(),
        loadavg()
    );

    let (mut windflow, mut plain, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..warmup + runs {
        let started = Instant::now();
        let (status, body) = server
            .api("POST", &format!("/v1/jobs/{job}/run"), "")
            .expect("POST run");
        assert_eq!(status, 202, "run {i}: {body}");
        let run = json(&body)["id"].as_str().expect("run id").to_owned();
        let (status, body) = server
            .api("GET", &format!("/v1/runs/{run}?wait=30s"), "")
            .expect("GET run");
        let took = started.elapsed();
        assert_eq!(status, 200, "{body}");
        let finished = json(&body);
        assert_eq!(
            finished["status"],
            "succeeded",
            "run {i}: {finished}\n{}",
            log_tail(&agent_log, 20)
        );

        let started = Instant::now();
        let out = Command::new("docker")
            .args(["run", "--rm", image, "true"])
            .stdin(Stdio::null())
            .output()
            .expect("docker run");
        let base = started.elapsed();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if i >= warmup {
            windflow.push(took);
            plain.push(base);
            ratios.push(took.as_secs_f64() / base.as_secs_f64());
        }
    }
    for v in [&mut windflow, &mut plain] {
        v.sort();
    }
    ratios.sort_by(f64::total_cmp);
    let median_ratio = ratios[ratios.len() / 2];
    println!("| one-shot busybox `true` | p50 | p90 | max |");
    println!("|---|---|---|---|");
    for (name, v) in [
        ("windflow: `POST run` → exit recorded", &windflow),
        ("`docker run --rm`", &plain),
    ] {
        println!(
            "| {name} | {} | {} | {} |",
            fmt_dur(percentile(v, 0.5)),
            fmt_dur(percentile(v, 0.9)),
            fmt_dur(*v.last().unwrap_or(&Duration::ZERO))
        );
    }
    println!(
        "\nmedian of the per-run ratios: {median_ratio:.2}x (goal <= 1.1x); load average now {}",
        loadavg()
    );
    let left = docker::containers_of(&agent_id);
    assert!(left.is_empty(), "runs left containers behind: {left:?}");
}
