//! Starting a server: CA and certificates, the QUIC endpoint, raft, the bootstrap token,
//! the gateway, the leader's loops and the HTTP API, in that order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use windflow_certs::{ClusterCa, IssuedCert, TlsIdentity};
use windflow_protocol::Timestamp;
use windflow_protocol::enroll::ALPN_ENROLL;
use windflow_protocol::messages::{ALPN_AGENT, ALPN_RAFT, ALPN_RELAY};
use windflow_protocol::secret::ALPN_KEYS;
use windflow_raft::{ApplyError, Command, NewToken, QuicNetwork, RaftConfig, RaftNode, WriteError};

use crate::api::{self, AppState};
use crate::auth;
use crate::cluster::{Peer, initial_cluster, server_id};
use crate::gateway::{Gateway, Revocations, RunOutputs, Sessions};
use crate::https::HttpsSource;
use crate::join::JoinWithToken;
use crate::metrics::Metrics;
use crate::rate_limit::{RateLimit, TokenLimiter};
use crate::secrets::Secrets;

/// The name of the token created on a cluster's first start.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap-admin";
/// The user the first start creates, with the admin role.
pub const BOOTSTRAP_USER: &str = "admin";
/// Where the first start writes the bootstrap admin's password (mode 0600).
pub const BOOTSTRAP_PASSWORD_FILE: &str = "bootstrap-password";
/// Where the first start writes the bootstrap admin token (mode 0600).
pub const BOOTSTRAP_TOKEN_FILE: &str = "bootstrap-token";

/// How a server is started.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This server's name in the cluster (and in its certificate).
    pub name: String,
    pub data_dir: PathBuf,
    pub http_addr: SocketAddr,
    pub quic_addr: SocketAddr,
    /// How often agents are heard, and how long a node may stay silent before it is down.
    pub liveness: crate::lifecycle::Liveness,
    /// The initial member list; empty for a single server.
    pub peers: Vec<Peer>,
    /// A shared CA directory (`windflow ca init`); by default the CA lives in `DATA_DIR/ca`
    /// and is created on first start.
    pub shared_ca_dir: Option<PathBuf>,
    pub start: Start,
    /// Serve `PUT /v1/debug/faults`, which cuts raft links: for partition tests only.
    pub fault_injection: bool,
    /// Get the server certificate and the CA from a running cluster with a join token, on
    /// the first start (later starts find them in the data dir).
    pub join_token: Option<JoinWithToken>,
    /// Failed logins for one user or from one address within this window, past
    /// `login_max_failures`, are refused until it has passed.
    pub login_window: Duration,
    pub login_max_failures: u32,
    /// How long audit entries are kept.
    pub audit_retention: Duration,
    /// Serve the API over TLS with this certificate; plain HTTP when `None`.
    pub https: Option<HttpsSource>,
    /// Each API token's request rate on this server.
    pub rate_limit: RateLimit,
    /// How long node certificates issued at enrollment are valid.
    pub node_cert_validity: Duration,
}

/// How a server takes its place in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Form the cluster of `peers` (or of itself alone), or rejoin the one it formed.
    Form,
    /// Wait to be added to a running cluster (`windflow cluster join`).
    Join,
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            name: "s1".into(),
            data_dir: data_dir.into(),
            http_addr: ([127, 0, 0, 1], 7480).into(),
            quic_addr: ([127, 0, 0, 1], 7481).into(),
            liveness: Default::default(),
            peers: Vec::new(),
            shared_ca_dir: None,
            start: Start::Form,
            fault_injection: false,
            join_token: None,
            login_window: Duration::from_secs(60),
            login_max_failures: 5,
            audit_retention: Duration::from_secs(90 * 24 * 3600),
            https: None,
            rate_limit: RateLimit::default(),
            node_cert_validity: windflow_certs::NODE_CERT_VALIDITY,
        }
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.shared_ca_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("ca"))
    }

    /// The cluster CA: the shared one must exist, the private one is made on first start.
    fn load_ca(&self) -> anyhow::Result<ClusterCa> {
        match &self.shared_ca_dir {
            Some(dir) => ClusterCa::load(dir).with_context(|| {
                format!("loading the cluster CA from {} (create it once with `windflow ca init --dir DIR`)", dir.display())
            }),
            None => ClusterCa::load_or_create(&self.ca_dir()).context("loading the cluster CA"),
        }
    }
}

