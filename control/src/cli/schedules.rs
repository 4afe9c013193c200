//! `windflow schedule create|list|show|enable|disable|rm|next`.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::client::Client;
use super::commands::{Printer, seg, text};
use super::table::Table;
use super::{OutputFormat, ScheduleCommand};

pub async fn schedule(
    client: &Client,
    out: Printer,
    cmd: ScheduleCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        ScheduleCommand::Create {
            name,
            cron,
            timezone,
            jobs,
            pipelines,
            overlap,
            catch_up,
        } => {
            let mut targets: Vec<Value> = jobs.iter().map(|j| json!({ "job": j })).collect();
            targets.extend(pipelines.iter().map(|p| json!({ "pipeline": p })));
            let mut body = json!({
                "name": name,
                "cron": cron,
                "timezone": timezone,
                "targets": targets,
                "overlap": overlap,
                "catch_up": catch_up,
            });
            if let Some(ns) = client.namespace() {
                body["namespace"] = json!(ns);
            }
            let s: Value = client.post("/v1/schedules", Some(&body)).await?;
            if out.0 == OutputFormat::Json {
                out.json(&s)?;
            } else {
                println!(
                    "Created schedule {} ({}), next due {}",
                    text(&s["id"]),
                    text(&s["spec"]["name"]),
                    text(&s["next_due"])
                );
            }
        }
        ScheduleCommand::List => {
            let all: Vec<Value> = client.get("/v1/schedules").await?;
            if out.0 == OutputFormat::Json {
                out.json(&all)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = Table::new(vec![
                "ID", "NAME", "CRON", "TIMEZONE", "TARGETS", "ENABLED", "OVERLAP", "CATCH-UP",
                "LAST DUE", "NEXT DUE",
            ]);
            for s in &all {
                let spec = &s["spec"];
                t.row(vec![
                    text(&s["id"]),
                    text(&spec["name"]),
                    text(&spec["cron"]),
                    text(&spec["timezone"]),
                    targets(&spec["targets"]),
                    text(&s["enabled"]),
                    text(&spec["overlap"]),
                    text(&spec["catch_up"]),
                    text(&s["last_due"]),
                    text(&s["next_due"]),
                ]);
            }
            print!("{}", t.render());
        }
        ScheduleCommand::Show { schedule, fires } => {
            let s: Value = client
                .get(&format!("/v1/schedules/{}?fires={fires}", seg(&schedule)))
                .await?;
            if out.0 == OutputFormat::Json {
                out.json(&s)?;
            } else {
                print!("{}", show(&s));
            }
        }
        ScheduleCommand::Enable { schedule } => toggle(client, out, &schedule, "enable").await?,
        ScheduleCommand::Disable { schedule } => toggle(client, out, &schedule, "disable").await?,
        ScheduleCommand::Rm { schedule } => {
            let s: Value = client
                .delete(&format!("/v1/schedules/{}", seg(&schedule)))
                .await?;
            if out.0 == OutputFormat::Json {
                out.json(&s)?;
            } else {
                println!(
                    "Deleted schedule {} ({})",
                    text(&s["id"]),
                    text(&s["spec"]["name"])
                );
            }
        }
        ScheduleCommand::Next { schedule, count } => {
            let due: Vec<Value> = client
                .get(&format!(
                    "/v1/schedules/{}/next?count={count}",
                    seg(&schedule)
                ))
                .await?;
            if out.0 == OutputFormat::Json {
                out.json(&due)?;
            } else {
                let mut t = Table::new(vec!["DUE (UTC)", "LOCAL"]);
                for d in &due {
                    t.row(vec![text(&d["at"]), text(&d["local"])]);
                }
                print!("{}", t.render());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn toggle(client: &Client, out: Printer, schedule: &str, verb: &str) -> anyhow::Result<()> {
    let s: Value = client
        .post(&format!("/v1/schedules/{}/{verb}", seg(schedule)), None)
        .await?;
    if out.0 == OutputFormat::Json {
        out.json(&s)?;
    } else {
        println!(
            "Schedule {} {}d; next due {}",
            text(&s["id"]),
            verb,
            text(&s["next_due"])
        );
    }
    Ok(())
}

fn targets(v: &Value) -> String {
    v.as_array()
        .map(|all| {
            all.iter()
                .map(|t| {
                    t.as_object()
                        .and_then(|o| o.values().next())
                        .map(text)
                        .unwrap_or_else(|| "?".into())
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn show(s: &Value) -> String {
    let spec = &s["spec"];
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
    line("ID:", text(&s["id"]));
    line("Name:", text(&spec["name"]));
    line("Namespace:", text(&spec["namespace"]));
    line(
        "Cron:",
        format!("{} ({})", text(&spec["cron"]), text(&spec["timezone"])),
    );
    line("Targets:", targets(&spec["targets"]));
    line("Enabled:", text(&s["enabled"]));
    line("Overlap:", text(&spec["overlap"]));
    line("Catch-up:", text(&spec["catch_up"]));
    line("Fires:", text(&s["fires"]));
    line("Last due:", text(&s["last_due"]));
    line("Next due:", text(&s["next_due"]));
    let mut t = Table::new(vec![
        "#", "DUE", "RECORDED", "OUTCOME", "RUNS", "MISSED", "NOTES",
    ]);
    for f in s["recent_fires"].as_array().into_iter().flatten() {
        let launches = f["launches"].as_array().cloned().unwrap_or_default();
        let runs: Vec<String> = launches
            .iter()
            .filter(|l| !l["run"].is_null())
            .map(|l| text(&l["run"]))
            .collect();
        let mut notes: Vec<String> = launches
            .iter()
            .filter(|l| !l["error"].is_null())
            .map(|l| format!("{}: {}", target(&l["target"]), text(&l["error"])))
            .collect();
        if let Some(replaced) = f["replaced"].as_array().filter(|r| !r.is_empty()) {
            notes.push(format!(
                "replaced {}",
                replaced.iter().map(text).collect::<Vec<_>>().join(",")
            ));
        }
        let outcome = match &f["outcome"] {
            Value::String(s) => s.clone(),
            Value::Object(o) if o.contains_key("skipped_overlap") => "skipped (overlap)".into(),
            other => text(other),
        };
        t.row(vec![
            text(&f["seq"]),
            text(&f["due"]),
            text(&f["at"]),
            outcome,
            runs.join(","),
            text(&f["missed"]),
            notes.join("; "),
        ]);
    }
    out.push_str("\nRecent fires:\n");
    out.push_str(&t.render());
    out
}

fn target(v: &Value) -> String {
    v.as_object()
        .and_then(|o| o.values().next())
        .map(text)
        .unwrap_or_else(|| "?".into())
}
