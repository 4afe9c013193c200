//! Several `windflow server` processes forming one cluster from a static member list, each
//! on 127.0.0.1 ports picked for it, sharing a CA made with `windflow ca init`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;

use crate::{
    START_DEADLINE, free_tcp_addr, free_udp_addr, http_json, http_json_within, http_status,
    wait_for, windflow_bin,
};

/// One server process of a [`Cluster`].
pub struct Server {
    pub name: String,
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    pub starts: Starts,
    child: Option<Child>,
}

/// How a server of a [`Cluster`] takes its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Starts {
    /// One of the initial member list (`--peers`), with the shared CA.
    Member,
    /// `--join` with the shared CA: waits to be added.
    Joining,
    /// `--join-token TOKEN --join-via ADDR`: no CA files; enrolls, then waits to be added.
    JoiningWithToken { token: String, via: String },
}

impl Server {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    /// What the server has logged, across its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

/// A cluster of `windflow server` processes.
pub struct Cluster {
    pub root: TempDir,
    pub servers: Vec<Server>,
    peers: String,
    ca_dir: PathBuf,
    /// Flags every server of this cluster gets.
    extra_args: Vec<String>,
    /// For a cluster serving HTTPS: the CA (PEM file) its API certificates chain to.
    https_ca: Option<PathBuf>,
}

impl Cluster {
    /// Creates the CA, starts `n` servers named s1…sN, and waits until the cluster has
    /// stored its bootstrap token and every server is ready.
    pub fn start(n: usize) -> anyhow::Result<Self> {
        Self::start_with(n, &[])
    }

    /// [`Cluster::start`] with extra flags for every server (e.g. `--fault-injection`).
    pub fn start_with(n: usize, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_inner(n, extra_args, None)
    }

    /// A cluster whose API is HTTPS (`extra_args` say how: `--tls-from-ca`, or
    /// `--tls-cert`/`--tls-key`), checked ready over HTTPS trusting `ca` (a PEM file),
    /// or the cluster CA when `None`.
    pub fn start_https(n: usize, extra_args: &[&str], ca: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::start_inner(n, extra_args, Some(ca))
    }

    /// The cluster CA certificate (PEM file).
    pub fn ca_cert(&self) -> PathBuf {
        self.ca_dir.join("ca.crt")
    }

