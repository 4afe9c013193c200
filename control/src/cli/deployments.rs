//! `windflow job update|scale|versions`, `windflow deployment list|show|fail|promote`, and
//! the rollout flags of `job create`/`job update` (update policy, health checks).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use windflow_protocol::{Deployment, Job};

use super::OutputFormat;
use super::client::Client;
use super::commands::{Printer, seg, text};
use super::table::Table;

/// A service's update policy and health checks.
#[derive(Debug, Args, Default)]
pub struct RolloutArgs {
    /// Instances replaced at once during a rolling update [default: 1].
    #[arg(long)]
    pub max_parallel: Option<u32>,
    /// How long an instance's checks must pass before it is healthy [default: 10s].
    #[arg(long)]
    pub min_healthy_time: Option<String>,
    /// An instance not healthy this long after it started is unhealthy [default: 5m].
    #[arg(long)]
    pub healthy_deadline: Option<String>,
    /// A deployment with no new healthy instance for this long fails [default: 10m].
    #[arg(long)]
    pub progress_deadline: Option<String>,
    /// Roll back to the last stable version when a deployment fails.
    #[arg(long)]
    pub auto_revert: bool,
    /// Instances of a new version run next to the old ones until `deployment promote`.
    #[arg(long)]
    pub canary: Option<u32>,
    /// An HTTP health check: GET this path answers 2xx or 3xx.
    #[arg(long, value_name = "PATH")]
    pub check_http: Option<String>,
    /// A TCP health check: the port accepts a connection.
    #[arg(long)]
    pub check_tcp: bool,
    /// A command health check: `sh -c CMD` exits 0.
    #[arg(long, value_name = "CMD")]
    pub check_cmd: Option<String>,
    /// The port of the HTTP and TCP checks [default: the allocation's WINDFLOW_PORT].
    #[arg(long)]
    pub check_port: Option<u16>,
    /// Between two runs of each check [default: 10s].
    #[arg(long)]
    pub check_interval: Option<String>,
    /// A check run taking longer fails [default: 2s].
    #[arg(long)]
    pub check_timeout: Option<String>,
    /// Check failures this soon after a start do not count [default: 0s].
    #[arg(long)]
    pub check_grace: Option<String>,
}

/// Puts the rollout flags given into a job body.
pub(super) fn add_rollout(body: &mut Map<String, Value>, r: RolloutArgs) {
    let mut update = Map::new();
    if let Some(n) = r.max_parallel {
        update.insert("max_parallel".into(), n.into());
    }
    for (k, v) in [
        ("min_healthy_time", r.min_healthy_time),
        ("healthy_deadline", r.healthy_deadline),
        ("progress_deadline", r.progress_deadline),
    ] {
        if let Some(v) = v {
            update.insert(k.into(), v.into());
        }
    }
    if r.auto_revert {
        update.insert("auto_revert".into(), true.into());
    }
    if let Some(n) = r.canary {
        update.insert("canary".into(), n.into());
    }
    if !update.is_empty() {
        body.insert("update".into(), update.into());
    }
    let mut checks = Vec::new();
    if let Some(path) = r.check_http {
        checks.push(json!({"type": "http", "path": path}));
    }
    if r.check_tcp {
        checks.push(json!({"type": "tcp"}));
    }
    if let Some(cmd) = r.check_cmd {
        checks.push(json!({"type": "command", "command": cmd}));
    }
    for c in &mut checks {
        let Some(c) = c.as_object_mut() else { continue };
        if let Some(p) = r.check_port
            && c["type"] != "command"
        {
            c.insert("port".into(), p.into());
        }
        for (k, v) in [
            ("interval", &r.check_interval),
            ("timeout", &r.check_timeout),
            ("grace", &r.check_grace),
        ] {
            if let Some(v) = v {
                c.insert(k.into(), v.clone().into());
            }
        }
    }
    if !checks.is_empty() {
        body.insert("checks".into(), checks.into());
    }
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Deployments, newest first.
    List {
        /// Only this job's (ID or name).
        #[arg(long)]
        job: Option<String>,
    },
    /// One deployment: its groups' progress and the allocations it placed.
    Show { deployment: String },
    /// Fail a running deployment (its job is reverted when its policy says auto-revert).
    Fail { deployment: String },
    /// Let a deployment's canaries' version replace every instance.
    Promote { deployment: String },
}

