//! One real `windflow server` process on 127.0.0.1, for the benches that measure a server
//! from the outside (`agent_fanout`, `dispatch_latency`): starting it, its API with the
//! bootstrap admin token, and what `/proc` says of its CPU time and memory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cluster::{
    Procs, START_DEADLINE, free_port, free_udp_port, http, log_tail, spawn_logged, try_wait_until,
    wait_until,
};

/// A single-server cluster: data in `dir/s1`, log in `dir/s1.log`.
pub struct SingleServer {
    pub dir: PathBuf,
    pub http: SocketAddr,
    pub quic: SocketAddr,
    /// The bootstrap admin token, for `Authorization: Bearer`.
    pub token: String,
    procs: Procs,
}

impl SingleServer {
    /// Starts `bin server` on fresh ports with its rate limit lifted (the benches drive it
    /// from one token); returns once it is ready.
    pub fn start(bin: &Path, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("server dir");
        let http_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let quic = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let mut procs = Procs::new(1);
        let log = dir.join("s1.log");
        let child = spawn_logged(
            Command::new(bin)
                .args(["server", "--name", "s1", "--data-dir"])
                .arg(dir.join("s1"))
                .args(["--http-addr", &http_addr.to_string()])
                .args(["--quic-addr", &quic.to_string()])
                .args(["--rate-limit", "1000000", "--rate-burst", "1000000"])
                .env("HOME", dir),
            &log,
        );
        procs.set(0, child);
        let token_file = dir.join("s1/bootstrap-token");
        wait_until("the bootstrap token", START_DEADLINE, || {
            token_file.exists()
        });
        let token = std::fs::read_to_string(&token_file)
            .expect("token")
            .trim()
            .to_owned();
        let ready = try_wait_until(START_DEADLINE, || {
            http(http_addr, "GET", "/readyz", "").is_some_and(|(c, _)| c == 200)
        });
        assert!(ready, "server not ready:\n{}", log_tail(&log, 30));
        SingleServer {
            dir: dir.to_owned(),
            http: http_addr,
            quic,
            token,
            procs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.procs.pid(0).expect("the server runs")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("s1.log")
    }

    /// The server's data directory (its CA is in `ca/`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("s1")
    }

    /// One authenticated request: status and body.
    pub fn api(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect_timeout(&self.http, Duration::from_secs(2)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .ok()?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.http,
            self.token,
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

    /// A gauge or counter from `/metrics`, by its exact name (no labels).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = http(self.http, "GET", "/metrics", "").filter(|(c, _)| *c == 200)?;
        text.lines()
            .filter_map(|l| l.strip_prefix(name))
            .find_map(|rest| rest.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// CPU time and memory of a process, from `/proc/<pid>/stat` and `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// User plus system CPU time.
    pub cpu: Duration,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
}

/// Clock ticks per second, as `getconf CLK_TCK` says (100 on Linux unless told otherwise).
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Samples `pid` (`"self"` for this process).
pub fn proc_sample(pid: &str) -> ProcSample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after `comm`.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let hz = clock_ticks();
    ProcSample {
        cpu: Duration::from_millis(ticks * 1000 / hz),
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        threads: kib("Threads:"),
    }
}

/// `WINDFLOW_AGENT_BIN`, else the release `windflow-agent` binary, built if it is not there.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WINDFLOW_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let bin = crate::cluster::target_dir().join("release/windflow-agent");
    if !bin.exists() {
        eprintln!("building {}", bin.display());
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "-p",
                "windflow-agent",
                "--bin",
                "windflow-agent",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building windflow-agent failed");
    }
    bin
}
