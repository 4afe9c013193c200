//! `windflow alloc list|show`, and what `job show` says of a service's placement.

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
        AllocCommand::Show { alloc } => {
            let a: Allocation = client
                .get(&format!("/v1/allocations/{}", seg(&alloc)))
                .await?;
            if out.0 == OutputFormat::Json {
                out.json(&a)?;
                return Ok(ExitCode::SUCCESS);
            }
            vec![a]
        }
    };
    if out.0 == OutputFormat::Json {
        out.json(&allocs)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(vec![
        "ID", "JOB", "GROUP", "INDEX", "NODE", "DESIRED", "STATUS", "CPU", "MEMORY", "CREATED",
    ]);
    for a in &allocs {
        t.row(vec![
            a.id.to_string(),
            a.job.to_string(),
            a.group.clone(),
            a.index.to_string(),
            a.node.to_string(),
            json!(a.desired).as_str().unwrap_or("?").to_owned(),
            json!(a.client).as_str().unwrap_or("?").to_owned(),
            format!("{} MHz", a.resources.cpu_mhz),
            format!("{} MB", a.resources.memory_mb),
            a.created_at.to_string(),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
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
        println!(
            "Last evaluation: {} {}",
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
