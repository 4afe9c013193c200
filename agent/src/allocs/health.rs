//! A running service allocation's health, judged on its node: its group's checks (an
//! HTTP `GET` answering 2xx or 3xx, a TCP connection accepted, a command exiting 0), each
//! run every `interval` and failed past its `timeout`. The allocation is healthy once all
//! of them have passed for the update policy's `min_healthy_time` (without checks: once it
//! ran that long); unhealthy when a check fails after that (outside its `grace`), or when
//! it is not healthy by the `healthy_deadline`. Only changes are reported.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use windflow_protocol::{AllocHealth, CheckKind, HealthCheck, HealthStatus, UpdatePolicy};

use super::runner::{Change, Report};

/// The env var holding the port the agent picked for an allocation.
pub(crate) const PORT_VAR: &str = "WINDFLOW_PORT";
/// How often the judgement is made, whatever the checks' intervals.
const TICK: Duration = Duration::from_millis(250);
/// The most of an HTTP answer read to find its status line.
const STATUS_LINE_MAX: usize = 1024;

/// What an allocation's checks run against.
pub(crate) struct Target {
    pub checks: Vec<HealthCheck>,
    pub update: UpdatePolicy,
    /// The first task's env (the allocation's own vars included) for command checks.
    pub env: BTreeMap<String, String>,
    pub workdir: Option<PathBuf>,
}

impl Target {
    fn port(&self, given: Option<u16>) -> Result<u16, String> {
        match given {
            Some(p) => Ok(p),
            None => self
                .env
                .get(PORT_VAR)
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("no port given and no {PORT_VAR} for the allocation")),
        }
    }
}

/// A free TCP port on this host, for an allocation's `WINDFLOW_PORT`.
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// One check's state.
struct Probe {
    next: Instant,
    last: Option<Result<(), String>>,
}

/// Runs the checks until `stop`, reporting each change of health.
pub(crate) async fn watch(target: Target, report: Report, stop: CancellationToken) {
    let started = Instant::now();
    let min = target.update.min_healthy_time.0;
    let deadline = target.update.healthy_deadline.0;
    let mut probes: Vec<Probe> = target
        .checks
        .iter()
        .map(|_| Probe {
            next: started,
            last: None,
        })
        .collect();
    let mut passing_since: Option<Instant> = None;
    let mut status = HealthStatus::Unknown;
    loop {
        let now = Instant::now();
        for (check, probe) in target.checks.iter().zip(probes.iter_mut()) {
            if probe.next <= now {
                let result = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = run(check, &target) => r,
                };
                probe.last = Some(result.map_err(|e| format!("check {}: {e}", check.name)));
                probe.next = Instant::now() + check.interval.0;
            }
        }
        let now = Instant::now();
        let failure = target
            .checks
            .iter()
            .zip(&probes)
            .find_map(|(check, p)| match &p.last {
                Some(Ok(())) => None,
                Some(Err(e)) => Some((e.clone(), now.duration_since(started) >= check.grace.0)),
                None => Some((format!("check {} has not run yet", check.name), false)),
            });
        let judged = match failure {
            None => {
                let since = *passing_since.get_or_insert(now);
                (now.duration_since(since) >= min).then(|| AllocHealth {
                    status: HealthStatus::Healthy,
                    message: if target.checks.is_empty() {
                        format!("running for {}", target.update.min_healthy_time)
                    } else {
                        format!(
                            "all {} check(s) passing for {}",
                            target.checks.len(),
                            target.update.min_healthy_time
                        )
                    },
                })
            }
            Some((why, counts)) => {
                passing_since = None;
                if status == HealthStatus::Healthy && counts {
                    Some(AllocHealth {
                        status: HealthStatus::Unhealthy,
                        message: why,
                    })
                } else if status == HealthStatus::Unknown && now.duration_since(started) >= deadline
                {
                    Some(AllocHealth {
                        status: HealthStatus::Unhealthy,
                        message: format!(
                            "not healthy within its deadline of {}: {why}",
                            target.update.healthy_deadline
                        ),
                    })
                } else {
                    None
                }
            }
        };
        if let Some(h) = judged
            && h.status != status
        {
            tracing::info!(health = %h.status, message = %h.message, "allocation health changed");
            status = h.status;
            report(Change::Health(h));
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// One run of one check, within its timeout.
async fn run(check: &HealthCheck, target: &Target) -> Result<(), String> {
    let timeout = check.timeout.0;
    let network = match &check.kind {
        // Times itself out, to kill its process group.
        CheckKind::Command { command } => return command_check(command, target, timeout).await,
        CheckKind::Http { path, port } => {
            let port = target.port(*port)?;
            futures_http(port, path.clone())
        }
        CheckKind::Tcp { port } => {
            let port = target.port(*port)?;
            Box::pin(async move {
                TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map(drop)
                    .map_err(|e| format!("cannot connect to 127.0.0.1:{port}: {e}"))
            })
        }
    };
    match tokio::time::timeout(timeout, network).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}", check.timeout)),
    }
}

type Probing = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

fn futures_http(port: u16, path: String) -> Probing {
    Box::pin(async move { http(port, &path).await })
}

/// `GET path` on 127.0.0.1:port; 2xx and 3xx pass.
async fn http(port: u16, path: &str) -> Result<(), String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot connect to 127.0.0.1:{port}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: windflow-agent\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < STATUS_LINE_MAX {
        let n = conn
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .filter(|_| line.starts_with("HTTP/"))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: `{}`", line.chars().take(80).collect::<String>()))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET {path} answered {code}"))
    }
}

/// `sh -c command` with the task's env, in its own process group (killed whole at the
/// timeout); exit 0 passes.
async fn command_check(command: &str, target: &Target, timeout: Duration) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env_clear()
        .envs(&target.env)
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = target.workdir.as_ref().filter(|d| d.is_dir()) {
        cmd.current_dir(dir);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `sh -c`: {e}"))?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(match s.code() {
            Some(c) => format!("`{command}` exited {c}"),
            None => format!("`{command}` was killed"),
        }),
        Ok(Err(e)) => Err(format!("cannot wait for `{command}`: {e}")),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(format!("`{command}` took longer than {}", windflow_protocol::HumanDuration(timeout)))
        }
    }
}
