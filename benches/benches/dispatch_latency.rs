//! Dispatch latency: from `POST /v1/jobs/{id}/run` leaving the client to the task's process
//! running on the agent, on loopback. One real `windflow server` process and one real
//! `windflow-agent` process (enrolled with a join token), fsync on.
//!
//! The job's command is `date +%s%N >> FILE`: the process writes its own start time (wall
//! clock, ns; the bench, the server and the agent share the host's clock). That time
//! includes starting `sh` and `date`, so after each run the bench spawns the same command
//! itself (`sh -c` in its own process group, as the exec driver does) and records how long
//! that takes from spawn to timestamp: the baseline, measured in the same run, interleaved.
//! Runs go one at a time: the next is requested once the previous has finished.
//!
//! Run: `cargo bench -p windflow-benches --bench dispatch_latency`. Environment:
//! `DISPATCH_RUNS` (1000), `DISPATCH_WARMUP` (20), `DISPATCH_DIR` (where the server's data
//! goes, default `target/`; a tmpfs such as `/dev/shm` shows what fsync costs), `WINDFLOW_BIN`,
//! `WINDFLOW_AGENT_BIN` (default `target/release/…`, built if missing).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use windflow_benches::cluster::{
    Procs, env_or, fmt_dur, http_client, loadavg, log_tail, percentile, spawn_logged, target_dir,
    try_wait_until, windflow_bin,
};
use windflow_benches::server::{SingleServer, agent_bin};

const RUN_DEADLINE: Duration = Duration::from_secs(30);

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// The last line of `path` as a timestamp, once it has `lines` lines.
fn nth_stamp(path: &Path, lines: usize) -> Option<u128> {
    let text = std::fs::read_to_string(path).ok()?;
    let all: Vec<&str> = text.lines().collect();
    (all.len() >= lines).then(|| all[lines - 1].trim().parse().ok())?
}

fn ns(d: u128) -> Duration {
    Duration::from_nanos(d as u64)
}

fn main() {
    let runs = env_or("DISPATCH_RUNS", 1000usize);
    let warmup = env_or("DISPATCH_WARMUP", 20usize);
    let (bin, agent) = (windflow_bin(), agent_bin());
    let dir =
        tempfile::tempdir_in(std::env::var_os("DISPATCH_DIR").map_or_else(target_dir, Into::into))
            .expect("bench dir");
    let server = SingleServer::start(&bin, dir.path());

    // A real agent process, enrolled with a single-use token.
    let (status, body) = server
        .api("POST", "/v1/agent/tokens", r#"{"uses": 1, "ttl": "1h"}"#)
        .expect("agent token");
    assert_eq!(status, 201, "agent token: {body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("token JSON");
    let token = created["token"].as_str().expect("token").to_owned();
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
    let connected = try_wait_until(Duration::from_secs(60), || {
        server.metric("windflow_agents_connected") == Some(1.0)
    });
    assert!(
        connected,
        "agent not connected:\n{}",
        log_tail(&agent_log, 20)
    );

    let stamps = dir.path().join("dispatched");
    let baseline_stamps = dir.path().join("baseline");
    let command = format!("date +%s%N >> {}", stamps.display());
    let (status, body) = server
        .api(
            "POST",
            "/v1/jobs",
            &serde_json::json!({"name": "dispatch", "command": command}).to_string(),
        )
        .expect("job");
    assert_eq!(status, 201, "job: {body}");
    let job: serde_json::Value = serde_json::from_str(&body).expect("job JSON");
    let job = job["id"].as_str().expect("job id").to_owned();
    println!(
        "dispatch latency: {runs} runs after {warmup} warm-up ones, {}, {}; load average {}",
        bin.display(),
        agent.display(),
        loadavg()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    windflow_certs::install_crypto_provider();
    let client = http_client(RUN_DEADLINE);
    let base = format!("http://{}", server.http);
    let auth = format!("Bearer {}", server.token);
    let (mut latency, mut acked, mut baseline) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for i in 0..warmup + runs {
        // One run: request it, wait for it to end, read its process's stamp.
        let sent = now_ns();
        let run: serde_json::Value = rt.block_on(async {
            let resp = client
                .post(format!("{base}/v1/jobs/{job}/run"))
                .header("Authorization", &auth)
                .send()
                .await
                .expect("POST run");
            assert_eq!(resp.status(), 202, "run {i}");
            resp.json().await.expect("run JSON")
        });
        let answered = now_ns();
        let run_id = run["id"].as_str().expect("run id").to_owned();
        rt.block_on(async {
            let resp = client
                .get(format!("{base}/v1/runs/{run_id}?wait=30s"))
                .header("Authorization", &auth)
                .send()
                .await
                .expect("GET run");
            let run: serde_json::Value = resp.json().await.expect("run JSON");
            assert_eq!(run["status"], "succeeded", "run {i}: {run}");
        });
        let stamp = nth_stamp(&stamps, i + 1)
            .unwrap_or_else(|| panic!("run {i} left no stamp:\n{}", log_tail(&agent_log, 20)));

        // The baseline: the same command, spawned here.
        let spawned = now_ns();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("date +%s%N >> {}", baseline_stamps.display()))
            .process_group(0)
            .status()
            .expect("sh");
        assert!(status.success());
        let base_stamp = nth_stamp(&baseline_stamps, i + 1).expect("baseline stamp");
        if i >= warmup {
            latency.push(ns(stamp.saturating_sub(sent)));
            acked.push(ns(answered - sent));
            baseline.push(ns(base_stamp.saturating_sub(spawned)));
        }
    }
    let elapsed = started.elapsed();
    for v in [&mut latency, &mut acked, &mut baseline] {
        v.sort();
    }
    let row = |name: &str, v: &[Duration]| {
        println!(
            "| {name} | {} | {} | {} | {} |",
            fmt_dur(percentile(v, 0.5)),
            fmt_dur(percentile(v, 0.9)),
            fmt_dur(percentile(v, 0.99)),
            fmt_dur(*v.last().unwrap_or(&Duration::ZERO))
        );
    };
    println!(
        "\n{runs} runs in {:.1} s; load average now {}",
        elapsed.as_secs_f64(),
        loadavg()
    );
    println!("| from the POST sent | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    row("task process started (its own `date`)", &latency);
    row("API answered (CreateRun committed)", &acked);
    row("baseline: `sh -c date` spawned by the bench", &baseline);
    let net: Vec<Duration> = {
        let b = percentile(&baseline, 0.5);
        latency.iter().map(|l| l.saturating_sub(b)).collect()
    };
    row("task started minus the baseline's median", &net);
}
