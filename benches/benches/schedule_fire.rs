//! Schedule fire delay: many schedules due every minute onto exec jobs, on one real
//! `windflow server` process and one real `windflow-agent` process (enrolled with a join
//! token), fsync on.
//!
//! Two delays per fire, both from the due instant: until the leader recorded the fire
//! (its `FireSchedule` entry, stamped `at` just before it is proposed: this is when the
//! leader acted) and until the run it launched was dispatched to the agent (the run's
//! `started_at`, stamped by the dispatcher as it places the run). The server's CPU time is
//! sampled over the measured minutes.
//!
//! Run: `cargo bench -p windflow-benches --bench schedule_fire`. Environment:
//! `FIRE_SCHEDULES` (1000), `FIRE_JOBS` (10000; schedule i targets job i), `FIRE_MINUTES`
//! (3), `FIRE_DIR` (where the server's data goes, default `target/`), `WINDFLOW_BIN`,
//! `WINDFLOW_AGENT_BIN` (default `target/release/…`, built if missing).

use std::process::Command;
use std::time::{Duration, Instant};

use windflow_benches::cluster::{
    Procs, env_or, fmt_dur, http_client, loadavg, log_tail, percentile, spawn_logged, target_dir,
    try_wait_until, windflow_bin,
};
use windflow_benches::server::{SingleServer, agent_bin, proc_sample};
use windflow_protocol::Timestamp;

fn ts(v: &serde_json::Value) -> Option<Timestamp> {
    serde_json::from_value(v.clone()).ok()
}

fn main() {
    let schedules = env_or("FIRE_SCHEDULES", 1000usize);
    let jobs = env_or("FIRE_JOBS", 10_000usize).max(schedules);
    let minutes = env_or("FIRE_MINUTES", 3u64);
    let (bin, agent) = (windflow_bin(), agent_bin());
    let dir =
        tempfile::tempdir_in(std::env::var_os("FIRE_DIR").map_or_else(target_dir, Into::into))
            .expect("bench dir");
    let server = SingleServer::start(&bin, dir.path());

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

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    windflow_certs::install_crypto_provider();
    let client = http_client(Duration::from_secs(60));
    let base = format!("http://{}", server.http);
    let auth = format!("Bearer {}", server.token);
    let post = |path: String, body: serde_json::Value| {
        let (client, auth) = (client.clone(), auth.clone());
        async move {
            let resp = client
                .post(path)
                .header("Authorization", auth)
                .json(&body)
                .send()
                .await
                .expect("POST");
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            assert!(status.is_success(), "{status}: {text}");
            serde_json::from_str::<serde_json::Value>(&text).expect("JSON")
        }
    };

    // Jobs and schedules, created 32 at a time (concurrent writes share raft entries).
    let setup = Instant::now();
    rt.block_on(async {
        let mut job_ids = Vec::with_capacity(jobs);
        for chunk in (0..jobs).collect::<Vec<_>>().chunks(32) {
            let mut set = tokio::task::JoinSet::new();
            for &i in chunk {
                set.spawn(post(
                    format!("{base}/v1/jobs"),
                    serde_json::json!({"name": format!("job-{i}"), "command": "true"}),
                ));
            }
            while let Some(j) = set.join_next().await {
                job_ids.push(j.expect("job task")["id"].as_str().expect("id").to_owned());
            }
        }
        for chunk in (0..schedules).collect::<Vec<_>>().chunks(32) {
            let mut set = tokio::task::JoinSet::new();
            for &i in chunk {
                set.spawn(post(
                    format!("{base}/v1/schedules"),
                    serde_json::json!({
                        "name": format!("every-minute-{i}"),
                        "cron": "* * * * *",
                        "targets": [{"job": format!("job-{i}")}],
                    }),
                ));
            }
            while let Some(s) = set.join_next().await {
                s.expect("schedule task");
            }
        }
    });
    println!(
        "schedule fire: {schedules} schedules due every minute over {jobs} exec jobs, {minutes} minute(s), \
         setup {}; {}, {}; load average {}",
        fmt_dur(setup.elapsed()),
        bin.display(),
        agent.display(),
        loadavg()
    );

    // Measure from the next minute boundary for `minutes` minutes (plus a margin for the
    // last fires' runs to be dispatched).
    let now = Timestamp::now().0;
    let first_due = (now / 60_000 + 1) * 60_000;
    let end = first_due + minutes * 60_000 - 1;
    let pid = server.pid().to_string();
    let ready = try_wait_until(Duration::from_secs(70), || {
        Timestamp::now().0 + 200 >= first_due
    });
    assert!(ready);
    let cpu_before = proc_sample(&pid);
    let wall = Instant::now();
    let done = try_wait_until(Duration::from_secs(minutes * 60 + 120), || {
        Timestamp::now().0 >= end + 30_000
    });
    assert!(done);
    let cpu = proc_sample(&pid).cpu.saturating_sub(cpu_before.cpu);
    let elapsed = wall.elapsed();

    let (mut fire_delay, mut run_delay) = (Vec::new(), Vec::new());
    let mut undispatched = 0usize;
    rt.block_on(async {
        for i in 0..schedules {
            let fires: serde_json::Value = client
                .get(format!(
                    "{base}/v1/schedules/every-minute-{i}/fires?limit=100"
                ))
                .header("Authorization", &auth)
                .send()
                .await
                .expect("GET fires")
                .json()
                .await
                .expect("fires JSON");
            for f in fires.as_array().into_iter().flatten() {
                let (Some(due), Some(at)) = (ts(&f["due"]), ts(&f["at"])) else {
                    continue;
                };
                if due.0 < first_due || due.0 > end {
                    continue;
                }
                fire_delay.push(Duration::from_millis(at.0.saturating_sub(due.0)));
                let Some(run) = f["launches"][0]["run"].as_str() else {
                    continue;
                };
                let run: serde_json::Value = client
                    .get(format!("{base}/v1/runs/{run}"))
                    .header("Authorization", &auth)
                    .send()
                    .await
                    .expect("GET run")
                    .json()
                    .await
                    .expect("run JSON");
                match ts(&run["started_at"]) {
                    Some(started) => {
                        run_delay.push(Duration::from_millis(started.0.saturating_sub(due.0)))
                    }
                    None => undispatched += 1,
                }
            }
        }
    });
    fire_delay.sort();
    run_delay.sort();
    let expected = schedules as u64 * minutes;
    let line = |what: &str, v: &[Duration]| {
        if v.is_empty() {
            println!("  {what}: none");
            return;
        }
        println!(
            "  {what}: n={} p50 {} p90 {} p99 {} max {}",
            v.len(),
            fmt_dur(percentile(v, 0.5)),
            fmt_dur(percentile(v, 0.9)),
            fmt_dur(percentile(v, 0.99)),
            fmt_dur(*v.last().expect("non-empty"))
        );
    };
    println!("  fires recorded: {} of {expected} due", fire_delay.len());
    line("due → fire recorded", &fire_delay);
    line("due → run dispatched", &run_delay);
    println!("  runs not dispatched 30 s after the last due minute: {undispatched}");
    println!(
        "  server CPU: {} over {} ({:.1}% of one core); load average {}",
        fmt_dur(cpu),
        fmt_dur(elapsed),
        cpu.as_secs_f64() * 100.0 / elapsed.as_secs_f64(),
        loadavg()
    );
    drop(procs);
}
