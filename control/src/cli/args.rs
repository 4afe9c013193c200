//! The arguments of the `windflow` subcommands: one clap type per noun.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

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
    pub liveness: LivenessArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// How agents are heard, and how long a silent node stays `ready`.
#[derive(Debug, Args)]
pub struct LivenessArgs {
    /// How often agents send heartbeats (and each server reports the ones it heard).
    #[arg(long, default_value = "2s", env = "WINDFLOW_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: windflow_protocol::HumanDuration,
    /// A node not heard from for this long is marked down and its allocations lost; more
    /// than twice --heartbeat-interval.
    #[arg(long, default_value = "10s", env = "WINDFLOW_HEARTBEAT_GRACE")]
    pub heartbeat_grace: windflow_protocol::HumanDuration,
}

impl LivenessArgs {
    pub fn check(&self) -> anyhow::Result<crate::lifecycle::Liveness> {
        let (interval, grace) = (self.heartbeat_interval, self.heartbeat_grace);
        if interval.0 < std::time::Duration::from_millis(100) {
            anyhow::bail!("--heartbeat-interval must be at least 100ms, not {interval}");
        }
        if grace.0 <= interval.0 * 2 {
            anyhow::bail!(
                "--heartbeat-grace ({grace}) must be more than twice --heartbeat-interval ({interval})"
            );
        }
        Ok(crate::lifecycle::Liveness {
            interval: interval.0,
            grace: grace.0,
        })
    }
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
    pub liveness: LivenessArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Create a job that runs a shell command.
    Create(Box<JobCreateArgs>),
    /// List jobs, by ID: `--name`, `--status` (of the newest run, or `never`), `--limit`.
    List(super::list::ListArgs),
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
    /// Copy a job under a new name (no runs, an empty context).
    Copy { job: String, name: String },
    /// Show or set how many finished runs the cluster keeps of jobs that say nothing
    /// (admin to set).
    Retention {
        /// Keep only the last N finished runs of each job.
        #[arg(long, value_name = "N")]
        keep_runs: Option<u32>,
        /// Drop finished runs older than this, e.g. 30d.
        #[arg(long, value_name = "DURATION")]
        keep_for: Option<String>,
        /// Keep every run.
        #[arg(long, conflicts_with_all = ["keep_runs", "keep_for"])]
        unlimited: bool,
    },
    /// Give a job a new spec (the flags of `create`): a new version, rolled out to a
    /// service's instances by a deployment.
    Update(Box<JobCreateArgs>),
    /// Change how many instances of a service group run (no new version).
    Scale {
        job: String,
        count: u32,
        /// The group (needed when the job has several).
        #[arg(long)]
        group: Option<String>,
    },
    /// A job's kept versions, newest first.
    Versions { job: String },
}

#[derive(Debug, Args)]
pub struct JobCreateArgs {
    /// A unique name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The command, run with `sh -c` (with --image: the container's program).
    #[arg(long)]
    pub cmd: Option<String>,
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
    #[command(flatten)]
    pub policies: PolicyArgs,
    #[command(flatten)]
    pub runs: RunArgs,
    #[command(flatten)]
    pub docker: super::docker::DockerArgs,
    #[command(flatten)]
    pub rollout: super::RolloutArgs,
}

/// A service's restart policy (on its node) and reschedule policy (on the servers).
#[derive(Debug, Args, Default)]
pub struct PolicyArgs {
    /// Restarts of an exited task on its node within --restart-interval [default: 2].
    #[arg(long)]
    pub restart_attempts: Option<u32>,
    /// The window restart attempts are counted in [default: 30m].
    #[arg(long)]
    pub restart_interval: Option<String>,
    /// Wait before each restart [default: 15s].
    #[arg(long)]
    pub restart_delay: Option<String>,
    /// Past the attempts: fail (then reschedule elsewhere) or delay (wait out the interval).
    #[arg(long)]
    pub restart_mode: Option<String>,
    /// Replacements of a failed or lost instance within --reschedule-interval
    /// [default: unlimited].
    #[arg(long, conflicts_with = "reschedule_unlimited")]
    pub reschedule_attempts: Option<u32>,
    /// The window reschedule attempts are counted in [default: 1h].
    #[arg(long, requires = "reschedule_attempts")]
    pub reschedule_interval: Option<String>,
    /// Wait before the first replacement, doubling for each further one [default: 30s].
    #[arg(long)]
    pub reschedule_delay: Option<String>,
    /// The longest wait between replacements [default: 1h].
    #[arg(long)]
    pub reschedule_max_delay: Option<String>,
    /// Replace failed or lost instances however often it takes.
    #[arg(long)]
    pub reschedule_unlimited: bool,
}

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Show one run.
    Show { run: String },
}

