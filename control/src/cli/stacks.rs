//! `windflow stack deploy|list|show|rm` and `windflow template list|show|deploy`.
//!
//! `stack deploy` reads the compose file, the `env_file`s it names (relative to its
//! directory) and, from this environment, the variables it interpolates; it sends them
//! with the file, so the server sees nothing else of the shell.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::OutputFormat;
use super::client::Client;
use super::commands::{Printer, seg, text};
use super::table::Table;

#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Deploy a compose file as the stack NAME (again: its next version).
    Deploy {
        name: String,
        /// The compose file.
        #[arg(long, short = 'f', default_value = "docker-compose.yml")]
        file: PathBuf,
        /// The node to run it on [default: where it runs, else the ready docker node
        /// with the most free memory].
        #[arg(long)]
        node: Option<String>,
    },
    /// The stacks and how many of each service's replicas run.
    List,
    /// A stack's services, their state and ports.
    Show { name: String },
    /// Stop a stack's containers and delete its job.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// The built-in templates.
    List,
    /// A template's variables and compose file.
    Show { name: String },
    /// Deploy a template as a new stack; generated passwords are shown once.
    Deploy {
        template: String,
        /// The stack's name [default: the template's].
        #[arg(long)]
        name: Option<String>,
        /// A variable, KEY=VALUE; repeat for more.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// The node to run it on [default: the ready docker node with the most free memory].
        #[arg(long)]
        node: Option<String>,
    },
}