    fn start_inner(
        n: usize,
        extra_args: &[&str],
        https: Option<Option<PathBuf>>,
    ) -> anyhow::Result<Self> {
        let root = tempfile::tempdir()?;
        let ca_dir = root.path().join("ca");
        let out = Command::new(windflow_bin())
            .args(["ca", "init", "--dir"])
            .arg(&ca_dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "ca init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let servers: Vec<Server> = (1..=n)
            .map(|i| Server {
                name: format!("s{i}"),
                data_dir: root.path().join(format!("s{i}")),
                http_addr: free_tcp_addr(),
                quic_addr: free_udp_addr(),
                starts: Starts::Member,
                child: None,
            })
            .collect();
        let peers = servers
            .iter()
            .map(|s| format!("{}={}", s.name, s.quic_addr))
            .collect::<Vec<_>>()
            .join(",");
        let extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        let https_ca = https.map(|ca| ca.unwrap_or_else(|| ca_dir.join("ca.crt")));
        let mut cluster = Cluster {
            root,
            servers,
            peers,
            ca_dir,
            extra_args,
            https_ca,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let s = &mut self.servers[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.log_path())?;
        let child = Command::new(windflow_bin())
            .args(["server", "--name", &s.name, "--data-dir"])
            .arg(&s.data_dir)
            .args([
                "--http-addr",
                &s.http_addr.to_string(),
                "--quic-addr",
                &s.quic_addr.to_string(),
            ])
            .args(match &s.starts {
                Starts::Member => vec!["--peers", self.peers.as_str(), "--ca-dir"],
                Starts::Joining => vec!["--join", "--ca-dir"],
                Starts::JoiningWithToken { token, via } => {
                    vec!["--join-token", token, "--join-via", via]
                }
            })
            .args(match s.starts {
                Starts::JoiningWithToken { .. } => None,
                _ => Some(&self.ca_dir),
            })
            .args(&self.extra_args)
            .env("HOME", self.root.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", s.name))?;
        s.child = Some(child);
        Ok(())
    }

    /// Waits until the bootstrap token exists and every running server is ready.
    pub fn wait_ready(&self) -> anyhow::Result<()> {
        let ca = match &self.https_ca {
            Some(path) => Some(std::fs::read_to_string(path)?),
            None => None,
        };
        let ready = |addr| match &ca {
            None => http_status(addr, "/readyz").ok() == Some(200),
            Some(ca) => crate::https_request(addr, Some(ca), "GET", "/readyz", None, None)
                .is_ok_and(|a| a.status == 200),
        };
        wait_for("the cluster to be ready", START_DEADLINE, || {
            let token = self.token_file().exists();
            let ready = self
                .servers
                .iter()
                .filter(|s| s.is_running())
                .all(|s| ready(s.http_addr));
            (token && ready).then_some(())
        })
        .with_context(|| self.logs())
    }

    fn token_file(&self) -> PathBuf {
        // s1 sorts first, so it is the server that initialises the set.
        self.servers[0].data_dir.join("bootstrap-token")
    }

    /// The bootstrap admin token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.token_file())
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Whether server `i` says it is the raft leader.
    pub fn is_leader(&self, i: usize) -> bool {
        http_json(self.servers[i].http_addr, "GET", "/metrics", None, None).is_ok_and(
            |(_, body)| {
                body.as_str()
                    .is_some_and(|m| m.lines().any(|l| l.trim() == "windflow_raft_is_leader 1"))
            },
        )
    }

    /// The jobs server `i` holds, as its API lists them.
    pub fn jobs(&self, i: usize, token: &str) -> Option<Vec<serde_json::Value>> {
        let (status, jobs) = http_json(
            self.servers[i].http_addr,
            "GET",
            "/v1/jobs",
            Some(token),
            None,
        )
        .ok()?;
        (status == 200).then(|| jobs.as_array().cloned().unwrap_or_default())
    }

    /// Asks server `via` to add server `new` (started with `--join`) to the cluster. The
    /// server answers once the newcomer has caught up, which for a large state means a
    /// snapshot install: minutes in a debug build on a loaded machine.
    pub fn join(&self, via: usize, token: &str, new: usize) -> (u16, serde_json::Value) {
        let s = &self.servers[new];
        let body =
            serde_json::json!({"name": s.name, "address": s.quic_addr.to_string()}).to_string();
        http_json_within(
            self.servers[via].http_addr,
            "POST",
            "/v1/cluster/members",
            Some(token),
            Some(&body),
            Duration::from_secs(300),
        )
        .with_context(|| self.logs())
        .expect("the join request")
    }

    /// The index of the server that says it is leader, if exactly one running server does.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.servers.len())
            .filter(|&i| self.servers[i].is_running())
            .filter(|&i| self.is_leader(i))
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    pub fn wait_for_leader(&self, deadline: Duration) -> anyhow::Result<usize> {
        wait_for("one leader", deadline, || self.leader()).with_context(|| self.logs())
    }

    /// Kills server `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops server `i` with SIGTERM and waits for it to exit.
    pub fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.servers[i].child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
            let exited = wait_for("a server to exit", Duration::from_secs(30), || {
                child.try_wait().ok().flatten()
            });
            if exited.is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
            exited?;
        }
        Ok(())
    }

    /// Starts a new server with `--join`, not yet a member; returns its index.
    pub fn start_joining(&mut self, name: &str) -> anyhow::Result<usize> {
        let i = self.spawn_new(name, Starts::Joining)?;
        self.wait_serving(i)?;
        Ok(i)
    }

    /// Starts a new server that enrolls with a join token through `via` (a server's QUIC
    /// address) and then waits to be added. Returns at once with its index: enrollment may
    /// be meant to fail (see [`Cluster::wait_exit`]) or succeed ([`Cluster::wait_serving`]).
    pub fn start_with_join_token(
        &mut self,
        name: &str,
        token: &str,
        via: SocketAddr,
    ) -> anyhow::Result<usize> {
        let starts = Starts::JoiningWithToken {
            token: token.into(),
            via: via.to_string(),
        };
        self.spawn_new(name, starts)
    }

    fn spawn_new(&mut self, name: &str, starts: Starts) -> anyhow::Result<usize> {
        self.servers.push(Server {
            name: name.into(),
            data_dir: self.root.path().join(name),
            http_addr: free_tcp_addr(),
            quic_addr: free_udp_addr(),
            starts,
            child: None,
        });
        let i = self.servers.len() - 1;
        self.spawn(i)?;
        Ok(i)
    }

    /// Waits until server `i` exits by itself; its exit status.
    pub fn wait_exit(&mut self, i: usize, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.servers[i]
            .child
            .as_mut()
            .context("the server is not running")?;
        let status = wait_for("the server to exit", deadline, || {
            child.try_wait().ok().flatten()
        })?;
        self.servers[i].child = None;
        Ok(status)
    }

    /// Waits until server `i` answers `/healthz`.
    pub fn wait_serving(&self, i: usize) -> anyhow::Result<()> {
        let addr = self.servers[i].http_addr;
        wait_for("the joining server to serve HTTP", START_DEADLINE, || {
            (http_status(addr, "/healthz").ok() == Some(200)).then_some(())
        })
        .with_context(|| self.servers[i].log())
    }

    /// Starts server `i` again on its data dir and addresses.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)
    }

    /// Every server's log, for failure messages.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("--- {} ---\n{}", s.name, s.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}
