//! Replicated writes, Windflow against etcd, same run, same machine.
//!
//! Starts 3 `windflow server` processes and a 3-member etcd cluster (the `etcd` on `PATH`),
//! all on 127.0.0.1 with their data on the same disk and fsync on (the defaults of both),
//! then drives each with the same closed-loop workload: N clients, each a task doing
//! sequential writes of a 256-byte value over its own keep-alive HTTP/1.1 connection, for a
//! fixed time per concurrency level. Clients are spread round-robin over the 3 members for
//! both systems (followers forward to the leader in both). Then failover: kill -9 the
//! leader and time until the first acknowledged write on a survivor.
//!
//! `cargo bench -p windflow-benches --bench replicated_writes`
//!
//! Environment: `BENCH_SECS` (seconds per level, default 10), `BENCH_CLIENTS` (default
//! `1,16,256`), `BENCH_FAILOVER_ROUNDS` (default 10, 0 to skip), `WINDFLOW_BIN` (default
//! `target/release/windflow`, built if missing), `ETCD_BIN` (default `etcd`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use windflow_benches::cluster::{
    Procs, START_DEADLINE, Windflow, env_or, fmt_dur, free_port, http, http_client, loadavg,
    percentile, spawn_logged, target_dir, value_for, wait_until, windflow_bin,
};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    // reqwest is built with rustls-no-provider; the bench speaks plain HTTP, but building a
    // client still wants a default provider.
    windflow_certs::install_crypto_provider();
    let secs: u64 = env_or("BENCH_SECS", 10);
    let rounds: usize = env_or("BENCH_FAILOVER_ROUNDS", 10);
    let levels: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,16,256".into())
        .split(',')
        .map(str::trim)
        // An empty list (`BENCH_CLIENTS=`) measures failover alone.
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("BENCH_CLIENTS: comma-separated numbers"))
        .collect();
    let duration = Duration::from_secs(secs);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    // Data on the workspace's disk (not a tmpfs), so fsync means something.
    let root = tempfile::Builder::new()
        .prefix("replicated-writes-")
        .tempdir_in(target_dir())
        .expect("temp dir");

    let windflow_bin = windflow_bin();
    let etcd_bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into());
    ensure_etcd(&etcd_bin);
    let etcd_version = Command::new(&etcd_bin)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        });

    let mut results: Vec<(String, usize, Stats)> = Vec::new();
    let mut failovers: Vec<(String, Vec<Duration>)> = Vec::new();

    // Both clusters run for the whole bench and the levels alternate between them, so
    // load from anything else on the machine falls on both alike.
    eprintln!("starting 3 windflow servers ({})", windflow_bin.display());
    let wf = Windflow::start(&windflow_bin, &root.path().join("windflow"));
    let wf_target = Target::Windflow {
        addrs: wf.http.clone(),
        token: Arc::new(wf.token.clone()),
    };
    let etcd = match &etcd_version {
        None => {
            eprintln!("etcd not found ({etcd_bin}): measuring Windflow alone");
            None
        }
        Some(v) => {
            eprintln!("starting 3 etcd members ({v})");
            Some(Etcd::start(&etcd_bin, &root.path().join("etcd")))
        }
    };
    let load_before = loadavg();
    for &n in &levels {
        let s = rt.block_on(run_level(&wf_target, n, duration, &format!("w{n}")));
        eprintln!("windflow {n:>3} clients: {s}");
        results.push(("Windflow".into(), n, s));
        if let Some(etcd) = &etcd {
            let target = Target::Etcd {
                addrs: etcd.client.clone(),
            };
            let s = rt.block_on(run_level(&target, n, duration, &format!("e{n}")));
            eprintln!("etcd     {n:>3} clients: {s}");
            results.push(("etcd".into(), n, s));
        }
    }
    let load_after = loadavg();
    drop(etcd);
    drop(wf);
    // Failover on fresh clusters: a Windflow member killed after the log has been
    // snapshotted and purged does not start again here ("opening the raft store: ... try
    // to get log at index ... but got None"), so the rounds run before any snapshot.
    if rounds > 0 {
        let mut wf = Windflow::start(&windflow_bin, &root.path().join("windflow-failover"));
        failovers.push(("Windflow".into(), failover(&rt, &mut wf, rounds)));
        drop(wf);
        if etcd_version.is_some() {
            let mut etcd = Etcd::start(&etcd_bin, &root.path().join("etcd-failover"));
            failovers.push(("etcd".into(), failover(&rt, &mut etcd, rounds)));
        }
    }
    eprintln!("load average before the runs: {load_before}; after: {load_after}");

    print_report(
        &results,
        &failovers,
        secs,
        etcd_version.as_deref().unwrap_or("not run"),
    );
}

