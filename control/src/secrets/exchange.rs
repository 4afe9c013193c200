//! Handing the key ring between servers over the QUIC endpoint, ALPN `windflow-keys/1`:
//! one stream per request, a [`KeyRequest`] frame and a [`KeyResponse`] frame. Mutual TLS
//! is already done when a frame is read, and only a server's certificate gets an answer:
//! agents share the CA but never see a key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use windflow_certs::wire::{read_frame, write_frame};
use windflow_certs::{PeerIdentity, SERVER_NAME};
use windflow_protocol::KeyId;
use windflow_protocol::secret::{KeyRequest, KeyResponse};

use super::{KeyRing, Secrets};

/// The longest one exchange with one peer may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Dials peers from this server's endpoint with its own certificate.
pub(super) struct Link {
    pub endpoint: quinn::Endpoint,
    /// Presents this server's certificate, offers ALPN `windflow-keys/1`.
    pub client: quinn::ClientConfig,
}

impl Link {
    async fn exchange(&self, addr: &str, req: &KeyRequest) -> anyhow::Result<KeyResponse> {
        let sock: SocketAddr = tokio::net::lookup_host(addr)
            .await
            .with_context(|| format!("resolving `{addr}`"))?
            .next()
            .with_context(|| format!("`{addr}` resolves to no address"))?;
        let conn = self
            .endpoint
            .connect_with(self.client.clone(), sock, SERVER_NAME)?
            .await
            .context("connecting")?;
        let (mut send, mut recv) = conn.open_bi().await?;
        write_frame(&mut send, req).await?;
        send.finish()?;
        let answer = read_frame::<KeyResponse>(&mut recv)
            .await?
            .context("the peer closed the stream without an answer")?;
        conn.close(0u32.into(), b"done");
        Ok(answer)
    }

    async fn bounded(&self, addr: &str, req: &KeyRequest) -> anyhow::Result<KeyResponse> {
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(addr, req))
            .await
            .with_context(|| format!("no answer within {EXCHANGE_TIMEOUT:?}"))?
    }

    /// The ring of the server at `addr`; `None` when it has none yet.
    pub async fn fetch(&self, addr: &str) -> anyhow::Result<Option<KeyRing>> {
        match self.bounded(addr, &KeyRequest::Fetch).await? {
            KeyResponse::Ring(m) => Ok(Some(KeyRing::from_material(m)?)),
            KeyResponse::NoRing => Ok(None),
            KeyResponse::Refused { reason } => bail!("refused: {reason}"),
            KeyResponse::Installed { .. } => bail!("the peer answered another request"),
        }
    }

    /// Hands `ring` to the server at `addr`, which merges it into its own.
    pub async fn install(&self, addr: &str, ring: &KeyRing) -> anyhow::Result<()> {
        match self
            .bounded(addr, &KeyRequest::Install(ring.to_material()))
            .await?
        {
            KeyResponse::Installed { .. } => Ok(()),
            KeyResponse::Refused { reason } => bail!("refused: {reason}"),
            _ => bail!("the peer answered another request"),
        }
    }

    /// Asks the server at `addr` to drop keys `ids`.
    pub async fn retire(&self, addr: &str, ids: &[KeyId]) -> anyhow::Result<()> {
        match self
            .bounded(addr, &KeyRequest::Retire(ids.to_vec()))
            .await?
        {
            KeyResponse::Installed { .. } => Ok(()),
            KeyResponse::Refused { reason } => bail!("refused: {reason}"),
            _ => bail!("the peer answered another request"),
        }
    }
}

/// Serves key requests on one accepted `windflow-keys/1` connection until it closes. A peer
/// whose certificate is not a server's is closed before any frame is read.
pub async fn serve_connection(secrets: Arc<Secrets>, conn: quinn::Connection) {
    let peer = match windflow_certs::peer_identity(&conn) {
        Ok(PeerIdentity::Server(name)) => name,
        other => {
            tracing::warn!(remote = %conn.remote_address(), identity = ?other, "refused a key ring request from a non-server");
            conn.close(2u32.into(), b"only servers may ask for keys");
            return;
        }
    };
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let request = match read_frame::<KeyRequest>(&mut recv).await {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "unreadable key request");
                continue;
            }
        };
        let response = answer(&secrets, &peer, request);
        if let Err(e) = write_frame(&mut send, &response).await {
            tracing::debug!(%peer, error = %e, "key answer not delivered");
            continue;
        }
        let _ = send.finish();
    }
}

fn answer(secrets: &Secrets, peer: &str, request: KeyRequest) -> KeyResponse {
    match request {
        KeyRequest::Fetch => match secrets.ring() {
            Some(ring) => {
                tracing::info!(%peer, "handed the key ring to a server");
                KeyResponse::Ring(ring.to_material())
            }
            None => KeyResponse::NoRing,
        },
        KeyRequest::Retire(ids) => match secrets.retire(&ids) {
            Ok(current) => {
                tracing::info!(%peer, retired = ids.len(), "retired keys at a server's request");
                KeyResponse::Installed { current }
            }
            Err(e) => KeyResponse::Refused {
                reason: e.to_string(),
            },
        },
        KeyRequest::Install(material) => {
            let kept = KeyRing::from_material(material).and_then(|ring| secrets.install(ring));
            match kept {
                Ok(_) => match secrets.current_key() {
                    Some(current) => KeyResponse::Installed { current },
                    None => KeyResponse::Refused {
                        reason: "no key ring after installing".into(),
                    },
                },
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "refused keys from a server");
                    KeyResponse::Refused {
                        reason: e.to_string(),
                    }
                }
            }
        }
    }
}