/// `windflow job update NAME …`: the body of `job create`, as a new version.
pub async fn update(client: &Client, out: Printer, body: Value) -> anyhow::Result<ExitCode> {
    let name = text(&body["name"]);
    let answer: Value = client
        .put(&format!("/v1/jobs/{}", seg(&name)), &body)
        .await?;
    if out.0 == OutputFormat::Json {
        out.json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let version = text(&answer["job"]["version"]);
    if answer["changed"] == true {
        match answer["deployment"]["id"].as_str() {
            Some(d) => println!("{name} is now version {version}; rolling out as {d}"),
            None => println!("{name} is now version {version}"),
        }
    } else {
        println!("{name} is unchanged (version {version})");
    }
    Ok(ExitCode::SUCCESS)
}

/// `windflow job scale NAME COUNT [--group G]`.
pub async fn scale(
    client: &Client,
    out: Printer,
    job: String,
    count: u32,
    group: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut body = json!({ "count": count });
    if let Some(g) = group {
        body["group"] = g.into();
    }
    let job: Job = client
        .post(&format!("/v1/jobs/{}/scale", seg(&job)), Some(&body))
        .await?;
    match out.0 {
        OutputFormat::Json => out.json(&job)?,
        OutputFormat::Table => {
            for g in &job.spec.groups {
                println!("{} group {}: count {}", job.spec.name, g.name, g.count);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `windflow job versions NAME`.
pub async fn versions(client: &Client, out: Printer, job: String) -> anyhow::Result<ExitCode> {
    let all: Vec<Value> = client
        .get(&format!("/v1/jobs/{}/versions", seg(&job)))
        .await?;
    if out.0 == OutputFormat::Json {
        out.json(&all)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(vec!["VERSION", "STABLE", "COMMAND", "COUNT"]);
    for v in &all {
        let group = &v["spec"]["groups"][0];
        t.row(vec![
            text(&v["version"]),
            if v["stable"] == true { "yes" } else { "" }.into(),
            text(&group["tasks"][0]["driver"]["exec"]["command"]),
            text(&group["count"]),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

pub async fn deployment(
    client: &Client,
    out: Printer,
    cmd: DeploymentCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        DeploymentCommand::List { job } => {
            let q = job.map(|j| format!("?job={}", seg(&j))).unwrap_or_default();
            let all: Vec<Deployment> = client.get(&format!("/v1/deployments{q}")).await?;
            if out.0 == OutputFormat::Json {
                out.json(&all)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(vec!["ID", "JOB", "VERSION", "STATUS", "DESCRIPTION"]);
            for d in &all {
                t.row(vec![
                    d.id.to_string(),
                    d.job.to_string(),
                    d.version.to_string(),
                    d.status.to_string(),
                    d.description.clone(),
                ]);
            }
            print!("{}", t.render());
        }
        DeploymentCommand::Show { deployment } => {
            let v: Value = client
                .get(&format!("/v1/deployments/{}", seg(&deployment)))
                .await?;
            if out.0 == OutputFormat::Json {
                out.json(&v)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!("ID:          {}", text(&v["id"]));
            println!("Job:         {}", text(&v["job"]));
            println!(
                "Version:     {} (from {})",
                text(&v["version"]),
                text(&v["from_version"])
            );
            println!("Status:      {}", text(&v["status"]));
            println!("Description: {}", text(&v["description"]));
            println!("Promoted:    {}", text(&v["promoted"]));
            let mut t = Table::new(vec![
                "GROUP",
                "DESIRED",
                "CANARIES",
                "PLACED",
                "HEALTHY",
                "UNHEALTHY",
                "OLD",
            ]);
            for g in v["groups"].as_array().into_iter().flatten() {
                t.row(
                    [
                        "group",
                        "desired",
                        "canaries",
                        "placed",
                        "healthy",
                        "unhealthy",
                        "old",
                    ]
                    .iter()
                    .map(|k| text(&g[*k]))
                    .collect(),
                );
            }
            print!("{}", t.render());
        }
        DeploymentCommand::Fail { deployment } => {
            let d: Deployment = client
                .post(&format!("/v1/deployments/{}/fail", seg(&deployment)), None)
                .await?;
            done(out, &d)?;
        }
        DeploymentCommand::Promote { deployment } => {
            let d: Deployment = client
                .post(
                    &format!("/v1/deployments/{}/promote", seg(&deployment)),
                    None,
                )
                .await?;
            done(out, &d)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn done(out: Printer, d: &Deployment) -> anyhow::Result<()> {
    match out.0 {
        OutputFormat::Json => out.json(d),
        OutputFormat::Table => {
            println!("{} {}: {}", d.id, d.status, d.description);
            Ok(())
        }
    }
}
