//! Storage and memory footprint of a 3-server Windflow cluster under a million writes.
//!
//! Starts 3 `windflow server` processes on 127.0.0.1 (data on the workspace's disk, fsync
//! on, log compaction on: each server snapshots its state every 10,000 log entries and
//! purges the log behind it), then drives `FOOTPRINT_WRITES` acknowledged writes through
//! them: N clients, each a task doing sequential `POST /v1/jobs` (a unique 12-byte name and
//! a 256-byte command) over its own keep-alive HTTP/1.1 connection, spread round-robin over
//! the 3 servers. At each checkpoint the clients stop, the servers are given time to apply
//! the same index, and the bench reports per server: the bytes of the data dir and of its
//! `raft/` sled dir (file sizes summed over a walk; allocated blocks too), the sled files
//! inside it, RSS (VmRSS) and peak RSS (VmHWM), and raft's log and snapshot indexes; for the
//! cluster: writes/s and latency of the segment, and the logical size of the state.
//!
//! The logical size is the state as a backup file (`GET /v1/cluster/snapshot`): every key
//! and value of the replicated state, bincode-encoded. It is fetched for the empty cluster
//! and after the first 1,000 writes; the bytes per job from those two give the logical
//! size at each checkpoint, and one more backup at the end checks the estimate.
//!
//! `cargo bench -p windflow-benches --bench footprint`
//!
//! Environment: `FOOTPRINT_WRITES` (default 1,000,000), `FOOTPRINT_CLIENTS` (default 256),
//! `FOOTPRINT_CHECKPOINT` (writes between checkpoints, default 250,000), `WINDFLOW_BIN`
//! (default `target/release/windflow`, built if missing), `FOOTPRINT_KEEP` (set: keep the
//! servers' data dirs and logs under `target/footprint-*` instead of deleting them).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use windflow_benches::cluster::{
    Windflow, env_or, fmt_dur, http_client, loadavg, percentile, target_dir, value_for,
    windflow_bin,
};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A write that fails is tried again under a new name, 100 ms later, at most this many
/// times (a minute and more).
const ATTEMPTS_PER_WRITE: usize = 600;
/// No segment between checkpoints may take longer.
const SEGMENT_DEADLINE: Duration = Duration::from_secs(3600);
/// Writes before the second backup, which gives the bytes per job.
const CALIBRATION_WRITES: u64 = 1000;
/// How long the servers get to apply the same index before a checkpoint is measured.
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);
const MIB: f64 = 1024.0 * 1024.0;

