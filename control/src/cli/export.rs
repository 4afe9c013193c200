//! `windflow export [--file F]` and `windflow import FILE [--dry-run]`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::Value;

use super::OutputFormat;
use super::client::Client;
use super::commands::{Printer, text};
use super::table::Table;

/// Writes the export (YAML; JSON with `--output json`) to `file` or standard output.
pub async fn export(
    client: &Client,
    out: Printer,
    file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let path = match out.0 {
        OutputFormat::Json => "/v1/export?format=json",
        OutputFormat::Table => "/v1/export",
    };
    let bytes = client.get_bytes(path).await?;
    match file {
        Some(f) => {
            std::fs::write(f, &bytes).with_context(|| format!("writing {}", f.display()))?;
            eprintln!("Wrote the export to {}", f.display());
        }
        None => std::io::stdout()
            .write_all(&bytes)
            .context("writing the export")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends the file and prints the plan (dry run) or what was done, per entry.
pub async fn import(
    client: &Client,
    out: Printer,
    file: &Path,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let bytes = if file == Path::new("-") {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .context("reading the file from standard input")?;
        b
    } else {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))?
    };
    let path = if dry_run {
        "/v1/import?dry_run=true"
    } else {
        "/v1/import"
    };
    let answer: Value = client.post_bytes(path, bytes).await?;
    if out.0 == OutputFormat::Json {
        out.json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let entries = answer["entries"].as_array().cloned().unwrap_or_default();
    let mut t = Table::new(vec!["KIND", "NAME", "NAMESPACE", "ID", "ACTION"]);
    for e in &entries {
        t.row(vec![
            text(&e["kind"]),
            text(&e["name"]),
            text(&e["namespace"]),
            text(&e["id"]),
            match (dry_run, e["action"].as_str()) {
                (true, Some(a)) => format!("would {a}"),
                (false, Some("create")) => "created".into(),
                (false, Some("update")) => "updated".into(),
                _ => text(&e["action"]),
            },
        ]);
    }
    print!("{}", t.render());
    let count = |a: &str| entries.iter().filter(|e| e["action"] == a).count();
    let (c, u, n) = (count("create"), count("update"), count("unchanged"));
    if dry_run {
        println!("Dry run: {c} to create, {u} to update, {n} unchanged; nothing was changed.");
    } else {
        println!("Imported: {c} created, {u} updated, {n} unchanged.");
    }
    for s in answer["webhook_secrets"].as_array().into_iter().flatten() {
        println!(
            "Signing secret of new webhook {} ({}), shown once: {}",
            text(&s["webhook"]),
            text(&s["id"]),
            text(&s["secret"])
        );
    }
    Ok(ExitCode::SUCCESS)
}
