//! Schedule fire delay: many schedules due every minute onto exec jobs, on one real
//! `windflow server` process (fsync on) with simulated agents (`sim_agent`: real nodes,
//! enrolled with a join token, on real QUIC mTLS sessions, that answer each `RunTask` at
//! once as if its process started and exited 0), so the delays are the server's.
//!
//! Three delays per fire, all from the due instant: until the leader recorded the fire
//! (its `FireSchedule` entry, stamped `at` just before it is proposed: this is when the
//! leader acted), until the run it launched was dispatched (the run's `started_at`,
//! stamped by the dispatcher as it places the run), and until its `RunTask` reached the
//! agent (the agent's clock, the same machine's). The server's CPU time is sampled over
//! the measured minutes.
//!
//! Run: `cargo bench -p windflow-benches --bench schedule_fire`. Environment:
//! `FIRE_SCHEDULES` (1000), `FIRE_JOBS` (10000; schedule i targets job i), `FIRE_MINUTES`
//! (3), `FIRE_AGENTS` (10), `FIRE_DIR` (where the server's data goes, default `target/`),
//! `WINDFLOW_BIN` (default `target/release/windflow`, built if missing).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use windflow_benches::cluster::{
    env_or, fmt_dur, http_client, loadavg, percentile, target_dir, try_wait_until, windflow_bin,
};
use windflow_benches::server::{SingleServer, proc_sample};
use windflow_benches::sim_agent::{ENROLL_ATTEMPTS, Received, enroll_all, handshake, serve_runs};
use windflow_protocol::enroll::JoinToken;
use windflow_protocol::{RunId, Timestamp};

fn ts(v: &serde_json::Value) -> Option<Timestamp> {
    serde_json::from_value(v.clone()).ok()
}

fn main() {
    let schedules = env_or("FIRE_SCHEDULES", 1000usize);
    let jobs = env_or("FIRE_JOBS", 10_000usize).max(schedules);
    let minutes = env_or("FIRE_MINUTES", 3u64);
    let agents = env_or("FIRE_AGENTS", 10usize).max(1);
    let bin = windflow_bin();
    let dir =
        tempfile::tempdir_in(std::env::var_os("FIRE_DIR").map_or_else(target_dir, Into::into))
            .expect("bench dir");
    let server = SingleServer::start(&bin, dir.path());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    windflow_certs::install_crypto_provider();
    let (status, body) = server
        .api(
            "POST",
            "/v1/agent/tokens",
            &format!(r#"{{"uses": {}, "ttl": "1h"}}"#, agents * ENROLL_ATTEMPTS),
        )
        .expect("agent token");
    assert_eq!(status, 201, "agent token: {body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("token JSON");
    let token: JoinToken = created["token"]
        .as_str()
        .expect("token")
        .parse()
        .expect("a join token");
    let received = Arc::new(Received::default());
    let endpoint = rt.block_on(async {
        let identities = enroll_all(&token, server.quic, "sim", agents).await;
        let endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).expect("endpoint");
        for (i, identity) in identities.iter().enumerate() {
            let session = handshake(&endpoint, identity, server.quic, format!("sim-{i}"))
                .await
                .unwrap_or_else(|e| panic!("session {i}: {e}"));
            tokio::spawn(serve_runs(session, received.clone()));
        }
        endpoint
    });
    let connected = try_wait_until(Duration::from_secs(60), || {
        server.metric("windflow_agents_connected") == Some(agents as f64)
    });
    assert!(connected, "{agents} simulated agents not connected");

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
         {agents} simulated agents, setup {}; {}; load average {}",
        fmt_dur(setup.elapsed()),
        bin.display(),
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

    let arrived: HashMap<RunId, Timestamp> = received
        .runs
        .lock()
        .expect("received")
        .iter()
        .copied()
        .collect();
    let (mut fire_delay, mut run_delay, mut arrive_delay) = (Vec::new(), Vec::new(), Vec::new());
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
                if let Some(at) = run.parse().ok().and_then(|r: RunId| arrived.get(&r)) {
                    arrive_delay.push(Duration::from_millis(at.0.saturating_sub(due.0)));
                }
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
    arrive_delay.sort();
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
    line("due → RunTask at the agent", &arrive_delay);
    println!("  runs not dispatched 30 s after the last due minute: {undispatched}");
    println!(
        "  server CPU: {} over {} ({:.1}% of one core); load average {}",
        fmt_dur(cpu),
        fmt_dur(elapsed),
        cpu.as_secs_f64() * 100.0 / elapsed.as_secs_f64(),
        loadavg()
    );
    endpoint.close(0u32.into(), b"bench over");
}