fn main() {
    // reqwest is built with rustls-no-provider; the bench speaks plain HTTP, but building a
    // client still wants a default provider.
    windflow_certs::install_crypto_provider();
    let total: u64 = env_or("FOOTPRINT_WRITES", 1_000_000);
    let clients: usize = env_or("FOOTPRINT_CLIENTS", 256);
    let every: u64 = env_or::<u64>("FOOTPRINT_CHECKPOINT", 250_000).max(1);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let root = tempfile::Builder::new()
        .prefix("footprint-")
        .tempdir_in(target_dir())
        .expect("temp dir");
    let bin = windflow_bin();
    eprintln!("starting 3 windflow servers ({})", bin.display());
    let wf = Windflow::start(&bin, &root.path().join("windflow"));
    let token = Arc::new(wf.token.clone());
    let pool: Vec<reqwest::Client> =
        rt.block_on(async { (0..clients).map(|_| http_client(REQUEST_TIMEOUT)).collect() });

    let mut checkpoints: Vec<u64> = vec![CALIBRATION_WRITES.min(total)];
    checkpoints.extend((1..).map(|k| k * every).take_while(|&c| c < total));
    checkpoints.push(total);
    checkpoints.dedup();
    checkpoints.retain(|&c| c > 0);

    let empty = rt
        .block_on(backup_bytes(&wf, &token))
        .expect("backup of the empty cluster");
    let names = AtomicU64::new(0);
    let mut done = 0u64;
    let mut per_job: Option<f64> = None;
    let mut rows: Vec<Checkpoint> = Vec::new();
    let started = Instant::now();
    let load_before = loadavg();
    for &cp in &checkpoints {
        let segment = rt.block_on(write_segment(&wf.http, &token, &pool, cp - done, &names));
        done += segment.ok;
        let settled = settle(&wf);
        if per_job.is_none() && done > 0 {
            let now = rt
                .block_on(backup_bytes(&wf, &token))
                .expect("backup after the calibration writes");
            per_job = Some((now - empty) as f64 / done as f64);
            eprintln!(
                "backup: {empty} bytes empty, {now} bytes after {done} writes: {:.1} bytes per job",
                per_job.unwrap_or_default()
            );
        }
        let logical = empty as f64 + per_job.unwrap_or_default() * done as f64;
        let row = Checkpoint {
            done,
            elapsed: started.elapsed(),
            segment,
            settled,
            logical,
            load: loadavg(),
            servers: (0..3).map(|i| measure_server(&wf, i)).collect(),
        };
        eprintln!("{row}");
        rows.push(row);
        if done < cp {
            eprintln!("stopping early: {} of {cp} writes acknowledged", done);
            break;
        }
    }
    let load_after = loadavg();
    // The exact logical size at the end, after every other figure was taken (the backup
    // holds a copy of the state in the server's memory while it is built).
    let last = rt.block_on(backup_bytes(&wf, &token));
    let raft_dirs: Vec<_> = (0..3).map(|i| wf.data_dir(i).join("raft")).collect();
    drop(wf);
    if std::env::var_os("FOOTPRINT_KEEP").is_some() {
        eprintln!(
            "keeping the servers' data and logs in {}",
            root.keep().display()
        );
    }
    eprintln!("load average before the writes: {load_before}; after: {load_after}");
    print_report(&rows, last, clients, per_job.unwrap_or_default(), empty);
    // What the bytes on disk hold: with the servers stopped, each sled store is opened and
    // the keys and values of each of its trees are summed.
    println!();
    println!(
        "Live bytes in each server's sled trees (keys + values), after the servers stopped, \
         against raft/ on disk at the last checkpoint:"
    );
    println!();
    println!(
        "| server | state | raft_log | raft_snapshot tree | state-snapshot file | other | live total \
         | raft/ on disk | on disk ÷ live |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, dir) in raft_dirs.iter().enumerate() {
        let on_disk = rows.last().map_or(0, |r| r.servers[i].raft.len);
        match tree_bytes(dir) {
            Ok(trees) => {
                let get = |name: &str| trees.iter().find(|t| t.name == name);
                let cell = |t: Option<&TreeBytes>| {
                    t.map_or_else(
                        || "–".into(),
                        |t| {
                            let range = match (t.first_index, t.last_index) {
                                (Some(a), Some(b)) => format!(", index {a}–{b}"),
                                _ => String::new(),
                            };
                            format!("{} MiB ({} keys{range})", mib(t.bytes), t.keys)
                        },
                    )
                };
                let other: u64 = trees
                    .iter()
                    .filter(|t| !["state", "raft_log", "raft_snapshot"].contains(&t.name.as_str()))
                    .map(|t| t.bytes)
                    .sum();
                let file = std::fs::metadata(dir.join("state-snapshot")).map_or(0, |m| m.len());
                let live = trees.iter().map(|t| t.bytes).sum::<u64>() + file;
                println!(
                    "| s{} | {} | {} | {} | {} MiB | {} MiB | {} MiB | {} MiB | {:.1}× |",
                    i + 1,
                    cell(get("state")),
                    cell(get("raft_log")),
                    cell(get("raft_snapshot")),
                    mib(file),
                    mib(other),
                    mib(live),
                    mib(on_disk),
                    on_disk as f64 / live.max(1) as f64,
                );
            }
            Err(e) => println!("| s{} | sled: {e} | | | | | | | |", i + 1),
        }
    }
}

/// The keys and bytes of one sled tree.
struct TreeBytes {
    name: String,
    keys: u64,
    bytes: u64,
    /// For `raft_log`: the first and last log index held.
    first_index: Option<u64>,
    last_index: Option<u64>,
}

/// Opens the sled store at `dir` (no server may hold it) and sums each tree.
fn tree_bytes(dir: &Path) -> sled::Result<Vec<TreeBytes>> {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(64 * 1024 * 1024)
        .open()?;
    let mut out = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        let (mut keys, mut bytes) = (0u64, 0u64);
        for item in tree.iter() {
            let (k, v) = item?;
            keys += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        let name = String::from_utf8_lossy(&name).into_owned();
        let index = |kv: Option<(sled::IVec, sled::IVec)>| {
            let k = kv?.0;
            Some(u64::from_be_bytes(k.as_ref().try_into().ok()?))
        };
        let (first_index, last_index) = if name == "raft_log" {
            (index(tree.first()?), index(tree.last()?))
        } else {
            (None, None)
        };
        out.push(TreeBytes {
            name,
            keys,
            bytes,
            first_index,
            last_index,
        });
    }
    Ok(out)
}

