//! Key rotation: a new key goes to every server, becomes current everywhere, then every
//! stored sealed value is opened and sealed again under it through raft
//! (`Command::ResealSecretEnv`, proposed through the leader). Old keys stay in the ring, so
//! a value sealed under one during the rotation still opens; dropping them is a separate,
//! later step ([`Secrets::drop_unused_keys`]) that keeps every key a stored value uses.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use windflow_protocol::{KeyId, Timestamp};
use windflow_raft::{ApplyError, Command, StoreError, WriteError};

use super::{KeyRing, SecretError, Secrets};

/// What a rotation did.
#[derive(Debug, Clone, Serialize)]
pub struct Rotation {
    /// The new current key.
    pub key: KeyId,
    /// The key that was current before.
    pub previous: KeyId,
    /// Every key the ring holds now.
    pub keys: Vec<KeyId>,
    /// Sealed values re-encrypted under the new key, and the tasks holding them.
    pub resealed_values: usize,
    pub resealed_tasks: usize,
}

/// What dropping unused keys did.
#[derive(Debug, Clone, Serialize)]
pub struct Retirement {
    pub current: KeyId,
    pub dropped: Vec<KeyId>,
    /// The keys this server's ring holds now.
    pub keys: Vec<KeyId>,
    /// Servers that could not be told; they keep the old keys, which opens nothing new.
    pub not_reached: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(
        "server(s) {0} did not take the new key; it was not made current and nothing was re-encrypted: retry when every server is up"
    )]
    NotDistributed(String),
    #[error(
        "server(s) {0} did not take the new key as current; nothing was re-encrypted: retry when every server is up"
    )]
    NotCurrent(String),
    #[error("reading state: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl Secrets {
    /// Hands `ring` to every other raft member; the addresses of those that did not take it.
    async fn push(&self, ring: &KeyRing) -> Vec<String> {
        let mut failed = Vec::new();
        for member in self.raft.members() {
            if member.id == self.raft.id() {
                continue;
            }
            if let Err(e) = self.link.install(&member.addr, ring).await {
                tracing::warn!(addr = %member.addr, error = %format!("{e:#}"), "a server did not take the key ring");
                failed.push(member.addr);
            }
        }
        failed
    }

    /// Rotates the cluster key (see the module docs).
    #[tracing::instrument(skip(self))]
    pub async fn rotate(&self) -> Result<Rotation, RotateError> {
        let _one_at_a_time = self.rotation.lock().await;
        // Start from every key the peers know, so a key this server missed is not lost.
        self.refresh().await;
        let ring = self.ring().ok_or(SecretError::NoKeyRing)?;
        let previous = ring.current();
        let (mut staged, key) = ring.with_new_key(Timestamp::now())?;
        // 1. Every server holds the new key before any seals with it.
        let failed = self.push(&staged).await;
        if !failed.is_empty() {
            return Err(RotateError::NotDistributed(failed.join(", ")));
        }
        self.install(staged.clone())?;
        // 2. It becomes current everywhere.
        staged.make_current(key)?;
        self.install(staged.clone())?;
        let failed = self.push(&staged).await;
        if !failed.is_empty() {
            return Err(RotateError::NotCurrent(failed.join(", ")));
        }
        tracing::info!(%key, %previous, "new key current on every server; re-encrypting");
        // 3. Every stored value is sealed again under it.
        self.raft.linearizable().await?;
        let (mut values, mut tasks) = (0, 0);
        for job in self.raft.reader().jobs()? {
            for task in job.spec.tasks() {
                if task.secret_env.values().all(|s| s.key == key) {
                    continue;
                }
                let mut resealed = BTreeMap::new();
                for (name, sealed) in &task.secret_env {
                    let value = self.open_env(name, sealed).await?;
                    resealed.insert(name.clone(), self.seal_env(name, &value)?);
                }
                let count = resealed.len();
                let written = self
                    .raft
                    .write(Command::ResealSecretEnv {
                        job: job.id,
                        task: task.name.clone(),
                        secret_env: resealed,
                        at: Timestamp::now(),
                    })
                    .await;
                match written {
                    Ok(_) => {
                        values += count;
                        tasks += 1;
                    }
                    // Deleted meanwhile: nothing left to re-encrypt.
                    Err(WriteError::Rejected(ApplyError::NotFound { .. })) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        tracing::info!(%key, values, tasks, "re-encrypted the stored secrets");
        Ok(Rotation {
            key,
            previous,
            keys: self.ring().map(|r| r.key_ids()).unwrap_or_default(),
            resealed_values: values,
            resealed_tasks: tasks,
        })
    }

    /// Drops from every server's ring the keys no stored value uses (never the current
    /// one). Meant after a rotation has re-encrypted everything: a value sealed under a
    /// dropped key could not be opened again.
    #[tracing::instrument(skip(self))]
    pub async fn drop_unused_keys(&self) -> Result<Retirement, RotateError> {
        let _one_at_a_time = self.rotation.lock().await;
        self.raft.linearizable().await?;
        let ring = self.ring().ok_or(SecretError::NoKeyRing)?;
        let mut in_use = BTreeSet::from([ring.current()]);
        for job in self.raft.reader().jobs()? {
            for task in job.spec.tasks() {
                in_use.extend(task.secret_env.values().map(|s| s.key));
            }
        }
        // Webhook secrets are not resealed by a rotation: their keys stay.
        in_use.extend(self.raft.reader().webhooks()?.iter().map(|w| w.secret.key));
        let dropped: Vec<KeyId> = ring
            .key_ids()
            .into_iter()
            .filter(|id| !in_use.contains(id))
            .collect();
        let mut not_reached = Vec::new();
        if !dropped.is_empty() {
            for member in self.raft.members() {
                if member.id == self.raft.id() {
                    continue;
                }
                if let Err(e) = self.link.retire(&member.addr, &dropped).await {
                    tracing::warn!(addr = %member.addr, error = %format!("{e:#}"), "a server did not drop the old keys");
                    not_reached.push(member.addr);
                }
            }
        }
        let current = self.retire(&dropped)?;
        Ok(Retirement {
            current,
            dropped,
            keys: self.ring().map(|r| r.key_ids()).unwrap_or_default(),
            not_reached,
        })
    }
}
