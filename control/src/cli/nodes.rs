//! `windflow node show|drain|eligibility`, and the restart/reschedule flags of
//! `windflow job create`.

use std::process::ExitCode;

use serde_json::{Map, Value, json};

use super::args::PolicyArgs;
use super::client::Client;
use super::commands::{Printer, seg, text};
use super::{OutputFormat, table::Table};

fn print_node_line(out: &Printer, n: &Value, what: &str) -> anyhow::Result<()> {
    if out.0 == OutputFormat::Json {
        return out.json(n);
    }
    println!(
        "Node {} ({}): {what}; status {}, {}, drain {}",
        text(&n["id"]),
        text(&n["name"]),
        text(&n["status"]),
        text(&n["eligibility"]),
        drain_text(&n["drain"]),
    );
    Ok(())
}

fn drain_text(d: &Value) -> String {
    if d.is_null() {
        return "none".into();
    }
    match &d["deadline"] {
        Value::Null => format!("since {}, no deadline", text(&d["started_at"])),
        deadline => format!(
            "since {}, deadline {}",
            text(&d["started_at"]),
            text(deadline)
        ),
    }
}

pub(super) async fn drain(
    client: &Client,
    out: Printer,
    node: &str,
    deadline: Option<String>,
    cancel: bool,
) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/nodes/{}/drain", seg(node));
    let n: Value = if cancel {
        client.delete(&path).await?
    } else {
        let body = match deadline {
            Some(d) => json!({ "deadline": d }),
            None => json!({}),
        };
        client.post(&path, Some(&body)).await?
    };
    let what = if cancel {
        "drain cancelled (still ineligible: `windflow node eligibility NODE on` to take work again)"
    } else {
        "draining"
    };
    print_node_line(&out, &n, what)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn eligibility(
    client: &Client,
    out: Printer,
    node: &str,
    state: &str,
) -> anyhow::Result<ExitCode> {
    let eligibility = if state == "on" {
        "eligible"
    } else {
        "ineligible"
    };
    let n: Value = client
        .put(
            &format!("/v1/nodes/{}/eligibility", seg(node)),
            &json!({ "eligibility": eligibility }),
        )
        .await?;
    print_node_line(&out, &n, eligibility)?;
    Ok(ExitCode::SUCCESS)
}

fn resources(r: &Value) -> String {
    format!(
        "{} MHz CPU, {} MB memory, {} MB disk",
        text(&r["cpu_mhz"]),
        text(&r["memory_mb"]),
        text(&r["disk_mb"])
    )
}

fn pairs(m: &Value) -> Vec<String> {
    m.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect()
}

pub(super) async fn show(client: &Client, out: Printer, node: &str) -> anyhow::Result<ExitCode> {
    let n: Value = client.get(&format!("/v1/nodes/{}", seg(node))).await?;
    if out.0 == OutputFormat::Json {
        out.json(&n)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("ID:           {}", text(&n["id"]));
    println!("Name:         {}", text(&n["name"]));
    println!("Status:       {}", text(&n["status"]));
    println!("Eligibility:  {}", text(&n["eligibility"]));
    println!("Drain:        {}", drain_text(&n["drain"]));
    println!("Connected:    {} (to this server)", text(&n["connected"]));
    println!("Last heard:   {}", text(&n["last_heard_at"]));
    println!("Registered:   {}", text(&n["registered_at"]));
    println!("Agent:        {}", text(&n["agent_version"]));
    let drivers: Vec<String> = n["drivers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    println!("Drivers:      {}", drivers.join(", "));
    println!("Resources:    {}", resources(&n["resources"]));
    println!("Used:         {}", resources(&n["used"]));
    println!("Labels:       {}", pairs(&n["labels"]).join(", "));
    println!("Attributes:");
    for a in pairs(&n["attributes"]) {
        println!("  {a}");
    }
    let allocs = n["allocations"].as_array().cloned().unwrap_or_default();
    println!("\nAllocations ({}):", allocs.len());
    let mut t = Table::new(vec![
        "ID", "JOB", "GROUP", "INDEX", "DESIRED", "STATUS", "RESTARTS", "MODIFIED",
    ]);
    for a in &allocs {
        t.row(vec![
            text(&a["id"]),
            text(&a["job"]),
            text(&a["group"]),
            text(&a["index"]),
            text(&a["desired"]),
            text(&a["client"]),
            text(&a["restarts"]),
            text(&a["modified_at"]),
        ]);
    }
    print!("{}", t.render());
    Ok(ExitCode::SUCCESS)
}

/// The `restart` and `reschedule` objects of a job body, from the flags given (the server
/// checks each field and fills in the defaults).
pub(super) fn policies(args: &PolicyArgs, body: &mut Map<String, Value>) {
    let mut restart = Map::new();
    if let Some(n) = args.restart_attempts {
        restart.insert("attempts".into(), n.into());
    }
    for (key, value) in [
        ("interval", &args.restart_interval),
        ("delay", &args.restart_delay),
        ("mode", &args.restart_mode),
    ] {
        if let Some(v) = value {
            restart.insert(key.into(), v.clone().into());
        }
    }
    if !restart.is_empty() {
        body.insert("restart".into(), restart.into());
    }
    let mut reschedule = Map::new();
    if let Some(n) = args.reschedule_attempts {
        reschedule.insert("attempts".into(), n.into());
    }
    if args.reschedule_unlimited {
        reschedule.insert("unlimited".into(), true.into());
    }
    for (key, value) in [
        ("interval", &args.reschedule_interval),
        ("delay", &args.reschedule_delay),
        ("max_delay", &args.reschedule_max_delay),
    ] {
        if let Some(v) = value {
            reschedule.insert(key.into(), v.clone().into());
        }
    }
    if !reschedule.is_empty() {
        body.insert("reschedule".into(), reschedule.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_flags_become_the_bodys_objects() {
        let mut body = Map::new();
        policies(&PolicyArgs::default(), &mut body);
        assert!(
            body.is_empty(),
            "no flags, no policies: the server's defaults"
        );
        let args = PolicyArgs {
            restart_attempts: Some(0),
            restart_mode: Some("delay".into()),
            reschedule_attempts: Some(3),
            reschedule_interval: Some("1h".into()),
            reschedule_delay: Some("5s".into()),
            ..Default::default()
        };
        policies(&args, &mut body);
        assert_eq!(body["restart"], json!({"attempts": 0, "mode": "delay"}));
        assert_eq!(
            body["reschedule"],
            json!({"attempts": 3, "interval": "1h", "delay": "5s"})
        );
    }
}