/// Acknowledged writes of one segment, and how long it took.
struct Segment {
    ok: u64,
    /// Failed attempts (each retried under a new name).
    errors: u64,
    /// Writes given up after [`ATTEMPTS_PER_WRITE`] attempts.
    abandoned: u64,
    secs: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Segment {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }
}

/// `count` acknowledged writes from `pool.len()` clients, client `c` talking to server
/// `c % 3`. Each write is a job with a unique name drawn from `names`.
async fn write_segment(
    addrs: &[SocketAddr],
    token: &Arc<String>,
    pool: &[reqwest::Client],
    count: u64,
    names: &AtomicU64,
) -> Segment {
    let slots = Arc::new(AtomicU64::new(0));
    // The name counter outlives the segment; hand each task a shared handle to its value.
    let next_name = Arc::new(AtomicU64::new(names.load(Ordering::Relaxed)));
    let start = Instant::now();
    let deadline = start + SEGMENT_DEADLINE;
    let mut tasks = Vec::with_capacity(pool.len());
    for (c, client) in pool.iter().enumerate() {
        let (client, token) = (client.clone(), token.clone());
        let (slots, next_name) = (slots.clone(), next_name.clone());
        let addr = addrs[c % addrs.len()];
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut errors, mut abandoned) = (0u64, 0u64);
            while slots.fetch_add(1, Ordering::Relaxed) < count {
                if Instant::now() >= deadline {
                    break;
                }
                let mut acked = false;
                for _ in 0..ATTEMPTS_PER_WRITE {
                    let key = format!("fp-{:09}", next_name.fetch_add(1, Ordering::Relaxed));
                    let t0 = Instant::now();
                    if create_job(&client, addr, &token, &key).await {
                        lat.push(t0.elapsed());
                        acked = true;
                        break;
                    }
                    errors += 1;
                    if Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if !acked {
                    abandoned += 1;
                }
            }
            (lat, errors, abandoned)
        }));
    }
    let mut all = Vec::new();
    let (mut errors, mut abandoned) = (0, 0);
    for t in tasks {
        let (lat, e, a) = t.await.expect("client task");
        all.extend(lat);
        errors += e;
        abandoned += a;
    }
    let secs = start.elapsed().as_secs_f64();
    names.store(next_name.load(Ordering::Relaxed), Ordering::Relaxed);
    all.sort_unstable();
    Segment {
        ok: all.len() as u64,
        errors,
        abandoned,
        secs,
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        max: all.last().copied().unwrap_or_default(),
    }
}

