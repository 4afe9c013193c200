//! Real `windflow server` processes on 127.0.0.1, for the benches that drive a cluster over
//! HTTP (`replicated_writes`, `footprint`): starting, killing and restarting members, and the
//! small blocking HTTP and environment helpers around them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to come up (or back) healthy.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// The value of the environment variable `name`, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The workspace's `target/` (or `CARGO_TARGET_DIR`): bench data goes there, on the
/// workspace's disk rather than a tmpfs, so fsync means something.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// `WINDFLOW_BIN`, else the release `windflow` binary, built if it is not there.
pub fn windflow_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WINDFLOW_BIN") {
        return PathBuf::from(p);
    }
    let bin = target_dir().join("release/windflow");
    if !bin.exists() {
        eprintln!("building {}", bin.display());
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "-p",
                "windflow-control",
                "--bin",
                "windflow",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building windflow failed");
    }
    bin
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a TCP port")
        .port()
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("binding a UDP port")
        .port()
}

/// Polls `check` every 50 ms; panics naming `what` after `deadline`.
pub fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    assert!(
        try_wait_until(deadline, &mut check),
        "timed out waiting for {what}"
    );
}

/// Polls `check` every 50 ms until it holds (true), or gives up after `deadline` (false).
pub fn try_wait_until(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !check() {
        if start.elapsed() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A blocking one-shot HTTP/1.1 request: status and body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

/// One keep-alive HTTP/1.1 connection per client: a client of its own with at most one idle
/// connection, each request bounded by `timeout`.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1)
        .timeout(timeout)
        .tcp_nodelay(true)
        .build()
        .expect("reqwest client")
}

/// A 256-byte shell command that differs per key (the value every bench write carries).
pub fn value_for(key: &str) -> String {
    const VALUE_LEN: usize = 256;
    let mut v = format!("echo {key} ");
    while v.len() < VALUE_LEN {
        v.push('x');
    }
    v.truncate(VALUE_LEN);
    v
}

/// `1.23 s`, `4.56 ms` or `789 µs`.
pub fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// The `p` quantile (0..=1) of sorted durations, zero when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Child processes, killed (SIGKILL) and reaped when dropped, also on panic.
pub struct Procs {
    children: Vec<Option<Child>>,
}

impl Procs {
    /// `n` empty slots.
    pub fn new(n: usize) -> Self {
        Procs {
            children: (0..n).map(|_| None).collect(),
        }
    }

    /// Puts `child` in slot `i` (killing whatever ran there).
    pub fn set(&mut self, i: usize, child: Child) {
        self.kill(i);
        self.children[i] = Some(child);
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    /// The process ID in slot `i`, if one runs there.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    /// Kill -9 and reap the process in slot `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// Starts `cmd` with stdout and stderr appended to `log`.
pub fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

/// Three `windflow server` processes formed from a static `--peers` list: server `i` is
/// named `s{i+1}`, keeps its data in `dir/s{i+1}` and logs to `dir/s{i+1}.log`.
pub struct Windflow {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub http: Vec<SocketAddr>,
    pub quic: Vec<SocketAddr>,
    /// The bootstrap admin token, for `Authorization: Bearer`.
    pub token: String,
    procs: Procs,
}

impl Windflow {
    /// `windflow ca init`, then 3 servers; returns once all are ready and a leader is known.
    pub fn start(bin: &Path, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("windflow dir");
        let out = Command::new(bin)
            .args(["ca", "init", "--dir"])
            .arg(dir.join("ca"))
            .output()
            .expect("windflow ca init");
        assert!(out.status.success(), "ca init: {out:?}");
        let http: Vec<SocketAddr> = (0..3)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        let quic: Vec<SocketAddr> = (0..3)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_udp_port())))
            .collect();
        let mut wf = Windflow {
            dir: dir.to_owned(),
            bin: bin.to_owned(),
            http,
            quic,
            token: String::new(),
            procs: Procs::new(3),
        };
        for i in 0..3 {
            wf.restart(i);
        }
        let token_file = dir.join("s1/bootstrap-token");
        wait_until("the windflow bootstrap token", START_DEADLINE, || {
            token_file.exists()
        });
        wf.token = std::fs::read_to_string(&token_file)
            .expect("token")
            .trim()
            .to_owned();
        wf.wait_healthy();
        wf
    }

    /// Server `i`'s name, `s{i+1}`.
    pub fn name(i: usize) -> String {
        format!("s{}", i + 1)
    }

    /// Server `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(Self::name(i))
    }

    /// Server `i`'s stdout and stderr.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", Self::name(i)))
    }

    /// Server `i`'s process ID, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs.pid(i)
    }

    /// `GET /metrics` of server `i`.
    pub fn metrics(&self, i: usize) -> Option<String> {
        http(self.http[i], "GET", "/metrics", "")
            .filter(|(c, _)| *c == 200)
            .map(|(_, m)| m)
    }

    /// The one running server whose `/metrics` says it leads, if exactly one does.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..3)
            .filter(|&i| self.procs.is_running(i))
            .filter(|&i| {
                self.metrics(i)
                    .is_some_and(|m| m.lines().any(|l| l.trim() == "windflow_raft_is_leader 1"))
            })
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// Kill -9 server `i`.
    pub fn kill(&mut self, i: usize) {
        self.procs.kill(i);
    }

    /// Starts server `i` (again) on its data directory and addresses.
    pub fn restart(&mut self, i: usize) {
        let peers = (0..3)
            .map(|j| format!("s{}={}", j + 1, self.quic[j]))
            .collect::<Vec<_>>()
            .join(",");
        let name = Self::name(i);
        let child = spawn_logged(
            Command::new(&self.bin)
                .args(["server", "--name", &name, "--data-dir"])
                .arg(self.data_dir(i))
                .args(["--http-addr", &self.http[i].to_string()])
                .args(["--quic-addr", &self.quic[i].to_string()])
                // The load comes from one token: lift its rate limit (50/s by default).
                .args(["--rate-limit", "1000000", "--rate-burst", "1000000"])
                .args(["--peers", &peers, "--ca-dir"])
                .arg(self.dir.join("ca"))
                .env("HOME", &self.dir),
            &self.log_path(i),
        );
        self.procs.set(i, child);
    }

    /// Waits until every server answers `/readyz` with 200 and a leader is known; on
    /// timeout prints each server's log tail and panics.
    pub fn wait_healthy(&self) {
        let ready = |a: SocketAddr| http(a, "GET", "/readyz", "").map(|(c, _)| c);
        let ok = try_wait_until(START_DEADLINE, || {
            self.http.iter().all(|&a| ready(a) == Some(200)) && self.leader().is_some()
        });
        if !ok {
            for i in 0..3 {
                eprintln!(
                    "--- {}: /readyz {:?}, running {} ---\n{}",
                    Self::name(i),
                    ready(self.http[i]),
                    self.procs.is_running(i),
                    log_tail(&self.log_path(i), 30)
                );
            }
            panic!("timed out waiting for windflow ready with a leader");
        }
    }
}
