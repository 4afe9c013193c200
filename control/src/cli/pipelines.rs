//! `windflow pipeline …`, `windflow context show|list|reset`, `job copy`, `job retention`,
//! and the run flags of `job create` (where runs go, how many are kept).

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use windflow_protocol::{Context, Job, Pipeline, PipelineRun, RunRetention};

use super::OutputFormat;
use super::client::Client;
use super::commands::{Printer, seg};
use super::table::{Table, or_dash};

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Create a pipeline: a DAG of jobs, e.g. `--step A --step B:A --step C:A --step D:B,C`.
    Create {
        /// A unique name (letters, digits, `-`, `_`, `.`).
        name: String,
        /// A step, `JOB` or `JOB:DEP,DEP…` (the jobs it waits for); repeat for more.
        #[arg(long = "step", value_name = "JOB[:DEPS]", required = true)]
        steps: Vec<String>,
        /// When a step fails: stop (start nothing more) or continue (skip only what
        /// depends on it).
        #[arg(long, default_value = "stop")]
        on_failure: String,
    },
    /// List pipelines, by ID: `--name`, `--status` (of the newest run, or `never`), `--limit`.
    List(super::list::ListArgs),
    /// Show one pipeline.
    Show { pipeline: String },
    /// Delete a pipeline (its scheduled runs are cancelled).
    Delete { pipeline: String },
    /// Run a pipeline now, or at a given time.
    Run {
        pipeline: String,
        /// Start at this RFC 3339 time instead, e.g. 2026-12-01T02:00:00+01:00.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Wait for the run to end; exit 0 only if it succeeded.
        #[arg(long, conflicts_with = "at")]
        wait: bool,
    },
    /// The runs of a pipeline, oldest first.
    Runs { pipeline: String },
    /// Show one pipeline run and its steps.
    Status { run: String },
    /// Run a failed pipeline run's failed and skipped steps again.
    Retry {
        run: String,
        #[arg(long)]
        wait: bool,
    },
}

/// The flags of `job create` that say where runs go and how many are kept.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Run only on this node (an ID like N3, or a node's unique name).
    #[arg(long, conflicts_with_all = ["label", "least_loaded"])]
    pub node: Option<String>,
    /// Run on nodes with this label, KEY=VALUE.
    #[arg(long, value_name = "KEY=VALUE", conflicts_with = "least_loaded")]
    pub label: Option<String>,
    /// Run on the node with the smallest share of its CPU and memory in use.
    #[arg(long)]
    pub least_loaded: bool,
    /// Keep only the last N finished runs [default: the cluster's retention].
    #[arg(long, value_name = "N")]
    pub keep_runs: Option<u32>,
    /// Drop finished runs older than this, e.g. 30d [default: the cluster's retention].
    #[arg(long, value_name = "DURATION")]
    pub keep_for: Option<String>,
}

/// Puts the run flags into a `job create` body; a node name is looked up.
pub async fn run_fields(
    client: &Client,
    args: RunArgs,
    body: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    let target = if let Some(node) = args.node {
        Some(format!("node:{}", node_id(client, &node).await?))
    } else if let Some(label) = args.label {
        if !label.contains('=') {
            bail!("--label `{label}` must be KEY=VALUE");
        }
        Some(format!("label:{label}"))
    } else if args.least_loaded {
        Some("least_loaded".to_owned())
    } else {
        None
    };
    if let Some(t) = target {
        body.insert("target".into(), t.into());
    }
    if let Some(n) = args.keep_runs {
        body.insert("keep_runs".into(), n.into());
    }
    if let Some(d) = args.keep_for {
        body.insert("keep_for".into(), d.into());
    }
    Ok(())
}

async fn node_id(client: &Client, node: &str) -> anyhow::Result<String> {
    if node.parse::<windflow_protocol::NodeId>().is_ok() {
        return Ok(node.to_owned());
    }
    let nodes: Vec<Value> = client.get("/v1/nodes").await?;
    let named: Vec<&str> = nodes
        .iter()
        .filter(|n| n["name"] == node)
        .filter_map(|n| n["id"].as_str())
        .collect();
    match named.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => bail!("--node: no node named `{node}`"),
        many => bail!(
            "--node: {} nodes are named `{node}` ({}); give an ID",
            many.len(),
            many.join(", ")
        ),
    }
}

pub async fn job_copy(
    client: &Client,
    out: Printer,
    job: &str,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let copy: Job = client
        .post(
            &format!("/v1/jobs/{}/copy", seg(job)),
            Some(&json!({ "name": name })),
        )
        .await?;
    match out.0 {
        OutputFormat::Json => out.json(&copy)?,
        OutputFormat::Table => println!("Copied {job} to {} ({})", copy.id, copy.spec.name),
    }
    Ok(ExitCode::SUCCESS)
}