/// `POST /v1/jobs` with a 256-byte command; true if created (201).
async fn create_job(client: &reqwest::Client, addr: SocketAddr, token: &str, name: &str) -> bool {
    let body = format!(
        r#"{{"name":"{name}","command":"{}"}}"#,
        value_for(name) // letters, digits, '-' and spaces: nothing to escape
    );
    let req = client
        .post(format!("http://{addr}/v1/jobs"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body);
    match req.send().await {
        Ok(resp) => {
            let ok = resp.status() == reqwest::StatusCode::CREATED;
            // Read the body so the connection goes back to the pool.
            let _ = resp.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

/// The size of a backup (`GET /v1/cluster/snapshot`) from the leader, read as a stream.
async fn backup_bytes(wf: &Windflow, token: &str) -> Option<u64> {
    let leader = wf.leader().unwrap_or(0);
    let client = http_client(Duration::from_secs(600));
    let mut resp = client
        .get(format!("http://{}/v1/cluster/snapshot", wf.http[leader]))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        eprintln!("backup: {}", resp.status());
        return None;
    }
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await.ok()? {
        n += chunk.len() as u64;
    }
    Some(n)
}

/// A numeric sample of a `/metrics` text, by metric name.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Waits (bounded) until the three servers report the same last-applied index; returns how
/// long that took, or `None` if they had not converged by the deadline.
fn settle(wf: &Windflow) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < SETTLE_DEADLINE {
        let applied: Vec<Option<f64>> = (0..3)
            .map(|i| {
                wf.metrics(i)
                    .and_then(|m| metric(&m, "windflow_raft_last_applied_index"))
            })
            .collect();
        if applied.iter().all(Option::is_some) && applied.windows(2).all(|w| w[0] == w[1]) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Bytes of the files under a directory: their lengths, and the blocks they occupy.
#[derive(Default, Clone, Copy)]
struct DiskUse {
    len: u64,
    allocated: u64,
}

impl std::ops::AddAssign for DiskUse {
    fn add_assign(&mut self, o: DiskUse) {
        self.len += o.len;
        self.allocated += o.allocated;
    }
}

/// Walks `path` (not following symlinks), at most 64 levels deep.
fn disk_use(path: &Path) -> DiskUse {
    fn walk(path: &Path, depth: usize, total: &mut DiskUse) {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if meta.is_dir() {
            if depth >= 64 {
                return;
            }
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), depth + 1, total);
            }
        } else if meta.is_file() {
            *total += DiskUse {
                len: meta.len(),
                allocated: meta.blocks() * 512,
            };
        }
    }
    let mut total = DiskUse::default();
    walk(path, 0, &mut total);
    total
}

/// One server at a checkpoint.
struct ServerFigures {
    data_dir: DiskUse,
    raft: DiskUse,
    /// The files in `raft/`: sled's `db`, `blobs/` and `snap.*`, and raft's snapshot file
    /// `state-snapshot` (builds before it kept the snapshot in sled, as a blob).
    sled_db: u64,
    sled_blobs: u64,
    sled_snaps: u64,
    snapshot_file: u64,
    rss_kib: Option<u64>,
    hwm_kib: Option<u64>,
    term: Option<f64>,
    last_log: Option<f64>,
    snapshot_index: Option<f64>,
    purged: Option<f64>,
    snapshots: Option<f64>,
    /// The encoded size of this server's last raft snapshot, from its log.
    last_snapshot_bytes: Option<u64>,
}

fn measure_server(wf: &Windflow, i: usize) -> ServerFigures {
    let dir = wf.data_dir(i);
    let raft = dir.join("raft");
    let (mut sled_db, mut sled_blobs, mut sled_snaps, mut snapshot_file) = (0, 0, 0, 0);
    for entry in std::fs::read_dir(&raft).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let size = disk_use(&entry.path()).len;
        if name == "db" {
            sled_db += size;
        } else if name == "blobs" {
            sled_blobs += size;
        } else if name.starts_with("snap.") {
            sled_snaps += size;
        } else if name.starts_with("state-snapshot") {
            snapshot_file += size;
        }
    }
    let status = wf
        .pid(i)
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .unwrap_or_default();
    let kib = |field: &str| {
        status.lines().find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
    };
    let metrics = wf.metrics(i).unwrap_or_default();
    let m = |name: &str| metric(&metrics, name);
    let log = strip_ansi(&std::fs::read_to_string(wf.log_path(i)).unwrap_or_default());
    let last_snapshot_bytes = log
        .lines()
        .rev()
        .filter(|l| l.contains("snapshot built"))
        .find_map(|l| {
            let rest = &l[l.find("bytes=")? + "bytes=".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        });
    ServerFigures {
        data_dir: disk_use(&dir),
        raft: disk_use(&raft),
        sled_db,
        sled_blobs,
        sled_snaps,
        snapshot_file,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        term: m("windflow_raft_term"),
        last_log: m("windflow_raft_last_log_index"),
        snapshot_index: m("windflow_raft_snapshot_index"),
        purged: m("windflow_raft_purged_index"),
        snapshots: m("windflow_raft_snapshots_total").or_else(|| m("windflow_raft_snapshots")),
        last_snapshot_bytes,
    }
}

/// `text` without its terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

struct Checkpoint {
    done: u64,
    elapsed: Duration,
    segment: Segment,
    settled: Option<Duration>,
    logical: f64,
    load: String,
    servers: Vec<ServerFigures>,
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MIB)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "?".into(), |v| v.to_string())
}