pub async fn stack(client: &Client, out: Printer, cmd: StackCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StackCommand::Deploy { name, file, node } => {
            let compose = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let dir = std::path::absolute(&file)
                .with_context(|| format!("finding the directory of {}", file.display()))?
                .parent()
                .map(|d| d.to_path_buf())
                .unwrap_or_else(|| PathBuf::from("/"));
            let (env_files, names) = crate::stacks::needs(&compose)
                .with_context(|| format!("reading {}", file.display()))?;
            let mut files = BTreeMap::new();
            for f in env_files {
                let path = dir.join(&f);
                match std::fs::read_to_string(&path) {
                    Ok(t) => {
                        files.insert(f, t);
                    }
                    // A required one missing is the server's error, naming the service.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                }
            }
            let variables: BTreeMap<String, String> = names
                .into_iter()
                .filter_map(|n| std::env::var(&n).ok().map(|v| (n, v)))
                .collect();
            let mut body = json!({
                "name": name,
                "compose": compose,
                "variables": variables,
                "env_files": files,
                "base_dir": dir.to_string_lossy(),
            });
            if let Some(n) = node {
                body["node"] = json!(n);
            }
            if let Some(ns) = client.namespace() {
                body["namespace"] = json!(ns);
            }
            let answer: Value = client.post("/v1/stacks", Some(&body)).await?;
            deployed(&out, &answer)?;
        }
        StackCommand::List => {
            let all: Vec<Value> = client.get("/v1/stacks").await?;
            if out.0 == OutputFormat::Json {
                out.json(&all)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(vec![
                "NAME",
                "NAMESPACE",
                "JOB",
                "VERSION",
                "NODE",
                "SERVICES",
            ]);
            for s in &all {
                let services: Vec<String> = s["services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| {
                        format!(
                            "{} {}/{}",
                            text(&v["name"]),
                            text(&v["running"]),
                            text(&v["replicas"])
                        )
                    })
                    .collect();
                t.row(vec![
                    text(&s["name"]),
                    text(&s["namespace"]),
                    text(&s["job"]),
                    text(&s["version"]),
                    text(&s["node"]),
                    services.join(", "),
                ]);
            }
            print!("{}", t.render());
        }
        StackCommand::Show { name } => {
            let s: Value = client.get(&format!("/v1/stacks/{}", seg(&name))).await?;
            if out.0 == OutputFormat::Json {
                out.json(&s)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "Stack {} ({}, namespace {}), version {}, on node {}",
                text(&s["name"]),
                text(&s["job"]),
                text(&s["namespace"]),
                text(&s["version"]),
                text(&s["node"])
            );
            print!("{}", services(&s).render());
        }
        StackCommand::Rm { name } => {
            let j: Value = client.delete(&format!("/v1/stacks/{}", seg(&name))).await?;
            if out.0 == OutputFormat::Json {
                out.json(&j)?;
            } else {
                println!(
                    "Removed stack {} ({}); its containers stop",
                    text(&j["spec"]["name"]),
                    text(&j["id"])
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn services(stack: &Value) -> Table {
    let mut t = Table::new(vec![
        "SERVICE", "IMAGE", "REPLICAS", "RUNNING", "HEALTHY", "PORTS",
    ]);
    for v in stack["services"].as_array().into_iter().flatten() {
        let ports: Vec<String> = v["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}:{}->{}/{}",
                    text(&p["host_ip"]),
                    text(&p["host_port"]),
                    text(&p["container_port"]),
                    text(&p["protocol"])
                )
            })
            .collect();
        t.row(vec![
            text(&v["name"]),
            text(&v["image"]),
            text(&v["replicas"]),
            text(&v["running"]),
            text(&v["healthy"]),
            ports.join(", "),
        ]);
    }
    t
}

/// A deploy's answer: what changed and, once, the generated passwords.
fn deployed(out: &Printer, answer: &Value) -> anyhow::Result<()> {
    if out.0 == OutputFormat::Json {
        return out.json(answer);
    }
    let s = &answer["stack"];
    let what = if answer["created"] == json!(true) {
        "Created"
    } else if answer["changed"] == json!(true) {
        "Updated"
    } else {
        "Unchanged:"
    };
    println!(
        "{what} stack {} ({}), version {}, on node {}",
        text(&s["name"]),
        text(&s["job"]),
        text(&s["version"]),
        text(&s["node"])
    );
    if let Some(d) = answer["deployment"].as_object() {
        println!("Rolling out in deployment {}", text(&d["id"]));
    }
    print!("{}", services(s).render());
    if let Some(secrets) = answer["secrets"].as_object().filter(|m| !m.is_empty()) {
        println!("Generated secrets (shown once; stored sealed):");
        for (k, v) in secrets {
            println!("  {k}={}", text(v));
        }
    }
    Ok(())
}

pub async fn template(
    client: &Client,
    out: Printer,
    cmd: TemplateCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        TemplateCommand::List => {
            let all: Vec<Value> = client.get("/v1/templates").await?;
            if out.0 == OutputFormat::Json {
                out.json(&all)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(vec!["NAME", "DESCRIPTION"]);
            for x in &all {
                t.row(vec![text(&x["name"]), text(&x["description"])]);
            }
            print!("{}", t.render());
        }
        TemplateCommand::Show { name } => {
            let x: Value = client.get(&format!("/v1/templates/{}", seg(&name))).await?;
            if out.0 == OutputFormat::Json {
                out.json(&x)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!("{}: {}\n", text(&x["name"]), text(&x["description"]));
            let mut t = Table::new(vec!["VARIABLE", "DEFAULT", "DESCRIPTION"]);
            for v in x["variables"].as_array().into_iter().flatten() {
                let default = if v["generated"] == json!(true) {
                    "(generated password)".to_owned()
                } else {
                    text(&v["default"])
                };
                t.row(vec![text(&v["name"]), default, text(&v["description"])]);
            }
            print!("{}", t.render());
            println!("\n{}", x["compose"].as_str().unwrap_or_default());
        }
        TemplateCommand::Deploy {
            template,
            name,
            set,
            node,
        } => {
            let mut sets = BTreeMap::new();
            for pair in &set {
                let Some((k, v)) = pair.split_once('=') else {
                    bail!("--set {pair}: expected KEY=VALUE");
                };
                sets.insert(k.to_owned(), v.to_owned());
            }
            let mut body = json!({ "set": sets });
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(n) = node {
                body["node"] = json!(n);
            }
            if let Some(ns) = client.namespace() {
                body["namespace"] = json!(ns);
            }
            let answer: Value = client
                .post(
                    &format!("/v1/templates/{}/deploy", seg(&template)),
                    Some(&body),
                )
                .await?;
            deployed(&out, &answer)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
