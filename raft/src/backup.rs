//! Backups: the whole replicated state in one file, copied at one point in the log, and put
//! back through raft ([`Command::RestoreState`]) so every server of the target takes it.

use serde::{Deserialize, Serialize};
use windflow_protocol::Timestamp;

use crate::command::{Command, KeyValue};
use crate::reader::StateReader;
use crate::state::META;
use crate::{StoreError, decode, encode};

const MAGIC: [u8; 8] = *b"WFBACKUP";
/// The backup layout this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;

/// A backup file's contents.
#[derive(Debug, Serialize, Deserialize)]
pub struct Backup {
    magic: [u8; 8],
    format: u32,
    pub taken_at: Timestamp,
    /// The log index the copy reflects.
    pub last_applied: Option<u64>,
    pairs: Vec<KeyValue>,
}

/// Why bytes are not a backup this build can restore.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackupError {
    #[error("not a Windflow backup")]
    NotABackup,
    #[error("backup format {found} is not supported (this build reads format {BACKUP_FORMAT})")]
    Format { found: u32 },
}

impl StateReader {
    /// The whole state as a backup file, copied while no command commits.
    pub fn backup(&self, taken_at: Timestamp) -> Result<Vec<u8>, StoreError> {
        let (pairs, last_applied) = {
            let _paused = self.commits_paused();
            let pairs = self
                .tree()
                .iter()
                .filter(|e| e.as_ref().map_or(true, |(k, _)| !k.starts_with(META)))
                .map(|e| {
                    e.map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .map_err(StoreError::from)
                })
                .collect::<Result<Vec<_>, _>>()?;
            (pairs, self.last_applied_index())
        };
        encode(&Backup {
            magic: MAGIC,
            format: BACKUP_FORMAT,
            taken_at,
            last_applied,
            pairs,
        })
    }
}

impl Backup {
    /// Reads a backup file, refusing anything that is not one of ours.
    pub fn read(bytes: &[u8]) -> Result<Backup, BackupError> {
        if !bytes.starts_with(&MAGIC) {
            return Err(BackupError::NotABackup);
        }
        let backup: Backup = decode(bytes, "backup").map_err(|_| BackupError::NotABackup)?;
        if backup.format != BACKUP_FORMAT {
            return Err(BackupError::Format {
                found: backup.format,
            });
        }
        Ok(backup)
    }

    /// How many keys of state it holds.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The command that puts this state in place of a cluster's.
    pub fn into_command(self) -> Command {
        Command::RestoreState { pairs: self.pairs }
    }
}
