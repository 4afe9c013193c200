//! List endpoints under load: one real `windflow server` process (fsync on) holding
//! 100,000 jobs and 10,000 pipelines, created through the API; then the latency of paged
//! and filtered lists, against the whole unpaged list in the same run, and the server's
//! RSS.
//!
//! Run: `cargo bench -p windflow-benches --bench list_load`. Environment: `LIST_JOBS`
//! (100000), `LIST_PIPELINES` (10000), `LIST_ROUNDS` (50 requests per case), `LIST_DIR`
//! (default `target/`), `WINDFLOW_BIN` (default `target/release/windflow`, built if
//! missing).

use std::time::{Duration, Instant};

use windflow_benches::cluster::{
    env_or, fmt_dur, http_client, loadavg, percentile, target_dir, windflow_bin,
};
use windflow_benches::server::{SingleServer, proc_sample};

fn main() {
    let jobs = env_or("LIST_JOBS", 100_000usize);
    let pipelines = env_or("LIST_PIPELINES", 10_000usize).min(jobs.saturating_sub(1));
    let rounds = env_or("LIST_ROUNDS", 50usize);
    let bin = windflow_bin();
    let dir =
        tempfile::tempdir_in(std::env::var_os("LIST_DIR").map_or_else(target_dir, Into::into))
            .expect("bench dir");
    let server = SingleServer::start(&bin, dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    windflow_certs::install_crypto_provider();
    let client = http_client(Duration::from_secs(120));
    let base = format!("http://{}", server.http);
    let auth = format!("Bearer {}", server.token);

    // 64 creates in flight: concurrent writes share raft entries.
    let setup = Instant::now();
    rt.block_on(async {
        let post = |path: &'static str, body: serde_json::Value| {
            let (client, auth, url) = (client.clone(), auth.clone(), format!("{base}{path}"));
            async move {
                let resp = client
                    .post(url)
                    .header("Authorization", auth)
                    .json(&body)
                    .send()
                    .await
                    .expect("POST");
                let status = resp.status();
                assert!(
                    status.is_success(),
                    "{status}: {}",
                    resp.text().await.unwrap_or_default()
                );
            }
        };
        let mut set = tokio::task::JoinSet::new();
        for i in 0..jobs {
            if set.len() >= 64 {
                set.join_next().await.expect("a task").expect("job create");
            }
            let body = serde_json::json!({"name": format!("job-{i:06}"), "command": "true"});
            set.spawn(post("/v1/jobs", body));
        }
        while let Some(r) = set.join_next().await {
            r.expect("job create");
        }
        for i in 0..pipelines {
            if set.len() >= 64 {
                set.join_next()
                    .await
                    .expect("a task")
                    .expect("pipeline create");
            }
            let body = serde_json::json!({"name": format!("flow-{i:05}"), "steps": [
                {"job": format!("job-{i:06}")},
                {"job": format!("job-{:06}", i + 1), "depends_on": [format!("job-{i:06}")]},
            ]});
            set.spawn(post("/v1/pipelines", body));
        }
        while let Some(r) = set.join_next().await {
            r.expect("pipeline create");
        }
    });
    let setup = setup.elapsed();
    let mem = proc_sample(&server.pid().to_string());
    println!(
        "list load: {jobs} jobs and {pipelines} pipelines created in {} ({:.0}/s); server RSS {} MiB; \
         {rounds} requests per case; {}; load average {}",
        fmt_dur(setup),
        (jobs + pipelines) as f64 / setup.as_secs_f64(),
        mem.rss_kib / 1024,
        bin.display(),
        loadavg()
    );

    let middle = format!("J{}", jobs / 2);
    let last_name = format!("job-{:06}", jobs - 1);
    let cases: Vec<(String, String, usize)> = vec![
        (
            "jobs, first page of 100".into(),
            "/v1/jobs?limit=100".into(),
            rounds,
        ),
        (
            "jobs, a middle page of 100".into(),
            format!("/v1/jobs?limit=100&cursor={middle}"),
            rounds,
        ),
        (
            "jobs, name filter matching one (whole scan)".into(),
            format!("/v1/jobs?limit=100&name={last_name}"),
            rounds,
        ),
        (
            "jobs, status=never, page of 100".into(),
            "/v1/jobs?limit=100&status=never".into(),
            rounds,
        ),
        (
            "pipelines, first page of 100".into(),
            "/v1/pipelines?limit=100".into(),
            rounds,
        ),
        (
            "pipelines, name filter matching one (whole scan)".into(),
            format!("/v1/pipelines?limit=100&name=flow-{:05}", pipelines - 1),
            rounds,
        ),
        (
            "jobs, the whole list unpaged (comparison)".into(),
            "/v1/jobs".into(),
            rounds.div_ceil(10),
        ),
    ];
    println!(
        "{:<50} {:>10} {:>10} {:>10} {:>12}",
        "case", "p50", "p99", "max", "items"
    );
    rt.block_on(async {
        for (what, path, n) in cases {
            let mut times = Vec::with_capacity(n);
            let mut items = 0;
            for _ in 0..n {
                let start = Instant::now();
                let resp = client
                    .get(format!("{base}{path}"))
                    .header("Authorization", &auth)
                    .send()
                    .await
                    .expect("GET");
                assert!(resp.status().is_success(), "{path}: {}", resp.status());
                let body: Vec<serde_json::Value> = resp.json().await.expect("a JSON array");
                times.push(start.elapsed());
                items = body.len();
            }
            times.sort();
            println!(
                "{what:<50} {:>10} {:>10} {:>10} {items:>12}",
                fmt_dur(percentile(&times, 0.5)),
                fmt_dur(percentile(&times, 0.99)),
                fmt_dur(*times.last().expect("a round")),
            );
        }
    });
}
