//! `windflow alloc list|show|logs|stats`, and what `job show` says of a service's placement.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use windflow_protocol::{Allocation, Evaluation, Job};

use super::client::Client;
use super::commands::{Printer, seg};
use super::table::Table;
use super::{AllocCommand, OutputFormat};

pub async fn alloc(client: &Client, out: Printer, cmd: AllocCommand) -> anyhow::Result<ExitCode> {
    let allocs: Vec<Allocation> = match cmd {
        AllocCommand::List { job, node } => {
            let mut query = Vec::new();
            if let Some(j) = job {
                query.push(format!("job={}", seg(&j)));
            }
            if let Some(n) = node {
                query.push(format!("node={}", seg(&n)));
            }
            let q = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            client.get(&format!("/v1/allocations{q}")).await?
        }
        AllocCommand::Logs {
            alloc,
            task,
            follow,
            since,
            tail,
            stderr,
        } => {
            let query = LogsArgs {
                task,
                follow,
                since,
                tail,
                stderr,
            };
            return logs(client, &alloc, &query).await;
        }
        AllocCommand::Stats { alloc } => {
            let stats: Value = client
                .get(&format!("/v1/allocations/{}/stats", seg(&alloc)))
                .await?;
            if out.0 == OutputFormat::Json {
                out.json(&stats)?;
            } else {
                print!("{}", stats_table(&stats));
            }
            return Ok(ExitCode::SUCCESS);
        }
        AllocCommand::Show { alloc } => {
            let a: Allocation = client
                .get(&format!("/v1/allocations/{}", seg(&alloc)))
                .await?;
            if out.0 == OutputFormat::Json {
                out.json(&a)?;
            } else {
                print!("{}", show(&a));
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    if out.0 == OutputFormat::Json {
        out.json(&allocs)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(vec![
        "ID", "JOB", "GROUP", "INDEX", "NODE", "DESIRED", "STATUS", "RESTARTS", "CPU", "MEMORY",
        "CREATED",
    ]);
    for a in &allocs {
        t.row(vec![
            a.id.to_string(),
            a.job.to_string(),
            a.group.clone(),
            a.index.to_string(),
            a.node.to_string(),
            word(&a.desired),
            word(&a.client),
            a.restarts.to_string(),
            format!("{} MHz", a.resources.cpu_mhz),
            format!("{} MB", a.resources.memory_mb),
            a.created_at.to_string(),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

/// What `alloc logs` asks for.
struct LogsArgs {
    task: Option<String>,
    follow: bool,
    since: Option<String>,
    tail: Option<u32>,
    stderr: bool,
}

impl LogsArgs {
    /// The query string of `GET /v1/allocations/{id}/logs`.
    fn query(&self) -> String {
        let mut q = Vec::new();
        if let Some(t) = &self.task {
            q.push(format!("task={}", seg(t)));
        }
        if self.stderr {
            q.push("stream=stderr".to_owned());
        }
        if self.follow {
            q.push("follow=true".to_owned());
        }
        if let Some(s) = &self.since {
            q.push(format!("since={}", seg(s)));
        }
        if let Some(n) = self.tail {
            q.push(format!("tail={n}"));
        }
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    }
}

/// `windflow alloc logs`: the body copied to stdout as it arrives; Ctrl-C ends it.
async fn logs(client: &Client, alloc: &str, args: &LogsArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let path = format!("/v1/allocations/{}/logs{}", seg(alloc), args.query());
    let mut res = client.get_streaming(&path).await?;
    let mut stdout = std::io::stdout();
    // One listener for the whole copy: a Ctrl-C between two chunks is not lost.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let chunk = tokio::select! {
            _ = &mut interrupted => return Ok(ExitCode::SUCCESS),
            chunk = res.chunk() => chunk.context("reading the logs")?,
        };
        let Some(chunk) = chunk else {
            return Ok(ExitCode::SUCCESS);
        };
        // A closed pipe (`| head`) ends it quietly.
        if stdout
            .write_all(&chunk)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// `windflow alloc stats`: a row per task.
fn stats_table(stats: &Value) -> String {
    let mut t = Table::new(vec![
        "TASK",
        "CPU",
        "MEMORY",
        "LIMIT",
        "NET RX",
        "NET TX",
        "BLOCK READ",
        "BLOCK WRITE",
        "NOTE",
    ]);
    let bytes = |v: &Value| v.as_u64().map_or_else(|| "-".to_owned(), human_bytes);
    for task in stats["tasks"].as_array().into_iter().flatten() {
        t.row(vec![
            task["task"].as_str().unwrap_or("?").to_owned(),
            task["cpu_percent"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}%")),
            bytes(&task["memory_bytes"]),
            bytes(&task["memory_limit_bytes"]),
            bytes(&task["network_rx_bytes"]),
            bytes(&task["network_tx_bytes"]),
            bytes(&task["block_read_bytes"]),
            bytes(&task["block_write_bytes"]),
            task["error"].as_str().unwrap_or("").to_owned(),
        ]);
    }
    t.render()
}

/// `1.5 MiB`, `512 B`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// An enum as its JSON word (`run`, `lost`, `rescheduled`).
fn word<T: serde::Serialize>(v: &T) -> String {
    json!(v).as_str().unwrap_or("?").to_owned()
}

/// `windflow alloc show`: the allocation, its lineage and its events.
fn show(a: &Allocation) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<13} {v}\n"));
    line("ID:", a.id.to_string());
    line(
        "Job:",
        format!("{} (group {}, instance {})", a.job, a.group, a.index),
    );
    line("Namespace:", a.namespace.to_string());
    line("Node:", a.node.to_string());
    line("Desired:", word(&a.desired));
    line("Status:", word(&a.client));
    line("Evaluation:", a.eval.to_string());
    line("Created:", a.created_at.to_string());
    line("Modified:", a.modified_at.to_string());
    line("Restarts:", a.restarts.to_string());
    line(
        "Previous:",
        a.previous.map_or_else(|| "-".to_owned(), |p| p.to_string()),
    );
    line("Reschedules:", a.reschedules.to_string());
    // Rollouts: the job version it runs, the deployment that placed it, its health.
    line(
        "Job version:",
        match a.deployment {
            Some(d) => format!("{} (placed by {d})", a.job_version),
            None => a.job_version.to_string(),
        },
    );
    line(
        "Health:",
        if a.health.message.is_empty() {
            a.health.status.to_string()
        } else {
            format!("{} ({})", a.health.status, a.health.message)
        },
    );
    line(
        "Resources:",
        format!(
            "{} MHz CPU, {} MB memory, {} MB disk",
            a.resources.cpu_mhz, a.resources.memory_mb, a.resources.disk_mb
        ),
    );
    if !a.ports.is_empty() {
        let mut p = Table::new(vec!["TASK", "LABEL", "HOST", "CONTAINER"]);
        for port in &a.ports {
            p.row(vec![
                port.task.clone(),
                port.label.clone(),
                format!("{}:{}", port.host_ip, port.host_port),
                format!("{}/{}", port.container_port, port.protocol.as_str()),
            ]);
        }
        s.push_str("\nPorts:\n");
        s.push_str(&p.render());
    }
    let mut t = Table::new(vec!["TIME", "EVENT", "MESSAGE"]);
    for e in &a.events {
        t.row(vec![e.at.to_string(), word(&e.kind), e.message.clone()]);
    }
    s.push_str("\nEvents:\n");
    s.push_str(&t.render());
    s
}

/// Under `job show` of a service: its live allocations and, if the last evaluation left
/// instances unplaced, which node was filtered out by what.
pub async fn print_placement(client: &Client, job: &Job) -> anyhow::Result<()> {
    let allocs: Vec<Allocation> = client
        .get(&format!("/v1/allocations?job={}", job.id))
        .await?;
    let live = allocs.iter().filter(|a| a.is_live()).count();
    let count: u32 = job.spec.groups.iter().map(|g| g.count).sum();
    println!("\nPlaced: {live} of {count}");
    let evals: Vec<Evaluation> = client
        .get(&format!("/v1/jobs/{}/evaluations", job.id))
        .await?;
    if let Some(last) = evals.first() {
        let status = json!(last.status);
        let waits = last
            .wait_until
            .map(|t| format!(" (waits until {t})"))
            .unwrap_or_default();
        println!(
            "Last evaluation: {} {}{waits}",
            last.id,
            status.as_str().unwrap_or("?")
        );
        for why in &last.unplaced {
            println!("  {why}");
        }
    }
    Ok(())
}

/// `os = linux`, `kernel version >= 5.10`: a constraint as the API takes it.
pub fn constraint(rule: &str) -> anyhow::Result<Value> {
    let mut parts = rule.trim().splitn(3, char::is_whitespace);
    let (Some(attribute), Some(operator), Some(value)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("--constraint `{rule}` must be `ATTRIBUTE OPERATOR VALUE`, e.g. 'os = linux'");
    };
    crate::api::placement_operator(operator)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("--constraint `{rule}`"))?;
    Ok(json!({"attribute": attribute, "operator": operator, "value": value.trim()}))
}

#[cfg(test)]
mod tests {
    use windflow_protocol::{
        AllocEventKind, AllocId, ClientStatus, DesiredStatus, EvalId, JobId, NodeId, Resources,
        Timestamp,
    };

    use super::*;

    #[test]
    fn show_says_lineage_and_events() {
        let mut a = Allocation {
            id: AllocId(7),
            job: JobId(2),
            namespace: Default::default(),
            group: "web".into(),
            index: 1,
            node: NodeId(3),
            resources: Resources::TASK_DEFAULT,
            desired: DesiredStatus::Stop,
            client: ClientStatus::Lost,
            eval: EvalId(4),
            created_at: Timestamp(0),
            modified_at: Timestamp(0),
            modify_index: 9,
            restarts: 2,
            previous: Some(AllocId(5)),
            reschedules: 1,
            events: Vec::new(),
            ports: Vec::new(),
            job_version: 1,
            deployment: None,
            health: Default::default(),
        };
        a.push_event(Timestamp(1), AllocEventKind::Lost, "node N3 is down");
        let text = show(&a);
        for want in [
            "Desired:      stop",
            "Status:       lost",
            "Previous:     AL5",
            "Reschedules:  1",
            "Restarts:     2",
            "lost   node N3 is down",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
    }
}