/// A cluster the failover round can kill a leader of and restart.
trait Cluster {
    fn leader(&self) -> Option<usize>;
    fn kill(&mut self, i: usize);
    fn restart(&mut self, i: usize);
    /// Waits until every member is up and a leader is known.
    fn wait_healthy(&self);
    /// The write target made of every member but `i`.
    fn survivors(&self, i: usize) -> Target;
}

impl Cluster for Windflow {
    fn leader(&self) -> Option<usize> {
        Windflow::leader(self)
    }

    fn kill(&mut self, i: usize) {
        Windflow::kill(self, i);
    }

    fn restart(&mut self, i: usize) {
        Windflow::restart(self, i);
    }

    fn wait_healthy(&self) {
        Windflow::wait_healthy(self);
    }

    fn survivors(&self, i: usize) -> Target {
        Target::Windflow {
            addrs: (0..3).filter(|&j| j != i).map(|j| self.http[j]).collect(),
            token: Arc::new(self.token.clone()),
        }
    }
}

struct Etcd {
    bin: String,
    dir: PathBuf,
    client: Vec<SocketAddr>,
    peer: Vec<SocketAddr>,
    procs: Procs,
}

impl Etcd {
    fn start(bin: &str, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("etcd dir");
        let mut etcd = Etcd {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            client: (0..3)
                .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
                .collect(),
            peer: (0..3)
                .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
                .collect(),
            procs: Procs::new(3),
        };
        for i in 0..3 {
            etcd.restart(i);
        }
        etcd.wait_healthy();
        etcd
    }
}

impl Cluster for Etcd {
    fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..3)
            .filter(|&i| self.procs.is_running(i))
            .filter(|&i| {
                http(self.client[i], "POST", "/v3/maintenance/status", "{}").is_some_and(
                    |(c, body)| {
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                        c == 200
                            && v["leader"].as_str().is_some()
                            && v["leader"] == v["header"]["member_id"]
                    },
                )
            })
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    fn kill(&mut self, i: usize) {
        self.procs.kill(i);
    }

    fn restart(&mut self, i: usize) {
        let cluster = (0..3)
            .map(|j| format!("e{}=http://{}", j + 1, self.peer[j]))
            .collect::<Vec<_>>()
            .join(",");
        let name = format!("e{}", i + 1);
        let client = format!("http://{}", self.client[i]);
        let peer = format!("http://{}", self.peer[i]);
        let child = spawn_logged(
            Command::new(&self.bin)
                .args(["--name", &name, "--data-dir"])
                .arg(self.dir.join(&name))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "windflow-bench"])
                // No metrics listener on a fixed port, no v2 emulation.
                .args(["--log-level", "warn"]),
            &self.dir.join(format!("{name}.log")),
        );
        self.procs.set(i, child);
    }

    fn wait_healthy(&self) {
        wait_until("etcd healthy with a leader", START_DEADLINE, || {
            self.client.iter().all(|&a| {
                http(a, "GET", "/health", "").is_some_and(|(c, b)| c == 200 && b.contains("true"))
            }) && self.leader().is_some()
        });
    }

    fn survivors(&self, i: usize) -> Target {
        Target::Etcd {
            addrs: (0..3).filter(|&j| j != i).map(|j| self.client[j]).collect(),
        }
    }
}

