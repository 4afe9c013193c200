//! The `windflow` command line: `windflow <noun> <verb>`, plus `server` and `dev`.

mod agents;
mod allocs;
mod args;
mod client;
mod commands;
pub mod config;
mod deployments;
mod docker;
mod export;
mod identity;
mod list;
mod namespaces;
mod nodes;
mod pipelines;
mod schedules;
mod stacks;
mod table;
mod trust;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

pub use args::*;
pub use deployments::{DeploymentCommand, RolloutArgs};
pub use stacks::{StackCommand, TemplateCommand};

use crate::logging::{self, Verbosity};
use crate::server::ServerConfig;

#[derive(Debug, Parser)]
#[command(
    name = "windflow",
    version,
    about = "Windflow: run jobs, services and apps on your own machines"
)]
pub struct Cli {
    /// Server URL(s), comma-separated [default: from ~/.windflow/config, else http://127.0.0.1:7480]
    #[arg(long, global = true, env = "WINDFLOW_ADDR")]
    pub addr: Option<String>,
    /// API token [default: from ~/.windflow/config]
    #[arg(long, global = true, env = "WINDFLOW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The namespace to work in [default: the token's, else all for reads and `default`
    /// for new work]. `user create` and `token create` bind to it.
    #[arg(long, global = true, env = "WINDFLOW_NAMESPACE")]
    pub namespace: Option<String>,
    /// Trust the HTTPS API's certificate if it chains to this CA (PEM) [default: `ca_cert`
    /// in ~/.windflow/config, stored by `windflow login`; else the system's roots]
    #[arg(long, global = true, env = "WINDFLOW_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// How to print results.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a Windflow server.
    Server(Box<ServerArgs>),
    /// Run one server and one agent in this process, for trying Windflow out.
    Dev(DevArgs),
    /// Create, list, run and delete jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Look at runs.
    #[command(subcommand)]
    Run(RunCommand),
    /// Read what runs captured.
    #[command(subcommand)]
    Context(ContextCommand),
    /// DAGs of jobs: create, run, retry.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Look at the agent hosts, revoke one.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Where the scheduler placed service instances.
    #[command(subcommand)]
    Alloc(AllocCommand),
    /// Rollouts of service job versions.
    #[command(subcommand)]
    Deployment(DeploymentCommand),
    /// Cron schedules that launch jobs.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Webhooks: signed POSTs of run and schedule events.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Compose files deployed as stacks (one service job each).
    #[command(subcommand)]
    Stack(StackCommand),
    /// The built-in catalog of stack templates.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Write the jobs, pipelines, schedules and webhooks you may see as one YAML file
    /// (secrets left out), for `windflow import`.
    Export {
        /// Write to this file [default: standard output]
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
    },
    /// Apply an export file: create or update by name, all or nothing; nothing the file
    /// lacks is deleted.
    Import {
        /// The file (YAML or JSON); `-` for standard input.
        file: PathBuf,
        /// Show what would be created, updated or left unchanged, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Enrolling agents: their join tokens.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// The cluster's certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// The servers of the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Log in as a user: stores a session token in ~/.windflow/config.
    Login {
        /// The user name [default: asked]
        #[arg(long)]
        user: Option<String>,
        /// Read the password from standard input instead of asking for it.
        #[arg(long)]
        password_stdin: bool,
        /// How long the session lasts (at most 30d).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// The cluster CA's SHA-256 fingerprint (hex, `:` allowed): when the server's HTTPS
        /// certificate is not trusted yet, trust the CA it serves only if it has this
        /// fingerprint, without asking.
        #[arg(long, value_name = "HEX")]
        ca_fingerprint: Option<String>,
    },
    /// Revoke this session's token and forget it.
    Logout,
    /// Who the current token acts for.
    Whoami,
    /// Namespaces: walls between teams' work (create and delete: admin).
    #[command(subcommand)]
    Namespace(NamespaceCommand),
    /// People who log in (admin).
    #[command(subcommand)]
    User(UserCommand),
    /// Named API tokens for scripts and CI (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Who changed what, and what was refused (admin).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Secret values at rest: the cluster key (admin).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Show or set this server's console log level, without a restart (admin).
    LogLevel {
        /// debug, info, warn or error; without it, show the current level.
        level: Option<String>,
    },
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Server(args) => {
            std::fs::create_dir_all(&args.data_dir)?;
            let _guard = logging::init(
                Verbosity::from_flags(args.log.debug, args.log.silent),
                Some(&args.data_dir.join("logs")),
            );
            let mut config = ServerConfig::new(args.data_dir);
            config.name = args.name;
            config.http_addr = args.http_addr;
            config.quic_addr = args.quic_addr;
            config.peers = match &args.peers {
                Some(list) => crate::cluster::parse_peers(list)?,
                None => Vec::new(),
            };
            config.shared_ca_dir = args.ca_dir;
            config.fault_injection = args.fault_injection;
            config.login_window = args.login_window.as_std();
            config.audit_retention = args.audit_retention.as_std();
            config.rate_limit = crate::rate_limit::RateLimit::new(args.rate_limit, args.rate_burst)
                .map_err(anyhow::Error::msg)
                .context("--rate-limit/--rate-burst")?;
            if !args.tls_san.is_empty() && !args.tls_from_ca {
                anyhow::bail!(
                    "--tls-san names the --tls-from-ca certificate; give --tls-from-ca too"
                );
            }
            config.https = match (args.tls_cert, args.tls_key, args.tls_from_ca) {
                (Some(cert), Some(key), _) => Some(crate::https::HttpsSource::Files { cert, key }),
                (None, None, true) => Some(crate::https::HttpsSource::ClusterCa {
                    names: args.tls_san,
                }),
                (None, None, false) => None,
                _ => anyhow::bail!("--tls-cert and --tls-key go together"),
            };
            config.node_cert_validity = args.node_cert_validity.as_std();
            config.liveness = args.liveness.check()?;
            if let Some(token) = &args.join_token {
                let token = token
                    .parse()
                    .context("--join-token (WINDFLOW_JOIN_TOKEN)")?;
                let via: Vec<String> = args
                    .join_via
                    .as_deref()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect();
                if via.is_empty() {
                    anyhow::bail!("--join-via: give at least one server's QUIC HOST:PORT");
                }
                config.join_token = Some(crate::join::JoinWithToken { token, via });
            }
            config.start = if args.join || args.join_token.is_some() {
                crate::server::Start::Join
            } else {
                crate::server::Start::Form
            };
            let data_dir = config.data_dir.clone();
            let server = crate::server::start(config).await?;
            if let Some(admin) = &server.new_admin {
                admin.announce(&data_dir);
            }
            let scheme = if server.https { "https" } else { "http" };
            println!(
                "Windflow server listening: API {scheme}://{} QUIC {}",
                server.http_addr, server.quic_addr
            );
            if server.https {
                println!(
                    "  cluster CA fingerprint (SHA-256), for `windflow login --ca-fingerprint`: {}",
                    server.ca.fingerprint_sha256()
                );
            }
            wait_for_signal().await;
            server.stop().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev(args) => {
            // Without --data-dir, a fresh directory that is removed on exit.
            let temp = match &args.data_dir {
                Some(_) => None,
                None => Some(tempfile::Builder::new().prefix("windflow-dev-").tempdir()?),
            };
            let data_dir = match (&args.data_dir, &temp) {
                (Some(dir), _) => dir.clone(),
                (None, Some(t)) => t.path().to_path_buf(),
                (None, None) => unreachable!("a temporary dir is made when no data dir is given"),
            };
            let log_dir = data_dir.join("logs");
            std::fs::create_dir_all(&log_dir)?;
            let _guard = logging::init(
                Verbosity::from_flags(args.log.debug, args.log.silent),
                Some(&log_dir),
            );
            let mut config = ServerConfig::new(data_dir);
            config.http_addr = args.http_addr;
            config.quic_addr = args.quic_addr;
            config.liveness = args.liveness.check()?;
            crate::dev::run(config, temp.is_some()).await?;
            drop(temp);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ca(CaCommand::Init { dir }) => {
            let ca = windflow_certs::ClusterCa::create(&dir)?;
            println!("Created the cluster CA in {}", dir.display());
            println!("  fingerprint (SHA-256): {}", ca.fingerprint_sha256());
            println!(
                "Start every server of the cluster with `--ca-dir {}`.",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        other => {
            let connect = commands::Connect {
                addr: cli.addr,
                token: cli.token,
                ca_cert: cli.ca_cert,
                namespace: cli.namespace,
            };
            commands::run(other, connect, cli.output).await
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
