//! The `windflow` command line: `windflow <noun> <verb>`, plus `server` and `dev`.

mod agents;
mod allocs;
mod client;
mod commands;
pub mod config;
mod identity;
mod namespaces;
mod table;
mod trust;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Look at the agent hosts, revoke one.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Where the scheduler placed service instances.
    #[command(subcommand)]
    Alloc(AllocCommand),
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

#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// The namespaces you may see, with how many jobs each holds.
    List,
    Show {
        name: String,
    },
    /// Delete an empty namespace.
    Delete {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is asked for (or read from stdin).
    Create {
        name: String,
        /// admin, writer or reader.
        #[arg(long)]
        role: String,
        #[arg(long)]
        password_stdin: bool,
    },
    List,
    Show {
        name: String,
    },
    /// Delete a user; its tokens stop working.
    Delete {
        name: String,
    },
    /// Set a user's password (your own, or anyone's as admin).
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a named token; its secret is shown once.
    Create {
        name: String,
        /// How long it lives, such as 30d [default: until revoked]
        #[arg(long)]
        expires: Option<String>,
        /// admin, writer or reader [default: yours]
        #[arg(long)]
        role: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token (by ID or name): it opens nothing from now on.
    Revoke { token: String },
    /// Give a token a new secret, shown once; the old one stops working at once.
    Rotate { token: String },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Make a new cluster key current on every server and re-encrypt every stored secret
    /// under it.
    RotateKey,
    /// Drop from every server's key ring the old keys no stored secret uses any more
    /// (after a rotation); the current key always stays.
    DropOldKeys,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Audit entries, newest first.
    List {
        /// Only entries newer than this, such as 1h.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// An action (`jobs.create`), or a prefix of them ending in `.` (`jobs.`).
        #[arg(long)]
        action: Option<String>,
        /// success, failed or denied.
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List the raft members: role, leader, replication lag.
    Members,
    /// Add a server started with `--join`: learner until it has caught up, then voter.
    Join {
        /// The new server's `--name`.
        name: String,
        /// Its QUIC address as the other servers reach it.
        #[arg(long)]
        address: String,
    },
    /// Take a server out of the cluster.
    Remove {
        /// The server's name (or raft ID).
        name: String,
    },
    /// Back up the replicated state, or restore it into a fresh cluster.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Join tokens for new servers (`windflow server --join-token`).
    #[command(subcommand)]
    Token(ClusterTokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum ClusterTokenCommand {
    /// Mint a server join token; its secret is shown once.
    Create {
        /// How long it stays valid (at most 30d).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// How many servers may join with it; 0 for any number.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// List join tokens (never their secrets).
    List,
    /// Revoke a join token: it enrolls nobody from now on.
    Revoke {
        /// The token's ID (`JT1`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Write the whole replicated state to FILE (mode 0600: it holds token hashes).
    Save { file: PathBuf },
    /// Replace the state of a cluster that holds no jobs with the one in FILE.
    Restore { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the cluster CA once, for servers started with `--ca-dir`.
    Init {
        /// Where to keep ca.crt and ca.key (the key is created 0600).
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log debug detail to the console.
    #[arg(long, conflicts_with = "silent")]
    pub debug: bool,
    /// Log only errors to the console.
    #[arg(long)]
    pub silent: bool,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// This server's name in the cluster.
    #[arg(long, default_value = "s1", env = "WINDFLOW_NAME")]
    pub name: String,
    #[arg(long, env = "WINDFLOW_DATA_DIR")]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:7480", env = "WINDFLOW_HTTP_ADDR")]
    pub http_addr: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:7481", env = "WINDFLOW_QUIC_ADDR")]
    pub quic_addr: SocketAddr,
    /// The initial servers of the cluster, NAME=HOST:PORT (QUIC), comma-separated,
    /// this one included. Without it the server forms a cluster of one.
    #[arg(long, env = "WINDFLOW_PEERS")]
    pub peers: Option<String>,
    /// Join a running cluster instead of forming one: start without initialising and wait
    /// to be added with `windflow cluster join NAME --address THIS_QUIC_ADDR`.
    #[arg(long, conflicts_with = "peers")]
    pub join: bool,
    /// A server join token (`windflow cluster token create`): on the first start, get this
    /// server's certificate and the cluster CA from a running server, then wait to be added
    /// like `--join`. Needs `--join-via`.
    #[arg(
        long,
        env = "WINDFLOW_JOIN_TOKEN",
        hide_env_values = true,
        requires = "join_via",
        conflicts_with_all = ["peers", "ca_dir"]
    )]
    pub join_token: Option<String>,
    /// QUIC HOST:PORT of running servers to enroll through, comma-separated.
    #[arg(long, env = "WINDFLOW_JOIN_VIA", requires = "join_token")]
    pub join_via: Option<String>,
    /// Serve PUT /v1/debug/faults, which cuts raft links (partition tests only).
    #[arg(long, hide = true)]
    pub fault_injection: bool,
    /// Failed logins for a user or from an address, past 5 within this window of the
    /// first, are refused until it has passed.
    #[arg(long, default_value = "60s", env = "WINDFLOW_LOGIN_WINDOW")]
    pub login_window: windflow_protocol::HumanDuration,
    /// How long the audit log keeps an entry.
    #[arg(long, default_value = "90d", env = "WINDFLOW_AUDIT_RETENTION")]
    pub audit_retention: windflow_protocol::HumanDuration,
    /// Serve the API over HTTPS with this certificate (PEM: the leaf, then its chain).
    #[arg(
        long,
        env = "WINDFLOW_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "tls_from_ca"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "WINDFLOW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve the API over HTTPS with a certificate issued at every start from the cluster
    /// CA, naming --http-addr's IP (the loopback IPs for 0.0.0.0), `localhost` and --tls-san.
    /// Clients trust it with the CA: `windflow login` fetches it and shows its fingerprint.
    #[arg(long, env = "WINDFLOW_TLS_FROM_CA")]
    pub tls_from_ca: bool,
    /// More DNS names or IPs for the --tls-from-ca certificate, comma-separated.
    #[arg(
        long,
        env = "WINDFLOW_TLS_SAN",
        value_delimiter = ',',
        requires = "tls_from_ca"
    )]
    pub tls_san: Vec<String>,
    /// Requests per second each API token may make on this server, on average.
    #[arg(long, default_value_t = 50.0, env = "WINDFLOW_RATE_LIMIT")]
    pub rate_limit: f64,
    /// Requests each API token may make at once, above --rate-limit.
    #[arg(long, default_value_t = 100, env = "WINDFLOW_RATE_BURST")]
    pub rate_burst: u32,
    /// How long the node certificates agents get at enrollment are valid (agents renew
    /// theirs before the end).
    #[arg(long, default_value = "30d", env = "WINDFLOW_NODE_CERT_VALIDITY")]
    pub node_cert_validity: windflow_protocol::HumanDuration,
    /// The cluster CA made by `windflow ca init`, shared by every server of the set
    /// [default: DATA_DIR/ca, created on first start]
    #[arg(long, env = "WINDFLOW_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Keep state here [default: a fresh temporary directory, removed on exit]
    #[arg(long, env = "WINDFLOW_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:7480")]
    pub http_addr: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:7481")]
    pub quic_addr: SocketAddr,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Create a job that runs a shell command.
    Create(Box<JobCreateArgs>),
    /// List jobs.
    List,
    /// Show one job.
    Show { job: String },
    /// Run a job now.
    Run {
        job: String,
        /// Wait for the run to end, print its output, and exit with its exit code.
        #[arg(long)]
        wait: bool,
    },
    /// The runs of a job.
    Runs { job: String },
    /// Delete a job.
    Delete { job: String },
}

#[derive(Debug, Args)]
pub struct JobCreateArgs {
    /// A unique name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The command, run with `sh -c`.
    #[arg(long)]
    pub cmd: String,
    /// The directory the command starts in.
    #[arg(long)]
    pub workdir: Option<String>,
    /// Kill the command after this long, e.g. 30s, 10m.
    #[arg(long)]
    pub timeout: Option<String>,
    /// How many times to retry a failed attempt.
    #[arg(long)]
    pub retries: Option<u32>,
    /// Wait before the first retry (doubling after), e.g. 5s.
    #[arg(long)]
    pub retry_delay: Option<String>,
    /// An environment variable, KEY=VALUE; repeat for more.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// batch (runs when asked) or service (placed by the scheduler, kept running).
    #[arg(long = "type", default_value = "batch")]
    pub job_type: String,
    /// How many instances of a service to keep running.
    #[arg(long)]
    pub count: Option<u32>,
    /// CPU each instance holds, in MHz.
    #[arg(long)]
    pub cpu: Option<u64>,
    /// Memory each instance holds, in MB.
    #[arg(long)]
    pub memory: Option<u64>,
    /// Disk each instance holds, in MB.
    #[arg(long)]
    pub disk: Option<u64>,
    /// A rule on node attributes, `ATTRIBUTE OPERATOR VALUE` (operators: =, !=, regex,
    /// version, set_contains), e.g. 'os = linux' or 'kernel version >= 5.10'; repeat for more.
    #[arg(long = "constraint", value_name = "RULE")]
    pub constraints: Vec<String>,
    /// binpack (fill nodes up) or spread (use the emptiest).
    #[arg(long)]
    pub placement: Option<String>,
    /// A secret environment variable, KEY=VALUE; repeat for more. Encrypted before it is
    /// stored, never shown again, given only to the task.
    #[arg(long = "secret-env", value_name = "KEY=VALUE")]
    pub secret_env: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Show one run.
    Show { run: String },
}

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Print a context's value (by context ID, job ID or job name).
    Show { context: String },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes.
    List,
    /// Revoke a node's certificates: its agent is refused at the TLS handshake from now on.
    Revoke {
        /// The node's ID (`N3`) or name.
        node: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Join tokens that agents enroll with (`windflow-agent --token`).
    #[command(subcommand)]
    Token(AgentTokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum AgentTokenCommand {
    /// Mint an agent join token; its secret is shown once.
    Create {
        /// How long it stays valid (at most 30d).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// How many agents may enroll with it; 0 for any number.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Labels for the nodes it enrolls: `k=v`, comma-separated or repeated.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
    },
    /// List agent join tokens (never their secrets).
    List,
    /// Revoke an agent join token: it enrolls nobody from now on.
    Revoke {
        /// The token's ID (`JT1`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AllocCommand {
    /// Allocations, oldest first.
    List {
        /// Only this job's (ID or name).
        #[arg(long)]
        job: Option<String>,
        /// Only this node's (N1).
        #[arg(long)]
        node: Option<String>,
    },
    Show {
        alloc: String,
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
