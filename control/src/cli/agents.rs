//! `windflow agent token …` and `windflow node revoke`: enrolling agents and cutting one off.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::{Value, json};

use super::AgentTokenCommand;
use super::client::Client;
use super::commands::{Printer, print_join_tokens, seg, text};
use super::{OutputFormat, table::Table};

/// `k=v` pairs into a map; a key given twice is a mistake, not an override.
fn parse_labels(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for pair in pairs.iter().filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--labels: `{pair}` is not `key=value`");
        };
        if labels
            .insert(k.trim().to_owned(), v.trim().to_owned())
            .is_some()
        {
            bail!("--labels: `{}` is given twice", k.trim());
        }
    }
    Ok(labels)
}

pub(super) async fn agent_token(
    client: &Client,
    out: Printer,
    cmd: AgentTokenCommand,
) -> anyhow::Result<ExitCode> {
    let tokens: Vec<Value> = match cmd {
        AgentTokenCommand::Create { ttl, uses, labels } => {
            let body = json!({ "ttl": ttl, "uses": uses, "labels": parse_labels(&labels)? });
            let created: Value = client.post("/v1/agent/tokens", Some(&body)).await?;
            if out.0 == OutputFormat::Json {
                out.json(&created)?;
            } else {
                let uses = if created["uses_allowed"].is_null() {
                    "unlimited".to_owned()
                } else {
                    text(&created["uses_allowed"])
                };
                println!(
                    "Agent join token {} (shown once; valid until {}, {uses} use(s)):\n  {}\n\n\
                     On each new host:\n  windflow-agent --servers SERVER_QUIC_ADDR[,…] \\\n    \
                     --data-dir /var/lib/windflow-agent --token {}",
                    text(&created["id"]),
                    text(&created["expires_at"]),
                    text(&created["token"]),
                    text(&created["token"]),
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        AgentTokenCommand::List => client.get("/v1/agent/tokens").await?,
        AgentTokenCommand::Revoke { id } => {
            let revoked: Value = client
                .delete(&format!("/v1/agent/tokens/{}", seg(&id)))
                .await?;
            vec![revoked]
        }
    };
    print_join_tokens(out, &tokens)
}

pub(super) async fn node_revoke(
    client: &Client,
    out: Printer,
    node: &str,
) -> anyhow::Result<ExitCode> {
    let revoked: Value = client
        .post(&format!("/v1/nodes/{}/revoke", seg(node)), None::<&Value>)
        .await?;
    if out.0 == OutputFormat::Json {
        out.json(&revoked)?;
    } else {
        let mut t = Table::new(vec!["ID", "NAME", "STATUS", "REVOKED"]);
        t.row(vec![
            text(&revoked["id"]),
            text(&revoked["name"]),
            text(&revoked["status"]),
            text(&revoked["revoked_at"]),
        ]);
        print!("{}", t.render());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_key_value_pairs() {
        let labels = parse_labels(&["rack=r1".into(), "zone = eu ".into()]).unwrap();
        assert_eq!(labels["rack"], "r1");
        assert_eq!(labels["zone"], "eu");
        assert!(parse_labels(&["rack".into()]).is_err());
        assert!(parse_labels(&["a=1".into(), "a=2".into()]).is_err());
    }
}