/// `job retention [--keep-runs N] [--keep-for D] [--unlimited]`: shows or sets the
/// cluster's run retention.
pub async fn job_retention(
    client: &Client,
    out: Printer,
    keep_runs: Option<u32>,
    keep_for: Option<String>,
    unlimited: bool,
) -> anyhow::Result<ExitCode> {
    let r: RunRetention = if keep_runs.is_none() && keep_for.is_none() && !unlimited {
        client.get("/v1/run-retention").await?
    } else {
        let mut body = Map::new();
        if let Some(n) = keep_runs {
            body.insert("keep_runs".into(), n.into());
        }
        if let Some(d) = keep_for {
            body.insert("keep_for".into(), d.into());
        }
        client.put("/v1/run-retention", &body.into()).await?
    };
    match out.0 {
        OutputFormat::Json => out.json(&r)?,
        OutputFormat::Table => println!("{}", retention_text(&r)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `job show`'s lines on where a batch job's runs go and how many are kept.
pub fn print_run_settings(job: &Job) {
    if job.spec.job_type != windflow_protocol::JobType::Batch {
        return;
    }
    println!("Runs on: {}", job.spec.target);
    match &job.spec.retention {
        Some(r) => println!("Retention: {}", retention_text(r)),
        None => println!("Retention: the cluster's (`windflow job retention`)"),
    }
}

fn retention_text(r: &RunRetention) -> String {
    match (r.keep_last, r.max_age) {
        (None, None) => "Runs are kept without limit.".into(),
        (Some(n), None) => format!("The last {n} finished runs of each job are kept."),
        (None, Some(d)) => format!("Finished runs are kept for {d}."),
        (Some(n), Some(d)) => {
            format!("The last {n} finished runs of each job are kept, none longer than {d}.")
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Print a context's value (by context ID, job ID or job name).
    Show { context: String },
    /// Every context, with how it was made.
    List,
    /// Empty a context, as before its first run.
    Reset { context: String },
}

pub async fn context(
    client: &Client,
    out: Printer,
    cmd: ContextCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        ContextCommand::Show { context } => {
            let ctx: Context = client
                .get(&format!("/v1/contexts/{}", seg(&context)))
                .await?;
            match out.0 {
                OutputFormat::Json => out.json(&ctx)?,
                OutputFormat::Table => print!("{}", ctx.value),
            }
        }
        ContextCommand::Reset { context } => {
            let ctx: Context = client
                .post(&format!("/v1/contexts/{}/reset", seg(&context)), None)
                .await?;
            match out.0 {
                OutputFormat::Json => out.json(&ctx)?,
                OutputFormat::Table => println!("Context {} is empty", ctx.id),
            }
        }
        ContextCommand::List => {
            let all: Vec<Context> = client.get("/v1/contexts").await?;
            if out.0 == OutputFormat::Json {
                out.json(&all)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(vec![
                "ID", "SOURCE", "RUN", "NODE", "STARTED", "DURATION", "EXIT", "ATTEMPTS", "BYTES",
            ]);
            for c in &all {
                let source = match c.source {
                    windflow_protocol::ContextSource::Job(j) => j.to_string(),
                    windflow_protocol::ContextSource::Pipeline(p) => p.to_string(),
                };
                let run = match (c.pipeline_run, c.run) {
                    (Some(pr), _) => pr.to_string(),
                    (None, r) => or_dash(r),
                };
                t.row(vec![
                    c.id.to_string(),
                    source,
                    run,
                    or_dash(c.node),
                    or_dash(c.started_at),
                    or_dash(c.duration),
                    or_dash(c.exit_code),
                    c.attempts.to_string(),
                    c.value.len().to_string(),
                ]);
            }
            print!("{}", t.render());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `JOB` or `JOB:DEP,DEP`.
fn step(text: &str) -> anyhow::Result<Value> {
    let (job, deps) = match text.split_once(':') {
        Some((job, deps)) => (
            job,
            deps.split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .collect::<Vec<_>>(),
        ),
        None => (text, Vec::new()),
    };
    if job.trim().is_empty() {
        bail!("--step `{text}` must be JOB or JOB:DEP,DEP");
    }
    Ok(json!({ "job": job.trim(), "depends_on": deps }))
}

pub async fn pipeline(
    client: &Client,
    out: Printer,
    cmd: PipelineCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        PipelineCommand::Create {
            name,
            steps,
            on_failure,
        } => {
            let steps = steps
                .iter()
                .map(|s| step(s))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let body = json!({ "name": name, "steps": steps, "on_failure": on_failure });
            let p: Pipeline = client.post("/v1/pipelines", Some(&body)).await?;
            print_pipeline(client, out, &p).await?;
        }
        PipelineCommand::List(list) => {
            let all: Vec<Pipeline> = list.fetch(client, "/v1/pipelines").await?;
            if out.0 == OutputFormat::Json {
                out.json(&all)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(vec!["ID", "NAME", "NAMESPACE", "STEPS", "ON FAILURE"]);
            for p in &all {
                t.row(vec![
                    p.id.to_string(),
                    p.spec.name.clone(),
                    p.spec.namespace.to_string(),
                    p.spec.steps.len().to_string(),
                    p.spec.on_failure.as_str().into(),
                ]);
            }
            print!("{}", t.render());
        }
        PipelineCommand::Show { pipeline } => {
            let p: Pipeline = client
                .get(&format!("/v1/pipelines/{}", seg(&pipeline)))
                .await?;
            print_pipeline(client, out, &p).await?;
        }
        PipelineCommand::Delete { pipeline } => {
            let p: Pipeline = client
                .delete(&format!("/v1/pipelines/{}", seg(&pipeline)))
                .await?;
            match out.0 {
                OutputFormat::Json => out.json(&p)?,
                OutputFormat::Table => println!("Deleted {} ({})", p.id, p.spec.name),
            }
        }
        PipelineCommand::Run { pipeline, at, wait } => {
            let body = at.map(|at| json!({ "at": at }));
            let run: PipelineRun = client
                .post(
                    &format!("/v1/pipelines/{}/run", seg(&pipeline)),
                    body.as_ref(),
                )
                .await?;
            return finish(client, out, run, wait).await;
        }
        PipelineCommand::Runs { pipeline } => {
            let runs: Vec<PipelineRun> = client
                .get(&format!("/v1/pipelines/{}/runs", seg(&pipeline)))
                .await?;
            if out.0 == OutputFormat::Json {
                out.json(&runs)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(vec![
                "ID",
                "STATUS",
                "STEPS DONE",
                "ATTEMPTS",
                "REQUESTED",
                "START AT",
                "FINISHED",
            ]);
            for r in &runs {
                let done = r.steps.iter().filter(|s| s.status.is_finished()).count();
                t.row(vec![
                    r.id.to_string(),
                    r.status.as_str().into(),
                    format!("{done}/{}", r.steps.len()),
                    r.attempts.to_string(),
                    r.requested_at.to_string(),
                    or_dash(r.start_at),
                    or_dash(r.finished_at),
                ]);
            }
            print!("{}", t.render());
        }
        PipelineCommand::Status { run } => {
            let run: PipelineRun = client
                .get(&format!("/v1/pipeline-runs/{}", seg(&run)))
                .await?;
            return finish(client, out, run, false).await;
        }
        PipelineCommand::Retry { run, wait } => {
            let run: PipelineRun = client
                .post(&format!("/v1/pipeline-runs/{}/retry", seg(&run)), None)
                .await?;
            return finish(client, out, run, wait).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a pipeline run (after waiting for it to end, with `wait`); the exit code says
/// whether it succeeded when waited for.
async fn finish(
    client: &Client,
    out: Printer,
    mut run: PipelineRun,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    while wait && !run.status.is_finished() {
        run = client
            .get(&format!("/v1/pipeline-runs/{}?wait=30s", run.id))
            .await
            .context("following the pipeline run")?;
    }
    if out.0 == OutputFormat::Json {
        out.json(&run)?;
    } else {
        let names = job_names(client).await?;
        println!(
            "Pipeline run {} of {}: {} (attempt {})",
            run.id,
            run.pipeline,
            run.status.as_str(),
            run.attempts
        );
        if let Some(at) = run.start_at {
            println!("Starts at {at}");
        }
        let mut t = Table::new(vec!["STEP", "JOB", "STATUS", "RUN", "REASON"]);
        for (i, s) in run.steps.iter().enumerate() {
            t.row(vec![
                (i + 1).to_string(),
                names
                    .get(&s.job)
                    .cloned()
                    .unwrap_or_else(|| s.job.to_string()),
                s.status.as_str().into(),
                or_dash(s.run),
                s.reason.clone().unwrap_or_default(),
            ]);
        }
        print!("{}", t.render());
    }
    Ok(
        if !wait || run.status == windflow_protocol::PipelineRunStatus::Succeeded {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

async fn job_names(client: &Client) -> anyhow::Result<HashMap<windflow_protocol::JobId, String>> {
    let jobs: Vec<Job> = client.get("/v1/jobs").await?;
    Ok(jobs.into_iter().map(|j| (j.id, j.spec.name)).collect())
}

async fn print_pipeline(client: &Client, out: Printer, p: &Pipeline) -> anyhow::Result<()> {
    if out.0 == OutputFormat::Json {
        return out.json(p);
    }
    let names = job_names(client).await?;
    let name =
        |j: &windflow_protocol::JobId| names.get(j).cloned().unwrap_or_else(|| j.to_string());
    println!(
        "Pipeline {} ({}), on failure: {}",
        p.id,
        p.spec.name,
        p.spec.on_failure.as_str()
    );
    let mut t = Table::new(vec!["STEP", "JOB", "DEPENDS ON"]);
    for (i, s) in p.spec.steps.iter().enumerate() {
        t.row(vec![
            (i + 1).to_string(),
            name(&s.job),
            s.depends_on.iter().map(name).collect::<Vec<_>>().join(", "),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}