/// A server that is up. Drop it or call [`RunningServer::stop`] to shut it down.
pub struct RunningServer {
    pub http_addr: SocketAddr,
    /// Whether the API is served over TLS.
    pub https: bool,
    pub quic_addr: SocketAddr,
    /// The bootstrap admin, when this start initialised the cluster.
    pub new_admin: Option<Bootstrap>,
    pub raft: RaftNode,
    pub ca: Arc<ClusterCa>,
    pub sessions: Sessions,
    /// This server's key ring.
    pub secrets: Arc<Secrets>,
    state: AppState,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl RunningServer {
    /// The server's HTTP router, to drive without a socket (tests).
    pub fn app(&self) -> axum::Router {
        api::app(self.state.clone())
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops serving, waits for the server's tasks, and closes raft.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// The names of the servers this one knows: itself and its initial peers.
fn server_names(config: &ServerConfig) -> BTreeMap<windflow_raft::ServerId, String> {
    std::iter::once(config.name.as_str())
        .chain(config.peers.iter().map(|p| p.name.as_str()))
        .map(|n| (server_id(n), n.to_owned()))
        .collect()
}

/// The addresses a server certificate names: where peers, agents and clients reach it.
fn certificate_ips(config: &ServerConfig, advertise: SocketAddr) -> Vec<std::net::IpAddr> {
    let mut ips = vec![advertise.ip(), config.quic_addr.ip(), config.http_addr.ip()];
    ips.dedup();
    ips
}

/// Loads this server's TLS identity from `DATA_DIR/tls`, issuing it from the CA on first start.
fn server_identity(
    config: &ServerConfig,
    ca: &ClusterCa,
    advertise: SocketAddr,
) -> anyhow::Result<TlsIdentity> {
    let dir = config.data_dir.join("tls");
    let cert = if IssuedCert::exists(&dir, "server") {
        IssuedCert::read(&dir, "server")?
    } else {
        let cert = ca.issue_server(&config.name, &[], &certificate_ips(config, advertise))?;
        cert.write(&dir, "server")?;
        cert
    };
    Ok(TlsIdentity {
        ca_pem: ca.cert_pem().to_owned(),
        cert,
    })
}

pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    windflow_certs::install_crypto_provider();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    // The advertised address goes into the certificate, so resolve the cluster first.
    let cluster = initial_cluster(&config.name, config.quic_addr, &config.peers)?;
    let ca = match &config.join_token {
        Some(join) if !config.ca_dir().join("ca.key").exists() => {
            crate::gateway::validate_server_name(&config.name).map_err(anyhow::Error::msg)?;
            let ips = certificate_ips(&config, cluster.advertise);
            crate::join::enroll_server(
                join,
                &config.name,
                &ips,
                &config.ca_dir(),
                &config.data_dir.join("tls"),
            )
            .await
            .context("joining with the join token")?
        }
        _ => config.load_ca()?,
    };
    let ca = Arc::new(ca);
    let identity = server_identity(&config, &ca, cluster.advertise)?;
    // Before anything is started: a bad certificate file stops the start, naming the flag.
    let https_tls = match &config.https {
        Some(source) => Some(crate::https::server_tls(
            source,
            &ca,
            &config.name,
            config.http_addr,
        )?),
        None => None,
    };

    let revocations = Revocations::default();
    let server_tls = windflow_certs::quinn_gateway_config(
        &identity,
        &[ALPN_AGENT, ALPN_RAFT, ALPN_ENROLL, ALPN_KEYS, ALPN_RELAY],
        revocations.list.clone(),
    )?;
    let peer_tls = windflow_certs::quinn_client_config(&identity, ALPN_RAFT)?;
    let mut endpoint = quinn::Endpoint::server(server_tls, config.quic_addr)
        .with_context(|| format!("binding QUIC on {}", config.quic_addr))?;
    endpoint.set_default_client_config(peer_tls.clone());
    let quic_addr = endpoint.local_addr()?;
    // A single server advertises what it bound (port 0 in tests); a member of a set, its listed address.
    let cluster = if config.peers.is_empty() {
        initial_cluster(&config.name, quic_addr, &[])?
    } else {
        cluster
    };

    let raft = RaftNode::open(
        RaftConfig {
            id: server_id(&config.name),
            data_dir: config.data_dir.clone(),
            advertise_addr: cluster.advertise.to_string(),
            snapshot_after_logs: 10_000,
        },
        QuicNetwork::new(endpoint.clone(), peer_tls),
    )
    .await
    .context("opening the raft store")?;
    let secrets = Secrets::open(
        &config.data_dir,
        raft.clone(),
        endpoint.clone(),
        windflow_certs::quinn_client_config(&identity, ALPN_KEYS)?,
        config
            .peers
            .iter()
            .map(|p| p.addr.to_string())
            .chain(config.join_token.iter().flat_map(|j| j.via.clone()))
            .collect(),
        cluster.advertise.to_string(),
    )
    .context("loading the cluster key ring")?;
    // A joining server waits to be added; it never initialises or waits for a leader here.
    let forming = config.start == Start::Form;
    let initialized = if forming && cluster.initialiser {
        raft.initialize_if_new(cluster.members.clone()).await?
    } else {
        false
    };
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    // The server that initialises a cluster makes its key ring (a single server also on a
    // data dir from before key rings); every other server fetches it from a peer over mTLS.
    if initialized || (forming && cluster.initialiser && cluster.members.len() == 1) {
        secrets
            .create_if_missing()
            .context("creating the cluster key ring")?;
    }
    if !secrets.has_ring() {
        tasks.spawn(secrets.clone().fetch_until_present(shutdown.clone()));
    }
    let new_admin = if forming && cluster.members.len() == 1 {
        raft.wait_for_leader(Duration::from_secs(30))
            .await
            .context("waiting for a raft leader")?;
        match initialized {
            true => Some(create_bootstrap(&raft, &config.data_dir).await?),
            false => None,
        }
    } else {
        // A member of a set cannot wait for its quorum before serving: the others may be
        // starting too. The initialiser stores the admin token once a leader takes it.
        if initialized {
            tasks.spawn(bootstrap_when_ready(
                raft.clone(),
                config.data_dir.clone(),
                shutdown.clone(),
            ));
        }
        None
    };

    let sessions = Sessions::default();
    // Logs and stats of agents connected to another server are asked through it.
    sessions.set_relay(crate::gateway::Relay {
        endpoint: endpoint.clone(),
        client: windflow_certs::quinn_client_config(&identity, ALPN_RELAY)?,
        raft: raft.clone(),
    });
    let outputs = RunOutputs::default();
    let gateway = Gateway {
        raft: raft.clone(),
        sessions: sessions.clone(),
        outputs: outputs.clone(),
        heartbeat_interval: config.liveness.interval,
        ca: ca.clone(),
        secrets: secrets.clone(),
        node_cert_validity: config.node_cert_validity,
        revocations: revocations.clone(),
    };
    revocations.load(raft.reader());
    tasks.spawn(revocations.follow(raft.reader().clone(), shutdown.clone()));
    tasks.spawn(gateway.serve(endpoint, shutdown.clone()));
    tasks.spawn(
        crate::lifecycle::heartbeats::HeartbeatReporter::new(
            raft.clone(),
            sessions.clone(),
            config.liveness,
        )
        .run(shutdown.clone()),
    );
    let leader = crate::leader::spawn(
        raft.clone(),
        sessions.clone(),
        secrets.clone(),
        config.audit_retention,
        config.liveness,
        shutdown.clone(),
    );
    tasks.spawn(async move {
        let _ = leader.await;
    });

    let state = AppState {
        raft: raft.clone(),
        sessions: sessions.clone(),
        outputs,
        metrics: Metrics::new(raft.clone(), sessions.clone()),
        server_names: Arc::new(server_names(&config)),
        fault_injection: config.fault_injection,
        ca_fingerprint: ca.fingerprint_sha256().into(),
        secrets: secrets.clone(),
        routes: Default::default(),
        login_limiter: Arc::new(auth::LoginLimiter::new(
            config.login_window,
            config.login_max_failures,
        )),
        token_limiter: Arc::new(TokenLimiter::new(config.rate_limit)),
        ca_pem: ca.cert_pem().into(),
        https: https_tls.is_some(),
    };
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
    let http_addr = listener.local_addr()?;
    let https = https_tls.is_some();
    tasks.spawn(crate::https::serve(
        listener,
        api::app(state.clone()),
        https_tls,
        shutdown.clone(),
    ));
    tracing::info!(%http_addr, %quic_addr, https, name = %config.name, "server started");
    Ok(RunningServer {
        http_addr,
        https,
        quic_addr,
        new_admin,
        raft,
        ca,
        sessions,
        secrets,
        state,
        shutdown,
        tasks,
    })
}

/// The first admin's credentials, made once by the server that initialises a cluster.
pub struct Bootstrap {
    pub token: String,
    pub password: String,
}

impl Bootstrap {
    fn generate() -> anyhow::Result<Self> {
        let no_randomness = |_| anyhow::anyhow!("no system randomness for the bootstrap admin");
        Ok(Bootstrap {
            token: auth::generate_token().map_err(no_randomness)?,
            password: auth::random_hex(16).map_err(no_randomness)?,
        })
    }

    /// Prints the credentials, once, to standard output.
    pub fn announce(&self, data_dir: &Path) {
        println!(
            "Cluster initialised. Bootstrap admin (shown once, also in {} and {}):\n  user:     {BOOTSTRAP_USER}\n  password: {}\n  token:    {}",
            data_dir.join(BOOTSTRAP_PASSWORD_FILE).display(),
            data_dir.join(BOOTSTRAP_TOKEN_FILE).display(),
            self.password,
            self.token,
        );
    }
}

/// Creates the bootstrap admin of a newly formed set once the cluster can commit it, and
/// shows it once.
async fn bootstrap_when_ready(raft: RaftNode, data_dir: PathBuf, shutdown: CancellationToken) {
    let admin = match Bootstrap::generate() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the bootstrap admin");
            return;
        }
    };
    let mut pause = Duration::from_millis(200);
    loop {
        match store_bootstrap(&raft, &data_dir, &admin).await {
            Ok(()) => {
                admin.announce(&data_dir);
                return;
            }
            Err(e) => {
                tracing::info!(error = %format!("{e:#}"), "bootstrap admin not stored yet; retrying")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

async fn create_bootstrap(raft: &RaftNode, data_dir: &Path) -> anyhow::Result<Bootstrap> {
    let admin = Bootstrap::generate()?;
    store_bootstrap(raft, data_dir, &admin).await?;
    Ok(admin)
}

/// Proposes the bootstrap admin user and its token and writes both secrets to the data
/// dir. Safe to retry with the same secrets: a retry after an earlier attempt committed
/// finds its own user and token.
async fn store_bootstrap(
    raft: &RaftNode,
    data_dir: &Path,
    admin: &Bootstrap,
) -> anyhow::Result<()> {
    let password = admin.password.clone();
    let password_hash = tokio::task::spawn_blocking(move || crate::password::hash(&password))
        .await
        .context("hashing the bootstrap password")??;
    let user = raft
        .write(Command::CreateUser {
            name: BOOTSTRAP_USER.into(),
            role: windflow_protocol::Role::Admin,
            namespace: None,
            password_hash,
            at: Timestamp::now(),
        })
        .await;
    match user {
        Ok(_) => {}
        // An earlier attempt committed: its password stands (this process made both).
        Err(WriteError::Rejected(ApplyError::NameTaken { .. })) => {}
        Err(e) => return Err(e).context("storing the bootstrap admin user"),
    }
    let hash = auth::token_hash(&admin.token);
    let written = raft
        .write(Command::CreateToken(NewToken {
            name: BOOTSTRAP_TOKEN_NAME.into(),
            kind: windflow_protocol::TokenKind::Api,
            role: windflow_protocol::Role::Admin,
            user: Some(BOOTSTRAP_USER.into()),
            namespace: None,
            hash: hash.clone(),
            prefix: auth::shown_prefix(&admin.token),
            expires_at: None,
            at: Timestamp::now(),
        }))
        .await;
    match written {
        Ok(_) => {}
        Err(WriteError::Rejected(ApplyError::NameTaken { .. }))
            if raft.reader().token_by_hash(&hash)?.is_some() => {}
        Err(e) => return Err(e).context("storing the bootstrap admin token"),
    }
    write_secret_file(&data_dir.join(BOOTSTRAP_PASSWORD_FILE), &admin.password)?;
    write_secret_file(&data_dir.join(BOOTSTRAP_TOKEN_FILE), &admin.token)
}

/// Writes `content` and a newline to a file readable by its owner only.
pub fn write_secret_file(path: &Path, content: &str) -> anyhow::Result<()> {
    write_secret_bytes(path, format!("{content}\n").as_bytes())
}

/// Writes `bytes` to a file readable by its owner only.
pub fn write_secret_bytes(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

/// The bootstrap admin token written by the first start, if this data dir has one.
pub fn read_bootstrap_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(BOOTSTRAP_TOKEN_FILE);
    let token =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let token = token.trim();
    if token.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(token.to_owned())
}