pub use super::pipelines::{ContextCommand, PipelineCommand, RunArgs};

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes.
    List,
    /// Revoke a node's certificates: its agent is refused at the TLS handshake from now on.
    Revoke {
        /// The node's ID (`N3`) or name.
        node: String,
    },
    /// One node: status, eligibility, drain, resources and what is used, attributes,
    /// labels and its allocations.
    Show {
        /// The node's ID (`N3`) or name.
        node: String,
    },
    /// Move a node's work away: it takes no new work at once, its service allocations are
    /// replaced elsewhere, running batch runs finish; the node ends ineligible.
    Drain {
        /// The node's ID (`N3`) or name.
        node: String,
        /// Stop whatever is still there after this long, e.g. 1h.
        #[arg(long, conflicts_with = "cancel")]
        deadline: Option<String>,
        /// Cancel the drain under way (the node stays ineligible).
        #[arg(long)]
        cancel: bool,
    },
    /// Whether the scheduler may place new work on a node.
    Eligibility {
        /// The node's ID (`N3`) or name.
        node: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
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
    /// A task's output (stdout, or stderr with --stderr), written as it arrives.
    Logs {
        alloc: String,
        /// The task (needed when the allocation has several).
        #[arg(long)]
        task: Option<String>,
        /// Keep following: print new lines as they are written, until Ctrl-C.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only lines written since then: a duration back from now (10m, 1h30m) or an
        /// RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only the last N lines (before following).
        #[arg(long)]
        tail: Option<u32>,
        /// Stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
    },
    /// One sample of the allocation's tasks' CPU, memory, network and block I/O.
    Stats {
        alloc: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule that launches its jobs together at every due time.
    Create {
        name: String,
        /// 5 fields (minute first), 6 fields (second first), or @hourly, @daily,
        /// @midnight, @weekly, @monthly, @yearly.
        #[arg(long)]
        cron: String,
        /// The IANA zone the fields are read in, such as Europe/Paris.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// A job to launch (ID or name); repeat for several.
        #[arg(long = "job", required_unless_present = "pipelines")]
        jobs: Vec<String>,
        /// A pipeline to launch (ID); repeat for several. (Refused until pipelines can
        /// be scheduled.)
        #[arg(long = "pipeline")]
        pipelines: Vec<String>,
        /// While the last fire's runs go on: allow, forbid (skip the fire) or replace
        /// (fail the last fire's runs still pending).
        #[arg(long, default_value = "allow")]
        overlap: String,
        /// Due times missed while no server could fire them: skip, run_once or run_all.
        #[arg(long, default_value = "skip")]
        catch_up: String,
    },
    /// The schedules, with their next due time.
    List,
    /// A schedule and its recent fires.
    Show {
        schedule: String,
        /// How many fires to show.
        #[arg(long, default_value_t = 20)]
        fires: usize,
    },
    /// Fire again from now on (what was due while disabled is not caught up).
    Enable { schedule: String },
    /// Stop firing.
    Disable { schedule: String },
    /// Delete a schedule (its runs stay).
    Rm { schedule: String },
    /// Preview the next due times.
    Next {
        schedule: String,
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Subscribe a URL to events; the signing secret is shown once.
    Create {
        name: String,
        /// Where to POST: http:// or https://.
        #[arg(long)]
        url: String,
        /// Events, comma-separated: job.succeeded, job.failed, job.timed_out,
        /// pipeline.succeeded, pipeline.failed, pipeline.timed_out, schedule.fired.
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// Read the signing secret from standard input [default: one is generated].
        #[arg(long)]
        secret_stdin: bool,
    },
    /// The webhooks (never their secrets).
    List,
    /// Delete a webhook and its delivery log.
    Rm { webhook: String },
    /// A webhook's delivery attempts, newest first.
    Deliveries {
        webhook: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}
