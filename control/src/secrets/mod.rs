//! Secrets at rest. Values marked secret are sealed (ChaCha20-Poly1305) by the server that
//! takes the API call, before they are proposed to raft, under the current key of the
//! cluster key ring; only the dispatcher opens them, to hand them to the agent that runs
//! the task over its mTLS session.
//!
//! The key ring lives in every server's data dir and moves between servers only over the
//! mutual-TLS QUIC endpoint, on ALPN `windflow-keys/1`, which answers server certificates
//! only ([`exchange`]). The server that initialises a cluster makes it; every other server
//! fetches it from a peer, retrying until one has it. Rotation ([`rotate`]) hands a new key
//! to every server, makes it current, then re-encrypts every stored value through raft.

mod exchange;
mod keyring;
pub mod rotate;
mod seal;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use windflow_protocol::{KeyId, Sealed, TaskSpec, Timestamp};
use windflow_raft::RaftNode;

pub use exchange::serve_connection;
pub use keyring::{KEYRING_FILE, KeyRing};
pub use seal::env_place;

/// Why a value could not be sealed or opened, or the key ring not kept.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("this server has not got the cluster key ring yet (it fetches it from a peer)")]
    NoKeyRing,
    #[error("key {0} is not in this server's key ring")]
    UnknownKey(KeyId),
    #[error("key {0} is not a 256-bit key")]
    BadKey(KeyId),
    #[error("a peer offered key {0} with other bytes than this server's key of that ID")]
    Conflict(KeyId),
    #[error("the sealed value of `{0}` does not open: wrong key, wrong place, or tampered")]
    Open(String),
    #[error("`{0}` holds only a redacted marker, nothing to open")]
    Redacted(String),
    #[error("the value could not be sealed")]
    Seal,
    #[error("no system randomness")]
    Random,
    #[error("the key ring file {path}: {why}")]
    File { path: PathBuf, why: String },
}

impl SecretError {
    fn file(path: &Path, why: impl std::fmt::Display) -> Self {
        SecretError::File {
            path: path.to_owned(),
            why: why.to_string(),
        }
    }
}

/// The first wait between attempts to fetch a missing key ring, doubled up to
/// [`FETCH_MAX_BACKOFF`].
const FETCH_FIRST_BACKOFF: Duration = Duration::from_millis(200);
const FETCH_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// This server's key ring and its way to the other servers'.
pub struct Secrets {
    data_dir: PathBuf,
    ring: RwLock<Option<KeyRing>>,
    link: exchange::Link,
    raft: RaftNode,
    /// Servers known before raft membership is: `--peers` and `--join-via` addresses.
    known_peers: Vec<String>,
    /// This server's own QUIC address, never asked.
    own_addr: String,
    /// One rotation at a time on this server.
    rotation: tokio::sync::Mutex<()>,
}

