//! `windflow-agent`: the node agent as its own process.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "windflow-agent", version, about = "The Windflow node agent")]
struct Args {
    /// Servers' QUIC addresses, comma-separated.
    #[arg(long, env = "WINDFLOW_SERVERS", value_delimiter = ',', required = true)]
    servers: Vec<SocketAddr>,
    /// Holds ca.crt, node.crt and node.key (written by enrollment with --token).
    #[arg(long, env = "WINDFLOW_AGENT_DATA_DIR")]
    data_dir: PathBuf,
    /// An agent join token (`windflow agent token create`): used once, when the data dir
    /// holds no identity yet, to get this node's certificate.
    #[arg(long, env = "WINDFLOW_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The local IP address to connect from [default: any]
    #[arg(long, env = "WINDFLOW_AGENT_BIND")]
    bind: Option<IpAddr>,
    /// The name this host reports [default: the system's hostname]
    #[arg(long)]
    hostname: Option<String>,
    /// CPU (MHz) the scheduler may place here, instead of cores × speed fingerprinted
    #[arg(long, env = "WINDFLOW_AGENT_CPU_MHZ")]
    cpu_mhz: Option<u64>,
    /// Memory (MB) the scheduler may place here, instead of the host's total
    #[arg(long, env = "WINDFLOW_AGENT_MEMORY_MB")]
    memory_mb: Option<u64>,
    /// Disk (MB) the scheduler may place here, instead of the free space on `/`
    #[arg(long, env = "WINDFLOW_AGENT_DISK_MB")]
    disk_mb: Option<u64>,
    /// How long a stopped allocation's task gets between SIGTERM and SIGKILL
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    kill_grace: windflow_protocol::HumanDuration,
    /// Log files kept per allocation task stream (stdout, stderr), the current one included
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    log_max_files: u32,
    /// The size (MB) at which an allocation task's log file is rotated
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    log_max_file_mb: u64,
    /// How long an ended allocation's logs stay on the node once nothing writes to them
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    log_retention: windflow_protocol::HumanDuration,
    #[arg(long, conflicts_with = "silent")]
    debug: bool,
    #[arg(long)]
    silent: bool,
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    // Each task runs under this binary started again as its supervisor.
    if let Some(code) = windflow_agent::supervise_if_invoked() {
        return Ok(code);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(agent())?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn agent() -> anyhow::Result<()> {
    let args = Args::parse();
    let level = match (args.debug, args.silent) {
        (true, _) => "debug,quinn=info",
        (false, true) => "error",
        _ => "info,quinn=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    windflow_certs::install_crypto_provider();
    let hostname = args.hostname.unwrap_or_else(system_hostname);
    let identity = match &args.token {
        Some(token) if !windflow_agent::enroll::has_identity(&args.data_dir) => {
            let token = token.parse().context("--token (WINDFLOW_AGENT_TOKEN)")?;
            let (node, identity) = windflow_agent::enroll::enroll_agent(
                &token,
                &args.servers,
                &hostname,
                args.bind,
                &args.data_dir,
            )
            .await
            .context("enrolling with the join token")?;
            tracing::info!(%node, dir = %args.data_dir.display(), "this host is node {node}");
            identity
        }
        _ => windflow_certs::TlsIdentity::read(&args.data_dir, "node").with_context(|| {
            format!(
                "reading the agent's certificates from {} (enroll with --token first)",
                args.data_dir.display()
            )
        })?,
    };
    let mut config = windflow_agent::AgentConfig::new(args.servers, identity, hostname);
    config.bind = args.bind;
    config.data_dir = Some(args.data_dir);
    config.resources = windflow_agent::ResourceOverride {
        cpu_mhz: args.cpu_mhz,
        memory_mb: args.memory_mb,
        disk_mb: args.disk_mb,
    };
    config.kill_grace = args.kill_grace.0;
    config.logs = windflow_agent::logs::LogPolicy {
        max_files: args.log_max_files,
        max_file_bytes: args.log_max_file_mb * 1024 * 1024,
        retention: args.log_retention.0,
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        stop.cancel();
    });
    windflow_agent::run(config, shutdown).await?;
    Ok(())
}

fn parse_duration(s: &str) -> Result<windflow_protocol::HumanDuration, String> {
    s.parse()
        .map_err(|e| format!("`{s}` is not a duration such as 5s or 1m30s: {e}"))
}

/// The kernel's idea of this host's name, else `/etc/hostname`, else `localhost`.
fn system_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_owned())
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
