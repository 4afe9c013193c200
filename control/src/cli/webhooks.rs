//! `windflow webhook list|create|rm|deliveries`.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::client::Client;
use super::commands::{Printer, seg, text};
use super::table::Table;
use super::{OutputFormat, WebhookCommand};

pub async fn webhook(
    client: &Client,
    out: Printer,
    cmd: WebhookCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        WebhookCommand::Create {
            name,
            url,
            events,
            secret_stdin,
        } => {
            let mut body = json!({ "name": name, "url": url, "events": events });
            if secret_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("reading the secret from standard input")?;
                let secret = line.trim_end_matches(['\r', '\n']);
                if secret.is_empty() {
                    bail!("--secret-stdin: standard input held no secret");
                }
                body["secret"] = json!(secret);
            }
            if let Some(ns) = client.namespace() {
                body["namespace"] = json!(ns);
            }
            let w: Value = client.post("/v1/webhooks", Some(&body)).await?;
            if out.0 == OutputFormat::Json {
                out.json(&w)?;
            } else {
                println!(
                    "Created webhook {} ({})",
                    text(&w["id"]),
                    text(&w["spec"]["name"])
                );
                println!("Signing secret (shown once): {}", text(&w["secret"]));
                println!(
                    "Each POST carries X-Windflow-Signature: the hex HMAC-SHA256 of its body under this secret."
                );
            }
        }
        WebhookCommand::List => {
            let all: Vec<Value> = client.get("/v1/webhooks").await?;
            if out.0 == OutputFormat::Json {
                out.json(&all)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(vec!["ID", "NAME", "URL", "EVENTS", "DONE UP TO", "CREATED"]);
            for w in &all {
                let events: Vec<String> = w["spec"]["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect();
                t.row(vec![
                    text(&w["id"]),
                    text(&w["spec"]["name"]),
                    text(&w["spec"]["url"]),
                    events.join(","),
                    text(&w["delivered_upto"]),
                    text(&w["created_at"]),
                ]);
            }
            print!("{}", t.render());
        }
        WebhookCommand::Rm { webhook } => {
            let w: Value = client
                .delete(&format!("/v1/webhooks/{}", seg(&webhook)))
                .await?;
            if out.0 == OutputFormat::Json {
                out.json(&w)?;
            } else {
                println!(
                    "Deleted webhook {} ({})",
                    text(&w["id"]),
                    text(&w["spec"]["name"])
                );
            }
        }
        WebhookCommand::Deliveries { webhook, limit } => {
            let all: Vec<Value> = client
                .get(&format!(
                    "/v1/webhooks/{}/deliveries?limit={limit}",
                    seg(&webhook)
                ))
                .await?;
            if out.0 == OutputFormat::Json {
                out.json(&all)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(vec![
                "#", "EVENT", "KIND", "ATTEMPT", "AT", "STATUS", "OUTCOME", "ERROR",
            ]);
            for d in &all {
                t.row(vec![
                    text(&d["seq"]),
                    text(&d["event"]),
                    text(&d["kind"]),
                    text(&d["attempt"]),
                    text(&d["at"]),
                    text(&d["status"]),
                    text(&d["outcome"]),
                    text(&d["error"]),
                ]);
            }
            print!("{}", t.render());
        }
    }
    Ok(ExitCode::SUCCESS)
}
