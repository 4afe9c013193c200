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
use windflow_protocol::{AllocHealth, AllocId, CheckKind, HealthCheck, HealthStatus, UpdatePolicy};

use crate::drivers::docker::{DockerDriver, LABEL_ALLOC, LABEL_TASK};

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
    /// The health already judged (after an agent restart): a failing check turns a healthy
    /// allocation unhealthy at once rather than at the deadline.
    pub judged: HealthStatus,
    /// The first task's env (the allocation's own vars included) for command checks.
    pub env: BTreeMap<String, String>,
    pub workdir: Option<PathBuf>,
    /// The engine and the allocation, for `container` checks (its containers' own health).
    pub containers: Option<(std::sync::Arc<DockerDriver>, AllocId)>,
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
    let mut status = target.judged;
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
    let network: Probing = match &check.kind {
        // Times itself out, to kill its process group.
        CheckKind::Command { command } => return command_check(command, target, timeout).await,
        CheckKind::Http { path, port } => {
            let (port, path) = (target.port(*port)?, path.clone());
            Box::pin(async move { http(port, &path).await })
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
        CheckKind::Container { task } => {
            let Some((docker, alloc)) = &target.containers else {
                return Err("the allocation has no containers".into());
            };
            let docker = docker.clone();
            let selector = vec![(LABEL_ALLOC, alloc.to_string()), (LABEL_TASK, task.clone())];
            let task = task.clone();
            Box::pin(async move { container_health(&docker, &selector, &task).await })
        }
    };
    match tokio::time::timeout(timeout, network).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}", check.timeout)),
    }
}

/// A network check's run, to time out.
type Probing = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// The engine's verdict on the task's container: `healthy` passes.
async fn container_health(
    docker: &DockerDriver,
    selector: &[(&str, String)],
    task: &str,
) -> Result<(), String> {
    let found = docker.find(selector).await.map_err(|e| e.to_string())?;
    let running = found.iter().find(|f| f.exit.is_none());
    match running.map(|f| f.health.as_deref()) {
        Some(Some("healthy")) => Ok(()),
        Some(Some(other)) => Err(format!("the container of {task} is {other}")),
        Some(None) => Err(format!("the container of {task} has no health check")),
        None => Err(format!("the container of {task} is not running")),
    }
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
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: `{}`",
                line.chars().take(80).collect::<String>()
            )
        })?;
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
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )
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
            Err(format!(
                "`{command}` took longer than {}",
                windflow_protocol::HumanDuration(timeout)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::net::TcpListener;
    use windflow_protocol::HumanDuration;

    use super::*;

    /// A server answering every connection with `status_line`.
    async fn answering(status_line: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(format!("{status_line}\r\n\r\n").as_bytes())
                    .await;
            }
        });
        port
    }

    fn target(checks: Vec<HealthCheck>, min_ms: u64, deadline_ms: u64) -> Target {
        Target {
            checks,
            update: UpdatePolicy {
                min_healthy_time: HumanDuration::from_millis(min_ms),
                healthy_deadline: HumanDuration::from_millis(deadline_ms),
                ..Default::default()
            },
            judged: HealthStatus::Unknown,
            env: BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]),
            containers: None,
            workdir: None,
        }
    }

    fn check(kind: CheckKind) -> HealthCheck {
        HealthCheck {
            name: "c".into(),
            kind,
            interval: HumanDuration::from_millis(100),
            timeout: HumanDuration::from_millis(300),
            grace: HumanDuration::from_millis(0),
        }
    }

    #[tokio::test]
    async fn http_passes_on_2xx_and_3xx_only() {
        assert_eq!(http(answering("HTTP/1.0 200 OK").await, "/").await, Ok(()));
        assert_eq!(
            http(answering("HTTP/1.1 302 Found").await, "/").await,
            Ok(())
        );
        let err = http(answering("HTTP/1.0 503 Busy").await, "/x")
            .await
            .unwrap_err();
        assert!(err.contains("503"), "{err}");
        let err = http(answering("SSH-2.0").await, "/").await.unwrap_err();
        assert!(err.contains("not an HTTP answer"), "{err}");
        let closed = free_port().unwrap();
        assert!(
            http(closed, "/")
                .await
                .unwrap_err()
                .contains("cannot connect")
        );
    }

    #[tokio::test]
    async fn commands_see_the_task_env_and_are_killed_at_their_timeout() {
        let t = target(Vec::new(), 0, 1000);
        let timeout = Duration::from_millis(300);
        assert_eq!(
            command_check("test \"$GREETING\" = hi", &t, timeout).await,
            Ok(())
        );
        let err = command_check("exit 3", &t, timeout).await.unwrap_err();
        assert!(err.contains("exited 3"), "{err}");
        let err = command_check("sleep 5", &t, timeout).await.unwrap_err();
        assert!(err.contains("took longer"), "{err}");
    }

    #[tokio::test]
    async fn the_port_defaults_to_the_allocations_own() {
        let port = answering("HTTP/1.0 200 OK").await;
        let mut t = target(vec![check(CheckKind::Tcp { port: None })], 0, 1000);
        let c = t.checks[0].clone();
        assert!(run(&c, &t).await.unwrap_err().contains(PORT_VAR));
        t.env.insert(PORT_VAR.into(), port.to_string());
        assert_eq!(run(&c, &t).await, Ok(()));
    }

    /// Runs `watch` until it reports once (or 5 s pass).
    async fn first_verdict(t: Target) -> Option<AllocHealth> {
        let seen: Arc<Mutex<Option<AllocHealth>>> = Arc::default();
        let stop = CancellationToken::new();
        let (s, st) = (seen.clone(), stop.clone());
        let report: Report = Arc::new(move |c| {
            if let Change::Health(h) = c {
                *s.lock().unwrap() = Some(h);
                st.cancel();
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(5), watch(t, report, stop)).await;
        seen.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn healthy_after_the_minimum_time_unhealthy_past_the_deadline() {
        let none = first_verdict(target(Vec::new(), 200, 2000)).await.unwrap();
        assert_eq!(none.status, HealthStatus::Healthy);
        let port = answering("HTTP/1.0 200 OK").await;
        let ok = check(CheckKind::Http {
            path: "/".into(),
            port: Some(port),
        });
        let up = first_verdict(target(vec![ok], 200, 2000)).await.unwrap();
        assert_eq!(up.status, HealthStatus::Healthy, "{up:?}");
        let failing = check(CheckKind::Command {
            command: "false".into(),
        });
        let down = first_verdict(target(vec![failing], 200, 600))
            .await
            .unwrap();
        assert_eq!(down.status, HealthStatus::Unhealthy);
        assert!(down.message.contains("deadline"), "{}", down.message);
        // Judged healthy before an agent restart: a failure says so at once.
        let mut t = target(vec![failing_again()], 200, 60_000);
        t.judged = HealthStatus::Healthy;
        let down = first_verdict(t).await.unwrap();
        assert_eq!(down.status, HealthStatus::Unhealthy);
        assert!(!down.message.contains("deadline"), "{}", down.message);
    }

    fn failing_again() -> HealthCheck {
        check(CheckKind::Command {
            command: "false".into(),
        })
    }
}
