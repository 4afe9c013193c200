//! The harness of Windflow's end-to-end suites: starts the real `windflow` binary as a
//! process on 127.0.0.1 ports it picks, with its own `HOME` and data dir, and waits on
//! conditions with deadlines.

pub mod agent;
pub mod cluster;
pub mod docker;
pub mod fleet;
pub mod history;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

/// Server flags that lift the per-token rate limit (50/s by default), for load tests that
/// write thousands of jobs with the one bootstrap token.
pub const UNLIMITED_TOKEN_RATE: &[&str] = &["--rate-limit", "1000000", "--rate-burst", "1000000"];

/// How long a test waits for a server to come up.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// The `windflow` binary of this build, built on first use if `cargo test` has not.
pub fn windflow_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built_bin("windflow-control", "windflow"))
        .clone()
}

/// Binary `name` of `package` next to this test's target dir, built if it is missing.
pub(crate) fn built_bin(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(name);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the {name} binary failed");
    }
    bin
}

/// A free TCP port on 127.0.0.1 (free when asked; the OS may reuse it later).
pub fn free_tcp_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a TCP port")
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("binding a UDP port")
}

/// Polls `check` until it returns `Some`, or fails after `deadline`.
pub fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// `windflow dev` running as a child process.
pub struct DevServer {
    child: Option<Child>,
    /// The `HOME` of the server and of every CLI call made through [`DevServer::cli`].
    pub home: TempDir,
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    pub token: String,
}

impl DevServer {
    /// Starts `windflow dev` with a data dir of its own.
    pub fn start() -> anyhow::Result<Self> {
        let home = tempfile::tempdir()?;
        let data_dir = home.path().join("data");
        Self::start_in(home, data_dir)
    }

    /// Starts `windflow dev` on `data_dir` (kept between starts), with `home` as `HOME`.
    pub fn start_in(home: TempDir, data_dir: PathBuf) -> anyhow::Result<Self> {
        let http_addr = free_tcp_addr();
        let quic_addr = free_udp_addr();
        let log = std::fs::File::create(home.path().join(format!("dev-{}.log", http_addr.port())))?;
        let child = Command::new(windflow_bin())
            .args(["dev", "--data-dir"])
            .arg(&data_dir)
            .args([
                "--http-addr",
                &http_addr.to_string(),
                "--quic-addr",
                &quic_addr.to_string(),
            ])
            .env("HOME", home.path())
            .env_remove("WINDFLOW_ADDR")
            .env_remove("WINDFLOW_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting windflow dev")?;
        let mut server = DevServer {
            child: Some(child),
            home,
            data_dir,
            http_addr,
            quic_addr,
            token: String::new(),
        };
        server.token = server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> anyhow::Result<String> {
        let token_file = self.data_dir.join("bootstrap-token");
        let addr = self.http_addr;
        let child = self.child.as_mut().expect("started");
        wait_for("windflow dev to be ready", START_DEADLINE, || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(anyhow::anyhow!(
                    "windflow dev exited early with {status}"
                )));
            }
            let ready = http_status(addr, "/readyz").ok()? == 200;
            let token = std::fs::read_to_string(&token_file).ok()?;
            ready.then(|| Ok(token.trim().to_owned()))
        })
        .and_then(|r| r)
        .with_context(|| format!("log:\n{}", self.log()))
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        let path = self
            .home
            .path()
            .join(format!("dev-{}.log", self.http_addr.port()));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Runs the `windflow` CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(windflow_bin())
            .args(args)
            .env("HOME", self.home.path())
            .env("WINDFLOW_ADDR", self.url())
            .env("WINDFLOW_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .expect("running the windflow CLI")
    }

    /// Kills the server with SIGKILL: nothing is flushed on the way out.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
            let status = wait_for("windflow dev to exit", Duration::from_secs(30), || {
                child.try_wait().ok().flatten()
            });
            if status.is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
            status?;
        }
        Ok(())
    }

    /// Stops the process but keeps `HOME` and the data dir, to start again on them.
    pub fn into_parts(mut self) -> (TempDir, PathBuf) {
        self.kill();
        let data_dir = std::mem::take(&mut self.data_dir);
        let home = std::mem::replace(&mut self.home, tempfile::tempdir().expect("tempdir"));
        (home, data_dir)
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The status code of a plain `GET` on the server, without any client library.
pub fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let code = std::str::from_utf8(&head[9..12])?.parse()?;
    Ok(code)
}

/// A CLI call's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CLI call's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An HTTP/1.1 request with a JSON body, answered with the status and the JSON body
/// (or `Value::String` of the body when it is not JSON).
pub fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    http_json_within(addr, method, path, token, body, ANSWER_WITHIN)
}

/// How long the request helpers wait for an answer by default.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// An HTTP answer: status, headers (names lowercased) and the body as JSON (or a string).
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub json: serde_json::Value,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// [`http_json`] that keeps the answer's headers.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<HttpAnswer> {
    exchange(addr, method, path, token, body, ANSWER_WITHIN)
}

/// [`http_json`] for a request that may take longer than 30 s to answer (a membership
/// change that waits for a new server to install a large snapshot).
pub fn http_json_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    answer_within: Duration,
) -> anyhow::Result<(u16, serde_json::Value)> {
    exchange(addr, method, path, token, body, answer_within).map(|a| (a.status, a.json))
}

/// One HTTP/1.1 request on its own connection, read to the end.
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    answer_within: Duration,
) -> anyhow::Result<HttpAnswer> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(answer_within))?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, payload) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head.get(9..12).context("no status line")?.parse()?;
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let json = serde_json::from_str(payload)
        .unwrap_or_else(|_| serde_json::Value::String(payload.to_owned()));
    Ok(HttpAnswer {
        status,
        headers,
        json,
    })
}

/// One HTTPS request to `https://ADDR{path}` with reqwest, trusting only `ca_pem` when
/// given (else the system's roots, which know no Windflow CA). An error is the whole
/// chain, so a refused certificate says why.
pub fn https_request(
    addr: SocketAddr,
    ca_pem: Option<&str>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<HttpAnswer> {
    windflow_certs::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut builder = reqwest::Client::builder().timeout(ANSWER_WITHIN);
        if let Some(pem) = ca_pem {
            builder =
                builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(pem.as_bytes())?);
        }
        let client = builder.build()?;
        let mut req = client.request(method.parse()?, format!("https://{addr}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let res = req.send().await.map_err(|e| {
            let mut chain = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                chain.push_str(&format!(": {s}"));
                source = s.source();
            }
            anyhow::anyhow!(chain)
        })?;
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let text = res.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok(HttpAnswer {
            status,
            headers,
            json,
        })
    })
}

/// Whether a process is gone for good: no such pid, or a zombie waiting to be reaped.
pub fn process_is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// A log without its ANSI colour codes, so that `field=value` can be searched for.
pub fn strip_ansi(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters… final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