impl Checkpoint {
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }

    /// `a / b / c` of one figure over the three servers.
    fn each(&self, f: impl Fn(&ServerFigures) -> String) -> String {
        self.servers.iter().map(f).collect::<Vec<_>>().join(" / ")
    }

    fn amplification(&self) -> String {
        self.each(|s| format!("{:.1}×", s.raft.len as f64 / self.logical))
    }
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.segment;
        writeln!(
            f,
            "== {} writes acknowledged, {:.0} s in: segment {:.0} writes/s (p50 {}, p99 {}, max \
             {}, {} failed attempts, {} abandoned), overall {:.0} writes/s; servers applied the \
             same index after {}; load {}",
            self.done,
            self.elapsed.as_secs_f64(),
            s.rate(),
            fmt_dur(s.p50),
            fmt_dur(s.p99),
            fmt_dur(s.max),
            s.errors,
            s.abandoned,
            self.rate(),
            self.settled
                .map_or_else(|| "(not converged)".into(), fmt_dur),
            self.load,
        )?;
        writeln!(
            f,
            "   logical state {} MiB; space amplification raft/ ÷ logical: {}",
            mib(self.logical as u64),
            self.amplification()
        )?;
        for (i, sv) in self.servers.iter().enumerate() {
            writeln!(
                f,
                "   s{}: data dir {} MiB ({} MiB allocated), raft/ {} MiB (db {} MiB, blobs {} \
                 MiB, snap.* {} MiB, state-snapshot {} MiB); RSS {} MiB, peak {} MiB; term {}, last log {}, \
                 snapshot {}, purged {}, snapshots {}, last snapshot {} bytes",
                i + 1,
                mib(sv.data_dir.len),
                mib(sv.data_dir.allocated),
                mib(sv.raft.len),
                mib(sv.sled_db),
                mib(sv.sled_blobs),
                mib(sv.sled_snaps),
                mib(sv.snapshot_file),
                opt(sv.rss_kib.map(|k| k / 1024)),
                opt(sv.hwm_kib.map(|k| k / 1024)),
                opt(sv.term),
                opt(sv.last_log),
                opt(sv.snapshot_index),
                opt(sv.purged),
                opt(sv.snapshots),
                opt(sv.last_snapshot_bytes),
            )?;
        }
        Ok(())
    }
}

fn print_report(rows: &[Checkpoint], last: Option<u64>, clients: usize, per_job: f64, empty: u64) {
    println!();
    println!(
        "Footprint, 3 windflow servers on 127.0.0.1, {clients} clients round-robin, `POST /v1/jobs` \
         with a 256-byte command; logical state = backup size: {empty} bytes empty + \
         {per_job:.1} bytes per job"
    );
    println!();
    println!(
        "| acked writes | writes/s (segment) | writes/s (overall) | p99 (segment) | failed attempts \
         (segment) | raft term | logical state | data dir s1 / s2 / s3 | raft/ s1 / s2 / s3 | raft/ \
         ÷ logical |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let term = r.servers.iter().filter_map(|s| s.term).fold(0.0, f64::max);
        println!(
            "| {} | {:.0} | {:.0} | {} | {} | {term} | {} MiB | {} MiB | {} MiB | {} |",
            r.done,
            r.segment.rate(),
            r.rate(),
            fmt_dur(r.segment.p99),
            r.segment.errors,
            mib(r.logical as u64),
            r.each(|s| mib(s.data_dir.len)),
            r.each(|s| mib(s.raft.len)),
            r.amplification(),
        );
    }
    println!();
    println!(
        "| acked writes | sled db s1 / s2 / s3 | sled blobs s1 / s2 / s3 | state-snapshot s1 / s2 / \
         s3 | RSS s1 / s2 / s3 | peak RSS s1 / s2 / s3 |"
    );
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} MiB | {} MiB | {} MiB | {} MiB | {} MiB |",
            r.done,
            r.each(|s| mib(s.sled_db)),
            r.each(|s| mib(s.sled_blobs)),
            r.each(|s| mib(s.snapshot_file)),
            r.each(|s| opt(s.rss_kib.map(|k| k / 1024))),
            r.each(|s| opt(s.hwm_kib.map(|k| k / 1024))),
        );
    }
    if let (Some(last), Some(r)) = (last, rows.last()) {
        println!();
        println!(
            "Backup at the end: {} MiB for {} writes (estimate {} MiB); raft/ ÷ backup: {}",
            mib(last),
            r.done,
            mib(r.logical as u64),
            r.each(|s| format!("{:.1}×", s.raft.len as f64 / last as f64)),
        );
    }
}