/// Where writes go and how they are spelled.
#[derive(Clone)]
enum Target {
    Windflow {
        addrs: Vec<SocketAddr>,
        token: Arc<String>,
    },
    Etcd {
        addrs: Vec<SocketAddr>,
    },
}

impl Target {
    fn addrs(&self) -> &[SocketAddr] {
        match self {
            Target::Windflow { addrs, .. } | Target::Etcd { addrs } => addrs,
        }
    }

    /// One write of a 256-byte value under the unique `key`; true if acknowledged.
    async fn write(&self, client: &reqwest::Client, addr: SocketAddr, key: &str) -> bool {
        let value = value_for(key);
        let req = match self {
            Target::Windflow { token, .. } => client
                .post(format!("http://{addr}/v1/jobs"))
                .bearer_auth(token.as_str())
                .json(&serde_json::json!({ "name": key, "command": value })),
            Target::Etcd { .. } => {
                client
                    .post(format!("http://{addr}/v3/kv/put"))
                    .json(&serde_json::json!({
                        "key": base64(key.as_bytes()),
                        "value": base64(value.as_bytes()),
                    }))
            }
        };
        match req.send().await {
            Ok(resp) => {
                let ok = resp.status().is_success();
                // Read the body so the connection goes back to the pool.
                let _ = resp.bytes().await;
                ok
            }
            Err(_) => false,
        }
    }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct Stats {
    ok: usize,
    errors: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} writes/s, p50 {}, p99 {}, {} ok, {} errors",
            self.rate(),
            fmt_dur(self.p50),
            fmt_dur(self.p99),
            self.ok,
            self.errors
        )
    }
}

