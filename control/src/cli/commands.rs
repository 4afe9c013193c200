//! The client commands: each asks the API and prints a table or JSON.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::{Map, Value, json};
use windflow_protocol::{Context, DriverConfig, Job, Run, RunStatus};

use super::client::Client;
use super::config::{CliConfig, DEFAULT_ADDRESS, server_urls};
use super::table::{Table, or_dash};
use super::{
    AgentCommand, ClusterCommand, ClusterTokenCommand, Command, JobCommand, JobCreateArgs,
    NodeCommand, OutputFormat, RunCommand, SecretsCommand, SnapshotCommand,
};

/// The exit code of `job run --wait` when the run timed out, as timeout(1) uses.
pub const EXIT_TIMED_OUT: u8 = 124;

/// Where and how the CLI reaches the API, from flags or the environment; the config file
/// fills in what they leave out.
#[derive(Debug, Default)]
pub struct Connect {
    pub addr: Option<String>,
    pub token: Option<String>,
    pub ca_cert: Option<std::path::PathBuf>,
    pub namespace: Option<String>,
}

pub async fn run(
    command: Command,
    connect: Connect,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let file = CliConfig::load_default()?;
    let address = connect
        .addr
        .or(file.address)
        .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
    let ca_cert = connect.ca_cert.or(file.ca_cert);
    let client = Client::new(
        server_urls(&address),
        connect.token.or(file.token),
        ca_cert.as_deref(),
    )?
    .in_namespace(connect.namespace);
    let out = Printer(output);
    match command {
        Command::Job(cmd) => job(&client, out, cmd).await,
        Command::Run(RunCommand::Show { run }) => {
            let run: Run = client.get(&format!("/v1/runs/{}", seg(&run))).await?;
            out.run(&run)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Context(cmd) => super::pipelines::context(&client, out, cmd).await,
        Command::Pipeline(cmd) => super::pipelines::pipeline(&client, out, cmd).await,
        Command::Cluster(ClusterCommand::Members) => {
            let members: Vec<Value> = client.get("/v1/cluster/members").await?;
            print_members(out, &members)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster(ClusterCommand::Join { name, address }) => {
            let body = json!({ "name": name, "address": address });
            let members: Vec<Value> = client.post("/v1/cluster/members", Some(&body)).await?;
            print_members(out, &members)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster(ClusterCommand::Remove { name }) => {
            let members: Vec<Value> = client
                .delete(&format!("/v1/cluster/members/{}", seg(&name)))
                .await?;
            print_members(out, &members)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster(ClusterCommand::Token(cmd)) => cluster_token(&client, out, cmd).await,
        Command::Agent(AgentCommand::Token(cmd)) => {
            super::agents::agent_token(&client, out, cmd).await
        }
        Command::Node(NodeCommand::Revoke { node }) => {
            super::agents::node_revoke(&client, out, &node).await
        }
        Command::Node(NodeCommand::Show { node }) => super::nodes::show(&client, out, &node).await,
        Command::Node(NodeCommand::Drain {
            node,
            deadline,
            cancel,
        }) => super::nodes::drain(&client, out, &node, deadline, cancel).await,
        Command::Node(NodeCommand::Eligibility { node, state }) => {
            super::nodes::eligibility(&client, out, &node, &state).await
        }
        Command::Cluster(ClusterCommand::Snapshot(SnapshotCommand::Save { file })) => {
            let bytes = client.get_bytes("/v1/cluster/snapshot").await?;
            crate::server::write_secret_bytes(&file, &bytes)?;
            println!(
                "Saved {} bytes of cluster state to {}",
                bytes.len(),
                file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster(ClusterCommand::Snapshot(SnapshotCommand::Restore { file })) => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let answer: Value = client.post_bytes("/v1/cluster/restore", bytes).await?;
            match output {
                OutputFormat::Json => out.json(&answer)?,
                OutputFormat::Table => println!(
                    "Restored {} keys of state taken at {}",
                    text(&answer["restored_keys"]),
                    text(&answer["taken_at"])
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Alloc(cmd) => super::allocs::alloc(&client, out, cmd).await,
        Command::Deployment(cmd) => super::deployments::deployment(&client, out, cmd).await,
        Command::Schedule(cmd) => super::schedules::schedule(&client, out, cmd).await,
        Command::Webhook(cmd) => super::webhooks::webhook(&client, out, cmd).await,
        Command::Stack(cmd) => super::stacks::stack(&client, out, cmd).await,
        Command::Template(cmd) => super::stacks::template(&client, out, cmd).await,
        Command::Export { file } => super::export::export(&client, out, file.as_deref()).await,
        Command::Import { file, dry_run } => {
            super::export::import(&client, out, &file, dry_run).await
        }
        Command::Node(NodeCommand::List) => {
            let nodes: Vec<Value> = client.get("/v1/nodes").await?;
            if output == OutputFormat::Json {
                out.json(&nodes)?;
            } else {
                let mut t = Table::new(vec![
                    "ID",
                    "NAME",
                    "STATUS",
                    "ELIGIBILITY",
                    "DRAIN",
                    "DRIVERS",
                    "LAST SEEN",
                    "LABELS",
                ]);
                for n in &nodes {
                    let drivers: Vec<&str> = n["drivers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    t.row(vec![
                        text(&n["id"]),
                        text(&n["name"]),
                        text(&n["status"]),
                        text(&n["eligibility"]),
                        if n["drain"].is_null() {
                            "-"
                        } else {
                            "draining"
                        }
                        .to_owned(),
                        drivers.join(","),
                        text(&n["last_seen_at"]),
                        labels_text(&n["labels"]),
                    ]);
                }
                print!("{}", t.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Login {
            user,
            password_stdin,
            ttl,
            ca_fingerprint,
        } => {
            let login = super::identity::Login {
                user,
                password_stdin,
                ttl,
                ca_fingerprint,
            };
            super::identity::login(client, out, login).await
        }
        Command::Logout => super::identity::logout(&client).await,
        Command::Whoami => super::identity::whoami(&client, out).await,
        Command::Namespace(cmd) => super::namespaces::namespace(&client, out, cmd).await,
        Command::User(cmd) => super::identity::user(&client, out, cmd).await,
        Command::Token(cmd) => super::identity::token(&client, out, cmd).await,
        Command::Audit(cmd) => super::identity::audit(&client, out, cmd).await,
        Command::LogLevel { level } => super::identity::log_level(&client, out, level).await,
        Command::Secrets(SecretsCommand::RotateKey) => {
            let rotated: Value = client.post("/v1/secrets/rotate", None).await?;
            match out.0 {
                OutputFormat::Json => out.json(&rotated)?,
                OutputFormat::Table => println!(
                    "New cluster key {} is current on every server (was {}); re-encrypted {} secret value(s) in {} task(s).",
                    rotated["key"].as_str().unwrap_or("?"),
                    rotated["previous"].as_str().unwrap_or("?"),
                    rotated["resealed_values"],
                    rotated["resealed_tasks"],
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Secrets(SecretsCommand::DropOldKeys) => {
            let dropped: Value = client.post("/v1/secrets/drop-old-keys", None).await?;
            match out.0 {
                OutputFormat::Json => out.json(&dropped)?,
                OutputFormat::Table => println!(
                    "Dropped {} old key(s); the key ring holds {} (current {}).",
                    dropped["dropped"].as_array().map_or(0, Vec::len),
                    dropped["keys"].as_array().map_or(0, Vec::len),
                    dropped["current"].as_str().unwrap_or("?"),
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Server(_) | Command::Dev(_) | Command::Ca(_) => bail!("not a client command"),
    }
}

async fn job(client: &Client, out: Printer, cmd: JobCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JobCommand::Create(mut args) => {
            let runs = std::mem::take(&mut args.runs);
            let mut body = create_body(*args)?;
            if let Value::Object(fields) = &mut body {
                super::pipelines::run_fields(client, runs, fields).await?;
            }
            let job: Job = client.post("/v1/jobs", Some(&body)).await?;
            out.job(&job)?;
        }
        JobCommand::List(list) => {
            let jobs: Vec<Job> = list.fetch(client, "/v1/jobs").await?;
            out.jobs(&jobs)?;
        }
        JobCommand::Show { job } => {
            let job: Job = client.get(&format!("/v1/jobs/{}", seg(&job))).await?;
            out.job(&job)?;
            if out.0 == OutputFormat::Table {
                super::pipelines::print_run_settings(&job);
            }
            if job.spec.job_type == windflow_protocol::JobType::Service
                && out.0 == OutputFormat::Table
            {
                super::allocs::print_placement(client, &job).await?;
            }
        }
        JobCommand::Runs { job } => {
            let runs: Vec<Run> = client.get(&format!("/v1/jobs/{}/runs", seg(&job))).await?;
            out.runs(&runs)?;
        }
        JobCommand::Delete { job } => {
            let job: Job = client.delete(&format!("/v1/jobs/{}", seg(&job))).await?;
            match out.0 {
                OutputFormat::Json => out.json(&job)?,
                OutputFormat::Table => println!("Deleted {} ({})", job.id, job.spec.name),
            }
        }
        JobCommand::Copy { job, name } => {
            return super::pipelines::job_copy(client, out, &job, &name).await;
        }
        JobCommand::Retention {
            keep_runs,
            keep_for,
            unlimited,
        } => {
            return super::pipelines::job_retention(client, out, keep_runs, keep_for, unlimited)
                .await;
        }
        JobCommand::Update(args) => {
            return super::deployments::update(client, out, create_body(*args)?).await;
        }
        JobCommand::Scale { job, count, group } => {
            return super::deployments::scale(client, out, job, count, group).await;
        }
        JobCommand::Versions { job } => {
            return super::deployments::versions(client, out, job).await;
        }
        JobCommand::Run { job, wait } => {
            let run: Run = client
                .post(&format!("/v1/jobs/{}/run", seg(&job)), None)
                .await?;
            if !wait {
                out.run(&run)?;
                return Ok(ExitCode::SUCCESS);
            }
            return wait_for_run(client, out, run).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for the run to end, prints its output and exits like the command did.
async fn wait_for_run(client: &Client, out: Printer, mut run: Run) -> anyhow::Result<ExitCode> {
    while !run.status.is_finished() {
        run = client.get(&format!("/v1/runs/{}?wait=30s", run.id)).await?;
    }
    let ctx: Context = client.get(&format!("/v1/contexts/{}", run.job)).await?;
    match out.0 {
        OutputFormat::Json => out.json(&json!({ "run": run, "context": ctx }))?,
        OutputFormat::Table => {
            // The context belongs to the job: show it only if this run wrote it.
            if ctx.run == Some(run.id) {
                print!("{}", ctx.value);
            }
            if run.status != RunStatus::Succeeded {
                eprint!("{}", run.stderr_tail);
                let why = run
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("exit code {}", or_dash(run.exit_code)));
                eprintln!(
                    "run {} {} after {} attempt(s): {why}",
                    run.id,
                    run.status.as_str(),
                    run.attempts
                );
            }
        }
    }
    Ok(ExitCode::from(match (run.status, run.exit_code) {
        (RunStatus::Succeeded, _) => 0,
        (RunStatus::TimedOut, _) => EXIT_TIMED_OUT,
        (_, Some(code)) => u8::try_from(code).ok().filter(|c| *c != 0).unwrap_or(1),
        _ => 1,
    }))
}

fn create_body(args: JobCreateArgs) -> anyhow::Result<Value> {
    let mut body = Map::new();
    body.insert("name".into(), args.name.into());
    super::docker::add_task(&mut body, args.docker, args.cmd, args.workdir)?;
    let optional = [("timeout", args.timeout), ("retry_delay", args.retry_delay)];
    for (key, value) in optional {
        if let Some(v) = value {
            body.insert(key.into(), v.into());
        }
    }
    if let Some(n) = args.retries {
        body.insert("max_retries".into(), n.into());
    }
    let mut env = Map::new();
    for pair in args.env {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--env `{pair}` must be KEY=VALUE"))?;
        env.insert(k.to_owned(), v.into());
    }
    if !env.is_empty() {
        body.insert("env".into(), env.into());
    }
    if args.job_type != "batch" {
        body.insert("type".into(), args.job_type.into());
    }
    if let Some(n) = args.count {
        body.insert("count".into(), n.into());
    }
    let mut resources = Map::new();
    for (key, value) in [
        ("cpu_mhz", args.cpu),
        ("memory_mb", args.memory),
        ("disk_mb", args.disk),
    ] {
        if let Some(v) = value {
            resources.insert(key.into(), v.into());
        }
    }
    if !resources.is_empty() {
        body.insert("resources".into(), resources.into());
    }
    let constraints = args
        .constraints
        .iter()
        .map(|rule| super::allocs::constraint(rule))
        .collect::<anyhow::Result<Vec<Value>>>()?;
    if !constraints.is_empty() {
        body.insert("constraints".into(), constraints.into());
    }
    if let Some(p) = args.placement {
        body.insert("placement".into(), p.into());
    }
    super::nodes::policies(&args.policies, &mut body);
    super::deployments::add_rollout(&mut body, args.rollout);
    let mut secret_env = Map::new();
    for pair in args.secret_env {
        // The error names the variable, never the value.
        let Some((k, v)) = pair.split_once('=') else {
            anyhow::bail!("--secret-env must be KEY=VALUE");
        };
        secret_env.insert(k.to_owned(), v.into());
    }
    if !secret_env.is_empty() {
        body.insert("secret_env".into(), secret_env.into());
    }
    Ok(body.into())
}

async fn cluster_token(
    client: &Client,
    out: Printer,
    cmd: ClusterTokenCommand,
) -> anyhow::Result<ExitCode> {
    let tokens: Vec<Value> = match cmd {
        ClusterTokenCommand::Create { ttl, uses } => {
            let body = json!({ "ttl": ttl, "uses": uses });
            let created: Value = client.post("/v1/cluster/tokens", Some(&body)).await?;
            if out.0 == OutputFormat::Json {
                out.json(&created)?;
            } else {
                println!(
                    "Server join token {} (shown once; valid until {}, {} use(s)):\n  {}\n\n\
                     Start the new server with:\n  windflow server --name NAME --data-dir DIR \\\n    \
                     --join-token {} --join-via THIS_SERVER_QUIC_ADDR\n\
                     then add it with `windflow cluster join NAME --address ITS_QUIC_ADDR`.",
                    text(&created["id"]),
                    text(&created["expires_at"]),
                    if created["uses_allowed"].is_null() {
                        "unlimited".to_owned()
                    } else {
                        text(&created["uses_allowed"])
                    },
                    text(&created["token"]),
                    text(&created["token"]),
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        ClusterTokenCommand::List => client.get("/v1/cluster/tokens").await?,
        ClusterTokenCommand::Revoke { id } => {
            let revoked: Value = client
                .delete(&format!("/v1/cluster/tokens/{}", seg(&id)))
                .await?;
            vec![revoked]
        }
    };
    print_join_tokens(out, &tokens)
}

/// Join tokens as a table (or JSON): never secrets, there are none to show.
pub(super) fn print_join_tokens(out: Printer, tokens: &[Value]) -> anyhow::Result<ExitCode> {
    if out.0 == OutputFormat::Json {
        out.json(&tokens)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(vec![
        "ID",
        "KIND",
        "CREATED",
        "EXPIRES",
        "USES",
        "LAST USED BY",
        "REVOKED",
        "LABELS",
    ]);
    for tk in tokens {
        let allowed = if tk["uses_allowed"].is_null() {
            "∞".to_owned()
        } else {
            text(&tk["uses_allowed"])
        };
        t.row(vec![
            text(&tk["id"]),
            text(&tk["kind"]),
            text(&tk["created_at"]),
            text(&tk["expires_at"]),
            format!("{}/{allowed}", text(&tk["uses"])),
            text(&tk["last_used_by"]),
            text(&tk["revoked_at"]),
            labels_text(&tk["labels"]),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

/// `k=v,k=v` of a labels object, `-` when there are none.
pub(super) fn labels_text(labels: &Value) -> String {
    let pairs: Vec<String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    if pairs.is_empty() {
        "-".into()
    } else {
        pairs.join(",")
    }
}

fn print_members(out: Printer, members: &[Value]) -> anyhow::Result<()> {
    if out.0 == OutputFormat::Json {
        return out.json(members);
    }
    let mut t = Table::new(vec![
        "NAME", "ID", "ADDRESS", "ROLE", "LEADER", "MATCHED", "LAG",
    ]);
    for m in members {
        let leader = if m["leader"] == Value::Bool(true) {
            "*"
        } else {
            ""
        };
        t.row(vec![
            text(&m["name"]),
            text(&m["id"]),
            text(&m["address"]),
            text(&m["role"]),
            leader.into(),
            text(&m["matched_index"]),
            text(&m["lag"]),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// A path segment: IDs and names are plain, but keep what a user types from breaking the URL.
pub(super) fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

#[derive(Clone, Copy)]
pub(super) struct Printer(pub(super) OutputFormat);

impl Printer {
    pub(super) fn json<T: Serialize + ?Sized>(&self, v: &T) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    }

    /// One job: an object in JSON.
    fn job(&self, job: &Job) -> anyhow::Result<()> {
        match self.0 {
            OutputFormat::Json => self.json(job),
            OutputFormat::Table => self.jobs(std::slice::from_ref(job)),
        }
    }

    /// A list of jobs: always an array in JSON.
    fn jobs(&self, jobs: &[Job]) -> anyhow::Result<()> {
        if self.0 == OutputFormat::Json {
            return self.json(jobs);
        }
        let mut t = Table::new(vec![
            "ID",
            "NAMESPACE",
            "NAME",
            "TYPE",
            "COMMAND",
            "TIMEOUT",
            "RETRIES",
            "SECRETS",
            "CREATED",
        ]);
        for job in jobs {
            let task = job.spec.tasks().next();
            let command = task.map(|t| match &t.driver {
                DriverConfig::Exec(e) => e.command.clone(),
                DriverConfig::Docker(d) => match d.cmd() {
                    Some(cmd) => format!("{} {}", d.image, cmd.join(" ")),
                    None => d.image.clone(),
                },
            });
            t.row(vec![
                job.id.to_string(),
                job.spec.namespace.to_string(),
                job.spec.name.clone(),
                format!("{:?}", job.spec.job_type).to_lowercase(),
                or_dash(command),
                or_dash(task.and_then(|t| t.timeout)),
                or_dash(task.map(|t| t.retry.max_retries)),
                // Names only: the API never returns a secret's value.
                or_dash(
                    task.filter(|t| !t.secret_env.is_empty())
                        .map(|t| t.secret_env.keys().cloned().collect::<Vec<_>>().join(",")),
                ),
                job.created_at.to_string(),
            ]);
        }
        print!("{}", t.render());
        Ok(())
    }

    fn run(&self, run: &Run) -> anyhow::Result<()> {
        match self.0 {
            OutputFormat::Json => self.json(run),
            OutputFormat::Table => self.runs(std::slice::from_ref(run)),
        }
    }

    fn runs(&self, runs: &[Run]) -> anyhow::Result<()> {
        if self.0 == OutputFormat::Json {
            return self.json(runs);
        }
        let mut t = Table::new(vec![
            "ID",
            "JOB",
            "STATUS",
            "NODE",
            "ATTEMPTS",
            "EXIT",
            "DURATION",
            "REQUESTED",
        ]);
        for r in runs {
            t.row(vec![
                r.id.to_string(),
                r.job.to_string(),
                r.status.as_str().into(),
                or_dash(r.node),
                r.attempts.to_string(),
                or_dash(r.exit_code),
                or_dash(r.duration),
                r.requested_at.to_string(),
            ]);
        }
        print!("{}", t.render());
        Ok(())
    }
}
