use crate::{ApplyError, ServerId};

/// Reading or writing the local sled store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("decoding {what}: {why}")]
    Decode { what: &'static str, why: String },
    #[error("encoding: {0}")]
    Encode(String),
}

/// Opening or running the raft node failed.
#[derive(Debug, thiserror::Error)]
pub enum RaftNodeError {
    #[error("opening the raft store: {0}")]
    Store(#[from] StoreError),
    #[error("invalid raft config: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("no raft leader within {0:?}")]
    NoLeader(std::time::Duration),
}

/// A proposal did not become an applied command.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Committed and applied, and `apply` refused it.
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    /// This server is not the leader; the leader, if known, is named.
    #[error("not the raft leader (leader: {})", leader.as_ref().map_or("unknown".to_owned(), |(id, addr)| format!("{id} at {addr}")))]
    NotLeader { leader: Option<(ServerId, String)> },
    #[error("raft: {0}")]
    Raft(String),
}
