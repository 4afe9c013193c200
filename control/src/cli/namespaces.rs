//! `windflow namespace create|list|show|delete`.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::client::Client;
use super::commands::{Printer, seg, text};
use super::table::Table;
use super::{NamespaceCommand, OutputFormat};

pub async fn namespace(
    client: &Client,
    out: Printer,
    cmd: NamespaceCommand,
) -> anyhow::Result<ExitCode> {
    let namespaces: Vec<Value> = match cmd {
        NamespaceCommand::Create { name, description } => {
            let body = json!({ "name": name, "description": description });
            vec![client.post("/v1/namespaces", Some(&body)).await?]
        }
        NamespaceCommand::List => client.get("/v1/namespaces").await?,
        NamespaceCommand::Show { name } => {
            vec![
                client
                    .get(&format!("/v1/namespaces/{}", seg(&name)))
                    .await?,
            ]
        }
        NamespaceCommand::Delete { name } => {
            let gone: Value = client
                .delete(&format!("/v1/namespaces/{}", seg(&name)))
                .await?;
            match out.0 {
                OutputFormat::Json => out.json(&gone)?,
                OutputFormat::Table => println!("Deleted namespace {}", text(&gone["name"])),
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    if out.0 == OutputFormat::Json {
        out.json(&namespaces)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(vec!["NAME", "JOBS", "CREATED", "DESCRIPTION"]);
    for n in &namespaces {
        t.row(vec![
            text(&n["name"]),
            text(&n["jobs"]),
            text(&n["created_at"]),
            text(&n["description"]),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}
