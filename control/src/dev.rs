//! `windflow dev`: one server and one agent in one process, for a laptop.

use std::path::Path;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use windflow_certs::TlsIdentity;
use windflow_protocol::{DriverKind, Timestamp};
use windflow_raft::{Applied, Command};

use crate::cli::config::CliConfig;
use crate::server::{self, RunningServer, ServerConfig};

/// Where the dev agent keeps its identity, inside the server's data dir.
const AGENT_DIR: &str = "agent";

/// A dev cluster that is up: the server and the agent running next to it.
pub struct DevCluster {
    pub server: RunningServer,
    pub admin_token: String,
    agent_stop: CancellationToken,
    agent: tokio::task::JoinHandle<()>,
}

impl DevCluster {
    pub async fn stop(self) {
        self.agent_stop.cancel();
        let _ = self.agent.await;
        self.server.stop().await;
    }
}

/// Starts the server, registers this host as a node on first start, and runs its agent.
pub async fn start(config: ServerConfig) -> anyhow::Result<DevCluster> {
    let server = server::start(config.clone()).await?;
    let admin_token = match &server.new_admin {
        Some(admin) => admin.token.clone(),
        None => server::read_bootstrap_token(&config.data_dir)?,
    };
    let identity = agent_identity(&server, &config.data_dir).await?;
    let mut agent_config =
        windflow_agent::AgentConfig::new(vec![server.quic_addr], identity, hostname());
    agent_config.reconnect_max_backoff = std::time::Duration::from_secs(5);
    agent_config.data_dir = Some(config.data_dir.join(AGENT_DIR));
    let agent_stop = server.shutdown_token().child_token();
    let stop = agent_stop.clone();
    let agent = tokio::spawn(async move {
        if let Err(e) = windflow_agent::run(agent_config, stop).await {
            tracing::error!(error = %e, "the dev agent stopped");
        }
    });
    Ok(DevCluster {
        server,
        admin_token,
        agent_stop,
        agent,
    })
}

/// The dev agent's certificate: issued once, for a node registered through raft.
async fn agent_identity(server: &RunningServer, data_dir: &Path) -> anyhow::Result<TlsIdentity> {
    let dir = data_dir.join(AGENT_DIR);
    if windflow_certs::IssuedCert::exists(&dir, "node") {
        return Ok(TlsIdentity::read(&dir, "node")?);
    }
    let applied = server
        .raft
        .write(Command::RegisterNode {
            name: hostname(),
            drivers: vec![DriverKind::Exec],
            at: Timestamp::now(),
        })
        .await
        .context("registering the dev node")?;
    let Applied::Node(node) = applied else {
        anyhow::bail!("registering the dev node gave {applied:?}");
    };
    let identity = TlsIdentity {
        ca_pem: server.ca.cert_pem().to_owned(),
        cert: server.ca.issue_node(node.id)?,
    };
    record_serial(server, node.id, &identity.cert.cert_pem).await?;
    identity.write(&dir, "node")?;
    Ok(identity)
}

/// Records the certificate's serial, so that `windflow node revoke` can revoke it.
async fn record_serial(
    server: &RunningServer,
    node: windflow_protocol::NodeId,
    cert_pem: &str,
) -> anyhow::Result<()> {
    let der = windflow_certs::pem_der(cert_pem)?;
    let (_, not_after) = windflow_certs::validity_of(cert_pem)?;
    let not_after = not_after
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    server
        .raft
        .write(Command::NodeCertIssued {
            node,
            serial: windflow_certs::serial_of(&der)?,
            not_after: Timestamp(not_after),
            at: Timestamp::now(),
        })
        .await
        .context("recording the dev node's certificate")?;
    Ok(())
}

pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// `windflow dev`: runs until Ctrl-C or SIGTERM. `temporary` says the data dir goes away
/// on exit.
pub async fn run(mut config: ServerConfig, temporary: bool) -> anyhow::Result<()> {
    config.name = "dev".into();
    let cluster = start(config.clone()).await?;
    let url = format!("http://{}", cluster.server.http_addr);
    let cli_config = CliConfig {
        address: Some(url.clone()),
        token: Some(cluster.admin_token.clone()),
        ca_cert: None,
    };
    let written = cli_config.save_default();
    println!("Windflow dev is running.");
    println!("  API and UI:  {url}/");
    println!("  admin token: {}", cluster.admin_token);
    let note = if temporary { " (removed on exit)" } else { "" };
    println!("  data dir:    {}{note}", config.data_dir.display());
    match written {
        Ok(path) => println!(
            "  CLI config:  {} (the `windflow` CLI now talks to this server)",
            path.display()
        ),
        Err(e) => println!("  CLI config:  not written ({e:#})"),
    }
    println!("Try: windflow job create hello --cmd 'echo hello' && windflow job run hello --wait");
    crate::cli::wait_for_signal().await;
    println!("Stopping.");
    cluster.stop().await;
    if temporary {
        // The data dir goes away with this process: its agent's tasks must not outlive it
        // (an agent otherwise leaves them running, to take them back when it starts again).
        let stopped =
            windflow_agent::drivers::exec::stop_supervisors_under(&config.data_dir.join(AGENT_DIR));
        if stopped > 0 {
            println!("Stopped the {stopped} task(s) still running.");
        }
    }
    Ok(())
}