/// `n` clients, each writing sequentially for `duration` after a one-second warm-up whose
/// writes are not counted.
async fn run_level(target: &Target, n: usize, duration: Duration, prefix: &str) -> Stats {
    let warmup = Duration::from_secs(1);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(n);
    for c in 0..n {
        let target = target.clone();
        let addr = target.addrs()[c % target.addrs().len()];
        let prefix = format!("{prefix}-c{c}");
        tasks.push(tokio::spawn(async move {
            let client = http_client(REQUEST_TIMEOUT);
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut seq = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                seq += 1;
                let ok = target
                    .write(&client, addr, &format!("{prefix}-{seq}"))
                    .await;
                let t1 = Instant::now();
                if t0 >= measure_from && t1 <= end {
                    if ok {
                        lat.push(t1 - t0);
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("client task");
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    Stats {
        ok: all.len(),
        errors,
        secs: duration.as_secs_f64(),
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
    }
}

/// Kill -9 the leader, then time until the first write acknowledged by a survivor; a new
/// attempt starts every 10 ms, alternating survivors, so one request stuck on a member
/// without a leader does not hide an earlier success. The killed member is restarted and
/// the cluster is healthy again before the next round.
fn failover(
    rt: &tokio::runtime::Runtime,
    cluster: &mut impl Cluster,
    rounds: usize,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        cluster.wait_healthy();
        // Let a restarted member catch up before it may be killed again.
        std::thread::sleep(Duration::from_secs(1));
        let leader = loop {
            if let Some(l) = cluster.leader() {
                break l;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let target = cluster.survivors(leader);
        let client = rt.block_on(async { http_client(REQUEST_TIMEOUT) });
        let killed = Instant::now();
        cluster.kill(leader);
        let took = rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let mut attempt = 0usize;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tokio::select! {
                    done = rx.recv() => break done.expect("sender kept"),
                    _ = tick.tick() => {
                        assert!(killed.elapsed() < START_DEADLINE, "no write acknowledged after failover");
                        let addrs = target.addrs();
                        let addr = addrs[attempt % addrs.len()];
                        let key = format!("failover-{round}-{attempt}");
                        attempt += 1;
                        let (target, client, tx) = (target.clone(), client.clone(), tx.clone());
                        tokio::spawn(async move {
                            if target.write(&client, addr, &key).await {
                                let _ = tx.send(killed.elapsed());
                            }
                        });
                    }
                }
            }
        });
        eprintln!("failover round {}: {}", round + 1, fmt_dur(took));
        times.push(took);
        cluster.restart(leader);
    }
    cluster.wait_healthy();
    times
}

fn print_report(
    results: &[(String, usize, Stats)],
    failovers: &[(String, Vec<Duration>)],
    secs: u64,
    etcd_version: &str,
) {
    let find = |sys: &str, n: usize| {
        results
            .iter()
            .find(|(s, c, _)| s == sys && *c == n)
            .map(|(_, _, st)| st)
    };
    let mut levels: Vec<usize> = Vec::new();
    for (_, n, _) in results {
        if !levels.contains(n) {
            levels.push(*n);
        }
    }
    println!();
    println!(
        "Replicated writes, 256-byte values, {secs} s per level, 3 members each on 127.0.0.1, \
         clients round-robin over the 3 members; etcd: {etcd_version}"
    );
    println!();
    println!(
        "| clients | Windflow writes/s | Windflow p50 | Windflow p99 | etcd writes/s | etcd p50 | \
         etcd p99 | writes/s Windflow/etcd | p99 Windflow/etcd |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in levels {
        let w = find("Windflow", n);
        let e = find("etcd", n);
        let cells = |s: Option<&Stats>| match s {
            Some(s) => {
                let errs = if s.errors > 0 {
                    format!(" ({} errors)", s.errors)
                } else {
                    String::new()
                };
                format!(
                    "{:.0}{errs} | {} | {}",
                    s.rate(),
                    fmt_dur(s.p50),
                    fmt_dur(s.p99)
                )
            }
            None => "– | – | –".into(),
        };
        let ratios = match (w, e) {
            (Some(w), Some(e)) if e.ok > 0 && e.p99 > Duration::ZERO => format!(
                "{:.2}× | {:.2}×",
                w.rate() / e.rate(),
                w.p99.as_secs_f64() / e.p99.as_secs_f64()
            ),
            _ => "– | –".into(),
        };
        println!("| {n} | {} | {} | {ratios} |", cells(w), cells(e));
    }
    if !failovers.is_empty() {
        println!();
        println!(
            "| failover (kill -9 leader → first acknowledged write) | rounds | median | max |"
        );
        println!("|---|---|---|---|");
        for (sys, times) in failovers {
            let mut t = times.clone();
            t.sort_unstable();
            let median = if t.is_empty() {
                Duration::ZERO
            } else if t.len() % 2 == 1 {
                t[t.len() / 2]
            } else {
                (t[t.len() / 2 - 1] + t[t.len() / 2]) / 2
            };
            println!(
                "| {sys} | {} | {} | {} |",
                t.len(),
                fmt_dur(median),
                fmt_dur(t.last().copied().unwrap_or_default())
            );
        }
    }
}

/// Installs Debian's `etcd-server` when `etcd` is missing (the bench runs as root on the
/// project's machines); a machine without apt has to provide `ETCD_BIN` itself.
fn ensure_etcd(etcd_bin: &str) {
    let present = |bin: &str| {
        Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present(etcd_bin) || etcd_bin != "etcd" {
        return;
    }
    eprintln!("etcd is missing: installing Debian's etcd-server");
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "etcd-server"][..],
    ] {
        let ok = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "apt-get {} failed; install etcd-server or set ETCD_BIN",
            args.join(" ")
        );
    }
    assert!(
        present(etcd_bin),
        "etcd is still missing after installing etcd-server"
    );
}