impl Secrets {
    /// Loads `DATA_DIR/keyring` if there is one. `endpoint` is this server's QUIC endpoint,
    /// `client` a config that presents this server's certificate with ALPN `windflow-keys/1`.
    pub fn open(
        data_dir: &Path,
        raft: RaftNode,
        endpoint: quinn::Endpoint,
        client: quinn::ClientConfig,
        known_peers: Vec<String>,
        own_addr: String,
    ) -> Result<Arc<Secrets>, SecretError> {
        Ok(Arc::new(Secrets {
            data_dir: data_dir.to_owned(),
            ring: RwLock::new(KeyRing::load(data_dir)?),
            link: exchange::Link { endpoint, client },
            raft,
            known_peers,
            own_addr,
            rotation: tokio::sync::Mutex::new(()),
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<KeyRing>> {
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn has_ring(&self) -> bool {
        self.read().is_some()
    }

    /// The current key's ID, if this server has a ring.
    pub fn current_key(&self) -> Option<KeyId> {
        self.read().as_ref().map(KeyRing::current)
    }

    /// A copy of the ring (for handing it to a peer).
    pub(crate) fn ring(&self) -> Option<KeyRing> {
        self.read().clone()
    }

    /// Makes a new ring when this server has none: the server that initialises a cluster.
    pub fn create_if_missing(&self) -> Result<(), SecretError> {
        let mut slot = self.ring.write().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let ring = KeyRing::generate(Timestamp::now())?;
            ring.save(&self.data_dir)?;
            tracing::info!(key = %ring.current(), "created the cluster key ring");
            *slot = Some(ring);
        }
        Ok(())
    }

    /// Merges `incoming` into this server's ring (or takes it, having none) and saves the
    /// result; returns whether anything changed.
    pub(crate) fn install(&self, incoming: KeyRing) -> Result<bool, SecretError> {
        let mut slot = self.ring.write().unwrap_or_else(|e| e.into_inner());
        let mut ring = slot.clone().unwrap_or_else(|| incoming.clone());
        let changed = ring.merge(incoming)? || slot.is_none();
        if changed {
            ring.save(&self.data_dir)?;
            tracing::info!(current = %ring.current(), keys = ring.key_ids().len(), "key ring updated");
            *slot = Some(ring);
        }
        Ok(changed)
    }

    /// Drops keys `ids` (never the current one) and saves the ring; the current key.
    pub(crate) fn retire(&self, ids: &[KeyId]) -> Result<KeyId, SecretError> {
        let mut slot = self.ring.write().unwrap_or_else(|e| e.into_inner());
        let ring = slot.as_mut().ok_or(SecretError::NoKeyRing)?;
        if ring.retire(ids) {
            ring.save(&self.data_dir)?;
            tracing::info!(current = %ring.current(), keys = ring.key_ids().len(), "retired old keys");
        }
        Ok(ring.current())
    }

    /// Seals the value of secret env var `name` under the current key.
    pub fn seal_env(&self, name: &str, value: &str) -> Result<Sealed, SecretError> {
        self.read()
            .as_ref()
            .ok_or(SecretError::NoKeyRing)?
            .seal(&env_place(name), value.as_bytes())
    }

    /// Opens the value of secret env var `name`. A key this server lacks (a rotation it
    /// missed) is fetched from the peers once before giving up.
    pub async fn open_env(&self, name: &str, sealed: &Sealed) -> Result<String, SecretError> {
        self.open_at(&env_place(name), sealed).await
    }

    /// Seals a value kept at `place` (its associated data, such as `webhook:ns/name`).
    pub fn seal_at(&self, place: &str, value: &str) -> Result<Sealed, SecretError> {
        self.read()
            .as_ref()
            .ok_or(SecretError::NoKeyRing)?
            .seal(place, value.as_bytes())
    }

    /// Opens a value sealed at `place`, fetching a missing key from the peers once.
    pub async fn open_at(&self, place: &str, sealed: &Sealed) -> Result<String, SecretError> {
        let first = match self.read().as_ref() {
            Some(ring) => ring.open(place, sealed),
            None => Err(SecretError::NoKeyRing),
        };
        let bytes = match first {
            Err(SecretError::UnknownKey(_) | SecretError::NoKeyRing) => {
                self.refresh().await;
                self.read()
                    .as_ref()
                    .ok_or(SecretError::NoKeyRing)?
                    .open(place, sealed)?
            }
            other => other?,
        };
        String::from_utf8(bytes).map_err(|_| SecretError::Open(place.to_owned()))
    }

    /// The task as its agent gets it: secret env vars opened into `env` (over a plain var
    /// of the same name), `secret_env` left empty. The result holds plaintext: never log it.
    pub async fn reveal(&self, task: &TaskSpec) -> Result<TaskSpec, SecretError> {
        let mut out = task.clone();
        for (name, sealed) in std::mem::take(&mut out.secret_env) {
            let value = self.open_env(&name, &sealed).await?;
            out.env.insert(name, value);
        }
        Ok(out)
    }

    /// The other servers' QUIC addresses: raft's members and the ones given at start.
    fn peer_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self
            .raft
            .members()
            .into_iter()
            .filter(|m| m.id != self.raft.id())
            .map(|m| m.addr)
            .chain(self.known_peers.iter().cloned())
            .filter(|a| *a != self.own_addr)
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// Asks each peer for its ring and merges what comes back; whether one answered.
    pub async fn refresh(&self) -> bool {
        let mut got = false;
        for addr in self.peer_addrs() {
            match self.link.fetch(&addr).await {
                Ok(Some(ring)) => match self.install(ring) {
                    Ok(_) => got = true,
                    Err(e) => tracing::warn!(%addr, error = %e, "a peer's key ring was not kept"),
                },
                Ok(None) => tracing::debug!(%addr, "the peer has no key ring yet"),
                Err(e) => {
                    tracing::debug!(%addr, error = %format!("{e:#}"), "key ring fetch failed")
                }
            }
        }
        got
    }

    /// Fetches the ring from a peer until one has it (a static set starts all at once, a
    /// joining server is not a member yet), backing off up to 5 s between rounds.
    pub async fn fetch_until_present(self: Arc<Self>, shutdown: CancellationToken) {
        let mut pause = FETCH_FIRST_BACKOFF;
        while !self.has_ring() {
            if self.refresh().await && self.has_ring() {
                tracing::info!("got the cluster key ring from a peer");
                return;
            }
            tracing::debug!(retry_in_ms = pause.as_millis() as u64, "no key ring yet");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(FETCH_MAX_BACKOFF);
        }
    }
}
