//! The gateway's live copy of the revocation list. The TLS verifier reads it at every
//! handshake; this keeps it in step with raft (reloaded when the replicated count moves),
//! and closes the live sessions of certificates that become revoked.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use windflow_certs::RevocationList;
use windflow_raft::StateReader;

/// The revocation list and a signal that it changed. Cheap to clone.
#[derive(Clone)]
pub struct Revocations {
    pub list: RevocationList,
    changed: watch::Sender<u64>,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations {
            list: RevocationList::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Revocations {
    /// Reloads the list from the local state if its count moved; true if it did.
    fn refresh(&self, reader: &StateReader, known: &mut Option<u64>) -> bool {
        let count = match reader.revoked_count() {
            Ok(count) => count,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the revocation count");
                return false;
            }
        };
        if *known == Some(count) {
            return false;
        }
        match reader.revoked_certs() {
            Ok(certs) => {
                self.list.replace(certs.into_iter().map(|c| c.serial));
                *known = Some(count);
                tracing::info!(revoked = self.list.len(), "revocation list loaded");
                self.changed.send_modify(|n| *n += 1);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the revocation list");
                false
            }
        }
    }

    /// Loads the list as the local state holds it now: before the gateway accepts anyone.
    pub fn load(&self, reader: &StateReader) {
        self.refresh(reader, &mut None);
    }

    /// Follows applied entries until `shutdown`, reloading the list when it grows.
    pub async fn follow(self, reader: StateReader, shutdown: CancellationToken) {
        let mut applied = reader.subscribe();
        let mut known = None;
        self.refresh(&reader, &mut known);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = applied.changed() => if changed.is_err() { return },
            }
            self.refresh(&reader, &mut known);
        }
    }

    /// Resolves once `serial` is on the list.
    pub async fn revoked(&self, serial: &str) {
        let mut changed = self.changed.subscribe();
        loop {
            if self.list.contains(serial) {
                return;
            }
            if changed.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}
